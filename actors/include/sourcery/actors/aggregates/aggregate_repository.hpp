#pragma once

#include <string>
#include <vector>

#include <caf/expected.hpp>
#include <msgpack.hpp>

#include "sourcery/actors/aggregates/aggregate.hpp"
#include "sourcery/persistence/event_store.hpp"
#include "sourcery/persistence/map_fields.hpp"

namespace sourcery {

/// An aggregate's state as of `version` of its stream.
template <aggregate A>
struct loaded {
  A state{};
  uint64_t version = 0;
  /// Stream version the state was restored from a snapshot at (0: none).
  uint64_t from_snapshot = 0;
};

struct aggregate_options {
  /// Save a snapshot whenever the version crosses a multiple of this (0: never).
  uint32_t snapshot_every = 0;
  /// On a wrong expected version: reload and retry this many times.
  int max_retries = 3;
};

/// Metadata a command carries onto its events.
struct command_meta {
  std::string causation_id;
  std::string correlation_id;
  persistence::bytes metadata; ///< a msgpack map, or empty
};

/// The outcome of one command: accepted (with its events) or rejected.
template <aggregate A>
struct command_result {
  bool accepted = false;
  rejection why;                          ///< when rejected
  std::vector<typename A::event> events; ///< when accepted
  A state{};                              ///< after the command
  uint64_t version = 0;                   ///< after the command
  uint64_t first_position = 0, last_position = 0;
};

/// Loads, executes and appends for one aggregate type on an event store: the
/// synchronous core that an aggregate's actor runs one command at a time.
template <aggregate A>
class aggregate_repository {
public:
  aggregate_repository(persistence::event_store& store, const persistence::event_registry& registry,
                       aggregate_options options = {})
    : store_(store), registry_(registry), options_(options) {}

  /// Rebuilds the state of `stream`: the latest snapshot (if its snapshot
  /// version is `A`'s), then every event after it.
  caf::expected<loaded<A>> load(const std::string& stream) const {
    loaded<A> out;
    if constexpr (snapshottable<A>) {
      auto snap = store_.load_snapshot(stream);
      if (!snap)
        return snap.error();
      if (*snap && (*snap)->snapshot_version == A::snapshot_version) {
        try {
          auto oh = msgpack::unpack(reinterpret_cast<const char*>((*snap)->data.data()), (*snap)->data.size());
          persistence::convert_map(oh.get(), out.state);
          out.version = (*snap)->stream_version;
          out.from_snapshot = out.version;
        } catch (const std::exception&) {
          out = loaded<A>{}; // an unreadable snapshot is ignored: the events are the truth
        }
      }
    }
    if (auto err = catch_up(out, stream))
      return err;
    return out;
  }

  /// Folds the events of `stream` after `into.version` into `into`.
  caf::error catch_up(loaded<A>& into, const std::string& stream) const {
    caf::error failure;
    auto err = store_.for_each_in_stream(stream, into.version + 1, [&](const persistence::recorded_event& rec) {
      auto ev = decode_event<A>(registry_, rec);
      if (!ev) {
        failure = std::move(ev.error());
        return false;
      }
      apply_event(into.state, *ev);
      into.version = rec.stream_version;
      return true;
    });
    return err ? err : failure;
  }

  /// A decided command, ready to append: its events, typed and encoded.
  struct decision {
    outcome<typename A::event> decided;
    std::vector<persistence::event_data> data;
  };

  /// Step 1 of a command: decide against `current` and encode the events.
  /// Errors: encoding errors (an unregistered event type).
  template <class C, class ExecuteFn>
  caf::expected<decision> decide(const loaded<A>& current, const C& cmd, ExecuteFn&& execute_fn,
                                 const command_meta& meta) const {
    return encode(execute_fn(current.state, cmd), meta);
  }

  /// Encodes what a command decided, with the command's metadata on each
  /// event. Errors: encoding errors (an unregistered event type).
  caf::expected<decision> encode(outcome<typename A::event> decided, const command_meta& meta) const {
    decision d{std::move(decided), {}};
    if (d.decided.rejected())
      return d;
    d.data.reserve(d.decided.events().size());
    for (const auto& ev : d.decided.events()) {
      auto encoded = encode_event<A>(registry_, ev);
      if (!encoded)
        return encoded.error();
      encoded->causation_id = meta.causation_id;
      encoded->correlation_id = meta.correlation_id;
      encoded->metadata = meta.metadata;
      d.data.push_back(std::move(*encoded));
    }
    return d;
  }

  /// The result of a rejected decision; `current` is unchanged.
  static command_result<A> rejected(const loaded<A>& current, const decision& d) {
    command_result<A> result;
    result.why = d.decided.why();
    result.state = current.state;
    result.version = current.version;
    return result;
  }

  /// Step 3, after the append (step 2, `expected_version::exact(current.version)`)
  /// succeeded: apply the events to `current`, snapshot if due.
  command_result<A> confirm(const std::string& stream, loaded<A>& current, decision& d,
                            const persistence::append_result& appended) const {
    uint64_t before = current.version;
    for (const auto& ev : d.decided.events())
      apply_event(current.state, ev);
    current.version = appended.stream_version;
    maybe_snapshot(stream, current, before);
    command_result<A> result;
    result.accepted = true;
    result.events = std::move(d.decided.events());
    result.state = current.state;
    result.version = current.version;
    result.first_position = appended.first_position;
    result.last_position = appended.last_position;
    return result;
  }

  /// Runs `cmd` against `current` (the caller's cached state, brought up to
  /// date on a conflict) and appends its events with `expected_version =
  /// current.version`, blocking until the commit. On success `current` holds
  /// the new state. `execute_fn(const A&, const C&)` -> outcome<A::event>.
  template <class C, class ExecuteFn>
  caf::expected<command_result<A>> execute(const std::string& stream, loaded<A>& current, const C& cmd,
                                           ExecuteFn&& execute_fn, const command_meta& meta = {}) const {
    for (int attempt = 0;; ++attempt) {
      auto d = decide(current, cmd, execute_fn, meta);
      if (!d)
        return d.error();
      if (d->decided.rejected())
        return rejected(current, *d);
      // The payloads move to the store: a retry decides (and encodes) again.
      auto appended = store_.append(stream, persistence::expected_version::exact(current.version), std::move(d->data));
      if (!appended) {
        if (persistence::code_of(appended.error()) == persistence::store_errc::wrong_expected_version
            && attempt < options_.max_retries) {
          // Someone else wrote: catch up and decide again.
          if (auto err = catch_up(current, stream))
            return err;
          continue;
        }
        return appended.error();
      }
      return confirm(stream, current, *d, *appended);
    }
  }

  persistence::event_store& store() const noexcept { return store_; }
  const aggregate_options& options() const noexcept { return options_; }

  /// `execute` with the aggregate's own `execute(cmd)`.
  template <class C>
    requires executes<A, C>
  caf::expected<command_result<A>> execute(const std::string& stream, loaded<A>& current, const C& cmd,
                                           const command_meta& meta = {}) const {
    return execute(stream, current, cmd, [](const A& a, const C& c) { return a.execute(c); }, meta);
  }

private:
  void maybe_snapshot(const std::string& stream, const loaded<A>& current, uint64_t before) const {
    if constexpr (snapshottable<A>) {
      auto every = options_.snapshot_every;
      if (every == 0 || current.version / every == before / every)
        return;
      msgpack::sbuffer buf;
      msgpack::pack(buf, current.state);
      persistence::snapshot snap;
      snap.stream_id = stream;
      snap.stream_version = current.version;
      snap.snapshot_version = A::snapshot_version;
      snap.type = "aggregate";
      snap.data.assign(buf.data(), buf.data() + buf.size());
      // Not waited for: the aggregate actor that runs this must not block a
      // scheduler thread on a durable commit. A failed snapshot costs only a
      // longer rebuild later; the events are stored.
      store_.save_snapshot_async(std::move(snap), [](caf::expected<void>) {});
    }
  }

  persistence::event_store& store_;
  const persistence::event_registry& registry_;
  aggregate_options options_;
};

} // namespace sourcery
