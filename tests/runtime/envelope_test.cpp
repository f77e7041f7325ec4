// Commands as data: every command type of every example survives the trip
// a cluster will make -- encoded by its route, carried in an envelope
// through CAF's serializer, decoded on the aggregate's side -- and so does
// the answer.

#include <set>

#include <caf/all.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <gtest/gtest.h>

#include "../../examples/bank/routes.hpp"
#include "../../examples/consent/consent.hpp"
#include "../../examples/meetup/meetup.hpp"
#include "../../examples/todo/todo.hpp"
#include "sourcery/runtime/commands/dispatch.hpp"
#include "sourcery/runtime/commands/router.hpp"

using namespace sourcery;
using namespace std::chrono_literals;

namespace {

template <class T>
T through_caf(const T& value) {
  caf::actor_system_config cfg;
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  auto copy = value;
  if (auto err = sink(copy))
    ADD_FAILURE() << "serialize: " << sys.render(err);
  T out;
  caf::binary_deserializer source{sys, buf};
  if (auto err = source(out))
    ADD_FAILURE() << "deserialize: " << sys.render(err);
  return out;
}

class every_example_command : public ::testing::Test {
protected:
  every_example_command() {
    routes_.include(bank::routes()).include(todo::routes()).include(meetup::routes()).include(consent::routes());
  }

  /// Encodes `cmd` as its route does, sends the envelope through CAF's
  /// serializer, and decodes it as the aggregate's side does.
  template <class C>
  void round_trip(const C& cmd) {
    const auto* route = routes_.find(type_name_of<C>());
    ASSERT_NE(route, nullptr) << type_name_of<C>() << " is not routed";
    command_envelope env;
    env.aggregate_type = route->aggregate_name;
    env.stream_id = route->prefix + route->identity(&cmd);
    env.command_type = route->command_name;
    env.payload = route->encode(&cmd);
    metadata meta;
    meta.set("user", "alice").set("attempt", 2).set("replay", false);
    env.metadata = meta.encode();
    env.causation_id = "cause";
    env.correlation_id = "correlation";
    env.returns = returning::events;
    env.deadline = std::chrono::steady_clock::now() + 5s;
    auto sent = std::chrono::steady_clock::now();
    auto back = through_caf(env);
    auto transit = std::chrono::steady_clock::now() - sent; // counted again on arrival
    EXPECT_EQ(back.aggregate_type, env.aggregate_type);
    EXPECT_EQ(back.stream_id, env.stream_id);
    EXPECT_EQ(back.command_type, env.command_type);
    EXPECT_EQ(back.payload, env.payload);
    EXPECT_EQ(back.causation_id, "cause");
    EXPECT_EQ(back.correlation_id, "correlation");
    EXPECT_EQ(back.returns, returning::events);
    EXPECT_LE(back.deadline, env.deadline + 1ms + transit)
      << "the deadline travels as the time left, rounded up to the millisecond";
    EXPECT_GT(back.deadline, std::chrono::steady_clock::now() + 4s);
    EXPECT_EQ(metadata::decode(back.metadata).value(), meta);
    auto decoded = decode_command<C>(back.payload, back.command_type);
    ASSERT_TRUE(decoded) << describe_error(decoded.error());
    EXPECT_EQ(encode_command(*decoded), env.payload) << type_name_of<C>() << " changed on the way";
    EXPECT_EQ(route->identity(&*decoded), route->identity(&cmd));
    tried_.insert(type_name_of<C>());
  }

  router routes_;
  std::set<std::string> tried_;
};

TEST_F(every_example_command, goes_through_an_envelope_and_back_unchanged) {
  round_trip(bank::open_account{"alice", "Alice"});
  round_trip(bank::deposit{"alice", 100, "t-1"});
  round_trip(bank::withdraw{"alice", 30, {}});
  round_trip(bank::request_transfer{"t-1", "alice", "bob", 25});
  round_trip(bank::complete_transfer{"t-1"});
  round_trip(bank::fail_transfer{"t-1", "insufficient_funds"});
  round_trip(todo::create_todo{"1", "milk", 3, true});
  round_trip(todo::create_todo{"2", "bread"});
  round_trip(todo::update_todo{"1", std::string{"oat milk"}, std::nullopt, -4});
  round_trip(todo::update_todo{"1", std::nullopt, false, std::nullopt});
  round_trip(todo::delete_todo{"1"});
  round_trip(meetup::create_meetup{"m", "C++ night", "2026-12-01", "ann"});
  round_trip(meetup::rename_meetup{"m", "C++ evening"});
  round_trip(meetup::add_attendee{"m", "bob"});
  consent::grant_scope scope{"p1", "doctor", "ann", "exams"};
  round_trip(consent::ask_consent{scope});
  round_trip(consent::grant_consent{scope});
  round_trip(consent::revoke_consent{scope});
  round_trip(consent::register_patient{"p1", "Ana Moreira"});
  std::set<std::string> routed;
  for (const auto& [name, route] : routes_.commands())
    routed.insert(name);
  EXPECT_EQ(tried_, routed) << "a routed command type without a round trip here";
}

TEST(envelope, optional_fields_keep_their_absence) {
  auto bytes = encode_command(todo::update_todo{"1", std::nullopt, true, std::nullopt});
  auto back = decode_command<todo::update_todo>(bytes, "update_todo");
  ASSERT_TRUE(back);
  EXPECT_FALSE(back->title.has_value());
  EXPECT_EQ(back->completed, std::optional<bool>{true});
  EXPECT_FALSE(back->order.has_value());
}

TEST(envelope, a_payload_of_another_shape_is_malformed_not_a_crash) {
  // Nothing, not msgpack, an array, a field of the wrong type. (Fields it
  // does not know are passed over, and missing ones keep their defaults:
  // commands evolve like events.)
  for (persistence::bytes bad : {persistence::bytes{}, persistence::bytes{0xc1}, persistence::bytes{0x93, 1, 2, 3},
                                 persistence::bytes{0x81, 0xa6, 'a', 'm', 'o', 'u', 'n', 't', 0xa1, 'x'}}) {
    auto r = decode_command<bank::deposit>(bad, "bank::deposit");
    ASSERT_FALSE(r);
    EXPECT_EQ(code_of_dispatch(r.error()), dispatch_errc::malformed_command);
  }
}

TEST(envelope, an_envelope_without_a_deadline_has_none_on_the_other_side) {
  command_envelope env;
  env.stream_id = "account-1";
  EXPECT_EQ(through_caf(env).deadline, std::chrono::steady_clock::time_point::max());
}

TEST(envelope, an_answer_with_its_events_and_state_crosses_unchanged) {
  dispatch_result r;
  r.accepted = true;
  r.aggregate_id = "account-1";
  r.version = 7;
  r.first_position = 40;
  r.last_position = 41;
  persistence::recorded_event ev;
  ev.event_id = persistence::uuid::random();
  ev.stream_id = "account-1";
  ev.stream_version = 7;
  ev.position = 41;
  ev.type = "bank.money_deposited";
  ev.data = {0x81, 0xa6, 'a', 'm', 'o', 'u', 'n', 't', 0x05};
  ev.metadata = metadata{}.set("user", "alice").encode();
  ev.causation_id = "c";
  ev.correlation_id = "k";
  ev.created_at = 1'700'000'000'000'000;
  r.events = {ev, ev};
  bank::account state;
  state.open = true;
  state.balance = 5;
  msgpack::sbuffer buf;
  msgpack::pack(buf, state);
  r.state.assign(buf.data(), buf.data() + buf.size());
  auto back = through_caf(r);
  EXPECT_EQ(back, r);
  ASSERT_TRUE(back.state_as<bank::account>());
  EXPECT_EQ(back.state_as<bank::account>()->balance, 5);

  dispatch_result rejected;
  rejected.why = reject("insufficient_funds", "balance 5");
  rejected.version = 7;
  EXPECT_EQ(through_caf(rejected), rejected);
}

} // namespace
