#include "pg_schema.hpp"

#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::detail {

namespace {

constexpr const char* our_tables[] = {"schema_version", "log_head", "streams", "events", "snapshots", "checkpoints"};

// Stream ids and checkpoint names are bytea: the contract allows any bytes,
// and bytea orders them as LMDB does (memcmp). `log_head` is the one row
// every append batch updates, and every append updates its stream's row:
// free space on their pages keeps those updates HOT (no index entry each).
constexpr const char* create_sql = R"(
CREATE SCHEMA IF NOT EXISTS @;
CREATE TABLE @.schema_version (component text PRIMARY KEY, version int NOT NULL);
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

std::string replace_all(std::string text, std::string_view from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

} // namespace

bool valid_schema_name(std::string_view name) {
  if (name.empty() || name.size() > 48 || (name[0] >= '0' && name[0] <= '9'))
    return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
      return false;
  return true;
}

caf::error ensure_schema(const postgres_state& state, pg::connection& c) {
  auto until = state.op_deadline();
  auto run = [&]() -> caf::error {
    if (auto r = c.exec("BEGIN", until); !r)
      return r.error();
    // One opener at a time per database: creation is several statements.
    if (auto r = c.exec("SELECT pg_advisory_xact_lock(7450011)", until); !r)
      return r.error();
    pg::params p;
    p.add_text(state.options.schema);
    pg::params::array names{pg::oid::text};
    for (auto* t : our_tables)
      names.add_bytes(std::string_view{t});
    p.add(std::move(names));
    auto found = c.exec("SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE n.nspname = $1 AND c.relname = ANY($2)",
                        p, until);
    if (!found)
      return found.error();
    const auto& schema = state.options.schema;
    if (found->rows() == 0) {
      auto script = replace_all(create_sql, "@", state.schema);
      script += "INSERT INTO " + state.schema + ".schema_version VALUES ('event_store', "
                + std::to_string(postgres_store::schema_version) + ");";
      if (auto err = c.exec_script(script, until))
        return err;
      if (auto r = c.exec("COMMIT", until); !r)
        return r.error();
      return {};
    }
    bool has_version = false;
    for (int i = 0; i < found->rows(); ++i)
      has_version |= found->raw(i, 0) == "schema_version";
    if (!has_version || found->rows() != static_cast<int>(std::size(our_tables)))
      return make_error(store_errc::foreign_store,
                        "schema '" + schema + "' holds tables with the event store's names that are not a Sourcery"
                          " store (or only some of them); choose another schema");
    auto version = c.exec(state.sql("SELECT version FROM @.schema_version WHERE component = 'event_store'"), until);
    if (!version)
      return version.error();
    if (version->rows() != 1)
      return make_error(store_errc::foreign_store,
                        "schema '" + schema + "' has a schema_version table without the event store's row");
    auto v = version->int4(0, 0);
    if (v != postgres_store::schema_version)
      return make_error(store_errc::unsupported_format_version,
                        "schema '" + schema + "' holds event-store schema version " + std::to_string(v)
                          + "; this build reads version " + std::to_string(postgres_store::schema_version));
    if (auto r = c.exec("COMMIT", until); !r)
      return r.error();
    return {};
  };
  auto err = run();
  if (err && c.ok())
    (void) c.exec("ROLLBACK", until);
  return err;
}

} // namespace sourcery::persistence::detail
