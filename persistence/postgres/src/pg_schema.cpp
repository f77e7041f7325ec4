#include "pg_schema.hpp"

#include <optional>

#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/postgres_store.hpp"

namespace sourcery::persistence::detail {

namespace {

// Stream ids and checkpoint names are bytea: the contract allows any bytes,
// and bytea orders them as LMDB does (memcmp). `log_head` is the one row
// every append batch updates, and every append updates its stream's row:
// free space on their pages keeps those updates HOT (no index entry each).
constexpr const char* event_store_sql = R"(
CREATE TABLE @.log_head (id int PRIMARY KEY CHECK (id = 1), position bigint NOT NULL) WITH (fillfactor = 10);
INSERT INTO @.log_head VALUES (1, 0);
CREATE TABLE @.streams (
  stream_id bytea PRIMARY KEY,
  version bigint NOT NULL,
  deleted boolean NOT NULL,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL)
  WITH (fillfactor = 80);
CREATE TABLE @.events (
  position bigint PRIMARY KEY,
  event_id uuid NOT NULL UNIQUE,
  stream_id bytea NOT NULL,
  stream_version bigint NOT NULL,
  type text NOT NULL,
  schema_version int NOT NULL,
  data bytea NOT NULL,
  metadata bytea NOT NULL,
  causation_id text NOT NULL,
  correlation_id text NOT NULL,
  created_at bigint NOT NULL,
  UNIQUE (stream_id, stream_version))
  WITH (autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.01);
CREATE TABLE @.snapshots (
  stream_id bytea PRIMARY KEY,
  stream_version bigint NOT NULL,
  snapshot_version int NOT NULL,
  type text NOT NULL,
  data bytea NOT NULL,
  created_at bigint NOT NULL);
CREATE TABLE @.checkpoints (name bytea PRIMARY KEY, position bigint NOT NULL);
CREATE FUNCTION @.refuse_change() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'events are immutable'; END $$;
CREATE TRIGGER no_event_changes BEFORE UPDATE OR DELETE ON @.events
  FOR EACH STATEMENT EXECUTE FUNCTION @.refuse_change();
)";

// Rows of the row API (projection, table, key) -> value, and each
// projection's checkpoint, moved in the transaction of its writes.
constexpr const char* read_models_sql = R"(
CREATE TABLE @.read_model_rows (
  projection bytea NOT NULL,
  tbl bytea NOT NULL,
  key bytea NOT NULL,
  value bytea NOT NULL,
  PRIMARY KEY (projection, tbl, key))
  WITH (fillfactor = 80);
CREATE TABLE @.read_model_checkpoints (projection bytea PRIMARY KEY, position bigint NOT NULL) WITH (fillfactor = 50);
)";

std::string replace_all(std::string text, std::string_view from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

} // namespace

const pg_component event_store_component{
  "event_store", postgres_store::schema_version,
  {"log_head", "streams", "events", "snapshots", "checkpoints"}, event_store_sql};

const pg_component read_models_component{"read_models", 1, {"read_model_rows", "read_model_checkpoints"},
                                         read_models_sql};

bool valid_schema_name(std::string_view name) {
  if (name.empty() || name.size() > 48 || (name[0] >= '0' && name[0] <= '9'))
    return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
      return false;
  return true;
}

caf::error ensure_component(pg::connection& c, const std::string& schema, const pg_component& component,
                            pg::deadline until, schema_setup setup) {
  const bool may_write = setup != schema_setup::none;
  auto quoted = pg::quote_ident(schema);
  auto run = [&]() -> caf::error {
    if (auto r = c.exec("BEGIN", until); !r)
      return r.error();
    // One opener at a time per database: creation is several statements.
    if (auto r = c.exec("SELECT pg_advisory_xact_lock(7450011)", until); !r)
      return r.error();
    pg::params p;
    p.add_text(schema);
    pg::params::array names{pg::oid::text};
    names.add_bytes(std::string_view{"schema_version"});
    for (auto* t : component.tables)
      names.add_bytes(std::string_view{t});
    p.add(std::move(names));
    auto found = c.exec("SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE n.nspname = $1 AND c.relname = ANY($2)",
                        p, until);
    if (!found)
      return found.error();
    bool has_version_table = false;
    int ours = 0;
    for (int i = 0; i < found->rows(); ++i) {
      if (found->raw(i, 0) == "schema_version")
        has_version_table = true;
      else
        ++ours;
    }
    std::optional<int32_t> version;
    bool is_store = false; // the schema holds a Sourcery event store
    if (has_version_table) {
      pg::params q;
      q.add_text(component.name);
      auto row = c.exec("SELECT (SELECT version FROM " + quoted + ".schema_version WHERE component = $1),"
                          " EXISTS (SELECT FROM " + quoted + ".schema_version WHERE component = 'event_store')",
                        q, until);
      if (!row)
        return make_error(store_errc::foreign_store, "schema '" + schema + "' has a schema_version table that is"
                                                     " not a Sourcery one: " + describe(row.error()));
      if (!row->is_null(0, 0))
        version = row->int4(0, 0);
      is_store = row->boolean(0, 1);
    }
    const std::string what = component.name == "event_store" ? "event store"
                             : component.name == "cluster"   ? "cluster tables"
                                                             : "read models";
    const auto upgradable = static_cast<int32_t>(component.upgrades.size());
    if (!version) {
      if (ours > 0)
        return make_error(store_errc::foreign_store,
                          "schema '" + schema + "' holds tables with the " + what
                            + "'s names that are not a Sourcery store's; choose another schema");
      if (setup == schema_setup::none)
        return make_error(store_errc::no_store, "no Sourcery " + what + " in schema " + schema);
      if (setup == schema_setup::upgrade && !is_store)
        return make_error(store_errc::no_store, "no Sourcery store in schema " + schema
                                                  + ": create it first with `sourcery init --store URI`");
      std::string script = "CREATE SCHEMA IF NOT EXISTS " + quoted + ";";
      if (!has_version_table)
        script += "CREATE TABLE " + quoted + ".schema_version (component text PRIMARY KEY, version int NOT NULL);";
      script += replace_all(std::string{component.create_sql}, "@", quoted);
      script += "INSERT INTO " + quoted + ".schema_version VALUES ('" + std::string{component.name} + "', "
                + std::to_string(component.version) + ");";
      if (auto err = c.exec_script(script, until))
        return err;
    } else if (*version < component.version && !may_write) {
      return make_error(store_errc::unsupported_format_version,
                        "schema '" + schema + "' holds " + what + " schema version " + std::to_string(*version)
                          + ", older than this build's " + std::to_string(component.version)
                          + ": start the application (or run `sourcery init`) once to upgrade it");
    } else if (*version < component.version && *version >= component.version - upgradable && *version >= 1) {
      std::string script;
      for (int32_t v = *version; v < component.version; ++v)
        script += replace_all(std::string{component.upgrades.begin()[v - 1]}, "@", quoted);
      script += "UPDATE " + quoted + ".schema_version SET version = " + std::to_string(component.version)
                + " WHERE component = '" + std::string{component.name} + "';";
      if (auto err = c.exec_script(script, until))
        return err;
    } else if (*version != component.version) {
      return make_error(store_errc::unsupported_format_version,
                        "schema '" + schema + "' holds " + what + " schema version " + std::to_string(*version)
                          + "; this build reads version " + std::to_string(component.version));
    } else if (ours != static_cast<int>(component.tables.size())) {
      return make_error(store_errc::foreign_store,
                        "schema '" + schema + "' lacks some of the " + what + "'s tables (dropped by hand?)");
    }
    if (auto r = c.exec("COMMIT", until); !r)
      return r.error();
    return {};
  };
  auto err = run();
  if (err && c.settled())
    (void) c.exec("ROLLBACK", until);
  return err;
}

} // namespace sourcery::persistence::detail
