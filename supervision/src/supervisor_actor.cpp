#include "supervisor_actor.hpp"

#include <algorithm>
#include <sstream>

#include <caf/actor_system.hpp>
#include <caf/exit_reason.hpp>
#include <caf/make_message.hpp>
#include <caf/response_promise.hpp>
#include <caf/sec.hpp>

namespace sourcery::supervision::detail {

namespace {

bool is_shutdown_reason(const caf::error& reason) {
  return reason == caf::exit_reason::normal || reason == caf::exit_reason::user_shutdown
         || code_of(reason) == supervision_errc::reached_max_restart_intensity;
}

} // namespace

supervisor_actor::supervisor_actor(caf::actor_config& cfg, supervisor_flags flags, std::vector<child_spec> specs)
  : caf::event_based_actor(cfg), flags_(std::move(flags)), initial_specs_(std::move(specs)) {
  rng_.seed(flags_.seed != 0 ? flags_.seed : std::random_device{}());
}

// -- setup ---------------------------------------------------------------------------

caf::behavior supervisor_actor::make_behavior() {
  // Children are monitored, not linked: in CAF a linked actor dying with
  // `kill` kills every actor linked to it, trapping or not, so one killed
  // child would take its supervisor down (OTP turns `kill` into `killed` for
  // links; CAF does not). Instead, our own termination, for whatever reason,
  // takes the children down with it, as a link would.
  set_down_handler([this](caf::down_msg& msg) { on_child_down(msg.source, msg.reason); });
  set_exit_handler([this](caf::exit_msg& msg) {
    // An exit request from our parent or an operator. A normal exit of some
    // other actor is no reason to go (as in OTP).
    if (msg.reason != caf::exit_reason::normal)
      begin_shutdown(msg.reason);
  });
  attach_functor([this](const caf::error& reason) {
    for (auto& [serial, c] : children_)
      if (c.handle)
        send_exit(c.handle, reason ? reason : caf::error{caf::exit_reason::user_shutdown});
  });

  init_error_ = validate(flags_);
  if (!init_error_ && flags_.how == strategy::simple_one_for_one) {
    if (initial_specs_.size() != 1)
      init_error_ = make_error(supervision_errc::invalid_flags,
                               "a simple_one_for_one supervisor takes exactly one child spec, its template");
    else if (auto err = validate(initial_specs_.front()))
      init_error_ = err;
    else
      template_ = own_spec(std::move(initial_specs_.front()));
  } else if (!init_error_) {
    for (auto& spec : initial_specs_) {
      if (auto err = validate(spec)) {
        init_error_ = err;
        break;
      }
      if (find_static(spec.id) != nullptr) {
        init_error_ = make_error(supervision_errc::duplicate_child_id, "two children are named '" + spec.id + "'");
        break;
      }
      auto& c = add_child(own_spec(std::move(spec)), {}, false);
      if (auto err = start_child_process(c)) {
        init_error_ = err;
        remove_child(c.serial);
        break;
      }
    }
  }
  initial_specs_.clear();
  if (init_error_)
    begin_shutdown(init_error_);

  return {
    [this](started_atom) -> caf::result<caf::unit_t> {
      if (init_error_)
        return init_error_;
      return caf::unit;
    },
    [this](start_child_atom, child_spec& spec) {
      auto rp = make_response_promise();
      defer([this, spec = std::move(spec), rp]() mutable { do_start_child(std::move(spec), rp); });
      return rp;
    },
    [this](start_child_atom, caf::message& args) {
      auto rp = make_response_promise();
      defer([this, args = std::move(args), rp]() mutable { do_start_dynamic(std::move(args), rp); });
      return rp;
    },
    [this](terminate_child_atom, const std::string& id) {
      return when_idle_with(id, false, [this](child& c, caf::response_promise& rp) { do_terminate(c.serial, rp); });
    },
    [this](terminate_child_atom, const caf::actor& who) {
      auto rp = make_response_promise();
      defer([this, who, rp]() mutable {
        if (shutting_down_)
          return rp.deliver(make_error(supervision_errc::shutting_down, flags_.name + " is shutting down"));
        auto i = by_addr_.find(who.address());
        if (i == by_addr_.end())
          return rp.deliver(make_error(supervision_errc::child_not_found, "that actor is not a running child"));
        do_terminate(i->second, rp);
      });
      return rp;
    },
    [this](restart_child_atom, const std::string& id) {
      return when_idle_with(id, true, [this](child& c, caf::response_promise& rp) {
        if (auto err = start_child_process(c))
          return rp.deliver(err);
        rp.deliver(c.handle);
      });
    },
    [this](delete_child_atom, const std::string& id) {
      return when_idle_with(id, true, [this](child& c, caf::response_promise& rp) {
        remove_child(c.serial);
        rp.deliver(caf::unit);
      });
    },
    [this](which_children_atom) { return which_children(); },
    [this](count_children_atom) { return count_children(); },
    [this](tree_atom) {
      auto rp = make_response_promise();
      render_tree(rp);
      return rp;
    },
    [this](retry_atom, uint64_t serial) { on_retry(serial); },
    [this](backoff_atom, uint64_t serial) {
      auto c = find(serial);
      if (c == nullptr || !c->waiting || shutting_down_)
        return;
      c->waiting = false;
      restart_now(*c);
    },
    [this](kill_timer_atom, uint64_t serial, uint64_t epoch) {
      auto c = find(serial);
      if (c != nullptr && c->stopping && c->stop_epoch == epoch && c->handle)
        send_exit(c->handle, caf::exit_reason::kill);
    },
    [this](finish_atom) { quit(exit_reason_); },
  };
}

caf::response_promise supervisor_actor::when_idle_with(const std::string& id, bool must_be_stopped,
                                                       std::function<void(child&, caf::response_promise&)> f) {
  auto rp = make_response_promise();
  defer([this, id, must_be_stopped, f = std::move(f), rp]() mutable {
    if (shutting_down_)
      return rp.deliver(make_error(supervision_errc::shutting_down, flags_.name + " is shutting down"));
    auto c = find_static(id);
    if (c == nullptr)
      return rp.deliver(make_error(supervision_errc::child_not_found, "no child '" + id + "'"));
    if (must_be_stopped && (c->handle || c->waiting))
      return rp.deliver(make_error(supervision_errc::child_running, "child '" + id + "' is running"));
    f(*c, rp);
  });
  return rp;
}

// -- children --------------------------------------------------------------------------

supervisor_actor::child* supervisor_actor::find(uint64_t serial) {
  auto i = children_.find(serial);
  return i == children_.end() ? nullptr : &i->second;
}

supervisor_actor::child* supervisor_actor::find_static(const std::string& id) {
  for (auto serial : static_order_)
    if (auto c = find(serial); c != nullptr && c->spec->id == id)
      return c;
  return nullptr;
}

const child_spec* supervisor_actor::own_spec(child_spec spec) {
  specs_.push_back(std::move(spec));
  return &specs_.back();
}

supervisor_actor::child& supervisor_actor::add_child(const child_spec* spec, caf::message args,
                                                     bool dynamic) {
  auto serial = next_serial_++;
  auto& c = children_[serial];
  c.serial = serial;
  c.spec = std::move(spec);
  c.args = std::move(args);
  c.dynamic = dynamic;
  if (!dynamic)
    static_order_.push_back(serial);
  return c;
}

void supervisor_actor::remove_child(uint64_t serial) {
  auto c = find(serial);
  if (c == nullptr)
    return;
  if (c->handle)
    by_addr_.erase(c->handle.address());
  if (!c->dynamic)
    std::erase(static_order_, serial);
  children_.erase(serial);
}

caf::error supervisor_actor::start_child_process(child& c) {
  caf::expected<caf::actor> started = caf::actor{};
  try {
    started = c.spec->start(system(), c.args);
  } catch (const std::exception& e) {
    started = make_error(supervision_errc::start_failed, "start of '" + c.spec->id + "' threw: " + e.what());
  }
  if (!started)
    return make_error(supervision_errc::start_failed,
                      "start of '" + c.spec->id + "' failed: " + describe(started.error()));
  if (!*started)
    return make_error(supervision_errc::start_failed, "start of '" + c.spec->id + "' returned no actor");
  c.handle = std::move(*started);
  c.started_at = clock().now();
  c.pending_start = false;
  by_addr_.emplace(c.handle.address(), c.serial);
  monitor(c.handle);
  return {};
}

std::vector<uint64_t> supervisor_actor::running_statics_reversed(size_t from_index) const {
  std::vector<uint64_t> out;
  for (size_t i = static_order_.size(); i > from_index; --i) {
    auto serial = static_order_[i - 1];
    auto it = children_.find(serial);
    if (it != children_.end() && (it->second.handle || it->second.waiting))
      out.push_back(serial);
  }
  return out;
}

// -- failures and restarts ---------------------------------------------------------

void supervisor_actor::on_child_down(const caf::actor_addr& who, const caf::error& reason) {
  auto i = by_addr_.find(who);
  if (i == by_addr_.end())
    return; // not (or no longer) a child of ours
  auto serial = i->second;
  by_addr_.erase(i);
  auto c = find(serial);
  c->handle = nullptr;
  if (c->stopping) {
    on_stopped(*c);
    return;
  }
  if (shutting_down_) {
    if (c->dynamic || c->spec->restart == restart_type::temporary)
      remove_child(serial);
    return;
  }
  if (busy_) {
    pending_exits_.emplace_back(serial, reason);
    return;
  }
  handle_child_exit(serial, reason);
}

namespace {

/// "aggregate:account-7" when the first argument names the child (a string),
/// else the spec id and all arguments.
std::string dynamic_child_name(const std::string& id, const caf::message& args) {
  if (args.empty())
    return id;
  if (args.match_element<std::string>(0))
    return id + ":" + args.get_as<std::string>(0);
  return id + caf::to_string(args);
}

} // namespace

void supervisor_actor::report(supervisor_report::kind what, const child& c, const caf::error& reason) {
  if (flags_.observer)
    flags_.observer({what, flags_.name,
                     // A dynamic child is its spec and its arguments, as OTP's reports show its MFArgs.
                     c.dynamic ? dynamic_child_name(c.spec->id, c.args) : c.spec->id,
                     reason ? describe(reason) : ""});
}

void supervisor_actor::handle_child_exit(uint64_t serial, const caf::error& reason) {
  auto c = find(serial);
  if (c == nullptr)
    return;
  const auto& spec = *c->spec;
  if (!is_shutdown_reason(reason))
    report(supervisor_report::kind::child_terminated, *c, reason);
  bool restart_it = spec.restart == restart_type::permanent
                    || (spec.restart == restart_type::transient && !is_shutdown_reason(reason));
  if (!restart_it) {
    bool significant = spec.significant;
    if (c->dynamic || spec.restart == restart_type::temporary)
      remove_child(serial);
    if (significant && flags_.shutdown != auto_shutdown::never) {
      bool any_left = false;
      for (auto& [s, other] : children_)
        if (other.spec->significant && (other.handle || other.waiting))
          any_left = true;
      if (flags_.shutdown == auto_shutdown::any_significant || !any_left)
        begin_shutdown(caf::exit_reason::user_shutdown);
    }
    return;
  }
  if (!record_restart()) {
    auto why = make_error(supervision_errc::reached_max_restart_intensity,
                          flags_.name + ": more than " + std::to_string(flags_.intensity) + " restarts in "
                            + std::to_string(flags_.period.count()) + " ms");
    report(supervisor_report::kind::shutdown, *c, why);
    begin_shutdown(std::move(why));
    return;
  }
  ++c->restarts;
  report(supervisor_report::kind::child_restarted, *c, reason);
  switch (flags_.how) {
    case strategy::one_for_one:
    case strategy::simple_one_for_one:
      restart(*c);
      return;
    case strategy::one_for_all:
    case strategy::rest_for_one: {
      size_t index = 0;
      if (flags_.how == strategy::rest_for_one)
        index = static_cast<size_t>(std::find(static_order_.begin(), static_order_.end(), serial) - static_order_.begin());
      // Every running child from `index` on is stopped, then all of them
      // (and the failed one) are started again in order.
      for (size_t k = index; k < static_order_.size(); ++k) {
        auto other = find(static_order_[k]);
        if (other->serial == serial || other->handle || other->waiting)
          other->pending_start = true;
        other->waiting = false;
      }
      stop_children(running_statics_reversed(index), false, [this] { start_pending_group(); });
      return;
    }
  }
}

bool supervisor_actor::record_restart() {
  auto now = clock().now();
  restart_times_.push_back(now);
  while (!restart_times_.empty() && now - restart_times_.front() > flags_.period)
    restart_times_.pop_front();
  return restart_times_.size() <= static_cast<size_t>(flags_.intensity);
}

void supervisor_actor::restart(child& c) {
  if (c.spec->backoff) {
    const auto& b = *c.spec->backoff;
    auto stable = b.reset_after.value_or(b.max);
    if (clock().now() - c.started_at >= stable)
      c.consecutive = 0;
    ++c.consecutive;
    auto delay = b.delay(c.consecutive, std::uniform_real_distribution<double>{0.0, 1.0}(rng_));
    c.waiting = true;
    delayed_send(this, delay, backoff_atom::value, c.serial);
    return;
  }
  restart_now(c);
}

void supervisor_actor::restart_now(child& c) {
  if (auto err = start_child_process(c)) {
    // Try again through our own mailbox, so that a shutdown request or a
    // parent's exit can get through between attempts.
    c.waiting = true;
    send(this, retry_atom::value, c.serial);
  }
}

void supervisor_actor::start_pending_group() {
  if (shutting_down_)
    return;
  for (auto serial : std::vector<uint64_t>{static_order_}) {
    auto c = find(serial);
    if (c == nullptr || !c->pending_start)
      continue;
    if (auto err = start_child_process(*c)) {
      c->waiting = true;
      send(this, retry_atom::value, c->serial);
      return; // the retry resumes the group from this child
    }
  }
}

void supervisor_actor::on_retry(uint64_t serial) {
  auto c = find(serial);
  if (c == nullptr || !c->waiting || shutting_down_)
    return;
  if (busy_) {
    defer([this, serial] { on_retry(serial); });
    return;
  }
  if (!record_restart()) {
    auto why = make_error(supervision_errc::reached_max_restart_intensity,
                          flags_.name + ": restarting '" + c->spec->id + "' keeps failing");
    report(supervisor_report::kind::shutdown, *c, why);
    begin_shutdown(std::move(why));
    return;
  }
  c->waiting = false;
  if (c->pending_start) {
    start_pending_group();
    return;
  }
  restart_now(*c);
}

// -- stopping children --------------------------------------------------------------

void supervisor_actor::stop_children(std::vector<uint64_t> order, bool parallel, std::function<void()> then) {
  busy_ = true;
  stop_queue_ = std::move(order);
  std::reverse(stop_queue_.begin(), stop_queue_.end()); // pop from the back
  stop_parallel_ = parallel;
  stop_then_ = std::move(then);
  stop_waiting_ = 0;
  stop_next();
}

void supervisor_actor::stop_next() {
  // Parallel stops keep a bounded number in flight: flooding the scheduler
  // with 100,000 dying actors at once makes CAF's work stealing thrash.
  constexpr size_t max_parallel_stops = 64;
  while (stop_waiting_ == 0 || (stop_parallel_ && !stop_queue_.empty() && stop_waiting_ < max_parallel_stops)) {
    if (stop_queue_.empty()) {
      busy_ = false;
      auto then = std::move(stop_then_);
      stop_then_ = nullptr;
      if (then)
        then();
      drain();
      return;
    }
    auto serial = stop_queue_.back();
    stop_queue_.pop_back();
    auto c = find(serial);
    if (c == nullptr)
      continue;
    c->waiting = false; // a scheduled restart is cancelled
    if (!c->handle)
      continue;
    stop_one(*c);
  }
}

void supervisor_actor::stop_one(child& c) {
  c.stopping = true;
  c.stop_epoch = next_epoch_++;
  ++stop_waiting_;
  auto policy = c.spec->effective_shutdown();
  switch (policy.how) {
    case shutdown_policy::kind::brutal_kill:
      send_exit(c.handle, caf::exit_reason::kill);
      break;
    case shutdown_policy::kind::timeout:
      send_exit(c.handle, caf::exit_reason::user_shutdown);
      delayed_send(this, policy.time, kill_timer_atom::value, c.serial, c.stop_epoch);
      break;
    case shutdown_policy::kind::infinity:
      send_exit(c.handle, caf::exit_reason::user_shutdown);
      break;
  }
}

void supervisor_actor::on_stopped(child& c) {
  c.stopping = false;
  if (c.dynamic || c.spec->restart == restart_type::temporary)
    remove_child(c.serial);
  --stop_waiting_;
  stop_next();
}

// -- shutdown ----------------------------------------------------------------------

void supervisor_actor::begin_shutdown(caf::error reason) {
  if (shutting_down_)
    return;
  shutting_down_ = true;
  exit_reason_ = std::move(reason);
  drain();
}

void supervisor_actor::drain() {
  while (!busy_ && !shutting_down_) {
    if (!pending_exits_.empty()) {
      auto [serial, reason] = std::move(pending_exits_.front());
      pending_exits_.pop_front();
      handle_child_exit(serial, reason);
      continue;
    }
    if (!deferred_.empty()) {
      auto f = std::move(deferred_.front());
      deferred_.pop_front();
      f();
      continue;
    }
    return;
  }
  if (!shutting_down_ || busy_ || finishing_)
    return;
  // Shutting down and idle: refuse what waits, stop everyone, then leave.
  finishing_ = true;
  for (auto& f : deferred_)
    f(); // requests answer shutting_down (see defer)
  deferred_.clear();
  pending_exits_.clear();
  std::vector<uint64_t> dynamic_children;
  for (auto& [serial, c] : children_)
    if (c.dynamic)
      dynamic_children.push_back(serial);
  auto statics = running_statics_reversed(0);
  // Dynamic children stop all at once (as OTP's simple_one_for_one), then
  // static ones one by one in reverse start order.
  stop_children(std::move(dynamic_children), true, [this, statics = std::move(statics)]() mutable {
    stop_children(std::move(statics), false, [this] { send(this, finish_atom::value); });
  });
}

void supervisor_actor::defer(std::function<void()> request) {
  if (shutting_down_ && finishing_)
    return request(); // handlers check shutting_down_ themselves
  deferred_.push_back(std::move(request));
  drain();
}

// -- requests ------------------------------------------------------------------------

void supervisor_actor::do_start_child(child_spec spec, caf::response_promise rp) {
  if (shutting_down_)
    return rp.deliver(make_error(supervision_errc::shutting_down, flags_.name + " is shutting down"));
  if (flags_.how == strategy::simple_one_for_one)
    return rp.deliver(make_error(supervision_errc::wrong_strategy,
                                 "a simple_one_for_one supervisor starts children from arguments, not specs"));
  if (auto err = validate(spec))
    return rp.deliver(err);
  if (find_static(spec.id) != nullptr)
    return rp.deliver(make_error(supervision_errc::duplicate_child_id, "a child '" + spec.id + "' exists"));
  auto& c = add_child(own_spec(std::move(spec)), {}, false);
  if (auto err = start_child_process(c)) {
    remove_child(c.serial);
    return rp.deliver(err);
  }
  rp.deliver(c.handle);
}

void supervisor_actor::do_start_dynamic(caf::message args, caf::response_promise rp) {
  if (shutting_down_)
    return rp.deliver(make_error(supervision_errc::shutting_down, flags_.name + " is shutting down"));
  if (flags_.how != strategy::simple_one_for_one)
    return rp.deliver(make_error(supervision_errc::wrong_strategy,
                                 "only simple_one_for_one supervisors start children from arguments"));
  auto& c = add_child(template_, std::move(args), true);
  if (auto err = start_child_process(c)) {
    remove_child(c.serial);
    return rp.deliver(err);
  }
  rp.deliver(c.handle);
}

void supervisor_actor::do_terminate(uint64_t serial, caf::response_promise rp) {
  if (shutting_down_)
    return rp.deliver(make_error(supervision_errc::shutting_down, flags_.name + " is shutting down"));
  stop_children({serial}, false, [rp]() mutable { rp.deliver(caf::unit); });
}

std::vector<child_info> supervisor_actor::which_children() const {
  std::vector<child_info> out;
  auto add = [&](const child& c) {
    out.push_back({c.dynamic ? std::string{} : c.spec->id, c.handle, c.spec->type, c.spec->restart, c.restarts});
  };
  for (auto serial : static_order_)
    add(children_.at(serial));
  for (auto& [serial, c] : children_)
    if (c.dynamic)
      add(c);
  return out;
}

child_counts supervisor_actor::count_children() const {
  child_counts n;
  for (auto& [serial, c] : children_) {
    ++n.specs;
    if (c.handle)
      ++n.active;
    if (c.spec->type == child_type::supervisor)
      ++n.supervisors;
    else
      ++n.workers;
  }
  return n;
}

void supervisor_actor::render_tree(caf::response_promise rp) {
  struct gather {
    std::vector<std::string> lines; // one entry per static child
    size_t outstanding = 0;
    caf::response_promise rp;
    std::string head;
    std::string tail;
    void done() {
      std::string out = head;
      for (auto& l : lines)
        out += l;
      out += tail;
      rp.deliver(out);
    }
  };
  auto g = std::make_shared<gather>();
  g->rp = std::move(rp);
  g->head = flags_.name + " (" + std::string{to_string(flags_.how)} + ", intensity " + std::to_string(flags_.intensity)
            + " in " + std::to_string(flags_.period.count()) + " ms)\n";
  auto indent = [](const std::string& text, bool last) {
    std::string out;
    std::istringstream in{text};
    std::string line;
    bool first = true;
    while (std::getline(in, line)) {
      out += first ? (last ? "└── " : "├── ") : (last ? "    " : "│   ");
      out += line + "\n";
      first = false;
    }
    return out;
  };
  size_t dynamic_count = 0, dynamic_running = 0;
  uint64_t dynamic_restarts = 0;
  for (auto& [serial, c] : children_)
    if (c.dynamic) {
      ++dynamic_count;
      dynamic_running += c.handle ? 1 : 0;
      dynamic_restarts += c.restarts;
    }
  size_t n = static_order_.size();
  g->lines.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& c = children_.at(static_order_[i]);
    bool last = i + 1 == n && dynamic_count == 0;
    std::string label = c.spec->id + " [" + (c.spec->type == child_type::supervisor ? "supervisor" : "worker") + ", "
                        + (c.spec->restart == restart_type::permanent   ? "permanent"
                           : c.spec->restart == restart_type::transient ? "transient"
                                                                        : "temporary")
                        + "] restarts=" + std::to_string(c.restarts)
                        + (c.handle ? " running" : c.waiting ? " restarting" : " stopped");
    if (c.spec->type == child_type::supervisor && c.handle) {
      ++g->outstanding;
      request(c.handle, std::chrono::seconds{5}, tree_atom::value)
        .then(
          [g, i, label, last, indent](const std::string& sub) {
            auto nl = sub.find('\n');
            g->lines[i] = indent(label + "\n" + (nl == std::string::npos ? "" : sub.substr(nl + 1)), last);
            if (--g->outstanding == 0)
              g->done();
          },
          [g, i, label, last, indent](caf::error&) {
            g->lines[i] = indent(label + " (no answer)", last);
            if (--g->outstanding == 0)
              g->done();
          });
    } else {
      g->lines[i] = indent(label, last);
    }
  }
  if (dynamic_count > 0)
    g->tail = indent(std::to_string(dynamic_count) + " dynamic children of '" + template_->id + "', "
                       + std::to_string(dynamic_running) + " running, " + std::to_string(dynamic_restarts) + " restarts",
                     true);
  if (g->outstanding == 0)
    g->done();
}

} // namespace sourcery::supervision::detail
