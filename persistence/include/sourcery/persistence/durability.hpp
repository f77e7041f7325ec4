#pragma once

#include <cstdint>

namespace sourcery::persistence {

/// When a commit counts as done.
enum class durability : uint8_t {
  /// Default. Every group commit is flushed to disk (fsync; on PostgreSQL, synchronous_commit = on) before any of its
  /// appends is acknowledged: nothing acknowledged is lost, even on power loss.
  durable,
  /// One flush per commit instead of two (LMDB's MDB_NOMETASYNC): the store
  /// stays intact, but a power loss may undo the last acknowledged commit.
  no_meta_sync,
  /// Opt-in, no flush at all (MDB_NOSYNC): a crash of the process loses
  /// nothing, but a power loss or OS crash loses the commits the OS had not
  /// yet written. Never use it where an acknowledgement is a promise.
  no_sync,
};

} // namespace sourcery::persistence
