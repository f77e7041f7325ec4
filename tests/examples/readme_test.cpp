// The README's code, compiled and run: every ```cpp block of README.md is
// here, line for line (the last test checks it), around the code that
// makes it a program.

#include <atomic>
#include <fstream>
#include <future>
#include <iostream>
#include <sstream>

#include <gtest/gtest.h>

#include "sourcery/persistence/personal.hpp"

#include "../../examples/bank/balances.hpp"
#include "../../examples/bank/routes.hpp"
#include "../../examples/todo/todo.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/actors/aggregates/aggregate_testing.hpp"
#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/read_model_table.hpp"
#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/cluster/node_registration.hpp"
#include "sourcery/runtime/http/gateway.hpp"
#include "sourcery/runtime/tool/operator_tool.hpp"

namespace readme {

// README: aggregates
struct open_account { std::string account, owner; SOURCERY_FIELDS(account, owner) };
struct deposit { std::string account; int64_t amount = 0; SOURCERY_FIELDS(account, amount) };
struct withdraw { std::string account; int64_t amount = 0; SOURCERY_FIELDS(account, amount) };

struct account_opened { std::string owner; SOURCERY_EVENT("bank.account_opened", owner) };
struct money_deposited { int64_t amount = 0; SOURCERY_EVENT("bank.money_deposited", amount) };
struct money_withdrawn { int64_t amount = 0; SOURCERY_EVENT("bank.money_withdrawn", amount) };

struct account {
  using event = std::variant<account_opened, money_deposited, money_withdrawn>;
  bool open = false;
  int64_t balance = 0;

  sourcery::outcome<event> execute(const open_account& c) const {
    if (open) return sourcery::reject("already_open");
    return account_opened{c.owner};
  }
  sourcery::outcome<event> execute(const deposit& c) const {
    if (!open) return sourcery::reject("not_open");
    return money_deposited{c.amount};
  }
  sourcery::outcome<event> execute(const withdraw& c) const {
    if (c.amount > balance) return sourcery::reject("insufficient_funds");
    return money_withdrawn{c.amount};
  }
  void apply(const account_opened&) { open = true; }
  void apply(const money_deposited& e) { balance += e.amount; }
  void apply(const money_withdrawn& e) { balance -= e.amount; }
};
// README: end

// README: routes
inline sourcery::router routes() {
  sourcery::aggregate_settings accounts;   // all optional:
  accounts.snapshot_every = 100;           // snapshot each 100 events (needs SOURCERY_FIELDS over the state)
  accounts.lifespan = sourcery::lifespan::timeout(std::chrono::minutes{10});  // passivate when idle
  accounts.after_error = sourcery::lifespan::stop();                          // ... at once after a refusal
  accounts.max_retries = 5;                // conflicts with other writers: decide again up to 5 times
  accounts.timeout = std::chrono::seconds{2};                                 // dispatch defaults
  accounts.consistency_level = sourcery::consistency::eventual;
  sourcery::router r;
  r.aggregate<account>([](const auto& c) { return c.account; }, "account-", accounts)
    .dispatch<open_account, deposit, withdraw>();
  return r;
}
// README: end

// README: handlers
struct balances {
  static constexpr const char* handler_name = "bank.balances";
  using event = std::variant<money_deposited, money_withdrawn>;
  static sourcery::subscription subscribe_to() { return sourcery::subscription::category("account-"); }
  std::map<std::string, int64_t> totals;

  void init() { totals.clear(); }       // at each (re)start, before the first event
  void handle(const money_deposited& e, const sourcery::event_context& ctx) {
    totals[std::string{ctx.aggregate_id()}] += e.amount;   // "42", not "account-42"
    auto user = ctx.meta().get_string("user");             // what the command carried
    (void)user;
  }
  void handle(const money_withdrawn& e, const sourcery::event_context& ctx) {
    totals[std::string{ctx.aggregate_id()}] -= e.amount;
  }
};
// README: end

// README: tables
struct balance_row { std::string id; int64_t balance = 0; SOURCERY_FIELDS(id, balance) };
inline const sourcery::persistence::table<balance_row> balance_table{
  "balances", "id", "id text PRIMARY KEY, balance bigint NOT NULL"};   // a SQL table on PostgreSQL

struct balance_view {
  static constexpr const char* projection_name = "bank.balance_view";
  using event = std::variant<account_opened, money_deposited>;
  using writer = sourcery::persistence::projection_store::writer;

  caf::error init(sourcery::persistence::projection_store& models) {
    return balance_table.create(models, projection_name);
  }
  caf::error project(const account_opened&, const sourcery::event_context& ctx, writer& w) {
    return balance_table.put(w, {std::string{ctx.aggregate_id()}, 0});
  }
  caf::error project(const money_deposited& e, const sourcery::event_context& ctx, writer& w) {
    return balance_table.update(w, ctx.aggregate_id(), [&](balance_row& r) { r.balance += e.amount; });
  }
};
// README: end

struct tag_user : sourcery::middleware {
  caf::error before_dispatch(sourcery::dispatch_context& ctx) override {
    ctx.options.metadata.set("via", "middleware");
    return {};
  }
};

} // namespace readme

// The event store's example.
namespace store_example {
struct money_deposited {
  int64_t amount = 0;
  std::string currency;
  MSGPACK_DEFINE_MAP(amount, currency);
};

void run(const std::string& dir) {
  using namespace sourcery::persistence;
  const std::string data = dir + "/data";
  // README: store
auto store = sourcery::persistence::lmdb_store::open({.path = data});      // caf::expected<…>
event_registry types;
types.add<money_deposited>("bank.money_deposited", 2);                     // MSGPACK_DEFINE_MAP struct
auto r = (*store)->append("account-42", expected_version::exact(0), {*types.encode(money_deposited{50, "EUR"})});
if (!r) std::cerr << describe(r.error());                                // e.g. "wrong_expected_version: …"
  // README: end
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->stream_version, 1u);
}
} // namespace store_example

// The handler options' example, on the bank domain.
void handler_options_example(sourcery::application* app) {
  using bank::deposit;
  using balances = readme::balances;
  // README: handler options
sourcery::handler_options opts;               // start: origin | current | position; batch_size; subscribe_to
opts.on_error.max_retries = 5;                // retry with exponential backoff, then...
opts.on_error.then = sourcery::error_action::kind::skip;   // ...skip the event (or stop the handler)
auto status = app->add_handler<balances>(opts, /*strong=*/true);
sourcery::dispatch_options strong;
strong.consistency_level = sourcery::consistency::strong;  // answer once strong handlers have the events
auto r = app->dispatch(deposit{"42", 5}, strong);
  // README: end
  ASSERT_TRUE(status) << sourcery::describe_error(status.error());
  ASSERT_TRUE(r) << sourcery::describe_error(r.error());
  EXPECT_GE((*status)->position(), r->last_position);
}

// The projection example (the bank's `balances`), its rebuild and time travel.
void projection_example(sourcery::application* app) {
  using namespace bank;
  auto& store = app->store();
  auto& types = app->event_types();
  auto& models = **app->read_models();
  // README: projection
app->add_projection<balances>();                    // "projection:bank.balances" under the root
auto row = (*app->read_models())->get("bank.balances", "balances", "account-42");
app->rebuild_projection("bank.balances");          // drop and replay from the log
sourcery::project_as_of<balances>(store, types, models, "balances@noon", {.position = 1234});
  // README: end
  ASSERT_TRUE(row);
  auto noon = models.checkpoint("balances@noon");
  ASSERT_TRUE(noon && *noon);
  EXPECT_EQ(**noon, store.head_position());
}

// The HTTP route's example: the todo server's POST, dispatching without blocking.
void http_example(sourcery::http::gateway& gw, sourcery::dispatcher& app) {
  namespace http = sourcery::http;
  using sourcery::dispatch_result;
  using todo::create_todo;
  auto new_id = [] { return sourcery::persistence::uuid::random().to_string(); };
  sourcery::dispatch_options strong;
  strong.consistency_level = sourcery::consistency::strong;
  // README: http
gw.route("POST", "/todos", [&app, strong, new_id](http::request& req, http::responder answer) {
  auto body = http::json_object_body(req);                   // 400 malformed_json
  if (!body) return answer(body.err());
  auto title = http::required_field<std::string>(*body, "title"); // 422 missing_field / invalid_field
  if (!title) return answer(title.err());
  app.dispatch_async(create_todo{new_id(), *title}, strong, [answer](caf::expected<dispatch_result> r) {
    if (!r) return answer(http::dispatch_failure(r.error())); // 504 timeout, 503, 409, 507, …
    if (!r->accepted) return answer(http::rejected(r->why));  // 422 with the rejection's reason
    answer(http::json_response(201, {{"version", r->version}}));
  });
});
  // README: end
}

// The operator tool inside an application's `main`.
int admin_main(int argc, char** argv) {
  // README: admin
if (argc > 1 && std::string_view{argv[1]} == "admin") {
  sourcery::operator_tool tool{"bank-demo admin"};
  tool.add_routes(bank::routes())                             // its aggregates' events and stream prefixes
    .add_projection<bank::balances>("account balances");      // its events and upcasters come along
  return tool.run(argc - 1, argv + 1);
}
  // README: end
  return 0;
}

// The supervision tree's example.
void supervision_example(caf::actor_system& system) {
  auto store_actor = [] { return caf::behavior{[](int x) { return x; }}; };
  sourcery::supervision::supervisor_flags dyn_flags;
  dyn_flags.name = "accounts";
  dyn_flags.how = sourcery::supervision::strategy::simple_one_for_one;
  sourcery::supervision::child_spec account_template;
  account_template.id = "account";
  account_template.start = sourcery::supervision::spawn_fun(store_actor);
  // README: supervision
using namespace sourcery::supervision;
supervisor_flags flags;                       // one_for_one, intensity 1 in 5 s: OTP's defaults
flags.name = "app";
child_spec store;                             // a permanent worker
store.id = "store";
store.start = spawn_fun(store_actor);
child_spec accounts;                          // a child supervisor of dynamic children
accounts.id = "accounts";
accounts.start = supervisor_start(dyn_flags, {account_template});
accounts.type = child_type::supervisor;
auto app = supervisor::start(system, flags, {store, accounts});          // waits for every child
std::cout << *app->tree();                    // names, ids, restart counts
app->stop();                                  // reverse order, each child by its shutdown policy
  // README: end
}

namespace {

TEST(readme, the_event_store_example_appends) {
  sourcery::testing::temp_dir dir;
  store_example::run(dir.str());
}

TEST(readme, the_bank_examples_run) {
  sourcery::testing::temp_dir dir;
  sourcery::application_config config;
  config.data_dir = dir.str();
  auto app = sourcery::application::start(config, bank::routes());
  ASSERT_TRUE(app);
  ASSERT_TRUE((*app)->dispatch(bank::open_account{"42", "ann"}));
  handler_options_example(app->get());
  projection_example(app->get());
  sourcery::http::gateway gw;
  http_example(gw, **app);
  char name[] = "bank-demo";
  char* argv[] = {name};
  EXPECT_EQ(admin_main(1, argv), 0);
}

TEST(readme, the_supervision_example_runs) {
  caf::actor_system_config cfg;
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system system{cfg};
  supervision_example(system);
}

/// The lines of `text` with their leading and trailing blanks cut.
std::vector<std::string> trimmed_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);) {
    auto a = line.find_first_not_of(" \t");
    auto b = line.find_last_not_of(" \t\r");
    out.push_back(a == std::string::npos ? std::string{} : line.substr(a, b - a + 1));
  }
  return out;
}

namespace readme_personal {
// README: personal data
struct account_opened {
  sourcery::personal<std::string> owner;          // sealed with the key of the event's stream
  SOURCERY_EVENT("bank.account_opened", owner)
};
struct consent_given {
  std::string patient;
  sourcery::personal<std::string> name;           // sealed with the key of subject `patient`
  SOURCERY_EVENT("consent.given", patient, name)
  SOURCERY_SUBJECT(patient)
};
} // namespace readme_personal

TEST(readme, personal_fields_name_their_subject) {
  sourcery::persistence::event_registry types;
  ASSERT_FALSE(types.add<readme_personal::account_opened>("bank.account_opened"));
  ASSERT_FALSE(types.add<readme_personal::consent_given>("consent.given"));
  auto opened = types.encode(readme_personal::account_opened{std::string{"Zoe"}});
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->subject, "") << "the stream's";
  auto given = types.encode(readme_personal::consent_given{"patient-4", std::string{"Ana"}});
  ASSERT_TRUE(given);
  EXPECT_EQ(given->subject, "patient-4");
}

TEST(readme, every_cpp_block_of_the_readme_is_compiled_here) {
  std::ifstream readme_file{README_PATH};
  ASSERT_TRUE(readme_file) << README_PATH;
  std::stringstream readme, self;
  readme << readme_file.rdbuf();
  std::ifstream self_file{__FILE__};
  ASSERT_TRUE(self_file) << __FILE__;
  self << self_file.rdbuf();
  auto here = trimmed_lines(self.str());
  auto lines = trimmed_lines(readme.str());
  int blocks = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i] != "```cpp")
      continue;
    std::vector<std::string> block;
    for (++i; i < lines.size() && lines[i] != "```"; ++i)
      block.push_back(lines[i]);
    ++blocks;
    auto at = std::search(here.begin(), here.end(), block.begin(), block.end());
    EXPECT_NE(at, here.end()) << "README block " << blocks << " is not in " << __FILE__ << ":\n" << block.front();
  }
  EXPECT_GE(blocks, 10);
}

// The cluster's settings as the README gives them: a registration provider
// the application is started with (a node of a cluster on PostgreSQL; the
// cluster tests start such nodes).
TEST(readme, the_cluster_example_builds_a_node_registration) {
  sourcery::application_config config;
  // README: cluster
sourcery::cluster::cluster_settings cluster;
cluster.name = "bank";
cluster.node = "10.0.0.5:7400";                 // where its peers reach this node
cluster.insecure_links = true;                  // plain links off loopback: see "Security" below
config.store_uri = "postgresql://...";           // the store every node shares
config.registration = sourcery::cluster::node_registration(cluster);
  ASSERT_NE(config.registration, nullptr);
  // Not PostgreSQL: the node refuses to start, and says why.
  config.store_uri = "memory:";
  auto app = sourcery::application::start(config, bank::routes());
  ASSERT_FALSE(app);
  EXPECT_NE(sourcery::describe_error(app.error()).find("PostgreSQL"), std::string::npos)
    << sourcery::describe_error(app.error());
}

TEST(readme, the_aggregate_example_decides_as_documented) {
  using namespace readme;
  using sourcery::testing::given;
EXPECT_TRUE(given<account>(account_opened{"alice"}, money_deposited{100}).when(withdraw{"a", 150}).rejects("insufficient_funds"));
}

TEST(readme, the_dispatch_example_runs) {
  using namespace readme;
  sourcery::testing::temp_dir dir;
  // README: dispatch
  sourcery::application_config config;
  config.data_dir = dir.str();
  auto app = sourcery::application::start(config, routes(), {std::make_shared<tag_user>()});
  if (!app) { std::cerr << sourcery::describe_error(app.error()); return; }
  (*app)->dispatch(open_account{"42", "alice"});
  sourcery::dispatch_options opts;
  opts.metadata.set("user", "alice").set("request", 7);          // typed, stored as a msgpack map
  opts.returns = sourcery::returning::version;
  auto r = (*app)->dispatch(deposit{"42", 100}, opts);           // blocks until durably stored
  if (r && !r->accepted) std::cout << r->why.reason;              // a rejection is an answer, not an error
  (*app)->dispatch_async(deposit{"42", 5}, {}, [](caf::expected<sourcery::dispatch_result>) {});  // never blocks
  // README: end
  ASSERT_TRUE(r && r->accepted);
  EXPECT_EQ(r->version, 2u);
  auto events = (*app)->store().read_stream("account-42", 2, 1);
  ASSERT_TRUE(events && events->size() == 1);
  auto meta = sourcery::metadata::decode((*events)[0].metadata);
  ASSERT_TRUE(meta);
  EXPECT_EQ(meta->get_string("user"), "alice");
  EXPECT_EQ(meta->get_string("via"), "middleware");

  auto h = (*app)->add_handler<balances>();
  ASSERT_TRUE(h);
  auto p = (*app)->add_projection<balance_view>();
  ASSERT_TRUE(p);
  ASSERT_TRUE((*app)->dispatch(deposit{"42", 1}));
  auto head = (*app)->store().head_position();
  auto reached = std::make_shared<std::promise<void>>();
  auto f = reached->get_future();
  (*p)->when_reached(head, [reached](caf::error) { reached->set_value(); });
  ASSERT_EQ(f.wait_for(std::chrono::seconds{10}), std::future_status::ready);
  auto models = (*app)->read_models();
  ASSERT_TRUE(models);
  auto row = balance_table.find(**models, balance_view::projection_name, "42");
  ASSERT_TRUE(row && *row);
  EXPECT_EQ((*row)->balance, 106);
}

} // namespace
