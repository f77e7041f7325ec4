#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

namespace sourcery::detail {

/// Spawns the registry of one aggregate type: it routes each
/// `command_delivery` to the actor of its stream, starting it on demand
/// through `aggregates` (a simple_one_for_one supervisor whose child
/// template spawns the type's aggregate actor from (stream, registry)), and
/// stops idle actors when they ask (passivation), holding their stream's
/// commands until the old actor is gone. `(release_atom, stream_filter)`
/// stops the actors of the open streams it selects (a cluster moved their
/// shard away).
caf::actor spawn_aggregate_registry(caf::actor_system& sys, caf::actor aggregates);

} // namespace sourcery::detail
