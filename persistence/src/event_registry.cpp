#include "sourcery/persistence/event_registry.hpp"

#include <nlohmann/json.hpp>

#include "record_codec.hpp"

namespace sourcery::persistence {

caf::error event_registry::add_type(std::type_index type, std::string name, uint32_t schema_version) {
  if (name.empty() || name.size() > 255)
    return make_error(store_errc::invalid_argument, "event type names are 1 to 255 bytes");
  if (schema_version == 0)
    return make_error(store_errc::invalid_argument, "schema versions start at 1 (" + name + ")");
  if (types_.count(name) != 0)
    return make_error(store_errc::invalid_argument, "event type name " + name + " is already registered");
  if (names_.count(type) != 0)
    return make_error(store_errc::invalid_argument,
                      "C++ type already registered as " + names_.at(type) + ", cannot add it as " + name);
  names_.emplace(type, name);
  types_.emplace(std::move(name), type_entry{schema_version, {}});
  return {};
}

caf::error event_registry::add_upcaster(std::string_view type, uint32_t from_version, upcaster step) {
  auto i = types_.find(std::string{type});
  if (i == types_.end())
    return make_error(store_errc::invalid_argument, "no event type " + std::string{type} + " to upcast");
  if (from_version == 0 || from_version >= i->second.schema_version)
    return make_error(store_errc::invalid_argument,
                      "upcaster of " + std::string{type} + " from version " + std::to_string(from_version)
                        + " is outside 1.." + std::to_string(i->second.schema_version - 1));
  if (!step)
    return make_error(store_errc::invalid_argument, "upcaster is empty");
  if (!i->second.upcasters.emplace(from_version, std::move(step)).second)
    return make_error(store_errc::invalid_argument,
                      "upcaster of " + std::string{type} + " from version " + std::to_string(from_version)
                        + " is already registered");
  return {};
}

bool event_registry::knows(std::string_view type) const {
  return types_.count(std::string{type}) != 0;
}

std::optional<uint32_t> event_registry::schema_version(std::string_view type) const {
  auto i = types_.find(std::string{type});
  if (i == types_.end())
    return std::nullopt;
  return i->second.schema_version;
}

caf::expected<nlohmann::json> event_registry::data_as_json(const bytes& data) {
  if (data.empty())
    return nlohmann::json::object();
  try {
    return nlohmann::json::from_msgpack(data);
  } catch (const std::exception& e) {
    return make_error(store_errc::malformed_payload, std::string{"event data is not valid msgpack: "} + e.what());
  }
}

caf::error event_registry::upcast(recorded_event& ev) const {
  auto i = types_.find(ev.type);
  if (i == types_.end() || ev.schema_version >= i->second.schema_version)
    return {};
  const auto& entry = i->second;
  auto json = data_as_json(ev.data);
  if (!json)
    return json.error();
  try {
    for (auto v = ev.schema_version; v < entry.schema_version; ++v)
      if (auto step = entry.upcasters.find(v); step != entry.upcasters.end())
        step->second(*json);
    ev.data = nlohmann::json::to_msgpack(*json);
  } catch (const std::exception& e) {
    return make_error(store_errc::malformed_payload,
                      "upcasting " + ev.type + " at position " + std::to_string(ev.position) + ": " + e.what());
  }
  ev.schema_version = entry.schema_version;
  return {};
}

caf::error event_registry::unpack_into(const recorded_event& ev,
                                       const std::function<void(const msgpack::object&)>& f) const {
  try {
    static const uint8_t empty_map = 0x80;
    const uint8_t* p = ev.data.empty() ? &empty_map : ev.data.data();
    size_t n = ev.data.empty() ? 1 : ev.data.size();
    size_t off = 0;
    auto obj = detail::unpack_reused(p, n, off);
    if (off != n)
      throw std::runtime_error("trailing bytes after the msgpack map");
    f(obj);
  } catch (const std::exception& e) {
    return make_error(store_errc::malformed_payload,
                      ev.type + " at position " + std::to_string(ev.position) + " does not decode: " + e.what());
  }
  return {};
}

} // namespace sourcery::persistence
