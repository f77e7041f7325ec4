#pragma once

// How the operator tool shows stored data: times, payloads (JSON when they
// decode, raw bytes shown safely when not), events as text or JSON.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "sourcery/persistence/event.hpp"

namespace sourcery::tool {

/// ISO 8601 UTC with microseconds: 2026-11-23T04:32:57.123456Z.
std::string time_of(int64_t micros);

std::string hex(const persistence::bytes& b);
std::string base64(const persistence::bytes& b);
/// nullopt if `text` is not base64.
std::optional<persistence::bytes> from_base64(std::string_view text);

/// A payload as JSON when it is a msgpack map, else {"$hex": "..."}.
nlohmann::json payload(const persistence::bytes& b);

/// An event for `--json` output.
nlohmann::json event_json(const persistence::recorded_event& e);

/// Prints an event on stdout as text or as one line of JSON, and flushes.
void print_event(const persistence::recorded_event& e, bool as_json);

/// 1234567 -> "1,234,567".
std::string grouped(uint64_t n);
/// 1536 -> "1.5 KiB".
std::string human_bytes(uint64_t n);

} // namespace sourcery::tool
