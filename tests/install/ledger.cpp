// A small ledger on an installed Sourcery: one aggregate and one projection
// on LMDB, through the public headers only. Prints what it did and exits 0
// when the aggregate refused what it should and the projection caught up.
//   ledger DATA_DIR

#include <cstdint>
#include <cstdio>
#include <string>
#include <variant>

#include "sourcery/actors/events/projector.hpp"
#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/commands/router.hpp"
#include "sourcery/version.hpp"

namespace ledger {

struct open { std::string id; SOURCERY_FIELDS(id) };
struct credit { std::string id; int64_t amount = 0; SOURCERY_FIELDS(id, amount) };

struct opened { SOURCERY_EVENT("ledger.opened") };
struct credited { int64_t amount = 0; SOURCERY_EVENT("ledger.credited", amount) };

struct book {
  using event = std::variant<opened, credited>;
  bool is_open = false;

  sourcery::outcome<event> execute(const open&) const {
    if (is_open)
      return sourcery::reject("already_open", "this book is open already");
    return opened{};
  }
  sourcery::outcome<event> execute(const credit& c) const {
    if (!is_open)
      return sourcery::reject("not_open", "open the book first");
    return credited{c.amount};
  }
  void apply(const opened&) { is_open = true; }
  void apply(const credited&) {}
};

struct totals {
  static constexpr const char* projection_name = "ledger.totals";
  using event = std::variant<credited>;
  using writer = sourcery::persistence::projection_store::writer;
  caf::error project(const credited& e, const sourcery::event_context& ctx, writer& w) {
    auto old = w.get("totals", ctx.stream_id);
    w.put("totals", ctx.stream_id, std::to_string((old ? std::stoll(*old) : 0) + e.amount));
    return {};
  }
};

sourcery::router routes() {
  sourcery::router r;
  r.aggregate<book>([](const auto& c) { return c.id; }, "book-").dispatch<open, credit>();
  return r;
}

} // namespace ledger

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: ledger DATA_DIR\n");
    return 2;
  }
  std::printf("sourcery %s\n", sourcery::version);
  sourcery::application_config config;
  config.data_dir = argv[1];
  config.log.level = sourcery::log_level::warn;
  auto app = sourcery::application::start(config, ledger::routes());
  if (!app) {
    std::fprintf(stderr, "ledger: %s\n", sourcery::describe_error(app.error()).c_str());
    return 1;
  }
  if (auto added = (*app)->add_projection<ledger::totals>({}, /*strong*/ true); !added) {
    std::fprintf(stderr, "ledger: %s\n", sourcery::describe_error(added.error()).c_str());
    return 1;
  }
  auto refused = (*app)->dispatch(ledger::credit{"a", 5});
  if (!refused || refused->accepted) {
    std::fprintf(stderr, "ledger: a credit to an unopened book was not refused\n");
    return 1;
  }
  sourcery::dispatch_options strong;
  strong.consistency_level = sourcery::consistency::strong;
  for (auto* step : {"open", "credit"}) {
    auto r = std::string{step} == "open" ? (*app)->dispatch(ledger::open{"a"}, strong)
                                         : (*app)->dispatch(ledger::credit{"a", 42}, strong);
    if (!r || !r->accepted) {
      std::fprintf(stderr, "ledger: %s was not accepted\n", step);
      return 1;
    }
  }
  auto row = (*(*app)->read_models())->get("ledger.totals", "totals", "book-a");
  if (!row || !*row || **row != "42") {
    std::fprintf(stderr, "ledger: the projection did not catch up\n");
    return 1;
  }
  std::printf("refused: %s; book-a credited 42; projection ledger.totals: 42\n", refused->why.reason.c_str());
  (*app)->stop();
  return 0;
}
