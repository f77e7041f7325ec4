// The read-model store contract, run against LMDB and PostgreSQL.

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/persistence/postgres_projection_store.hpp"
#include "sourcery/persistence/projection_store.hpp"

using namespace sourcery::persistence;
using namespace sourcery::testing;

namespace {

struct read_model_factory {
  std::string name;
  bool speaks_sql = false;
  std::function<std::unique_ptr<projection_store>(const temp_dir&)> open;
};

void PrintTo(const read_model_factory& f, std::ostream* os) {
  *os << f.name;
}

std::vector<read_model_factory> factories() {
  return {
    {"lmdb", false,
     [](const temp_dir& dir) -> std::unique_ptr<projection_store> {
       auto s = projection_store::open({.path = (dir / "models").string(), .initial_map_size = size_t{4} << 20});
       if (!s)
         throw std::runtime_error(describe(s.error()));
       return std::move(*s);
     }},
    {"postgres", true,
     [](const temp_dir& dir) -> std::unique_ptr<projection_store> {
       postgres_read_model_options opts;
       opts.conninfo = test_pg_uri();
       opts.schema = test_schema(dir);
       opts.setup = schema_setup::create;
       auto s = postgres_projection_store::open(opts);
       if (!s)
         throw std::runtime_error(describe(s.error()));
       return std::move(*s);
     }},
  };
}

class read_models : public ::testing::TestWithParam<read_model_factory> {
protected:
  void SetUp() override { store_ = GetParam().open(dir_); }
  void reopen() {
    store_.reset();
    store_ = GetParam().open(dir_);
  }
  projection_store& store() { return *store_; }
  temp_dir dir_;
  std::unique_ptr<projection_store> store_;
};

caf::error ok() {
  return {};
}

TEST_P(read_models, rows_and_checkpoint_commit_together_and_survive_reopen) {
  ASSERT_FALSE(store().write("p", 5, [](projection_store::writer& w) {
    w.put("t", "b", "2");
    w.put("t", "a", "1");
    w.put("u", "x", "9");
    return ok();
  }));
  reopen();
  auto ck = store().checkpoint("p");
  ASSERT_TRUE(ck);
  EXPECT_EQ(*ck, std::optional<uint64_t>{5});
  auto a = store().get("p", "t", "a");
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, std::optional<std::string>{"1"});
  auto rows = store().scan("p", "t");
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0], (std::pair<std::string, std::string>{"a", "1"}));
  EXPECT_EQ((*rows)[1], (std::pair<std::string, std::string>{"b", "2"}));
  auto all = store().dump("p");
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ(std::get<0>((*all)[2]), "u");
  auto none = store().get("other", "t", "a");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
}

TEST_P(read_models, a_failing_write_leaves_rows_and_checkpoint_untouched) {
  ASSERT_FALSE(store().write("p", 1, [](projection_store::writer& w) {
    w.put("t", "k", "old");
    return ok();
  }));
  auto err = store().write("p", 2, [](projection_store::writer& w) -> caf::error {
    w.put("t", "k", "new");
    w.put("t", "k2", "x");
    return make_error(store_errc::handler_failed, "the projection failed");
  });
  EXPECT_EQ(code_of(err), store_errc::handler_failed);
  EXPECT_EQ(*store().get("p", "t", "k"), std::optional<std::string>{"old"});
  EXPECT_FALSE(*store().get("p", "t", "k2"));
  EXPECT_EQ(*store().checkpoint("p"), std::optional<uint64_t>{1});
}

TEST_P(read_models, a_position_behind_the_checkpoint_is_refused) {
  ASSERT_FALSE(store().write("p", 10, [](projection_store::writer&) { return ok(); }));
  EXPECT_FALSE(store().write("p", 10, [](projection_store::writer&) { return ok(); })) << "the same position again";
  auto err = store().write("p", 9, [](projection_store::writer& w) {
    w.put("t", "k", "v");
    return ok();
  });
  EXPECT_EQ(code_of(err), store_errc::invalid_argument);
  EXPECT_FALSE(*store().get("p", "t", "k"));
}

TEST_P(read_models, write_after_refuses_events_another_writer_applied) {
  auto put = [](const char* v) {
    return [v](projection_store::writer& w) {
      w.put("t", "k", v);
      return caf::error{};
    };
  };
  ASSERT_FALSE(store().write_after("p", 7, 10, put("first"))) << "never written: any start is taken";
  // A second writer that also read up to 7 and got to 10: refused, nothing written.
  EXPECT_EQ(code_of(store().write_after("p", 7, 10, put("second"))), store_errc::invalid_argument);
  EXPECT_EQ(code_of(store().write_after("p", 7, 12, put("second"))), store_errc::invalid_argument);
  EXPECT_EQ(*store().get("p", "t", "k"), std::optional<std::string>{"first"});
  EXPECT_EQ(*store().checkpoint("p"), std::optional<uint64_t>{10});
  ASSERT_FALSE(store().write_after("p", 10, 15, put("third")));
  EXPECT_EQ(*store().checkpoint("p"), std::optional<uint64_t>{15});
}

TEST_P(read_models, the_writer_reads_its_own_writes) {
  ASSERT_FALSE(store().write("p", 1, [](projection_store::writer& w) {
    w.put("t", "a", "1");
    w.put("t", "c", "3");
    return ok();
  }));
  ASSERT_FALSE(store().write("p", 2, [](projection_store::writer& w) {
    EXPECT_EQ(w.get("t", "a"), std::optional<std::string>{"1"});
    w.put("t", "b", "2");
    EXPECT_EQ(w.get("t", "b"), std::optional<std::string>{"2"});
    EXPECT_TRUE(w.erase("t", "c"));
    EXPECT_FALSE(w.erase("t", "zz"));
    EXPECT_FALSE(w.get("t", "c"));
    auto rows = w.scan("t");
    EXPECT_EQ(rows.size(), 2u);
    if (rows.size() == 2) {
      EXPECT_EQ(rows[0].first, "a");
      EXPECT_EQ(rows[1].first, "b");
    }
    return ok();
  }));
  auto rows = store().scan("p", "t");
  ASSERT_TRUE(rows);
  EXPECT_EQ(rows->size(), 2u);
}

TEST_P(read_models, update_leaves_the_checkpoint_and_reset_drops_everything) {
  ASSERT_FALSE(store().write("p", 3, [](projection_store::writer& w) {
    w.put("t", "a", "1");
    return ok();
  }));
  ASSERT_FALSE(store().update("p", [](projection_store::writer& w) {
    w.put("t", "b", "2");
    return ok();
  }));
  EXPECT_EQ(*store().checkpoint("p"), std::optional<uint64_t>{3});
  ASSERT_FALSE(store().write("q", 1, [](projection_store::writer& w) {
    w.put("t", "a", "1");
    return ok();
  }));
  bool also_ran = false;
  ASSERT_FALSE(store().reset("p", [&](projection_store::writer& w) {
    also_ran = true;
    EXPECT_TRUE(w.scan("t").empty()) << "the rows are gone when `also` runs";
    return ok();
  }));
  EXPECT_TRUE(also_ran);
  EXPECT_FALSE(*store().checkpoint("p"));
  EXPECT_TRUE(store().scan("p", "t")->empty());
  EXPECT_EQ(store().scan("q", "t")->size(), 1u) << "other projections keep theirs";
  auto cps = store().checkpoints();
  ASSERT_TRUE(cps);
  ASSERT_EQ(cps->size(), 1u);
  EXPECT_EQ((*cps)[0].first, "q");
}

TEST_P(read_models, bad_names_are_refused) {
  EXPECT_EQ(code_of(store().write("", 1, [](projection_store::writer&) { return ok(); })),
            store_errc::invalid_argument);
  auto err = store().write("p", 1, [](projection_store::writer& w) {
    w.put("", "k", "v");
    return ok();
  });
  EXPECT_EQ(code_of(err), store_errc::invalid_argument);
  EXPECT_FALSE(*store().checkpoint("p"));
}

TEST_P(read_models, checkpoints_list_in_name_order) {
  for (auto name : {"b", "c", "a"})
    ASSERT_FALSE(store().write(name, 7, [](projection_store::writer&) { return ok(); }));
  auto cps = store().checkpoints();
  ASSERT_TRUE(cps);
  ASSERT_EQ(cps->size(), 3u);
  EXPECT_EQ((*cps)[0].first, "a");
  EXPECT_EQ((*cps)[2].first, "c");
}

TEST_P(read_models, a_projection_writes_its_own_sql_tables_in_the_same_transaction) {
  if (!GetParam().speaks_sql) {
    ASSERT_FALSE(store().write("p", 1, [](projection_store::writer& w) {
      EXPECT_EQ(w.sql(), nullptr);
      return ok();
    }));
    EXPECT_EQ(code_of(store().query("SELECT 1").error()), store_errc::invalid_argument);
    return;
  }
  ASSERT_FALSE(store().update("p", [](projection_store::writer& w) -> caf::error {
    auto r = w.sql()->exec("CREATE TABLE " + w.sql()->schema() + ".things (id text PRIMARY KEY, n int)");
    return r ? caf::error{} : r.error();
  }));
  ASSERT_FALSE(store().write("p", 1, [](projection_store::writer& w) -> caf::error {
    w.put("t", "k", "v"); // rows and SQL in one transaction
    auto r = w.sql()->exec("INSERT INTO " + w.sql()->schema() + ".things VALUES ($1, $2)", {"one", "1"});
    return r ? caf::error{} : r.error();
  }));
  // A failing write rolls its SQL back too.
  auto err = store().write("p", 2, [](projection_store::writer& w) -> caf::error {
    (void) w.sql()->exec("INSERT INTO " + w.sql()->schema() + ".things VALUES ('two', 2)");
    return make_error(store_errc::handler_failed, "no");
  });
  EXPECT_TRUE(err);
  // A failing statement fails the write.
  err = store().write("p", 2, [](projection_store::writer& w) -> caf::error {
    auto r = w.sql()->exec("INSERT INTO " + w.sql()->schema() + ".things VALUES ('one', 1)");
    EXPECT_FALSE(r) << "duplicate key";
    return {};
  });
  EXPECT_TRUE(err) << "a statement that failed aborts the transaction";
  auto schema = "\"" + test_schema(dir_) + "\"";
  auto rows = store().query("SELECT id, n FROM " + schema + ".things ORDER BY id");
  ASSERT_TRUE(rows) << describe(rows.error());
  ASSERT_EQ(rows->rows.size(), 1u);
  EXPECT_EQ(rows->rows[0][0], sql_value{"one"});
  EXPECT_EQ(rows->columns[1], "n");
  EXPECT_EQ(*store().checkpoint("p"), std::optional<uint64_t>{1});
}

// A process that dies inside the projection's transaction leaves neither
// the rows nor the checkpoint; the write run again applies once.
TEST_P(read_models, a_process_killed_inside_the_transaction_applies_nothing) {
  store_.reset();
  pid_t pid = ::fork();
  if (pid == 0) {
    auto models = GetParam().open(dir_);
    (void) models->write("p", 1, [&](projection_store::writer& w) -> caf::error {
      w.put("t", "k", "v");
      (void) w.scan("t"); // the row is in the database, uncommitted
      if (auto* sql = w.sql())
        (void) sql->exec("CREATE TABLE " + sql->schema() + ".half (x int)");
      ::_exit(0);
    });
    ::_exit(1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  store_ = GetParam().open(dir_);
  EXPECT_FALSE(*store().checkpoint("p"));
  EXPECT_FALSE(*store().get("p", "t", "k"));
  ASSERT_FALSE(store().write("p", 1, [](projection_store::writer& w) {
    w.put("t", "k", "v");
    return ok();
  }));
  EXPECT_EQ(*store().get("p", "t", "k"), std::optional<std::string>{"v"});
}

INSTANTIATE_TEST_SUITE_P(stores, read_models, ::testing::ValuesIn(factories()),
                         [](const auto& info) { return info.param.name; });

} // namespace
