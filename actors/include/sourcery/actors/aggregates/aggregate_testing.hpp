#pragma once

// Given events / when command / then events (or a rejection), one line per case:
//
//     EXPECT_TRUE(given<account>(opened{"alice"}, deposited{100}).when(withdraw{"a", 150}).rejects("insufficient_funds"));
//     EXPECT_TRUE(given<account>(opened{"alice"}).when(deposit{"a", 50}).then(deposited{50}));

#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>

#include "sourcery/actors/aggregates/aggregate.hpp"

namespace sourcery::testing {

template <aggregate A>
class aggregate_case {
public:
  explicit aggregate_case(std::vector<typename A::event> history) {
    for (const auto& ev : history)
      apply_event(state_, ev);
  }

  /// Runs `cmd` through the aggregate's own `execute`.
  template <class C>
    requires executes<A, C>
  aggregate_case& when(const C& cmd) {
    result_.emplace(state_.execute(cmd));
    return *this;
  }

  /// Runs `cmd` through a command handler `fn(const A&, const C&)`.
  template <class C, class Fn>
  aggregate_case& when(const C& cmd, Fn&& fn) {
    result_.emplace(fn(static_cast<const A&>(state_), cmd));
    return *this;
  }

  /// Passes if the command produced exactly `expected`, in order.
  template <class... Es>
  ::testing::AssertionResult then(Es&&... expected) const {
    std::vector<typename A::event> want{typename A::event{std::forward<Es>(expected)}...};
    if (!result_)
      return ::testing::AssertionFailure() << "no command was run (call when() first)";
    if (result_->rejected())
      return ::testing::AssertionFailure() << "rejected with " << result_->why().reason << " ("
                                           << result_->why().message << "), expected " << render(want);
    if (render(result_->events()) != render(want))
      return ::testing::AssertionFailure() << "produced " << render(result_->events()) << ", expected "
                                           << render(want);
    return ::testing::AssertionSuccess();
  }

  /// Passes if the command was rejected for `reason`.
  ::testing::AssertionResult rejects(const std::string& reason) const {
    if (!result_)
      return ::testing::AssertionFailure() << "no command was run (call when() first)";
    if (!result_->rejected())
      return ::testing::AssertionFailure() << "accepted with " << render(result_->events())
                                           << ", expected a rejection for " << reason;
    if (result_->why().reason != reason)
      return ::testing::AssertionFailure() << "rejected for " << result_->why().reason << ", expected " << reason;
    return ::testing::AssertionSuccess();
  }

  /// The state after the given events (and the command's, if accepted).
  A state_after() const {
    A s = state_;
    if (result_ && !result_->rejected())
      for (const auto& ev : result_->events())
        apply_event(s, ev);
    return s;
  }

private:
  /// Events as "type {json}" lines: comparable and readable in failures.
  static std::string render(const std::vector<typename A::event>& events) {
    std::ostringstream out;
    out << "[";
    for (size_t i = 0; i < events.size(); ++i) {
      std::visit(
        [&](const auto& e) {
          msgpack::sbuffer buf;
          msgpack::pack(buf, e);
          auto json = nlohmann::json::from_msgpack(buf.data(), buf.data() + buf.size());
          out << (i > 0 ? ", " : "") << std::decay_t<decltype(e)>::type_name << " " << json.dump();
        },
        events[i]);
    }
    out << "]";
    return out.str();
  }

  A state_{};
  std::optional<outcome<typename A::event>> result_;
};

/// Starts a case from the events an aggregate has already seen.
template <aggregate A, class... Es>
aggregate_case<A> given(Es&&... history) {
  return aggregate_case<A>{std::vector<typename A::event>{typename A::event{std::forward<Es>(history)}...}};
}

} // namespace sourcery::testing
