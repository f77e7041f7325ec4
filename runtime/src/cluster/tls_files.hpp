#pragma once

// A node's TLS files, checked before it starts: CAF's OpenSSL module loads
// them only at the first connection, and there a bad file throws on the
// multiplexer's thread. Here it is one clear error at start.

#include <caf/error.hpp>

#include "sourcery/runtime/cluster/cluster_settings.hpp"

namespace sourcery::cluster::detail {

/// Errors (invalid_argument): some but not all of cert, key and CA given; a
/// file that does not load as PEM; a key that does not match the
/// certificate; a certificate the CA did not sign.
caf::error check_tls_files(const tls_settings& tls);

} // namespace sourcery::cluster::detail
