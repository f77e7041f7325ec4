// The group-commit writer: one thread takes every append waiting in the
// queue into one transaction, commits once, and answers each.

#include <algorithm>
#include <map>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "pg_lease_check.hpp"
#include "postgres_state.hpp"
#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::detail {

namespace {

struct uuid_hash {
  size_t operator()(const uuid& u) const noexcept {
    size_t h = 0;
    for (auto b : u.bytes)
      h = h * 131 + b;
    return h;
  }
};

// What one attempt at a batch came to.
enum class attempt_outcome {
  answered, // committed (or nothing to commit): every append answered
  conflict, // another process got in the way (unique violation, deadlock): run again
  lost,     // the connection broke: reconnect, run again
  failed,   // the server refused the batch: every append fails with `error`
  again,    // decide once more, with the stored event ids looked up
};

struct stored_event {
  std::string stream;
  uint64_t version;
  uint64_t position;
};

bool transient_conflict(std::string_view state) {
  return state == "23505" || state == "40P01" || state == "40001";
}

// One statement writes a batch, in a transaction of its own (autocommit):
// the server commits it without waiting on this client, so a writer
// frozen at any instant holds `log_head` only for the server's own commit.
//
// Rows are locked in one order everywhere: the batch's leases (FOR KEY
// SHARE, by name: only an acquire, which takes FOR UPDATE, waits for it --
// never a renewal), its streams' rows (by id), then `log_head`. `ok` holds
// when every lease is held at its epoch and unexpired by the database's
// clock, and every stream row is as the batch was decided on ($15: the
// version read, 0 for a new stream); otherwise nothing is written and the
// answer says which leases were held. Positions come from the counter row
// (held until the commit: `$all` stays gapless and in commit order).
// UNIQUE (stream_id, stream_version) on the events is the backstop for a
// stream created meanwhile by another process.
// Keys created for the batch's personal fields are inserted by the same
// statement, so they commit with the first event that needs them; one that
// another writer inserted meanwhile fails it on the key's primary key, and
// the batch runs again, sealed with the stored key.
std::string insert_batch_sql(bool fenced, bool keys, const std::string& lease_schema) {
  std::string text = "WITH v AS (SELECT * FROM unnest($11::bytea[], $12::int8[], $15::int8[]) AS v(sid, ver, prev)),\n";
  if (fenced)
    text += "f AS (" + detail::held_leases_sql(lease_schema, "$16", "$17",
                                               "(l.name, l.epoch) IN (SELECT * FROM unnest($18::text[], $19::int8[]))")
            + "),\n";
  else
    text += "f AS (SELECT NULL::text AS name WHERE false),\n";
  text += R"(s AS (SELECT s.stream_id FROM @.streams s JOIN v ON s.stream_id = v.sid
  WHERE v.prev > 0 AND s.version = v.prev AND NOT s.deleted ORDER BY s.stream_id FOR NO KEY UPDATE OF s),
ok AS (SELECT (SELECT count(*) FROM f) = )";
  text += fenced ? "cardinality($18::text[])" : "0";
  text += R"( AND (SELECT count(*) FROM s) = (SELECT count(*) FROM v WHERE prev > 0)
  AND NOT EXISTS (SELECT 1 FROM @.streams x JOIN v ON x.stream_id = v.sid WHERE v.prev = 0) AS ok),
h AS (UPDATE @.log_head SET position = position + $1 WHERE id = 1 AND (SELECT ok FROM ok) RETURNING position),
e AS (INSERT INTO @.events (position, event_id, stream_id, stream_version, type, schema_version, data, metadata,
                           causation_id, correlation_id, created_at)
  SELECT h.position - $1 + u.ord, u.id, u.sid, u.ver, u.type, u.sv, u.data, u.meta, u.cau, u.cor, $13
  FROM h, unnest($2::uuid[], $3::bytea[], $4::int8[], $5::text[], $6::int4[], $7::bytea[], $8::bytea[],
                 $9::text[], $10::text[]) WITH ORDINALITY AS u(id, sid, ver, type, sv, data, meta, cau, cor, ord)),
upd AS (UPDATE @.streams s SET version = v.ver, updated_at = $13 FROM v, h
  WHERE v.prev > 0 AND s.stream_id = v.sid RETURNING 1),
ins AS (INSERT INTO @.streams (stream_id, version, deleted, created_at, updated_at)
  SELECT v.sid, v.ver, false, $13, $13 FROM v, h WHERE v.prev = 0 ON CONFLICT (stream_id) DO NOTHING RETURNING 1),
n AS (SELECT pg_notify($14, position::text) FROM h))";
  if (fenced) // the batch's writer (cluster tables v3)
    text += ",\nw AS (INSERT INTO @.cluster_writes (first_position, events, cluster, owner)"
            " SELECT position - $1 + 1, $1::int4, $16, $17 FROM h)";
  if (keys) { // the subjects' keys the batch's personal fields were sealed with, new ones
    auto first = fenced ? 20 : 16;
    text += ",\nk AS (INSERT INTO @.subject_keys (subject, record) SELECT * FROM unnest($" + std::to_string(first)
            + "::bytea[], $" + std::to_string(first + 1) + "::bytea[]) WHERE (SELECT ok FROM ok))";
  }
  text += R"(
SELECT (SELECT position FROM h), (SELECT count(*) FROM upd) + (SELECT count(*) FROM ins), (SELECT count(*) FROM n),
  coalesce((SELECT string_agg(name, E'\n') FROM f), '')
)";
  return text;
}

} // namespace

caf::error postgres_state::ensure_writer(pg::deadline until) {
  if (writer_conn.ok())
    return {};
  auto backoff = std::chrono::milliseconds{50};
  caf::error last;
  for (;;) {
    auto attempt_until = std::min(until, pg::clock::now() + options.connect_timeout);
    auto c = pg::connection::open(options.conninfo, attempt_until);
    if (c) {
      if (auto err = setup(*c, attempt_until, "writer"); !err) {
        writer_conn = std::move(*c);
        ++reconnects;
        return {};
      } else {
        last = std::move(err);
      }
    } else {
      last = c.error();
    }
    auto code = code_of(last);
    if (code == store_errc::authentication_failed || code == store_errc::invalid_argument)
      return last;
    if (pg::clock::now() + backoff >= until)
      return last;
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds{1000});
  }
}

void postgres_state::run_writer() {
  size_t last_batch = 0;
  for (;;) {
    std::vector<pg_append> batch;
    std::optional<pg_task> task;
    {
      std::unique_lock guard{queue_mtx};
      queue_cv.wait(guard, [&] { return stopping || !queue.empty(); });
      if (queue.empty())
        return; // stopping, and everything queued was answered
      // The callers of the last batch were answered together and append
      // again together: wait a moment for about as many, so that one commit
      // carries them all instead of two half-full ones (the commit, not the
      // rows, is what costs).
      if (std::holds_alternative<pg_append>(queue.front()) && queue.size() < last_batch)
        queue_cv.wait_for(guard, std::chrono::microseconds{500},
                          [&] { return stopping || queue.size() >= last_batch; });
      if (auto* t = std::get_if<pg_task>(&queue.front())) {
        task = std::move(*t);
        queue.pop_front();
      } else {
        size_t events = 0;
        while (!queue.empty()) {
          auto* a = std::get_if<pg_append>(&queue.front());
          if (!a || (!batch.empty() && events + a->events.size() > options.max_batch))
            break;
          events += a->events.size();
          batch.push_back(std::move(*a));
          queue.pop_front();
        }
      }
    }
    if (task) {
      run_task(*task);
    } else {
      last_batch = batch.size();
      write_appends(batch);
    }
  }
}

void postgres_state::run_task(pg_task& task) {
  auto& c = writer_conn;
  for (;;) {
    if (pg::clock::now() >= task.until)
      return task.done(make_error(store_errc::timeout, "the database did not take the write in time"));
    if (auto err = ensure_writer(task.until))
      return task.done(std::move(err));
    auto begun = c.exec("BEGIN", task.until);
    if (!begun) {
      if (!c.ok())
        continue; // lost before anything was sent: run it again
      return task.done(begun.error());
    }
    auto err = task.run(c, task.until);
    if (err) {
      if (c.ok())
        (void) c.exec("ROLLBACK", task.until);
      else if (code_of(err) == store_errc::unavailable)
        continue; // rolled back with the connection: run it again
      return task.done(std::move(err));
    }
    auto committed = c.exec("COMMIT", task.until);
    if (!committed)
      return task.done(committed.error());
    return task.done({});
  }
}

void postgres_state::write_appends(std::vector<pg_append>& batch) {
  auto& c = writer_conn;
  int conflicts = 0;
  bool check_ids = false;
  // Leases the lease table did not confirm at the last attempt: their
  // appends are answered `fenced` at the next.
  std::unordered_set<std::string> not_held;
  caf::error last_error;
  auto fail_all = [&](const caf::error& err) {
    for (auto& a : batch)
      a.done(err);
    batch.clear();
  };
  while (!batch.empty()) {
    // Appends past their deadline are answered now.
    auto now = pg::clock::now();
    auto expired = std::stable_partition(batch.begin(), batch.end(), [&](const pg_append& a) { return a.until > now; });
    for (auto i = expired; i != batch.end(); ++i) {
      std::string msg = i->outcome_unknown
                          ? "the connection to the database broke while committing and was not back in time: the"
                            " append may be stored; appending the same events (same ids) again is answered from"
                            " what is stored"
                          : "the database did not commit the append in time";
      if (last_error)
        msg += " (" + describe(last_error) + ")";
      i->done(make_error(store_errc::timeout, std::move(msg)));
    }
    batch.erase(expired, batch.end());
    if (batch.empty())
      return;
    auto until = std::min_element(batch.begin(), batch.end(), [](auto& a, auto& b) { return a.until < b.until; })->until;
    if (auto err = ensure_writer(until)) {
      auto code = code_of(err);
      if (code == store_errc::authentication_failed || code == store_errc::invalid_argument)
        return fail_all(err);
      last_error = std::move(err);
      continue;
    }

    // -- one attempt ----------------------------------------------------------
    auto outcome = attempt_outcome::answered;
    caf::error error;
    auto step_failed = [&](caf::error err) {
      error = std::move(err);
      if (!c.settled()) { // broke, or timed out: its outcome is unknown
        outcome = attempt_outcome::lost;
        return;
      }
      auto state = c.last_sqlstate();
      if (state == "23505" && c.last_constraint().find("event_id") != std::string::npos)
        check_ids = true; // an append carries an id stored already
      outcome = transient_conflict(state) ? attempt_outcome::conflict : attempt_outcome::failed;
    };
    [&] {
      // Personal fields are sealed first; the keys created for them go in
      // the batch's statement.
      std::vector<std::pair<std::string, bytes>> fresh_keys;
      std::unordered_map<std::string, subject_key> created_keys;
      if (auto err = seal_appends(c, batch, until, fresh_keys, created_keys))
        return step_failed(std::move(err));
      auto unsealed = std::stable_partition(batch.begin(), batch.end(), [](const pg_append& a) { return !a.failed; });
      for (auto i = unsealed; i != batch.end(); ++i)
        i->done(std::move(i->failed));
      batch.erase(unsealed, batch.end());
      if (batch.empty())
        return;
      // In a cluster: the leases this node believes it holds; the batch's
      // statement confirms them.
      std::shared_ptr<const append_fence> fence_now;
      {
        std::lock_guard guard{queue_mtx};
        fence_now = fence;
      }
      // The streams' rows as last seen: from the writer's cache, else read
      // now. No transaction, no lock: the batch statement checks they did
      // not change.
      std::vector<std::string> unknown;
      for (auto& a : batch)
        if (!known_streams.count(a.stream))
          unknown.push_back(a.stream);
      std::sort(unknown.begin(), unknown.end());
      unknown.erase(std::unique(unknown.begin(), unknown.end()), unknown.end());
      std::unordered_set<std::string> fresh{unknown.begin(), unknown.end()};
      if (!unknown.empty()) {
        pg::params read_params;
        pg::params::array ids{pg::oid::bytea};
        for (auto& s : unknown)
          ids.add_bytes(s);
        read_params.add(std::move(ids));
        auto rows = c.exec_prepared("read_streams",
                                    sql("SELECT stream_id, version, deleted FROM @.streams WHERE stream_id = ANY($1)"),
                                    read_params, until);
        if (!rows)
          return step_failed(rows.error());
        if (known_streams.size() + unknown.size() > max_known_streams)
          known_streams.clear();
        for (auto& s : unknown)
          known_streams[s] = {};
        for (int i = 0; i < rows->rows(); ++i)
          known_streams[rows->text(i, 0)] = {static_cast<uint64_t>(rows->int8(i, 1)), rows->boolean(i, 2)};
      }
      std::unordered_map<std::string, known_stream> current;
      for (auto& a : batch)
        current.emplace(a.stream, known_streams[a.stream]);
      // Event ids stored already: looked up only when an append may have
      // committed with its answer lost, or a batch hit the event-id index.
      std::unordered_map<uuid, stored_event, uuid_hash> stored;
      bool look = check_ids;
      for (auto& a : batch)
        look |= a.outcome_unknown;
      if (look) {
        pg::params id_params;
        pg::params::array event_ids{pg::oid::uuid};
        for (auto& a : batch)
          for (auto& ev : a.events)
            event_ids.add(ev.event_id);
        id_params.add(std::move(event_ids));
        auto found = c.exec(sql("SELECT event_id, stream_id, stream_version, position FROM @.events"
                                " WHERE event_id = ANY($1)"),
                            id_params, until);
        if (!found)
          return step_failed(found.error());
        for (int i = 0; i < found->rows(); ++i)
          stored[found->uuid(i, 0)] = {found->text(i, 1), static_cast<uint64_t>(found->int8(i, 2)),
                                       static_cast<uint64_t>(found->int8(i, 3))};
      }

      // Decide each append in queue order against the rows as they will be.
      std::vector<caf::expected<append_result>> answers;
      answers.reserve(batch.size());
      std::vector<size_t> offsets(batch.size(), 0); // first ordinal in the batch, accepted appends
      std::unordered_set<uuid, uuid_hash> taken;
      int64_t n = 0;
      pg::params::array a_ids{pg::oid::uuid}, a_sids{pg::oid::bytea}, a_vers{pg::oid::int8}, a_types{pg::oid::text},
        a_svs{pg::oid::int4}, a_data{pg::oid::bytea}, a_meta{pg::oid::bytea}, a_cau{pg::oid::text},
        a_cor{pg::oid::text};
      std::map<std::string, std::pair<uint64_t, uint64_t>> touched; // stream -> (read version, new version)
      std::set<std::pair<std::string, int64_t>> wanted;              // the leases the written streams need
      for (size_t k = 0; k < batch.size(); ++k) {
        auto& a = batch[k];
        size_t already = 0;
        for (auto& ev : a.events)
          already += stored.count(ev.event_id);
        if (already > 0) {
          // A retry of an append whose COMMIT answer was lost, or a caller
          // sending the same events again: answer from what is stored.
          bool same = already == a.events.size();
          append_result r;
          for (size_t i = 0; same && i < a.events.size(); ++i) {
            auto& s = stored[a.events[i].event_id];
            same = s.stream == a.stream && (i == 0 || s.version == r.stream_version + 1);
            if (i == 0)
              r.first_position = s.position;
            r.last_position = s.position;
            r.stream_version = s.version;
          }
          if (same)
            answers.emplace_back(r);
          else
            answers.emplace_back(make_error(store_errc::invalid_argument,
                                            "an event id of this append is already stored (in another stream, or"
                                            " with other events)"));
          continue;
        }
        if (fence_now) {
          auto lease = fence_now->lease_for(a.stream);
          if (lease.required && (lease.epoch <= 0 || not_held.count(lease.name))) {
            answers.emplace_back(make_error(store_errc::fenced,
                                            "this node (" + fence_now->owner() + ") does not hold lease " + lease.name
                                              + " of " + stream_text(a.stream) + ": it moved to another node"));
            continue;
          }
        }
        bool reused = false;
        for (auto& ev : a.events)
          reused |= taken.count(ev.event_id) > 0;
        if (reused) {
          answers.emplace_back(make_error(store_errc::invalid_argument, "an event id is used twice"));
          continue;
        }
        auto& row = current[a.stream];
        if ((row.deleted || !a.expected.admits(row.version)) && !fresh.count(a.stream)) {
          // A refusal must rest on the row as stored, not as cached: another
          // process may have written the stream.
          for (auto& b : batch)
            known_streams.erase(b.stream);
          outcome = attempt_outcome::again;
          return;
        }
        if (row.deleted) {
          answers.emplace_back(make_error(store_errc::stream_deleted, stream_text(a.stream) + " is deleted"));
          continue;
        }
        if (!a.expected.admits(row.version)) {
          if (!look && !a.events.empty()) {
            // Perhaps these very events were stored by an earlier try
            // whose answer was lost: that is an answer, not a conflict.
            check_ids = true;
            outcome = attempt_outcome::again;
            return;
          }
          answers.emplace_back(make_error(store_errc::wrong_expected_version,
                                          stream_text(a.stream) + " is at version " + std::to_string(row.version)
                                            + ", expected " + a.expected.to_string()));
          continue;
        }
        if (a.events.empty()) {
          answers.emplace_back(append_result{row.version, 0, 0});
          continue;
        }
        offsets[k] = static_cast<size_t>(n) + 1;
        if (!touched.count(a.stream))
          touched[a.stream].first = row.version;
        for (auto& ev : a.events) {
          taken.insert(ev.event_id);
          a_ids.add(ev.event_id);
          a_sids.add_bytes(a.stream);
          a_vers.add(static_cast<int64_t>(++row.version));
          a_types.add_bytes(ev.type);
          a_svs.add(static_cast<int32_t>(ev.schema_version));
          a_data.add_bytes(ev.data);
          a_meta.add_bytes(ev.metadata);
          a_cau.add_bytes(ev.causation_id);
          a_cor.add_bytes(ev.correlation_id);
          ++n;
        }
        touched[a.stream].second = row.version;
        if (fence_now) {
          auto lease = fence_now->lease_for(a.stream);
          if (lease.required)
            wanted.emplace(std::move(lease.name), lease.epoch);
        }
        answers.emplace_back(append_result{row.version, 0, 0}); // positions once the counter answered
      }

      uint64_t last = 0;
      if (n > 0) {
        pg::params p;
        pg::params::array t_sids{pg::oid::bytea}, t_vers{pg::oid::int8}, t_prev{pg::oid::int8};
        for (auto& [s, v] : touched) {
          t_sids.add_bytes(s);
          t_prev.add(static_cast<int64_t>(v.first));
          t_vers.add(static_cast<int64_t>(v.second));
        }
        p.add(n)
          .add(std::move(a_ids))
          .add(std::move(a_sids))
          .add(std::move(a_vers))
          .add(std::move(a_types))
          .add(std::move(a_svs))
          .add(std::move(a_data))
          .add(std::move(a_meta))
          .add(std::move(a_cau))
          .add(std::move(a_cor))
          .add(std::move(t_sids))
          .add(std::move(t_vers))
          .add(now_micros())
          .add_text(channel)
          .add(std::move(t_prev));
        if (fence_now) {
          pg::params::array names{pg::oid::text}, epochs{pg::oid::int8};
          for (auto& [name, epoch] : wanted) {
            names.add_bytes(name);
            epochs.add(epoch);
          }
          p.add_text(fence_now->cluster()).add_text(fence_now->owner()).add(std::move(names)).add(std::move(epochs));
        }
        // From here until the answer, the batch may commit without us
        // hearing of it.
        for (size_t k = 0; k < batch.size(); ++k)
          if (offsets[k] != 0)
            batch[k].outcome_unknown = true;
        const bool with_keys = !fresh_keys.empty();
        if (with_keys) {
          pg::params::array subjects{pg::oid::bytea}, records{pg::oid::bytea};
          for (auto& [subject, record] : fresh_keys) {
            subjects.add_bytes(subject);
            records.add_bytes(record);
          }
          p.add(std::move(subjects)).add(std::move(records));
        }
        const auto leases_in = fence_now ? detail::lease_schema_of(*fence_now) : std::string{"@"};
        auto name = std::string{"insert_batch"} + (fence_now ? "_fenced" : "") + (with_keys ? "_keys" : "")
                    + (leases_in == "@" ? "" : "_" + leases_in);
        auto inserted =
          c.exec_prepared(name, sql(insert_batch_sql(fence_now != nullptr, with_keys, leases_in)), p, until);
        if (!inserted)
          return step_failed(inserted.error());
        for (auto& a : batch)
          a.outcome_unknown = false; // answered: committed, or nothing written
        if (inserted->is_null(0, 0)) {
          // Nothing written. A lease not confirmed: its appends are fenced
          // at the next attempt. Otherwise another process wrote (or
          // deleted) one of these streams since they were read: decide the
          // batch again on the rows as stored.
          std::unordered_set<std::string> confirmed;
          auto names = inserted->raw(0, 3);
          for (size_t at = 0; at < names.size();) {
            auto end = std::min(names.find('\n', at), names.size());
            confirmed.emplace(names.substr(at, end - at));
            at = end + 1;
          }
          bool fenced_some = false;
          for (auto& [name, epoch] : wanted)
            if (!confirmed.count(name)) {
              not_held.insert(name);
              fenced_some = true;
            }
          if (!fenced_some)
            error = make_error(store_errc::unavailable, "other processes kept writing these streams: the batch was"
                                                        " decided again 50 times without committing");
          outcome = fenced_some ? attempt_outcome::again : attempt_outcome::conflict;
          return;
        }
        last = static_cast<uint64_t>(inserted->int8(0, 0));
        uint64_t base = last - static_cast<uint64_t>(n);
        for (size_t k = 0; k < batch.size(); ++k)
          if (offsets[k] != 0) {
            answers[k]->first_position = base + offsets[k];
            answers[k]->last_position = base + offsets[k] + batch[k].events.size() - 1;
          }
        ++commits;
        for (auto& [stream, v] : touched)
          known_streams[stream] = {v.second, false};
        for (auto& [subject, key] : created_keys)
          owner->keys().put(subject, key); // committed with the events
      }
      size_t accepted = 0;
      for (auto& off : offsets)
        accepted += off != 0;
      appends += accepted;
      if (last != 0 && raise_head(last))
        owner_notify();
      for (size_t k = 0; k < batch.size(); ++k)
        batch[k].done(std::move(answers[k]));
      batch.clear();
    }();

    switch (outcome) {
      case attempt_outcome::answered:
        return;
      case attempt_outcome::lost:
        known_streams.clear();
        ++retries;
        last_error = std::move(error);
        continue;
      case attempt_outcome::conflict:
        known_streams.clear(); // another process wrote: read the rows again
        ++retries;
        if (++conflicts > 50)
          return fail_all(error);
        for (auto& a : batch)
          a.outcome_unknown = false;
        continue;
      case attempt_outcome::failed:
        return fail_all(error);
      case attempt_outcome::again:
        continue;
    }
  }
}

} // namespace sourcery::persistence::detail
