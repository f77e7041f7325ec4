#include "sourcery/persistence/postgres_coordination.hpp"

#include "pg_connection.hpp"
#include "pg_lease_check.hpp"
#include "pg_pool.hpp"
#include "pg_schema.hpp"
#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence {

namespace detail {

// Version 1: members, leases, incarnations.
constexpr std::string_view cluster_v1 = R"(
CREATE TABLE @.cluster_members (
  cluster text NOT NULL,
  node text NOT NULL,
  incarnation bigint NOT NULL,
  state text NOT NULL,
  renewed_at timestamptz NOT NULL,
  PRIMARY KEY (cluster, node));
CREATE TABLE @.cluster_leases (
  cluster text NOT NULL,
  name text NOT NULL,
  owner text NOT NULL,
  epoch bigint NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (cluster, name));
CREATE SEQUENCE @.cluster_incarnations;
)";

// Version 2: members' votes on who they cannot reach, and each cluster's
// shard count.
constexpr std::string_view cluster_v1_to_v2 = R"(
CREATE TABLE @.cluster_votes (
  cluster text NOT NULL,
  suspect text NOT NULL,
  voter text NOT NULL,
  voted_at timestamptz NOT NULL,
  PRIMARY KEY (cluster, suspect, voter));
CREATE TABLE @.cluster_config (
  cluster text PRIMARY KEY,
  shards int NOT NULL);
)";

// Version 3: which incarnation wrote each fenced batch of events (its first
// position and size), as Akka keeps a writer id with each event -- so that
// a late commit by a node that lost its lease can be shown, or ruled out,
// from the commit times (track_commit_timestamp) after the fact.
constexpr std::string_view cluster_v2_to_v3 = R"(
CREATE TABLE @.cluster_writes (
  first_position bigint PRIMARY KEY,
  events int NOT NULL,
  cluster text NOT NULL,
  owner text NOT NULL);
)";

// A new store gets version 1 and each upgrade since, in one script.
const std::string cluster_sql = std::string{cluster_v1} + std::string{cluster_v1_to_v2} + std::string{cluster_v2_to_v3};

const pg_component cluster_component{
  "cluster", 3, {"cluster_members", "cluster_leases", "cluster_votes", "cluster_config", "cluster_writes"},
  cluster_sql, {cluster_v1_to_v2, cluster_v2_to_v3}};

/// Rows of (name, owner, epoch, milliseconds left) as leases.
std::vector<lease_info> leases_of(const pg::result& r) {
  std::vector<lease_info> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({r.text(i, 0), r.text(i, 1), r.int8(i, 2), std::chrono::milliseconds{r.int8(i, 3)}});
  return out;
}

std::string held_leases_sql(std::string_view schema, std::string_view cluster, std::string_view owner,
                            std::string_view which) {
  std::string sql = "SELECT l.name FROM ";
  sql.append(schema).append(".cluster_leases l WHERE l.cluster = ").append(cluster).append(" AND l.owner = ").append(owner);
  sql.append(" AND l.expires_at > clock_timestamp() AND ").append(which);
  sql.append(" ORDER BY l.name FOR KEY SHARE OF l");
  return sql;
}

std::string lease_schema_of(const append_fence& fence) {
  auto schema = fence.lease_schema();
  return schema.empty() ? std::string{"@"} : pg::quote_ident(schema);
}

/// The first column of every row, as text.
std::vector<std::string> first_column(const pg::result& r) {
  std::vector<std::string> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(r.text(i, 0));
  return out;
}

} // namespace detail

struct postgres_coordination::impl {
  coordination_options options;
  std::string members;  // quoted, schema-qualified table names
  std::string leases;
  std::string incarnations;
  std::string votes;
  std::string config;
  std::unique_ptr<pg::pool> pool;
  /// The renewals' own connection: a renewal never waits for one behind
  /// the keeper's statements (an acquire may wait up to `lock_timeout` for
  /// the old owner's writes, and a loaded machine stretches every one).
  std::unique_ptr<pg::pool> renewals;
  bool absent = false; // opened with schema_setup::none on a store where no cluster ran

  pg::deadline until() const { return pg::clock::now() + options.operation_timeout; }

  template <class F>
  auto run(F&& f) {
    return pool->with(until(), [&](pg::connection& c) { return f(c, until()); });
  }

  /// One statement on a pooled connection, within the operation timeout.
  caf::expected<pg::result> query(const std::string& sql, const pg::params& p) {
    return run([&](pg::connection& c, pg::deadline d) { return c.exec(sql, p, d); });
  }

  /// One renewal statement, on the renewals' connection.
  caf::expected<pg::result> renewal(const std::string& sql, const pg::params& p) {
    return renewals->with(until(), [&](pg::connection& c) { return c.exec(sql, p, until()); });
  }
};

namespace {

pg::params texts(std::initializer_list<std::string_view> values) {
  pg::params p;
  for (auto v : values)
    p.add_text(v);
  return p;
}

int64_t millis(std::chrono::milliseconds t) {
  return static_cast<int64_t>(t.count());
}

} // namespace

postgres_coordination::postgres_coordination(std::unique_ptr<impl> st) : st_(std::move(st)) {}

postgres_coordination::~postgres_coordination() {
  if (st_ && st_->pool)
    st_->pool->close();
  if (st_ && st_->renewals)
    st_->renewals->close();
}

caf::expected<std::unique_ptr<postgres_coordination>> postgres_coordination::open(coordination_options options) {
  if (!detail::valid_schema_name(options.schema))
    return make_error(store_errc::invalid_argument, "bad PostgreSQL schema name '" + options.schema + "'");
  auto st = std::make_unique<impl>();
  st->options = std::move(options);
  auto schema = pg::quote_ident(st->options.schema);
  st->members = schema + ".cluster_members";
  st->leases = schema + ".cluster_leases";
  st->incarnations = schema + ".cluster_incarnations";
  st->votes = schema + ".cluster_votes";
  st->config = schema + ".cluster_config";
  // Membership and leases decide who may write: they commit durably. A
  // lease statement waits for a row lock at most `lock_timeout` (then it
  // fails, and the keeper tries again next round) instead of queueing
  // behind whatever holds it.
  auto setup = [schema = st->options.schema, lock = st->options.lock_timeout](pg::connection& c, pg::deadline until) {
    return c.exec_script("SET application_name = 'sourcery cluster " + schema
                           + "'; SET synchronous_commit = on; SET lock_timeout = " + std::to_string(lock.count())
                           + "; SET client_connection_check_interval = 1000",
                         until);
  };
  st->pool = std::make_unique<pg::pool>(st->options.conninfo, 2, st->options.connect_timeout, setup);
  st->renewals = std::make_unique<pg::pool>(st->options.conninfo, 1, st->options.connect_timeout, setup);
  if (st->options.setup != schema_setup::none) {
    auto created = st->run([&](pg::connection& c, pg::deadline until) {
      return detail::ensure_component(c, st->options.schema, detail::cluster_component, until, st->options.setup);
    });
    if (created)
      return created;
  } else {
    auto there = st->query("SELECT to_regclass($1) IS NOT NULL", texts({st->members}));
    if (!there)
      return there.error();
    st->absent = !there->boolean(0, 0);
  }
  return std::unique_ptr<postgres_coordination>{new postgres_coordination{std::move(st)}};
}

caf::expected<int64_t> postgres_coordination::join(const std::string& cluster, const std::string& node) {
  // The votes against this address were cast against an incarnation that
  // is gone: the new one is judged by its own silence (a node killed and
  // started again was otherwise declared down a moment after it joined).
  auto sql = "WITH withdrawn AS (DELETE FROM " + st_->votes + " WHERE cluster = $1 AND suspect = $2) INSERT INTO "
             + st_->members + " VALUES ($1, $2, nextval('" + st_->incarnations
             + "'), 'up', now()) ON CONFLICT (cluster, node) DO UPDATE SET incarnation = EXCLUDED.incarnation,"
               " state = 'up', renewed_at = now() RETURNING incarnation";
  auto r = st_->query(sql, texts({cluster, node}));
  if (!r)
    return r.error();
  return r->int8(0, 0);
}

caf::expected<member_renewal> postgres_coordination::renew_member(const std::string& cluster,
                                                                  const std::string& node, int64_t incarnation) {
  auto sql = "WITH u AS (UPDATE " + st_->members
             + " SET renewed_at = now() WHERE cluster = $1 AND node = $2 AND incarnation = $3 AND state = 'up'"
               " RETURNING 1) SELECT (SELECT count(*) FROM u), coalesce((SELECT incarnation FROM " + st_->members
             + " WHERE cluster = $1 AND node = $2), 0)";
  auto r = st_->renewal(sql, texts({cluster, node}).add(incarnation));
  if (!r)
    return r.error();
  if (r->int8(0, 0) == 1)
    return member_renewal::renewed;
  return r->int8(0, 1) == incarnation ? member_renewal::declared_down : member_renewal::replaced;
}

caf::expected<bool> postgres_coordination::renew(const std::string& cluster, const std::string& node,
                                                 int64_t incarnation) {
  auto r = renew_member(cluster, node, incarnation);
  if (!r)
    return r.error();
  return *r == member_renewal::renewed;
}

caf::expected<std::vector<std::string>> postgres_coordination::declare_down(const std::string& cluster,
                                                                            std::chrono::milliseconds ttl) {
  auto sql = "UPDATE " + st_->members
             + " SET state = 'down' WHERE cluster = $1 AND state = 'up'"
               " AND renewed_at < now() - $2::bigint * interval '1 millisecond' RETURNING node";
  auto r = st_->query(sql, texts({cluster}).add(millis(ttl)));
  if (!r)
    return r.error();
  return detail::first_column(*r);
}

caf::expected<bool> postgres_coordination::declare_gone(const std::string& cluster, const std::string& node,
                                                        std::chrono::milliseconds silent_for) {
  auto sql = "UPDATE " + st_->members
             + " SET state = 'down' WHERE cluster = $1 AND node = $2 AND state = 'up'"
               " AND renewed_at < now() - $3::bigint * interval '1 millisecond' RETURNING 1";
  auto r = st_->query(sql, texts({cluster, node}).add(millis(silent_for)));
  if (!r)
    return r.error();
  return r->rows() == 1;
}

caf::expected<void> postgres_coordination::leave(const std::string& cluster, const std::string& node,
                                                 int64_t incarnation) {
  auto sql = "UPDATE " + st_->members + " SET state = 'left' WHERE cluster = $1 AND node = $2 AND incarnation = $3";
  if (auto r = st_->query(sql, texts({cluster, node}).add(incarnation)); !r)
    return r.error();
  return {};
}

caf::expected<std::vector<member_info>> postgres_coordination::members(const std::string& cluster) {
  if (st_->absent)
    return std::vector<member_info>{};
  auto sql = "SELECT node, incarnation, state, (extract(epoch FROM now() - renewed_at) * 1000)::bigint FROM "
             + st_->members + " WHERE cluster = $1 ORDER BY node";
  auto r = st_->query(sql, texts({cluster}));
  if (!r)
    return r.error();
  std::vector<member_info> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back({r->text(i, 0), r->int8(i, 1), r->text(i, 2), std::chrono::milliseconds{r->int8(i, 3)}});
  return out;
}

caf::expected<std::optional<int64_t>> postgres_coordination::acquire(const std::string& cluster,
                                                                     const std::string& name, const std::string& node,
                                                                     std::chrono::milliseconds ttl) {
  // One statement. A lease that is free (expired, or already `node`'s) is
  // locked FOR UPDATE: that waits for every write fenced with it (they
  // hold FOR KEY SHARE until they commit), so nothing of the old owner can
  // commit after the lease changed hands. A lease held by another is not
  // locked at all: its owner's renewals never queue behind this. A
  // concurrent taker waits for the row lock, then finds the lease held
  // (the WHERE is checked again on the row as it is) and gets no row.
  // Only an up member's incarnation takes a lease.
  const std::string up = "EXISTS (SELECT 1 FROM " + st_->members
                         + " m WHERE m.cluster = $1 AND m.state = 'up' AND m.node || '#' || m.incarnation::text = $3)";
  auto sql = "WITH cur AS (SELECT owner, epoch, expires_at FROM " + st_->leases
             + " WHERE cluster = $1 AND name = $2 AND (owner = $3 OR expires_at <= clock_timestamp()) AND " + up
             + " FOR UPDATE),"
               " taken AS (UPDATE " + st_->leases + " x SET owner = $3,"
               " epoch = CASE WHEN cur.owner = $3 AND cur.expires_at > clock_timestamp() THEN cur.epoch ELSE cur.epoch + 1 END,"
               " expires_at = clock_timestamp() + $4::bigint * interval '1 millisecond'"
               " FROM cur WHERE x.cluster = $1 AND x.name = $2 RETURNING x.epoch),"
               " created AS (INSERT INTO " + st_->leases
             + " SELECT $1, $2, $3, 1, clock_timestamp() + $4::bigint * interval '1 millisecond' WHERE " + up
             + " AND NOT EXISTS (SELECT 1 FROM " + st_->leases + " WHERE cluster = $1 AND name = $2)"
               " ON CONFLICT (cluster, name) DO NOTHING RETURNING epoch)"
               " SELECT epoch FROM taken UNION ALL SELECT epoch FROM created";
  auto r = st_->query(sql, texts({cluster, name, node}).add(millis(ttl)));
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<int64_t>{};
  return std::optional<int64_t>{r->int8(0, 0)};
}

caf::expected<bool> postgres_coordination::renew_lease(const std::string& cluster, const std::string& name,
                                                       const std::string& node, int64_t epoch,
                                                       std::chrono::milliseconds ttl) {
  auto sql = "UPDATE " + st_->leases
             + " SET expires_at = now() + $5::bigint * interval '1 millisecond' WHERE cluster = $1 AND name = $2"
               " AND owner = $3 AND epoch = $4 AND expires_at > now() RETURNING 1";
  auto r = st_->renewal(sql, texts({cluster, name, node}).add(epoch).add(millis(ttl)));
  if (!r)
    return r.error();
  return r->rows() == 1;
}

caf::expected<void> postgres_coordination::release(const std::string& cluster, const std::string& name,
                                                   const std::string& node, int64_t epoch) {
  auto sql = "UPDATE " + st_->leases
             + " SET expires_at = now() WHERE cluster = $1 AND name = $2 AND owner = $3 AND epoch = $4";
  if (auto r = st_->query(sql, texts({cluster, name, node}).add(epoch)); !r)
    return r.error();
  return {};
}

caf::expected<std::vector<lease_info>> postgres_coordination::renew_leases(const std::string& cluster,
                                                                         const std::string& node,
                                                                         std::chrono::milliseconds ttl,
                                                                         const std::vector<std::string>& names) {
  if (names.empty())
    return std::vector<lease_info>{};
  // Only the leases the caller runs the work of, so that a lease given up
  // (or whose release failed) is never kept alive by renewals. Rows are
  // locked in name order, as every statement that locks several leases
  // does (no deadlock between them), and FOR NO KEY UPDATE: data writes
  // fenced with these leases (FOR KEY SHARE) do not hold it up. Expiry is
  // checked on the row as locked, by the clock at that moment.
  pg::params p = texts({cluster, node});
  p.add(millis(ttl));
  pg::params::array wanted{pg::oid::text};
  for (auto& n : names)
    wanted.add_bytes(n);
  p.add(std::move(wanted));
  auto sql = "UPDATE " + st_->leases
             + " l SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond' FROM (SELECT name FROM "
             + st_->leases
             + " WHERE cluster = $1 AND owner = $2 AND name = ANY($4::text[]) AND expires_at > clock_timestamp()"
               " ORDER BY name FOR NO KEY UPDATE) k"
               " WHERE l.cluster = $1 AND l.name = k.name AND l.owner = $2 AND l.expires_at > clock_timestamp()"
               " AND EXISTS (SELECT 1 FROM " + st_->members
             + " m WHERE m.cluster = $1 AND m.state = 'up' AND m.node || '#' || m.incarnation::text = $2)"
               " RETURNING l.name, l.owner, l.epoch, $3::bigint";
  auto r = st_->renewal(sql, p);
  if (!r)
    return r.error();
  return detail::leases_of(*r);
}

caf::expected<void> postgres_coordination::release_all(const std::string& cluster, const std::string& node) {
  auto sql = "UPDATE " + st_->leases + " l SET expires_at = now() FROM (SELECT name FROM " + st_->leases
             + " WHERE cluster = $1 AND owner = $2 AND expires_at > now() ORDER BY name FOR NO KEY UPDATE) k"
               " WHERE l.cluster = $1 AND l.name = k.name";
  if (auto r = st_->query(sql, texts({cluster, node})); !r)
    return r.error();
  return {};
}

caf::expected<int64_t> postgres_coordination::expire_orphaned(const std::string& cluster) {
  auto sql = "UPDATE " + st_->leases + " l SET expires_at = now() FROM (SELECT o.name FROM " + st_->leases
             + " o WHERE o.cluster = $1 AND o.expires_at > now() AND NOT EXISTS (SELECT 1 FROM " + st_->members
             + " m WHERE m.cluster = o.cluster AND m.state = 'up' AND o.owner = m.node || '#' || m.incarnation::text)"
               " ORDER BY o.name FOR NO KEY UPDATE OF o) k WHERE l.cluster = $1 AND l.name = k.name RETURNING 1";
  auto r = st_->query(sql, texts({cluster}));
  if (!r)
    return r.error();
  return static_cast<int64_t>(r->rows());
}

caf::expected<std::vector<lease_info>> postgres_coordination::leases(const std::string& cluster) {
  if (st_->absent)
    return std::vector<lease_info>{};
  auto sql = "SELECT name, owner, epoch, greatest(0, (extract(epoch FROM expires_at - now()) * 1000)::bigint) FROM "
             + st_->leases + " WHERE cluster = $1 ORDER BY name";
  auto r = st_->query(sql, texts({cluster}));
  if (!r)
    return r.error();
  return detail::leases_of(*r);
}

caf::expected<uint32_t> postgres_coordination::agree_shards(const std::string& cluster, uint32_t shards,
                                                           std::chrono::milliseconds ttl) {
  // The count is the cluster's while any member runs; with none running,
  // the next to start sets it anew.
  auto r = st_->run([&](pg::connection& c, pg::deadline until) -> caf::expected<pg::result> {
    auto set = c.exec("INSERT INTO " + st_->config + " AS x VALUES ($1, $2::int4) ON CONFLICT (cluster) DO UPDATE SET"
                      " shards = $2::int4 WHERE NOT EXISTS (SELECT 1 FROM " + st_->members
                        + " m WHERE m.cluster = $1 AND m.state = 'up'"
                          " AND m.renewed_at > now() - $3::bigint * interval '1 millisecond')",
                      texts({cluster}).add(static_cast<int32_t>(shards)).add(millis(ttl)), until);
    if (!set)
      return set.error();
    return c.exec("SELECT shards FROM " + st_->config + " WHERE cluster = $1", texts({cluster}), until);
  });
  if (!r)
    return r.error();
  if (r->rows() != 1)
    return make_error(store_errc::io_error, "the cluster's shard count was not stored");
  return static_cast<uint32_t>(r->int4(0, 0));
}

caf::expected<void> postgres_coordination::vote(const std::string& cluster, const std::string& suspect,
                                                const std::string& voter, bool reachable) {
  auto sql = reachable ? "DELETE FROM " + st_->votes + " WHERE cluster = $1 AND suspect = $2 AND voter = $3"
                       : "INSERT INTO " + st_->votes + " VALUES ($1, $2, $3, now()) ON CONFLICT (cluster, suspect, voter)"
                                                       " DO UPDATE SET voted_at = now()";
  if (auto r = st_->query(sql, texts({cluster, suspect, voter})); !r)
    return r.error();
  return {};
}

namespace {

/// SQL: the up members of $1 other than `node` (a column or a parameter).
std::string others_up(const std::string& members, const std::string& node) {
  return "(SELECT count(*) FROM " + members + " o WHERE o.cluster = $1 AND o.state = 'up' AND o.node <> " + node + ")";
}

/// SQL: the votes against `node` cast within $2 ms by up members.
std::string fresh_votes(const std::string& votes, const std::string& members, const std::string& node) {
  return "(SELECT count(*) FROM " + votes + " v JOIN " + members
         + " o ON o.cluster = v.cluster AND o.node = v.voter AND o.state = 'up' WHERE v.cluster = $1 AND v.suspect = "
         + node + " AND v.voter <> " + node + " AND v.voted_at > now() - $2::bigint * interval '1 millisecond')";
}

} // namespace

caf::expected<std::vector<std::string>> postgres_coordination::declare_unreachable(const std::string& cluster,
                                                                                 std::chrono::milliseconds window) {
  // With two members or more besides it, a majority of them must vote.
  auto sql = "UPDATE " + st_->members + " m SET state = 'down' WHERE m.cluster = $1 AND m.state = 'up' AND "
             + others_up(st_->members, "m.node") + " >= 2 AND 2 * " + fresh_votes(st_->votes, st_->members, "m.node")
             + " > " + others_up(st_->members, "m.node") + " RETURNING m.node";
  auto r = st_->query(sql, texts({cluster}).add(millis(window)));
  if (!r)
    return r.error();
  return detail::first_column(*r);
}

caf::expected<bool> postgres_coordination::shunned(const std::string& cluster, const std::string& node,
                                                   std::chrono::milliseconds window) {
  auto sql = "SELECT " + others_up(st_->members, "$3") + " >= 2 AND 2 * " + fresh_votes(st_->votes, st_->members, "$3")
             + " > " + others_up(st_->members, "$3");
  auto r = st_->query(sql, texts({cluster}).add(millis(window)).add_text(node));
  if (!r)
    return r.error();
  return r->boolean(0, 0);
}

caf::expected<std::vector<std::string>> postgres_coordination::clusters() {
  if (st_->absent)
    return std::vector<std::string>{};
  auto sql = "SELECT cluster FROM " + st_->members + " UNION SELECT cluster FROM " + st_->leases + " ORDER BY 1";
  auto r = st_->query(sql, pg::params{});
  if (!r)
    return r.error();
  return detail::first_column(*r);
}

} // namespace sourcery::persistence
