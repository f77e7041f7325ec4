#include "sourcery/persistence/postgres_projection_store.hpp"

#include <algorithm>
#include <map>
#include <mutex>

#include "pg_lease_check.hpp"
#include "pg_pool.hpp"
#include "pg_schema.hpp"
#include "read_model_names.hpp"
#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence {

namespace {

/// A statement a user wrote, text in and out.
caf::expected<sql_rows> run_user_sql(pg::connection& c, std::string_view sql, const std::vector<sql_value>& params,
                                     pg::deadline until) {
  pg::params p;
  for (auto& v : params)
    p.text_value(v);
  auto r = c.exec(sql, p, until, pg::format::text);
  if (!r)
    return r.error();
  sql_rows out;
  auto* raw = r->raw_result();
  if (!raw)
    return out;
  int cols = PQnfields(raw);
  for (int k = 0; k < cols; ++k)
    out.columns.emplace_back(PQfname(raw, k));
  for (int i = 0; i < r->rows(); ++i) {
    std::vector<sql_value> row;
    row.reserve(static_cast<size_t>(cols));
    for (int k = 0; k < cols; ++k)
      row.push_back(r->is_null(i, k) ? sql_value{} : sql_value{r->text(i, k)});
    out.rows.push_back(std::move(row));
  }
  const char* tuples = PQcmdTuples(raw);
  out.affected = tuples && *tuples ? std::stoull(tuples) : out.rows.size();
  return out;
}

} // namespace

struct postgres_projection_store::impl {
  // -- constant after construction
  postgres_read_model_options options;
  std::string schema; // quoted
  std::string rows_table, checkpoints_table;
  // -- any thread
  std::unique_ptr<pg::pool> pool;
  mutable std::mutex fence_mtx;
  std::shared_ptr<const append_fence> fence;

  pg::deadline op_deadline() const { return pg::clock::now() + options.operation_timeout; }
};

/// The writes of one transaction: rows cached until the end (or until a
/// scan or a statement of the projection's own needs them in the
/// database), then written with one statement per kind.
class pg_row_writer final : public projection_store::writer, public sql_session {
public:
  pg_row_writer(const postgres_projection_store::impl& st, pg::connection& c, std::string_view projection,
                pg::deadline until)
    : st_(st), c_(c), projection_(projection), until_(until) {}

  void put(std::string_view table, std::string_view key, std::string_view value) override {
    if (!check_table(table))
      return;
    auto& r = rows_[{std::string{table}, std::string{key}}];
    r.value = std::string{value};
    r.dirty = true;
    r.known = true;
  }

  std::optional<std::string> get(std::string_view table, std::string_view key) const override {
    if (failed_)
      return std::nullopt;
    auto& r = rows_[{std::string{table}, std::string{key}}];
    if (!r.known) {
      pg::params p;
      p.add_bytea(projection_).add_bytea(table).add_bytea(key);
      auto got = c_.exec_prepared("rm_get", "SELECT value FROM " + st_.rows_table
                                              + " WHERE projection = $1 AND tbl = $2 AND key = $3",
                                  p, until_);
      if (!got) {
        failed_ = got.error();
        return std::nullopt;
      }
      if (got->rows() == 1)
        r.value = got->text(0, 0);
      r.known = true;
    }
    return r.value;
  }

  bool erase(std::string_view table, std::string_view key) override {
    if (!check_table(table))
      return false;
    bool existed = get(table, key).has_value();
    auto& r = rows_[{std::string{table}, std::string{key}}];
    r.value.reset();
    r.dirty = true;
    return existed;
  }

  std::vector<std::pair<std::string, std::string>> scan(std::string_view table) const override {
    std::vector<std::pair<std::string, std::string>> out;
    if (flush())
      return out;
    pg::params p;
    p.add_bytea(projection_).add_bytea(table);
    auto got = c_.exec_prepared("rm_scan", "SELECT key, value FROM " + st_.rows_table
                                             + " WHERE projection = $1 AND tbl = $2 ORDER BY key",
                                p, until_);
    if (!got) {
      failed_ = got.error();
      return out;
    }
    for (int i = 0; i < got->rows(); ++i)
      out.emplace_back(got->text(i, 0), got->text(i, 1));
    return out;
  }

  sql_session* sql() override { return this; }

  caf::expected<sql_rows> exec(std::string_view sql, const std::vector<sql_value>& params) override {
    if (auto err = flush())
      return err;
    auto r = run_user_sql(c_, sql, params, until_);
    if (!r)
      failed_ = r.error(); // the transaction is aborted: the write must fail
    return r;
  }

  const std::string& schema() const override { return st_.schema; }

  /// Writes the dirty rows; the first error, kept.
  caf::error flush() const {
    if (failed_)
      return failed_;
    pg::params::array put_tbl{pg::oid::bytea}, put_key{pg::oid::bytea}, put_val{pg::oid::bytea};
    pg::params::array del_tbl{pg::oid::bytea}, del_key{pg::oid::bytea};
    for (auto& [k, r] : rows_) {
      if (!r.dirty)
        continue;
      if (r.value) {
        put_tbl.add_bytes(k.first);
        put_key.add_bytes(k.second);
        put_val.add_bytes(*r.value);
      } else {
        del_tbl.add_bytes(k.first);
        del_key.add_bytes(k.second);
      }
      r.dirty = false;
    }
    if (put_tbl.size() > 0) {
      pg::params p;
      p.add_bytea(projection_).add(std::move(put_tbl)).add(std::move(put_key)).add(std::move(put_val));
      auto r = c_.exec_prepared("rm_put",
                                "INSERT INTO " + st_.rows_table
                                  + " SELECT $1, t, k, v FROM unnest($2::bytea[], $3::bytea[], $4::bytea[]) AS u(t, k, v)"
                                    " ON CONFLICT (projection, tbl, key) DO UPDATE SET value = excluded.value",
                                p, until_);
      if (!r)
        return failed_ = r.error();
    }
    if (del_tbl.size() > 0) {
      pg::params p;
      p.add_bytea(projection_).add(std::move(del_tbl)).add(std::move(del_key));
      auto r = c_.exec_prepared("rm_del",
                                "DELETE FROM " + st_.rows_table
                                  + " r USING unnest($2::bytea[], $3::bytea[]) AS u(t, k)"
                                    " WHERE r.projection = $1 AND r.tbl = u.t AND r.key = u.k",
                                p, until_);
      if (!r)
        return failed_ = r.error();
    }
    return {};
  }

private:
  bool check_table(std::string_view table) {
    if (failed_)
      return false;
    if (detail::valid_read_model_name(table))
      return true;
    failed_ = detail::bad_read_model_name("table");
    return false;
  }
  struct row {
    std::optional<std::string> value;
    bool dirty = false;
    bool known = false; // value is what the database holds (or will)
  };
  const postgres_projection_store::impl& st_;
  pg::connection& c_;
  std::string_view projection_;
  pg::deadline until_;
  mutable std::map<std::pair<std::string, std::string>, row> rows_;
  mutable caf::error failed_;
};

// -- opening ----------------------------------------------------------------------

postgres_projection_store::postgres_projection_store(std::unique_ptr<impl> impl) : impl_(std::move(impl)) {}

postgres_projection_store::~postgres_projection_store() {
  if (impl_ && impl_->pool)
    impl_->pool->close();
}

caf::expected<std::unique_ptr<postgres_projection_store>>
postgres_projection_store::open(postgres_read_model_options options) {
  if (!detail::valid_schema_name(options.schema))
    return make_error(store_errc::invalid_argument, "bad PostgreSQL schema name '" + options.schema + "'");
  auto st = std::make_unique<impl>();
  st->options = std::move(options);
  st->schema = pg::quote_ident(st->options.schema);
  st->rows_table = st->schema + ".read_model_rows";
  st->checkpoints_table = st->schema + ".read_model_checkpoints";
  auto sync = st->options.mode == durability::durable ? "on" : "off";
  st->pool = std::make_unique<pg::pool>(
    st->options.conninfo, st->options.pool_size, st->options.connect_timeout,
    [sync, schema = st->options.schema, idle = st->options.idle_in_transaction_timeout](pg::connection& c,
                                                                                          pg::deadline until) {
      // A paused process must not hold a handler's lease row (which another
      // node's acquire waits for) longer than the lease lives.
      return c.exec_script("SET application_name = 'sourcery read-models " + schema + "'; SET synchronous_commit = "
                             + sync + "; SET idle_in_transaction_session_timeout = " + std::to_string(idle.count())
                             + "; SET client_connection_check_interval = 1000",
                           until);
    });
  auto until = st->op_deadline();
  auto c = st->pool->take(until);
  if (!c)
    return c.error();
  if (auto err = detail::ensure_component(**c, st->options.schema, detail::read_models_component, until,
                                            st->options.setup))
    return err;
  return std::unique_ptr<postgres_projection_store>{new postgres_projection_store{std::move(st)}};
}

// -- writing ------------------------------------------------------------------------

caf::error postgres_projection_store::write(std::string_view projection, uint64_t position,
                                            const std::function<caf::error(writer&)>& f) {
  return commit(projection, &position, f, false);
}

caf::error postgres_projection_store::write_after(std::string_view projection, uint64_t after, uint64_t position,
                                                  const std::function<caf::error(writer&)>& f) {
  return commit(projection, &position, f, false, &after);
}

caf::error postgres_projection_store::update(std::string_view projection, const std::function<caf::error(writer&)>& f) {
  return commit(projection, nullptr, f, false);
}

caf::error postgres_projection_store::reset(std::string_view projection, const std::function<caf::error(writer&)>& also) {
  return commit(projection, nullptr, also, true);
}

namespace {

/// In a cluster: the consumer writing `projection` must hold its lease;
/// locked FOR KEY SHARE, it cannot change hands (an acquire takes FOR
/// UPDATE) before this transaction ends, while its renewals go on.
caf::error check_fence(const postgres_projection_store::impl& st, pg::connection& c, std::string_view projection,
                       pg::deadline until) {
  std::shared_ptr<const append_fence> fence;
  {
    std::lock_guard guard{st.fence_mtx};
    fence = st.fence;
  }
  if (!fence)
    return {};
  auto lease = fence->lease_for_checkpoint(projection);
  pg::params p;
  p.add_text(fence->cluster()).add_text(lease.name).add_text(fence->owner()).add(lease.epoch);
  auto r = c.exec_prepared(
    "rm_fence" + (fence->lease_schema().empty() ? std::string{} : "_" + fence->lease_schema()),
    detail::held_leases_sql(fence->lease_schema().empty() ? st.schema : detail::lease_schema_of(*fence), "$1", "$3",
                            "l.name = $2 AND l.epoch = $4"),
    p,
    until);
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return make_error(store_errc::fenced, "this node (" + fence->owner() + ") does not hold lease " + lease.name
                                            + ": " + std::string{projection} + " is another node's to write");
  return {};
}

} // namespace

caf::error postgres_projection_store::fence_writes(std::shared_ptr<const append_fence> fence) {
  std::lock_guard guard{impl_->fence_mtx};
  impl_->fence = std::move(fence);
  return {};
}

caf::error postgres_projection_store::commit(std::string_view projection, const uint64_t* checkpoint,
                                             const std::function<caf::error(writer&)>& f, bool reset,
                                             const uint64_t* after) {
  if (!detail::valid_read_model_name(projection))
    return detail::bad_read_model_name("projection");
  auto& st = *impl_;
  auto until = st.op_deadline();
  for (int attempt = 0;; ++attempt) {
    auto lease = st.pool->take(until);
    if (!lease)
      return lease.error();
    auto& c = **lease;
    bool commit_sent = false;
    auto err = [&]() -> caf::error {
      if (auto r = c.exec("BEGIN", until); !r)
        return r.error();
      pg::params p;
      p.add_bytea(projection);
      // The checkpoint row, locked: writers of one projection (two processes
      // on one database) take turns. A projection never written gets a row
      // at -1 first, so that even its first writers have a row to queue on.
      if (auto r = c.exec_prepared("rm_claim", "INSERT INTO " + st.checkpoints_table
                                                 + " VALUES ($1, -1) ON CONFLICT (projection) DO NOTHING",
                                   p, until);
          !r)
        return r.error();
      auto ck = c.exec_prepared("rm_lock", "SELECT position FROM " + st.checkpoints_table
                                             + " WHERE projection = $1 FOR UPDATE",
                                p, until);
      if (!ck)
        return ck.error();
      if (checkpoint && ck->rows() == 1 && ck->int8(0, 0) >= 0) {
        auto stored = static_cast<uint64_t>(ck->int8(0, 0));
        if (stored > *checkpoint || (after && stored != *after))
          return make_error(store_errc::invalid_argument, "projection " + std::string{projection} + " is at position "
                                                            + std::to_string(stored) + ", not "
                                                            + std::to_string(after ? *after : *checkpoint));
      }
      if (checkpoint)
        if (auto e = check_fence(st, c, projection, until))
          return e;
      if (reset) {
        if (auto r = c.exec("DELETE FROM " + st.rows_table + " WHERE projection = $1", p, until); !r)
          return r.error();
        if (auto r = c.exec("DELETE FROM " + st.checkpoints_table + " WHERE projection = $1", p, until); !r)
          return r.error();
      }
      pg_row_writer w{st, c, projection, until};
      if (f)
        if (auto e = f(w))
          return e;
      if (auto e = w.flush())
        return e;
      if (checkpoint) {
        pg::params q;
        q.add_bytea(projection).add(static_cast<int64_t>(*checkpoint));
        auto r = c.exec_prepared("rm_checkpoint", "INSERT INTO " + st.checkpoints_table
                                                    + " VALUES ($1, $2) ON CONFLICT (projection)"
                                                      " DO UPDATE SET position = excluded.position",
                                 q, until);
        if (!r)
          return r.error();
      }
      commit_sent = true;
      if (auto r = c.exec("COMMIT", until); !r)
        return r.error();
      return {};
    }();
    if (!err)
      return {};
    if (c.settled()) {
      (void) c.exec("ROLLBACK", until);
      return err;
    }
    // The connection broke or a statement timed out. Before the COMMIT:
    // nothing was applied, run it again. During it: the checkpoint tells
    // whether it committed.
    if (commit_sent) {
      if (!checkpoint)
        return make_error(store_errc::unavailable, "the connection broke while committing read-model rows: "
                                                     + describe(err));
      auto now = this->checkpoint(projection);
      if (now && *now && **now == *checkpoint)
        return {};
    }
    if (pg::clock::now() >= until || attempt >= 5)
      return err;
  }
}

caf::error postgres_projection_store::replace(std::string_view projection,
                                              const std::function<caf::error(writer&)>& also,
                                              const std::function<caf::error(batches&)>& build) {
  if (!detail::valid_read_model_name(projection))
    return detail::bad_read_model_name("projection");
  auto& st = *impl_;
  auto lease = st.pool->take(st.op_deadline());
  if (!lease)
    return lease.error();
  auto& c = **lease;
  // Each step waits at most the operation timeout; the whole may take as
  // long as the log is long.
  struct one_transaction final : batches {
    postgres_projection_store::impl& st;
    pg::connection& c;
    std::string_view projection;
    std::optional<uint64_t> last;
    one_transaction(postgres_projection_store::impl& s, pg::connection& conn, std::string_view p)
      : st(s), c(conn), projection(p) {}
    caf::error write(uint64_t position, const std::function<caf::error(writer&)>& f) override {
      if (last && position <= *last)
        return make_error(store_errc::invalid_argument, "a rebuild's batches must move forward: "
                                                          + std::to_string(position) + " after "
                                                          + std::to_string(*last));
      pg_row_writer w{st, c, projection, st.op_deadline()};
      if (f)
        if (auto err = f(w))
          return err;
      if (auto err = w.flush())
        return err;
      last = position;
      return {};
    }
  } sink{st, c, projection};
  auto err = [&]() -> caf::error {
    if (auto r = c.exec("BEGIN", st.op_deadline()); !r)
      return r.error();
    // The events are read from the store between batches: allow that much
    // idleness (this transaction holds no lease row another node waits on).
    if (auto r = c.exec("SET LOCAL idle_in_transaction_session_timeout = "
                          + std::to_string(std::max<int64_t>(st.options.operation_timeout.count(), 1000)),
                        st.op_deadline());
        !r)
      return r.error();
    pg::params p;
    p.add_bytea(projection);
    if (auto r = c.exec_prepared("rm_claim", "INSERT INTO " + st.checkpoints_table
                                               + " VALUES ($1, -1) ON CONFLICT (projection) DO NOTHING",
                                 p, st.op_deadline());
        !r)
      return r.error();
    // Held to the end: the live writer of the projection queues here
    // (its write times out and is retried), and resumes from the new
    // checkpoint, which is at least where it was.
    if (auto r = c.exec_prepared("rm_lock", "SELECT position FROM " + st.checkpoints_table
                                              + " WHERE projection = $1 FOR UPDATE",
                                 p, st.op_deadline());
        !r)
      return r.error();
    if (auto r = c.exec("DELETE FROM " + st.rows_table + " WHERE projection = $1", p, st.op_deadline()); !r)
      return r.error();
    if (also) {
      pg_row_writer w{st, c, projection, st.op_deadline()};
      if (auto e = also(w))
        return e;
      if (auto e = w.flush())
        return e;
    }
    if (auto e = build(sink))
      return e;
    pg::params q;
    q.add_bytea(projection).add(sink.last ? static_cast<int64_t>(*sink.last) : int64_t{-1});
    if (auto r = c.exec("UPDATE " + st.checkpoints_table + " SET position = $2 WHERE projection = $1", q,
                        st.op_deadline());
        !r)
      return r.error();
    if (auto r = c.exec("COMMIT", st.op_deadline()); !r)
      return r.error();
    return {};
  }();
  if (err && c.settled())
    (void) c.exec("ROLLBACK", st.op_deadline());
  return err;
}

// -- reading ------------------------------------------------------------------------

caf::expected<std::optional<uint64_t>> postgres_projection_store::checkpoint(std::string_view projection) const {
  auto& st = *impl_;
  pg::params p;
  p.add_bytea(projection);
  auto r = st.pool->with(st.op_deadline(), [&](pg::connection& c) {
    return c.exec("SELECT position FROM " + st.checkpoints_table + " WHERE projection = $1 AND position >= 0", p,
                  st.op_deadline());
  });
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<uint64_t>{};
  return std::optional<uint64_t>{static_cast<uint64_t>(r->int8(0, 0))};
}

caf::expected<std::vector<std::pair<std::string, uint64_t>>> postgres_projection_store::checkpoints() const {
  auto& st = *impl_;
  auto r = st.pool->with(st.op_deadline(), [&](pg::connection& c) {
    return c.exec("SELECT projection, position FROM " + st.checkpoints_table
                    + " WHERE position >= 0 ORDER BY projection",
                  st.op_deadline());
  });
  if (!r)
    return r.error();
  std::vector<std::pair<std::string, uint64_t>> out;
  for (int i = 0; i < r->rows(); ++i)
    out.emplace_back(r->text(i, 0), static_cast<uint64_t>(r->int8(i, 1)));
  return out;
}

caf::expected<std::optional<std::string>> postgres_projection_store::get(std::string_view projection,
                                                                         std::string_view table,
                                                                         std::string_view key) const {
  auto& st = *impl_;
  pg::params p;
  p.add_bytea(projection).add_bytea(table).add_bytea(key);
  auto r = st.pool->with(st.op_deadline(), [&](pg::connection& c) {
    return c.exec("SELECT value FROM " + st.rows_table + " WHERE projection = $1 AND tbl = $2 AND key = $3", p,
                  st.op_deadline());
  });
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<std::string>{};
  return std::optional<std::string>{r->text(0, 0)};
}

caf::expected<std::vector<std::pair<std::string, std::string>>>
postgres_projection_store::scan(std::string_view projection, std::string_view table) const {
  auto& st = *impl_;
  pg::params p;
  p.add_bytea(projection).add_bytea(table);
  auto r = st.pool->with(st.op_deadline(), [&](pg::connection& c) {
    return c.exec("SELECT key, value FROM " + st.rows_table + " WHERE projection = $1 AND tbl = $2 ORDER BY key", p,
                  st.op_deadline());
  });
  if (!r)
    return r.error();
  std::vector<std::pair<std::string, std::string>> out;
  for (int i = 0; i < r->rows(); ++i)
    out.emplace_back(r->text(i, 0), r->text(i, 1));
  return out;
}

caf::expected<std::vector<std::tuple<std::string, std::string, std::string>>>
postgres_projection_store::dump(std::string_view projection) const {
  auto& st = *impl_;
  pg::params p;
  p.add_bytea(projection);
  auto r = st.pool->with(st.op_deadline(), [&](pg::connection& c) {
    return c.exec("SELECT tbl, key, value FROM " + st.rows_table + " WHERE projection = $1 ORDER BY tbl, key", p,
                  st.op_deadline());
  });
  if (!r)
    return r.error();
  std::vector<std::tuple<std::string, std::string, std::string>> out;
  for (int i = 0; i < r->rows(); ++i)
    out.emplace_back(r->text(i, 0), r->text(i, 1), r->text(i, 2));
  return out;
}

caf::expected<sql_rows> postgres_projection_store::query(std::string_view sql,
                                                         const std::vector<sql_value>& params) const {
  auto& st = *impl_;
  auto until = st.op_deadline();
  auto c = st.pool->take(until);
  if (!c)
    return c.error();
  return run_user_sql(**c, sql, params, until);
}

const std::string* postgres_projection_store::sql_schema() const {
  return &impl_->schema;
}

} // namespace sourcery::persistence
