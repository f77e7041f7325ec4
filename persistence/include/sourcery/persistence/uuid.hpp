#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sourcery::persistence {

/// A 128-bit identifier; `random()` makes RFC 4122 version-4 ids.
struct uuid {
  std::array<uint8_t, 16> bytes{};

  /// A fresh random (version 4, variant 1) id. Thread-safe.
  static uuid random();

  /// Parses the canonical 36-character form; nullopt on anything else.
  static std::optional<uuid> parse(std::string_view text);

  bool is_nil() const noexcept;

  /// Canonical lower-case form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
  std::string to_string() const;

  friend bool operator==(const uuid&, const uuid&) = default;
  friend auto operator<=>(const uuid&, const uuid&) = default;
};

} // namespace sourcery::persistence
