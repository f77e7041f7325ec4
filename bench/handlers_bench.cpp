// Handlers, projections and process managers on the bank domain:
// W2 (W1 with the balance projection strong, W1 alone in the same run as the
// baseline), W3 (10,000 transfers through the transfer saga, durable) and a
// projection catching up on 1,000,000 stored events.

#include <filesystem>
#include <random>
#include <thread>

#include "../examples/bank/balances.hpp"
#include "../examples/bank/transfer_saga.hpp"
#include "bank_load.hpp"

namespace sourcery::bench {

namespace {

namespace fs = std::filesystem;

void w2(int commands) {
  std::mt19937 rng{7};
  std::vector<int> target(static_cast<size_t>(commands));
  for (auto& t : target)
    t = static_cast<int>(rng() % 1000);
  auto deposit_to = [&](int i) { return deposit{std::to_string(target[static_cast<size_t>(i)]), 1}; };
  std::vector<double> lat;
  {
    auto app = start_app("", true);
    open_accounts(*app, 1000);
    double rate = closed_loop(*app, 16, commands, deposit_to, lat);
    report("handlers", "w1_memory_16_baseline", rate, "commands/s");
  }
  auto app = start_app("", true);
  auto status = app->add_projection<balances>({}, true);
  if (!status) {
    std::fprintf(stderr, "w2: %s\n", describe_error(status.error()).c_str());
    std::exit(1);
  }
  open_accounts(*app, 1000);
  dispatch_options strong;
  strong.consistency_level = consistency::strong;
  double rate = closed_loop(*app, 16, commands, deposit_to, lat, strong);
  report("handlers", "w2_strong_16", rate, "commands/s");
  report("handlers", "w2_strong_16_p50", percentile(lat, 0.50), "us");
  report("handlers", "w2_strong_16_p99", percentile(lat, 0.99), "us");
}

void w3(const std::string& dir, int transfers) {
  auto app = start_app(dir, false);
  auto view = app->add_projection<balances>();
  auto saga = app->add_process_manager<transfer_saga>();
  if (!view || !saga) {
    std::fprintf(stderr, "w3: cannot start the projection or the saga\n");
    std::exit(1);
  }
  open_accounts(*app, 1000);
  std::vector<double> lat;
  closed_loop(*app, 64, 1000, [](int i) { return deposit{std::to_string(i), 1'000'000}; }, lat);
  auto models = *app->read_models();
  auto completed = [&] {
    auto n = models->get(balances::projection_name, "transfers", "completed");
    return n && *n ? std::stoll(**n) : 0;
  };
  std::mt19937 rng{3};
  std::vector<std::pair<int, int>> pairs(static_cast<size_t>(transfers));
  for (auto& [from, to] : pairs) {
    from = static_cast<int>(rng() % 1000);
    do
      to = static_cast<int>(rng() % 1000);
    while (to == from);
  }
  auto start = std::chrono::steady_clock::now();
  closed_loop(*app, 256, transfers, [&](int i) {
    auto [from, to] = pairs[static_cast<size_t>(i)];
    return request_transfer{"w3-" + std::to_string(i), std::to_string(from), std::to_string(to), 1};
  }, lat);
  auto deadline = start + std::chrono::minutes{5};
  while (completed() < transfers && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
  double secs = seconds_since(start);
  if (completed() < transfers)
    std::fprintf(stderr, "w3: only %lld of %d transfers completed\n", static_cast<long long>(completed()), transfers);
  report("handlers", "w3_transfers", completed() / secs, "transfers/s");
}

void catchup(const std::string& dir, int events) {
  auto app = start_app(dir, false);
  persistence::event_registry types;
  register_events<account>(types);
  // The events, written straight to the store: 1,000 accounts, appended in
  // batches so that writing them takes seconds, not minutes.
  const int per_append = 1000;
  std::vector<persistence::event_data> batch;
  for (int i = 0; i < events; i += per_append) {
    batch.clear();
    for (int k = 0; k < per_append; ++k)
      batch.push_back(*types.encode(money_deposited{1}));
    if (!app->store().append("account-" + std::to_string((i / per_append) % 1000), persistence::expected_version::any(),
                             std::move(batch))) {
      std::fprintf(stderr, "catchup: append failed\n");
      std::exit(1);
    }
  }
  auto head = app->store().head_position();
  // Stored and settled: the store indexes its streams while idle.
  std::this_thread::sleep_for(std::chrono::seconds{1});
  handler_options opts;
  opts.batch_size = 4096;
  auto start = std::chrono::steady_clock::now();
  auto status = app->add_projection<balances>(opts);
  if (!status) {
    std::fprintf(stderr, "catchup: %s\n", describe_error(status.error()).c_str());
    std::exit(1);
  }
  while ((*status)->position() < head)
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  report("handlers", "catchup_1m", static_cast<double>(head) / seconds_since(start), "events/s");
}

} // namespace

int run_handlers_suite(const options& opts) {
  fs::path root = fs::path{opts.dir} / ("handlers-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  if (wanted("w2"))
    w2(static_cast<int>(100'000 * opts.scale));
  if (wanted("w3"))
    w3((root / "w3").string(), static_cast<int>(10'000 * opts.scale));
  if (wanted("catchup"))
    catchup((root / "catchup").string(), static_cast<int>(1'000'000 * opts.scale));
  fs::remove_all(root);
  return 0;
}

} // namespace sourcery::bench
