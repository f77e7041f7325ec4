// Reading commands: read, all, tail, streams.

#include <chrono>
#include <csignal>
#include <cstdio>
#include <functional>
#include <map>

#include "tool_context.hpp"
#include "tool_output.hpp"

namespace sourcery::tool {

namespace {

/// `visit` for the store's batch loops: prints, and stops after `--limit`.
auto printer(const options& o, uint64_t& left) {
  return [&o, &left](const persistence::recorded_event& e) {
    print_event(e, o.json);
    return --left > 0;
  };
}

volatile std::sig_atomic_t interrupted = 0;

} // namespace

/// read and all: the store's own batch loop `each`, printing up to `--limit`.
template <class Each>
int print_events(const context& ctx, const std::string& what, Each each) {
  auto store = open_read_only(ctx);
  if (!store)
    return 1;
  uint64_t left = ctx.opts.limit;
  if (left == 0)
    return 0;
  if (auto err = each(*store, ctx.opts.from_given ? ctx.opts.from : 1, printer(ctx.opts, left)))
    return store_failure(ctx, what, err);
  return 0;
}

int run_read(const context& ctx) {
  const auto& stream = ctx.opts.args.at(0);
  bool missing = false;
  int rc = print_events(ctx, "read " + stream, [&](auto& store, uint64_t from, auto visit) -> caf::error {
    // A stream that does not exist is an answer a script must see (a typo
    // in an id prints nothing otherwise), not an empty success.
    auto info = store.stream_info(stream);
    if (!info)
      return info.error();
    if (!info->exists) {
      missing = true;
      return {};
    }
    return store.for_each_in_stream(stream, from, visit);
  });
  if (rc == 0 && missing)
    return failure(ctx, "read: no stream " + stream + " (`streams` lists them)");
  return rc;
}

namespace {

/// Whether `e` passes `all`'s filters.
bool wanted(const options& o, const persistence::recorded_event& e) {
  if (!o.type.empty() && e.type != o.type)
    return false;
  if (!o.category.empty()) {
    // The category is the stream id's prefix: "account" takes
    // "account-alice" (and "account"); "account-" says it outright.
    const auto& c = o.category;
    bool in = e.stream_id == c || (e.stream_id.rfind(c, 0) == 0 && (c.back() == '-' || e.stream_id[c.size()] == '-'));
    if (!in)
      return false;
  }
  if (!o.correlation.empty() && e.correlation_id != o.correlation)
    return false;
  if (!o.causation.empty() && e.causation_id != o.causation)
    return false;
  return true;
}

} // namespace

int run_all(const context& ctx) {
  const auto& o = ctx.opts;
  return print_events(ctx, "read $all", [&o](auto& store, uint64_t from, auto visit) -> caf::error {
    auto filtered = [&](const persistence::recorded_event& e) { return !wanted(o, e) || visit(e); };
    if (!o.backward)
      return store.for_each_in_all(from, filtered);
    // Newest first, from --from (default: the head).
    uint64_t at = o.from_given ? std::min(o.from, store.head_position()) : store.head_position();
    while (at > 0) {
      auto batch = store.read_all(at, 512, persistence::read_direction::backward);
      if (!batch)
        return batch.error();
      if (batch->empty())
        break;
      for (auto& e : *batch)
        if (!filtered(e))
          return {};
      at = batch->back().position - 1;
    }
    return {};
  });
}

int run_trace(const context& ctx) {
  auto id = persistence::uuid::parse(ctx.opts.args.at(0));
  if (!id)
    return std::fprintf(stderr, "%s: trace takes an event id (a UUID, as `all` prints), not '%s'\n",
                        ctx.program.c_str(), ctx.opts.args.at(0).c_str()),
           2;
  auto store = open_read_only(ctx);
  if (!store)
    return 1;
  // What an event caused comes after it in $all: one pass finds the root,
  // then every event whose causation is in the tree (a process manager's
  // command carries the event's id as its causation, and the command's
  // events carry it on).
  struct node {
    persistence::recorded_event event;
    std::vector<size_t> children;
  };
  std::vector<node> tree;
  std::map<std::string, size_t> index; // event id -> node
  auto err = store->for_each_in_all(1, [&](const persistence::recorded_event& e) {
    auto me = e.event_id.to_string();
    if (tree.empty()) {
      if (e.event_id == *id) {
        tree.push_back({e, {}});
        index[me] = 0;
      }
      return true;
    }
    if (auto parent = index.find(e.causation_id); parent != index.end()) {
      tree.push_back({e, {}});
      tree[parent->second].children.push_back(tree.size() - 1);
      index[me] = tree.size() - 1;
    }
    return true;
  });
  if (err)
    return store_failure(ctx, "trace", err);
  if (tree.empty())
    return failure(ctx, "trace: no event " + ctx.opts.args.at(0) + " in $all");
  if (ctx.opts.json) {
    std::function<nlohmann::json(size_t)> to_json = [&](size_t i) {
      auto j = event_json(tree[i].event);
      auto caused = nlohmann::json::array();
      for (auto c : tree[i].children)
        caused.push_back(to_json(c));
      j["caused"] = std::move(caused);
      return j;
    };
    std::printf("%s\n", to_json(0).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  // The events one command appended (same causation, same stream) are
  // shown under that command.
  std::function<void(size_t, const std::string&)> print = [&](size_t i, const std::string& indent) {
    auto& e = tree[i].event;
    std::printf("%s#%llu %s v%llu %s  id %s\n", indent.c_str(), static_cast<unsigned long long>(e.position),
                e.stream_id.c_str(), static_cast<unsigned long long>(e.stream_version), e.type.c_str(),
                e.event_id.to_string().c_str());
    std::string last_stream;
    for (auto c : tree[i].children) {
      auto& child = tree[c].event;
      if (child.stream_id != last_stream)
        std::printf("%s  -> a command to %s appended:\n", indent.c_str(), child.stream_id.c_str());
      last_stream = child.stream_id;
      print(c, indent + "     ");
    }
  };
  print(0, "");
  std::printf("%zu events in the tree, correlation %s\n", tree.size(), tree[0].event.correlation_id.c_str());
  return 0;
}

int run_tail(const context& ctx) {
  auto store = open_read_only(ctx);
  if (!store)
    return 1;
  uint64_t next = ctx.opts.from_given ? ctx.opts.from : store->head_position() + 1;
  std::signal(SIGINT, [](int) { interrupted = 1; });
  std::signal(SIGTERM, [](int) { interrupted = 1; });
  std::vector<persistence::recorded_event> batch;
  while (interrupted == 0) {
    // Polls the log's end, which another process moves.
    if (!store->wait_for_position(next, std::chrono::milliseconds{200}))
      continue;
    if (auto err = store->read_all_into(next, 1000, batch))
      return store_failure(ctx, "read $all", err);
    for (auto& e : batch)
      print_event(e, ctx.opts.json);
    if (!batch.empty())
      next = batch.back().position + 1;
  }
  return 0;
}

int run_streams(const context& ctx) {
  auto store = open_read_only(ctx);
  if (!store)
    return 1;
  uint64_t left = ctx.opts.limit;
  if (left == 0)
    return 0;
  if (!ctx.opts.json)
    std::printf("%-40s %10s  %-27s %s\n", "STREAM", "VERSION", "LAST WRITE", "STATE");
  auto err = store->for_each_stream([&](const persistence::stream_info& s) {
    if (ctx.opts.json) {
      nlohmann::json j{{"stream", s.stream_id},   {"version", s.version},
                       {"deleted", s.deleted},    {"created_at", time_of(s.created_at)},
                       {"last_write", time_of(s.updated_at)}};
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("%-40s %10llu  %-27s %s\n", s.stream_id.c_str(), static_cast<unsigned long long>(s.version),
                  time_of(s.updated_at).c_str(), s.deleted ? "deleted" : "");
    }
    return --left > 0;
  });
  std::fflush(stdout);
  if (err)
    return store_failure(ctx, "list streams", err);
  return 0;
}

} // namespace sourcery::tool
