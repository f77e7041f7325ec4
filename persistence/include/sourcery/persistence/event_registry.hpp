#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <typeindex>
#include <unordered_map>

#include <caf/expected.hpp>
#include <msgpack.hpp>

#include <nlohmann/json_fwd.hpp>

#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/fields.hpp"
#include "sourcery/persistence/event.hpp"
#include "sourcery/persistence/map_fields.hpp"

namespace sourcery::persistence {

/// Maps C++ event types to stable type names and schema versions, encodes
/// them as msgpack maps, and upgrades old stored versions on read.
///
/// An event type is a plain struct with `MSGPACK_DEFINE_MAP(fields...)`: map
/// layout lets fields be added and removed between schema versions. Register
/// everything before use; lookups afterwards are lock-free reads.
///
///     registry.add<deposited>("bank.deposited", 2);
///     registry.add_upcaster("bank.deposited", 1, [](nlohmann::json& d) {
///       d["currency"] = "EUR"; // version 1 had no currency
///     });
class event_registry {
public:
  /// Turns the data of schema version N into version N + 1, in place.
  using upcaster = std::function<void(nlohmann::json& data)>;

  /// Registers `T` as `name` at its current `schema_version` (>= 1).
  /// Errors: invalid_argument if the name or the type is already registered.
  template <class T>
  caf::error add(std::string name, uint32_t schema_version = 1) {
    return add_type(std::type_index{typeid(T)}, std::move(name), schema_version);
  }

  /// Registers the step from `from_version` to `from_version + 1` of `type`.
  /// Errors: invalid_argument for an unknown type, a step at or past the
  /// current version, or a duplicate step.
  caf::error add_upcaster(std::string_view type, uint32_t from_version, upcaster step);

  /// The registered name of `T`, or nullptr.
  template <class T>
  const std::string* name_of() const {
    auto i = names_.find(std::type_index{typeid(T)});
    return i == names_.end() ? nullptr : &i->second;
  }

  /// Whether `type` names a registered event type.
  bool knows(std::string_view type) const;

  /// The current schema version of `type`, if registered.
  std::optional<uint32_t> schema_version(std::string_view type) const;

  /// Encodes `ev` for appending. Errors: unknown_event_type.
  template <class T>
  caf::expected<event_data> encode(const T& ev) const {
    auto name = name_of<T>();
    if (name == nullptr)
      return make_error(store_errc::unknown_event_type,
                        std::string{"C++ type "} + typeid(T).name() + " is not registered");
    event_data out;
    out.type = *name;
    out.schema_version = types_.at(*name).schema_version;
    writer w{out.data};
    msgpack::pack(w, ev);
    if constexpr (requires { ev.sourcery_subject(); })
      out.subject = ev.sourcery_subject();
    return out;
  }

  /// Whether `ev` holds a `T`.
  template <class T>
  bool is(const recorded_event& ev) const {
    auto name = name_of<T>();
    return name != nullptr && *name == ev.type;
  }

  /// Decodes the data of `ev` as a `T`.
  /// Errors: unknown_event_type (T unregistered), type_mismatch (ev holds
  /// another type), malformed_payload (data does not decode as T).
  template <class T>
  caf::expected<T> decode(const recorded_event& ev) const {
    auto name = name_of<T>();
    if (name == nullptr)
      return make_error(store_errc::unknown_event_type,
                        std::string{"C++ type "} + typeid(T).name() + " is not registered");
    if (*name != ev.type)
      return make_error(store_errc::type_mismatch,
                        "event " + std::to_string(ev.position) + " is a " + ev.type + ", not a " + *name);
    return unpack<T>(ev);
  }

  /// Decodes the data of `ev` as a `T` without looking at its type name: for
  /// callers that matched the name themselves. Errors: malformed_payload.
  template <class T>
  caf::expected<T> unpack(const recorded_event& ev) const {
    T result{};
    if (auto err = unpack_into(ev, [&result](const msgpack::object& obj) { convert_map(obj, result); }))
      return err;
    return result;
  }

  /// Upgrades `ev` to the current schema version of its type by running the
  /// registered upcasters in order. Events of unknown types, or already
  /// current, are left as they are. Errors: malformed_payload.
  caf::error upcast(recorded_event& ev) const;

  /// The data of any event (registered or not) as JSON; binary fields become
  /// JSON binary values. Errors: malformed_payload.
  static caf::expected<nlohmann::json> data_as_json(const bytes& data);

private:
  struct writer {
    bytes& out;
    void write(const char* p, size_t n) { out.insert(out.end(), p, p + n); }
  };

  struct type_entry {
    uint32_t schema_version = 1;
    std::map<uint32_t, upcaster> upcasters; // from-version -> step
  };

  caf::error add_type(std::type_index type, std::string name, uint32_t schema_version);
  caf::error unpack_into(const recorded_event& ev, const std::function<void(const msgpack::object&)>& f) const;

  std::unordered_map<std::type_index, std::string> names_;
  std::unordered_map<std::string, type_entry> types_;
};

} // namespace sourcery::persistence
