#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/event.hpp"
#include "sourcery/persistence/expected_version.hpp"
#include "sourcery/persistence/subscription.hpp"

namespace sourcery::persistence {

class event_registry;
class append_fence;

namespace detail {
struct subject_key;
class key_cache;
} // namespace detail

/// The event-store contract shared by every implementation (LMDB, in-memory).
///
/// Streams hold events at versions 1, 2, ...; every event also has a gapless
/// position in the global `$all` log. All calls are thread-safe. Errors are
/// values (`store_errc` in the error); no exception leaves a public call.
///
/// Stream ids are 1 to 400 bytes and must not start with '$' (reserved).
class event_store {
public:
  using append_callback = std::function<void(caf::expected<append_result>)>;

  virtual ~event_store();

  // -- writing ----------------------------------------------------------------

  /// Appends `events` to `stream` if its version satisfies `expected`, all or
  /// nothing. Returns after the events are durably committed (under the
  /// store's durability mode).
  /// Errors: wrong_expected_version, stream_deleted, invalid_argument,
  /// malformed_payload, store_full, io_error, corrupt_store, store_closed.
  caf::expected<append_result> append(std::string_view stream, expected_version expected,
                                      std::vector<event_data> events);

  /// Same as `append`, answering through `done` (called exactly once, on a
  /// store thread; keep it short and non-blocking).
  void append_async(std::string_view stream, expected_version expected,
                    std::vector<event_data> events, append_callback done);

  /// Soft-deletes `stream`: later appends and reads of it fail with
  /// stream_deleted; its events stay in `$all`.
  /// Errors: wrong_expected_version, stream_deleted, invalid_argument, I/O errors.
  caf::expected<void> delete_stream(std::string_view stream, expected_version expected);

  // -- reading ----------------------------------------------------------------

  /// Up to `max_count` events of `stream`, forward from version `from`
  /// (inclusive) or backward from it (use UINT64_MAX for "from the end").
  /// A stream that does not exist reads as empty.
  /// Errors: stream_deleted, invalid_argument, corrupt_record, corrupt_store.
  caf::expected<std::vector<recorded_event>>
  read_stream(std::string_view stream, uint64_t from, size_t max_count,
              read_direction direction = read_direction::forward) const;

  /// Up to `max_count` events of `$all`, forward from position `from`
  /// (inclusive) or backward from it (UINT64_MAX: from the end).
  /// Errors: invalid_argument, corrupt_record, corrupt_store.
  caf::expected<std::vector<recorded_event>>
  read_all(uint64_t from, size_t max_count,
           read_direction direction = read_direction::forward) const;

  /// Calls `visit` with each event of `stream` from version `from` on, in
  /// order, until the end or until `visit` returns false. Events are read in
  /// batches into one reused buffer, so a long stream costs no allocation per
  /// event: the event passed is valid only during the call. No lock or
  /// transaction is held while `visit` runs. Errors: as `read_stream`.
  caf::error for_each_in_stream(std::string_view stream, uint64_t from,
                                const std::function<bool(const recorded_event&)>& visit) const;

  /// The same over `$all`, from position `from` up to the head at the time
  /// of each batch.
  caf::error for_each_in_all(uint64_t from, const std::function<bool(const recorded_event&)>& visit) const;

  /// `read_all` forward into `out`, reusing the events (and buffers) it
  /// holds: for consumers that read batch after batch.
  caf::error read_all_into(uint64_t from, size_t max_count, std::vector<recorded_event>& out) const;

  /// Version, existence and deletion state of a stream.
  caf::expected<persistence::stream_info> stream_info(std::string_view stream) const;

  /// The position of the last committed event (0 for an empty store).
  virtual uint64_t head_position() const = 0;

  /// Blocks until `head_position() >= pos` or the timeout passes; returns
  /// whether the position was reached.
  bool wait_for_position(uint64_t pos, std::chrono::milliseconds timeout) const;

  // -- snapshots --------------------------------------------------------------

  /// Replaces the snapshot of `snap.stream_id`.
  caf::expected<void> save_snapshot(snapshot snap);
  /// The same without waiting for the commit: `done` is called once, on a
  /// store thread (keep it short). For actors, which must not block.
  void save_snapshot_async(snapshot snap, std::function<void(caf::expected<void>)> done);
  /// The latest snapshot of `stream`, or nullopt.
  caf::expected<std::optional<snapshot>> load_snapshot(std::string_view stream) const;
  caf::expected<void> delete_snapshot(std::string_view stream);

  // -- checkpoints ------------------------------------------------------------

  /// Stores `position` under `name` (names follow the stream-id rules).
  caf::expected<void> save_checkpoint(std::string_view name, uint64_t position);
  /// The stored position, or nullopt if none was saved.
  caf::expected<std::optional<uint64_t>> load_checkpoint(std::string_view name) const;

  // -- listing (operators' tools, exports) --------------------------------------

  /// Calls `visit` with every stream, deleted ones too, in stream-id order,
  /// until the end or until `visit` returns false. Read in batches; no lock
  /// or transaction is held while `visit` runs.
  /// Errors: corrupt_store, io_error, store_closed.
  caf::error for_each_stream(const std::function<bool(const persistence::stream_info&)>& visit) const;

  /// The same for every snapshot, in stream-id order.
  caf::error for_each_snapshot(const std::function<bool(const snapshot&)>& visit) const;

  /// Every saved checkpoint as (name, position), in name order.
  caf::expected<std::vector<std::pair<std::string, uint64_t>>> checkpoints() const;

  // -- subscriptions ----------------------------------------------------------

  /// Starts delivering events to `handler` on a thread of the subscription.
  /// Errors: invalid_argument, subscription_exists, store_closed.
  caf::expected<subscription> subscribe(subscription_options options, batch_handler handler);

  // -- event types ------------------------------------------------------------

  /// Reads run the registry's upcasters: events come out at the current
  /// schema version of their type. The registry must outlive the store and
  /// must not change after this call.
  void use_registry(const event_registry* registry) noexcept;

  // -- personal data (personal.hpp) -------------------------------------------

  /// Reads open sealed personal fields from now on: a field reads as its
  /// value while its subject has a key, as forgotten once it has none.
  /// Without this call (the operator's tools, exports) they stay sealed.
  /// Call before reading; the application does.
  void reveal_personal_data() noexcept;

  /// Keys written from now on are wrapped with `master` (32 bytes, e.g.
  /// read from `--master-key FILE`), and wrapped keys are read with it.
  /// Call before any read or write. Errors: invalid_argument (not 32 bytes).
  caf::error use_master_key(const bytes& master);

  /// Forgets `subject` (personal.hpp): deletes its key durably, so that
  /// every personal field sealed for it reads as forgotten from now on, in
  /// this process at once. Returns whether the subject had a key: forgetting
  /// an unknown or forgotten subject is not an error. How the key's bytes
  /// leave the store's files is each store's (lmdb_store.hpp).
  /// Errors: invalid_argument (a subject of 0 or more than 400 bytes, or a
  /// store that keeps no personal data), io_error, store_closed, and the
  /// store's own errors.
  caf::expected<bool> forget(std::string_view subject);

  /// How many forgets this store has seen: this process's, and on a store
  /// several processes share, the others' as they are announced. Whoever
  /// keeps decoded personal data in memory (an aggregate's state) loads it
  /// again once this moves.
  uint64_t forgets() const noexcept { return forgets_.load(std::memory_order_acquire); }

  // -- clusters ---------------------------------------------------------------

  /// From now on every append is checked against `fence` inside its
  /// transaction, and refused with `fenced` when this node does not hold the
  /// lease of its stream (append_fence.hpp); null ends the checks.
  /// Errors: invalid_argument for a store several nodes cannot share (only
  /// a database server's can).
  virtual caf::error fence_appends(std::shared_ptr<const append_fence> fence);

  /// Why appends cannot succeed now, as far as this process knows, or
  /// none: for /health, which must not wait on the store to say so. An
  /// embedded store has none to report (its failures are each call's);
  /// PostgreSQL's says `unavailable` while its server cannot be reached or
  /// has not answered a probe for two seconds (a frozen server), from the
  /// listener's connection, which probes it every `poll_interval`. Never
  /// blocks.
  virtual caf::error health() const { return {}; }

protected:
  event_store();

  // Implementations receive validated arguments.
  virtual void do_append(std::string stream, expected_version expected,
                         std::vector<event_data> events, append_callback done) = 0;
  virtual caf::expected<void> do_delete_stream(std::string_view stream, expected_version expected) = 0;
  // Reads fill `out`, which arrives empty or holding events to overwrite
  // (reusing their buffers), and holds exactly the events read on success.
  virtual caf::error do_read_stream(std::string_view stream, uint64_t from, size_t max_count,
                                    read_direction direction, std::vector<recorded_event>& out) const = 0;
  virtual caf::error do_read_all(uint64_t from, size_t max_count, read_direction direction,
                                 std::vector<recorded_event>& out) const = 0;
  virtual caf::expected<persistence::stream_info> do_stream_info(std::string_view stream) const = 0;
  virtual caf::expected<void> do_save_snapshot(snapshot snap) = 0;
  /// Default: `do_save_snapshot` on the caller's thread (for stores whose
  /// writes do not wait for a disk).
  virtual void do_save_snapshot_async(snapshot snap, std::function<void(caf::expected<void>)> done);
  virtual caf::expected<std::optional<snapshot>> do_load_snapshot(std::string_view stream) const = 0;
  virtual caf::expected<void> do_delete_snapshot(std::string_view stream) = 0;
  virtual caf::expected<void> do_save_checkpoint(std::string_view name, uint64_t position) = 0;
  virtual caf::expected<std::optional<uint64_t>> do_load_checkpoint(std::string_view name) const = 0;
  // Listing: up to `max_count` entries with keys after `after` ("" for the
  // first), in key order.
  virtual caf::error do_list_streams(std::string_view after, size_t max_count,
                                     std::vector<persistence::stream_info>& out) const = 0;
  virtual caf::error do_list_snapshots(std::string_view after, size_t max_count, std::vector<snapshot>& out) const = 0;
  virtual caf::expected<std::vector<std::pair<std::string, uint64_t>>> do_list_checkpoints() const = 0;

  // Personal data. A store that keeps it seals each event's plaintext
  // personal fields while writing it (seal_personal_fields, with the key of
  // its subject, created in the same transaction when it has none), loads
  // keys for reads and deletes them. The base refuses to append plaintext
  // personal fields to a store that does not.
  virtual bool keeps_personal_data() const noexcept { return false; }
  /// The keys of `subjects` as stored records (absent subjects left out).
  virtual caf::error do_load_key_records(const std::vector<std::string>& subjects,
                                         std::vector<std::pair<std::string, bytes>>& found) const;
  virtual caf::expected<bool> do_forget(std::string_view subject);
  /// Seals `ev`'s plaintext personal fields for its subject (its `subject`,
  /// else `stream`) with the key `key_for` gives (a cached, stored or new
  /// one). Errors: those of `key_for`, malformed_payload, invalid_argument.
  caf::error seal_personal_fields(bytes& data, std::string_view subject,
                                  const std::function<caf::expected<detail::subject_key>(std::string_view)>& key_for) const;
  /// Another process forgot `subject` (empty: maybe some, unknown which):
  /// the cached keys go, and `forgets` moves.
  void forgotten_elsewhere(std::string_view subject) const;
  /// The master key, or null.
  const std::array<uint8_t, 32>* master_key() const noexcept { return has_master_ ? &master_ : nullptr; }
  /// Keys this process knows to be committed.
  detail::key_cache& keys() const noexcept { return *keys_; }

  /// Lets an implementation refresh its head from storage that other
  /// processes write; called while waiting for a position.
  virtual void refresh_head() const {}

  /// Implementations call this after a commit made `head` visible.
  void notify_appended() const;

  /// Stops every subscription and refuses new calls. Implementations call it
  /// first thing in their destructor, while their storage is still open.
  void close_base();

  bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }

private:
  friend struct detail::subscription_state;
  friend class faulty_store; // a decorator forwards to the store it wraps
  // Opens sealed fields (when revealing), then upcasts.
  caf::error upcast(std::vector<recorded_event>& events) const;
  caf::error open_sealed(std::vector<recorded_event>& events) const;
  caf::error open_sealed(bytes& data) const;

  const event_registry* registry_ = nullptr;
  bool reveal_ = false;
  mutable std::atomic<uint64_t> forgets_{0};
  bool has_master_ = false;
  std::array<uint8_t, 32> master_{};
  std::unique_ptr<detail::key_cache> keys_;
  std::atomic<bool> closed_{false};
  mutable std::mutex head_mtx_;
  mutable std::condition_variable head_cv_;
  std::mutex subs_mtx_;
  std::vector<std::weak_ptr<detail::subscription_state>> subs_;
};

/// Validates a stream id (or checkpoint name): none if acceptable.
caf::error validate_stream_id(std::string_view stream);

/// Validates that `payload` is empty or exactly one well-formed msgpack map.
caf::error validate_msgpack_map(const bytes& payload, std::string_view what);

} // namespace sourcery::persistence
