#pragma once

// What a handler, projection or process manager sees of an event besides
// its data, and which events it subscribes to.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sourcery/persistence/event.hpp"
#include "sourcery/persistence/metadata.hpp"

namespace sourcery {

/// What a handler sees of an event besides its data: the recorded event
/// (stream, version, position, ids, time), the identity of its aggregate
/// (`aggregate_id()`: the stream id without its prefix) and its metadata,
/// typed (`meta()`).
using event_context = persistence::recorded_event;

/// The stream-id prefixes of the routed aggregates: which part of a stream
/// id is the aggregate's identity (the longest matching prefix wins).
class stream_prefixes {
public:
  stream_prefixes() = default;
  explicit stream_prefixes(std::vector<std::string> prefixes);

  uint32_t prefix_length(std::string_view stream_id) const noexcept;

private:
  std::vector<std::string> prefixes_; // longest first
};

/// Which events a handler receives (it still passes over the types it does
/// not list): all of `$all`, one stream, or one category -- the streams
/// whose ids start with a prefix, e.g. every "todo-" stream.
struct subscription {
  enum class kind : uint8_t { all, stream, category };
  kind what = kind::all;
  std::string id; ///< the stream id, or the category's prefix

  static subscription all() { return {}; }
  static subscription stream(std::string id) { return {kind::stream, std::move(id)}; }
  static subscription category(std::string prefix) { return {kind::category, std::move(prefix)}; }

  bool includes(std::string_view stream_id) const noexcept {
    switch (what) {
      case kind::all: return true;
      case kind::stream: return stream_id == id;
      case kind::category: return stream_id.substr(0, id.size()) == id;
    }
    return true;
  }
};

} // namespace sourcery
