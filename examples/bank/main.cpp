// bank-demo — Sourcery's main demo, narrated.
//
//   bank-demo [--store URI] [--data-dir DIR] [--in-memory]
//   bank-demo admin COMMAND ...     the operator tool, with the balance projection
//
// Accounts (open, deposit, withdraw: refused past the balance), a money
// transfer process manager that compensates when the credit side fails, and
// a balance projection, all supervised actors. Crashes an account actor and
// the projector on purpose and shows that nothing is lost, then shows the
// read model and one account's audit trail. Run it again on the same data
// directory: it continues where it stopped.

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "../common/narrate.hpp"
#include "balances.hpp"
#include "routes.hpp"
#include "sourcery/persistence/uuid.hpp"
#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/tool/operator_tool.hpp"
#include "transfer_saga.hpp"

using namespace std::chrono_literals;
using sourcery::application;

namespace {

using demo::data_of;
using demo::run;
using demo::say;
using demo::section;

[[noreturn]] void fail(const std::string& what, const caf::error& err) {
  demo::fail("bank-demo", what, err);
}

int64_t balance_of(application& app, const std::string& account) {
  auto a = app.aggregate_state<bank::account>("account-" + account);
  if (!a)
    fail("read account " + account, a.error());
  return a->balance;
}

/// The events of `$all` after `from`, one line each, with what caused them.
void trail(application& app, uint64_t from) {
  auto events = app.store().read_all(from + 1, 100);
  if (!events)
    fail("read $all", events.error());
  std::map<std::string, uint64_t> position_of; // event id -> position; a cause precedes its effects
  for (auto& e : *events) {
    std::string cause;
    if (auto c = position_of.find(e.causation_id); c != position_of.end())
      cause = " (caused by #" + std::to_string(c->second) + ")";
    position_of[e.event_id.to_string()] = e.position;
    say("    #%llu %-16s %-26s %s%s", static_cast<unsigned long long>(e.position), e.stream_id.c_str(),
        e.type.c_str(), data_of(e).c_str(), cause.c_str());
  }
}

/// Requests a transfer and waits until the process manager has settled it.
void transfer(application& app, const std::string& from, const std::string& to, int64_t amount) {
  auto id = "t-" + sourcery::persistence::uuid::random().to_string().substr(0, 8);
  auto before = app.store().head_position();
  say("  request_transfer %s: %s -> %s, %lld", id.c_str(), from.c_str(), to.c_str(), static_cast<long long>(amount));
  auto r = app.dispatch(bank::request_transfer{id, from, to, amount});
  if (!r || !r->accepted)
    fail("request_transfer", r ? caf::make_error(caf::sec::runtime_error, r->why.reason) : r.error());
  for (int i = 0; i < 1000; ++i) {
    auto t = app.aggregate_state<bank::transfer>("transfer-" + id);
    if (t && (t->at == bank::transfer::stage::completed || t->at == bank::transfer::stage::failed)) {
      say("  the saga settled it: %s. What happened, in the global log:",
          t->at == bank::transfer::stage::completed ? "completed" : "failed");
      std::this_thread::sleep_for(50ms); // let a refund that follows the failure land too
      trail(app, before);
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  say("  the transfer has not settled within 10 s (the saga resumes it on the next run)");
}

/// The actors of the open accounts: the dynamic children of
/// aggregate:bank::account/aggregates.
std::vector<caf::actor> open_account_actors(application& app) {
  std::vector<caf::actor> out;
  auto top = app.root().which_children();
  if (!top)
    return out;
  for (auto& c : *top) {
    if (c.id != "aggregate:bank::account" || !c.actor)
      continue;
    auto sub = sourcery::supervision::supervisor{app.system(), c.actor}.which_children();
    if (!sub || sub->empty())
      continue;
    auto kids = sourcery::supervision::supervisor{app.system(), (*sub)[0].actor}.which_children();
    if (kids)
      for (auto& k : *kids)
        if (k.actor)
          out.push_back(k.actor);
  }
  return out;
}

sourcery::supervision::child_info child(application& app, const std::string& id) {
  auto kids = app.root().which_children();
  if (kids)
    for (auto& k : *kids)
      if (k.id == id)
        return k;
  return {};
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "admin") == 0) {
    sourcery::operator_tool tool{"bank-demo admin"};
    tool.add_routes(bank::routes()).add_projection<bank::balances>("account balances");
    return tool.run(argc - 1, argv + 1);
  }
  // Accounts snapshot every 4 events: a reopened account reads its latest
  // snapshot, then only the events after it.
  sourcery::aggregate_settings accounts;
  accounts.snapshot_every = 4;
  auto [config, started] =
    demo::start(argc, argv, "bank-demo", "Sourcery bank demo", "sourcery-data", bank::routes(accounts));
  auto& app = *started;

  auto projection = app.add_projection<bank::balances>({}, /*strong*/ true);
  if (!projection)
    fail("start the balance projection", projection.error());
  auto saga = app.add_process_manager<bank::transfer_saga>();
  if (!saga)
    fail("start the transfer process manager", saga.error());
  say("\nThe supervision tree: each account, the projection and the saga are actors under it.");
  if (auto tree = app.root().tree())
    say("%s", tree->c_str());

  section("1. accounts: a command is validated by its aggregate, then its events are stored");
  for (const char* name : {"alice", "bob", "carol"})
    run(app, std::string{"open_account "} + name, bank::open_account{name, name});

  section("2. deposits and withdrawals; a withdrawal past the balance is refused");
  run(app, "deposit alice 100", bank::deposit{"alice", 100});
  run(app, "deposit bob 20", bank::deposit{"bob", 20});
  run(app, "withdraw alice 30", bank::withdraw{"alice", 30});
  run(app, "withdraw bob 1000000", bank::withdraw{"bob", 1'000'000});
  run(app, "deposit carol -5", bank::deposit{"carol", -5});

  section("3. a money transfer, run by the transfer process manager (withdraw, deposit, complete)");
  transfer(app, "alice", "bob", 40);

  section("4. a transfer whose credit side is refused: the saga refunds the debit and fails it");
  transfer(app, "alice", "mallory", 10); // mallory never opened an account

  section("5. let it crash: account actors killed mid-flight");
  auto alice_before = balance_of(app, "alice");
  auto actors = open_account_actors(app);
  for (auto& a : actors)
    caf::anon_send_exit(a, caf::exit_reason::kill);
  say("  killed %zu open account actors (exit reason: kill); alice had %lld", actors.size(),
      static_cast<long long>(alice_before));
  actors.clear(); // handles keep dead actors' memory (and a detached one's thread) alive
  std::this_thread::sleep_for(50ms);
  run(app, "deposit alice 1", bank::deposit{"alice", 1});
  {
    auto snap = app.store().load_snapshot("account-alice");
    if (snap && *snap)
      say("  alice's actor reopened on demand from her snapshot (version %llu), then the events after it: "
          "balance %lld (was %lld, +1)",
          static_cast<unsigned long long>((*snap)->stream_version), static_cast<long long>(balance_of(app, "alice")),
          static_cast<long long>(alice_before));
    else
      say("  alice's actor reopened on demand from her events: balance %lld (was %lld, +1)",
          static_cast<long long>(balance_of(app, "alice")), static_cast<long long>(alice_before));
  }

  section("6. let it crash: the projector killed; its supervisor restarts it from its checkpoint");
  {
    // The projector runs detached (it blocks on fsync): the system's stop
    // waits until every handle to it is gone, so these stay in this scope.
    auto before = child(app, "projection:bank.balances");
    if (before.actor)
      caf::anon_send_exit(before.actor, caf::exit_reason::kill);
    for (int i = 0; i < 200; ++i) {
      auto now = child(app, "projection:bank.balances");
      if (now.actor && now.actor != before.actor)
        break;
      std::this_thread::sleep_for(10ms);
    }
    say("  projection:bank.balances restarted (%u restarts so far)", child(app, "projection:bank.balances").restarts);
  }
  run(app, "deposit bob 5 (strong consistency)", bank::deposit{"bob", 5}, sourcery::consistency::strong);

  auto models = app.read_models();
  if (!models)
    fail("open the read models", models.error());
  section((*models)->sql_schema() != nullptr ? "7. the read model (a projection in PostgreSQL), checked against the aggregates"
                                             : "7. the read model (an LMDB projection), checked against the aggregates");
  auto rows = (*models)->scan("bank.balances", "balances");
  if (!rows)
    fail("read the balances", rows.error());
  bool agree = true;
  for (auto& [stream, value] : *rows) {
    auto truth = balance_of(app, stream.substr(8));
    agree = agree && std::to_string(truth) == value;
    say("  %-16s %8s%s", stream.c_str(), value.c_str(), std::to_string(truth) == value ? "" : "  (behind)");
  }
  for (const char* kind : {"completed", "failed"}) {
    auto n = (*models)->get("bank.balances", "transfers", kind);
    say("  transfers %-9s %8s", kind, n && *n ? (*n)->c_str() : "0");
  }
  say("  %s", agree ? "every balance agrees with its aggregate: nothing lost, nothing applied twice"
                    : "some rows are behind their aggregates");

  section("8. alice's audit trail: every event of her stream");
  auto stream = app.store().read_stream("account-alice", 1, 100'000);
  if (!stream)
    fail("read alice's stream", stream.error());
  size_t skip = stream->size() > 12 ? stream->size() - 12 : 0;
  if (skip > 0)
    say("  (%zu earlier events)", skip);
  for (size_t i = skip; i < stream->size(); ++i) {
    auto& e = (*stream)[i];
    auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::time_point{std::chrono::microseconds{e.created_at}});
    char when[32];
    std::strftime(when, sizeof when, "%F %T", std::gmtime(&t));
    say("  v%-4llu #%-6llu %s  %-22s %s", static_cast<unsigned long long>(e.stream_version),
        static_cast<unsigned long long>(e.position), when, e.type.c_str(), data_of(e).c_str());
  }

  section("9. personal data: carol asks to be forgotten (her name was sealed with her account's key)");
  {
    auto owner_of = [&app](const char* id) {
      auto a = app.aggregate_state<bank::account>(std::string{"account-"} + id);
      return !a ? std::string{"?"} : a->owner.known() ? a->owner.value() : a->owner.forgotten() ? "<forgotten>" : "<sealed>";
    };
    say("  carol's owner before: %s", owner_of("carol").c_str());
    auto forgot = app.forget("account-carol");
    if (!forgot)
      fail("forget carol", forgot.error());
    say("  forget account-carol -> %s", *forgot ? "her key is deleted" : "nothing to forget (forgotten in an earlier run)");
    say("  carol's owner after:  %s; alice's: %s (untouched)", owner_of("carol").c_str(), owner_of("alice").c_str());
    run(app, "deposit carol 7 (her account still works)", bank::deposit{"carol", 7});
    auto opened = app.store().read_stream("account-carol", 1, 1);
    if (opened && !opened->empty())
      say("  her first event now reads: %s %s", (*opened)[0].type.c_str(), data_of((*opened)[0]).c_str());
  }

  auto& m = app.metrics();
  say("\nThis run: %llu commands accepted, %llu rejected, %llu events appended, %llu restarts; the log now holds "
      "%llu events.",
      static_cast<unsigned long long>(m.commands("accepted")), static_cast<unsigned long long>(m.commands("rejected")),
      static_cast<unsigned long long>(m.events_appended()), static_cast<unsigned long long>(m.restarts()),
      static_cast<unsigned long long>(app.store().head_position()));
  if (demo::store_location(config) != "memory:")
    say("Run it again with the same store: it continues where it stopped.");
  // A tree that gave up during the run: exit non-zero (a process supervisor
  // restarts the program; a script sees the failure).
  auto why = app.failure();
  app.stop();
  if (why) {
    std::fprintf(stderr, "%s-demo: the application failed: %s\n", "bank", sourcery::describe_error(why).c_str());
    return 1;
  }
  return 0;
}
