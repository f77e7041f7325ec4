// Personal data in the PostgreSQL store: the subjects' keys in their own
// table, looked up for a batch before its events are sealed (new ones are
// inserted by the batch's own statement, pg_writer.cpp), loaded for reads,
// and deleted (with a NOTIFY, so that every node drops its cached copy).

#include <set>

#include "postgres_state.hpp"
#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::detail {

namespace {

constexpr const char* personal_data_sql = R"(
CREATE TABLE @.subject_keys (subject bytea PRIMARY KEY, record bytea NOT NULL);
)";

} // namespace

const pg_component personal_data_component{"personal_data", 1, {"subject_keys"}, personal_data_sql};

namespace {

/// Rows of (subject, record) as keys; scrubbed records left out.
caf::expected<std::unordered_map<std::string, subject_key>> decode_keys(const pg::result& r, const master_key* master) {
  std::unordered_map<std::string, subject_key> out;
  for (int row = 0; row < r.rows(); ++row) {
    std::string subject{r.raw(row, 0)};
    auto record = r.raw(row, 1);
    auto key = decode_key_record(subject, reinterpret_cast<const uint8_t*>(record.data()), record.size(), master);
    if (!key)
      return key.error();
    if (*key)
      out.emplace(std::move(subject), **key);
  }
  return out;
}

} // namespace

caf::expected<std::unordered_map<std::string, subject_key>>
postgres_state::keys_for(pg::connection& c, const std::set<std::string>& subjects, pg::deadline until) const {
  if (subjects.empty())
    return std::unordered_map<std::string, subject_key>{};
  // A fresh key for each subject, kept only where the subject has none;
  // the statement answers every subject's stored key. A key another writer
  // inserted meanwhile is not in this statement's snapshot: run it again.
  pg::params::array names{pg::oid::bytea}, records{pg::oid::bytea};
  for (auto& s : subjects) {
    auto fresh = make_fresh_key(s, owner->master_key());
    if (!fresh)
      return fresh.error();
    names.add_bytes(s);
    records.add_bytes(fresh->record);
  }
  pg::params p;
  p.add(std::move(names)).add(std::move(records));
  auto r = c.exec(sql("WITH i AS (INSERT INTO @.subject_keys (subject, record)"
                      " SELECT * FROM unnest($1::bytea[], $2::bytea[]) ON CONFLICT (subject) DO NOTHING"
                      " RETURNING subject, record)"
                      " SELECT subject, record FROM i UNION ALL SELECT k.subject, k.record FROM @.subject_keys k"
                      " WHERE k.subject = ANY($1) AND NOT EXISTS (SELECT 1 FROM i WHERE i.subject = k.subject)"),
                  p, until);
  if (!r)
    return r.error();
  auto out = decode_keys(*r, owner->master_key());
  if (!out)
    return out;
  if (out->size() != subjects.size())
    return make_error(store_errc::unavailable, "personal data: a subject's key was created meanwhile by another"
                                               " writer; run again");
  return out;
}

caf::expected<std::unordered_map<std::string, subject_key>>
postgres_state::stored_keys(pg::connection& c, const std::set<std::string>& subjects, pg::deadline until) const {
  pg::params::array names{pg::oid::bytea};
  for (auto& s : subjects)
    names.add_bytes(s);
  pg::params p;
  p.add(std::move(names));
  auto r = c.exec_prepared("stored_keys", sql("SELECT subject, record FROM @.subject_keys WHERE subject = ANY($1)"), p,
                           until);
  if (!r)
    return r.error();
  return decode_keys(*r, owner->master_key());
}

caf::error postgres_state::seal_appends(pg::connection& c, std::vector<pg_append>& batch, pg::deadline until,
                                        std::vector<std::pair<std::string, bytes>>& fresh,
                                        std::unordered_map<std::string, subject_key>& created) {
  auto subject_of = [](const pg_append& a, const event_data& ev) -> const std::string& {
    return ev.subject.empty() ? a.stream : ev.subject;
  };
  std::unordered_map<std::string, subject_key> keys;
  std::set<std::string> missing;
  for (auto& a : batch) {
    if (!a.looked_at_personal) {
      a.looked_at_personal = true;
      for (size_t i = 0; i < a.events.size(); ++i)
        if (has_plain_personal(a.events[i].data)) {
          a.unsealed.resize(a.events.size());
          a.unsealed[i] = a.events[i].data;
        }
    }
    for (size_t i = 0; i < a.unsealed.size(); ++i) {
      if (a.unsealed[i].empty())
        continue;
      const auto& s = subject_of(a, a.events[i]);
      if (keys.count(s) != 0 || missing.count(s) != 0)
        continue;
      if (auto cached = owner->keys().find(s))
        keys.emplace(s, *cached);
      else
        missing.insert(s);
    }
  }
  if (!missing.empty()) {
    auto stored = stored_keys(c, missing, until);
    if (!stored)
      return stored.error();
    for (auto& s : missing) {
      if (auto i = stored->find(s); i != stored->end()) {
        owner->keys().put(s, i->second); // committed: others may use it
        keys.emplace(s, i->second);
        continue;
      }
      // A new key, inserted by the batch's own statement: committed with
      // the first event that needs it. A key another writer inserts
      // meanwhile fails that statement (unique violation): run it again.
      auto made = make_fresh_key(s, owner->master_key());
      if (!made)
        return made.error();
      fresh.emplace_back(s, std::move(made->record));
      created.emplace(s, made->key);
      keys.emplace(s, made->key);
    }
  }
  for (auto& a : batch)
    for (size_t i = 0; i < a.unsealed.size() && !a.failed; ++i) {
      if (a.unsealed[i].empty())
        continue;
      a.events[i].data = a.unsealed[i];
      a.failed = seal_personal(a.events[i].data, subject_of(a, a.events[i]), keys.at(subject_of(a, a.events[i])));
    }
  return {};
}

caf::error postgres_state::seal_snapshot(pg::connection& c, snapshot& snap, pg::deadline until) const {
  if (!has_plain_personal(snap.data))
    return {};
  auto keys = keys_for(c, {snap.stream_id}, until);
  if (!keys)
    return keys.error();
  owner->keys().put(snap.stream_id, keys->at(snap.stream_id));
  return seal_personal(snap.data, snap.stream_id, keys->at(snap.stream_id));
}

} // namespace sourcery::persistence::detail

namespace sourcery::persistence {

caf::error postgres_store::do_load_key_records(const std::vector<std::string>& subjects,
                                               std::vector<std::pair<std::string, bytes>>& found) const {
  if (!state_->has_subject_keys)
    return {};
  pg::params::array names{pg::oid::bytea};
  for (auto& s : subjects)
    names.add_bytes(s);
  pg::params p;
  p.add(std::move(names));
  auto r = state_->read("SELECT subject, record FROM @.subject_keys WHERE subject = ANY($1)", p);
  if (!r)
    return r.error();
  for (int row = 0; row < r->rows(); ++row) {
    auto record = r->raw(row, 1);
    found.emplace_back(std::string{r->raw(row, 0)},
                       bytes(reinterpret_cast<const uint8_t*>(record.data()),
                             reinterpret_cast<const uint8_t*>(record.data()) + record.size()));
  }
  return {};
}

caf::expected<bool> postgres_store::do_forget(std::string_view subject) {
  auto& st = *state_;
  if (!st.has_subject_keys)
    return false;
  bool had_key = false;
  std::string s{subject};
  auto err = st.on_writer([&](pg::connection& c, pg::deadline until) -> caf::error {
    pg::params p;
    p.add_bytea(s).add_text(st.forget_channel);
    auto r = c.exec(st.sql("WITH d AS (DELETE FROM @.subject_keys WHERE subject = $1 RETURNING subject)"
                           " SELECT count(*), count(pg_notify($2, encode(subject, 'hex'))) FROM d"),
                    p, until);
    if (!r)
      return r.error();
    had_key = r->rows() == 1 && r->int8(0, 0) > 0;
    return {};
  });
  if (err)
    return err;
  keys().drop(subject);
  return had_key;
}

} // namespace sourcery::persistence
