#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "sourcery/persistence/durability.hpp"
#include "sourcery/persistence/schema_setup.hpp"
#include "sourcery/persistence/append_fence.hpp"
#include "sourcery/persistence/projection_store.hpp"

namespace sourcery::persistence {

struct postgres_read_model_options {
  /// A libpq connection string (see postgres_options::conninfo).
  std::string conninfo;
  /// The schema of the tables (`read_model_rows`, `read_model_checkpoints`,
  /// and the projections' own), beside the store's events.
  std::string schema = "sourcery";
  /// As postgres_options::setup: upgrade adds the read models' tables to an
  /// existing store; none opens existing read models only (no_store
  /// otherwise).
  schema_setup setup = schema_setup::upgrade;
  durability mode = durability::durable;
  std::chrono::milliseconds connect_timeout{5000};
  /// Every call waits at most this long for the server.
  std::chrono::milliseconds operation_timeout{10000};
  /// Connections, opened on demand.
  size_t pool_size = 4;
  /// The server ends a write's transaction left idle this long (a paused
  /// process): below the cluster's `down_after`, since a fenced write holds
  /// its handler's lease row until it ends.
  std::chrono::milliseconds idle_in_transaction_timeout{1500};
};

/// Read models in PostgreSQL: rows of the row API in `read_model_rows`,
/// checkpoints in `read_model_checkpoints`, and whatever tables projections
/// write through `writer::sql()` -- all in the transaction that moves the
/// projection's checkpoint, so each event's effect is applied exactly once.
/// A projection's checkpoint row is locked for the length of its write:
/// two processes running one projection take turns.
class postgres_projection_store final : public projection_store {
public:
  /// Errors: as postgres_store::open.
  static caf::expected<std::unique_ptr<postgres_projection_store>> open(postgres_read_model_options options);
  ~postgres_projection_store() override;
  /// The lease is checked (and locked FOR KEY SHARE, which holds off an
  /// acquire by another node but not a renewal) in the write's
  /// transaction, against `cluster_leases` of this schema.
  caf::error fence_writes(std::shared_ptr<const append_fence> fence) override;

  caf::error write(std::string_view projection, uint64_t position,
                   const std::function<caf::error(writer&)>& f) override;
  caf::error write_after(std::string_view projection, uint64_t after, uint64_t position,
                         const std::function<caf::error(writer&)>& f) override;
  caf::error update(std::string_view projection, const std::function<caf::error(writer&)>& f) override;
  caf::expected<std::optional<uint64_t>> checkpoint(std::string_view projection) const override;
  caf::expected<std::vector<std::pair<std::string, uint64_t>>> checkpoints() const override;
  caf::expected<std::optional<std::string>> get(std::string_view projection, std::string_view table,
                                                std::string_view key) const override;
  caf::expected<std::vector<std::pair<std::string, std::string>>> scan(std::string_view projection,
                                                                       std::string_view table) const override;
  caf::expected<std::vector<std::tuple<std::string, std::string, std::string>>>
  dump(std::string_view projection) const override;
  caf::error reset(std::string_view projection, const std::function<caf::error(writer&)>& also) override;
  /// One transaction, holding the checkpoint row (see projection_store).
  caf::error replace(std::string_view projection, const std::function<caf::error(writer&)>& also,
                     const std::function<caf::error(batches&)>& build) override;
  caf::expected<sql_rows> query(std::string_view sql, const std::vector<sql_value>& params) const override;
  const std::string* sql_schema() const override;

  struct impl; // the source file's

private:
  explicit postgres_projection_store(std::unique_ptr<impl> impl);
  caf::error commit(std::string_view projection, const uint64_t* checkpoint,
                    const std::function<caf::error(writer&)>& f, bool reset, const uint64_t* after = nullptr);
  std::unique_ptr<impl> impl_;
};

} // namespace sourcery::persistence
