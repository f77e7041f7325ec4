// export: a store to newline-delimited JSON (export_file.hpp says the format).

#include <cstdio>
#include <filesystem>
#include <set>

#include "export_file.hpp"
#include "progress_meter.hpp"
#include "sourcery/runtime/http/message.hpp"
#include "tool_context.hpp"
#include "tool_output.hpp"

namespace sourcery::tool {

namespace {

using namespace export_file;

void put_text(line_json& j, const char* key, const std::string& s) {
  if (http::valid_utf8(s))
    j[key] = s;
  else
    j[std::string{key} + "_base64"] = base64(persistence::bytes{s.begin(), s.end()});
}

} // namespace

int run_export(const context& ctx) {
  auto store = open_read_only(ctx);
  if (!store)
    return 1;
  std::FILE* out = stdout;
  bool to_file = !ctx.opts.output.empty() && ctx.opts.output != "-";
  if (to_file && (out = std::fopen(ctx.opts.output.c_str(), "w")) == nullptr)
    return failure(ctx, "cannot write " + ctx.opts.output + ": " + std::strerror(errno));
  auto write = [out](const line_json& j) { std::fprintf(out, "%s\n", render(j).c_str()); };

  // A store being written keeps growing: export what the log held when the
  // export began, and what agrees with it.
  const uint64_t head = store->head_position();
  // The read models beside the store, if any (none yet on a store no
  // projection or process manager has written).
  std::unique_ptr<persistence::projection_store> models;
  std::error_code ec;
  if (ctx.uri().is_postgres() || fs::exists(ctx.read_model_dir() + "/data.mdb", ec)) {
    auto opened = ctx.open_read_models(true);
    if (opened)
      models = std::move(*opened);
    else if (persistence::code_of(opened.error()) != persistence::store_errc::no_store)
      return store_failure(ctx, "open the read models of " + ctx.where(), opened.error());
  }
  write({{"kind", "sourcery.export"},
         {"format", export_file::format},
         {"head", head},
         {"read_models", models ? line_json(ctx.uri().is_postgres() ? "postgresql" : "lmdb") : line_json()}});
  progress_meter meter{"export", "events"};
  std::unordered_map<std::string, uint64_t> versions; // exported version per stream
  uint64_t events = 0;
  auto err = store->for_each_in_all(1, [&](const persistence::recorded_event& e) {
    if (e.position > head)
      return false;
    line_json j{{"kind", "event"}, {"position", e.position}};
    put_text(j, "stream", e.stream_id);
    j["version"] = e.stream_version;
    put_text(j, "type", e.type);
    j["schema_version"] = e.schema_version;
    j["event_id"] = e.event_id.to_string();
    j["created_at"] = time_of(e.created_at);
    j["created_at_us"] = e.created_at;
    put_text(j, "causation_id", e.causation_id);
    put_text(j, "correlation_id", e.correlation_id);
    j["data"] = payload(e.data);
    j["metadata"] = payload(e.metadata);
    j["data_msgpack"] = base64(e.data);
    j["metadata_msgpack"] = base64(e.metadata);
    write(j);
    versions[e.stream_id] = e.stream_version;
    meter.update(++events, head);
    return true;
  });
  if (!err)
    err = store->for_each_stream([&](const persistence::stream_info& s) {
      auto v = versions.find(s.stream_id);
      if (s.deleted && s.version == (v == versions.end() ? 0 : v->second)) {
        line_json j{{"kind", "deleted_stream"}};
        put_text(j, "stream", s.stream_id);
        j["version"] = s.version;
        j["created_at_us"] = s.created_at;
        j["updated_at_us"] = s.updated_at;
        write(j);
      }
      return true;
    });
  if (!err)
    err = store->for_each_snapshot([&](const persistence::snapshot& snap) {
      auto v = versions.find(snap.stream_id);
      if (v == versions.end() || snap.stream_version > v->second)
        return true; // taken after the export began
      line_json j{{"kind", "snapshot"}};
      put_text(j, "stream", snap.stream_id);
      j["stream_version"] = snap.stream_version;
      j["snapshot_version"] = snap.snapshot_version;
      put_text(j, "type", snap.type);
      j["created_at_us"] = snap.created_at;
      j["data_msgpack"] = base64(snap.data);
      write(j);
      return true;
    });
  if (!err) {
    auto cps = store->checkpoints();
    if (!cps) {
      err = cps.error();
    } else {
      for (auto& [name, pos] : *cps) {
        line_json j{{"kind", "checkpoint"}};
        put_text(j, "name", name);
        j["position"] = std::min(pos, head); // a handler past the export handles those events again
        write(j);
      }
    }
  }
  if (!err && models) {
    auto cps = models->checkpoints();
    if (!cps)
      err = cps.error();
    for (size_t i = 0; !err && i < cps->size(); ++i) {
      auto& [name, pos] = (*cps)[i];
      line_json j{{"kind", "read_model"}};
      put_text(j, "name", name);
      j["position"] = std::min(pos, head);
      write(j);
      auto rows = models->dump(name);
      if (!rows) {
        err = rows.error();
        break;
      }
      for (auto& [table, key, value] : *rows) {
        line_json r{{"kind", "read_model_row"}};
        put_text(r, "name", name);
        put_text(r, "table", table);
        put_text(r, "key", key);
        r["value_base64"] = base64(persistence::bytes{value.begin(), value.end()});
        write(r);
      }
    }
  }
  if (err) {
    if (to_file)
      std::fclose(out);
    return store_failure(ctx, "export", err);
  }
  write({{"kind", "end"}, {"events", events}});
  bool written = std::fflush(out) == 0 && !std::ferror(out);
  if (to_file)
    written = std::fclose(out) == 0 && written;
  if (!written)
    return failure(ctx, "cannot write the export: " + std::string{std::strerror(errno)});
  if (ctx.opts.json)
    std::fprintf(stderr, "%s\n", json{{"exported", events}, {"head", head}}.dump().c_str());
  else
    meter.finish(events);
  return 0;
}

} // namespace sourcery::tool
