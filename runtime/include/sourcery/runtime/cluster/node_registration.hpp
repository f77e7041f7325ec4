#pragma once

// Joining a cluster: the registration of a cluster node, given to an
// application as `application_config::registration`:
//
//     sourcery::cluster::cluster_settings cluster;
//     cluster.name = "bank";
//     cluster.node = "10.0.0.5:7400";
//     config.store_uri = "postgresql://...";   // shared by every node
//     config.registration = sourcery::cluster::node_registration(cluster);
//
// Each aggregate then runs on the node holding its shard's lease, each
// handler, projection and process manager on one node at a time, and a
// command dispatched anywhere is answered where it was dispatched
// (ARCHITECTURE.md, "From one node to another"). Link with Sourcery::cluster.

#include <memory>

#include "sourcery/runtime/cluster/cluster_settings.hpp"
#include "sourcery/runtime/registration/registration.hpp"

namespace sourcery::cluster {

/// The provider of a cluster node's registration. Starting the application
/// fails with invalid_argument when its store is not PostgreSQL's (the
/// nodes of a cluster share one), when `settings.node` (or `listen`) is not
/// "host:port" with a port, or with no shards; with unavailable when the
/// address cannot be listened on; with the store's errors otherwise.
std::shared_ptr<const registration_provider> node_registration(cluster_settings settings);

} // namespace sourcery::cluster
