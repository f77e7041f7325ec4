#pragma once

// Meetups, from the talk "CQRS/ES & Elixir" (Bertrand Dubaut): a meetup has
// a title, a date, a host and attendees. It is created once, may be renamed,
// and people join it once each.

#include <cstdint>
#include <set>
#include <string>
#include <variant>

#include <msgpack.hpp>

#include "sourcery/actors/aggregates/aggregate.hpp"
#include "sourcery/runtime/commands/router.hpp"

namespace meetup {

// -- commands ------------------------------------------------------------------
struct create_meetup { std::string id, title, date, host; SOURCERY_FIELDS(id, title, date, host) };
struct rename_meetup { std::string id, title; SOURCERY_FIELDS(id, title) };
struct add_attendee { std::string id, attendee; SOURCERY_FIELDS(id, attendee) };

// -- events --------------------------------------------------------------------
struct meetup_created {
  std::string title, date, host;
  SOURCERY_EVENT("meetup.created", title, date, host)
};
struct meetup_title_updated {
  std::string title;
  SOURCERY_EVENT("meetup.title_updated", title)
};
struct attendee_added {
  std::string attendee;
  SOURCERY_EVENT("meetup.attendee_added", attendee)
};

// -- the aggregate -------------------------------------------------------------
struct meetup {
  using event = std::variant<meetup_created, meetup_title_updated, attendee_added>;

  bool exists = false;
  std::string title, date, host;
  std::set<std::string> attendees;
  MSGPACK_DEFINE_MAP(exists, title, date, host, attendees);

  sourcery::outcome<event> execute(const create_meetup& c) const {
    if (exists)
      return sourcery::reject("meetup_exists", "meetup " + c.id + " already exists");
    if (auto bad = check_title(c.title))
      return *bad;
    if (!is_date(c.date))
      return sourcery::reject("invalid_date", "a date is YYYY-MM-DD, not '" + c.date + "'");
    if (c.host.empty())
      return sourcery::reject("invalid_host", "a meetup has a host");
    return meetup_created{c.title, c.date, c.host};
  }

  sourcery::outcome<event> execute(const rename_meetup& c) const {
    if (!exists)
      return sourcery::reject("not_found", "no meetup " + c.id);
    if (auto bad = check_title(c.title))
      return *bad;
    if (c.title == title)
      return sourcery::no_events;
    return meetup_title_updated{c.title};
  }

  sourcery::outcome<event> execute(const add_attendee& c) const {
    if (!exists)
      return sourcery::reject("not_found", "no meetup " + c.id);
    if (c.attendee.empty())
      return sourcery::reject("invalid_attendee", "an attendee has a name");
    if (c.attendee == host || attendees.count(c.attendee) != 0)
      return sourcery::reject("already_attending", c.attendee + " already attends");
    return attendee_added{c.attendee};
  }

  void apply(const meetup_created& e) {
    exists = true;
    title = e.title;
    date = e.date;
    host = e.host;
  }
  void apply(const meetup_title_updated& e) { title = e.title; }
  void apply(const attendee_added& e) { attendees.insert(e.attendee); }

  static std::optional<sourcery::rejection> check_title(const std::string& t) {
    if (t.find_first_not_of(" \t") == std::string::npos)
      return sourcery::reject("invalid_title", "a title must not be blank");
    return std::nullopt;
  }
  static bool is_date(const std::string& d) {
    if (d.size() != 10 || d[4] != '-' || d[7] != '-')
      return false;
    for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9})
      if (d[i] < '0' || d[i] > '9')
        return false;
    int month = std::stoi(d.substr(5, 2));
    int day = std::stoi(d.substr(8, 2));
    return month >= 1 && month <= 12 && day >= 1 && day <= 31;
  }
};

inline sourcery::router routes() {
  sourcery::router r;
  r.aggregate<meetup>([](const auto& c) { return c.id; }, "meetup-").dispatch<create_meetup, rename_meetup, add_attendee>();
  return r;
}

} // namespace meetup
