#include "sourcery/persistence/projection_store.hpp"

namespace sourcery::persistence {

projection_store::~projection_store() = default;

caf::expected<sql_rows> projection_store::query(std::string_view, const std::vector<sql_value>&) const {
  return make_error(store_errc::invalid_argument, "these read models speak no SQL (LMDB): read them by table and key");
}

} // namespace sourcery::persistence
