#include "sourcery/persistence/subscription.hpp"

#include "subscription_state.hpp"

namespace sourcery::persistence {

namespace detail {

namespace {
// How often a waiter looks at storage for commits of other processes.
constexpr auto poll_interval = std::chrono::milliseconds{50};
} // namespace

bool subscription_state::wait_for_position(const event_store& store, uint64_t pos,
                                           std::chrono::steady_clock::time_point deadline,
                                           const std::atomic<bool>& cancel) {
  std::unique_lock lock{store.head_mtx_};
  for (;;) {
    if (store.head_position() >= pos)
      return true;
    if (cancel.load() || store.closed())
      return false;
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline)
      return false;
    store.head_cv_.wait_until(lock, std::min(deadline, now + poll_interval));
    if (store.head_position() < pos) {
      lock.unlock();
      store.refresh_head();
      lock.lock();
    }
  }
}

subscription_state::subscription_state(event_store& store, subscription_options options,
                                       batch_handler handler, uint64_t start)
  : store(store), options(std::move(options)), handler(std::move(handler)) {
  position.store(start);
}

subscription_state::~subscription_state() {
  stop();
}

void subscription_state::start() {
  // The thread keeps the state alive until it ends.
  thread = std::thread{[self = shared_from_this()] { self->run(); }};
}

void subscription_state::stop() {
  stopping.store(true);
  {
    // Wake the thread if it waits for new events, or for a server to heal.
    std::lock_guard guard{store.head_mtx_};
  }
  store.head_cv_.notify_all();
  { std::lock_guard guard{mtx}; }
  cv.notify_all();
  if (thread.joinable() && thread.get_id() != std::this_thread::get_id())
    thread.join();
  else if (thread.joinable())
    thread.detach(); // stop() from inside the handler: the thread ends by itself
  finish({});
}

void subscription_state::finish(caf::error err) {
  std::lock_guard guard{mtx};
  if (err && !failure)
    failure = std::move(err);
  active.store(false);
  cv.notify_all();
}

namespace {

// A database server that is restarting or out of reach heals: the
// subscription waits and reads again instead of ending.
bool transient(const caf::error& err) {
  auto code = code_of(err);
  return code == store_errc::unavailable || code == store_errc::timeout;
}

} // namespace

void subscription_state::run() {
  const bool persistent = !options.name.empty();
  uint64_t pos = position.load();
  auto backoff = std::chrono::milliseconds{50};
  auto pause = [&] {
    std::unique_lock lock{mtx};
    cv.wait_for(lock, backoff, [&] { return stopping.load(); });
    backoff = std::min(backoff * 2, std::chrono::milliseconds{2000});
  };
  while (!stopping.load()) {
    auto batch = store.read_all(pos + 1, options.batch_size);
    if (!batch) {
      if (transient(batch.error()) && !store.closed()) {
        pause();
        continue;
      }
      if (!stopping.load() && !store.closed())
        finish(batch.error());
      return;
    }
    backoff = std::chrono::milliseconds{50};
    if (batch->empty()) {
      wait_for_position(store, pos + 1, std::chrono::steady_clock::now() + std::chrono::seconds{1},
                        stopping);
      continue;
    }
    uint64_t last = batch->back().position;
    if (!options.stream.empty())
      std::erase_if(*batch, [this](const recorded_event& ev) { return ev.stream_id != options.stream; });
    if (!batch->empty()) {
      auto handled = handler(*batch);
      if (!handled) {
        finish(handled.error());
        return;
      }
    }
    if (persistent) {
      auto saved = store.save_checkpoint(options.name, last);
      while (!saved && transient(saved.error()) && !stopping.load() && !store.closed()) {
        pause();
        saved = store.save_checkpoint(options.name, last);
      }
      if (!saved) {
        if (!stopping.load() && !store.closed())
          finish(saved.error());
        return;
      }
    }
    pos = last;
    {
      std::lock_guard guard{mtx};
      position.store(pos);
    }
    cv.notify_all();
  }
}

} // namespace detail

subscription::subscription(std::shared_ptr<detail::subscription_state> state) : state_(std::move(state)) {}

subscription& subscription::operator=(subscription&& other) noexcept {
  if (this != &other) {
    stop();
    state_ = std::move(other.state_);
  }
  return *this;
}

subscription::~subscription() {
  stop();
}

void subscription::stop() {
  if (state_)
    state_->stop();
}

bool subscription::active() const noexcept {
  return state_ && state_->active.load();
}

uint64_t subscription::position() const noexcept {
  return state_ ? state_->position.load() : 0;
}

caf::error subscription::failure() const {
  if (!state_)
    return {};
  std::lock_guard guard{state_->mtx};
  return state_->failure;
}

bool subscription::wait_for(uint64_t pos, std::chrono::milliseconds timeout) const {
  if (!state_)
    return false;
  std::unique_lock lock{state_->mtx};
  return state_->cv.wait_for(lock, timeout, [&] {
    return state_->position.load() >= pos || !state_->active.load();
  }) && state_->position.load() >= pos;
}

} // namespace sourcery::persistence
