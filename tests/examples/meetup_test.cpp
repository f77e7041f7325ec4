// Meetups: the aggregate's invariants and the demo run twice.

#include <gtest/gtest.h>

#include "../../examples/meetup/meetup.hpp"
#include "../support/child_process.hpp"
#include "../support/temp_dir.hpp"

using namespace meetup;

namespace {

template <class O>
std::string meetup_reason(const O& o) {
  return o.rejected() ? o.why().reason : "accepted";
}

struct meetup created_meetup() {
  struct meetup m;
  m.apply(meetup_created{"C++ Lyon", "2026-12-03", "marie"});
  return m;
}

} // namespace

TEST(meetup_aggregate, created_once_with_a_title_a_date_and_a_host) {
  struct meetup fresh;
  EXPECT_EQ(meetup_reason(fresh.execute(create_meetup{"m", "C++", "2026-12-03", "marie"})), "accepted");
  EXPECT_EQ(meetup_reason(fresh.execute(create_meetup{"m", " ", "2026-12-03", "marie"})), "invalid_title");
  for (auto* d : {"2026-13-01", "2026-12-00", "03/12/2026", "2026-1-03", ""})
    EXPECT_EQ(meetup_reason(fresh.execute(create_meetup{"m", "C++", d, "marie"})), "invalid_date") << d;
  EXPECT_EQ(meetup_reason(fresh.execute(create_meetup{"m", "C++", "2026-12-03", ""})), "invalid_host");
  EXPECT_EQ(meetup_reason(created_meetup().execute(create_meetup{"m", "C++", "2026-12-03", "marie"})), "meetup_exists");
}

TEST(meetup_aggregate, renamed_only_when_it_exists_and_only_on_change) {
  struct meetup fresh;
  EXPECT_EQ(meetup_reason(fresh.execute(rename_meetup{"m", "x"})), "not_found");
  auto m = created_meetup();
  EXPECT_TRUE(m.execute(rename_meetup{"m", "C++ Lyon"}).events().empty());
  EXPECT_EQ(meetup_reason(m.execute(rename_meetup{"m", ""})), "invalid_title");
  auto o = m.execute(rename_meetup{"m", "C++ Lyon #2"});
  ASSERT_EQ(o.events().size(), 1u);
  EXPECT_EQ(std::get<meetup_title_updated>(o.events()[0]).title, "C++ Lyon #2");
}

TEST(meetup_aggregate, each_attendee_joins_once_and_the_host_attends_already) {
  auto m = created_meetup();
  EXPECT_EQ(meetup_reason(m.execute(add_attendee{"m", "paul"})), "accepted");
  m.apply(attendee_added{"paul"});
  EXPECT_EQ(meetup_reason(m.execute(add_attendee{"m", "paul"})), "already_attending");
  EXPECT_EQ(meetup_reason(m.execute(add_attendee{"m", "marie"})), "already_attending");
  EXPECT_EQ(meetup_reason(m.execute(add_attendee{"m", ""})), "invalid_attendee");
  struct meetup fresh;
  EXPECT_EQ(meetup_reason(fresh.execute(add_attendee{"m", "paul"})), "not_found");
}

TEST(meetup_demo, runs_twice_on_one_directory) {
  sourcery::testing::temp_dir dir;
  for (int run = 0; run < 2; ++run) {
    sourcery::testing::child_process demo{MEETUP_DEMO_PATH, {"--data-dir", dir.str()}};
    auto out = demo.read_all();
    EXPECT_EQ(demo.wait(), 0) << out;
    EXPECT_NE(out.find("rejected: already_attending"), std::string::npos) << out;
    EXPECT_NE(out.find(run == 0 ? "2 attendees" : "3 attendees"), std::string::npos) << out;
  }
}
