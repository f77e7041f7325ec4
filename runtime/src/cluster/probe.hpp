#pragma once

// A direct probe of a peer's address, for a member that stopped renewing:
// a refused connection means nothing listens there any more (the process is
// gone), so it can be declared down before its full silence has passed. A
// peer that accepts, or does not answer (paused, cut off), proves nothing:
// it is left to the renewals' clock.

#include <chrono>
#include <string>

namespace sourcery::cluster::detail {

enum class probe_result { listening, refused, no_answer };

/// Connects to every address of `node` ("host:port") within `timeout` in
/// all (name resolution included), and closes at once. `refused` only when
/// every address refuses; `listening` when one accepts.
probe_result probe(const std::string& node, std::chrono::milliseconds timeout);

} // namespace sourcery::cluster::detail
