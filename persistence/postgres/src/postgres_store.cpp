#include "sourcery/persistence/postgres_store.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <future>

#include "event_sink.hpp"
#include "pg_lease_check.hpp"
#include "pg_schema.hpp"
#include "postgres_state.hpp"
#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/utf8.hpp"

namespace sourcery::persistence {

using detail::now_micros;
using detail::postgres_state;
using detail::stream_text;

namespace {

constexpr const char* event_columns = "position, event_id, stream_id, stream_version, type, schema_version, data,"
                                      " metadata, causation_id, correlation_id, created_at";

// One row of `event_columns` into `ev`, reusing its buffers.
void decode_event(const pg::result& r, int row, recorded_event& ev) {
  ev.position = static_cast<uint64_t>(r.int8(row, 0));
  ev.event_id = r.uuid(row, 1);
  ev.stream_id.assign(r.raw(row, 2));
  ev.stream_version = static_cast<uint64_t>(r.int8(row, 3));
  ev.type.assign(r.raw(row, 4));
  ev.schema_version = static_cast<uint32_t>(r.int4(row, 5));
  r.bytea_into(row, 6, ev.data);
  r.bytea_into(row, 7, ev.metadata);
  ev.causation_id.assign(r.raw(row, 8));
  ev.correlation_id.assign(r.raw(row, 9));
  ev.created_at = r.int8(row, 10);
}

// One row of (stream_id, stream_version, snapshot_version, type, data, created_at).
snapshot decode_snapshot(const pg::result& r, int row) {
  snapshot s;
  s.stream_id = r.text(row, 0);
  s.stream_version = static_cast<uint64_t>(r.int8(row, 1));
  s.snapshot_version = static_cast<uint32_t>(r.int4(row, 2));
  s.type = r.text(row, 3);
  r.bytea_into(row, 4, s.data);
  s.created_at = r.int8(row, 5);
  return s;
}

int64_t clamp(uint64_t v) {
  return v > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(v);
}

} // namespace

// -- the state's helpers --------------------------------------------------------

std::string detail::postgres_state::sql(std::string_view tmpl) const {
  std::string out;
  out.reserve(tmpl.size() + 64);
  for (size_t i = 0; i < tmpl.size(); ++i) {
    if (tmpl[i] == '@' && i + 1 < tmpl.size() && tmpl[i + 1] == '.') {
      out += schema;
      continue;
    }
    out += tmpl[i];
  }
  return out;
}

caf::error detail::postgres_state::setup(pg::connection& c, pg::deadline until, std::string_view role) const {
  std::string s = "SET application_name = 'sourcery " + std::string{role} + " " + options.schema + "'; ";
  s += "SET synchronous_commit = ";
  s += options.mode == durability::durable ? "on" : "off";
  s += "; SET idle_in_transaction_session_timeout = " + std::to_string(options.idle_in_transaction_timeout.count());
  // A backend waiting on a lock notices a client that went away.
  s += "; SET client_connection_check_interval = 1000";
  return c.exec_script(s, until);
}

caf::expected<pg::result> detail::postgres_state::read(std::string_view tmpl, const pg::params& p) const {
  auto text = sql(tmpl);
  return readers->with(op_deadline(), [&](pg::connection& c) { return c.exec(text, p, op_deadline()); });
}

bool detail::postgres_state::raise_head(uint64_t pos) {
  auto cur = head.load(std::memory_order_acquire);
  while (cur < pos)
    if (head.compare_exchange_weak(cur, pos, std::memory_order_acq_rel))
      return true;
  return false;
}

void detail::postgres_state::owner_notify() const {
  owner->notify_appended();
}

caf::error postgres_store::health() const {
  auto& st = *state_;
  {
    std::lock_guard guard{st.health_mtx};
    if (st.unreachable)
      return make_error(store_errc::unavailable, "the database cannot be reached: " + describe(st.unreachable));
  }
  int64_t since = st.probe_since.load();
  if (since == 0)
    return {};
  auto waited = std::chrono::steady_clock::now().time_since_epoch() - std::chrono::steady_clock::duration{since};
  if (waited < std::chrono::seconds{2})
    return {};
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(waited).count();
  return make_error(store_errc::unavailable, "the database has not answered for " + std::to_string(ms / 1000) + "."
                                               + std::to_string(ms % 1000 / 100) + " s");
}

// -- opening and closing ----------------------------------------------------------

postgres_store::postgres_store(std::unique_ptr<postgres_state> state) : state_(std::move(state)) {
  state_->owner = this;
}

caf::expected<std::unique_ptr<postgres_store>> postgres_store::open(postgres_options options) {
  if (!detail::valid_schema_name(options.schema))
    return make_error(store_errc::invalid_argument,
                      "bad PostgreSQL schema name '" + options.schema
                        + "': letters, digits and '_', at most 48 bytes, not starting with a digit");
  if (options.conninfo.find('\0') != std::string::npos)
    return make_error(store_errc::invalid_argument, "bad PostgreSQL connection string: it holds a NUL byte");
  auto state = std::make_unique<postgres_state>();
  state->options = std::move(options);
  state->schema = pg::quote_ident(state->options.schema);
  state->channel = state->options.schema + ".events";
  state->forget_channel = state->options.schema + ".forget";
  auto& st = *state;
  auto conn = pg::connection::open(st.options.conninfo, pg::clock::now() + st.options.connect_timeout);
  if (!conn)
    return conn.error();
  if (auto err = st.setup(*conn, st.op_deadline(), "writer"))
    return err;
  if (auto err = detail::ensure_component(*conn, st.options.schema, detail::event_store_component, st.op_deadline(),
                                            st.options.setup))
    return err;
  // The subjects' keys came later: a store gains their table at its first
  // open that may write; one that only reads may find none.
  if (auto err = detail::ensure_component(*conn, st.options.schema, detail::personal_data_component,
                                          st.op_deadline(), st.options.setup);
      err && code_of(err) != store_errc::no_store)
    return err;
  else
    st.has_subject_keys = !err;
  auto head = conn->exec(st.sql("SELECT position FROM @.log_head"), st.op_deadline());
  if (!head)
    return head.error();
  st.head = static_cast<uint64_t>(head->int8(0, 0));
  st.writer_conn = std::move(*conn);
  st.readers = std::make_unique<pg::pool>(st.options.conninfo, st.options.pool_size, st.options.connect_timeout,
                                          [s = &st](pg::connection& c, pg::deadline until) { return s->setup(c, until, "reader"); });
  st.wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (st.wake_fd < 0)
    return make_error(store_errc::io_error, "eventfd failed");
  std::unique_ptr<postgres_store> store{new postgres_store(std::move(state))};
  auto* s = store->state_.get();
  s->writer = std::thread{[s] { s->run_writer(); }};
  s->listener = std::thread{[s] { s->run_listener(); }};
  return store;
}

postgres_store::~postgres_store() {
  close_base();
  auto& st = *state_;
  {
    std::lock_guard guard{st.queue_mtx};
    st.stopping = true;
  }
  st.queue_cv.notify_all();
  if (st.writer.joinable())
    st.writer.join();
  st.listener_stop = true;
  if (st.wake_fd >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(st.wake_fd, &one, sizeof one);
  }
  if (st.listener.joinable())
    st.listener.join();
  if (st.wake_fd >= 0)
    ::close(st.wake_fd);
  if (st.readers)
    st.readers->close();
}

caf::error postgres_store::fence_appends(std::shared_ptr<const append_fence> fence) {
  std::lock_guard guard{state_->queue_mtx};
  state_->fence = std::move(fence);
  return {};
}

uint64_t postgres_store::head_position() const {
  return state_->head.load(std::memory_order_acquire);
}

postgres_stats postgres_store::stats() const {
  auto& st = *state_;
  return {st.commits.load(), st.appends.load(), st.retries.load(),
          st.reconnects.load() + (st.readers ? st.readers->reconnects() : 0), st.notifications.load()};
}

void postgres_store::refresh_head_now() const {
  auto r = state_->read("SELECT position FROM @.log_head", pg::params{});
  if (r && r->rows() == 1 && state_->raise_head(static_cast<uint64_t>(r->int8(0, 0))))
    notify_appended();
}

void postgres_store::refresh_head() const {
  // Waiters call this every 50 ms; the listener's NOTIFYs normally keep the
  // head current, so the database is asked at most once per poll interval.
  auto& st = *state_;
  auto now = pg::clock::now().time_since_epoch().count();
  auto last = st.last_refresh.load();
  auto interval = std::chrono::duration_cast<std::chrono::nanoseconds>(st.options.poll_interval).count();
  if (now - last < interval || !st.last_refresh.compare_exchange_strong(last, now))
    return;
  refresh_head_now();
}

// -- writing (the writer's queue) ---------------------------------------------------

void postgres_store::do_append(std::string stream, expected_version expected, std::vector<event_data> events,
                               append_callback done) {
  // PostgreSQL text holds UTF-8 without NUL: refuse other bytes here, for
  // this append alone, rather than fail a whole batch at the server.
  auto text_ok = [](std::string_view s) { return valid_utf8(s) && s.find('\0') == std::string_view::npos; };
  for (size_t i = 0; i < events.size(); ++i) {
    auto& ev = events[i];
    if (!text_ok(ev.type) || !text_ok(ev.causation_id) || !text_ok(ev.correlation_id))
      return done(make_error(store_errc::invalid_argument,
                             "event " + std::to_string(i) + ": type, causation and correlation ids must be UTF-8"
                               " without NUL on PostgreSQL"));
  }
  auto& st = *state_;
  {
    std::lock_guard guard{st.queue_mtx};
    if (!st.stopping) {
      st.queue.emplace_back(detail::pg_append{std::move(stream), expected, std::move(events), std::move(done),
                                              st.op_deadline(), false});
      st.queue_cv.notify_one();
      return;
    }
  }
  done(make_error(store_errc::store_closed, "the event store is closed"));
}

caf::error detail::postgres_state::on_writer(std::function<caf::error(pg::connection&, pg::deadline)> run) {
  std::promise<caf::error> outcome;
  auto fut = outcome.get_future();
  {
    std::lock_guard guard{queue_mtx};
    if (stopping)
      return make_error(store_errc::store_closed, "the event store is closed");
    queue.emplace_back(pg_task{std::move(run), [&outcome](caf::error e) { outcome.set_value(std::move(e)); },
                               op_deadline()});
  }
  queue_cv.notify_one();
  return fut.get();
}

caf::expected<void> postgres_store::do_delete_stream(std::string_view stream, expected_version expected) {
  auto& st = *state_;
  std::string id{stream};
  auto err = st.on_writer([&st, id, expected](pg::connection& c, pg::deadline until) -> caf::error {
    // Take the stream's row (creating a deleted one for a stream never
    // written) under lock, then check the expected version against it.
    st.known_streams.erase(id); // runs on the writer's thread, which owns the cache
    pg::params p;
    p.add_bytea(id).add(now_micros());
    if (auto r = c.exec(st.sql("INSERT INTO @.streams VALUES ($1, 0, false, $2, $2) ON CONFLICT DO NOTHING"), p, until);
        !r)
      return r.error();
    pg::params q;
    q.add_bytea(id);
    auto row = c.exec(st.sql("SELECT version, deleted FROM @.streams WHERE stream_id = $1 FOR UPDATE"), q, until);
    if (!row)
      return row.error();
    auto version = static_cast<uint64_t>(row->int8(0, 0));
    if (row->boolean(0, 1))
      return make_error(store_errc::stream_deleted, stream_text(id) + " is already deleted");
    if (!expected.admits(version))
      return make_error(store_errc::wrong_expected_version, stream_text(id) + " is at version "
                                                              + std::to_string(version) + ", expected "
                                                              + expected.to_string());
    pg::params u;
    u.add_bytea(id).add(now_micros());
    if (auto r = c.exec(st.sql("UPDATE @.streams SET deleted = true, updated_at = $2 WHERE stream_id = $1"), u, until);
        !r)
      return r.error();
    if (auto r = c.exec(st.sql("DELETE FROM @.snapshots WHERE stream_id = $1"), q, until); !r)
      return r.error();
    return {};
  });
  if (err)
    return err;
  return {};
}

namespace {

caf::error upsert_snapshot(const postgres_state& st, pg::connection& c, const snapshot& plain, int64_t created_at,
                           pg::deadline until) {
  const snapshot* out = &plain;
  std::optional<snapshot> sealed;
  if (detail::has_plain_personal(plain.data)) { // sealed in the transaction that keeps the key
    sealed = plain;
    if (auto err = st.seal_snapshot(c, *sealed, until))
      return err;
    out = &*sealed;
  }
  const snapshot& snap = *out;
  pg::params p;
  p.add_bytea(snap.stream_id)
    .add(clamp(snap.stream_version))
    .add(static_cast<int32_t>(snap.snapshot_version))
    .add_text(snap.type)
    .add_bytea(snap.data)
    .add(created_at);
  auto r = c.exec(st.sql("INSERT INTO @.snapshots VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stream_id) DO UPDATE"
                         " SET stream_version = excluded.stream_version, snapshot_version = excluded.snapshot_version,"
                         " type = excluded.type, data = excluded.data, created_at = excluded.created_at"),
                  p, until);
  return r ? caf::error{} : r.error();
}

caf::error check_snapshot_text(const snapshot& snap) {
  if (!valid_utf8(snap.type) || snap.type.find('\0') != std::string::npos)
    return make_error(store_errc::invalid_argument, "a snapshot's type must be UTF-8 without NUL on PostgreSQL");
  return {};
}

} // namespace

caf::expected<void> postgres_store::do_save_snapshot(snapshot snap) {
  if (auto err = check_snapshot_text(snap))
    return err;
  auto& st = *state_;
  auto err = st.readers->with(st.op_deadline(), [&](pg::connection& c) {
    return upsert_snapshot(st, c, snap, now_micros(), st.op_deadline());
  });
  if (err)
    return err;
  return {};
}

void postgres_store::do_save_snapshot_async(snapshot snap, std::function<void(caf::expected<void>)> done) {
  if (auto err = check_snapshot_text(snap))
    return done(std::move(err));
  auto& st = *state_;
  auto shared = std::make_shared<snapshot>(std::move(snap));
  std::unique_lock guard{st.queue_mtx};
  if (st.stopping) {
    guard.unlock();
    return done(make_error(store_errc::store_closed, "the event store is closed"));
  }
  st.queue.emplace_back(detail::pg_task{
    [&st, shared](pg::connection& c, pg::deadline until) { return upsert_snapshot(st, c, *shared, now_micros(), until); },
    [done = std::move(done)](caf::error e) {
      if (e)
        done(std::move(e));
      else
        done(caf::expected<void>{});
    },
    st.op_deadline()});
  guard.unlock();
  st.queue_cv.notify_one();
}

caf::expected<void> postgres_store::import_snapshot(snapshot snap) {
  if (auto err = check_snapshot_text(snap))
    return err;
  auto& st = *state_;
  auto err = st.readers->with(st.op_deadline(), [&](pg::connection& c) {
    return upsert_snapshot(st, c, snap, snap.created_at, st.op_deadline());
  });
  if (err)
    return err;
  return {};
}

caf::expected<void> postgres_store::do_delete_snapshot(std::string_view stream) {
  auto& st = *state_;
  pg::params p;
  p.add_bytea(stream);
  auto r = st.read("DELETE FROM @.snapshots WHERE stream_id = $1", p);
  if (!r)
    return r.error();
  return {};
}

caf::expected<void> postgres_store::do_save_checkpoint(std::string_view name, uint64_t position) {
  auto& st = *state_;
  std::shared_ptr<const append_fence> fence;
  {
    std::lock_guard guard{st.queue_mtx};
    fence = st.fence;
  }
  pg::params p;
  p.add_bytea(name).add(clamp(position));
  if (!fence) {
    auto r = st.read("INSERT INTO @.checkpoints VALUES ($1, $2)"
                     " ON CONFLICT (name) DO UPDATE SET position = excluded.position", p);
    return r ? caf::expected<void>{} : caf::expected<void>{r.error()};
  }
  // In a cluster: only while this node holds the handler's lease (locked
  // FOR KEY SHARE until the statement commits: an acquire, FOR UPDATE,
  // waits for it; a renewal does not).
  auto lease = fence->lease_for_checkpoint(name);
  p.add_text(fence->cluster()).add_text(lease.name).add_text(fence->owner()).add(lease.epoch);
  const std::string sql =
    "WITH held AS ("
    + detail::held_leases_sql(detail::lease_schema_of(*fence), "$3", "$5", "l.name = $4 AND l.epoch = $6") + ")"
    " INSERT INTO @.checkpoints SELECT $1, $2 FROM held"
    " ON CONFLICT (name) DO UPDATE SET position = excluded.position RETURNING 1";
  auto r = st.read(sql, p);
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return make_error(store_errc::fenced, "this node (" + fence->owner() + ") does not hold lease " + lease.name
                                            + ": checkpoint " + std::string{name} + " is another node's to move");
  return {};
}

// -- reading --------------------------------------------------------------------------

namespace {

// Versions of a stream and positions of `$all` have no gaps, so the next
// `count` events are a range of keys, [low, high): the query says so, and
// whatever plan stale statistics choose (right after a bulk append, before
// autovacuum's ANALYZE, a bitmap scan that sorts the whole rest of a long
// stream) reads at most `count` rows.
struct key_range {
  int64_t low = 0, high = 0;
};

key_range forward_range(uint64_t from, size_t count) {
  uint64_t low = std::max<uint64_t>(from, 1);
  uint64_t high = low > static_cast<uint64_t>(INT64_MAX) - count ? static_cast<uint64_t>(INT64_MAX) : low + count;
  return {clamp(low), clamp(high)};
}

key_range backward_range(uint64_t from, size_t count) {
  uint64_t high = std::min<uint64_t>(from, static_cast<uint64_t>(INT64_MAX) - 1) + 1; // exclusive
  uint64_t low = high > count ? high - count : 0;
  return {static_cast<int64_t>(low), static_cast<int64_t>(high)};
}

caf::error decode_into(const caf::expected<pg::result>& r, std::vector<recorded_event>& out) {
  if (!r)
    return r.error();
  detail::event_sink sink{out};
  for (int i = 0; i < r->rows(); ++i)
    decode_event(*r, i, sink.next());
  sink.finish();
  return {};
}

} // namespace

caf::error postgres_store::do_read_stream(std::string_view stream, uint64_t from, size_t max_count,
                                          read_direction direction, std::vector<recorded_event>& out) const {
  auto& st = *state_;
  pg::params q;
  q.add_bytea(stream);
  auto row = st.read("SELECT deleted, version FROM @.streams WHERE stream_id = $1", q);
  if (!row)
    return row.error();
  if (row->rows() == 1 && row->boolean(0, 0))
    return make_error(store_errc::stream_deleted, stream_text(stream) + " is deleted");
  uint64_t version = row->rows() == 1 ? static_cast<uint64_t>(row->int8(0, 1)) : 0;
  // Backward "from the end" starts at the stream's version; the row and the
  // events are read in two statements, and a version appended in between
  // is simply not read yet.
  auto range = direction == read_direction::forward ? forward_range(from, max_count)
                                                    : backward_range(std::min(from, version), max_count);
  pg::params p;
  p.add_bytea(stream).add(range.low).add(range.high);
  std::string sql = "SELECT ";
  sql += event_columns;
  sql += " FROM @.events WHERE stream_id = $1 AND stream_version >= $2 AND stream_version < $3";
  sql += direction == read_direction::forward ? " ORDER BY stream_version" : " ORDER BY stream_version DESC";
  return decode_into(st.read(sql, p), out);
}

caf::error postgres_store::do_read_all(uint64_t from, size_t max_count, read_direction direction,
                                       std::vector<recorded_event>& out) const {
  auto& st = *state_;
  if (direction == read_direction::backward && from > head_position())
    refresh_head_now();
  auto range = direction == read_direction::forward ? forward_range(from, max_count)
                                                    : backward_range(std::min(from, head_position()), max_count);
  pg::params p;
  p.add(range.low).add(range.high);
  std::string sql = "SELECT ";
  sql += event_columns;
  sql += " FROM @.events WHERE position >= $1 AND position < $2";
  sql += direction == read_direction::forward ? " ORDER BY position" : " ORDER BY position DESC";
  return decode_into(st.read(sql, p), out);
}

caf::expected<persistence::stream_info> postgres_store::do_stream_info(std::string_view stream) const {
  auto& st = *state_;
  pg::params p;
  p.add_bytea(stream);
  auto r = st.read("SELECT version, deleted, created_at, updated_at FROM @.streams WHERE stream_id = $1", p);
  if (!r)
    return r.error();
  persistence::stream_info info;
  info.stream_id = std::string{stream};
  if (r->rows() == 0)
    return info;
  info.exists = true;
  info.version = static_cast<uint64_t>(r->int8(0, 0));
  info.deleted = r->boolean(0, 1);
  info.created_at = r->int8(0, 2);
  info.updated_at = r->int8(0, 3);
  return info;
}

caf::expected<std::optional<snapshot>> postgres_store::do_load_snapshot(std::string_view stream) const {
  auto& st = *state_;
  pg::params p;
  p.add_bytea(stream);
  auto r = st.read("SELECT stream_id, stream_version, snapshot_version, type, data, created_at"
                         " FROM @.snapshots WHERE stream_id = $1", p);
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<snapshot>{};
  return std::optional<snapshot>{decode_snapshot(*r, 0)};
}

caf::expected<std::optional<uint64_t>> postgres_store::do_load_checkpoint(std::string_view name) const {
  auto& st = *state_;
  pg::params p;
  p.add_bytea(name);
  auto r = st.read("SELECT position FROM @.checkpoints WHERE name = $1", p);
  if (!r)
    return r.error();
  if (r->rows() == 0)
    return std::optional<uint64_t>{};
  return std::optional<uint64_t>{static_cast<uint64_t>(r->int8(0, 0))};
}

caf::error postgres_store::do_list_streams(std::string_view after, size_t max_count,
                                           std::vector<persistence::stream_info>& out) const {
  auto& st = *state_;
  pg::params p;
  p.add_bytea(after).add(clamp(max_count));
  auto r = st.read("SELECT stream_id, version, deleted, created_at, updated_at FROM @.streams"
                         " WHERE stream_id > $1 AND (version > 0 OR deleted) ORDER BY stream_id LIMIT $2", p);
  if (!r)
    return r.error();
  out.clear();
  for (int i = 0; i < r->rows(); ++i)
    out.push_back({r->text(i, 0), static_cast<uint64_t>(r->int8(i, 1)), true, r->boolean(i, 2), r->int8(i, 3),
                   r->int8(i, 4)});
  return {};
}

caf::error postgres_store::do_list_snapshots(std::string_view after, size_t max_count, std::vector<snapshot>& out) const {
  auto& st = *state_;
  pg::params p;
  p.add_bytea(after).add(clamp(max_count));
  auto r = st.read("SELECT stream_id, stream_version, snapshot_version, type, data, created_at"
                         " FROM @.snapshots WHERE stream_id > $1 ORDER BY stream_id LIMIT $2", p);
  if (!r)
    return r.error();
  out.clear();
  for (int i = 0; i < r->rows(); ++i)
    out.push_back(decode_snapshot(*r, i));
  return {};
}

caf::expected<std::vector<std::pair<std::string, uint64_t>>> postgres_store::do_list_checkpoints() const {
  auto& st = *state_;
  auto r = st.read("SELECT name, position FROM @.checkpoints ORDER BY name", pg::params{});
  if (!r)
    return r.error();
  std::vector<std::pair<std::string, uint64_t>> out;
  for (int i = 0; i < r->rows(); ++i)
    out.emplace_back(r->text(i, 0), static_cast<uint64_t>(r->int8(i, 1)));
  return out;
}

} // namespace sourcery::persistence
