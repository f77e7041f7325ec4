// import: a store from an export (export_file.hpp says the format), written
// beside its target and moved into place once complete and verified.


#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <unordered_map>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "export_file.hpp"
#include "progress_meter.hpp"
#include "sourcery/config.hpp"
#if SOURCERY_WITH_POSTGRES
#include "sourcery/persistence/postgres_store.hpp"
#endif
#include "sourcery/runtime/http/message.hpp"
#include "tool_context.hpp"
#include "tool_output.hpp"

namespace sourcery::tool {

namespace {

using namespace export_file;

// -- reading lines back ------------------------------------------------------------

/// A malformed line: reported with its number.
struct bad_line {
  std::string why;
};

const json& field(const json& j, const char* key) {
  auto i = j.find(key);
  if (i == j.end())
    throw bad_line{std::string{"no \""} + key + "\""};
  return *i;
}

uint64_t number_field(const json& j, const char* key) {
  auto& v = field(j, key);
  if (!v.is_number_unsigned())
    throw bad_line{std::string{"\""} + key + "\" is not a non-negative integer"};
  return v.get<uint64_t>();
}

uint32_t u32_field(const json& j, const char* key) {
  auto v = number_field(j, key);
  if (v > UINT32_MAX)
    throw bad_line{std::string{"\""} + key + "\" is too large"};
  return static_cast<uint32_t>(v);
}

int64_t time_field(const json& j, const char* key) {
  auto& v = field(j, key);
  if (!v.is_number_integer())
    throw bad_line{std::string{"\""} + key + "\" is not an integer"};
  return v.get<int64_t>();
}

persistence::bytes bytes_field(const json& j, const char* key) {
  auto& v = field(j, key);
  auto b = v.is_string() ? from_base64(v.get_ref<const std::string&>()) : std::nullopt;
  if (!b)
    throw bad_line{std::string{"\""} + key + "\" is not base64"};
  return *b;
}

std::string text_field(const json& j, const char* key) {
  if (auto i = j.find(std::string{key} + "_base64"); i != j.end()) {
    auto b = bytes_field(j, (std::string{key} + "_base64").c_str());
    return {b.begin(), b.end()};
  }
  auto& v = field(j, key);
  if (!v.is_string())
    throw bad_line{std::string{"\""} + key + "\" is not a string"};
  return v.get<std::string>();
}

/// The JSON shown for people (`shown`) says what the exact bytes say.
void check_shown(const json& j, const char* shown, const persistence::bytes& exact) {
  auto i = j.find(shown);
  if (i != j.end() && json::parse(render(payload(exact))) != *i)
    throw bad_line{std::string{"\""} + shown + "\" does not match \"" + shown
                   + "_msgpack\" (edited?); change the msgpack bytes, which are what is imported"};
}

persistence::recorded_event event_of(const json& j) {
  persistence::recorded_event e;
  e.position = number_field(j, "position");
  e.stream_id = text_field(j, "stream");
  e.stream_version = number_field(j, "version");
  e.type = text_field(j, "type");
  e.schema_version = u32_field(j, "schema_version");
  auto id = persistence::uuid::parse(text_field(j, "event_id"));
  if (!id)
    throw bad_line{"\"event_id\" is not a UUID"};
  e.event_id = *id;
  e.created_at = time_field(j, "created_at_us");
  e.causation_id = text_field(j, "causation_id");
  e.correlation_id = text_field(j, "correlation_id");
  e.data = bytes_field(j, "data_msgpack");
  // "data" is for people; the bytes are what is imported. An edit of one
  // without the other is refused rather than silently dropped.
  check_shown(j, "data", e.data);
  check_shown(j, "metadata", bytes_field(j, "metadata_msgpack"));
  e.metadata = bytes_field(j, "metadata_msgpack");
  return e;
}

/// Where an import writes until it has succeeded: beside the target, so a
/// failed import leaves no half store behind.
fs::path staging_dir(const fs::path& target) {
  auto t = fs::absolute(target).lexically_normal();
  if (!t.has_filename())
    t = t.parent_path();
  return t.parent_path() / ("." + t.filename().string() + ".importing");
}


} // namespace

namespace {

/// The lock an import holds on the directory its target and staging live
/// in: two imports beside each other would share one staging directory.
class import_lock {
public:
  explicit import_lock(const fs::path& dir) : fd_(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
    if (fd_ >= 0 && ::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      busy_ = errno == EWOULDBLOCK;
      why_ = std::strerror(errno);
      ::close(std::exchange(fd_, -1));
    } else if (fd_ < 0) {
      why_ = std::strerror(errno);
    }
  }
  ~import_lock() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  import_lock(const import_lock&) = delete;
  import_lock& operator=(const import_lock&) = delete;
  bool held() const { return fd_ >= 0; }
  bool busy() const { return busy_; }
  const std::string& why() const { return why_; }

private:
  int fd_;
  bool busy_ = false;
  std::string why_;
};

} // namespace

namespace {

/// Where an import writes: beside its target, moved into place in one step
/// once complete and verified, so that a failed import leaves nothing
/// behind. LMDB: a staging directory renamed over the (new or empty)
/// target. PostgreSQL: a staging schema renamed to the target schema in one
/// transaction (a target schema may exist only if it holds no events).
struct import_target {
  std::string name;                               // for messages
  std::unique_ptr<persistence::event_store> store; // the staging store
  /// Opens the staging store's read models (on first use).
  std::function<caf::expected<std::unique_ptr<persistence::projection_store>>()> open_models;
  std::unique_ptr<persistence::projection_store> models;
  std::function<void()> discard;                  // drops the staging store
  std::function<caf::error()> commit;             // moves it into place
};

caf::expected<import_target> lmdb_target(const context& ctx, std::unique_ptr<import_lock>& lock) {
  fs::path target{ctx.opts.data_dir};
  std::error_code ec;
  auto staging = staging_dir(target);
  lock = std::make_unique<import_lock>(staging.parent_path());
  if (!lock->held())
    return persistence::make_error(persistence::store_errc::store_in_use,
                                   lock->busy() ? "another import into " + staging.parent_path().string()
                                                    + " is running; wait for it to end"
                                                : "cannot lock " + staging.parent_path().string() + ": " + lock->why());
  if (fs::exists(target, ec) && !fs::is_empty(target, ec))
    return persistence::make_error(persistence::store_errc::invalid_argument,
                                   target.string() + " is not empty; import into a new directory");
  fs::remove_all(staging, ec); // left by an import that died (we hold the lock)
  persistence::lmdb_options lo;
  lo.path = staging.string();
  auto opened = persistence::lmdb_store::open(lo);
  if (!opened)
    return opened.error();
  import_target t;
  t.name = target.string();
  t.store = std::move(*opened);
  t.open_models = [staging] {
    persistence::projection_store_options po;
    po.path = (staging / "read-models").string();
    return persistence::projection_store::open(po);
  };
  t.discard = [staging] {
    std::error_code e;
    fs::remove_all(staging, e);
  };
  t.commit = [staging, target]() -> caf::error {
    std::error_code e;
    fs::rename(staging, target, e);
    if (!e)
      return {};
    auto why = e.message(); // before the clean-up reuses e
    fs::remove_all(staging, e);
    return persistence::make_error(persistence::store_errc::io_error,
                                   "cannot move the store into " + target.string() + ": " + why);
  };
  return t;
}

caf::expected<import_target> postgres_target(const context& ctx) {
#if !SOURCERY_WITH_POSTGRES
  return persistence::open_store(ctx.uri()).error(); // says it has none
#else
  using persistence::postgres_store;
  auto uri = ctx.uri();
  auto target = uri.schema;
  auto staging_uri = uri;
  staging_uri.schema = target.size() > 40 ? target.substr(0, 40) + "_import" : target + "_import";
  // The target may exist only as an empty store (an application started
  // on it once); one holding events is refused.
  auto head = postgres_store::head_of(uri.location, target);
  if (!head)
    return head.error();
  if (*head != 0)
    return persistence::make_error(persistence::store_errc::invalid_argument,
                                   "schema " + target + " already holds " + std::to_string(*head)
                                     + " events; import into a new schema (schema=NAME in the URI)");
  if (auto err = postgres_store::drop_schema(uri.location, staging_uri.schema))
    return err; // left by an import that died
  persistence::store_open_options create; // the import makes its store
  create.create = true;
  auto opened = persistence::open_store(staging_uri, create);
  if (!opened)
    return opened.error();
  import_target t;
  t.name = uri.to_string();
  t.store = std::move(*opened);
  t.open_models = [staging_uri] { return persistence::open_read_models(staging_uri); };
  t.discard = [conninfo = uri.location, staging = staging_uri.schema] {
    (void) postgres_store::drop_schema(conninfo, staging);
  };
  t.commit = [conninfo = uri.location, staging = staging_uri.schema, target] {
    return postgres_store::replace_schema(conninfo, staging, target);
  };
  return t;
#endif
}

} // namespace

/// A read model as the export holds it.
struct exported_model {
  std::string name;
  uint64_t position = 0;
  std::vector<std::tuple<std::string, std::string, std::string>> rows; // table, key, value
};

/// What became of one exported read model.
struct model_outcome {
  std::string name;
  std::string outcome; // carried, rebuilt, copied, not carried
  uint64_t position = 0;
  std::string note;
};

/// Brings the exported read models into the staging store's: process
/// managers' states with their positions (else a migrated saga would send
/// its history's commands again), the tool's projections rebuilt from the
/// imported log, the others copied between LMDB stores (whose rows are all
/// there is to them) or, where a copy cannot be faithful (a PostgreSQL
/// projection may keep SQL tables of its own; an LMDB one's rows are not
/// PostgreSQL's tables), left at the head or the origin (--handlers-from).
caf::expected<std::vector<model_outcome>> import_read_models(const context& ctx, import_target& target,
                                                             const std::string& source_models,
                                                             const std::vector<exported_model>& exported,
                                                             uint64_t head) {
  std::vector<model_outcome> out;
  const bool from_start = ctx.opts.handlers_from == "start";
  const std::string target_models = ctx.uri().is_postgres() ? "postgresql" : "lmdb";
  auto models = [&]() -> caf::expected<persistence::projection_store*> {
    if (!target.models) {
      auto opened = target.open_models();
      if (!opened)
        return opened.error();
      target.models = std::move(*opened);
    }
    return target.models.get();
  };
  auto copy = [&](const exported_model& m) -> caf::error {
    auto into = models();
    if (!into)
      return into.error();
    return (*into)->write(m.name, m.position, [&](persistence::projection_store::writer& w) {
      for (auto& [table, key, value] : m.rows)
        w.put(table, key, value);
      return caf::error{};
    });
  };
  target.store->use_registry(&ctx.types);
  for (auto& m : exported) {
    const tool_projection* registered = nullptr;
    for (auto& p : ctx.projections)
      if (p.name == m.name)
        registered = &p;
    model_outcome o{m.name, "", m.position, ""};
    if (m.name.rfind("process:", 0) == 0) {
      if (auto err = copy(m))
        return err;
      o.outcome = "carried";
      o.note = std::to_string(m.rows.size()) + " instance rows";
    } else if (registered != nullptr) {
      auto into = models();
      if (!into)
        return into.error();
      auto reached = registered->rebuild(*target.store, **into, {});
      if (!reached)
        return reached.error();
      o.outcome = "rebuilt";
      o.position = *reached;
    } else if (source_models == "lmdb" && target_models == "lmdb") {
      if (auto err = copy(m))
        return err;
      o.outcome = "copied";
      o.note = std::to_string(m.rows.size()) + " rows";
    } else {
      o.outcome = "not carried";
      if (from_start) {
        o.position = 0;
        o.note = "it rebuilds from the origin when the application starts (--handlers-from start)";
      } else {
        auto into = models();
        if (!into)
          return into.error();
        if (auto err = (*into)->write(m.name, head, [](auto&) { return caf::error{}; }))
          return err;
        o.position = head;
        o.note = "its read model starts empty at the head; rebuild it with the application's `admin rebuild "
                 + m.name + "` (or import with --handlers-from start)";
      }
    }
    out.push_back(std::move(o));
  }
  return out;
}

int run_import(const context& ctx) {
  std::unique_ptr<import_lock> lock;
  auto prepared = ctx.uri().is_postgres() ? postgres_target(ctx) : lmdb_target(ctx, lock);
  if (!prepared)
    return failure(ctx, "import: " + persistence::describe(prepared.error()));
  auto& store = *prepared->store;
  auto& maintenance = maintenance_of(store);
  auto abandon = [&](const std::string& why) {
    prepared->store.reset();
    prepared->discard();
    return failure(ctx, "import: " + why + "; nothing was imported");
  };
  std::ifstream file;
  std::istream* in = &std::cin;
  if (!ctx.opts.input.empty() && ctx.opts.input != "-") {
    file.open(ctx.opts.input);
    if (!file)
      return abandon("cannot read " + ctx.opts.input);
  }
  if (file.is_open())
    in = &file;
  progress_meter meter{"import", "events"};
  std::string line;
  uint64_t line_no = 0, head = 0, events = 0;
  bool header = false, end = false;
  std::vector<persistence::recorded_event> batch;
  std::set<persistence::uuid> event_ids;
  std::string source_models; // where the exported read models were: "lmdb", "postgresql", ""
  std::vector<exported_model> exported_models;
  auto flush = [&]() -> caf::error {
    if (batch.empty())
      return {};
    auto r = maintenance.import_events(std::move(batch));
    batch.clear();
    meter.update(events, head);
    return r ? caf::error{} : r.error();
  };
  while (std::getline(*in, line)) {
    ++line_no;
    if (line.empty())
      continue;
    auto where = "line " + std::to_string(line_no);
    if (end)
      return abandon(where + ": text after the end line");
    try {
      auto j = json::parse(line);
      if (!j.is_object())
        throw bad_line{"not a JSON object"};
      auto kind = text_field(j, "kind");
      if (!header) {
        if (kind != "sourcery.export")
          throw bad_line{"not a Sourcery export (the first line must be its header)"};
        if (number_field(j, "format") != export_file::format)
          throw bad_line{"export format " + std::to_string(number_field(j, "format")) + "; this build reads format "
                         + std::to_string(export_file::format)};
        head = number_field(j, "head");
        if (auto rm = j.find("read_models"); rm != j.end() && rm->is_string())
          source_models = rm->get<std::string>();
        header = true;
        continue;
      }
      if (kind != "event")
        if (auto err = flush())
          return abandon(where + ": " + persistence::describe(err));
      if (kind == "event") {
        batch.push_back(event_of(j));
        if (!event_ids.insert(batch.back().event_id).second) // idempotency keys rely on them
          throw bad_line{"event id " + batch.back().event_id.to_string() + " is used twice"};
        if (batch.back().position != events + 1) // caught here, to name the line
          throw bad_line{"event " + std::to_string(batch.back().position)
                         + " does not continue the log, which ends at " + std::to_string(events)};
        ++events;
        if (batch.size() >= 4096)
          if (auto err = flush())
            return abandon(where + ": " + persistence::describe(err));
      } else if (kind == "deleted_stream") {
        persistence::stream_info s;
        s.stream_id = text_field(j, "stream");
        s.version = number_field(j, "version");
        s.created_at = time_field(j, "created_at_us");
        s.updated_at = time_field(j, "updated_at_us");
        if (auto r = maintenance.import_deleted_stream(s); !r)
          return abandon(where + ": " + persistence::describe(r.error()));
      } else if (kind == "snapshot") {
        persistence::snapshot snap;
        snap.stream_id = text_field(j, "stream");
        snap.stream_version = number_field(j, "stream_version");
        snap.snapshot_version = u32_field(j, "snapshot_version");
        snap.type = text_field(j, "type");
        snap.created_at = time_field(j, "created_at_us");
        snap.data = bytes_field(j, "data_msgpack");
        if (auto r = maintenance.import_snapshot(std::move(snap)); !r)
          return abandon(where + ": " + persistence::describe(r.error()));
      } else if (kind == "checkpoint") {
        if (auto r = store.save_checkpoint(text_field(j, "name"), number_field(j, "position")); !r)
          return abandon(where + ": " + persistence::describe(r.error()));
      } else if (kind == "read_model") {
        exported_models.push_back({text_field(j, "name"), number_field(j, "position"), {}});
      } else if (kind == "read_model_row") {
        auto name = text_field(j, "name");
        if (exported_models.empty() || exported_models.back().name != name)
          throw bad_line{"a row of read model \"" + name + "\" outside its read_model line"};
        auto value = bytes_field(j, "value_base64");
        exported_models.back().rows.emplace_back(text_field(j, "table"), text_field(j, "key"),
                                                 std::string{value.begin(), value.end()});
      } else if (kind == "end") {
        if (number_field(j, "events") != events)
          throw bad_line{"the export announces " + std::to_string(number_field(j, "events")) + " events; "
                         + std::to_string(events) + " were read"};
        end = true;
      } else {
        throw bad_line{"unknown kind \"" + kind + "\""};
      }
    } catch (const json::exception& e) {
      return abandon(where + ": not JSON (" + e.what() + ")");
    } catch (const bad_line& e) {
      return abandon(where + ": " + e.why);
    }
  }
  if (in->bad())
    return abandon("read error");
  if (!header)
    return abandon("the input is empty");
  if (!end)
    return abandon("the export is cut short (no end line after line " + std::to_string(line_no) + ")");
  // Check what was written before it takes the target's place.
  auto report = maintenance.verify();
  if (!report || !report->ok())
    return abandon(report ? "the imported store does not verify: " + report->problems.front().message
                          : persistence::describe(report.error()));
  auto models_said = import_read_models(ctx, *prepared, source_models, exported_models, head);
  if (!models_said)
    return abandon("read models: " + persistence::describe(models_said.error()));
  prepared->store.reset();
  prepared->models.reset();
  if (auto err = prepared->commit())
    return failure(ctx, "import: " + persistence::describe(err));
  meter.finish(events);
  if (ctx.opts.json) {
    json handlers = json::array();
    for (auto& m : *models_said)
      handlers.push_back({{"name", m.name}, {"outcome", m.outcome}, {"position", m.position}, {"note", m.note}});
    std::printf("%s\n", json{{"imported", events}, {"store", prepared->name}, {"read_models", handlers}}.dump().c_str());
  } else {
    std::printf("imported %s events into %s\n", grouped(events).c_str(), prepared->name.c_str());
    for (auto& m : *models_said)
      std::printf("  %-32s %-12s at %s%s%s\n", m.name.c_str(), m.outcome.c_str(), grouped(m.position).c_str(),
                  m.note.empty() ? "" : ": ", m.note.c_str());
  }
  return 0;
}

} // namespace sourcery::tool
