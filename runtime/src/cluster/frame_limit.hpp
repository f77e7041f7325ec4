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

} // namespace sourcery::cluster::detail
