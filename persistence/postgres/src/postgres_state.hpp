#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <variant>

#include "pg_connection.hpp"
#include "pg_pool.hpp"
#include "pg_schema.hpp"
#include "key_cache.hpp"
#include "personal_data.hpp"
#include "sourcery/persistence/postgres_store.hpp"

namespace sourcery::persistence::detail {

inline int64_t now_micros() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

/// "stream 'ID'", for messages.
inline std::string stream_text(std::string_view stream) {
  return "stream '" + std::string{stream} + "'";
}

/// An append waiting for the writer.
struct pg_append {
  std::string stream;
  expected_version expected;
  std::vector<event_data> events;
  event_store::append_callback done;
  pg::deadline until;
  /// A batch statement carrying it was sent and its answer lost: the
  /// events may be stored. The next attempt's event-id check tells.
  bool outcome_unknown = false;
  /// Personal data: the data of each event with plaintext personal fields
  /// (empty for the others), once looked at: every attempt seals it anew,
  /// with the keys its statement then commits. `failed` when sealing failed;
  /// the append is answered so.
  bool looked_at_personal = false;
  std::vector<bytes> unsealed = {};
  caf::error failed = {};
};

/// Any other write the writer runs in its own transaction (snapshots,
/// deletes), in queue order with the appends.
struct pg_task {
  std::function<caf::error(pg::connection&, pg::deadline)> run;
  std::function<void(caf::error)> done;
  pg::deadline until;
};

/// The state of a `postgres_store`, grouped by who may touch it (as
/// LevelDB's db_impl.h does).
struct postgres_state {
  // -- constant after construction --------------------------------------------
  postgres_options options;
  postgres_store* owner = nullptr;
  std::string schema;  ///< quoted, for SQL text
  std::string channel; ///< the NOTIFY channel: "<schema>.events"
  std::string forget_channel; ///< where forgotten subjects are announced (hex): "<schema>.forget"
  bool has_subject_keys = false; ///< the personal_data tables exist (a read-only open may find none)
  /// `tmpl` with every "@." replaced by the quoted schema and a dot.
  std::string sql(std::string_view tmpl) const;
  pg::deadline op_deadline() const { return pg::clock::now() + options.operation_timeout; }
  /// Session settings of every connection we open; `role` ("writer",
  /// "listener", "reader") goes into its application_name as
  /// "sourcery <role> <schema>", so operators (and fault tests) can tell
  /// the connections apart in pg_stat_activity.
  caf::error setup(pg::connection& c, pg::deadline until, std::string_view role) const;

  // -- any thread --------------------------------------------------------------
  std::atomic<uint64_t> head{0};
  /// Steady-clock nanoseconds of the last head read by `refresh_head`.
  mutable std::atomic<int64_t> last_refresh{0};
  std::atomic<uint64_t> commits{0}, appends{0}, retries{0}, reconnects{0}, notifications{0};
  /// Raises `head` to `pos` (never lowers it); true if it rose.
  bool raise_head(uint64_t pos);
  /// Wakes every waiter on the head (event_store::notify_appended).
  void owner_notify() const;
  std::unique_ptr<pg::pool> readers;
  /// What the listener knows of the server, for `health`: when its probe
  /// in flight (a connect or a head read) began, in steady-clock
  /// nanoseconds (0: none), and why the last one failed (none once one
  /// succeeds; guarded by health_mtx).
  std::atomic<int64_t> probe_since{0};
  mutable std::mutex health_mtx;
  caf::error unreachable;
  void probe_started();
  void probe_ended(caf::error outcome);
  /// Runs statement `tmpl` (see `sql`) on a pooled connection.
  caf::expected<pg::result> read(std::string_view tmpl, const pg::params& p) const;

  // -- guarded by queue_mtx ----------------------------------------------------
  std::mutex queue_mtx;
  std::shared_ptr<const append_fence> fence; ///< read by the writer once per batch
  std::condition_variable queue_cv;
  std::deque<std::variant<pg_append, pg_task>> queue;
  bool stopping = false;
  /// Queues `run` for the writer (in order with the appends, in a
  /// transaction of its own) and waits for its outcome.
  caf::error on_writer(std::function<caf::error(pg::connection&, pg::deadline)> run);

  // -- writer thread only --------------------------------------------------------
  pg::connection writer_conn;
  /// Stream rows as this writer last read or wrote them: a batch is decided
  /// on them, and its statement checks each is still so (a stale one costs
  /// a retry, never a wrong write).
  struct known_stream {
    uint64_t version = 0;
    bool deleted = false;
  };
  std::unordered_map<std::string, known_stream> known_streams;
  static constexpr size_t max_known_streams = 200'000;
  std::thread writer;
  void run_writer();
  void write_appends(std::vector<pg_append>& batch);
  // Personal data (pg_subject_keys.cpp): the stored keys of `subjects`,
  // created for those without one, committed by the statement itself.
  caf::expected<std::unordered_map<std::string, subject_key>>
  keys_for(pg::connection& c, const std::set<std::string>& subjects, pg::deadline until) const;
  /// The stored keys of `subjects` (absent ones left out).
  caf::expected<std::unordered_map<std::string, subject_key>>
  stored_keys(pg::connection& c, const std::set<std::string>& subjects, pg::deadline until) const;
  /// Seals the personal fields of the batch's appends with their subjects'
  /// keys: known, stored, or new ones, which go to `fresh` (subject, record)
  /// and `created` for the batch's statement to insert with the events.
  caf::error seal_appends(pg::connection& c, std::vector<pg_append>& batch, pg::deadline until,
                          std::vector<std::pair<std::string, bytes>>& fresh,
                          std::unordered_map<std::string, subject_key>& created);
  caf::error seal_snapshot(pg::connection& c, snapshot& snap, pg::deadline until) const;
  void run_task(pg_task& task);
  /// (Re)connects the writer before `until`, backing off between attempts.
  caf::error ensure_writer(pg::deadline until);

  // -- listener thread only ------------------------------------------------------
  std::thread listener;
  int wake_fd = -1; ///< an eventfd that ends the listener's poll at stop
  std::atomic<bool> listener_stop{false};
  void run_listener();
};

} // namespace sourcery::persistence::detail
