// The application's side of operating handlers while it runs: each second
// it records which of its handlers stopped on an event, and carries out the
// operator's requests (handler_control.hpp) for the handlers running here.

#include "handler_control.hpp"

#include <map>

#include "sourcery/actors/events/event_consumer.hpp"
#include "sourcery/runtime/application.hpp"
#include "sourcery/supervision/detail/scoped_self.hpp"

namespace sourcery {

namespace {

struct local_handler {
  std::string name, kind, child_id;
  std::shared_ptr<handler_status> status;
  caf::actor actor;
};

/// How long a parked event handled again may take.
constexpr std::chrono::seconds replay_deadline{10};

} // namespace

void application::operate_handlers() {
  using namespace detail::control;
  if (failed_.load() || stopped_.load() || !root_)
    return;
  std::vector<local_handler> here;
  {
    std::lock_guard guard{handlers_mtx_};
    for (auto& [name, entry] : handlers_)
      if (entry.actor) // in a cluster, the node running it acts
        here.push_back({name, entry.kind, entry.child_id, entry.status, entry.actor});
  }
  if (here.empty())
    return; // nothing to ask the store about
  auto listed = store_->checkpoints();
  if (!listed)
    return; // the store is away: next time
  std::map<std::string, uint64_t> have(listed->begin(), listed->end());
  auto value = [&](const std::string& key) {
    auto i = have.find(key);
    return i == have.end() ? uint64_t{0} : i->second;
  };
  for (auto& h : here) {
    const auto& id = h.child_id;
    auto stopped_at = h.status->stopped_at();
    auto restart = [&] {
      (void) root_->terminate_child(id);
      if (auto r = root_->restart_child(id); !r)
        logger_->error("handler", "cannot restart", {{"handler", h.name}, {"error", describe_error(r.error())}});
    };
    // Moves its checkpoint (stopped or not: it is terminated first).
    auto move_to = [&](uint64_t position) -> caf::error {
      (void) root_->terminate_child(id);
      auto err = move_checkpoint(*store_, read_models_.get(), h.kind, h.name, position);
      h.status->rewind(position);
      return err;
    };
    if (auto asked = value(reset_key(h.name)); asked > 0) {
      auto to = asked - 1;
      if (h.kind == "projection") {
        logger_->warn("handler", "a projection is rebuilt, not reset: ignored", {{"handler", h.name}});
      } else if (auto err = move_to(to)) {
        logger_->error("handler", "reset failed", {{"handler", h.name}, {"error", describe_error(err)}});
      } else {
        logger_->info("handler", "reset by an operator", {{"handler", h.name}, {"position", to}});
      }
      restart();
      (void) store_->save_checkpoint(reset_key(h.name), 0);
      stopped_at = h.status->stopped_at();
    }
    if (value(skip_key(h.name)) > 0) {
      if (stopped_at) {
        if (auto err = move_to(*stopped_at)) {
          logger_->error("handler", "skip failed", {{"handler", h.name}, {"error", describe_error(err)}});
        } else {
          (void) store_->save_checkpoint(parked_key(h.name, *stopped_at), *stopped_at);
          logger_->info("handler", "an operator skipped the event it stopped on; it is parked",
                        {{"handler", h.name}, {"position", *stopped_at}});
        }
        restart();
      }
      (void) store_->save_checkpoint(skip_key(h.name), 0);
      stopped_at = h.status->stopped_at();
    }
    if (value(retry_key(h.name)) > 0) {
      if (stopped_at) {
        logger_->info("handler", "an operator retries the event it stopped on",
                      {{"handler", h.name}, {"position", *stopped_at}});
        restart();
      }
      (void) store_->save_checkpoint(retry_key(h.name), 0);
      stopped_at = h.status->stopped_at();
    }
    if (auto asked = value(replay_key(h.name)); asked > 0) {
      // A parked event, handled again alone by the running handler (its
      // checkpoint stays); handled, it is parked no more. Failed, it stays
      // parked and the log says why.
      auto at = asked - 1;
      caf::error err;
      if (at == 0 || value(parked_key(h.name, at)) != at) {
        err = persistence::make_error(persistence::store_errc::invalid_argument,
                                      "event #" + std::to_string(at) + " is not parked for " + h.name);
      } else {
        detail::scoped_self self{*system_};
        self->request(h.actor, replay_deadline, detail::replay_atom::value, at)
          .receive([](detail::replay_atom) {}, [&](caf::error& e) { err = std::move(e); });
      }
      if (err) {
        logger_->error("handler", "a parked event handled again failed; it stays parked",
                       {{"handler", h.name}, {"position", at}, {"error", describe_error(err)}});
      } else {
        (void) store_->save_checkpoint(parked_key(h.name, at), 0);
        logger_->info("handler", "an operator had a parked event handled again: done", {{"handler", h.name}, {"position", at}});
      }
      (void) store_->save_checkpoint(replay_key(h.name), 0);
    }
    // What the tool shows: stopped, and on which event.
    uint64_t recorded = value(stopped_key(h.name));
    uint64_t now = stopped_at ? *stopped_at + 1 : 0;
    if (recorded != now)
      (void) store_->save_checkpoint(stopped_key(h.name), now);
  }
}

} // namespace sourcery
