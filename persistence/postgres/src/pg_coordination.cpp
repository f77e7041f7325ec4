#include "sourcery/persistence/postgres_coordination.hpp"

#include "pg_connection.hpp"
#include "pg_pool.hpp"
#include "pg_schema.hpp"
#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence {

namespace detail {

constexpr std::string_view cluster_sql = R"(
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

const pg_component cluster_component{"cluster", 1, {"cluster_members", "cluster_leases"}, cluster_sql};

/// Rows of (name, owner, epoch, milliseconds left) as leases.
std::vector<lease_info> leases_of(const pg::result& r) {
  std::vector<lease_info> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({r.text(i, 0), r.text(i, 1), r.int8(i, 2), std::chrono::milliseconds{r.int8(i, 3)}});
  return out;
}

} // namespace detail

struct postgres_coordination::impl {
  coordination_options options;
  std::string members;  // quoted, schema-qualified table names
  std::string leases;
  std::string incarnations;
  std::unique_ptr<pg::pool> pool;
  bool absent = false; // opened without `create` on a store where no cluster ran

  pg::deadline until() const { return pg::clock::now() + options.operation_timeout; }

  template <class F>
  auto run(F&& f) {
    return pool->with(until(), [&](pg::connection& c) { return f(c, until()); });
  }

  /// One statement on a pooled connection, within the operation timeout.
  caf::expected<pg::result> query(const std::string& sql, const pg::params& p) {
    return run([&](pg::connection& c, pg::deadline d) { return c.exec(sql, p, d); });
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
  // Membership and leases decide who may write: they commit durably.
  st->pool = std::make_unique<pg::pool>(st->options.conninfo, 2, st->options.connect_timeout,
                                        [schema = st->options.schema](pg::connection& c, pg::deadline until) {
                                          return c.exec_script("SET application_name = 'sourcery cluster " + schema
                                                                 + "'; SET synchronous_commit = on",
                                                               until);
                                        });
  if (st->options.create) {
    auto created = st->run([&](pg::connection& c, pg::deadline until) {
      return detail::ensure_component(c, st->options.schema, detail::cluster_component, until);
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
  auto sql = "INSERT INTO " + st_->members + " VALUES ($1, $2, nextval('" + st_->incarnations
             + "'), 'up', now()) ON CONFLICT (cluster, node) DO UPDATE SET incarnation = EXCLUDED.incarnation,"
               " state = 'up', renewed_at = now() RETURNING incarnation";
  auto r = st_->query(sql, texts({cluster, node}));
  if (!r)
    return r.error();
  return r->int8(0, 0);
}

caf::expected<bool> postgres_coordination::renew(const std::string& cluster, const std::string& node,
                                                 int64_t incarnation) {
  auto sql = "UPDATE " + st_->members
             + " SET renewed_at = now() WHERE cluster = $1 AND node = $2 AND incarnation = $3 AND state = 'up'"
               " RETURNING 1";
  auto r = st_->query(sql, texts({cluster, node}).add(incarnation));
  if (!r)
    return r.error();
  return r->rows() == 1;
}

caf::expected<std::vector<std::string>> postgres_coordination::declare_down(const std::string& cluster,
                                                                            std::chrono::milliseconds ttl) {
  auto sql = "UPDATE " + st_->members
             + " SET state = 'down' WHERE cluster = $1 AND state = 'up'"
               " AND renewed_at < now() - $2::bigint * interval '1 millisecond' RETURNING node";
  auto r = st_->query(sql, texts({cluster}).add(millis(ttl)));
  if (!r)
    return r.error();
  std::vector<std::string> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(r->text(i, 0));
  return out;
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
  // One statement: a concurrent taker waits for the row lock, then finds
  // the lease held (the WHERE no longer holds) and gets no row.
  auto sql = "INSERT INTO " + st_->leases
             + " AS x VALUES ($1, $2, $3, 1, now() + $4::bigint * interval '1 millisecond')"
               " ON CONFLICT (cluster, name) DO UPDATE SET owner = EXCLUDED.owner,"
               " epoch = CASE WHEN x.owner = EXCLUDED.owner AND x.expires_at > now() THEN x.epoch ELSE x.epoch + 1 END,"
               " expires_at = EXCLUDED.expires_at"
               " WHERE x.owner = EXCLUDED.owner OR x.expires_at <= now() RETURNING epoch";
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
  auto r = st_->query(sql, texts({cluster, name, node}).add(epoch).add(millis(ttl)));
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
                                                                         std::chrono::milliseconds ttl) {
  auto sql = "UPDATE " + st_->leases
             + " SET expires_at = now() + $3::bigint * interval '1 millisecond' WHERE cluster = $1 AND owner = $2"
               " AND expires_at > now() RETURNING name, owner, epoch, $3::bigint";
  auto r = st_->query(sql, texts({cluster, node}).add(millis(ttl)));
  if (!r)
    return r.error();
  return detail::leases_of(*r);
}

caf::expected<void> postgres_coordination::release_all(const std::string& cluster, const std::string& node) {
  auto sql = "UPDATE " + st_->leases + " SET expires_at = now() WHERE cluster = $1 AND owner = $2 AND expires_at > now()";
  if (auto r = st_->query(sql, texts({cluster, node})); !r)
    return r.error();
  return {};
}

caf::expected<int64_t> postgres_coordination::expire_orphaned(const std::string& cluster) {
  auto sql = "UPDATE " + st_->leases + " l SET expires_at = now() WHERE l.cluster = $1 AND l.expires_at > now()"
             " AND NOT EXISTS (SELECT 1 FROM " + st_->members + " m WHERE m.cluster = l.cluster AND m.state = 'up'"
             " AND l.owner = m.node || '#' || m.incarnation::text) RETURNING 1";
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

caf::expected<std::vector<std::string>> postgres_coordination::clusters() {
  if (st_->absent)
    return std::vector<std::string>{};
  auto sql = "SELECT cluster FROM " + st_->members + " UNION SELECT cluster FROM " + st_->leases + " ORDER BY 1";
  auto r = st_->query(sql, pg::params{});
  if (!r)
    return r.error();
  std::vector<std::string> out;
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(r->text(i, 0));
  return out;
}

} // namespace sourcery::persistence
