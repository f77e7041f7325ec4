#include "sourcery/persistence/faulty_store.hpp"

#include <atomic>

#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence {

faulty_store::faulty_store(std::shared_ptr<event_store> inner)
  : inner_(std::move(inner)), delayer_([this] { run_delays(); }) {}

faulty_store::~faulty_store() {
  std::deque<pending> left;
  {
    std::lock_guard guard{mtx_};
    stopping_ = true;
    left.swap(waiting_);
  }
  cv_.notify_all();
  delayer_.join();
  for (auto& p : left)
    p.done(make_error(store_errc::store_closed, "the store closed before it answered"));
  close_base();
}

void faulty_store::fail_appends(uint32_t n, caf::error err) {
  std::lock_guard guard{mtx_};
  appends_left_ = n;
  append_error_ = std::move(err);
}

void faulty_store::fail_reads(uint32_t n, caf::error err) {
  std::lock_guard guard{mtx_};
  reads_left_ = n;
  read_error_ = std::move(err);
}

void faulty_store::fail_checkpoints(uint32_t n, caf::error err) {
  std::lock_guard guard{mtx_};
  checkpoints_left_ = n;
  checkpoint_error_ = std::move(err);
}

void faulty_store::delay_commits(std::chrono::milliseconds delay) {
  std::lock_guard guard{mtx_};
  delay_ = delay;
}

void faulty_store::stop_answering() {
  std::lock_guard guard{mtx_};
  held_ = true;
}

void faulty_store::resume() {
  {
    std::lock_guard guard{mtx_};
    held_ = false;
    for (auto& p : waiting_)
      p.due = std::chrono::steady_clock::now();
  }
  cv_.notify_all();
}

uint64_t faulty_store::appends_answered() const {
  return answered_->load();
}

caf::error faulty_store::take(uint32_t& left, const caf::error& err) const {
  std::lock_guard guard{mtx_};
  if (left == 0)
    return {};
  --left;
  return err;
}

uint64_t faulty_store::head_position() const {
  return inner_->head_position();
}

void faulty_store::refresh_head() const {
  inner_->refresh_head();
}

void faulty_store::do_append(std::string stream, expected_version expected, std::vector<event_data> events,
                             append_callback done) {
  if (auto err = take(appends_left_, append_error_)) {
    ++*answered_;
    return done(std::move(err));
  }
  pending p{std::move(stream), expected, std::move(events), std::move(done), {}};
  {
    std::lock_guard guard{mtx_};
    if (held_ || delay_.count() > 0 || !waiting_.empty()) { // in order behind those waiting
      p.due = held_ ? std::chrono::steady_clock::time_point::max() : std::chrono::steady_clock::now() + delay_;
      waiting_.push_back(std::move(p));
      cv_.notify_all();
      return;
    }
  }
  forward(std::move(p));
}

void faulty_store::forward(pending p) {
  inner_->do_append(std::move(p.stream), p.expected, std::move(p.events),
                    [this, done = std::move(p.done), answered = answered_](caf::expected<append_result> r) {
                      if (r)
                        notify_appended();
                      ++*answered;
                      done(std::move(r));
                    });
}

void faulty_store::run_delays() {
  std::unique_lock guard{mtx_};
  while (!stopping_) {
    if (waiting_.empty() || held_) {
      cv_.wait(guard);
      continue;
    }
    auto due = waiting_.front().due;
    if (std::chrono::steady_clock::now() < due) {
      cv_.wait_until(guard, due);
      continue;
    }
    auto p = std::move(waiting_.front());
    waiting_.pop_front();
    guard.unlock();
    forward(std::move(p));
    guard.lock();
  }
}

caf::expected<void> faulty_store::do_delete_stream(std::string_view stream, expected_version expected) {
  if (auto err = take(appends_left_, append_error_))
    return err;
  return inner_->do_delete_stream(stream, expected);
}

caf::error faulty_store::do_read_stream(std::string_view stream, uint64_t from, size_t max_count,
                                        read_direction direction, std::vector<recorded_event>& out) const {
  if (auto err = take(reads_left_, read_error_))
    return err;
  return inner_->do_read_stream(stream, from, max_count, direction, out);
}

caf::error faulty_store::do_read_all(uint64_t from, size_t max_count, read_direction direction,
                                     std::vector<recorded_event>& out) const {
  if (auto err = take(reads_left_, read_error_))
    return err;
  return inner_->do_read_all(from, max_count, direction, out);
}

caf::expected<persistence::stream_info> faulty_store::do_stream_info(std::string_view stream) const {
  return inner_->do_stream_info(stream);
}

caf::expected<void> faulty_store::do_save_snapshot(snapshot snap) {
  if (auto err = take(checkpoints_left_, checkpoint_error_))
    return err;
  return inner_->do_save_snapshot(std::move(snap));
}

void faulty_store::do_save_snapshot_async(snapshot snap, std::function<void(caf::expected<void>)> done) {
  if (auto err = take(checkpoints_left_, checkpoint_error_))
    return done(err);
  inner_->do_save_snapshot_async(std::move(snap), std::move(done));
}

caf::expected<std::optional<snapshot>> faulty_store::do_load_snapshot(std::string_view stream) const {
  return inner_->do_load_snapshot(stream);
}

caf::expected<void> faulty_store::do_delete_snapshot(std::string_view stream) {
  return inner_->do_delete_snapshot(stream);
}

caf::expected<void> faulty_store::do_save_checkpoint(std::string_view name, uint64_t position) {
  if (auto err = take(checkpoints_left_, checkpoint_error_))
    return err;
  return inner_->do_save_checkpoint(name, position);
}

caf::expected<std::optional<uint64_t>> faulty_store::do_load_checkpoint(std::string_view name) const {
  return inner_->do_load_checkpoint(name);
}

caf::error faulty_store::do_list_streams(std::string_view after, size_t max_count,
                                         std::vector<persistence::stream_info>& out) const {
  return inner_->do_list_streams(after, max_count, out);
}

caf::error faulty_store::do_list_snapshots(std::string_view after, size_t max_count,
                                           std::vector<snapshot>& out) const {
  return inner_->do_list_snapshots(after, max_count, out);
}

caf::expected<std::vector<std::pair<std::string, uint64_t>>> faulty_store::do_list_checkpoints() const {
  return inner_->do_list_checkpoints();
}

bool faulty_store::keeps_personal_data() const noexcept {
  return inner_->keeps_personal_data();
}

caf::error faulty_store::do_load_key_records(const std::vector<std::string>& subjects,
                                             std::vector<std::pair<std::string, bytes>>& found) const {
  return inner_->do_load_key_records(subjects, found);
}

caf::expected<bool> faulty_store::do_forget(std::string_view subject) {
  return inner_->do_forget(subject);
}

} // namespace sourcery::persistence
