// Inspecting commands: stats (space, counts, how far behind each
// subscription and projection is) and verify (a full integrity check).

#include <cstdio>
#include <filesystem>

#include "../handler_control.hpp"
#include "progress_meter.hpp"
#include "tool_context.hpp"
#include "tool_output.hpp"

namespace sourcery::tool {

namespace {

using json = nlohmann::json;

struct checkpoint_row {
  std::string name;
  std::string kind; // handler, process manager, subscription, projection
  uint64_t position = 0;
};

} // namespace

int run_stats(const context& ctx) {
  auto store = open_read_only(ctx);
  if (!store)
    return 1;
  auto usage = maintenance_of(*store).usage();
  if (!usage)
    return store_failure(ctx, "stats", usage.error());
  uint64_t streams = 0, deleted = 0;
  if (auto err = store->for_each_stream([&](const persistence::stream_info& s) {
        ++streams;
        deleted += s.deleted ? 1 : 0;
        return true;
      }))
    return store_failure(ctx, "list streams", err);
  std::vector<checkpoint_row> rows;
  auto cps = store->checkpoints();
  if (!cps)
    return store_failure(ctx, "list checkpoints", cps.error());
  auto kind_of = [](const std::string& name, const char* otherwise) {
    return name.rfind("handler:", 0) == 0   ? "handler"
           : name.rfind("process:", 0) == 0 ? "process manager"
                                            : otherwise;
  };
  for (auto& [name, pos] : *cps)
    if (!detail::control::is_record(name)) // operators' requests and handlers' states (`handlers` shows them)
      rows.push_back({name, kind_of(name, "subscription"), pos});
  // Projections keep their checkpoints with their read models.
  std::string models_note;
  std::error_code ec;
  const bool postgres = ctx.uri().is_postgres();
  if (postgres || std::filesystem::exists(ctx.read_model_dir() + "/data.mdb", ec)) {
    auto models = ctx.open_read_models(true);
    auto listed = models ? (*models)->checkpoints() : caf::expected<std::vector<std::pair<std::string, uint64_t>>>{
                                                        models.error()};
    if (!listed && persistence::code_of(listed.error()) == persistence::store_errc::no_store)
      ; // no projection has run on this store
    else if (!listed)
      models_note = "read models of " + ctx.where() + ": " + persistence::describe(listed.error());
    else
      for (auto& [name, pos] : *listed)
        rows.push_back({name, kind_of(name, "projection"), pos});
  }
  uint64_t head = usage->head_position;
  auto entries_of = [&](const char* name) -> uint64_t {
    for (auto& db : usage->databases)
      if (db.name == name)
        return db.entries;
    return 0;
  };
  if (ctx.opts.json) {
    json dbs = json::array();
    for (auto& db : usage->databases)
      dbs.push_back({{"name", db.name}, {"entries", db.entries}, {"depth", db.depth}, {"pages", db.pages},
                     {"bytes", db.bytes}});
    json checkpoints = json::array();
    for (auto& r : rows)
      checkpoints.push_back({{"name", r.name}, {"kind", r.kind}, {"position", r.position},
                             {"behind", head > r.position ? head - r.position : 0}});
    json j{{"store", ctx.where()},
           {"data_dir", postgres ? json() : json(ctx.opts.data_dir)},
           {"head_position", head},
           {"events", entries_of("events")},
           {"streams", streams},
           {"deleted_streams", deleted},
           {"snapshots", entries_of("snapshots")},
           {"map", {{"size", usage->map_size}, {"used", usage->map_used}, {"file_size", usage->file_size},
                    {"page_size", usage->page_size}}},
           {"readers", {{"used", usage->readers_used}, {"max", usage->readers_max}}},
           {"databases", dbs},
           {"checkpoints", checkpoints}};
    if (!models_note.empty())
      j["read_models_error"] = models_note;
    std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  double used_pct = usage->map_size > 0 ? 100.0 * static_cast<double>(usage->map_used)
                                            / static_cast<double>(usage->map_size) : 0;
  std::printf("store          %s\n", ctx.where().c_str());
  std::printf("head position  %s\n", grouped(head).c_str());
  std::printf("events         %s\n", grouped(entries_of("events")).c_str());
  std::printf("streams        %s (%s deleted)\n", grouped(streams).c_str(), grouped(deleted).c_str());
  std::printf("snapshots      %s\n", grouped(entries_of("snapshots")).c_str());
  if (postgres) {
    std::printf("size           %s in %zu tables\n\n", human_bytes(usage->file_size).c_str(), usage->databases.size());
    std::printf("%-24s %12s %6s %12s\n", "TABLE", "ROWS", "", "SIZE");
  } else {
    std::printf("map            %s used of %s (%.1f%%); file %s; page %u B\n", human_bytes(usage->map_used).c_str(),
                human_bytes(usage->map_size).c_str(), used_pct, human_bytes(usage->file_size).c_str(),
                usage->page_size);
    std::printf("readers        %u of %u slots\n\n", usage->readers_used, usage->readers_max);
    std::printf("%-14s %12s %6s %12s\n", "DATABASE", "ENTRIES", "DEPTH", "SIZE");
  }
  for (auto& db : usage->databases)
    std::printf(postgres ? "%-24s %12s %6s %12s\n" : "%-14s %12s %6s %12s\n", db.name.c_str(),
                grouped(db.entries).c_str(), postgres ? "" : std::to_string(db.depth).c_str(),
                human_bytes(db.bytes).c_str());
  std::printf("\n%-40s %-16s %12s %12s\n", "CHECKPOINT", "KIND", "POSITION", "BEHIND");
  if (rows.empty())
    std::printf("(none)\n");
  for (auto& r : rows)
    std::printf("%-40s %-16s %12s %12s\n", r.name.c_str(), r.kind.c_str(), grouped(r.position).c_str(),
                grouped(head > r.position ? head - r.position : 0).c_str());
  if (!models_note.empty())
    std::printf("\n%s\n", models_note.c_str());
  return 0;
}

int run_verify(const context& ctx) {
  // Opened without the page check, so that damaged pages are reported as
  // problems of the store (its reads are guarded against faults meanwhile).
  auto store = open_read_only(ctx, false);
  if (!store)
    return 1;
  progress_meter meter{"verify", "events"};
  auto report = maintenance_of(*store).verify([&](uint64_t done, uint64_t total) { meter.update(done, total); });
  if (!report)
    return store_failure(ctx, "verify", report.error());
  meter.finish(report->events);
  if (ctx.opts.json) {
    json problems = json::array();
    for (auto& p : report->problems)
      problems.push_back({{"kind", p.kind}, {"message", p.message}});
    json j{{"ok", report->ok()},
           {"events", report->events},
           {"streams", report->streams},
           {"index_entries", report->index_entries},
           {"snapshots", report->snapshots},
           {"checkpoints", report->checkpoints},
           {"problem_count", report->problem_count},
           {"problems", problems}};
    std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  } else {
    std::printf("checked %s events, %s streams, %s index entries, %s snapshots, %s checkpoints\n",
                grouped(report->events).c_str(), grouped(report->streams).c_str(),
                grouped(report->index_entries).c_str(), grouped(report->snapshots).c_str(),
                grouped(report->checkpoints).c_str());
    if (report->ok()) {
      std::printf("ok: the store is intact\n");
    } else {
      std::printf("DAMAGED: %s problem%s found\n", grouped(report->problem_count).c_str(),
                  report->problem_count == 1 ? "" : "s");
      for (auto& p : report->problems)
        std::printf("  %-18s %s\n", p.kind.c_str(), p.message.c_str());
      if (report->problem_count > report->problems.size())
        std::printf("  ... and %s more\n", grouped(report->problem_count - report->problems.size()).c_str());
    }
  }
  std::fflush(stdout);
  return report->ok() ? 0 : 1;
}

} // namespace sourcery::tool
