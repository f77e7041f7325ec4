#pragma once

// The state of an lmdb_store and the names its sources share, in one place,
// grouped by who may touch what (as LevelDB's db_impl.h does). The store's
// code is split by concern: opening and the public calls (lmdb_store.cpp),
// the group-commit writer (lmdb_writer.cpp), the lazy stream index
// (lmdb_stream_index.cpp), reads and listings (lmdb_reads.cpp); the on-disk
// layout is lmdb_layout.hpp.

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
#include "key_cache.hpp"
#include "personal_data.hpp"
#include "record_codec.hpp"

namespace sourcery::persistence {

namespace fs = std::filesystem;
namespace safe = detail::safe;
using detail::get_be64;
using detail::index_key;
using detail::mdb_error;
using detail::put_be64;
using detail::str_val;
using detail::stream_rec;
using detail::u64_key;

namespace detail {

inline int64_t now_micros() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

// -- queued writes --------------------------------------------------------------

struct write_op {
  enum class kind : uint8_t { append, delete_stream, save_snapshot, delete_snapshot, save_checkpoint, forget };
  kind what = kind::append;
  std::string key; // stream id, checkpoint name or forgotten subject
  expected_version expected = expected_version::any();
  std::vector<bytes> bodies; // encoded by the caller: detail::encode_record_body
  // Events with personal fields to seal: the writer seals and encodes them
  // (into `bodies`) inside the transaction that creates their keys.
  std::vector<event_data> to_seal;
  bytes plain_snapshot; // a snapshot's data before sealing, kept for the same reason
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

} // namespace detail

using detail::now_micros;
using detail::op_outcome;
using detail::write_op;

struct lmdb_store::impl {
  using write_op = detail::write_op;
  using op_outcome = detail::op_outcome;
  using read_txn = detail::read_txn;

  /// Positions of a stream's committed events not yet in the stream index,
  /// for versions `first_version` onwards. The writer's own memory: after a
  /// restart, or for events another process appended, `index_stream` walks
  /// the records' links instead.
  struct pending_index {
    uint64_t first_version = 0;
    std::vector<uint64_t> positions;
  };

  /// One write transaction of the writer.
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
    // Personal data: keys created, subjects forgotten, and where the
    // forgotten keys lie in the file (offset, size), to zero once committed.
    std::unordered_map<std::string, detail::subject_key> new_keys;
    std::unordered_set<std::string> forgotten;
    std::vector<std::pair<size_t, size_t>> scrub;
  };

  /// Streams are indexed once this many of their events are pending.
  static constexpr size_t index_chunk = 32;
  /// Streams of `pending` one transaction indexes while draining: a few ms
  /// (indexing a stream costs ~5 µs). All at once, 100k streams created in
  /// the last 2 s stalled one commit, and every caller in it, for 450 ms.
  static constexpr size_t index_budget = 512;

  // -- constant after construction ----------------------------------------------
  lmdb_options options;
  detail::path_claim claim; // this directory, for this process; released once the environment is closed
  MDB_env* env = nullptr;
  MDB_dbi events = 0, stream_index = 0, streams = 0, snapshots = 0, checkpoints = 0, meta = 0;
  // Subject keys (personal data), one record per subject padded to fill an
  // overflow page of its own: LMDB never copies such a page, so a forgotten
  // key is on one known page, which the writer zeroes. Absent from a store
  // opened read-only that never had personal data.
  MDB_dbi subject_keys = 0;
  bool has_subject_keys = false;
  size_t key_record_size = 0;
  lmdb_store* owner = nullptr;
  std::thread writer; // started by open, joined by the destructor

  // -- any thread ---------------------------------------------------------------
  // Readers hold it shared during a transaction; growing the map takes it
  // exclusively (LMDB requires no live transaction in this process then).
  mutable std::shared_mutex resize_mtx;
  std::atomic<uint64_t> head{0};
  std::atomic<uint64_t> commits{0}, operations{0}, resizes{0}, index_transactions{0};
  std::atomic<size_t> map_size{0};

  // -- guarded by queue_mtx -------------------------------------------------------
  std::mutex queue_mtx;
  std::condition_variable queue_cv;
  std::deque<write_op> queue;
  size_t wake_at = 1; // queue length at which an enqueue wakes the writer
  bool stopping = false;

  // -- writer thread only -----------------------------------------------------------
  // Draining: every transaction also indexes up to `index_budget` streams
  // of `pending`, until it is empty.
  bool draining = false;
  size_t last_batch_size = 0;
  std::unordered_map<std::string, pending_index> pending;
  size_t pending_total = 0;
  std::chrono::steady_clock::time_point last_full_index = std::chrono::steady_clock::now();
  // Set when a write transaction faulted on a damaged page (see lmdb_guard):
  // it is left open, the writer refuses everything after it, and the
  // environment is kept, never closed (closing could free LMDB's garbage).
  // Read by the destructor once the writer has ended.
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

  // -- reads (lmdb_reads.cpp) ----------------------------------------------------------
  caf::expected<read_txn> begin_read() const;
  caf::expected<std::optional<stream_rec>> get_stream(MDB_txn* txn, std::string_view stream) const;
  caf::error get_event(MDB_txn* txn, uint64_t position, recorded_event& into, uint64_t* prev = nullptr) const;
  /// The stream's events from its newest back to version `low` (which must
  /// be past `rec.indexed_version`), following the records' links; newest
  /// first. Checks that every link lands on the expected stream and version.
  caf::expected<std::vector<recorded_event>> walk_tail(MDB_txn* txn, std::string_view stream,
                                                       const stream_rec& rec, uint64_t low) const;
  uint64_t last_position(MDB_txn* txn, int& rc) const;

  // -- the writer (lmdb_writer.cpp) -------------------------------------------------------
  void enqueue(write_op op);
  void writer_loop();
  /// Takes up to `max` queued operations into `batch`.
  size_t take(std::vector<write_op>& batch, size_t max);
  /// Group commit. Opens a write transaction and applies what is queued;
  /// while the last commit ran, its callers could not queue their next
  /// operation, so keep applying what they queue until about as many as last
  /// time have arrived (or 300 µs passed) — one commit then carries them all
  /// instead of two half-full ones, and their arrival overlaps with applying.
  /// (Waiting for every last one, as long as they keep coming, makes bigger
  /// groups but slower dispatch: measured, W1 durable -25%.)
  /// Commits on success (0); otherwise aborts and returns the LMDB code, with
  /// `batch` holding every operation taken.
  int collect_and_apply(std::vector<write_op>& batch, std::vector<caf::expected<append_result>>& results);
  /// Ends a write transaction that failed; one that faulted is abandoned.
  void end_failed(batch_ctx& ctx);
  static caf::error damaged_error();
  /// Answers operations the writer will not apply.
  static void refuse(std::vector<write_op>& ops, size_t begin, const caf::error& err);
  /// Applies `batch` in as few transactions as it takes: a full map is
  /// grown, a transaction with too many dirty pages is split.
  void process(std::vector<write_op>& batch);
  /// Answers batch[begin, end) after their commit.
  void finish(std::vector<write_op>& batch, size_t begin, size_t end,
              std::vector<caf::expected<append_result>>& results);
  /// Begins the write transaction of `ctx`, adopting a map another process
  /// grew, and reads the log's end and the stream counter inside it: another
  /// process may have written since our last commit.
  int begin_write(batch_ctx& ctx, std::shared_lock<std::shared_mutex>& lock);
  /// Writes the stream index and records, and commits. On success the
  /// transaction is gone; on failure the caller aborts it.
  int commit(batch_ctx& ctx);
  /// Applies batch[begin, end) in one write transaction and commits.
  /// Returns 0 on commit (results filled) or the LMDB code that aborted it.
  int run_transaction(std::vector<write_op>& batch, size_t begin, size_t end,
                      std::vector<caf::expected<append_result>>& results);
  int read_stream_counter(batch_ctx& ctx);
  /// Finds a stream's record, through the batch's cache.
  op_outcome load_stream(batch_ctx& ctx, const std::string& stream, stream_rec*& out);
  op_outcome apply(batch_ctx& ctx, write_op& op);
  op_outcome append_events(batch_ctx& ctx, write_op& op, stream_rec& s);
  // -- personal data (lmdb_subject_keys.cpp) ---------------------------------------------
  /// The key of `subject` in this transaction, created when it has none.
  caf::expected<detail::subject_key> key_in(batch_ctx& ctx, std::string_view subject);
  /// Seals and encodes `op.to_seal` into `op.bodies`, and a snapshot's data.
  op_outcome seal(batch_ctx& ctx, write_op& op);
  op_outcome forget(batch_ctx& ctx, write_op& op);
  /// After a commit: the key cache learns the batch's keys and forgets its
  /// forgotten ones, and the forgotten keys' bytes are zeroed in the file.
  void keys_committed(batch_ctx& ctx);
  int flush_streams(batch_ctx& ctx);
  /// Whether a failed write is best explained by a full disk or a file-size
  /// limit: LMDB reports a short write as EIO, and a write cut short by a
  /// full disk is a short write.
  bool out_of_space() const;
  bool grow_map();

  // -- the stream index (lmdb_stream_index.cpp) ---------------------------------------------
  /// Drains the pending index a budget per transaction, and leaves it to
  /// the next group as soon as appends are waiting.
  void index_idle();
  /// Writes stream-index entries for every stream with `index_chunk` or more
  /// pending events and, when `ctx.drain`, for up to `index_budget` more
  /// streams of `pending`.
  int update_index(batch_ctx& ctx);
  /// Indexes all of one stream's events past its `indexed_version`.
  int index_stream(batch_ctx& ctx, const std::string& id);
  /// After a commit: the batch's unindexed positions join `pending`.
  void remember_pending(batch_ctx& ctx);
};

} // namespace sourcery::persistence
