#include "sourcery/persistence/memory_store.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <shared_mutex>
#include <unordered_map>

#include "event_sink.hpp"
#include "key_cache.hpp"
#include "personal_data.hpp"

namespace sourcery::persistence {

namespace {

int64_t wall_micros() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

struct stream_entry {
  std::vector<uint64_t> positions; // positions[v - 1] holds version v
  bool deleted = false;
  int64_t created_at = 0;
  int64_t updated_at = 0;
};

} // namespace

struct memory_store::impl {
  mutable std::shared_mutex mtx;
  std::vector<recorded_event> log; // log[p - 1] holds position p
  std::unordered_map<std::string, stream_entry> streams;
  std::unordered_map<std::string, snapshot> snapshots;
  std::unordered_map<std::string, uint64_t> checkpoints;
  std::unordered_map<std::string, bytes> key_records; // subject -> detail::encode_key_record
  std::atomic<uint64_t> head{0};

  /// The key of `subject`, created when it has none. Caller holds `mtx`.
  caf::expected<detail::subject_key> key_for(const memory_store& store, std::string_view subject) {
    if (auto cached = store.keys().find(subject))
      return *cached;
    std::string s{subject};
    if (auto i = key_records.find(s); i != key_records.end()) {
      auto key = detail::decode_key_record(s, i->second.data(), i->second.size(), store.master_key());
      if (!key)
        return key.error();
      if (*key) {
        store.keys().put(s, **key);
        return **key;
      }
    }
    auto fresh = detail::make_fresh_key(s, store.master_key());
    if (!fresh)
      return fresh.error();
    key_records[s] = std::move(fresh->record);
    store.keys().put(s, fresh->key);
    return fresh->key;
  }
};

memory_store::memory_store() : impl_(std::make_unique<impl>()) {}

memory_store::~memory_store() {
  close_base();
}

uint64_t memory_store::head_position() const {
  return impl_->head.load(std::memory_order_acquire);
}

void memory_store::do_append(std::string stream, expected_version expected,
                             std::vector<event_data> events, append_callback done) {
  caf::expected<append_result> result{append_result{}};
  // Personal fields sealed before the store's lock: only a subject's first
  // key takes it.
  for (auto& ev : events) {
    auto key_for = [this](std::string_view subject) -> caf::expected<detail::subject_key> {
      if (auto cached = keys().find(subject))
        return *cached;
      std::unique_lock guard{impl_->mtx};
      return impl_->key_for(*this, subject);
    };
    if (auto err = seal_personal_fields(ev.data, ev.subject.empty() ? stream : ev.subject, key_for))
      return done(std::move(err));
  }
  {
    std::unique_lock guard{impl_->mtx};
    auto& s = impl_->streams[stream];
    uint64_t version = s.positions.size();
    if (s.deleted) {
      result = make_error(store_errc::stream_deleted, "stream '" + stream + "' is deleted");
    } else if (!expected.admits(version)) {
      result = make_error(store_errc::wrong_expected_version,
                          "stream '" + stream + "' is at version " + std::to_string(version)
                            + ", expected " + expected.to_string());
    }
    if (result) {
      auto now = wall_micros();
      append_result r;
      for (auto& ev : events) {
        recorded_event rec;
        rec.event_id = ev.event_id;
        rec.stream_id = stream;
        rec.stream_version = ++version;
        rec.position = impl_->log.size() + 1;
        rec.type = std::move(ev.type);
        rec.schema_version = ev.schema_version;
        rec.data = std::move(ev.data);
        rec.metadata = std::move(ev.metadata);
        rec.causation_id = std::move(ev.causation_id);
        rec.correlation_id = std::move(ev.correlation_id);
        rec.created_at = now;
        if (r.first_position == 0)
          r.first_position = rec.position;
        r.last_position = rec.position;
        s.positions.push_back(rec.position);
        impl_->log.push_back(std::move(rec));
      }
      if (!events.empty()) {
        if (s.created_at == 0)
          s.created_at = now;
        s.updated_at = now;
      }
      r.stream_version = version;
      result = r;
      impl_->head.store(impl_->log.size(), std::memory_order_release);
    }
    if (s.positions.empty() && !s.deleted)
      impl_->streams.erase(stream); // a failed or empty first append leaves no stream
  }
  if (result && result->last_position != 0)
    notify_appended();
  done(std::move(result));
}

caf::expected<void> memory_store::do_delete_stream(std::string_view stream, expected_version expected) {
  std::unique_lock guard{impl_->mtx};
  auto i = impl_->streams.find(std::string{stream});
  uint64_t version = i == impl_->streams.end() ? 0 : i->second.positions.size();
  if (i != impl_->streams.end() && i->second.deleted)
    return make_error(store_errc::stream_deleted, "stream '" + std::string{stream} + "' is already deleted");
  if (!expected.admits(version))
    return make_error(store_errc::wrong_expected_version,
                      "stream '" + std::string{stream} + "' is at version " + std::to_string(version)
                        + ", expected " + expected.to_string());
  auto& s = impl_->streams[std::string{stream}];
  s.deleted = true;
  s.updated_at = wall_micros();
  impl_->snapshots.erase(std::string{stream});
  return {};
}

caf::error memory_store::do_read_stream(std::string_view stream, uint64_t from, size_t max_count,
                                        read_direction direction, std::vector<recorded_event>& out) const {
  std::shared_lock guard{impl_->mtx};
  detail::event_sink sink{out};
  auto i = impl_->streams.find(std::string{stream});
  if (i != impl_->streams.end()) {
    if (i->second.deleted)
      return make_error(store_errc::stream_deleted, "stream '" + std::string{stream} + "' is deleted");
    const auto& pos = i->second.positions;
    if (direction == read_direction::forward) {
      for (uint64_t v = std::max<uint64_t>(from, 1); v <= pos.size() && sink.size() < max_count; ++v)
        sink.next() = impl_->log[pos[v - 1] - 1];
    } else {
      for (uint64_t v = std::min<uint64_t>(from, pos.size()); v >= 1 && sink.size() < max_count; --v)
        sink.next() = impl_->log[pos[v - 1] - 1];
    }
  }
  sink.finish();
  return {};
}

caf::error memory_store::do_read_all(uint64_t from, size_t max_count, read_direction direction,
                                     std::vector<recorded_event>& out) const {
  std::shared_lock guard{impl_->mtx};
  detail::event_sink sink{out};
  const auto& log = impl_->log;
  if (direction == read_direction::forward) {
    for (uint64_t p = std::max<uint64_t>(from, 1); p <= log.size() && sink.size() < max_count; ++p)
      sink.next() = log[p - 1];
  } else {
    for (uint64_t p = std::min<uint64_t>(from, log.size()); p >= 1 && sink.size() < max_count; --p)
      sink.next() = log[p - 1];
  }
  sink.finish();
  return {};
}

caf::expected<stream_info> memory_store::do_stream_info(std::string_view stream) const {
  std::shared_lock guard{impl_->mtx};
  persistence::stream_info info;
  info.stream_id = std::string{stream};
  auto i = impl_->streams.find(info.stream_id);
  if (i == impl_->streams.end())
    return info;
  info.exists = true;
  info.version = i->second.positions.size();
  info.deleted = i->second.deleted;
  info.created_at = i->second.created_at;
  info.updated_at = i->second.updated_at;
  return info;
}

caf::expected<void> memory_store::do_save_snapshot(snapshot snap) {
  std::unique_lock guard{impl_->mtx};
  auto key_for = [this](std::string_view subject) { return impl_->key_for(*this, subject); };
  if (auto err = seal_personal_fields(snap.data, snap.stream_id, key_for))
    return err;
  snap.created_at = wall_micros();
  auto key = snap.stream_id;
  impl_->snapshots[key] = std::move(snap);
  return {};
}

caf::expected<std::optional<snapshot>> memory_store::do_load_snapshot(std::string_view stream) const {
  std::shared_lock guard{impl_->mtx};
  auto i = impl_->snapshots.find(std::string{stream});
  if (i == impl_->snapshots.end())
    return std::optional<snapshot>{};
  return std::optional<snapshot>{i->second};
}

caf::expected<void> memory_store::do_delete_snapshot(std::string_view stream) {
  std::unique_lock guard{impl_->mtx};
  impl_->snapshots.erase(std::string{stream});
  return {};
}

caf::expected<void> memory_store::do_save_checkpoint(std::string_view name, uint64_t position) {
  std::unique_lock guard{impl_->mtx};
  impl_->checkpoints[std::string{name}] = position;
  return {};
}

caf::expected<std::optional<uint64_t>> memory_store::do_load_checkpoint(std::string_view name) const {
  std::shared_lock guard{impl_->mtx};
  auto i = impl_->checkpoints.find(std::string{name});
  if (i == impl_->checkpoints.end())
    return std::optional<uint64_t>{};
  return std::optional<uint64_t>{i->second};
}

namespace {

/// Up to `max_count` entries of `map` with keys after `after`, in key order
/// that `keep` accepts (the maps are unordered: sort the keys first).
template <class Map, class T, class Make, class Keep>
void list_after(const Map& map, std::string_view after, size_t max_count, std::vector<T>& out, Make make, Keep keep) {
  std::vector<const std::string*> keys;
  for (const auto& [key, value] : map)
    if (key > after && keep(value))
      keys.push_back(&key);
  std::sort(keys.begin(), keys.end(), [](auto* a, auto* b) { return *a < *b; });
  out.clear();
  for (size_t i = 0; i < keys.size() && i < max_count; ++i)
    out.push_back(make(*keys[i], map.at(*keys[i])));
}

} // namespace

caf::error memory_store::do_list_streams(std::string_view after, size_t max_count,
                                         std::vector<persistence::stream_info>& out) const {
  std::shared_lock guard{impl_->mtx};
  list_after(impl_->streams, after, max_count, out, [](const std::string& id, const stream_entry& s) {
    return persistence::stream_info{id, s.positions.size(), true, s.deleted, s.created_at, s.updated_at};
  }, [](const stream_entry& s) { return !s.positions.empty() || s.deleted; }); // a rejected append left an entry
  return {};
}

caf::error memory_store::do_list_snapshots(std::string_view after, size_t max_count, std::vector<snapshot>& out) const {
  std::shared_lock guard{impl_->mtx};
  list_after(impl_->snapshots, after, max_count, out, [](const std::string&, const snapshot& s) { return s; },
             [](const snapshot&) { return true; });
  return {};
}

caf::expected<std::vector<std::pair<std::string, uint64_t>>> memory_store::do_list_checkpoints() const {
  std::shared_lock guard{impl_->mtx};
  std::vector<std::pair<std::string, uint64_t>> out(impl_->checkpoints.begin(), impl_->checkpoints.end());
  std::sort(out.begin(), out.end());
  return out;
}

// -- personal data ------------------------------------------------------------------

caf::error memory_store::do_load_key_records(const std::vector<std::string>& subjects,
                                             std::vector<std::pair<std::string, bytes>>& found) const {
  std::shared_lock guard{impl_->mtx};
  for (auto& s : subjects)
    if (auto i = impl_->key_records.find(s); i != impl_->key_records.end())
      found.emplace_back(s, i->second);
  return {};
}

caf::expected<bool> memory_store::do_forget(std::string_view subject) {
  std::unique_lock guard{impl_->mtx};
  keys().drop(subject);
  return impl_->key_records.erase(std::string{subject}) != 0;
}

} // namespace sourcery::persistence
