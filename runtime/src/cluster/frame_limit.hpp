#pragma once

// The largest frame a node reads from a link to a peer.
//
// CAF 0.17's BASP reads a frame's payload into a buffer sized to the length
// its header announces, up to 4 GiB, zero-filled before a byte arrives:
// three 36-byte headers made a node resident 5 GB. CAF has no setting for
// it, so Sourcery takes the one call through which every CAF stream (plain,
// and the OpenSSL module's) is told how much to read next,
// `caf::io::network::stream::configure_read` (both libraries call it
// through the PLT, so a program's own definition is the one they reach).
// An exact read above the limit asks for one byte instead: BASP then holds
// a payload that does not match its header and closes the connection as
// malformed, having allocated nothing.
//
// Senders keep under the limit: batches are split (`frame_budget`), and a
// command or answer that alone would exceed it is refused where it is.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/error.hpp>

#include "sourcery/actors/fwd.hpp"

namespace sourcery::cluster::detail {

/// Frames above `bytes` close their connection from now on, in this whole
/// process (every cluster node in it shares its middleman's streams).
void set_frame_limit(size_t bytes);
size_t frame_limit();

/// Frames refused since the process started.
uint64_t frames_refused();

/// Whether CAF's streams call this program's `configure_read`: false when
/// the program was linked so that they reach CAF's own (then nothing is
/// limited, and the node refuses to start).
bool frame_limit_active();

/// What a sender puts in one message at most: half the limit, since
/// `wire_size` estimates.
inline size_t frame_budget() { return frame_limit() / 2; }

/// Over-estimates of what CAF's binary serializer writes for each.
size_t wire_size(const command_envelope& e);
size_t wire_size(const dispatch_result& r);

/// `too_large`: `what` (a command, an answer) is `size` bytes, above
/// `frame_budget()`.
caf::error too_large(const std::string& what, size_t size);

/// `items` in runs that fit a frame each: consecutive items whose sizes
/// (`size_of`) add up to `frame_budget()` at most, or one item alone.
template <class T, class SizeOf>
std::vector<std::vector<T>> in_frames(std::vector<T> items, SizeOf size_of) {
  std::vector<std::vector<T>> runs;
  size_t bytes = 0, budget = frame_budget();
  for (auto& item : items) {
    auto size = size_of(item);
    if (runs.empty() || bytes + size > budget) {
      runs.emplace_back();
      bytes = 0;
    }
    bytes += size;
    runs.back().push_back(std::move(item));
  }
  return runs;
}

} // namespace sourcery::cluster::detail
