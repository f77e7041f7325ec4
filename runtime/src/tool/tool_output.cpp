#include "tool_output.hpp"

#include <cstdio>
#include <ctime>

#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/personal_json.hpp"

namespace sourcery::tool {

using json = nlohmann::json;

std::string time_of(int64_t micros) {
  auto secs = micros / 1'000'000;
  auto frac = micros % 1'000'000;
  if (frac < 0) {
    frac += 1'000'000;
    --secs;
  }
  auto t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  auto n = std::strftime(buf, sizeof buf, "%FT%T", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(frac));
  return buf;
}

std::string hex(const persistence::bytes& b) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(b.size() * 2);
  for (auto c : b) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

namespace {

constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

} // namespace

std::string base64(const persistence::bytes& b) {
  std::string out;
  out.reserve((b.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= b.size(); i += 3) {
    uint32_t v = uint32_t{b[i]} << 16 | uint32_t{b[i + 1]} << 8 | b[i + 2];
    for (int s = 18; s >= 0; s -= 6)
      out += alphabet[(v >> s) & 63];
  }
  if (size_t rest = b.size() - i; rest > 0) {
    uint32_t v = uint32_t{b[i]} << 16 | (rest == 2 ? uint32_t{b[i + 1]} << 8 : 0);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += rest == 2 ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<persistence::bytes> from_base64(std::string_view text) {
  if (text.size() % 4 != 0)
    return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z')
      return c - 'A';
    if (c >= 'a' && c <= 'z')
      return c - 'a' + 26;
    if (c >= '0' && c <= '9')
      return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  persistence::bytes out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    bool last = i + 4 == text.size();
    size_t pad = last ? (text[i + 3] == '=') + (text[i + 2] == '=') : 0;
    uint32_t v = 0;
    for (size_t j = 0; j < 4; ++j) {
      int d = j >= 4 - pad ? 0 : value(text[i + j]);
      if (d < 0)
        return std::nullopt;
      v = v << 6 | static_cast<uint32_t>(d);
    }
    out.push_back(static_cast<uint8_t>(v >> 16));
    if (pad < 2)
      out.push_back(static_cast<uint8_t>(v >> 8));
    if (pad < 1)
      out.push_back(static_cast<uint8_t>(v));
  }
  return out;
}

json payload(const persistence::bytes& b) {
  if (b.empty())
    return json::object();
  if (auto j = persistence::event_registry::data_as_json(b)) {
    persistence::show_personal_fields(*j);
    return *j;
  }
  return json{{"$hex", hex(b)}};
}

json event_json(const persistence::recorded_event& e) {
  return json{{"position", e.position},
              {"stream", e.stream_id},
              {"version", e.stream_version},
              {"type", e.type},
              {"schema_version", e.schema_version},
              {"event_id", e.event_id.to_string()},
              {"created_at", time_of(e.created_at)},
              {"causation_id", e.causation_id},
              {"correlation_id", e.correlation_id},
              {"data", payload(e.data)},
              {"metadata", payload(e.metadata)}};
}

void print_event(const persistence::recorded_event& e, bool as_json) {
  if (as_json) {
    std::printf("%s\n", event_json(e).dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  } else {
    auto dump = [](const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); };
    std::printf("#%-8llu %s v%llu  %s (v%u)  %s  id %s\n  data: %s\n", static_cast<unsigned long long>(e.position),
                e.stream_id.c_str(), static_cast<unsigned long long>(e.stream_version), e.type.c_str(),
                e.schema_version, time_of(e.created_at).c_str(), e.event_id.to_string().c_str(),
                dump(payload(e.data)).c_str());
    if (auto meta = payload(e.metadata); !meta.empty())
      std::printf("  metadata: %s\n", dump(meta).c_str());
    if (!e.causation_id.empty() || !e.correlation_id.empty())
      std::printf("  causation: %s  correlation: %s\n", e.causation_id.c_str(), e.correlation_id.c_str());
  }
  std::fflush(stdout);
}

std::string grouped(uint64_t n) {
  auto digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return out;
}

std::string human_bytes(uint64_t n) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(units)) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

} // namespace sourcery::tool
