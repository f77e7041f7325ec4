// The operators' side of the PostgreSQL store: space per table, a full
// integrity check done by the server, and imports that keep positions,
// versions and times.

#include <future>
#include <unordered_map>

#include "postgres_state.hpp"
#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/utf8.hpp"

namespace sourcery::persistence {

namespace {

using detail::postgres_state;
using detail::stream_text;

} // namespace

caf::expected<store_usage> postgres_store::usage() const {
  auto& st = *state_;
  auto r = st.readers->with(st.op_deadline(), [&](pg::connection& c) {
    pg::params p;
    p.add_text(st.options.schema);
    // Live rows as the statistics collector counts them (exact enough, and
    // no count(*) over a large log); the log's own size is known exactly.
    return c.exec("SELECT relname::text, n_live_tup::bigint, pg_total_relation_size(relid)::bigint"
                  " FROM pg_stat_user_tables WHERE schemaname = $1 ORDER BY relname",
                  p, st.op_deadline());
  });
  if (!r)
    return r.error();
  store_usage u;
  u.head_position = head_position();
  for (int i = 0; i < r->rows(); ++i) {
    database_usage d;
    d.name = r->text(i, 0);
    d.entries = static_cast<uint64_t>(r->int8(i, 1));
    if (d.name == "events")
      d.entries = u.head_position;
    d.bytes = static_cast<uint64_t>(r->int8(i, 2));
    u.file_size += d.bytes;
    u.databases.push_back(std::move(d));
  }
  return u;
}

caf::expected<verify_report> postgres_store::verify(const progress_callback& progress) const {
  auto& st = *state_;
  verify_report report;
  auto problem = [&](std::string kind, std::string message) { report.add(std::move(kind), std::move(message)); };
  // The checks run in one repeatable-read transaction: one moment of a live store.
  auto lease = st.readers->take(st.op_deadline());
  if (!lease)
    return lease.error();
  auto& c = **lease;
  auto until = pg::clock::now() + std::max(st.options.operation_timeout, std::chrono::milliseconds{600'000});
  auto q = [&](const std::string& sql) { return c.exec(st.sql(sql), until); };
  if (auto r = c.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", until); !r)
    return r.error();
  auto finish = [&]() -> caf::expected<verify_report> {
    auto head = q("SELECT position FROM @.log_head");
    if (!head)
      return head.error();
    auto h = static_cast<uint64_t>(head->int8(0, 0));
    auto counts = q("SELECT count(*), coalesce(min(position), 0), coalesce(max(position), 0) FROM @.events");
    if (!counts)
      return counts.error();
    report.events = static_cast<uint64_t>(counts->int8(0, 0));
    auto lo = static_cast<uint64_t>(counts->int8(0, 1)), hi = static_cast<uint64_t>(counts->int8(0, 2));
    if (hi != h)
      problem("log_gap", "the log's counter says " + std::to_string(h) + " but the last event is at " + std::to_string(hi));
    if (report.events != hi || (report.events > 0 && lo != 1)) {
      auto gaps = q("SELECT position + 1 FROM @.events e WHERE position < (SELECT max(position) FROM @.events)"
                    " AND NOT EXISTS (SELECT 1 FROM @.events n WHERE n.position = e.position + 1)"
                    " ORDER BY 1 LIMIT 1000");
      if (!gaps)
        return gaps.error();
      if (report.events > 0 && lo != 1)
        problem("log_gap", "$all starts at position " + std::to_string(lo) + ", not 1");
      for (int i = 0; i < gaps->rows(); ++i)
        problem("log_gap", "$all has no event at position " + std::to_string(gaps->int8(i, 0)));
    }
    // Every stream's versions: 1..n without a hole, rising with position,
    // and n on its row.
    auto streams = q("SELECT s.stream_id, s.version, coalesce(e.n, 0), coalesce(e.lo, 0), coalesce(e.hi, 0)"
                     " FROM @.streams s FULL JOIN (SELECT stream_id, count(*) n, min(stream_version) lo,"
                     " max(stream_version) hi FROM @.events GROUP BY stream_id) e ON e.stream_id = s.stream_id"
                     " WHERE s.stream_id IS NULL OR e.stream_id IS NULL OR s.version <> e.hi OR e.n <> e.hi"
                     " OR e.lo <> 1 LIMIT 1000");
    if (!streams)
      return streams.error();
    for (int i = 0; i < streams->rows(); ++i) {
      auto id = streams->is_null(i, 0) ? std::string{"(no row)"} : streams->text(i, 0);
      if (streams->is_null(i, 1)) {
        problem("unknown_stream", "events of a stream without a row (" + std::to_string(streams->int8(i, 2)) + " events)");
        continue;
      }
      auto version = static_cast<uint64_t>(streams->int8(i, 1));
      auto n = static_cast<uint64_t>(streams->int8(i, 2));
      if (n == 0 && version == 0)
        continue; // deleted before it had events
      problem("stream_version", stream_text(id) + " is at version " + std::to_string(version) + " but has " + std::to_string(n)
                          + " events, versions " + std::to_string(streams->int8(i, 3)) + " to "
                          + std::to_string(streams->int8(i, 4)));
    }
    auto order = q("SELECT count(*) FROM (SELECT stream_version - lag(stream_version) OVER"
                   " (PARTITION BY stream_id ORDER BY position) AS d FROM @.events) x WHERE d <> 1");
    if (!order)
      return order.error();
    if (order->int8(0, 0) > 0)
      problem("stream_order", std::to_string(order->int8(0, 0)) + " events do not follow their stream's previous version"
                                                           " in $all order");
    auto nstreams = q("SELECT count(*) FROM @.streams");
    if (!nstreams)
      return nstreams.error();
    report.streams = static_cast<uint64_t>(nstreams->int8(0, 0));
    report.index_entries = report.events; // the (stream, version) index holds one entry per event
    auto snaps = q("SELECT s.stream_id, s.stream_version, coalesce(t.version, 0) FROM @.snapshots s"
                   " LEFT JOIN @.streams t ON t.stream_id = s.stream_id");
    if (!snaps)
      return snaps.error();
    report.snapshots = static_cast<uint64_t>(snaps->rows());
    for (int i = 0; i < snaps->rows(); ++i)
      if (snaps->int8(i, 1) > snaps->int8(i, 2))
        problem("snapshot_ahead", "the snapshot of " + stream_text(snaps->text(i, 0)) + " is at version "
                              + std::to_string(snaps->int8(i, 1)) + ", past its stream's "
                              + std::to_string(snaps->int8(i, 2)));
    auto cps = q("SELECT name, position FROM @.checkpoints");
    if (!cps)
      return cps.error();
    report.checkpoints = static_cast<uint64_t>(cps->rows());
    for (int i = 0; i < cps->rows(); ++i)
      if (static_cast<uint64_t>(cps->int8(i, 1)) > h)
        problem("checkpoint_ahead", "checkpoint '" + cps->text(i, 0) + "' is at " + std::to_string(cps->int8(i, 1))
                                + ", past the head " + std::to_string(h));
    // Every record decodes: payloads are msgpack maps, ids set, text UTF-8.
    uint64_t done = 0;
    for (uint64_t from = 1;;) {
      pg::params p;
      p.add(static_cast<int64_t>(from));
      auto page = c.exec(st.sql("SELECT position, event_id, data, metadata, type FROM @.events WHERE position >= $1"
                                " ORDER BY position LIMIT 5000"),
                         p, until);
      if (!page)
        return page.error();
      if (page->rows() == 0)
        break;
      bytes data, meta;
      for (int i = 0; i < page->rows(); ++i) {
        auto pos = page->int8(i, 0);
        page->bytea_into(i, 2, data);
        page->bytea_into(i, 3, meta);
        if (auto err = validate_msgpack_map(data, "data"))
          problem("bad_payload", "event " + std::to_string(pos) + ": " + describe(err));
        if (auto err = validate_msgpack_map(meta, "metadata"))
          problem("bad_payload", "event " + std::to_string(pos) + ": " + describe(err));
        if (page->uuid(i, 1).is_nil())
          problem("bad_record", "event " + std::to_string(pos) + " has a nil id");
        from = static_cast<uint64_t>(pos) + 1;
      }
      done += static_cast<uint64_t>(page->rows());
      if (progress)
        progress(done, report.events);
    }
    return report;
  };
  auto out = finish();
  if (c.settled())
    (void) c.exec("ROLLBACK", until);
  return out;
}

namespace {

// One connection for an operator's statement on a whole schema.
caf::expected<pg::connection> admin_connection(const std::string& conninfo, pg::deadline until) {
  auto c = pg::connection::open(conninfo, until);
  if (!c)
    return c.error();
  return c;
}

// The head in `schema` on `c` (0 without a store there), in the
// transaction `c` is in.
caf::expected<uint64_t> head_in(pg::connection& c, const std::string& schema, pg::deadline until) {
  pg::params p;
  p.add_text(pg::quote_ident(schema) + ".log_head");
  auto exists = c.exec("SELECT to_regclass($1) IS NOT NULL", p, until);
  if (!exists)
    return exists.error();
  if (!exists->boolean(0, 0))
    return uint64_t{0};
  auto head = c.exec("SELECT position FROM " + pg::quote_ident(schema) + ".log_head", until);
  if (!head)
    return head.error();
  return head->rows() == 1 ? static_cast<uint64_t>(head->int8(0, 0)) : 0;
}

} // namespace

caf::expected<uint64_t> postgres_store::head_of(const std::string& conninfo, const std::string& schema,
                                                std::chrono::milliseconds timeout) {
  auto until = pg::clock::now() + timeout;
  auto c = admin_connection(conninfo, until);
  if (!c)
    return c.error();
  return head_in(*c, schema, until);
}

caf::expected<int64_t> postgres_store::sessions_on(const std::string& conninfo, const std::string& schema,
                                                   std::chrono::milliseconds timeout) {
  auto until = pg::clock::now() + timeout;
  auto c = admin_connection(conninfo, until);
  if (!c)
    return c.error();
  // Our sessions name themselves "sourcery <role> <schema>" (setup).
  pg::params p;
  std::string literal; // '_' is LIKE's any-character: escaped
  for (char ch : schema)
    literal += ch == '_' ? std::string{"\\_"} : std::string(1, ch);
  p.add_text("sourcery % " + literal);
  auto r = c->exec("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1 AND pid <> pg_backend_pid()",
                   p, until);
  if (!r)
    return r.error();
  return r->int8(0, 0);
}

caf::error postgres_store::drop_schema(const std::string& conninfo, const std::string& schema,
                                       std::chrono::milliseconds timeout) {
  auto until = pg::clock::now() + timeout;
  auto c = admin_connection(conninfo, until);
  if (!c)
    return c.error();
  return c->exec_script("DROP SCHEMA IF EXISTS " + pg::quote_ident(schema) + " CASCADE", until);
}

caf::error postgres_store::replace_schema(const std::string& conninfo, const std::string& staging,
                                          const std::string& target, std::chrono::milliseconds timeout) {
  auto until = pg::clock::now() + timeout;
  auto c = admin_connection(conninfo, until);
  if (!c)
    return c.error();
  auto run = [&]() -> caf::error {
    if (auto r = c->exec("BEGIN", until); !r)
      return r.error();
    // One swap at a time, and no import lands on events written meanwhile.
    if (auto r = c->exec("SELECT pg_advisory_xact_lock(7450011)", until); !r)
      return r.error();
    auto head = head_in(*c, target, until);
    if (!head)
      return head.error();
    if (*head != 0)
      return make_error(store_errc::invalid_argument, "schema " + target + " holds " + std::to_string(*head)
                                                        + " events; import into a new schema (schema=NAME in the URI)");
    if (auto err = c->exec_script("DROP SCHEMA IF EXISTS " + pg::quote_ident(target) + " CASCADE; ALTER SCHEMA "
                                    + pg::quote_ident(staging) + " RENAME TO " + pg::quote_ident(target),
                                  until))
      return err;
    if (auto r = c->exec("COMMIT", until); !r)
      return r.error();
    return {};
  };
  auto err = run();
  if (err && c->ok())
    (void) c->exec("ROLLBACK", until);
  return err;
}

caf::expected<void> postgres_store::import_events(std::vector<recorded_event> events) {
  if (events.empty())
    return {};
  for (auto& ev : events) {
    if (auto err = validate_stream_id(ev.stream_id))
      return err;
    if (!valid_utf8(ev.type) || !valid_utf8(ev.causation_id) || !valid_utf8(ev.correlation_id))
      return make_error(store_errc::invalid_argument, "event " + std::to_string(ev.position)
                                                        + ": type and ids must be UTF-8 on PostgreSQL");
  }
  auto& st = *state_;
  uint64_t last = events.back().position;
  auto err = st.on_writer([&st, &events](pg::connection& c, pg::deadline until) -> caf::error {
    st.known_streams.clear(); // the writer's cache: these streams change behind it
    auto head = c.exec(st.sql("SELECT position FROM @.log_head FOR UPDATE"), until);
    if (!head)
      return head.error();
    auto next = static_cast<uint64_t>(head->int8(0, 0)) + 1;
    std::unordered_map<std::string, std::pair<uint64_t, int64_t>> versions; // stream -> (version, created_at)
    std::vector<std::string> ids;
    for (auto& ev : events)
      if (!versions.count(ev.stream_id)) {
        versions[ev.stream_id] = {0, ev.created_at};
        ids.push_back(ev.stream_id);
      }
    pg::params rp;
    pg::params::array sids{pg::oid::bytea};
    for (auto& s : ids)
      sids.add_bytes(s);
    rp.add(std::move(sids));
    auto rows = c.exec(st.sql("SELECT stream_id, version, deleted, created_at FROM @.streams"
                              " WHERE stream_id = ANY($1) FOR UPDATE"),
                       rp, until);
    if (!rows)
      return rows.error();
    for (int i = 0; i < rows->rows(); ++i) {
      if (rows->boolean(i, 2))
        return make_error(store_errc::stream_deleted, stream_text(rows->text(i, 0)) + " is deleted");
      versions[rows->text(i, 0)] = {static_cast<uint64_t>(rows->int8(i, 1)), rows->int8(i, 3)};
    }
    pg::params::array a_pos{pg::oid::int8}, a_ids{pg::oid::uuid}, a_sids{pg::oid::bytea}, a_vers{pg::oid::int8},
      a_types{pg::oid::text}, a_svs{pg::oid::int4}, a_data{pg::oid::bytea}, a_meta{pg::oid::bytea},
      a_cau{pg::oid::text}, a_cor{pg::oid::text}, a_at{pg::oid::int8};
    for (auto& ev : events) {
      if (ev.position != next)
        return make_error(store_errc::invalid_argument, "event at position " + std::to_string(ev.position)
                                                          + " does not continue the log (next is "
                                                          + std::to_string(next) + ")");
      auto& v = versions[ev.stream_id];
      if (ev.stream_version != v.first + 1)
        return make_error(store_errc::wrong_expected_version,
                          stream_text(ev.stream_id) + " is at version " + std::to_string(v.first) + "; the event at "
                            + std::to_string(ev.position) + " has version " + std::to_string(ev.stream_version));
      v.first = ev.stream_version;
      ++next;
      a_pos.add(static_cast<int64_t>(ev.position));
      a_ids.add(ev.event_id);
      a_sids.add_bytes(ev.stream_id);
      a_vers.add(static_cast<int64_t>(ev.stream_version));
      a_types.add_bytes(ev.type);
      a_svs.add(static_cast<int32_t>(ev.schema_version));
      a_data.add_bytes(ev.data);
      a_meta.add_bytes(ev.metadata);
      a_cau.add_bytes(ev.causation_id);
      a_cor.add_bytes(ev.correlation_id);
      a_at.add(ev.created_at);
    }
    pg::params p;
    p.add(std::move(a_pos)).add(std::move(a_ids)).add(std::move(a_sids)).add(std::move(a_vers)).add(std::move(a_types));
    p.add(std::move(a_svs)).add(std::move(a_data)).add(std::move(a_meta)).add(std::move(a_cau)).add(std::move(a_cor));
    p.add(std::move(a_at));
    auto ins = c.exec(st.sql("INSERT INTO @.events (position, event_id, stream_id, stream_version, type, schema_version,"
                             " data, metadata, causation_id, correlation_id, created_at)"
                             " SELECT * FROM unnest($1::int8[], $2::uuid[], $3::bytea[], $4::int8[], $5::text[],"
                             " $6::int4[], $7::bytea[], $8::bytea[], $9::text[], $10::text[], $11::int8[])"),
                      p, until);
    if (!ins)
      return ins.error();
    // Each stream row: its version, first write (kept) and last write.
    std::unordered_map<std::string, int64_t> last_at;
    for (auto& ev : events)
      last_at[ev.stream_id] = ev.created_at;
    pg::params sp;
    pg::params::array s_ids{pg::oid::bytea}, s_vers{pg::oid::int8}, s_created{pg::oid::int8}, s_updated{pg::oid::int8};
    for (auto& id : ids) {
      s_ids.add_bytes(id);
      s_vers.add(static_cast<int64_t>(versions[id].first));
      s_created.add(versions[id].second);
      s_updated.add(last_at[id]);
    }
    sp.add(std::move(s_ids)).add(std::move(s_vers)).add(std::move(s_created)).add(std::move(s_updated));
    auto up = c.exec(st.sql("INSERT INTO @.streams SELECT s, v, false, c, u FROM unnest($1::bytea[], $2::int8[],"
                            " $3::int8[], $4::int8[]) AS x(s, v, c, u) ON CONFLICT (stream_id) DO UPDATE"
                            " SET version = excluded.version, updated_at = excluded.updated_at"),
                     sp, until);
    if (!up)
      return up.error();
    pg::params hp;
    hp.add(static_cast<int64_t>(next - 1)).add_text(st.channel);
    if (auto r = c.exec(st.sql("WITH h AS (UPDATE @.log_head SET position = $1 RETURNING position)"
                               " SELECT pg_notify($2, position::text) FROM h"),
                        hp, until);
        !r)
      return r.error();
    return {};
  });
  if (err)
    return err;
  if (st.raise_head(last))
    notify_appended();
  return {};
}

caf::expected<void> postgres_store::import_deleted_stream(const persistence::stream_info& stream) {
  if (auto err = validate_stream_id(stream.stream_id))
    return err;
  auto& st = *state_;
  auto err = st.on_writer([&st, &stream](pg::connection& c, pg::deadline until) -> caf::error {
    st.known_streams.erase(stream.stream_id);
    pg::params p;
    p.add_bytea(stream.stream_id).add(stream.created_at).add(stream.updated_at);
    if (auto r = c.exec(st.sql("INSERT INTO @.streams VALUES ($1, 0, false, $2, $3) ON CONFLICT DO NOTHING"), p, until);
        !r)
      return r.error();
    pg::params q;
    q.add_bytea(stream.stream_id);
    auto row = c.exec(st.sql("SELECT version, deleted FROM @.streams WHERE stream_id = $1 FOR UPDATE"), q, until);
    if (!row)
      return row.error();
    if (row->boolean(0, 1))
      return make_error(store_errc::stream_deleted, stream_text(stream.stream_id) + " is already deleted");
    if (static_cast<uint64_t>(row->int8(0, 0)) != stream.version)
      return make_error(store_errc::wrong_expected_version,
                        stream_text(stream.stream_id) + " is at version " + std::to_string(row->int8(0, 0))
                          + ", the export says " + std::to_string(stream.version));
    pg::params u;
    u.add_bytea(stream.stream_id).add(stream.updated_at);
    if (auto r = c.exec(st.sql("UPDATE @.streams SET deleted = true, updated_at = $2 WHERE stream_id = $1"), u, until);
        !r)
      return r.error();
    return {};
  });
  if (err)
    return err;
  return {};
}

} // namespace sourcery::persistence
