// store-demo — the event store at work, narrated.
//
//   store-demo [--store URI] [--data-dir DIR] [--in-memory]
//
// Opens bank accounts, deposits and withdraws with optimistic concurrency,
// shows a conflict, group commit, a snapshot, an upcast of an old event
// version, and a persistent subscription that keeps a balance read model.
// Run it twice on the same directory: it continues where it stopped.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include <msgpack.hpp>
#include <nlohmann/json.hpp>

#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/memory_store.hpp"
#include "sourcery/persistence/store_uri.hpp"
#include "sourcery/runtime/cli/program_options.hpp"

using namespace sourcery::persistence;
using namespace std::chrono_literals;

// -- the domain's events --------------------------------------------------------

struct account_opened {
  std::string owner;
  MSGPACK_DEFINE_MAP(owner);
};

/// Version 2 added the currency; version-1 events are upcast on read.
struct money_deposited {
  int64_t amount = 0;
  std::string currency;
  MSGPACK_DEFINE_MAP(amount, currency);
};

struct money_withdrawn {
  int64_t amount = 0;
  MSGPACK_DEFINE_MAP(amount);
};

struct account_state {
  int64_t balance = 0;
  MSGPACK_DEFINE_MAP(balance);
};

namespace {

void say(const char* fmt, auto... args) {
  std::printf(fmt, args...);
  std::printf("\n");
  std::fflush(stdout);
}

template <class T>
caf::expected<T> ok_or_exit(caf::expected<T> r, const char* what) {
  if (!r) {
    std::fprintf(stderr, "store-demo: %s failed: %s\n", what, describe(r.error()).c_str());
    std::exit(1);
  }
  return r;
}

/// The balance read model, kept by a persistent subscription. Delivery is
/// at-least-once, so the model remembers the last position it applied and
/// skips anything at or before it; it is saved (as a snapshot record) before
/// the subscription's checkpoint moves on.
struct balance_projection {
  event_store& store;
  const event_registry& types;
  std::mutex mtx;
  std::map<std::string, int64_t> balances;
  uint64_t applied = 0;
  MSGPACK_DEFINE_MAP(balances);

  static constexpr const char* record = "readmodel-balances";

  void load() {
    auto snap = ok_or_exit(store.load_snapshot(record), "load read model");
    if (!*snap)
      return;
    auto oh = msgpack::unpack(reinterpret_cast<const char*>((*snap)->data.data()), (*snap)->data.size());
    oh.get().convert(*this);
    applied = (*snap)->stream_version;
  }

  caf::expected<void> handle(const std::vector<recorded_event>& batch) {
    std::lock_guard guard{mtx};
    const bool quiet = batch.size() > 4;
    if (quiet)
      say("    [projector] batch of %zu events, #%llu..#%llu", batch.size(),
          static_cast<unsigned long long>(batch.front().position),
          static_cast<unsigned long long>(batch.back().position));
    auto say = [quiet](const char* fmt, auto... args) {
      if (!quiet)
        ::say(fmt, args...);
    };
    for (const auto& ev : batch) {
      if (ev.position <= applied)
        continue; // seen before a restart: at-least-once delivery
      if (auto d = types.decode<money_deposited>(ev)) {
        balances[ev.stream_id] += d->amount;
        say("    [projector] #%llu %s +%lld %s", static_cast<unsigned long long>(ev.position),
            ev.stream_id.c_str(), static_cast<long long>(d->amount), d->currency.c_str());
      } else if (auto w = types.decode<money_withdrawn>(ev)) {
        balances[ev.stream_id] -= w->amount;
        say("    [projector] #%llu %s -%lld", static_cast<unsigned long long>(ev.position),
            ev.stream_id.c_str(), static_cast<long long>(w->amount));
      } else if (types.is<account_opened>(ev)) {
        balances.emplace(ev.stream_id, 0);
        say("    [projector] #%llu %s opened", static_cast<unsigned long long>(ev.position), ev.stream_id.c_str());
      }
      applied = ev.position;
    }
    msgpack::sbuffer buf;
    msgpack::pack(buf, *this);
    return store.save_snapshot({record, applied, 1, "demo.balances", bytes(buf.data(), buf.data() + buf.size()), 0});
  }
};

/// Folds an account's events into its state, starting from its snapshot.
account_state load_account(event_store& store, const event_registry& types, const std::string& id,
                           uint64_t& version) {
  account_state state;
  version = 0;
  auto snap = ok_or_exit(store.load_snapshot(id), "load snapshot");
  if (*snap && (*snap)->snapshot_version == 1) {
    auto oh = msgpack::unpack(reinterpret_cast<const char*>((*snap)->data.data()), (*snap)->data.size());
    oh.get().convert(state);
    version = (*snap)->stream_version;
  }
  for (;;) {
    auto events = ok_or_exit(store.read_stream(id, version + 1, 256), "read stream");
    if (events->empty())
      return state;
    for (const auto& ev : *events) {
      if (auto d = types.decode<money_deposited>(ev))
        state.balance += d->amount;
      else if (auto w = types.decode<money_withdrawn>(ev))
        state.balance -= w->amount;
      version = ev.stream_version;
    }
  }
}

} // namespace

int main(int argc, char** argv) {
  std::string text, dir;
  bool in_memory = false;
  CLI::App cli{"The event store alone: appends, reads, optimistic concurrency, upcasting.", "store-demo"};
  sourcery::cli::store_options options{cli, text, dir, &in_memory, "store-demo-data"};
  if (auto code = sourcery::cli::parse(cli, argc, argv))
    return *code;
  if (auto code = options.finish())
    return *code;
  auto uri = in_memory ? store_uri::memory() : store_uri::lmdb(dir);
  if (!text.empty())
    uri = *store_uri::parse(text); // checked by the options

  say("== Sourcery event store demo ==");
  auto opened = open_store(uri);
  if (!opened) {
    std::fprintf(stderr, "store-demo: cannot open %s: %s\n", uri.to_string().c_str(), describe(opened.error()).c_str());
    return 1;
  }
  std::unique_ptr<event_store> store = std::move(*opened);
  switch (uri.type) {
    case store_uri::kind::memory: say("store: in memory (nothing survives this run)"); break;
    case store_uri::kind::lmdb:
      say("store: LMDB in %s, durable commits (fsync before every acknowledgement)", uri.location.c_str());
      break;
    case store_uri::kind::postgres:
      say("store: PostgreSQL at %s, durable commits (synchronous_commit = on)", uri.to_string().c_str());
      break;
  }
  uint64_t start_head = store->head_position();
  say("the global log ($all) holds %llu events", static_cast<unsigned long long>(start_head));

  // Event types. money_deposited is at schema version 2; the upcaster fills in
  // the currency that version 1 lacked.
  event_registry types;
  types.add<account_opened>("bank.account_opened");
  types.add<money_deposited>("bank.money_deposited", 2);
  types.add<money_withdrawn>("bank.money_withdrawn");
  types.add_upcaster("bank.money_deposited", 1, [](nlohmann::json& d) { d["currency"] = "EUR"; });
  store->use_registry(&types);

  say("\n-- 1. a persistent subscription: catch up from its checkpoint, then live");
  balance_projection projection{*store, types, {}, {}, 0};
  projection.load();
  subscription_options opts;
  opts.name = "balances";
  auto sub = ok_or_exit(store->subscribe(opts, [&](const auto& batch) { return projection.handle(batch); }),
                        "subscribe");
  auto checkpoint = ok_or_exit(store->load_checkpoint("balances"), "checkpoint");
  say("subscription 'balances' resumes after position %llu; its read model was saved at %llu",
      static_cast<unsigned long long>(checkpoint->value_or(0)), static_cast<unsigned long long>(projection.applied));
  sub->wait_for(start_head, 5s);

  say("\n-- 2. open accounts (expected version: no_stream)");
  for (const char* owner : {"alice", "bob", "carol"}) {
    std::string id = std::string{"account-"} + owner;
    auto r = store->append(id, expected_version::no_stream(), {*types.encode(account_opened{owner})});
    if (r)
      say("opened %s at position %llu", id.c_str(), static_cast<unsigned long long>(r->last_position));
    else
      say("%s exists already: %s", id.c_str(), describe(r.error()).c_str());
  }

  say("\n-- 3. an old-format event, upcast on read");
  {
    event_data v1;
    v1.type = "bank.money_deposited";
    v1.schema_version = 1;
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk{buf};
    pk.pack_map(1);
    pk.pack(std::string{"amount"});
    pk.pack(int64_t{100});
    v1.data.assign(buf.data(), buf.data() + buf.size());
    auto r = ok_or_exit(store->append("account-alice", expected_version::any(), {v1}), "append v1");
    auto back = ok_or_exit(store->read_stream("account-alice", r->stream_version, 1), "read");
    auto dep = types.decode<money_deposited>(back->front());
    say("stored as schema v1 {amount: 100}; read back as v%u {amount: %lld, currency: %s}",
        back->front().schema_version, static_cast<long long>(dep->amount), dep->currency.c_str());
  }

  say("\n-- 4. optimistic concurrency: two writers, one version");
  {
    uint64_t version = 0;
    auto state = load_account(*store, types, "account-bob", version);
    say("bob's balance %lld at version %llu", static_cast<long long>(state.balance),
        static_cast<unsigned long long>(version));
    auto first = store->append("account-bob", expected_version::exact(version),
                               {*types.encode(money_deposited{50, "EUR"})});
    say("writer A deposits 50 expecting version %llu: %s", static_cast<unsigned long long>(version),
        first ? "accepted" : describe(first.error()).c_str());
    auto second = store->append("account-bob", expected_version::exact(version),
                                {*types.encode(money_withdrawn{30})});
    say("writer B withdraws 30 expecting version %llu: %s", static_cast<unsigned long long>(version),
        second ? "accepted" : describe(second.error()).c_str());
    state = load_account(*store, types, "account-bob", version);
    auto retry = store->append("account-bob", expected_version::exact(version), {*types.encode(money_withdrawn{30})});
    say("writer B reloads (balance %lld, version %llu) and retries: %s", static_cast<long long>(state.balance),
        static_cast<unsigned long long>(version), retry ? "accepted" : describe(retry.error()).c_str());
  }

  say("\n-- 5. group commit: 64 concurrent depositors");
  {
    std::vector<std::thread> threads;
    auto before = std::chrono::steady_clock::now();
    for (int t = 0; t < 64; ++t)
      threads.emplace_back([&] {
        for (int i = 0; i < 10; ++i)
          ok_or_exit(store->append("account-carol", expected_version::any(), {*types.encode(money_deposited{1, "EUR"})}),
                     "deposit");
      });
    for (auto& t : threads)
      t.join();
    auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - before).count();
    if (auto* lmdb = dynamic_cast<lmdb_store*>(store.get()))
      say("640 durable deposits in %.0f ms; the store has made %llu commits for %llu writes since it opened", ms,
          static_cast<unsigned long long>(lmdb->stats().commits),
          static_cast<unsigned long long>(lmdb->stats().operations));
    else
      say("640 deposits in %.0f ms", ms);
  }

  say("\n-- 6. a snapshot of carol's account");
  {
    uint64_t version = 0;
    auto state = load_account(*store, types, "account-carol", version);
    msgpack::sbuffer buf;
    msgpack::pack(buf, state);
    ok_or_exit(store->save_snapshot({"account-carol", version, 1, "bank.account", bytes(buf.data(), buf.data() + buf.size()), 0}),
               "snapshot");
    say("saved carol's state (balance %lld) at version %llu: the next load reads no event before it",
        static_cast<long long>(state.balance), static_cast<unsigned long long>(version));
  }

  say("\n-- 7. the read model, once the projector has caught up");
  sub->wait_for(store->head_position(), 5s);
  {
    std::lock_guard guard{projection.mtx};
    for (const auto& [id, balance] : projection.balances)
      say("%-16s %6lld", id.c_str(), static_cast<long long>(balance));
  }

  say("\n-- 8. the audit trail of alice's account");
  auto trail = ok_or_exit(store->read_stream("account-alice", 1, 1000), "read");
  for (const auto& ev : *trail) {
    auto json = event_registry::data_as_json(ev.data);
    say("v%-3llu #%-5llu %-22s %s", static_cast<unsigned long long>(ev.stream_version),
        static_cast<unsigned long long>(ev.position), ev.type.c_str(), json ? json->dump().c_str() : "?");
  }
  say("\nthe log grew from %llu to %llu events; run me again to continue from here.",
      static_cast<unsigned long long>(start_head), static_cast<unsigned long long>(store->head_position()));
  return 0;
}
