#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <caf/expected.hpp>

#include "sourcery/persistence/durability.hpp"
#include "sourcery/persistence/event_store.hpp"
#include "sourcery/persistence/projection_store.hpp"

namespace sourcery::persistence {

/// Where a program's events live, as every program's `--store URI` names it:
///   `lmdb:DIR`          the embedded LMDB store in DIR (the default)
///   `memory:`           in memory, gone at exit
///   `postgresql://...`  (or `postgres://...`) a libpq URI, e.g.
///                       `postgresql:///app?host=/var/run/postgresql&port=5433`;
///                       Besides libpq's parameters: `schema=NAME`, the
///                       PostgreSQL schema (default `sourcery`);
///                       `operation_timeout=S`, how long any call waits for
///                       the server (default 10); libpq's `connect_timeout=S`
///                       bounds connecting (default 5).
struct store_uri {
  enum class kind { lmdb, memory, postgres };
  kind type = kind::lmdb;
  /// The LMDB directory, or the libpq connection string without `schema`.
  std::string location;
  /// The PostgreSQL schema.
  std::string schema = "sourcery";
  /// PostgreSQL: connecting gives up after this; any call after that.
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds operation_timeout{10000};

  /// Errors: invalid_argument, naming the forms accepted.
  static caf::expected<store_uri> parse(std::string_view text);
  static store_uri lmdb(std::string dir) {
    store_uri u;
    u.location = std::move(dir);
    return u;
  }
  static store_uri memory() {
    store_uri u;
    u.type = kind::memory;
    return u;
  }

  bool is_postgres() const { return type == kind::postgres; }
  /// The URI again, without its password: for logs and messages.
  std::string to_string() const;
  /// The URI again, password included: to hand on to another program or
  /// `application_config::store_uri`, never to print.
  std::string text() const;
};

/// `text` (a store URI, a libpq URI or key=value connection string, or a
/// message quoting one) without its password, in either form: the
/// `:password` of `user:password@` and a `password=` parameter.
std::string redact_password(std::string_view text);

/// The store named by the environment variable SOURCERY_STORE, when set and
/// not empty: programs take it when no `--store` (nor a shorthand for one)
/// is given, so that no secret need sit in their argv. (libpq's own
/// PGPASSWORD and ~/.pgpass keep the password out of the URI altogether.)
std::optional<std::string> store_from_environment();

struct store_open_options {
  durability mode = durability::durable;
  /// Open for reading only (tools beside a running application): LMDB
  /// opens its environment read-only; PostgreSQL creates nothing, and a
  /// schema without a store is no_store.
  bool read_only = false;
  /// Create the store when it is missing: a PostgreSQL schema and its
  /// tables are made only on this explicit request (`sourcery init`, an
  /// import, a tenant's first use). Without it, an existing store is
  /// upgraded in place and a schema holding none is no_store. (An LMDB
  /// directory is created at its first open either way: an embedded
  /// store, as SQLite's file.)
  bool create = false;
  /// LMDB: check every page at open.
  bool check_pages = true;
  /// A file holding the master key that wraps the subjects' keys
  /// (personal.hpp): 32 bytes, or 64 hexadecimal digits. Empty: none.
  std::string master_key_file;
};

/// Opens the store `uri` names. Errors: those of the store's `open`.
caf::expected<std::unique_ptr<event_store>> open_store(const store_uri& uri, const store_open_options& options = {});

/// Opens read models: in PostgreSQL, those beside the events of `uri` (same
/// database and schema); for `lmdb:DIR`, the LMDB read models in DIR.
/// Errors: those of the read-model store's `open`; invalid_argument for
/// `memory:` (read models of an in-memory application are LMDB in a
/// temporary directory: open that with `lmdb:`).
caf::expected<std::unique_ptr<projection_store>> open_read_models(const store_uri& uri,
                                                                  const store_open_options& options = {});

/// What `init_store` found and did.
struct store_init {
  bool created = false;       ///< there was no store: one was made
  uint64_t head_position = 0; ///< the store's last position (0 when new)
};

/// Creates the store `uri` names when there is none, with its read models
/// in PostgreSQL (the only way a schema is made: `sourcery init` calls
/// it); an existing store is checked, upgraded in place when older, and
/// otherwise left as it is. `options.create` and `read_only` are ignored.
/// Errors: those of `open_store` and `open_read_models`; invalid_argument
/// for `memory:` (nothing to create).
caf::expected<store_init> init_store(const store_uri& uri, const store_open_options& options = {});

} // namespace sourcery::persistence
