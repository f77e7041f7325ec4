#include "sourcery/runtime/cluster/membership.hpp"

#include <algorithm>
#include <iterator>
#include <utility>

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
    last_renewal_(std::chrono::steady_clock::now().time_since_epoch().count()) {}

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

bool membership::is_up(const std::string& node, int64_t incarnation) const {
  std::lock_guard guard{mtx_};
  auto m = up_.find(node);
  return m != up_.end() && m->second == incarnation;
}

int64_t membership::incarnation_of(const std::string& node) const {
  std::lock_guard guard{mtx_};
  auto m = up_.find(node);
  return m == up_.end() ? 0 : m->second;
}

std::vector<std::string> membership::suspected() const {
  std::lock_guard guard{mtx_};
  return suspected_;
}

void membership::wake(std::function<void()> then) {
  {
    std::lock_guard guard{mtx_};
    woken_ = true;
    if (then)
      after_round_.push_back(std::move(then));
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
  while (!stopping_) {
    wake_.wait_for(guard, options_.renew_every, [this] { return stopping_ || woken_; });
    if (stopping_)
      return;
    woken_ = false;
    auto then = std::exchange(after_round_, {});
    guard.unlock();
    bool read = false;
    if (serving_.load())
      read = step();
    else if (!replaced_.load())
      rejoin();
    if (!read && serving_.load()) {
      // Not read this round (a verification must see a fresh reading, or
      // a member that just joined is refused): the next round calls them.
      guard.lock();
      after_round_.insert(after_round_.begin(), std::make_move_iterator(then.begin()),
                          std::make_move_iterator(then.end()));
      continue;
    }
    for (auto& f : then)
      f();
    guard.lock();
  }
}

void membership::stop_serving(const caf::error& why) {
  if (!serving_.exchange(false))
    return;
  {
    std::lock_guard guard{mtx_};
    live_.clear();
    suspected_.clear();
  }
  if (options_.on_down)
    options_.on_down(why, replaced_.load());
}

void membership::rejoin() {
  if (paused_.load())
    return; // the store is out of reach (the test seam)
  if (options_.may_join && !options_.may_join())
    return; // cannot reach the others: it would be voted out again
  if (auto shunned = store_->shunned(options_.cluster, options_.node, options_.vote_window); !shunned || *shunned)
    return; // the others cannot reach it yet (or the store cannot say)
  auto asked = std::chrono::steady_clock::now();
  auto incarnation = store_->join(options_.cluster, options_.node);
  if (!incarnation)
    return; // the store is still out of reach: next period
  incarnation_ = *incarnation;
  renewed_after(asked - std::chrono::steady_clock::time_point{std::chrono::steady_clock::duration{last_renewal_.load()}},
                asked);
  last_renewal_ = asked.time_since_epoch().count();
  serving_ = true;
  if (options_.on_rejoined)
    options_.on_rejoined(*incarnation);
  read_view();
}

bool membership::step() {
  // Paused (a test's stand-in for a process stopped or cut off from the
  // store): the renewal does not reach the store.
  using persistence::member_renewal;
  auto asked = std::chrono::steady_clock::now(); // the renewal is no younger than this
  auto renewed = paused_.load()
                   ? caf::expected<member_renewal>{persistence::make_error(persistence::store_errc::unavailable,
                                                                           "renewals paused")}
                   : store_->renew_member(options_.cluster, options_.node, incarnation_.load());
  auto now = std::chrono::steady_clock::now();
  if (renewed && *renewed == member_renewal::replaced) {
    // Another process joined as this node: it is that one's address now.
    replaced_ = true;
    stop_serving(persistence::make_error(persistence::store_errc::invalid_argument,
                                         options_.node + " joined again elsewhere (a newer incarnation): this"
                                                         " process serves no more"));
    return false;
  }
  if (renewed && *renewed == member_renewal::declared_down) {
    stop_serving(persistence::make_error(persistence::store_errc::invalid_argument,
                                         options_.node + " was declared down by its cluster"));
    return false;
  }
  if (renewed) {
    renewed_after(asked - std::chrono::steady_clock::time_point{std::chrono::steady_clock::duration{last_renewal_.load()}},
                  asked);
    last_renewal_ = asked.time_since_epoch().count();
  } else if (now - std::chrono::steady_clock::time_point{std::chrono::steady_clock::duration{last_renewal_.load()}}
             >= options_.down_after) {
    // The others may have declared us down meanwhile: stop before they act on it.
    stop_serving(persistence::make_error(persistence::code_of(renewed.error()),
                                         options_.node + " could not renew for "
                                           + std::to_string(options_.down_after.count())
                                           + " ms: " + persistence::describe(renewed.error())));
    return false;
  }
  if (!renewed)
    return false; // the store is out of reach: nobody is declared down from here
  if (options_.on_renewed)
    options_.on_renewed();
  if (auto down = store_->declare_down(options_.cluster, silence_allowed(now));
      down && !down->empty() && options_.on_declared_down)
    options_.on_declared_down(*down);
  return read_view();
}

void membership::renewed_after(std::chrono::steady_clock::duration gap, std::chrono::steady_clock::time_point at) {
  // A round merely late (a busy machine) excuses nothing: a member frozen
  // meanwhile is declared down as soon as before. A gap of half the silence
  // allowed or more is an outage this node went through too.
  if (gap < std::chrono::steady_clock::duration{options_.down_after} / 2)
    return;
  excuse_ = at < excuse_until_ ? std::max(excuse_, gap) : gap;
  excuse_until_ = std::max(excuse_until_, at + options_.down_after);
}

std::chrono::milliseconds membership::silence_allowed(std::chrono::steady_clock::time_point now) const {
  if (now >= excuse_until_)
    return options_.down_after;
  return options_.down_after + std::chrono::ceil<std::chrono::milliseconds>(excuse_);
}

bool membership::read_view() {
  auto members = store_->members(options_.cluster);
  if (!members)
    return false;
  std::vector<std::string> live, suspected;
  std::map<std::string, int64_t> up;
  for (auto& m : *members)
    if (m.state == "up") {
      live.push_back(m.node);
      up[m.node] = m.incarnation;
      if (m.node != options_.node && m.since_renewal > 2 * options_.renew_every)
        suspected.push_back(m.node);
    }
  bool changed;
  {
    std::lock_guard guard{mtx_};
    changed = live != live_;
    if (changed)
      live_ = live;
    up_ = std::move(up);
    suspected_ = std::move(suspected);
  }
  if (changed && options_.on_view)
    options_.on_view(live);
  return true;
}

} // namespace sourcery::cluster
