// meetup-demo — the meetup of the talk, narrated.
//
//   meetup-demo [--store URI] [--data-dir DIR] [--in-memory]
//
// Creates a meetup, renames it, adds attendees (each once), then shows the
// meetup rebuilt from its events and the events themselves. Run it again
// on the same directory: the meetup is there already and grows.

#include <cstdio>
#include <string>

#include "../common/narrate.hpp"
#include "meetup.hpp"

using demo::run;
using demo::say;
using demo::section;

int main(int argc, char** argv) {
  auto [config, started] = demo::start(argc, argv, "meetup-demo", "Sourcery meetup demo", "meetup-data", meetup::routes());
  auto& app = *started;
  auto runs = app.store().head_position();

  section("1. create and rename");
  run(app, "create cpp-lyon", meetup::create_meetup{"cpp-lyon", "C++ Lyon", "2026-12-03", "marie"});
  run(app, "create cpp-lyon again", meetup::create_meetup{"cpp-lyon", "C++ Lyon", "2026-12-03", "marie"});
  run(app, "create on 2026-13-40", meetup::create_meetup{"bad-date", "Nope", "2026-13-40", "marie"});
  run(app, "rename cpp-lyon", meetup::rename_meetup{"cpp-lyon", "C++ Lyon: event sourcing night"});
  run(app, "rename a meetup that is not", meetup::rename_meetup{"nowhere", "Ghost"});

  section("2. attendees join once each");
  run(app, "add attendee paul", meetup::add_attendee{"cpp-lyon", "paul"});
  run(app, "add attendee paul again", meetup::add_attendee{"cpp-lyon", "paul"});
  run(app, "add the host marie", meetup::add_attendee{"cpp-lyon", "marie"});
  run(app, "add attendee #" + std::to_string(runs), meetup::add_attendee{"cpp-lyon", "guest-" + std::to_string(runs)});

  section("3. the meetup, rebuilt from its events");
  auto m = app.aggregate_state<meetup::meetup>("meetup-cpp-lyon");
  if (!m)
    demo::fail("meetup-demo", "load the meetup", m.error());
  std::string people;
  for (auto& a : m->attendees)
    people += (people.empty() ? "" : ", ") + a;
  say("  %s on %s, hosted by %s; %zu attendees: %s", m->title.c_str(), m->date.c_str(), m->host.c_str(),
      m->attendees.size(), people.c_str());
  auto events = app.store().read_stream("meetup-cpp-lyon", 1, 100'000);
  if (!events)
    demo::fail("meetup-demo", "read the meetup's stream", events.error());
  for (auto& e : *events)
    say("  v%-3llu %-22s %s", static_cast<unsigned long long>(e.stream_version), e.type.c_str(),
        demo::data_of(e).c_str());
  // A tree that gave up during the run: exit non-zero (a process supervisor
  // restarts the program; a script sees the failure).
  auto why = app.failure();
  app.stop();
  if (why) {
    std::fprintf(stderr, "%s-demo: the application failed: %s\n", "meetup", sourcery::describe_error(why).c_str());
    return 1;
  }
  return 0;
}
