#pragma once

#include <vector>

#include "sourcery/persistence/event.hpp"

namespace sourcery::persistence::detail {

/// Fills a vector of events, overwriting the elements it already holds so
/// their strings and buffers are reused: a reader that reads batch after
/// batch into one vector stops allocating after the first batch.
class event_sink {
public:
  explicit event_sink(std::vector<recorded_event>& out) : out_(out) {}

  /// The next element to fill.
  recorded_event& next() {
    if (n_ == out_.size())
      out_.emplace_back();
    return out_[n_++];
  }

  /// Gives back the element `next` returned last (it failed to decode).
  void drop_last() { --n_; }

  size_t size() const { return n_; }

  /// Cuts the vector to the elements filled.
  void finish() { out_.resize(n_); }

private:
  std::vector<recorded_event>& out_;
  size_t n_ = 0;
};

} // namespace sourcery::persistence::detail
