#include "sourcery/persistence/event_store.hpp"

#include "event_validation.hpp"

#include <future>
#include <set>
#include <unordered_map>


#include "key_cache.hpp"
#include "personal_data.hpp"
#include "record_codec.hpp"
#include "sourcery/persistence/append_fence.hpp"
#include "sourcery/persistence/event_registry.hpp"
#include "subscription_state.hpp"

namespace sourcery::persistence {

namespace {
constexpr size_t max_stream_id = 400;
constexpr size_t max_type_name = 255;
} // namespace

caf::error validate_stream_id(std::string_view stream) {
  if (stream.empty())
    return make_error(store_errc::invalid_argument, "stream id is empty");
  if (stream.size() > max_stream_id)
    return make_error(store_errc::invalid_argument,
                      "stream id is longer than " + std::to_string(max_stream_id) + " bytes");
  if (stream.front() == '$')
    return make_error(store_errc::invalid_argument,
                      "stream ids starting with '$' are reserved: " + std::string{stream});
  return {};
}

caf::error validate_msgpack_map(const bytes& payload, std::string_view what) {
  if (payload.empty())
    return {};
  auto problem = detail::check_msgpack_map(payload.data(), payload.size());
  if (problem.empty())
    return {};
  return make_error(store_errc::malformed_payload, std::string{what} + " " + problem);
}

event_store::event_store() : keys_(std::make_unique<detail::key_cache>()) {}

event_store::~event_store() {
  close_base();
}

void event_store::close_base() {
  closed_.store(true, std::memory_order_release);
  std::vector<std::shared_ptr<detail::subscription_state>> live;
  {
    std::lock_guard guard{subs_mtx_};
    for (auto& w : subs_)
      if (auto s = w.lock())
        live.push_back(std::move(s));
    subs_.clear();
  }
  for (auto& s : live)
    s->stop();
}

void event_store::use_registry(const event_registry* registry) noexcept {
  registry_ = registry;
}

caf::error event_store::fence_appends(std::shared_ptr<const append_fence>) {
  return make_error(store_errc::invalid_argument,
                    "this store cannot be shared by a cluster's nodes: use a database server's (PostgreSQL)");
}

caf::error event_store::upcast(std::vector<recorded_event>& events) const {
  if (reveal_)
    if (auto err = open_sealed(events))
      return err;
  if (registry_ == nullptr)
    return {};
  for (auto& ev : events)
    if (auto err = registry_->upcast(ev))
      return err;
  return {};
}

// -- personal data ------------------------------------------------------------

void event_store::reveal_personal_data() noexcept {
  reveal_ = true;
}

caf::error event_store::use_master_key(const bytes& master) {
  if (master.size() != master_.size())
    return make_error(store_errc::invalid_argument, "a master key is 32 bytes");
  std::copy(master.begin(), master.end(), master_.begin());
  has_master_ = true;
  keys_->clear();
  return {};
}

caf::expected<bool> event_store::forget(std::string_view subject) {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  if (subject.empty() || subject.size() > max_stream_id)
    return make_error(store_errc::invalid_argument, "a subject is 1 to 400 bytes");
  auto forgot = do_forget(subject);
  keys_->drop(subject);
  forgets_.fetch_add(1, std::memory_order_acq_rel);
  return forgot;
}

void event_store::forgotten_elsewhere(std::string_view subject) const {
  if (subject.empty())
    keys_->clear();
  else
    keys_->drop(subject);
  forgets_.fetch_add(1, std::memory_order_acq_rel);
}

caf::error event_store::do_load_key_records(const std::vector<std::string>&,
                                            std::vector<std::pair<std::string, bytes>>&) const {
  return {};
}

caf::expected<bool> event_store::do_forget(std::string_view) {
  return make_error(store_errc::invalid_argument, "this store keeps no personal data");
}

caf::error event_store::seal_personal_fields(
  bytes& data, std::string_view subject,
  const std::function<caf::expected<detail::subject_key>(std::string_view)>& key_for) const {
  return detail::seal_personal(data, subject, key_for);
}

namespace {

/// The keys a batch of reads needs: the cache's, then one load for the rest.
class batch_keys {
public:
  batch_keys(detail::key_cache& cache, const std::array<uint8_t, 32>* master) : cache_(cache), master_(master) {}

  caf::error need(const bytes& data) {
    return detail::sealed_subjects(data, [this](std::string_view subject) {
      std::string s{subject};
      if (known_.count(s) != 0)
        return;
      auto cached = cache_.find(s);
      if (cached)
        known_.emplace(s, *cached);
      else
        missing_.insert(std::move(s));
    });
  }

  template <class Load>
  caf::error load(Load&& load_records) {
    if (missing_.empty())
      return {};
    std::vector<std::string> subjects{missing_.begin(), missing_.end()};
    std::vector<std::pair<std::string, bytes>> found;
    if (auto err = load_records(subjects, found))
      return err;
    for (auto& [subject, record] : found) {
      auto key = detail::decode_key_record(subject, record.data(), record.size(), master_);
      if (!key)
        return key.error();
      if (*key) {
        cache_.put(subject, **key);
        known_.emplace(subject, **key);
      }
    }
    missing_.clear();
    return {};
  }

  const detail::subject_key* key_of(std::string_view subject) const {
    auto i = known_.find(std::string{subject});
    return i == known_.end() ? nullptr : &i->second;
  }

private:
  detail::key_cache& cache_;
  const std::array<uint8_t, 32>* master_;
  std::unordered_map<std::string, detail::subject_key> known_;
  std::set<std::string> missing_;
};

} // namespace

caf::error event_store::open_sealed(std::vector<recorded_event>& events) const {
  std::optional<batch_keys> keys;
  for (auto& ev : events) {
    if (!detail::has_sealed_personal(ev.data))
      continue;
    if (!keys)
      keys.emplace(*keys_, master_key());
    if (auto err = keys->need(ev.data))
      return err;
  }
  if (!keys)
    return {};
  auto load = [this](const std::vector<std::string>& subjects, std::vector<std::pair<std::string, bytes>>& found) {
    return do_load_key_records(subjects, found);
  };
  if (auto err = keys->load(load))
    return err;
  auto key_of = [&keys](std::string_view subject) { return keys->key_of(subject); };
  for (auto& ev : events)
    if (auto err = detail::open_personal(ev.data, key_of))
      return err;
  return {};
}

caf::error event_store::open_sealed(bytes& data) const {
  if (!reveal_ || !detail::has_sealed_personal(data))
    return {};
  batch_keys keys{*keys_, master_key()};
  if (auto err = keys.need(data))
    return err;
  auto load = [this](const std::vector<std::string>& subjects, std::vector<std::pair<std::string, bytes>>& found) {
    return do_load_key_records(subjects, found);
  };
  if (auto err = keys.load(load))
    return err;
  return detail::open_personal(data, [&keys](std::string_view subject) { return keys.key_of(subject); });
}

// -- writing ------------------------------------------------------------------

caf::error detail::validate_event(const event_data& ev, const std::string& what) {
  if (ev.type.empty() || ev.type.size() > max_type_name)
    return make_error(store_errc::invalid_argument, what + ": type name must be 1 to 255 bytes");
  if (auto err = validate_msgpack_map(ev.data, what + " data"))
    return err;
  return validate_msgpack_map(ev.metadata, what + " metadata");
}

void event_store::append_async(std::string_view stream, expected_version expected,
                               std::vector<event_data> events, append_callback done) {
  if (closed())
    return done(make_error(store_errc::store_closed, "the event store is closed"));
  if (auto err = validate_stream_id(stream))
    return done(std::move(err));
  for (size_t i = 0; i < events.size(); ++i) {
    auto& ev = events[i];
    if (auto err = detail::validate_event(ev, "event " + std::to_string(i) + " (" + ev.type + ")"))
      return done(std::move(err));
    if (ev.event_id.is_nil())
      ev.event_id = uuid::random();
    if (!keeps_personal_data() && detail::has_plain_personal(ev.data))
      return done(make_error(store_errc::invalid_argument,
                             "event " + std::to_string(i) + " (" + ev.type
                               + ") has personal fields, and this store keeps no personal data"));
  }
  do_append(std::string{stream}, expected, std::move(events), std::move(done));
}

caf::expected<append_result> event_store::append(std::string_view stream, expected_version expected,
                                                 std::vector<event_data> events) {
  std::promise<caf::expected<append_result>> result;
  auto fut = result.get_future();
  append_async(stream, expected, std::move(events),
               [&result](caf::expected<append_result> r) { result.set_value(std::move(r)); });
  return fut.get();
}

caf::expected<void> event_store::delete_stream(std::string_view stream, expected_version expected) {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  if (auto err = validate_stream_id(stream))
    return err;
  return do_delete_stream(stream, expected);
}

// -- reading ------------------------------------------------------------------

caf::expected<std::vector<recorded_event>>
event_store::read_stream(std::string_view stream, uint64_t from, size_t max_count,
                         read_direction direction) const {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  if (auto err = validate_stream_id(stream))
    return err;
  std::vector<recorded_event> out;
  if (max_count == 0)
    return out;
  if (auto err = do_read_stream(stream, from, max_count, direction, out))
    return err;
  if (auto err = upcast(out))
    return err;
  return out;
}

caf::expected<std::vector<recorded_event>>
event_store::read_all(uint64_t from, size_t max_count, read_direction direction) const {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  std::vector<recorded_event> out;
  if (max_count == 0)
    return out;
  if (auto err = do_read_all(from, max_count, direction, out))
    return err;
  if (auto err = upcast(out))
    return err;
  return out;
}

caf::error event_store::read_all_into(uint64_t from, size_t max_count, std::vector<recorded_event>& out) const {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  if (max_count == 0) {
    out.clear();
    return {};
  }
  if (auto err = do_read_all(from, max_count, read_direction::forward, out))
    return err;
  return upcast(out);
}

namespace {

/// Batches of `for_each_in_*`: large enough to amortize a read transaction,
/// small enough to stay in cache.
constexpr size_t visit_batch = 256;

} // namespace

namespace {

/// Reads batch after batch into one buffer with `read(next, batch)` and
/// visits them, until a short batch or `visit` says stop.
template <class Read, class Next>
caf::error visit_batches(uint64_t from, Read read, Next next_of,
                         const std::function<bool(const recorded_event&)>& visit) {
  std::vector<recorded_event> batch;
  for (uint64_t next = std::max<uint64_t>(from, 1);;) {
    if (auto err = read(next, batch))
      return err;
    for (const auto& ev : batch)
      if (!visit(ev))
        return {};
    if (batch.size() < visit_batch)
      return {};
    next = next_of(batch.back()) + 1;
  }
}

} // namespace

caf::error event_store::for_each_in_stream(std::string_view stream, uint64_t from,
                                           const std::function<bool(const recorded_event&)>& visit) const {
  if (auto err = validate_stream_id(stream))
    return err;
  auto read = [&](uint64_t next, std::vector<recorded_event>& batch) -> caf::error {
    if (closed())
      return make_error(store_errc::store_closed, "the event store is closed");
    if (auto err = do_read_stream(stream, next, visit_batch, read_direction::forward, batch))
      return err;
    return upcast(batch);
  };
  return visit_batches(from, read, [](const recorded_event& ev) { return ev.stream_version; }, visit);
}

caf::error event_store::for_each_in_all(uint64_t from,
                                        const std::function<bool(const recorded_event&)>& visit) const {
  auto read = [&](uint64_t next, std::vector<recorded_event>& batch) -> caf::error {
    if (closed())
      return make_error(store_errc::store_closed, "the event store is closed");
    if (auto err = do_read_all(next, visit_batch, read_direction::forward, batch))
      return err;
    return upcast(batch);
  };
  return visit_batches(from, read, [](const recorded_event& ev) { return ev.position; }, visit);
}

caf::expected<stream_info> event_store::stream_info(std::string_view stream) const {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  if (auto err = validate_stream_id(stream))
    return err;
  return do_stream_info(stream);
}

bool event_store::wait_for_position(uint64_t pos, std::chrono::milliseconds timeout) const {
  static const std::atomic<bool> never{false};
  return detail::subscription_state::wait_for_position(*this, pos, std::chrono::steady_clock::now() + timeout, never);
}

void event_store::notify_appended() const {
  { std::lock_guard guard{head_mtx_}; }
  head_cv_.notify_all();
}

// -- snapshots and checkpoints ------------------------------------------------

caf::expected<void> event_store::save_snapshot(snapshot snap) {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  if (auto err = validate_stream_id(snap.stream_id))
    return err;
  if (!keeps_personal_data() && detail::has_plain_personal(snap.data))
    return make_error(store_errc::invalid_argument, "the snapshot has personal fields, and this store keeps no personal data");
  return do_save_snapshot(std::move(snap));
}

void event_store::save_snapshot_async(snapshot snap, std::function<void(caf::expected<void>)> done) {
  if (closed())
    return done(make_error(store_errc::store_closed, "the event store is closed"));
  if (auto err = validate_stream_id(snap.stream_id))
    return done(err);
  if (!keeps_personal_data() && detail::has_plain_personal(snap.data))
    return done(make_error(store_errc::invalid_argument,
                           "the snapshot has personal fields, and this store keeps no personal data"));
  do_save_snapshot_async(std::move(snap), std::move(done));
}

void event_store::do_save_snapshot_async(snapshot snap, std::function<void(caf::expected<void>)> done) {
  done(do_save_snapshot(std::move(snap)));
}

caf::expected<std::optional<snapshot>> event_store::load_snapshot(std::string_view stream) const {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  if (auto err = validate_stream_id(stream))
    return err;
  auto snap = do_load_snapshot(stream);
  if (snap && *snap)
    if (auto err = open_sealed((*snap)->data))
      return err;
  return snap;
}

caf::expected<void> event_store::delete_snapshot(std::string_view stream) {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  if (auto err = validate_stream_id(stream))
    return err;
  return do_delete_snapshot(stream);
}

caf::expected<void> event_store::save_checkpoint(std::string_view name, uint64_t position) {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  if (auto err = validate_stream_id(name))
    return err;
  return do_save_checkpoint(name, position);
}

caf::expected<std::optional<uint64_t>> event_store::load_checkpoint(std::string_view name) const {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  if (auto err = validate_stream_id(name))
    return err;
  return do_load_checkpoint(name);
}

// -- listing ------------------------------------------------------------------

namespace {

/// Lists batch after batch, each starting after the last key seen.
template <class T, class List, class Key>
caf::error visit_listing(List list, Key key_of, const std::function<bool(const T&)>& visit) {
  std::vector<T> batch;
  std::string after;
  for (;;) {
    batch.clear();
    if (auto err = list(after, batch))
      return err;
    for (const auto& item : batch)
      if (!visit(item))
        return {};
    if (batch.size() < visit_batch)
      return {};
    after = key_of(batch.back());
  }
}

} // namespace

caf::error event_store::for_each_stream(const std::function<bool(const persistence::stream_info&)>& visit) const {
  auto list = [this](const std::string& after, std::vector<persistence::stream_info>& out) -> caf::error {
    if (closed())
      return make_error(store_errc::store_closed, "the event store is closed");
    return do_list_streams(after, visit_batch, out);
  };
  return visit_listing(list, [](const persistence::stream_info& s) { return s.stream_id; }, visit);
}

caf::error event_store::for_each_snapshot(const std::function<bool(const snapshot&)>& visit) const {
  auto list = [this](const std::string& after, std::vector<snapshot>& out) -> caf::error {
    if (closed())
      return make_error(store_errc::store_closed, "the event store is closed");
    return do_list_snapshots(after, visit_batch, out);
  };
  return visit_listing(list, [](const snapshot& s) { return s.stream_id; }, visit);
}

caf::expected<std::vector<std::pair<std::string, uint64_t>>> event_store::checkpoints() const {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  return do_list_checkpoints();
}

// -- subscriptions ------------------------------------------------------------

caf::expected<subscription> event_store::subscribe(subscription_options options, batch_handler handler) {
  if (closed())
    return make_error(store_errc::store_closed, "the event store is closed");
  if (!handler)
    return make_error(store_errc::invalid_argument, "subscription handler is empty");
  if (options.batch_size == 0)
    return make_error(store_errc::invalid_argument, "subscription batch size is 0");
  if (!options.stream.empty())
    if (auto err = validate_stream_id(options.stream))
      return err;
  uint64_t start = 0;
  if (options.name.empty()) {
    start = head_position();
  } else {
    if (auto err = validate_stream_id(options.name))
      return err;
    auto cp = load_checkpoint(options.name);
    if (!cp)
      return cp.error();
    if (*cp)
      start = **cp;
    else if (options.start == subscription_start::current)
      start = head_position();
    else if (options.start == subscription_start::position)
      start = options.start_position;
  }
  auto state = std::make_shared<detail::subscription_state>(*this, std::move(options),
                                                            std::move(handler), start);
  {
    std::lock_guard guard{subs_mtx_};
    std::erase_if(subs_, [](const auto& w) {
      auto s = w.lock();
      return !s || !s->active.load();
    });
    if (!state->options.name.empty())
      for (auto& w : subs_)
        if (auto s = w.lock(); s && s->options.name == state->options.name)
          return make_error(store_errc::subscription_exists,
                            "persistent subscription '" + state->options.name + "' is already running");
    subs_.push_back(state);
  }
  state->start();
  return subscription{std::move(state)};
}

} // namespace sourcery::persistence
