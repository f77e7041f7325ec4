#pragma once

// Metadata as data: the msgpack map a command carries from dispatch through
// middleware onto its events, and handlers read back from them. Typed access
// by key; values of other msgpack types (arrays, maps, nil) written by
// other clients are kept byte for byte.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include <caf/expected.hpp>

#include "sourcery/persistence/event.hpp"

namespace sourcery {

class metadata {
public:
  /// A value of another msgpack type, as encoded.
  struct raw {
    persistence::bytes encoded;
    friend bool operator==(const raw&, const raw&) = default;
  };
  using value = std::variant<std::string, int64_t, bool, double, raw>;

  metadata() = default;

  /// Decodes a msgpack map (empty bytes: an empty map). Errors:
  /// store_errc::malformed_payload for anything else, or a non-string key.
  static caf::expected<metadata> decode(const persistence::bytes& encoded);
  /// Decodes, treating malformed bytes as empty (for readers that must go on).
  static metadata decode_or_empty(const persistence::bytes& encoded);
  /// The msgpack map; empty bytes when there are no fields.
  persistence::bytes encode() const;

  /// Sets `key`: bools stay bools, other integers become int64, text a string.
  template <class T>
  metadata& set(std::string key, T v) {
    if constexpr (std::is_same_v<T, bool>)
      fields_[std::move(key)] = v;
    else if constexpr (std::is_integral_v<T>)
      fields_[std::move(key)] = static_cast<int64_t>(v);
    else if constexpr (std::is_floating_point_v<T>)
      fields_[std::move(key)] = static_cast<double>(v);
    else
      fields_[std::move(key)] = std::string{std::string_view{v}};
    return *this;
  }

  /// The field as that type; nullopt when absent or of another type.
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<double> get_double(std::string_view key) const;
  const value* find(std::string_view key) const;

  bool contains(std::string_view key) const { return find(key) != nullptr; }
  void erase(std::string_view key);
  /// Adds the fields of `other` this map does not have.
  void merge(const metadata& other);
  bool empty() const noexcept { return fields_.empty(); }
  size_t size() const noexcept { return fields_.size(); }
  const std::map<std::string, value, std::less<>>& fields() const noexcept { return fields_; }

  friend bool operator==(const metadata&, const metadata&) = default;

private:
  std::map<std::string, value, std::less<>> fields_;
};

} // namespace sourcery
