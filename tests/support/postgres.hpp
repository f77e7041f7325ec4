#pragma once

#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "sourcery/persistence/postgres_store.hpp"
#include "temp_dir.hpp"

namespace sourcery::testing {

/// The URI of the test server (ctest's `postgres` fixture sets
/// SOURCERY_TEST_PG). A test that needs it fails, loudly, without it.
inline std::string test_pg_uri() {
  const char* uri = std::getenv("SOURCERY_TEST_PG");
  if (!uri || !*uri)
    throw std::runtime_error("SOURCERY_TEST_PG is not set: run the tests through ctest (its `postgres` fixture starts"
                             " a server) or start one with scripts/pg.sh and export its URI");
  return uri;
}

/// A fresh schema name per test storage: tests share one server.
inline std::string test_schema(const temp_dir& dir) {
  return "t_" + std::to_string(std::hash<std::string>{}(dir.str()) % 1000000000000ull);
}

inline persistence::postgres_options test_pg_options(const temp_dir& dir) {
  persistence::postgres_options opts;
  opts.conninfo = test_pg_uri();
  opts.schema = test_schema(dir);
  opts.poll_interval = std::chrono::milliseconds{200};
  return opts;
}

inline std::unique_ptr<persistence::postgres_store> open_test_pg(const persistence::postgres_options& opts) {
  auto s = persistence::postgres_store::open(opts);
  if (!s)
    throw std::runtime_error("cannot open the PostgreSQL store: " + persistence::describe(s.error()));
  return std::move(*s);
}

} // namespace sourcery::testing
