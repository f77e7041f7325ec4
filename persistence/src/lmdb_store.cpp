#include "sourcery/persistence/lmdb_store.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <lmdb.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "big_endian.hpp"
#include "event_sink.hpp"
#include "event_validation.hpp"
#include "lmdb_layout.hpp"
#include "lmdb_error.hpp"
#include "lmdb_guard.hpp"
#include "lmdb_open.hpp"
#include "lmdb_path_claim.hpp"
#include "lmdb_read_txn.hpp"
#include "record_codec.hpp"

namespace sourcery::persistence {

namespace {

namespace fs = std::filesystem;
namespace safe = detail::safe;
using detail::mdb_error;
using detail::get_be64;
using detail::index_key;
using detail::put_be64;
using detail::str_val;
using detail::stream_rec;
using detail::u64_key;

constexpr std::string_view format_marker = "sourcery.event-store";

int64_t now_micros() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

// -- queued writes --------------------------------------------------------------

struct write_op {
  enum class kind : uint8_t { append, delete_stream, save_snapshot, delete_snapshot, save_checkpoint };
  kind what = kind::append;
  std::string key; // stream id or checkpoint name
  expected_version expected = expected_version::any();
  std::vector<bytes> bodies; // encoded by the caller: detail::encode_record_body
  snapshot snap;
  uint64_t position = 0;
  // Restoring an export: the append must land at `position`, with these
  // commit times; a deletion or snapshot keeps the time in `at`.
  bool restore = false;
  std::vector<int64_t> times;
  int64_t at = 0;
  event_store::append_callback done;
};

/// Outcome of applying one operation inside a write transaction.
struct op_outcome {
  int rc = 0;                            // non-zero: the whole transaction must be aborted
  caf::expected<append_result> result{append_result{}}; // meaningful when rc == 0
};

} // namespace

struct lmdb_store::impl {
  lmdb_options options;
  detail::path_claim claim; // this directory, for this process; released once the environment is closed
  MDB_env* env = nullptr;
  MDB_dbi events = 0, stream_index = 0, streams = 0, snapshots = 0, checkpoints = 0, meta = 0;

  // Readers hold it shared during a transaction; growing the map takes it
  // exclusively (LMDB requires no live transaction in this process then).
  mutable std::shared_mutex resize_mtx;
  std::atomic<uint64_t> head{0};

  std::mutex queue_mtx;
  std::condition_variable queue_cv;
  std::deque<write_op> queue;
  size_t wake_at = 1; // queue length at which an enqueue wakes the writer
  bool stopping = false;
  std::thread writer;

  // Draining: every transaction also indexes up to `index_budget` streams
  // of `pending`, until it is empty. Writer thread only.
  bool draining = false;
  size_t last_batch_size = 0;         // writer thread only
  std::atomic<uint64_t> commits{0}, operations{0}, resizes{0}, index_transactions{0};
  std::atomic<size_t> map_size{0};

  lmdb_store* owner = nullptr;

  // Set when a write transaction faulted on a damaged page (see lmdb_guard):
  // it is left open, the writer refuses everything after it, and the
  // environment is kept, never closed (closing could free LMDB's garbage).
  bool abandoned = false;

  ~impl() {
    if (env != nullptr && abandoned)
      detail::retain_abandoned(env);
    else if (env != nullptr)
      mdb_env_close(env);
    // An abandoned environment stays open: opening its path again in this
    // process would be a second environment on one file, which LMDB forbids.
    if (abandoned)
      claim.keep_forever();
  }

  // -- read transactions --------------------------------------------------------

  using read_txn = detail::read_txn;

  caf::expected<read_txn> begin_read() const {
    return detail::begin_read(env, resize_mtx);
  }

  caf::expected<std::optional<stream_rec>> get_stream(MDB_txn* txn, std::string_view stream) const {
    MDB_val k = str_val(stream), v;
    int rc = safe::get(txn, streams, &k, &v);
    if (rc == MDB_NOTFOUND)
      return std::optional<stream_rec>{};
    if (rc != 0)
      return mdb_error(rc, "read stream record");
    auto rec = stream_rec::decode(v);
    if (!rec)
      return make_error(store_errc::corrupt_store,
                        "stream record of '" + std::string{stream} + "' has a wrong size");
    return std::optional<stream_rec>{*rec};
  }

  caf::error get_event(MDB_txn* txn, uint64_t position, recorded_event& into, uint64_t* prev = nullptr) const {
    u64_key key{position};
    MDB_val k = key.val(), v;
    int rc = safe::get(txn, events, &k, &v);
    if (rc == MDB_NOTFOUND)
      return make_error(store_errc::corrupt_store,
                        "stream points at missing event " + std::to_string(position));
    if (rc != 0)
      return mdb_error(rc, "read event");
    return detail::decode_record_into(into, static_cast<const uint8_t*>(v.mv_data), v.mv_size, position, prev);
  }

  /// The stream's events from its newest back to version `low` (which must
  /// be past `rec.indexed_version`), following the records' links; newest
  /// first. Checks that every link lands on the expected stream and version.
  caf::expected<std::vector<recorded_event>> walk_tail(MDB_txn* txn, std::string_view stream,
                                                       const stream_rec& rec, uint64_t low) const {
    std::vector<recorded_event> out;
    uint64_t pos = rec.last_position;
    for (uint64_t v = rec.version; v >= low && v > 0; --v) {
      uint64_t prev = 0;
      auto& ev = out.emplace_back();
      if (auto err = get_event(txn, pos, ev, &prev))
        return err;
      if (ev.stream_version != v || ev.stream_id != stream)
        return make_error(store_errc::corrupt_store, "event " + std::to_string(pos) + " is not version "
                                                       + std::to_string(v) + " of '" + std::string{stream} + "'");
      pos = prev;
    }
    return out;
  }

  uint64_t last_position(MDB_txn* txn, int& rc) const {
    MDB_cursor* cur = nullptr;
    rc = mdb_cursor_open(txn, events, &cur);
    if (rc != 0)
      return 0;
    MDB_val k, v;
    rc = safe::cursor_get(cur, &k, &v, MDB_LAST);
    uint64_t pos = 0;
    if (rc == 0 && k.mv_size == 8)
      pos = get_be64(static_cast<const uint8_t*>(k.mv_data));
    if (rc == MDB_NOTFOUND)
      rc = 0;
    mdb_cursor_close(cur);
    return pos;
  }

  // -- the writer -----------------------------------------------------------------

  void enqueue(write_op op) {
    {
      std::lock_guard guard{queue_mtx};
      if (!stopping) {
        queue.push_back(std::move(op));
        if (queue.size() >= wake_at)
          queue_cv.notify_one();
        return;
      }
    }
    op.done(make_error(store_errc::store_closed, "the event store is closed"));
  }

  void writer_loop() {
    std::vector<write_op> batch;
    std::vector<caf::expected<append_result>> results;
    for (;;) {
      {
        std::unique_lock lock{queue_mtx};
        bool woke = queue_cv.wait_for(lock, std::chrono::milliseconds{20},
                                      [this] { return stopping || !queue.empty(); });
        if (stopping && queue.empty())
          return; // everything queued has been answered
        if (!woke) {
          // Idle: index the streams with pending events.
          lock.unlock();
          if (!pending.empty() && !abandoned)
            index_idle();
          continue;
        }
      }
      // Under constant load, drain the pending index now and then so tails
      // stay short, a budget per transaction so no commit waits long for it.
      if (!draining && !pending.empty())
        draining = pending_total > 100'000
                   || std::chrono::steady_clock::now() - last_full_index > std::chrono::seconds{2};
      results.clear();
      if (abandoned) {
        take(batch, options.max_batch);
        refuse(batch, 0, damaged_error());
        batch.clear();
        continue;
      }
      int rc = collect_and_apply(batch, results);
      if (rc == 0) {
        finish(batch, 0, batch.size(), results);
      } else if (abandoned) {
        refuse(batch, 0, damaged_error());
      } else {
        // A full map, too many dirty pages or an I/O error on the way: start
        // over with the operations taken, which can split and grow the map.
        process(batch);
      }
      batch.clear();
    }
  }

  /// Takes up to `max` queued operations into `batch`.
  size_t take(std::vector<write_op>& batch, size_t max) {
    std::lock_guard lock{queue_mtx};
    size_t n = std::min(queue.size(), max);
    for (size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(queue.front()));
      queue.pop_front();
    }
    return n;
  }

  /// Group commit. Opens a write transaction and applies what is queued;
  /// while the last commit ran, its callers could not queue their next
  /// operation, so keep applying what they queue until about as many as last
  /// time have arrived (or 300 µs passed) — one commit then carries them all
  /// instead of two half-full ones, and their arrival overlaps with applying.
  /// (Waiting for every last one, as long as they keep coming, makes bigger
  /// groups but slower dispatch: measured, W1 durable -25%.)
  /// Commits on success (0); otherwise aborts and returns the LMDB code, with
  /// `batch` holding every operation taken.
  int collect_and_apply(std::vector<write_op>& batch, std::vector<caf::expected<append_result>>& results) {
    batch_ctx ctx;
    std::shared_lock lock{resize_mtx};
    int rc = begin_write(ctx, lock);
    const size_t target = std::max<size_t>(1, std::min(last_batch_size - last_batch_size / 8, options.max_batch));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds{300};
    size_t applied = 0;
    for (;;) {
      take(batch, options.max_batch - batch.size());
      for (; rc == 0 && applied < batch.size(); ++applied) {
        auto out = apply(ctx, batch[applied]);
        rc = out.rc;
        results.push_back(std::move(out.result));
      }
      if (rc != 0 || batch.size() >= target)
        break;
      std::unique_lock qlock{queue_mtx};
      if (stopping)
        break; // what is still queued goes in the next transaction
      // Wake for a handful at a time, not for each arrival.
      wake_at = std::min<size_t>(16, target - batch.size());
      bool more = queue_cv.wait_until(qlock, deadline, [&] { return stopping || queue.size() >= wake_at; });
      wake_at = 1;
      if (!more && queue.empty())
        break;
    }
    last_batch_size = batch.size();
    if (rc == 0)
      rc = commit(ctx);
    if (rc != 0)
      end_failed(ctx);
    return rc;
  }

  /// Drains the pending index a budget per transaction, and leaves it to
  /// the next group as soon as appends are waiting.
  void index_idle() {
    std::vector<write_op> none;
    std::vector<caf::expected<append_result>> results;
    draining = true;
    for (int attempt = 0; attempt < 8 && !pending.empty();) {
      int rc = run_transaction(none, 0, 0, results);
      if (rc == MDB_MAP_FULL && grow_map()) {
        ++attempt;
        continue;
      }
      if (rc != 0)
        return; // the index stays pending; reads follow links meanwhile
      std::lock_guard lock{queue_mtx};
      if (!queue.empty() || stopping)
        return;
    }
  }

  /// Positions of a stream's committed events not yet in the stream index,
  /// for versions `first_version` onwards. The writer's own memory: after a
  /// restart, or for events another process appended, `index_stream` walks
  /// the records' links instead.
  struct pending_index {
    uint64_t first_version = 0;
    std::vector<uint64_t> positions;
  };

  /// Streams are indexed once this many of their events are pending.
  static constexpr size_t index_chunk = 32;
  /// Streams of `pending` one transaction indexes while draining: a few ms
  /// (indexing a stream costs ~5 µs). All at once, 100k streams created in
  /// the last 2 s stalled one commit, and every caller in it, for 450 ms.
  static constexpr size_t index_budget = 512;

  std::unordered_map<std::string, pending_index> pending; // writer thread only
  size_t pending_total = 0;
  std::chrono::steady_clock::time_point last_full_index = std::chrono::steady_clock::now();

  struct batch_ctx {
    MDB_txn* txn = nullptr;
    uint64_t next_position = 1;
    uint64_t next_stream_no = 1;
    bool stream_no_dirty = false;
    bool drain = false; // also index up to index_budget streams of `pending`
    size_t drained = 0; // how many it took
    uint64_t faults_before = detail::faults_caught();
    int64_t now = 0;
    std::unordered_map<std::string, stream_rec> streams;
    std::unordered_map<std::string, pending_index> appended; // this batch's positions per stream
    std::vector<std::string> indexed;                        // streams fully indexed by this batch
    bytes buf;
  };

  /// Ends a write transaction that failed; one that faulted is abandoned.
  void end_failed(batch_ctx& ctx) {
    if (ctx.txn != nullptr && !detail::abort_write(ctx.txn, ctx.faults_before))
      abandoned = true;
    ctx.txn = nullptr;
  }

  static caf::error damaged_error() {
    return make_error(store_errc::corrupt_store,
                      "the store has a damaged page (reading it faulted) and takes no more writes; "
                      "check it with `sourcery verify`, then restore it from a copy or an export");
  }

  /// Answers operations the writer will not apply.
  static void refuse(std::vector<write_op>& ops, size_t begin, const caf::error& err) {
    for (size_t i = begin; i < ops.size(); ++i)
      ops[i].done(err);
  }

  /// Applies `batch` in as few transactions as it takes: a full map is
  /// grown, a transaction with too many dirty pages is split.
  void process(std::vector<write_op>& batch) {
    std::vector<caf::expected<append_result>> results;
    size_t begin = 0;
    size_t chunk = batch.size();
    while (begin < batch.size()) {
      size_t end = std::min(batch.size(), begin + chunk);
      results.clear();
      int rc = run_transaction(batch, begin, end, results);
      if (abandoned) {
        refuse(batch, begin, damaged_error());
        return;
      }
      if (rc == MDB_MAP_FULL && grow_map())
        continue; // retry the same operations with a bigger map
      if (rc == MDB_TXN_FULL && end - begin > 1) {
        chunk = (end - begin) / 2; // too many dirty pages: commit in smaller pieces
        continue;
      }
      if (rc != 0) {
        auto err = rc == MDB_TXN_FULL ? make_error(store_errc::invalid_argument, "append too large for one transaction")
                   : rc == EIO && out_of_space()
                     ? make_error(store_errc::store_full, "commit: no space left for the store's file")
                     : mdb_error(rc, "commit");
        for (size_t i = begin; i < end; ++i)
          batch[i].done(err);
      } else {
        finish(batch, begin, end, results);
      }
      begin = end;
    }
  }

  /// Answers batch[begin, end) after their commit.
  void finish(std::vector<write_op>& batch, size_t begin, size_t end,
              std::vector<caf::expected<append_result>>& results) {
    commits.fetch_add(1, std::memory_order_relaxed);
    operations.fetch_add(end - begin, std::memory_order_relaxed);
    owner->notify_appended();
    for (size_t i = begin; i < end; ++i)
      batch[i].done(std::move(results[i - begin]));
  }

  /// Begins the write transaction of `ctx`, adopting a map another process
  /// grew, and reads the log's end and the stream counter inside it: another
  /// process may have written since our last commit.
  int begin_write(batch_ctx& ctx, std::shared_lock<std::shared_mutex>& lock) {
    int rc = mdb_txn_begin(env, nullptr, 0, &ctx.txn);
    if (rc == MDB_MAP_RESIZED) {
      lock.unlock();
      {
        std::unique_lock excl{resize_mtx};
        mdb_env_set_mapsize(env, 0);
      }
      lock.lock();
      rc = mdb_txn_begin(env, nullptr, 0, &ctx.txn);
    }
    if (rc != 0) {
      ctx.txn = nullptr;
      return rc;
    }
    ctx.next_position = last_position(ctx.txn, rc) + 1;
    if (rc == 0)
      rc = read_stream_counter(ctx);
    ctx.now = now_micros();
    ctx.drain = draining;
    return rc;
  }

  /// Writes the stream index and records, and commits. On success the
  /// transaction is gone; on failure the caller aborts it.
  int commit(batch_ctx& ctx) {
    int rc = update_index(ctx);
    if (rc == 0)
      rc = flush_streams(ctx);
    if (rc != 0)
      return rc;
    rc = safe::txn_commit(ctx.txn);
    if (rc != 0 && detail::faults_caught() != ctx.faults_before)
      abandoned = true; // faulted while committing: left as it is
    ctx.txn = nullptr; // committed, freed by LMDB on its own errors, or abandoned
    if (rc == 0) {
      head.store(ctx.next_position - 1, std::memory_order_release);
      remember_pending(ctx);
      if (ctx.drained > 0)
        index_transactions.fetch_add(1, std::memory_order_relaxed);
    }
    return rc;
  }

  /// Applies batch[begin, end) in one write transaction and commits.
  /// Returns 0 on commit (results filled) or the LMDB code that aborted it.
  int run_transaction(std::vector<write_op>& batch, size_t begin, size_t end,
                      std::vector<caf::expected<append_result>>& results) {
    batch_ctx ctx;
    std::shared_lock lock{resize_mtx};
    int rc = begin_write(ctx, lock);
    for (size_t i = begin; rc == 0 && i < end; ++i) {
      auto out = apply(ctx, batch[i]);
      rc = out.rc;
      results.push_back(std::move(out.result));
    }
    if (rc == 0)
      rc = commit(ctx);
    if (rc != 0)
      end_failed(ctx);
    return rc;
  }

  int read_stream_counter(batch_ctx& ctx) {
    MDB_val k = str_val("next_stream_no"), v;
    int rc = safe::get(ctx.txn, meta, &k, &v);
    if (rc == MDB_NOTFOUND)
      return 0;
    if (rc != 0)
      return rc;
    if (v.mv_size != 8)
      return MDB_CORRUPTED;
    ctx.next_stream_no = get_be64(static_cast<const uint8_t*>(v.mv_data));
    return 0;
  }

  /// Finds a stream's record, through the batch's cache.
  op_outcome load_stream(batch_ctx& ctx, const std::string& stream, stream_rec*& out) {
    op_outcome o;
    auto i = ctx.streams.find(stream);
    if (i == ctx.streams.end()) {
      auto found = get_stream(ctx.txn, stream);
      if (!found) {
        o.rc = code_of(found.error()) == store_errc::corrupt_store ? MDB_CORRUPTED : EIO;
        return o;
      }
      i = ctx.streams.emplace(stream, found->value_or(stream_rec{})).first;
    }
    out = &i->second;
    return o;
  }

  op_outcome apply(batch_ctx& ctx, write_op& op) {
    op_outcome o;
    switch (op.what) {
      case write_op::kind::append:
      case write_op::kind::delete_stream: {
        stream_rec* s = nullptr;
        o = load_stream(ctx, op.key, s);
        if (o.rc != 0)
          return o;
        if (op.restore && op.what == write_op::kind::append && op.position != ctx.next_position) {
          o.result = make_error(store_errc::invalid_argument,
                                "import: event " + std::to_string(op.position) + " does not continue the log, which ends at "
                                  + std::to_string(ctx.next_position - 1));
          return o;
        }
        if (s->deleted) {
          o.result = make_error(store_errc::stream_deleted, "stream '" + op.key + "' is deleted");
          return o;
        }
        if (!op.expected.admits(s->version)) {
          o.result = make_error(store_errc::wrong_expected_version,
                                "stream '" + op.key + "' is at version " + std::to_string(s->version)
                                  + ", expected " + op.expected.to_string());
          return o;
        }
        if (op.what == write_op::kind::delete_stream) {
          s->deleted = true;
          s->exists = true;
          s->updated_at = op.restore ? op.at : ctx.now;
          s->dirty = true;
          MDB_val k = str_val(op.key);
          int rc = safe::del(ctx.txn, snapshots, &k, nullptr);
          o.rc = rc == MDB_NOTFOUND ? 0 : rc;
          o.result = append_result{s->version, 0, 0};
          return o;
        }
        return append_events(ctx, op, *s);
      }
      case write_op::kind::save_snapshot: {
        ctx.buf.clear();
        if (!op.restore)
          op.snap.created_at = ctx.now;
        detail::encode_snapshot(op.snap, ctx.buf);
        MDB_val k = str_val(op.key), v{ctx.buf.size(), ctx.buf.data()};
        o.rc = safe::put(ctx.txn, snapshots, &k, &v, 0);
        return o;
      }
      case write_op::kind::delete_snapshot: {
        MDB_val k = str_val(op.key);
        int rc = safe::del(ctx.txn, snapshots, &k, nullptr);
        o.rc = rc == MDB_NOTFOUND ? 0 : rc;
        return o;
      }
      case write_op::kind::save_checkpoint: {
        u64_key pos{op.position};
        MDB_val k = str_val(op.key), v = pos.val();
        o.rc = safe::put(ctx.txn, checkpoints, &k, &v, 0);
        return o;
      }
    }
    return o;
  }

  op_outcome append_events(batch_ctx& ctx, write_op& op, stream_rec& s) {
    op_outcome o;
    append_result r;
    if (op.bodies.empty()) {
      r.stream_version = s.version;
      o.result = r;
      return o;
    }
    // Work on a copy; the operation's own data stays intact so a transaction
    // retried after growing the map can apply it again.
    auto time_of = [&](size_t i) { return op.restore ? op.times[i] : ctx.now; };
    stream_rec next = s;
    if (!next.exists) {
      next.number = ctx.next_stream_no++;
      ctx.stream_no_dirty = true;
      next.created_at = time_of(0);
      next.exists = true;
    }
    uint64_t pos = ctx.next_position;
    auto& appended = ctx.appended[op.key];
    if (appended.positions.empty())
      appended.first_version = next.version + 1;
    for (size_t i = 0; i < op.bodies.size(); ++i) {
      const auto& body = op.bodies[i];
      ++next.version;
      u64_key pkey{pos};
      MDB_val k = pkey.val(), v{detail::record_header_size + body.size() + detail::record_trailer_size, nullptr};
      if ((o.rc = safe::put(ctx.txn, events, &k, &v, MDB_APPEND | MDB_RESERVE)) != 0)
        return o;
      detail::write_record(static_cast<uint8_t*>(v.mv_data), next.version, next.last_position, time_of(i), body);
      appended.positions.push_back(pos);
      next.last_position = pos;
      if (r.first_position == 0)
        r.first_position = pos;
      r.last_position = pos;
      ++pos;
    }
    next.updated_at = time_of(op.bodies.size() - 1);
    next.dirty = true;
    s = next;
    ctx.next_position = pos;
    r.stream_version = next.version;
    o.result = r;
    return o;
  }

  /// Writes stream-index entries for every stream with `index_chunk` or more
  /// pending events and, when `ctx.drain`, for up to `index_budget` more
  /// streams of `pending`.
  int update_index(batch_ctx& ctx) {
    std::vector<std::string> due;
    for (auto& [id, a] : ctx.appended) {
      auto p = pending.find(id);
      size_t n = a.positions.size() + (p == pending.end() ? 0 : p->second.positions.size());
      if (n >= index_chunk)
        due.push_back(id);
    }
    if (ctx.drain) {
      size_t budget = index_budget;
      for (auto i = pending.begin(); i != pending.end() && budget > 0; ++i)
        if (auto a = ctx.appended.find(i->first); a == ctx.appended.end()
                                                  || a->second.positions.size() + i->second.positions.size() < index_chunk) {
          due.push_back(i->first);
          --budget;
          ++ctx.drained;
        }
    }
    for (auto& id : due)
      if (int rc = index_stream(ctx, id); rc != 0)
        return rc;
    return 0;
  }

  /// Indexes all of one stream's events past its `indexed_version`.
  int index_stream(batch_ctx& ctx, const std::string& id) {
    stream_rec* s = nullptr;
    if (auto o = load_stream(ctx, id, s); o.rc != 0)
      return o.rc;
    if (!s->exists || s->indexed_version >= s->version) {
      ctx.indexed.push_back(id);
      return 0;
    }
    // Positions of versions indexed_version+1 .. version, from memory when it
    // covers them all, else by walking the links.
    std::vector<uint64_t> positions;
    auto p = pending.find(id);
    auto a = ctx.appended.find(id);
    uint64_t from = s->indexed_version + 1;
    uint64_t covered_from = p != pending.end() ? p->second.first_version
                            : a != ctx.appended.end() ? a->second.first_version : 0;
    if (covered_from == from) {
      if (p != pending.end())
        positions = p->second.positions;
      if (a != ctx.appended.end())
        positions.insert(positions.end(), a->second.positions.begin(), a->second.positions.end());
    }
    if (positions.size() != s->version - s->indexed_version) {
      auto tail = walk_tail(ctx.txn, id, *s, from);
      if (!tail)
        return code_of(tail.error()) == store_errc::io_error ? EIO : MDB_CORRUPTED;
      positions.clear();
      for (auto i = tail->rbegin(); i != tail->rend(); ++i)
        positions.push_back(i->position);
    }
    uint64_t version = from;
    for (auto pos : positions) {
      index_key ikey{s->number, version++};
      u64_key pkey{pos};
      MDB_val ik = ikey.val(), iv = pkey.val();
      if (int rc = safe::put(ctx.txn, stream_index, &ik, &iv, 0); rc != 0)
        return rc;
    }
    s->indexed_version = s->version;
    s->dirty = true;
    ctx.indexed.push_back(id);
    return 0;
  }

  /// After a commit: the batch's unindexed positions join `pending`.
  void remember_pending(batch_ctx& ctx) {
    for (auto& id : ctx.indexed)
      if (auto p = pending.find(id); p != pending.end()) {
        pending_total -= p->second.positions.size();
        pending.erase(p);
      }
    std::unordered_set<std::string> done(ctx.indexed.begin(), ctx.indexed.end());
    for (auto& [id, a] : ctx.appended) {
      if (done.count(id) != 0)
        continue;
      auto& p = pending[id];
      if (p.positions.empty())
        p.first_version = a.first_version;
      p.positions.insert(p.positions.end(), a.positions.begin(), a.positions.end());
      pending_total += a.positions.size();
    }
    if (ctx.drain && pending.empty()) {
      draining = false;
      last_full_index = std::chrono::steady_clock::now();
    }
  }

  int flush_streams(batch_ctx& ctx) {
    uint8_t buf[stream_rec::size];
    for (auto& [id, s] : ctx.streams) {
      if (!s.dirty)
        continue;
      s.encode(buf);
      MDB_val k = str_val(id), v{sizeof buf, buf};
      if (int rc = safe::put(ctx.txn, streams, &k, &v, 0); rc != 0)
        return rc;
    }
    if (ctx.stream_no_dirty) {
      u64_key n{ctx.next_stream_no};
      MDB_val k = str_val("next_stream_no"), v = n.val();
      if (int rc = safe::put(ctx.txn, meta, &k, &v, 0); rc != 0)
        return rc;
    }
    return 0;
  }

  /// Whether a failed write is best explained by a full disk or a file-size
  /// limit: LMDB reports a short write as EIO, and a write cut short by a
  /// full disk is a short write.
  bool out_of_space() const {
    constexpr uint64_t margin = uint64_t{64} << 20;
    struct statvfs fs;
    if (::statvfs(claim.path().c_str(), &fs) == 0
        && static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize < margin)
      return true;
    struct rlimit limit;
    struct stat st;
    auto file = claim.path() + "/data.mdb";
    return ::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY
           && ::stat(file.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) + margin > limit.rlim_cur;
  }

  bool grow_map() {
    std::unique_lock excl{resize_mtx};
    MDB_envinfo info;
    mdb_env_info(env, &info);
    size_t current = info.me_mapsize;
    size_t next = current * 2;
    if (options.max_map_size != 0)
      next = std::min(next, options.max_map_size);
    if (next <= current)
      return false;
    if (mdb_env_set_mapsize(env, next) != 0)
      return false;
    map_size.store(next);
    resizes.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
};

// -- opening ----------------------------------------------------------------------

namespace {

caf::error check_directory(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec)
      return make_error(store_errc::io_error, "cannot create " + dir.string() + ": " + ec.message());
    return {};
  }
  if (!fs::is_directory(dir, ec))
    return make_error(store_errc::foreign_store, dir.string() + " is not a directory");
  if (fs::exists(dir / "data.mdb", ec))
    return {};
  for (auto& entry : fs::directory_iterator{dir, ec})
    if (entry.path().filename() != "lock.mdb")
      return make_error(store_errc::foreign_store,
                        dir.string() + " holds other files (" + entry.path().filename().string()
                          + ") and no Sourcery store; use an empty or new directory");
  if (ec)
    return make_error(store_errc::io_error, "cannot list " + dir.string() + ": " + ec.message());
  return {};
}

} // namespace

caf::expected<std::unique_ptr<lmdb_store>> lmdb_store::open(lmdb_options options) {
  if (options.path.empty())
    return make_error(store_errc::invalid_argument, "store path is empty");
  if (options.max_batch == 0)
    return make_error(store_errc::invalid_argument, "max_batch is 0");
  fs::path dir{options.path};
  if (auto err = check_directory(dir))
    return err;
  auto st = std::make_unique<impl>();
  auto claim = detail::path_claim::take(dir.string(), "open " + options.path, !options.read_only);
  if (!claim)
    return claim.error();
  st->claim = std::move(*claim);
  int rc = mdb_env_create(&st->env);
  if (rc != 0) {
    st->env = nullptr;
    return mdb_error(rc, "create environment");
  }
  mdb_env_set_maxdbs(st->env, 8);
  mdb_env_set_maxreaders(st->env, 1024);
  mdb_env_set_mapsize(st->env, options.initial_map_size);
  if (auto err = detail::open_env(st->env, dir.string(), options.read_only, options.mode, options.check_pages,
                                  "open " + options.path))
    return err;

  // Check the format marker; create the databases in a new store.
  MDB_txn* txn = nullptr;
  rc = detail::begin_at_open(st->env, options.read_only ? MDB_RDONLY : 0, &txn);
  if (rc != 0)
    return mdb_error(rc, "begin transaction");
  auto faults_before = detail::faults_caught();
  auto fail = [&](caf::error err) {
    if (!detail::abort_write(txn, faults_before))
      st->abandoned = true;
    return err;
  };
  MDB_dbi main_db = 0;
  if ((rc = safe::dbi_open(txn, nullptr, 0, &main_db)) != 0)
    return fail(mdb_error(rc, "open main database"));
  MDB_stat main_stat;
  safe::stat(txn, main_db, &main_stat);
  bool fresh = main_stat.ms_entries == 0;
  if (fresh && options.read_only)
    return fail(make_error(store_errc::invalid_argument, options.path + " holds no store to read"));
  unsigned create = fresh ? MDB_CREATE : 0;
  rc = safe::dbi_open(txn, "meta", create, &st->meta);
  if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE)
    return fail(make_error(store_errc::foreign_store,
                           options.path + " holds an LMDB database of another program"));
  if (rc != 0)
    return fail(mdb_error(rc, "open meta"));
  if (fresh) {
    MDB_val k = str_val("format"), v = str_val(format_marker);
    uint8_t ver[8];
    put_be64(ver, format_version);
    MDB_val vk = str_val("format_version"), vv{8, ver};
    if ((rc = safe::put(txn, st->meta, &k, &v, 0)) != 0 || (rc = safe::put(txn, st->meta, &vk, &vv, 0)) != 0)
      return fail(mdb_error(rc, "write format marker"));
  } else {
    MDB_val k = str_val("format"), v;
    rc = safe::get(txn, st->meta, &k, &v);
    if (rc != 0 || std::string_view{static_cast<const char*>(v.mv_data), v.mv_size} != format_marker)
      return fail(make_error(store_errc::foreign_store,
                             options.path + " holds an LMDB database of another program"));
    MDB_val vk = str_val("format_version"), vv;
    rc = safe::get(txn, st->meta, &vk, &vv);
    if (rc != 0 || vv.mv_size != 8)
      return fail(make_error(store_errc::corrupt_store, options.path + ": format version missing"));
    auto found = get_be64(static_cast<const uint8_t*>(vv.mv_data));
    if (found != format_version)
      return fail(make_error(store_errc::unsupported_format_version,
                             options.path + " holds format version " + std::to_string(found)
                               + "; this build reads version " + std::to_string(format_version)));
  }
  struct named {
    const char* name;
    MDB_dbi* dbi;
  };
  for (auto [name, dbi] : {named{"events", &st->events}, named{"stream_index", &st->stream_index},
                           named{"streams", &st->streams}, named{"snapshots", &st->snapshots},
                           named{"checkpoints", &st->checkpoints}}) {
    if ((rc = safe::dbi_open(txn, name, create, dbi)) != 0)
      return fail(rc == MDB_NOTFOUND
                    ? make_error(store_errc::corrupt_store, options.path + ": database " + name + " missing")
                    : mdb_error(rc, std::string{"open "} + name));
  }
  st->head.store(st->last_position(txn, rc));
  if (rc != 0)
    return fail(mdb_error(rc, "read log end"));
  // Committing (even a read-only transaction) keeps the database handles open.
  rc = safe::txn_commit(txn);
  if (rc != 0) {
    st->abandoned = detail::faults_caught() != faults_before;
    return mdb_error(rc, "commit store creation");
  }
  MDB_envinfo info;
  mdb_env_info(st->env, &info);
  st->map_size.store(info.me_mapsize);
  st->options = std::move(options);
  auto* raw = st.get();
  std::unique_ptr<lmdb_store> store{new lmdb_store{std::move(st)}};
  raw->owner = store.get();
  if (!raw->options.read_only)
    raw->writer = std::thread{[raw] {
      pthread_setname_np(pthread_self(), "lmdb-writer");
      raw->writer_loop();
    }};
  return store;
}

lmdb_store::lmdb_store(std::unique_ptr<impl> impl) : impl_(std::move(impl)) {}

lmdb_store::~lmdb_store() {
  close_base();
  {
    std::lock_guard guard{impl_->queue_mtx};
    impl_->stopping = true;
  }
  impl_->queue_cv.notify_all();
  if (impl_->writer.joinable())
    impl_->writer.join();
}

uint64_t lmdb_store::head_position() const {
  return impl_->head.load(std::memory_order_acquire);
}

void lmdb_store::refresh_head() const {
  auto r = impl_->begin_read();
  if (!r)
    return;
  int rc = 0;
  auto pos = impl_->last_position(r->txn, rc);
  if (rc != 0)
    return;
  auto cur = impl_->head.load();
  while (pos > cur && !impl_->head.compare_exchange_weak(cur, pos)) {
  }
  if (pos > cur)
    notify_appended();
}

lmdb_stats lmdb_store::stats() const {
  return {impl_->commits.load(), impl_->operations.load(), impl_->resizes.load(), impl_->map_size.load(),
          impl_->index_transactions.load()};
}

// -- writes -------------------------------------------------------------------------

namespace {

caf::expected<void> to_void(caf::expected<append_result> r) {
  if (!r)
    return r.error();
  return {};
}

} // namespace

void lmdb_store::do_append(std::string stream, expected_version expected, std::vector<event_data> events,
                           append_callback done) {
  if (impl_->options.read_only)
    return done(make_error(store_errc::invalid_argument, "the store is open read-only"));
  write_op op;
  op.what = write_op::kind::append;
  op.key = std::move(stream);
  op.expected = expected;
  // Encode here, on the caller's thread, so the single writer only copies.
  op.bodies.resize(events.size());
  for (size_t i = 0; i < events.size(); ++i)
    detail::encode_record_body(events[i], op.key, op.bodies[i]);
  op.done = std::move(done);
  impl_->enqueue(std::move(op));
}

namespace {

/// Runs a non-append write through the writer and waits for its answer.
caf::expected<append_result> submit_and_wait(auto& impl, write_op op) {
  if (impl.options.read_only)
    return make_error(store_errc::invalid_argument, "the store is open read-only");
  std::promise<caf::expected<append_result>> p;
  auto f = p.get_future();
  op.done = [&p](caf::expected<append_result> r) { p.set_value(std::move(r)); };
  impl.enqueue(std::move(op));
  return f.get();
}

} // namespace

caf::expected<void> lmdb_store::do_delete_stream(std::string_view stream, expected_version expected) {
  write_op op;
  op.what = write_op::kind::delete_stream;
  op.key = std::string{stream};
  op.expected = expected;
  return to_void(submit_and_wait(*impl_, std::move(op)));
}

caf::expected<void> lmdb_store::do_save_snapshot(snapshot snap) {
  write_op op;
  op.what = write_op::kind::save_snapshot;
  op.key = snap.stream_id;
  op.snap = std::move(snap);
  return to_void(submit_and_wait(*impl_, std::move(op)));
}

void lmdb_store::do_save_snapshot_async(snapshot snap, std::function<void(caf::expected<void>)> done) {
  if (impl_->options.read_only)
    return done(make_error(store_errc::invalid_argument, "the store is open read-only"));
  write_op op;
  op.what = write_op::kind::save_snapshot;
  op.key = snap.stream_id;
  op.snap = std::move(snap);
  op.done = [done = std::move(done)](caf::expected<append_result> r) { done(to_void(std::move(r))); };
  impl_->enqueue(std::move(op));
}

caf::expected<void> lmdb_store::do_delete_snapshot(std::string_view stream) {
  write_op op;
  op.what = write_op::kind::delete_snapshot;
  op.key = std::string{stream};
  return to_void(submit_and_wait(*impl_, std::move(op)));
}

caf::expected<void> lmdb_store::do_save_checkpoint(std::string_view name, uint64_t position) {
  write_op op;
  op.what = write_op::kind::save_checkpoint;
  op.key = std::string{name};
  op.position = position;
  return to_void(submit_and_wait(*impl_, std::move(op)));
}

// -- restoring an export ---------------------------------------------------------------

caf::expected<void> lmdb_store::import_events(std::vector<recorded_event> events) {
  if (impl_->options.read_only)
    return make_error(store_errc::invalid_argument, "the store is open read-only");
  // One operation per run of consecutive events of one stream; all queued at
  // once so that group commit packs them, then awaited in order.
  std::vector<std::future<caf::expected<append_result>>> answers;
  for (size_t i = 0; i < events.size();) {
    size_t j = i;
    while (j < events.size() && events[j].stream_id == events[i].stream_id)
      ++j;
    write_op op;
    op.what = write_op::kind::append;
    op.restore = true;
    op.key = events[i].stream_id;
    if (auto err = validate_stream_id(op.key))
      return err;
    if (events[i].stream_version == 0 || events[i].position == 0)
      return make_error(store_errc::invalid_argument, "import: event of '" + op.key + "' without version or position");
    op.expected = events[i].stream_version == 1 ? expected_version::no_stream()
                                                : expected_version::exact(events[i].stream_version - 1);
    op.position = events[i].position;
    for (size_t k = i; k < j; ++k) {
      auto& ev = events[k];
      if (k > i && (ev.stream_version != events[k - 1].stream_version + 1 || ev.position != events[k - 1].position + 1))
        return make_error(store_errc::invalid_argument,
                          "import: event " + std::to_string(ev.position) + " is out of order");
      event_data data{ev.event_id, std::move(ev.type), ev.schema_version, std::move(ev.data), std::move(ev.metadata),
                      std::move(ev.causation_id), std::move(ev.correlation_id)};
      if (data.event_id.is_nil())
        return make_error(store_errc::invalid_argument, "import: event " + std::to_string(ev.position) + " has no id");
      if (auto err = detail::validate_event(data, "import: event " + std::to_string(ev.position)))
        return err;
      detail::encode_record_body(data, op.key, op.bodies.emplace_back());
      op.times.push_back(ev.created_at);
    }
    auto p = std::make_shared<std::promise<caf::expected<append_result>>>();
    answers.push_back(p->get_future());
    op.done = [p](caf::expected<append_result> r) { p->set_value(std::move(r)); };
    impl_->enqueue(std::move(op));
    i = j;
  }
  caf::error first;
  for (auto& a : answers)
    if (auto r = a.get(); !r && !first)
      first = r.error();
  if (first)
    return first;
  return {};
}

caf::expected<void> lmdb_store::import_deleted_stream(const persistence::stream_info& stream) {
  if (auto err = validate_stream_id(stream.stream_id))
    return err;
  write_op op;
  op.what = write_op::kind::delete_stream;
  op.key = stream.stream_id;
  op.expected = expected_version::exact(stream.version);
  op.restore = true;
  op.at = stream.updated_at;
  return to_void(submit_and_wait(*impl_, std::move(op)));
}

caf::expected<void> lmdb_store::import_snapshot(snapshot snap) {
  if (auto err = validate_stream_id(snap.stream_id))
    return err;
  write_op op;
  op.what = write_op::kind::save_snapshot;
  op.key = snap.stream_id;
  op.snap = std::move(snap);
  op.restore = true;
  return to_void(submit_and_wait(*impl_, std::move(op)));
}

// -- reads ---------------------------------------------------------------------------

namespace {

/// Reads events by position through one cursor. A stream's events often sit
/// next to each other in `$all` (appended together, or by a busy writer):
/// stepping to the next key is then much cheaper than a search from the root.
class event_cursor {
public:
  event_cursor(MDB_txn* txn, MDB_dbi dbi) {
    if (int rc = mdb_cursor_open(txn, dbi, &cur_); rc != 0) {
      cur_ = nullptr;
      open_error_ = rc;
    }
  }
  ~event_cursor() {
    if (cur_ != nullptr)
      mdb_cursor_close(cur_);
  }
  event_cursor(const event_cursor&) = delete;
  event_cursor& operator=(const event_cursor&) = delete;

  caf::error read(uint64_t position, recorded_event& into) {
    if (cur_ == nullptr)
      return mdb_error(open_error_, "open cursor");
    MDB_val k, v;
    int rc = MDB_NOTFOUND;
    if (at_ != 0 && position == at_ + 1) {
      rc = safe::cursor_get(cur_, &k, &v, MDB_NEXT);
      if (rc == 0 && (k.mv_size != 8 || get_be64(static_cast<const uint8_t*>(k.mv_data)) != position))
        rc = MDB_NOTFOUND; // a gap: search for it
    }
    if (rc != 0) {
      u64_key key{position};
      k = key.val();
      rc = safe::cursor_get(cur_, &k, &v, MDB_SET_KEY);
    }
    if (rc == MDB_NOTFOUND) {
      at_ = 0;
      return make_error(store_errc::corrupt_store, "stream points at missing event " + std::to_string(position));
    }
    if (rc != 0) {
      at_ = 0;
      return mdb_error(rc, "read event");
    }
    at_ = position;
    return detail::decode_record_into(into, static_cast<const uint8_t*>(v.mv_data), v.mv_size, position);
  }

private:
  MDB_cursor* cur_ = nullptr;
  int open_error_ = 0;
  uint64_t at_ = 0; // the position the cursor stands on, 0 if unknown
};

} // namespace


caf::error lmdb_store::do_read_stream(std::string_view stream, uint64_t from, size_t max_count,
                                      read_direction direction, std::vector<recorded_event>& out) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  detail::event_sink sink{out};
  auto s = impl_->get_stream(r->txn, stream);
  if (!s)
    return s.error();
  if (!*s) {
    sink.finish();
    return {};
  }
  if ((*s)->deleted)
    return make_error(store_errc::stream_deleted, "stream '" + std::string{stream} + "' is deleted");
  const auto& rec = **s;
  // The versions wanted: [lo, hi], returned ascending or descending.
  uint64_t lo, hi;
  if (direction == read_direction::forward) {
    lo = std::max<uint64_t>(from, 1);
    if (lo > rec.version) {
      sink.finish();
      return {};
    }
    hi = std::min<uint64_t>(rec.version, lo + max_count - 1);
  } else {
    hi = std::min<uint64_t>(from, rec.version);
    if (hi == 0) {
      sink.finish();
      return {};
    }
    lo = hi >= max_count ? hi - max_count + 1 : 1;
  }
  // Versions up to indexed_version come from the index...
  uint64_t indexed_hi = std::min(hi, rec.indexed_version);
  if (lo <= indexed_hi) {
    MDB_cursor* cur = nullptr;
    if (int rc = mdb_cursor_open(r->txn, impl_->stream_index, &cur); rc != 0)
      return mdb_error(rc, "open cursor");
    event_cursor events{r->txn, impl_->events};
    index_key key{rec.number, lo};
    MDB_val k = key.val(), v;
    int rc = safe::cursor_get(cur, &k, &v, MDB_SET_KEY);
    caf::error err;
    for (uint64_t version = lo; version <= indexed_hi; ++version) {
      if (rc != 0 || k.mv_size != 16 || v.mv_size != 8
          || get_be64(static_cast<const uint8_t*>(k.mv_data)) != rec.number
          || get_be64(static_cast<const uint8_t*>(k.mv_data) + 8) != version) {
        err = rc != 0 && rc != MDB_NOTFOUND
                ? mdb_error(rc, "read stream index")
                : make_error(store_errc::corrupt_store,
                             "stream index of '" + std::string{stream} + "' lacks version " + std::to_string(version));
        break;
      }
      err = events.read(get_be64(static_cast<const uint8_t*>(v.mv_data)), sink.next());
      if (err)
        break;
      if (version < indexed_hi)
        rc = safe::cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (err)
      return err;
  }
  // ...the newer ones by following the links back from the stream's end.
  if (hi > rec.indexed_version) {
    auto tail = impl_->walk_tail(r->txn, stream, rec, std::max(lo, rec.indexed_version + 1));
    if (!tail)
      return tail.error();
    size_t skip = rec.version - hi; // newer than wanted
    for (auto i = tail->rbegin(); i != tail->rend() - static_cast<std::ptrdiff_t>(skip); ++i)
      sink.next() = std::move(*i);
  }
  sink.finish();
  if (direction == read_direction::backward)
    std::reverse(out.begin(), out.end());
  return {};
}

caf::error lmdb_store::do_read_all(uint64_t from, size_t max_count, read_direction direction,
                                   std::vector<recorded_event>& out) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  detail::event_sink sink{out};
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(r->txn, impl_->events, &cur); rc != 0)
    return mdb_error(rc, "open cursor");
  MDB_val k, v;
  int rc;
  u64_key key{std::max<uint64_t>(from, 1)};
  if (direction == read_direction::forward) {
    k = key.val();
    rc = safe::cursor_get(cur, &k, &v, MDB_SET_RANGE);
  } else {
    k = key.val();
    rc = safe::cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND)
      rc = safe::cursor_get(cur, &k, &v, MDB_LAST);
    else if (rc == 0 && get_be64(static_cast<const uint8_t*>(k.mv_data)) > from)
      rc = safe::cursor_get(cur, &k, &v, MDB_PREV);
    if (from == 0)
      rc = MDB_NOTFOUND;
  }
  const MDB_cursor_op step = direction == read_direction::forward ? MDB_NEXT : MDB_PREV;
  caf::error err;
  while (rc == 0 && sink.size() < max_count) {
    if (k.mv_size != 8) {
      err = make_error(store_errc::corrupt_store, "event key of the wrong size");
      break;
    }
    auto pos = get_be64(static_cast<const uint8_t*>(k.mv_data));
    err = detail::decode_record_into(sink.next(), static_cast<const uint8_t*>(v.mv_data), v.mv_size, pos);
    if (err)
      break;
    rc = safe::cursor_get(cur, &k, &v, step);
  }
  mdb_cursor_close(cur);
  if (err)
    return err;
  if (rc != 0 && rc != MDB_NOTFOUND)
    return mdb_error(rc, "read $all");
  sink.finish();
  return {};
}

caf::expected<stream_info> lmdb_store::do_stream_info(std::string_view stream) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  auto s = impl_->get_stream(r->txn, stream);
  if (!s)
    return s.error();
  persistence::stream_info info;
  info.stream_id = std::string{stream};
  if (*s) {
    info.exists = true;
    info.version = (*s)->version;
    info.deleted = (*s)->deleted;
    info.created_at = (*s)->created_at;
    info.updated_at = (*s)->updated_at;
  }
  return info;
}

caf::expected<std::optional<snapshot>> lmdb_store::do_load_snapshot(std::string_view stream) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  MDB_val k = str_val(stream), v;
  int rc = safe::get(r->txn, impl_->snapshots, &k, &v);
  if (rc == MDB_NOTFOUND)
    return std::optional<snapshot>{};
  if (rc != 0)
    return mdb_error(rc, "read snapshot");
  auto snap = detail::decode_snapshot(static_cast<const uint8_t*>(v.mv_data), v.mv_size, stream);
  if (!snap)
    return snap.error();
  return std::optional<snapshot>{std::move(*snap)};
}

caf::expected<std::optional<uint64_t>> lmdb_store::do_load_checkpoint(std::string_view name) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  MDB_val k = str_val(name), v;
  int rc = safe::get(r->txn, impl_->checkpoints, &k, &v);
  if (rc == MDB_NOTFOUND)
    return std::optional<uint64_t>{};
  if (rc != 0)
    return mdb_error(rc, "read checkpoint");
  if (v.mv_size != 8)
    return make_error(store_errc::corrupt_store, "checkpoint '" + std::string{name} + "' has a wrong size");
  return std::optional<uint64_t>{get_be64(static_cast<const uint8_t*>(v.mv_data))};
}

// -- listing -------------------------------------------------------------------------

namespace {

/// Up to `max_count` entries of `dbi` with keys after `after`, each handed to
/// `take(key, value)`, which returns an error to stop.
template <class Take>
caf::error scan_after(MDB_txn* txn, MDB_dbi dbi, std::string_view after, size_t max_count, Take take) {
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(txn, dbi, &cur); rc != 0)
    return mdb_error(rc, "open cursor");
  MDB_val k = str_val(after), v;
  int rc = after.empty() ? safe::cursor_get(cur, &k, &v, MDB_FIRST) : safe::cursor_get(cur, &k, &v, MDB_SET_RANGE);
  if (rc == 0 && !after.empty() && std::string_view{static_cast<const char*>(k.mv_data), k.mv_size} == after)
    rc = safe::cursor_get(cur, &k, &v, MDB_NEXT);
  caf::error err;
  for (size_t n = 0; rc == 0 && n < max_count && !err; ++n) {
    err = take(std::string_view{static_cast<const char*>(k.mv_data), k.mv_size}, v);
    if (!err)
      rc = safe::cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  if (err)
    return err;
  if (rc != 0 && rc != MDB_NOTFOUND)
    return mdb_error(rc, "list");
  return {};
}

} // namespace

caf::error lmdb_store::do_list_streams(std::string_view after, size_t max_count,
                                       std::vector<persistence::stream_info>& out) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  out.clear();
  return scan_after(r->txn, impl_->streams, after, max_count, [&](std::string_view id, const MDB_val& v) -> caf::error {
    auto rec = stream_rec::decode(v);
    if (!rec)
      return make_error(store_errc::corrupt_store, "stream record of '" + std::string{id} + "' has a wrong size");
    out.push_back({std::string{id}, rec->version, true, rec->deleted, rec->created_at, rec->updated_at});
    return {};
  });
}

caf::error lmdb_store::do_list_snapshots(std::string_view after, size_t max_count, std::vector<snapshot>& out) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  out.clear();
  return scan_after(r->txn, impl_->snapshots, after, max_count, [&](std::string_view id, const MDB_val& v) -> caf::error {
    auto snap = detail::decode_snapshot(static_cast<const uint8_t*>(v.mv_data), v.mv_size, id);
    if (!snap)
      return snap.error();
    out.push_back(std::move(*snap));
    return {};
  });
}

caf::expected<std::vector<std::pair<std::string, uint64_t>>> lmdb_store::do_list_checkpoints() const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  std::vector<std::pair<std::string, uint64_t>> out;
  auto err = scan_after(r->txn, impl_->checkpoints, "", SIZE_MAX, [&](std::string_view name, const MDB_val& v) -> caf::error {
    if (v.mv_size != 8)
      return make_error(store_errc::corrupt_store, "checkpoint '" + std::string{name} + "' has a wrong size");
    out.emplace_back(std::string{name}, get_be64(static_cast<const uint8_t*>(v.mv_data)));
    return {};
  });
  if (err)
    return err;
  return out;
}

caf::error lmdb_store::with_view(const std::function<caf::error(const detail::lmdb_view&)>& f) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  detail::lmdb_view view{r->txn, impl_->env, impl_->events, impl_->stream_index, impl_->streams,
                         impl_->snapshots, impl_->checkpoints, impl_->meta};
  return f(view);
}

} // namespace sourcery::persistence
