// The LMDB store's inspection pass: the space it takes (`usage`) and a full
// integrity check (`verify`). Both read only, in one read transaction.

#include <filesystem>
#include <string>
#include <unordered_map>

#include <lmdb.h>

#include "lmdb_error.hpp"
#include "lmdb_guard.hpp"
#include "lmdb_page_check.hpp"
#include "lmdb_layout.hpp"
#include "record_codec.hpp"
#include "sourcery/persistence/lmdb_store.hpp"

namespace sourcery::persistence {

namespace {

namespace safe = detail::safe;
using detail::get_be64;
using detail::lmdb_view;
using detail::stream_rec;

uint64_t u64_of(const MDB_val& v) {
  return get_be64(static_cast<const uint8_t*>(v.mv_data));
}

std::string key_text(const MDB_val& k) {
  return std::string{static_cast<const char*>(k.mv_data), k.mv_size};
}

/// Walks a database in key order; `step(key, value)` sees each entry. An
/// LMDB error (a damaged page, say) ends the walk as an `lmdb` problem.
template <class Step>
void walk(const lmdb_view& view, MDB_dbi dbi, const char* name, verify_report& report, Step step) {
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(view.txn, dbi, &cur);
  if (rc != 0) {
    report.add("lmdb", std::string{name} + ": " + mdb_strerror(rc));
    return;
  }
  MDB_val k, v;
  for (rc = safe::cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = safe::cursor_get(cur, &k, &v, MDB_NEXT))
    step(k, v);
  if (rc != MDB_NOTFOUND)
    report.add("lmdb", std::string{name} + ": " + mdb_strerror(rc) + "; the rest of it was not checked");
  mdb_cursor_close(cur);
}

/// What the check learns of one stream: its record, and what the log holds.
struct stream_check {
  stream_rec rec;
  uint64_t seen_version = 0;  // the last version met in `$all`
  uint64_t seen_position = 0; // and its position
  uint64_t next_indexed = 1;  // the version the next index entry should have
  bool undecodable = false;   // reported once; its events are not checked against it
};

class verifier {
public:
  verifier(const lmdb_view& view, const progress_callback& progress, verify_report& report)
    : view_(view), progress_(progress), report_(report) {}

  void run() {
    check_streams();
    check_events();
    check_stream_ends();
    check_index();
    check_snapshots();
    check_checkpoints();
  }

private:
  void check_streams() {
    std::unordered_map<uint64_t, std::string> numbers;
    uint64_t highest = 0;
    walk(view_, view_.streams, "streams", report_, [&](const MDB_val& k, const MDB_val& v) {
      ++report_.streams;
      auto id = key_text(k);
      auto rec = stream_rec::decode(v);
      if (!rec) {
        report_.add("bad_stream_record", "stream record of '" + id + "' does not decode");
        streams_[id].undecodable = true;
        return;
      }
      if (rec->number != 0) { // a stream deleted before its first event has none
        if (auto [i, fresh] = numbers.emplace(rec->number, id); !fresh)
          report_.add("bad_stream_record", "streams '" + i->second + "' and '" + id + "' share number "
                                             + std::to_string(rec->number));
        highest = std::max(highest, rec->number);
      }
      streams_[id].rec = *rec;
      by_number_[rec->number] = id;
    });
    MDB_val k = detail::str_val("next_stream_no"), v;
    int rc = safe::get(view_.txn, view_.meta, &k, &v);
    uint64_t next = rc == 0 && v.mv_size == 8 ? u64_of(v) : 1;
    if ((rc != 0 && rc != MDB_NOTFOUND) || (rc == 0 && v.mv_size != 8) || next <= highest)
      report_.add("bad_stream_record", "the stream counter (" + std::to_string(next)
                                         + ") is not past the highest stream number (" + std::to_string(highest) + ")");
  }

  void check_events() {
    MDB_stat st;
    uint64_t total = safe::stat(view_.txn, view_.events, &st) == 0 ? st.ms_entries : 0;
    uint64_t expected = 1;
    recorded_event ev;
    walk(view_, view_.events, "events", report_, [&](const MDB_val& k, const MDB_val& v) {
      ++report_.events;
      if (progress_ && report_.events % 16384 == 0)
        progress_(report_.events, total);
      if (k.mv_size != 8) {
        report_.add("bad_record", "an event key of " + std::to_string(k.mv_size) + " bytes");
        return;
      }
      uint64_t pos = u64_of(k);
      if (pos != expected)
        report_.add("log_gap", pos > expected ? "positions " + std::to_string(expected) + " to "
                                                  + std::to_string(pos - 1) + " are missing from $all"
                                              : "position " + std::to_string(pos) + " out of order");
      expected = pos + 1;
      head_ = pos;
      uint64_t prev = 0;
      if (auto err = detail::decode_record_into(ev, static_cast<const uint8_t*>(v.mv_data), v.mv_size, pos, &prev)) {
        report_.add("bad_record", describe(err));
        return;
      }
      for (auto* payload : {&ev.data, &ev.metadata})
        if (auto why = detail::check_msgpack_map(payload->data(), payload->size()); !payload->empty() && !why.empty())
          report_.add("bad_payload", "event " + std::to_string(pos) + ": " + (payload == &ev.data ? "data" : "metadata")
                                       + ": " + why);
      auto s = streams_.find(ev.stream_id);
      if (s == streams_.end()) {
        report_.add("unknown_stream", "event " + std::to_string(pos) + " belongs to '" + ev.stream_id
                                        + "', which has no stream record");
        return;
      }
      auto& c = s->second;
      if (c.undecodable)
        return;
      if (ev.stream_version != c.seen_version + 1)
        report_.add("stream_order", "event " + std::to_string(pos) + " is version " + std::to_string(ev.stream_version)
                                      + " of '" + ev.stream_id + "', after version " + std::to_string(c.seen_version));
      else if (prev != c.seen_position)
        report_.add("broken_link", "event " + std::to_string(pos) + " links to " + std::to_string(prev)
                                     + ", not to the previous event of '" + ev.stream_id + "' ("
                                     + std::to_string(c.seen_position) + ")");
      c.seen_version = ev.stream_version;
      c.seen_position = pos;
    });
    if (progress_)
      progress_(report_.events, total);
  }

  void check_stream_ends() {
    for (auto& [id, c] : streams_) {
      if (c.undecodable)
        continue;
      if (c.rec.version != c.seen_version)
        report_.add("stream_version", "stream '" + id + "' is at version " + std::to_string(c.rec.version)
                                        + " but the log holds " + std::to_string(c.seen_version) + " of its events");
      else if (c.rec.last_position != c.seen_position)
        report_.add("broken_link", "stream '" + id + "' ends at event " + std::to_string(c.rec.last_position)
                                     + ", but its last event is " + std::to_string(c.seen_position));
    }
  }

  void check_index() {
    recorded_event ev;
    walk(view_, view_.stream_index, "stream_index", report_, [&](const MDB_val& k, const MDB_val& v) {
      ++report_.index_entries;
      if (k.mv_size != 16 || v.mv_size != 8) {
        report_.add("index_mismatch", "an index entry of the wrong size");
        return;
      }
      auto number = get_be64(static_cast<const uint8_t*>(k.mv_data));
      auto version = get_be64(static_cast<const uint8_t*>(k.mv_data) + 8);
      auto pos = u64_of(v);
      auto n = by_number_.find(number);
      auto s = n == by_number_.end() ? streams_.end() : streams_.find(n->second);
      if (s == streams_.end() || number == 0) {
        report_.add("index_orphan", "index entry of stream number " + std::to_string(number) + ", which no stream has");
        return;
      }
      auto& c = s->second;
      auto where = "index entry " + s->first + "@" + std::to_string(version);
      if (version > c.rec.indexed_version) {
        report_.add("index_orphan", where + " is past the indexed versions of the stream ("
                                      + std::to_string(c.rec.indexed_version) + ")");
        return;
      }
      if (version != c.next_indexed)
        report_.add("index_missing", "the index of '" + s->first + "' lacks versions " + std::to_string(c.next_indexed)
                                       + " to " + std::to_string(version - 1));
      c.next_indexed = version + 1;
      detail::u64_key key{pos};
      MDB_val ek = key.val(), evv;
      int rc = safe::get(view_.txn, view_.events, &ek, &evv);
      if (rc != 0) {
        report_.add("index_mismatch", where + " points at event " + std::to_string(pos) + ", which "
                                        + (rc == MDB_NOTFOUND ? std::string{"does not exist"} : mdb_strerror(rc)));
        return;
      }
      if (detail::decode_record_into(ev, static_cast<const uint8_t*>(evv.mv_data), evv.mv_size, pos))
        return; // reported by the events pass
      if (ev.stream_id != s->first || ev.stream_version != version)
        report_.add("index_mismatch", where + " points at event " + std::to_string(pos) + ", which is "
                                        + ev.stream_id + "@" + std::to_string(ev.stream_version));
    });
    for (auto& [id, c] : streams_)
      if (!c.undecodable && c.next_indexed <= c.rec.indexed_version)
        report_.add("index_missing", "the index of '" + id + "' lacks versions " + std::to_string(c.next_indexed)
                                       + " to " + std::to_string(c.rec.indexed_version));
  }

  void check_snapshots() {
    walk(view_, view_.snapshots, "snapshots", report_, [&](const MDB_val& k, const MDB_val& v) {
      ++report_.snapshots;
      auto id = key_text(k);
      auto snap = detail::decode_snapshot(static_cast<const uint8_t*>(v.mv_data), v.mv_size, id);
      if (!snap) {
        report_.add("bad_snapshot", describe(snap.error()));
        return;
      }
      auto s = streams_.find(id);
      if (s == streams_.end() || snap->stream_version > s->second.rec.version)
        report_.add("snapshot_ahead", "the snapshot of '" + id + "' is at version " + std::to_string(snap->stream_version)
                                        + ", past the stream's "
                                        + std::to_string(s == streams_.end() ? 0 : s->second.rec.version));
    });
  }

  void check_checkpoints() {
    walk(view_, view_.checkpoints, "checkpoints", report_, [&](const MDB_val& k, const MDB_val& v) {
      ++report_.checkpoints;
      auto name = key_text(k);
      if (v.mv_size != 8)
        report_.add("bad_checkpoint", "checkpoint '" + name + "' has " + std::to_string(v.mv_size) + " bytes, not 8");
      else if (u64_of(v) > head_)
        report_.add("checkpoint_ahead", "checkpoint '" + name + "' is at " + std::to_string(u64_of(v))
                                          + ", past the end of $all (" + std::to_string(head_) + ")");
    });
  }

  const lmdb_view& view_;
  const progress_callback& progress_;
  verify_report& report_;
  std::unordered_map<std::string, stream_check> streams_;
  std::unordered_map<uint64_t, std::string> by_number_;
  uint64_t head_ = 0;
};

} // namespace

caf::expected<verify_report> lmdb_store::verify(const progress_callback& progress) const {
  verify_report report;
  auto err = with_view([&](const lmdb_view& view) -> caf::error {
    // The pages first: the checks of events, streams and the index read
    // through LMDB, which trusts its pages (a store opened with the page
    // check off reaches here with them unchecked).
    bool raced = false;
    if (auto damage = detail::find_damaged_page(view.env, view.txn, raced); !damage.empty()) {
      report.add("damaged_page", damage + "; the events' own checks were not run");
      return {};
    }
    verifier{view, progress, report}.run();
    return {};
  });
  if (err)
    return err;
  return report;
}

caf::expected<store_usage> lmdb_store::usage() const {
  store_usage u;
  auto err = with_view([&](const lmdb_view& view) -> caf::error {
    MDB_envinfo info;
    MDB_stat env_stat;
    mdb_env_info(view.env, &info);
    mdb_env_stat(view.env, &env_stat);
    u.page_size = env_stat.ms_psize;
    u.map_size = info.me_mapsize;
    u.map_used = (info.me_last_pgno + 1) * uint64_t{env_stat.ms_psize};
    u.readers_used = info.me_numreaders;
    u.readers_max = info.me_maxreaders;
    struct named {
      const char* name;
      MDB_dbi dbi;
    };
    for (auto [name, dbi] : {named{"events", view.events}, named{"stream_index", view.stream_index},
                             named{"streams", view.streams}, named{"snapshots", view.snapshots},
                             named{"checkpoints", view.checkpoints}, named{"meta", view.meta}}) {
      MDB_stat st;
      if (int rc = safe::stat(view.txn, dbi, &st); rc != 0)
        return detail::mdb_error(rc, std::string{"stat "} + name);
      uint64_t pages = st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
      u.databases.push_back({name, st.ms_entries, st.ms_depth, pages, pages * st.ms_psize});
    }
    const char* dir = nullptr;
    mdb_env_get_path(view.env, &dir);
    std::error_code ec;
    if (dir != nullptr) {
      auto size = std::filesystem::file_size(std::filesystem::path{dir} / "data.mdb", ec);
      u.file_size = ec ? 0 : size;
    }
    return {};
  });
  if (err)
    return err;
  u.head_position = head_position();
  return u;
}

} // namespace sourcery::persistence
