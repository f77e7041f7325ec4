#pragma once

// Personal fields (personal.hpp) in the JSON view of event data
// (event_registry::data_as_json), for people reading it: what a reader of
// the store sees of each, never more.

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace sourcery::persistence {

/// Rewrites every personal field of `data` in place: a value still in
/// plaintext (read by the application) as {"$personal": value}, a sealed one
/// (read by the tools) as {"$personal": "sealed"}, a forgotten one as
/// {"$personal": "forgotten"}. Other values are left alone.
inline void show_personal_fields(nlohmann::json& data) {
  if (data.is_binary() && data.get_binary().has_subtype()) {
    const auto& b = data.get_binary();
    switch (b.subtype()) {
      case 80: // plaintext: its own msgpack
        try {
          data = nlohmann::json{{"$personal", nlohmann::json::from_msgpack(std::vector<uint8_t>(b.begin(), b.end()))}};
        } catch (const std::exception&) {
          data = nlohmann::json{{"$personal", "unreadable"}};
        }
        return;
      case 81: data = nlohmann::json{{"$personal", "sealed"}}; return;
      case 82: data = nlohmann::json{{"$personal", "forgotten"}}; return;
      default: return;
    }
  }
  if (data.is_structured())
    for (auto& v : data)
      show_personal_fields(v);
}

} // namespace sourcery::persistence
