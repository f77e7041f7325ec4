#pragma once

// "No late commit", shown directly rather than through the invariants
// (which optimistic concurrency alone would also keep): every fenced batch
// of events commits before its writer's shard lease changes hands.
//
// The nodes record which incarnation wrote each fenced batch
// (`cluster_writes`, cluster tables v3). This seam adds a trigger on the
// lease table that logs each change of a lease's owner with its
// transaction; the server's commit timestamps (track_commit_timestamp, on
// in scripts/pg.sh's servers) then order the two. For each stream a batch
// wrote, the last change of owner of that stream's shard committed before
// the batch must name the batch's writer. A batch committed after its
// writer lost the shard -- a frozen node's statement run to its end by the
// server, a writer that outlived its lease -- is counted late.

#include <cstdint>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "postgres.hpp"
#include "sourcery/persistence/postgres_coordination.hpp"
#include "sourcery/runtime/cluster/placement.hpp"

namespace sourcery::testing {

struct late_commit_report {
  size_t batches = 0;          ///< fenced batches checked
  size_t handed_over = 0;      ///< of them, written on a shard that later changed hands (the ones that could be late)
  size_t owner_changes = 0;    ///< changes of a shard's owner logged
  std::vector<std::string> late; ///< one line per late batch
};


/// Creates the cluster tables in `schema` (as a node would) and the owner
/// log; call before the first node starts. Throws when it cannot, or when
/// the server does not keep commit timestamps.
inline void install_lease_log(const std::string& server, const std::string& schema) {
  persistence::coordination_options co;
  co.conninfo = server;
  co.schema = schema;
  co.setup = persistence::schema_setup::create;
  if (auto c = persistence::postgres_coordination::open(co); !c)
    throw std::runtime_error("late_commits: the cluster tables cannot be created");
  pg_session pg{server};
  pg.run("SET client_min_messages = warning");
  if (pg.run("SHOW track_commit_timestamp") != "on")
    throw std::runtime_error("late_commits: the server does not keep commit timestamps (track_commit_timestamp)");
  auto s = schema;
  pg.run("CREATE TABLE IF NOT EXISTS " + s + ".test_owner_log (name text NOT NULL, owner text NOT NULL, xid xid8 NOT NULL);"
         "CREATE OR REPLACE FUNCTION " + s + ".test_log_owner() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
         " IF TG_OP = 'INSERT' OR OLD.owner IS DISTINCT FROM NEW.owner THEN"
         "   INSERT INTO " + s + ".test_owner_log VALUES (NEW.name, NEW.owner, pg_current_xact_id());"
         " END IF; RETURN NULL; END $$;"
         "DROP TRIGGER IF EXISTS test_owner_log ON " + s + ".cluster_leases;"
         "CREATE TRIGGER test_owner_log AFTER INSERT OR UPDATE ON " + s + ".cluster_leases"
         " FOR EACH ROW EXECUTE FUNCTION " + s + ".test_log_owner()");
}

/// Checks every fenced batch stored in `schema` against the owner log.
inline late_commit_report late_commits(const std::string& server, const std::string& schema, uint32_t shards = 64) {
  pg_session pg{server};
  late_commit_report out;
  // Each shard's owners in commit order (µs since the epoch).
  std::map<uint32_t, std::vector<std::pair<int64_t, std::string>>> owners;
  auto changes = pg.rows("SELECT name, owner, (extract(epoch FROM pg_xact_commit_timestamp(xid::xid)) * 1000000)::bigint AS t"
                         " FROM " + schema + ".test_owner_log WHERE name LIKE 'shard:%' AND pg_xact_commit_timestamp(xid::xid)"
                         " IS NOT NULL ORDER BY t");
  for (auto& c : changes)
    owners[static_cast<uint32_t>(std::stoul(c[0].substr(6)))].emplace_back(std::stoll(c[2]), c[1]);
  out.owner_changes = changes.size();
  auto batches = pg.rows(
    "SELECT w.first_position, w.owner, (extract(epoch FROM pg_xact_commit_timestamp(w.xmin)) * 1000000)::bigint,"
    " array_to_string(array_agg(DISTINCT convert_from(e.stream_id, 'UTF8')), E'\\n')"
    " FROM " + schema + ".cluster_writes w JOIN " + schema + ".events e"
    " ON e.position BETWEEN w.first_position AND w.first_position + w.events - 1"
    " GROUP BY w.first_position, w.owner, w.xmin");
  for (auto& b : batches) {
    ++out.batches;
    const std::string& owner = b[1];
    auto committed = std::stoll(b[2]);
    bool handed_over = false;
    std::istringstream streams{b[3]};
    for (std::string stream; std::getline(streams, stream);) {
      auto& log = owners[cluster::shard_of(stream, shards)];
      // The owner as of the batch's commit: the last change committed before it.
      const std::string* then = nullptr;
      for (auto& [t, o] : log) {
        if (t < committed)
          then = &o;
        else if (o != owner)
          handed_over = true;
      }
      if (!then || *then != owner)
        out.late.push_back("batch at position " + b[0] + " by " + owner + " on " + stream + " committed while "
                           + (then ? *then : std::string{"nobody"}) + " owned its shard");
    }
    out.handed_over += handed_over;
  }
  return out;
}

} // namespace sourcery::testing
