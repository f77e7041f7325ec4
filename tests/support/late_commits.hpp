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
#include <stdexcept>
#include <string>
#include <vector>

#include <libpq-fe.h>

#include "sourcery/persistence/postgres_coordination.hpp"
#include "sourcery/runtime/cluster/placement.hpp"

namespace sourcery::testing {

struct late_commit_report {
  size_t batches = 0;          ///< fenced batches checked
  size_t handed_over = 0;      ///< of them, written on a shard that later changed hands (the ones that could be late)
  size_t owner_changes = 0;    ///< changes of a shard's owner logged
  std::vector<std::string> late; ///< one line per late batch
};

namespace detail {

inline PGresult* must_exec(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  auto st = PQresultStatus(r);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    std::string msg = PQresultErrorMessage(r);
    PQclear(r);
    throw std::runtime_error("late_commits: " + msg + " in " + sql.substr(0, 120));
  }
  return r;
}

struct pg_conn {
  explicit pg_conn(const std::string& uri) : c(PQconnectdb(uri.c_str())) {
    if (PQstatus(c) != CONNECTION_OK)
      throw std::runtime_error(std::string{"late_commits: "} + PQerrorMessage(c));
  }
  ~pg_conn() { PQfinish(c); }
  PGconn* c;
};

} // namespace detail

/// Creates the cluster tables in `schema` (as a node would) and the owner
/// log; call before the first node starts. Throws when it cannot, or when
/// the server does not keep commit timestamps.
inline void install_lease_log(const std::string& server, const std::string& schema) {
  persistence::coordination_options co;
  co.conninfo = server;
  co.schema = schema;
  if (auto c = persistence::postgres_coordination::open(co); !c)
    throw std::runtime_error("late_commits: the cluster tables cannot be created");
  detail::pg_conn pg{server};
  PQclear(detail::must_exec(pg.c, "SET client_min_messages = warning"));
  auto on = PQgetvalue(detail::must_exec(pg.c, "SHOW track_commit_timestamp"), 0, 0);
  if (std::string{on} != "on")
    throw std::runtime_error("late_commits: the server does not keep commit timestamps (track_commit_timestamp)");
  auto s = schema;
  PQclear(detail::must_exec(
    pg.c, "CREATE TABLE IF NOT EXISTS " + s + ".test_owner_log (name text NOT NULL, owner text NOT NULL, xid xid8 NOT NULL);"
          "CREATE OR REPLACE FUNCTION " + s + ".test_log_owner() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
          " IF TG_OP = 'INSERT' OR OLD.owner IS DISTINCT FROM NEW.owner THEN"
          "   INSERT INTO " + s + ".test_owner_log VALUES (NEW.name, NEW.owner, pg_current_xact_id());"
          " END IF; RETURN NULL; END $$;"
          "DROP TRIGGER IF EXISTS test_owner_log ON " + s + ".cluster_leases;"
          "CREATE TRIGGER test_owner_log AFTER INSERT OR UPDATE ON " + s + ".cluster_leases"
          " FOR EACH ROW EXECUTE FUNCTION " + s + ".test_log_owner()"));
}

/// Checks every fenced batch stored in `schema` against the owner log.
inline late_commit_report late_commits(const std::string& server, const std::string& schema, uint32_t shards = 64) {
  detail::pg_conn pg{server};
  late_commit_report out;
  // Each shard's owners in commit order (µs since the epoch).
  std::map<uint32_t, std::vector<std::pair<int64_t, std::string>>> owners;
  {
    PGresult* r = detail::must_exec(
      pg.c, "SELECT name, owner, (extract(epoch FROM pg_xact_commit_timestamp(xid::xid)) * 1000000)::bigint AS t"
            " FROM " + schema + ".test_owner_log WHERE name LIKE 'shard:%' AND pg_xact_commit_timestamp(xid::xid)"
            " IS NOT NULL ORDER BY t");
    for (int i = 0; i < PQntuples(r); ++i) {
      auto shard = static_cast<uint32_t>(std::stoul(std::string{PQgetvalue(r, i, 0)}.substr(6)));
      owners[shard].emplace_back(std::stoll(PQgetvalue(r, i, 2)), PQgetvalue(r, i, 1));
    }
    out.owner_changes = static_cast<size_t>(PQntuples(r));
    PQclear(r);
  }
  PGresult* r = detail::must_exec(
    pg.c, "SELECT w.first_position, w.owner, (extract(epoch FROM pg_xact_commit_timestamp(w.xmin)) * 1000000)::bigint,"
          " array_to_string(array_agg(DISTINCT convert_from(e.stream_id, 'UTF8')), E'\\n')"
          " FROM " + schema + ".cluster_writes w JOIN " + schema + ".events e"
          " ON e.position BETWEEN w.first_position AND w.first_position + w.events - 1"
          " GROUP BY w.first_position, w.owner, w.xmin");
  for (int i = 0; i < PQntuples(r); ++i) {
    ++out.batches;
    std::string owner = PQgetvalue(r, i, 1);
    auto committed = std::stoll(PQgetvalue(r, i, 2));
    std::string streams = PQgetvalue(r, i, 3);
    bool handed_over = false;
    for (size_t at = 0; at <= streams.size();) {
      auto end = streams.find('\n', at);
      if (end == std::string::npos)
        end = streams.size();
      auto stream = streams.substr(at, end - at);
      at = end + 1;
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
        out.late.push_back("batch at position " + std::string{PQgetvalue(r, i, 0)} + " by " + owner + " on " + stream
                           + " committed while " + (then ? *then : std::string{"nobody"}) + " owned its shard");
    }
    out.handed_over += handed_over;
  }
  PQclear(r);
  return out;
}

} // namespace sourcery::testing
