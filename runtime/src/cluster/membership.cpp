#include "sourcery/runtime/cluster/membership.hpp"

#include "sourcery/persistence/error.hpp"

namespace sourcery::cluster {

caf::expected<std::unique_ptr<membership>>
membership::start(std::shared_ptr<persistence::postgres_coordination> store, membership_options options) {
  auto incarnation = store->join(options.cluster, options.node);
  if (!incarnation)
    return incarnation.error();
  std::unique_ptr<membership> m{new membership{std::move(store), std::move(options), *incarnation}};
  m->step(); // the first view before anyone asks
  m->thread_ = std::thread{[raw = m.get()] { raw->run(); }};
  return m;
}

membership::membership(std::shared_ptr<persistence::postgres_coordination> store, membership_options options,
                       int64_t incarnation)
  : store_(std::move(store)), options_(std::move(options)), incarnation_(incarnation),
    last_renewal_(std::chrono::steady_clock::now()) {}

membership::~membership() {
  {
    std::lock_guard guard{mtx_};
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

std::vector<std::string> membership::live() const {
  std::lock_guard guard{mtx_};
  return live_;
}

std::vector<std::string> membership::suspected() const {
  std::lock_guard guard{mtx_};
  return suspected_;
}

void membership::wake() {
  {
    std::lock_guard guard{mtx_};
    woken_ = true;
  }
  wake_.notify_all();
}

void membership::pause_renewals(bool paused) {
  paused_ = paused;
}

caf::error membership::leave() {
  {
    std::lock_guard guard{mtx_};
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable())
    thread_.join();
  serving_ = false;
  auto r = store_->leave(options_.cluster, options_.node, incarnation_);
  return r ? caf::error{} : r.error();
}

void membership::run() {
  std::unique_lock guard{mtx_};
  while (!stopping_ && serving_.load()) {
    wake_.wait_for(guard, options_.renew_every, [this] { return stopping_ || woken_; });
    if (stopping_)
      return;
    woken_ = false;
    guard.unlock();
    step();
    guard.lock();
  }
}

void membership::stop_serving(const caf::error& why) {
  if (!serving_.exchange(false))
    return;
  if (options_.on_down)
    options_.on_down(why);
}

void membership::step() {
  // Paused (a test's stand-in for a process stopped or cut off from the
  // store): the renewal does not reach the store.
  auto renewed = paused_.load() ? caf::expected<bool>{persistence::make_error(persistence::store_errc::unavailable,
                                                                               "renewals paused")}
                                : store_->renew(options_.cluster, options_.node, incarnation_);
  auto now = std::chrono::steady_clock::now();
  if (renewed && !*renewed)
    return stop_serving(persistence::make_error(persistence::store_errc::invalid_argument,
                                                options_.node + " was declared down (or restarted elsewhere)"));
  if (renewed) {
    last_renewal_ = now;
  } else if (now - last_renewal_ >= options_.down_after) {
    // The others may have declared us down meanwhile: stop before they act on it.
    return stop_serving(persistence::make_error(persistence::code_of(renewed.error()),
                                                options_.node + " could not renew for "
                                                  + std::to_string(options_.down_after.count())
                                                  + " ms: " + persistence::describe(renewed.error())));
  }
  if (!renewed)
    return; // the store is out of reach: nobody is declared down from here
  if (auto down = store_->declare_down(options_.cluster, options_.down_after);
      down && !down->empty() && options_.on_declared_down)
    options_.on_declared_down(*down);
  auto members = store_->members(options_.cluster);
  if (!members)
    return;
  std::vector<std::string> live, suspected;
  for (auto& m : *members)
    if (m.state == "up") {
      live.push_back(m.node);
      if (m.node != options_.node && m.since_renewal > 2 * options_.renew_every)
        suspected.push_back(m.node);
    }
  bool changed;
  {
    std::lock_guard guard{mtx_};
    changed = live != live_;
    if (changed)
      live_ = live;
    suspected_ = std::move(suspected);
  }
  if (changed && options_.on_view)
    options_.on_view(live);
}

} // namespace sourcery::cluster
