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

  /// A fresh time-ordered id (RFC 9562 version 7: Unix milliseconds, then
  /// random bits). Ids made later sort after earlier ones (within a
  /// millisecond, in any order), so as keys (stream ids, read-model rows)
  /// they append to the end of LMDB's B-trees instead of dirtying pages all
  /// over them. Thread-safe.
  static uuid time_ordered();

  /// Parses the canonical 36-character form; nullopt on anything else.
  static std::optional<uuid> parse(std::string_view text);

  bool is_nil() const noexcept;

  /// Canonical lower-case form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
  std::string to_string() const;

  friend bool operator==(const uuid&, const uuid&) = default;
  friend auto operator<=>(const uuid&, const uuid&) = default;
};

} // namespace sourcery::persistence
