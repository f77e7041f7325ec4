#pragma once

#include <cstdint>
#include <string>

namespace sourcery::persistence {

/// The optimistic-concurrency condition of an append or a delete.
/// Stream versions start at 1; a stream with no events has version 0.
class expected_version {
public:
  enum class kind : uint8_t {
    any,           ///< No check.
    no_stream,     ///< The stream must have no events.
    stream_exists, ///< The stream must have at least one event.
    exact,         ///< The stream's version must equal `value()`.
  };

  static constexpr expected_version any() noexcept { return {kind::any, 0}; }
  static constexpr expected_version no_stream() noexcept { return {kind::no_stream, 0}; }
  static constexpr expected_version stream_exists() noexcept { return {kind::stream_exists, 0}; }
  static constexpr expected_version exact(uint64_t version) noexcept { return {kind::exact, version}; }

  constexpr kind which() const noexcept { return kind_; }
  constexpr uint64_t value() const noexcept { return value_; }

  /// Whether a stream currently at `version` satisfies the condition.
  constexpr bool admits(uint64_t version) const noexcept {
    switch (kind_) {
      case kind::any: return true;
      case kind::no_stream: return version == 0;
      case kind::stream_exists: return version > 0;
      case kind::exact: return version == value_;
    }
    return false;
  }

  std::string to_string() const;

  friend constexpr bool operator==(expected_version, expected_version) = default;

private:
  constexpr expected_version(kind k, uint64_t v) noexcept : kind_(k), value_(v) {}
  kind kind_;
  uint64_t value_;
};

} // namespace sourcery::persistence
