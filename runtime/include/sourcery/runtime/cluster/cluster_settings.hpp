#pragma once

// How an application joins a cluster (application_config::cluster). Nodes
// of one cluster share a PostgreSQL store and a cluster name: they find
// each other in the store's membership table and talk over CAF's
// middleman at the `node` address each registers.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

namespace sourcery::cluster {

/// Mutual TLS between the nodes of a cluster (CAF's OpenSSL module): each
/// node presents its certificate and accepts only peers whose certificate
/// the cluster's CA signed -- a peer without one, or with another CA's, is
/// refused in the handshake, before any message is read. TLS 1.2 or later
/// (the system's OpenSSL floor), ciphers "HIGH:!aNULL:!MD5": no anonymous
/// or export ciphers. Files in PEM.
struct tls_settings {
  std::string cert; ///< this node's certificate (chain)
  std::string key;  ///< its private key, unencrypted
  std::string ca;   ///< the cluster's CA certificate(s)

  /// All three given: TLS on. Some but not all is refused at start.
  bool enabled() const { return !cert.empty() && !key.empty() && !ca.empty(); }
  bool any() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

/// `cluster_settings::max_frame_bytes` unless set: 8 MiB.
inline constexpr size_t default_max_frame_bytes = 8u << 20;

struct cluster_settings {
  /// The cluster's name; empty: the application runs alone.
  std::string name;
  /// "host:port" this node listens on for its peers, as they reach it
  /// (port 0 is refused: the address is this node's name).
  std::string node;
  /// "host:port" to listen on when peers reach this node elsewhere than at
  /// `node` (a proxy, NAT); empty: `node`.
  std::string listen;
  /// Aggregates hash to this many shards, the unit of placement and
  /// handoff. Every node of a cluster must agree on it.
  uint32_t shards = 64;
  /// How often membership and leases are renewed.
  std::chrono::milliseconds renew_every{400};
  /// How often the middleman probes each link to a peer (heartbeats); a
  /// link silent for `down_after` is closed and its commands routed again.
  std::chrono::milliseconds probe_every{400};
  /// A member silent this long is declared down (and a node that could not
  /// renew this long stops serving). Also each lease's time to live.
  std::chrono::milliseconds down_after{2500};
  /// A peer that has not answered a ping over its link for this long is
  /// voted unreachable; a member that a majority of the others (two at
  /// least) votes unreachable is declared down, even if it reaches the
  /// store, and a node that cannot reach a majority of the others stops
  /// serving until it can. A slow peer that answers is never voted.
  std::chrono::milliseconds unreachable_after{2000};
  /// A shard handed over waits this long at most for its commands in
  /// flight before its lease is released anyway (fencing keeps it safe).
  std::chrono::milliseconds drain_timeout{2000};
  /// The largest message a node reads from a peer's link: a frame that
  /// announces more closes its connection before anything is allocated for
  /// it, and is counted in /metrics (`sourcery_cluster_frames_refused_total`).
  /// Forwarded batches are split to stay well under it; a command, or an
  /// answer, that alone would not fit is refused with `invalid_argument`.
  /// Every node of a cluster should use the same value. It also bounds what
  /// an open, hostile connection can make a node allocate.
  size_t max_frame_bytes = default_max_frame_bytes;
  /// Shards given up per renewal for rebalancing (a join): moves are paced.
  size_t moves_per_round = 16;
  /// Mutual TLS on the links between nodes (`tls.enabled()`): every node
  /// of a cluster must have it, with the same CA.
  tls_settings tls;
  /// Without TLS, links between nodes are neither encrypted nor
  /// authenticated, so a node listens only on a loopback address (one
  /// machine: the demo, tests) unless this is set -- for a network the user
  /// trusts as much as the machine. A warning is logged at every start with it.
  bool insecure_links = false;
};

/// Whether `host` (of "host:port") is a loopback address: localhost,
/// 127.0.0.0/8 or ::1. Names other than localhost are not resolved: they
/// count as not loopback.
bool is_loopback_host(std::string_view host);

/// Splits "host:port". Errors: invalid_argument (no port, port 0 or > 65535).
caf::expected<std::pair<std::string, uint16_t>> split_node_address(const std::string& node);

} // namespace sourcery::cluster
