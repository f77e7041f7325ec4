// Tenants: an application per tenant in one process (application_host),
// each with its own store, opened on demand and closed when idle. Tested
// with the todo application on LMDB and PostgreSQL.

#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "../../examples/todo/todo_tenants.hpp"
#include "../support/checked.hpp"
#include "../support/eventually.hpp"
#include "../support/postgres.hpp"
#include "../support/small_filesystem.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/runtime/tenants/application_host.hpp"

using namespace sourcery;
using sourcery::testing::checked;
using sourcery::testing::eventually;

namespace tenant_tests {

std::unique_ptr<application_host> start_host(const std::string& store,
                                             std::chrono::milliseconds idle = std::chrono::minutes{5}) {
  auto cfg = todo::tenants_config(store);
  cfg.idle_timeout = idle;
  auto host = application_host::start(std::move(cfg));
  EXPECT_TRUE(host) << describe_error(host.error());
  return host ? std::move(*host) : nullptr;
}

caf::expected<dispatch_result> create(tenant& t, const std::string& id, const std::string& title) {
  return t.app().dispatch(todo::create_todo{id, title});
}

TEST(tenants, names_are_checked) {
  EXPECT_TRUE(application_host::valid_name("acme"));
  EXPECT_TRUE(application_host::valid_name("acme-corp-2"));
  EXPECT_TRUE(application_host::valid_name(std::string(40, 'a')));
  for (const char* bad : {"", "Acme", "acme_corp", "a/b", "..", "a b", "é"})
    EXPECT_FALSE(application_host::valid_name(bad)) << bad;
  EXPECT_FALSE(application_host::valid_name(std::string(41, 'a')));
  sourcery::testing::temp_dir dir;
  auto host = start_host("lmdb:" + dir.str());
  ASSERT_TRUE(host);
  auto refused = host->open("../etc");
  ASSERT_FALSE(refused);
  EXPECT_EQ(persistence::code_of(refused.error()), persistence::store_errc::invalid_argument);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "nothing was created for a bad name";
}

TEST(tenants, a_hundred_open_and_close_in_one_process_each_with_its_own_store) {
  sourcery::testing::temp_dir dir;
  auto host = start_host("lmdb:" + dir.str());
  ASSERT_TRUE(host);
  for (int i = 0; i < 100; ++i) {
    auto t = host->open("t" + std::to_string(i));
    ASSERT_TRUE(t) << describe_error(t.error());
    ASSERT_TRUE(checked(create(**t, "todo-of-" + std::to_string(i), "mine")).accepted);
  }
  EXPECT_EQ(host->open_tenants().size(), 100u);
  // Each sees only its own: one stream, the one it wrote.
  for (int i : {0, 42, 99}) {
    auto t = checked(host->open("t" + std::to_string(i)));
    EXPECT_EQ(t->app().store().head_position(), 1u);
    auto mine = t->app().store().read_stream("todo-todo-of-" + std::to_string(i), 1, 10);
    ASSERT_TRUE(mine);
    EXPECT_EQ(mine->size(), 1u);
    auto other = t->app().store().read_stream("todo-todo-of-" + std::to_string(i == 0 ? 1 : 0), 1, 10);
    ASSERT_TRUE(other);
    EXPECT_TRUE(other->empty()) << "another tenant's stream";
    EXPECT_TRUE(std::filesystem::exists(dir.path() / ("t" + std::to_string(i)) / "data.mdb"));
  }
  for (int i = 0; i < 100; ++i)
    EXPECT_TRUE(host->close("t" + std::to_string(i)));
  EXPECT_TRUE(host->open_tenants().empty());
  // Closed, then opened again from its store.
  auto again = checked(host->open("t7"));
  auto list = again->state<todo::todo_api>()->rows();
  ASSERT_TRUE(list);
  EXPECT_TRUE(eventually([&] {
    auto l = again->state<todo::todo_api>()->rows();
    return l && l->size() == 1 && (*l)[0].id == "todo-of-7";
  }));
  host->stop();
}

TEST(tenants, an_idle_tenant_closes_and_one_in_use_does_not) {
  sourcery::testing::temp_dir dir;
  auto host = start_host("lmdb:" + dir.str(), std::chrono::milliseconds{100});
  ASSERT_TRUE(host);
  auto held = checked(host->open("busy"));
  ASSERT_TRUE(host->open("idle"));
  EXPECT_TRUE(eventually([&] { return host->open_tenants() == std::vector<std::string>{"busy"}; }));
  ASSERT_TRUE(checked(create(*held, "x", "still works")).accepted);
  held.reset();
  EXPECT_TRUE(eventually([&] { return host->open_tenants().empty(); }));
}

TEST(tenants, concurrent_opens_of_one_tenant_start_it_once) {
  sourcery::testing::temp_dir dir;
  auto host = start_host("lmdb:" + dir.str());
  ASSERT_TRUE(host);
  std::vector<std::thread> threads;
  std::vector<tenant*> seen(8, nullptr);
  for (size_t i = 0; i < seen.size(); ++i)
    threads.emplace_back([&, i] {
      auto t = host->open("shared");
      seen[i] = t ? t->get() : nullptr;
    });
  for (auto& th : threads)
    th.join();
  for (auto* t : seen)
    EXPECT_EQ(t, seen[0]);
  EXPECT_NE(seen[0], nullptr);
}

TEST(tenants, a_full_disk_of_one_tenant_leaves_the_others_serving) {
  sourcery::testing::temp_dir dir;
  sourcery::testing::small_filesystem fs{16};
  ASSERT_EQ(fs.error(), "");
  std::filesystem::create_directory_symlink(fs.str(), dir.path() / "full"); // tenant `full` on the small disk
  auto host = start_host("lmdb:" + dir.str());
  ASSERT_TRUE(host);
  auto full = checked(host->open("full"));
  auto fine = checked(host->open("fine"));
  ASSERT_TRUE(checked(create(*full, "a", "before")).accepted);
  fs.fill();
  for (int i = 0; i < 50; ++i) { // until the full tenant's writes fail
    auto r = create(*full, "big-" + std::to_string(i), std::string(3000, 'x'));
    if (!r)
      break;
  }
  auto refused = create(*full, "after", "no room");
  EXPECT_FALSE(refused && refused->accepted);
  EXPECT_TRUE(checked(create(*fine, "b", "unaffected")).accepted);
  auto other = host->open("another");
  ASSERT_TRUE(other) << describe_error(other.error());
  EXPECT_TRUE(checked(create(**other, "c", "opens and writes")).accepted);
  fs.free_filler();
  EXPECT_TRUE(eventually([&] {
    auto r = create(*full, "later", "room again");
    return r && r->accepted;
  }));
}

// A read must not make a tenant for any name it is given: open_existing
// opens only a tenant whose store exists, on LMDB and on PostgreSQL.
TEST(tenants, only_an_open_that_may_create_makes_a_tenant) {
  sourcery::testing::temp_dir dir;
  auto uri = sourcery::testing::test_pg_uri();
  auto suffix = std::to_string(std::hash<std::string>{}(dir.str()) % 100000);
  for (const std::string& store : {"lmdb:" + dir.str(), uri}) {
    SCOPED_TRACE(store);
    auto host = start_host(store);
    ASSERT_TRUE(host);
    auto name = "initech-" + suffix;
    auto none = host->open_existing(name);
    ASSERT_FALSE(none);
    EXPECT_EQ(persistence::code_of(none.error()), persistence::store_errc::no_store) << describe_error(none.error());
    EXPECT_TRUE(host->open_tenants().empty());
    if (store == uri)
      EXPECT_EQ(sourcery::testing::run_sql(uri, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_initech_"
                                                  + suffix + "'"),
                "0");
    else
      EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "nothing was created for a read";
    { // made by an open that may create; then found by a read, also once closed
      auto made = checked(host->open(name));
      ASSERT_TRUE(checked(create(*made, "i1", "initech's")).accepted);
    }
    ASSERT_TRUE(host->close(name));
    ASSERT_TRUE(eventually([&] { return static_cast<bool>(host->open_existing(name)); }, std::chrono::seconds{10}));
    host->stop();
    if (store == uri)
      sourcery::testing::run_sql(uri, "DROP SCHEMA tenant_initech_" + suffix + " CASCADE");
  }
}

TEST(tenants, on_postgresql_each_tenant_is_a_schema) {
  sourcery::testing::temp_dir dir;
  auto uri = sourcery::testing::test_pg_uri();
  auto host = start_host(uri);
  ASSERT_TRUE(host);
  auto suffix = std::to_string(std::hash<std::string>{}(dir.str()) % 100000);
  auto a = checked(host->open("acme-" + suffix));
  auto b = checked(host->open("globex-" + suffix));
  ASSERT_TRUE(checked(create(*a, "a1", "acme's")).accepted);
  EXPECT_EQ(b->app().store().head_position(), 0u);
  EXPECT_EQ(sourcery::testing::run_sql(uri, "SELECT count(*) FROM tenant_acme_" + suffix + ".events"), "1");
  EXPECT_EQ(sourcery::testing::run_sql(uri, "SELECT count(*) FROM tenant_globex_" + suffix + ".events"), "0");
  host->stop();
  for (auto* s : {"acme_", "globex_"})
    sourcery::testing::run_sql(uri, "DROP SCHEMA tenant_" + std::string{s} + suffix + " CASCADE");
}

} // namespace tenant_tests

namespace tenant_tests {

// CAF 0.17 ties an actor system's logger to the threads that made or asked
// it (a thread_local): a system destroyed on another thread used to wait
// for them to exit. A host stops its tenants on a thread of its own.
TEST(tenants, one_opened_and_closed_unused_stops_at_once) {
  sourcery::testing::temp_dir dir;
  auto host = start_host("lmdb:" + dir.str());
  ASSERT_TRUE(host);
  ASSERT_TRUE(host->open("a"));
  ASSERT_TRUE(host->close("a"));
  auto t0 = std::chrono::steady_clock::now();
  auto again = host->open("a"); // waits for the stop: its store is held until then
  ASSERT_TRUE(again) << describe_error(again.error());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds{10});
}

TEST(tenants, an_application_stops_on_another_thread_than_its_own) {
  sourcery::testing::temp_dir dir;
  application_config cfg;
  cfg.data_dir = dir.str();
  auto app = checked(application::start(cfg, todo::routes()));
  ASSERT_TRUE(todo::start_read_model(*app));
  auto stopped = std::async(std::launch::async, [&] { app->stop(); });
  EXPECT_EQ(stopped.wait_for(std::chrono::seconds{20}), std::future_status::ready);
}

} // namespace tenant_tests
