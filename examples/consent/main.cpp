// consent-demo — consent management, narrated.
//
//   consent-demo [--store URI] [--data-dir DIR] [--in-memory]
//
// A patient, Ana, is asked for consent to her health records by a doctor, a
// nurse and another patient; she grants and revokes; every invariant of the
// domain refuses something once; then the two queries: "consents of a
// patient" and "has consent?". Run it again on the same directory: it
// continues (and the consents granted before are refused as duplicates).

#include <cstdio>
#include <string>

#include "../common/narrate.hpp"
#include "consent.hpp"
#include "patient_consents.hpp"

using demo::run;
using demo::say;
using demo::section;

namespace {

consent::grant_scope scope(std::string to_entity, std::string to_id, std::string target) {
  return {"ana", std::move(to_entity), std::move(to_id), std::move(target)};
}

void show_consents(sourcery::application& app) {
  auto models = app.read_models();
  if (!models)
    demo::fail("consent-demo", "open the read models", models.error());
  auto rows = consent::consents_of(**models, "ana");
  if (!rows)
    demo::fail("consent-demo", "query consents", rows.error());
  if (rows->empty())
    say("  Ana has granted no consents");
  for (auto& r : *rows) {
    std::string kinds;
    for (auto& t : r.targets)
      kinds += (kinds.empty() ? "" : ", ") + t;
    say("  %-8s %-10s may see: %s", r.to_entity.c_str(), r.to_id.c_str(), kinds.c_str());
  }
}

void ask_has(sourcery::application& app, const consent::grant_scope& s) {
  auto models = app.read_models();
  auto yes = models ? consent::has_consent(**models, s) : caf::expected<bool>{models.error()};
  if (!yes)
    demo::fail("consent-demo", "query has_consent", yes.error());
  say("  has %s %s consent to Ana's %s? %s", s.to_entity.c_str(), s.to_id.c_str(), s.target.c_str(),
      *yes ? "yes" : "no");
}

} // namespace

int main(int argc, char** argv) {
  auto [config, started] = demo::start(argc, argv, "consent-demo", "Sourcery consent demo", "consent-data", consent::routes());
  auto& app = *started;
  if (auto p = app.add_projection<consent::patient_consents>({}, /*strong*/ true); !p)
    demo::fail("consent-demo", "start the projection", p.error());
  auto strong = sourcery::consistency::strong;

  section("what Ana had granted before this run");
  show_consents(app);
  auto name_of_ana = [&app] {
    auto p = app.aggregate_state<consent::patient>("patient-ana");
    return !p ? std::string{"?"} : p->name.known() ? p->name.value() : p->name.forgotten() ? "<forgotten>" : "<none>";
  };

  section("0. Ana registers: her name is personal data, sealed with her own key");
  run(app, "register Ana Moreira", consent::register_patient{"ana", "Ana Moreira"}, strong);
  say("  Ana's name, as the application reads it: %s", name_of_ana().c_str());

  section("1. professionals and a patient ask; Ana grants");
  run(app, "dr-bob asks for exams", consent::ask_consent{scope("doctor", "dr-bob", "exams")});
  run(app, "dr-bob asks for exams again", consent::ask_consent{scope("doctor", "dr-bob", "exams")});
  run(app, "Ana grants dr-bob exams", consent::grant_consent{scope("doctor", "dr-bob", "exams")}, strong);
  run(app, "Ana grants nurse nina er_visits", consent::grant_consent{scope("nurse", "nina", "er_visits")}, strong);
  run(app, "patient carl asks for conditions", consent::ask_consent{scope("patient", "carl", "conditions")});
  run(app, "Ana grants carl conditions", consent::grant_consent{scope("patient", "carl", "conditions")}, strong);

  section("2. the invariants at work");
  run(app, "dr-bob asks for exams (granted)", consent::ask_consent{scope("doctor", "dr-bob", "exams")});
  run(app, "Ana grants dr-bob exams again", consent::grant_consent{scope("doctor", "dr-bob", "exams")});
  run(app, "a pharmacist asks", consent::ask_consent{scope("pharmacist", "phil", "exams")});
  run(app, "dr-bob asks for her DNA", consent::ask_consent{scope("doctor", "dr-bob", "dna")});
  run(app, "Ana grants herself exams", consent::grant_consent{scope("patient", "ana", "exams")});
  run(app, "Ana revokes nina's exams", consent::revoke_consent{scope("nurse", "nina", "exams")});

  section("3. Ana revokes; revoking twice is refused");
  run(app, "Ana revokes dr-bob's exams", consent::revoke_consent{scope("doctor", "dr-bob", "exams")}, strong);
  run(app, "Ana revokes dr-bob's exams again", consent::revoke_consent{scope("doctor", "dr-bob", "exams")});

  section("4. the queries (the read model)");
  show_consents(app);
  ask_has(app, scope("doctor", "dr-bob", "exams"));
  ask_has(app, scope("nurse", "nina", "er_visits"));
  ask_has(app, scope("patient", "carl", "conditions"));
  ask_has(app, scope("patient", "carl", "exams"));

  section("5. the audit trail: Ana's stream, every consent event ever");
  auto events = app.store().read_stream("patient-ana", 1, 100'000);
  if (!events)
    demo::fail("consent-demo", "read Ana's stream", events.error());
  for (auto& e : *events)
    say("  v%-3llu %-16s %s", static_cast<unsigned long long>(e.stream_version), e.type.c_str(),
        demo::data_of(e).c_str());

  section("6. Ana asks to be forgotten: her key is deleted, her consents stand");
  if (auto forgot = app.forget("patient-ana"); !forgot)
    demo::fail("consent-demo", "forget Ana", forgot.error());
  say("  Ana's name now reads: %s", name_of_ana().c_str());
  ask_has(app, scope("doctor", "dr-bob", "exams"));
  if (demo::store_location(config) != "memory:")
    say("\nRun it again with the same store: it continues where it stopped.");
  // A tree that gave up during the run: exit non-zero (a process supervisor
  // restarts the program; a script sees the failure).
  auto why = app.failure();
  app.stop();
  if (why) {
    std::fprintf(stderr, "%s-demo: the application failed: %s\n", "consent", sourcery::describe_error(why).c_str());
    return 1;
  }
  return 0;
}
