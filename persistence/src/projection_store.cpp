#include "sourcery/persistence/projection_store.hpp"

namespace sourcery::persistence {

projection_store::~projection_store() = default;

caf::error projection_store::fence_writes(std::shared_ptr<const append_fence>) {
  return make_error(store_errc::invalid_argument,
                    "these read models cannot be shared by a cluster's nodes: keep them in PostgreSQL");
}

caf::expected<sql_rows> projection_store::query(std::string_view, const std::vector<sql_value>&) const {
  return make_error(store_errc::invalid_argument, "these read models speak no SQL (LMDB): read them by table and key");
}

} // namespace sourcery::persistence
