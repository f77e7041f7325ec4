// Handlers, operated while the application runs: `handlers` lists them,
// `reset` moves one, `skip` and `retry` settle one stopped on an event.
// A request to a running application goes through the store
// (handler_control.hpp) and is carried out where the handler runs; with no
// application running, the tool does it itself.

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <cstdio>
#include <map>
#include <set>
#include <thread>

#include "../handler_control.hpp"
#include "sourcery/config.hpp"
#if SOURCERY_WITH_POSTGRES
#include "sourcery/persistence/postgres_coordination.hpp"
#include "sourcery/persistence/postgres_store.hpp"
#endif
#include "tool_context.hpp"
#include "tool_output.hpp"

namespace sourcery::tool {

namespace {

using json = nlohmann::json;

struct handler_row {
  std::string name;
  std::string kind; // handler, projection, process manager
  uint64_t position = 0;
  std::optional<uint64_t> stopped_at;
  std::string stopped_type; // the event's
  std::vector<uint64_t> parked;
  std::string node; // in a cluster: who runs it
};

/// Everything the store says of the handlers: the event store's
/// checkpoints (handlers, and the records of handler_control.hpp) and the
/// read models' (projections, process managers).
struct handler_view {
  std::map<std::string, handler_row> rows;
  uint64_t head = 0;
};

caf::expected<handler_view> view_of(const context& ctx, persistence::event_store& store) {
  using namespace detail::control;
  handler_view v;
  v.head = store.head_position();
  auto cps = store.checkpoints();
  if (!cps)
    return cps.error();
  for (auto& [name, pos] : *cps)
    if (name.rfind("handler:", 0) == 0)
      v.rows[name.substr(8)] = {name.substr(8), "handler", pos, {}, {}, {}, {}};
  std::error_code ec;
  if (ctx.uri().is_postgres() || std::filesystem::exists(ctx.read_model_dir() + "/data.mdb", ec)) {
    auto models = ctx.open_read_models(true);
    if (models) {
      auto listed = (*models)->checkpoints();
      if (!listed)
        return listed.error();
      for (auto& [name, pos] : *listed) {
        bool process = name.rfind("process:", 0) == 0;
        auto n = process ? name.substr(8) : name;
        v.rows[n] = {n, process ? "process manager" : "projection", pos, {}, {}, {}, {}};
      }
    } else if (persistence::code_of(models.error()) != persistence::store_errc::no_store) {
      return models.error();
    }
  }
  for (auto& [name, pos] : *cps) {
    if (name.rfind(stopped_prefix, 0) == 0 && pos > 0) {
      if (auto r = v.rows.find(name.substr(stopped_prefix.size())); r != v.rows.end()) {
        r->second.stopped_at = pos - 1;
        if (auto ev = store.read_all(pos - 1, 1); ev && !ev->empty())
          r->second.stopped_type = ev->front().type;
      }
    } else if (name.rfind(parked_prefix, 0) == 0) {
      auto rest = name.substr(parked_prefix.size());
      auto colon = rest.rfind(':');
      if (auto r = v.rows.find(rest.substr(0, colon)); pos > 0 && colon != std::string::npos && r != v.rows.end())
        r->second.parked.push_back(pos); // 0: handled again since
    }
  }
#if SOURCERY_WITH_POSTGRES
  // In a cluster, a handler runs where its lease is.
  if (ctx.uri().is_postgres()) {
    persistence::coordination_options o;
    auto uri = ctx.uri();
    o.conninfo = uri.location;
    o.schema = uri.schema;
    o.connect_timeout = uri.connect_timeout;
    o.operation_timeout = uri.operation_timeout;
    o.setup = persistence::schema_setup::none;
    if (auto c = persistence::postgres_coordination::open(o)) {
      if (auto clusters = (*c)->clusters())
        for (auto& cluster : *clusters)
          if (auto leases = (*c)->leases(cluster))
            for (auto& l : *leases)
              if (l.name.rfind("handler:", 0) == 0 && l.left.count() > 0)
                if (auto r = v.rows.find(l.name.substr(8)); r != v.rows.end())
                  r->second.node = persistence::node_of_owner(l.owner);
    }
  }
#endif
  return v;
}

/// Whether an application runs on the store: it then carries requests out
/// itself. LMDB: the one writer holds the store (a write open is refused);
/// PostgreSQL: sessions of our programs use the schema.
caf::expected<bool> application_runs(const context& ctx) {
  auto uri = ctx.uri();
  if (!uri.is_postgres())
    return false; // decided by the write open (store_in_use)
#if SOURCERY_WITH_POSTGRES
  auto n = persistence::postgres_store::sessions_on(uri.location, uri.schema);
  if (!n)
    return n.error();
  return *n > 0;
#else
  return false; // the tool refused the URI already
#endif
}

/// Opens the store to write a request or a checkpoint; on LMDB refused
/// while the application runs (one writer per store).
std::unique_ptr<persistence::event_store> open_to_operate(const context& ctx) {
  auto store = persistence::open_store(ctx.uri());
  if (!store) {
    if (persistence::code_of(store.error()) == persistence::store_errc::store_in_use) {
      std::fprintf(stderr,
                   "%s: an application runs on %s, and an LMDB store has one writer: stop it, then run this again"
                   " (on PostgreSQL the running application carries the request out itself)\n",
                   ctx.program.c_str(), ctx.where().c_str());
      return nullptr;
    }
    store_failure(ctx, "cannot open " + ctx.where(), store.error());
    return nullptr;
  }
  return std::move(*store);
}

/// Writes request `key` = `value` for the running application and waits
/// (up to 15 s) until it has carried it out (it sets the key back to 0).
int ask_application(const context& ctx, persistence::event_store& store, const std::string& key, uint64_t value,
                    const std::string& what) {
  if (auto r = store.save_checkpoint(key, value); !r)
    return store_failure(ctx, what, r.error());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{15};
  while (std::chrono::steady_clock::now() < deadline) {
    auto now = store.load_checkpoint(key);
    if (now && (!*now || **now == 0)) {
      std::printf("%s: done by the running application\n", what.c_str());
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{100});
  }
  std::printf("%s: asked; the application has not carried it out within 15 s (it does when it runs the"
              " handler)\n", what.c_str());
  return 1;
}

const handler_row* find_row(const context& ctx, const handler_view& v, const std::string& name) {
  auto r = v.rows.find(name);
  if (r != v.rows.end())
    return &r->second;
  std::fprintf(stderr, "%s: no handler, projection or process manager named '%s' (`handlers` lists them)\n",
               ctx.program.c_str(), name.c_str());
  return nullptr;
}

} // namespace

int run_handlers(const context& ctx) {
  auto runs = application_runs(ctx); // before our own sessions open
  auto store = open_read_only(ctx);
  if (!store)
    return 1;
  auto v = view_of(ctx, *store);
  if (!v)
    return store_failure(ctx, "handlers", v.error());
  auto state_of = [&](const handler_row& r) -> std::string {
    if (r.stopped_at)
      return "stopped";
    if (!r.node.empty() || (runs && *runs))
      return "running";
    return ctx.uri().is_postgres() ? "idle" : "ok";
  };
  if (ctx.opts.json) {
    for (auto& [name, r] : v->rows) {
      json j{{"name", r.name},
             {"kind", r.kind},
             {"state", state_of(r)},
             {"position", r.position},
             {"lag", v->head > r.position ? v->head - r.position : 0},
             {"parked", r.parked}};
      if (r.stopped_at)
        j["stopped_at"] = {{"position", *r.stopped_at}, {"type", r.stopped_type}};
      if (!r.node.empty())
        j["node"] = r.node;
      std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    }
    return 0;
  }
  std::printf("%-32s %-16s %-9s %12s %10s  %s\n", "NAME", "KIND", "STATE", "POSITION", "LAG", "NOTE");
  for (auto& [name, r] : v->rows) {
    std::string note;
    if (r.stopped_at)
      note = "stopped on #" + std::to_string(*r.stopped_at) + " (" + r.stopped_type + "): skip or retry";
    if (!r.parked.empty())
      note += (note.empty() ? "" : "; ") + std::to_string(r.parked.size()) + " parked (first #"
              + std::to_string(r.parked.front()) + ")";
    if (!r.node.empty())
      note += (note.empty() ? "on " : "; on ") + r.node;
    std::printf("%-32s %-16s %-9s %12s %10s  %s\n", r.name.c_str(), r.kind.c_str(), state_of(r).c_str(),
                grouped(r.position).c_str(), grouped(v->head > r.position ? v->head - r.position : 0).c_str(),
                note.c_str());
  }
  if (v->rows.empty())
    std::printf("(no handler has run on this store)\n");
  return 0;
}

namespace {

/// What reset, skip and retry start from: whether an application runs,
/// the store opened to write, the handlers, and the one named.
struct operation {
  bool runs = false;
  std::unique_ptr<persistence::event_store> store;
  handler_view view;
  const handler_row* row = nullptr;
};

/// Null after saying why, with the exit status in `status`.
std::unique_ptr<operation> prepare(const context& ctx, const std::string& what, int& status) {
  auto op = std::make_unique<operation>();
  status = 1;
  auto runs = application_runs(ctx); // before our own sessions open
  if (!runs)
    return store_failure(ctx, what, runs.error()), nullptr;
  op->runs = *runs;
  op->store = open_to_operate(ctx);
  if (!op->store)
    return nullptr;
  auto v = view_of(ctx, *op->store);
  if (!v)
    return store_failure(ctx, what, v.error()), nullptr;
  op->view = std::move(*v);
  op->row = find_row(ctx, op->view, ctx.opts.args.at(0));
  if (op->row == nullptr)
    return status = 2, nullptr;
  return op;
}

/// With no application running, the tool moves the checkpoint itself.
caf::error move_here(const context& ctx, operation& op, uint64_t position) {
  std::unique_ptr<persistence::projection_store> models;
  if (op.row->kind != "handler") {
    auto opened = ctx.open_read_models(false);
    if (!opened)
      return opened.error();
    models = std::move(*opened);
  }
  return detail::control::move_checkpoint(*op.store, models.get(), op.row->kind, op.row->name, position);
}

/// skip and retry: for a handler stopped on an event.
int settle_stopped(const context& ctx, bool skip) {
  using namespace detail::control;
  const auto& name = ctx.opts.args.at(0);
  int status = 0;
  auto op = prepare(ctx, skip ? "skip" : "retry", status);
  if (!op)
    return status;
  if (!op->row->stopped_at)
    return std::fprintf(stderr, "%s: %s has not stopped on an event: nothing to %s\n", ctx.program.c_str(),
                        name.c_str(), skip ? "skip" : "retry"),
           1;
  auto at = *op->row->stopped_at;
  auto what = std::string{skip ? "skip" : "retry"} + " event #" + std::to_string(at) + " of " + name;
  if (op->runs)
    return ask_application(ctx, *op->store, skip ? skip_key(name) : retry_key(name), 1, what);
  if (skip) {
    if (auto err = move_here(ctx, *op, at))
      return store_failure(ctx, what, err);
    (void) op->store->save_checkpoint(parked_key(name, at), at);
  }
  (void) op->store->save_checkpoint(stopped_key(name), 0);
  std::printf("%s: done (no application runs; it %s when it starts)\n", what.c_str(),
              skip ? "goes on after the event, which is parked" : "handles the event again");
  return 0;
}

} // namespace

int run_reset(const context& ctx) {
  using namespace detail::control;
  const auto& name = ctx.opts.args.at(0);
  if (ctx.opts.to.empty())
    return std::fprintf(stderr, "%s: reset needs --to POSITION|start|head\n", ctx.program.c_str()), 2;
  int status = 0;
  auto op = prepare(ctx, "reset", status);
  if (!op)
    return status;
  if (op->row->kind == "projection")
    return std::fprintf(stderr,
                        "%s: %s is a projection: it is rebuilt, not reset (the application's `admin rebuild %s`)\n",
                        ctx.program.c_str(), name.c_str(), name.c_str()),
           2;
  const auto head = op->view.head;
  uint64_t to = 0;
  if (ctx.opts.to == "head") {
    to = head;
  } else if (ctx.opts.to != "start") {
    char* end = nullptr;
    to = std::strtoull(ctx.opts.to.c_str(), &end, 10);
    if (*end != '\0' || ctx.opts.to[0] == '-')
      return std::fprintf(stderr, "%s: --to takes a position, start or head, not '%s'\n", ctx.program.c_str(),
                          ctx.opts.to.c_str()),
             2;
    if (to > head)
      return std::fprintf(stderr, "%s: position %llu is past the head (%llu)\n", ctx.program.c_str(),
                          static_cast<unsigned long long>(to), static_cast<unsigned long long>(head)),
             2;
  }
  auto what = "reset " + name + " to " + std::to_string(to);
  if (op->runs)
    return ask_application(ctx, *op->store, reset_key(name), to + 1, what);
  if (auto err = move_here(ctx, *op, to))
    return store_failure(ctx, what, err);
  std::printf("%s: done (no application runs; it starts from there)\n", what.c_str());
  return 0;
}

int run_skip(const context& ctx) {
  return settle_stopped(ctx, true);
}

int run_retry(const context& ctx) {
  if (ctx.opts.parked == 0)
    return settle_stopped(ctx, false);
  using namespace detail::control;
  const auto& name = ctx.opts.args.at(0);
  const auto at = ctx.opts.parked;
  int status = 0;
  auto op = prepare(ctx, "retry", status);
  if (!op)
    return status;
  const auto& parked = op->row->parked;
  if (std::find(parked.begin(), parked.end(), at) == parked.end())
    return std::fprintf(stderr, "%s: event #%llu is not parked for %s (`handlers` lists what is)\n",
                        ctx.program.c_str(), static_cast<unsigned long long>(at), name.c_str()),
           2;
  if (op->row->kind != "handler")
    return std::fprintf(stderr,
                        "%s: %s is a %s: it handles events only in order; `reset` it to before #%llu instead\n",
                        ctx.program.c_str(), name.c_str(), op->row->kind.c_str(), static_cast<unsigned long long>(at)),
           2;
  if (!op->runs)
    return std::fprintf(stderr, "%s: the handler's code runs in the application: start it, then retry\n",
                        ctx.program.c_str()),
           1;
  auto what = "retry parked event #" + std::to_string(at) + " of " + name;
  if (auto asked = ask_application(ctx, *op->store, replay_key(name), at + 1, what); asked != 0)
    return asked;
  auto still = op->store->load_checkpoint(parked_key(name, at));
  if (still && *still && **still == at)
    return std::fprintf(stderr, "%s: %s failed again: the event stays parked (the application's log says why)\n",
                        ctx.program.c_str(), what.c_str()),
           1;
  return 0;
}

} // namespace sourcery::tool
