#pragma once

// A fault-injecting decorator of any event store, for tests of the layers
// above (LevelDB's EnvWrapper / fault_injection_test): it forwards every call
// to the store it wraps, except the faults a test asks for — fail the next N
// appends, reads or checkpoint writes with a chosen error, delay commits, or
// stop answering appends until resumed. Thread-safe, like every store.
//
//     auto inner = std::make_shared<memory_store>();
//     auto store = std::make_shared<faulty_store>(inner);
//     store->fail_appends(2, make_error(store_errc::store_full, "disk full"));

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "sourcery/persistence/event_store.hpp"

namespace sourcery::persistence {

class faulty_store final : public event_store {
public:
  explicit faulty_store(std::shared_ptr<event_store> inner);
  /// Answers appends still held (`stop_answering`) with store_closed.
  ~faulty_store() override;

  // -- faults -----------------------------------------------------------------

  /// The next `n` appends fail with `err` (nothing is written).
  void fail_appends(uint32_t n, caf::error err);
  /// The next `n` reads (of a stream or of `$all`) fail with `err`.
  void fail_reads(uint32_t n, caf::error err);
  /// The next `n` checkpoint and snapshot writes fail with `err`.
  void fail_checkpoints(uint32_t n, caf::error err);
  /// Every append is answered this long after its commit (0: at once).
  void delay_commits(std::chrono::milliseconds delay);
  /// Appends are taken but neither written nor answered until `resume`: a
  /// store that hangs. `resume` writes and answers them, in order.
  void stop_answering();
  void resume();

  /// Appends answered so far (with success or an injected error).
  uint64_t appends_answered() const;

  uint64_t head_position() const override;

protected:
  void do_append(std::string stream, expected_version expected, std::vector<event_data> events,
                 append_callback done) override;
  caf::expected<void> do_delete_stream(std::string_view stream, expected_version expected) override;
  caf::error do_read_stream(std::string_view stream, uint64_t from, size_t max_count, read_direction direction,
                            std::vector<recorded_event>& out) const override;
  caf::error do_read_all(uint64_t from, size_t max_count, read_direction direction,
                         std::vector<recorded_event>& out) const override;
  caf::expected<persistence::stream_info> do_stream_info(std::string_view stream) const override;
  caf::expected<void> do_save_snapshot(snapshot snap) override;
  void do_save_snapshot_async(snapshot snap, std::function<void(caf::expected<void>)> done) override;
  caf::expected<std::optional<snapshot>> do_load_snapshot(std::string_view stream) const override;
  caf::expected<void> do_delete_snapshot(std::string_view stream) override;
  caf::expected<void> do_save_checkpoint(std::string_view name, uint64_t position) override;
  caf::expected<std::optional<uint64_t>> do_load_checkpoint(std::string_view name) const override;
  caf::error do_list_streams(std::string_view after, size_t max_count,
                             std::vector<persistence::stream_info>& out) const override;
  caf::error do_list_snapshots(std::string_view after, size_t max_count, std::vector<snapshot>& out) const override;
  caf::expected<std::vector<std::pair<std::string, uint64_t>>> do_list_checkpoints() const override;
  void refresh_head() const override;
  bool keeps_personal_data() const noexcept override;
  caf::error do_load_key_records(const std::vector<std::string>& subjects,
                                 std::vector<std::pair<std::string, bytes>>& found) const override;
  caf::expected<bool> do_forget(std::string_view subject) override;

private:
  struct pending {
    std::string stream;
    expected_version expected;
    std::vector<event_data> events;
    append_callback done;
    std::chrono::steady_clock::time_point due;
  };
  /// An injected error to return, if one is due (`left` counts down).
  caf::error take(uint32_t& left, const caf::error& err) const;
  void forward(pending p);
  void run_delays();

  std::shared_ptr<event_store> inner_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  mutable uint32_t appends_left_ = 0, reads_left_ = 0, checkpoints_left_ = 0;
  caf::error append_error_, read_error_, checkpoint_error_;
  std::chrono::milliseconds delay_{0};
  bool held_ = false;
  bool stopping_ = false;
  std::deque<pending> waiting_; // held, or delayed until `due`
  std::shared_ptr<std::atomic<uint64_t>> answered_ = std::make_shared<std::atomic<uint64_t>>(0);
  std::thread delayer_;
};

} // namespace sourcery::persistence
