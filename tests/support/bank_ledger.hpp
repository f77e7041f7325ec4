#pragma once

// What must hold of the bank after a fault test, checked from the store and
// a live node: every acknowledged deposit stored exactly once, each
// account's stream versions contiguous, every transfer settled so that the
// balances add up to what was deposited, and the projection's rows agreeing
// with the accounts. Deposits are those whose "transfer" id starts with "d"
// (the load's and the probes') or "seed" (the opening ones).

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "eventually.hpp"
#include "http_client.hpp"
#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/postgres_projection_store.hpp"
#include "sourcery/persistence/postgres_store.hpp"

namespace sourcery::testing {

struct ledger_verdict {
  int lost = 0, duplicated = 0, version_gaps = 0;
  int64_t deposited = 0, held = 0; ///< money deposited, and the sum of the balances a node answers
  bool projection_agrees = false;
  std::vector<std::string> lost_ids, duplicated_ids;
  std::vector<std::string> problems; ///< what could not be checked
};

/// Deposits 1 to each of accounts a0..a{accounts-1} through the node at
/// `host`:`http_port`, one after the other, each retried until it is
/// answered 200 (each request within `per_request`), for at most `limit`.
/// Each deposit's id is `id_prefix` and the account and attempt; `acked` is
/// told every id answered 200. Returns how many accounts were served.
template <class OnAcked>
int deposit_to_every_account(const std::string& host, uint16_t http_port, int accounts, std::chrono::milliseconds limit,
                             std::chrono::milliseconds per_request, const std::string& id_prefix, OnAcked acked) {
  auto t0 = std::chrono::steady_clock::now();
  test::http_client c{http_port, host};
  c.set_timeout(per_request);
  int a = 0, attempt = 0;
  while (a < accounts && std::chrono::steady_clock::now() - t0 < limit) {
    auto id = id_prefix + std::to_string(a) + "-" + std::to_string(attempt++);
    try {
      auto r = c.post("/accounts/a" + std::to_string(a) + "/deposits", {{"amount", 1}, {"transfer", id}});
      if (r.status == 200) {
        acked(id);
        ++a;
        continue;
      }
    } catch (const std::exception&) {
      c.reconnect();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
  }
  return a;
}

/// Opens accounts a0..a{accounts-1} and seeds each with 1000 through the
/// node at `host`:`http_port`, as a client would: a 503 or 504 (a node
/// settling into the cluster just after it started, on a loaded machine) or
/// a dropped connection is tried again until `limit` has passed. Both are
/// safe to repeat: an account open already is a 409 (taken only after an
/// attempt that may have run), and a deposit names its transfer, which the
/// account applies once. `acked` is told each seed deposit ("seed<a>")
/// answered 200. Returns what went wrong, empty when every account is open.
template <class OnAcked>
std::string open_bank_accounts(const std::string& host, uint16_t http_port, int accounts,
                               std::chrono::milliseconds limit, OnAcked acked) {
  test::http_client c{http_port, host};
  c.set_timeout(std::chrono::seconds{10});
  auto until = std::chrono::steady_clock::now() + limit;
  std::string last;
  // Whether `path` answered one of `ok`; any other answer than 503 or 504
  // fails at once, since asking again would not change it.
  auto answered = [&](const std::string& path, const nlohmann::json& body, std::initializer_list<int> ok) {
    for (bool tried = false; std::chrono::steady_clock::now() < until; tried = true) {
      try {
        auto r = c.post(path, body);
        last = r.body;
        for (int status : ok)
          if (static_cast<int>(r.status) == status && (status != 409 || tried))
            return true;
        if (r.status != 503 && r.status != 504)
          return false;
      } catch (const std::exception& e) {
        last = e.what();
        c.reconnect();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{50});
    }
    return false;
  };
  for (int a = 0; a < accounts; ++a) {
    auto id = "a" + std::to_string(a);
    if (!answered("/accounts", {{"account", id}}, {201, 409}))
      return "account " + id + " was not opened in time: " + last;
    auto seed = "seed" + std::to_string(a);
    if (!answered("/accounts/" + id + "/deposits", {{"amount", 1000}, {"transfer", seed}}, {200}))
      return "account " + id + " was not seeded in time: " + last;
    acked(seed);
  }
  return {};
}

/// Checks accounts a0..a{accounts-1} in `schema`; balances are asked of the
/// node at `host`:`http_port`, waiting up to `settle` for transfers to settle
/// and the projection to catch up.
inline ledger_verdict check_bank_ledger(const std::string& server, const std::string& schema, int accounts,
                                        const std::set<std::string>& acked, const std::string& host,
                                        uint16_t http_port, std::chrono::seconds settle = std::chrono::seconds{30}) {
  ledger_verdict v;
  persistence::postgres_options so;
  so.conninfo = server;
  so.schema = schema;
  auto store = persistence::postgres_store::open(so);
  if (!store) {
    v.problems.push_back("the store cannot be opened for the checks");
    return v;
  }
  std::set<std::string> stored;
  for (int a = 0; a < accounts; ++a) {
    auto stream = "account-a" + std::to_string(a);
    auto events = (*store)->read_stream(stream, 1, 1'000'000);
    if (!events) {
      v.problems.push_back(stream + " cannot be read");
      return v;
    }
    for (size_t i = 0; i < events->size(); ++i) {
      auto& e = (*events)[i];
      v.version_gaps += e.stream_version != i + 1;
      if (e.type != "bank.money_deposited")
        continue;
      auto data = persistence::event_registry::data_as_json(e.data);
      if (!data) {
        v.problems.push_back(stream + ": an event that does not decode");
        continue;
      }
      std::string id = (*data)["transfer"];
      if (id.rfind("d", 0) == 0 || id.rfind("seed", 0) == 0) {
        if (!stored.insert(id).second) {
          ++v.duplicated;
          v.duplicated_ids.push_back(id);
        }
        v.deposited += (*data)["amount"].get<int64_t>();
      }
    }
  }
  for (auto& id : acked)
    if (!stored.count(id)) {
      ++v.lost;
      v.lost_ids.push_back(id);
    }
  test::http_client c{http_port, host};
  c.set_timeout(std::chrono::seconds{5});
  persistence::postgres_read_model_options o;
  o.conninfo = server;
  o.schema = schema;
  auto models = persistence::postgres_projection_store::open(o);
  if (!models)
    v.problems.push_back("the read models cannot be opened for the checks");
  eventually(
    [&] {
      int64_t total = 0;
      bool agree = static_cast<bool>(models);
      try {
        for (int a = 0; a < accounts; ++a) {
          auto balance = c.get("/accounts/a" + std::to_string(a)).json()["balance"].get<int64_t>();
          total += balance;
          if (agree) {
            auto row = (*models)->get("bank.balances", "balances", "account-a" + std::to_string(a));
            agree = row && *row && **row == std::to_string(balance);
          }
        }
      } catch (const std::exception&) {
        c.reconnect();
        agree = false;
      }
      v.held = total;
      v.projection_agrees = agree;
      return total == v.deposited && agree;
    },
    settle);
  return v;
}

} // namespace sourcery::testing
