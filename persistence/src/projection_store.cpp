#include "sourcery/persistence/projection_store.hpp"

namespace sourcery::persistence {

projection_store::~projection_store() = default;

caf::error projection_store::fence_writes(std::shared_ptr<const append_fence>) {
  return make_error(store_errc::invalid_argument,
                    "these read models cannot be shared by a cluster's nodes: keep them in PostgreSQL");
}

caf::error projection_store::replace(std::string_view projection, const std::function<caf::error(writer&)>& also,
                                     const std::function<caf::error(batches&)>& build) {
  if (auto err = reset(projection, also))
    return err;
  struct one_per_batch final : batches {
    projection_store& models;
    std::string_view name;
    one_per_batch(projection_store& m, std::string_view n) : models(m), name(n) {}
    caf::error write(uint64_t position, const std::function<caf::error(writer&)>& f) override {
      return models.write(name, position, f);
    }
  } sink{*this, projection};
  return build(sink);
}

caf::expected<sql_rows> projection_store::query(std::string_view, const std::vector<sql_value>&) const {
  return make_error(store_errc::invalid_argument, "these read models speak no SQL (LMDB): read them by table and key");
}

} // namespace sourcery::persistence
