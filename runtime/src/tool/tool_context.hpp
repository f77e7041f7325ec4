#pragma once

// What every command of the operator tool receives: its parsed options, the
// projections the application registered, and the ways to fail.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/error.hpp>

#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/store_uri.hpp"
#include "sourcery/runtime/tool/operator_tool.hpp"

namespace sourcery::tool {

struct options {
  std::string command;
  std::vector<std::string> args; // positional arguments after the command
  std::string data_dir = "sourcery-data";
  std::string store; // --store, when it names a PostgreSQL store (lmdb: URIs set data_dir)
  std::string read_models; // empty: data_dir/read-models
  std::string input;       // import: "-" or empty for stdin
  std::string output;      // export: "-" or empty for stdout
  uint64_t from = 0;
  bool from_given = false;
  uint64_t limit = UINT64_MAX;
  bool json = false;
  std::string cluster; // --cluster: one cluster's name (empty: all)
  std::string handlers_from = "head"; // import: where what cannot be carried starts (head, start)
  bool yes = false;                   // drop: confirmed
  std::optional<uint64_t> expected_version; // delete: the stream's version, checked
  // all: filters
  std::string type, category, correlation, causation;
  bool backward = false;
  std::string to; // reset: POSITION, start or head
  uint64_t parked = 0; // retry --parked POSITION: that parked event, alone
};

struct context {
  const options& opts;
  const std::string& program;
  const std::vector<tool_projection>& projections;
  const persistence::event_registry& types;

  std::string read_model_dir() const;
  /// The store the options name.
  persistence::store_uri uri() const;
  /// The store in words (a URI without password), for messages.
  std::string where() const;
  /// The read models of the store: PostgreSQL's beside its events, or LMDB's
  /// at `read_model_dir()`.
  caf::expected<std::unique_ptr<persistence::projection_store>> open_read_models(bool read_only) const;
};

/// Reports a store error on stderr; returns exit status 1.
int store_failure(const context& ctx, const std::string& what, const caf::error& err);
/// Reports that the store named holds no Sourcery store (no_store) and
/// exits with status 2, as for a missing LMDB directory.
[[noreturn]] void no_store(const context& ctx, const caf::error& err);
/// Reports a failure with no store error behind it; returns 1.
int failure(const context& ctx, const std::string& what);

/// The store `--store` (or `--data-dir`) names, opened read-only (LMDB) or
/// as one more client (PostgreSQL): a running application writing it is not
/// disturbed. Null after reporting why on stderr. `check_pages`: refuse an
/// LMDB store with a damaged page at open (every command but `verify`,
/// which reports it as a problem instead).
std::unique_ptr<persistence::event_store> open_read_only(const context& ctx, bool check_pages = true);

/// The operators' interface of a store `open_read_only` opened.
persistence::store_maintenance& maintenance_of(persistence::event_store& store);

// The commands: each returns the exit status.
int run_read(const context& ctx);
int run_all(const context& ctx);
int run_tail(const context& ctx);
int run_streams(const context& ctx);
int run_stats(const context& ctx);
int run_verify(const context& ctx);
int run_export(const context& ctx);
int run_import(const context& ctx);
int run_rebuild(const context& ctx);
int run_cluster(const context& ctx);
int run_init(const context& ctx);
int run_drop(const context& ctx);
int run_delete(const context& ctx);
int run_forget(const context& ctx);
int run_trace(const context& ctx);
int run_handlers(const context& ctx);
int run_reset(const context& ctx);
int run_skip(const context& ctx);
int run_retry(const context& ctx);

} // namespace sourcery::tool
