// Reading commands: read, all, tail, streams.

#include <chrono>
#include <csignal>
#include <cstdio>

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

int run_all(const context& ctx) {
  return print_events(ctx, "read $all", [](auto& store, uint64_t from, auto visit) {
    return store.for_each_in_all(from, visit);
  });
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
