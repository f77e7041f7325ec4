#include "sourcery/runtime/observability/log.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include <nlohmann/json.hpp>

#include "sourcery/persistence/error.hpp"

namespace sourcery {

namespace {

constexpr std::string_view level_names[] = {"trace", "debug", "info", "warn", "error", "off"};

std::optional<log_level> level_of(std::string_view name) {
  for (size_t i = 0; i < std::size(level_names); ++i)
    if (name == level_names[i])
      return static_cast<log_level>(i);
  if (name == "warning")
    return log_level::warn;
  return std::nullopt;
}

std::string timestamp(int64_t micros) {
  auto t = static_cast<std::time_t>(micros / 1'000'000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[48];
  auto n = std::strftime(buf, sizeof buf, "%FT%T", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(micros % 1'000'000));
  return buf;
}

/// logfmt: bare when the value is plain, else quoted with \" \\ \n escaped.
void append_value(std::string& out, std::string_view v, bool number) {
  bool plain = number || (!v.empty() && v.find_first_of(" =\"\\\n\r\t") == std::string_view::npos);
  if (plain) {
    out += v;
    return;
  }
  out += '"';
  for (char c : v) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: out += c;
    }
  }
  out += '"';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ')
    s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ')
    s.remove_suffix(1);
  return s;
}

} // namespace

log_field::log_field(std::string k, double x) : key(std::move(k)), number(true) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", x);
  value = buf;
}

const char* to_string(log_level level) noexcept {
  return level_names[static_cast<size_t>(level)].data();
}

caf::expected<log_config> log_config::parse(std::string_view spec) {
  log_config cfg;
  while (!spec.empty()) {
    auto comma = spec.find(',');
    auto part = trim(spec.substr(0, comma));
    spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
    if (part.empty())
      continue;
    auto eq = part.find('=');
    auto level = level_of(trim(eq == std::string_view::npos ? part : part.substr(eq + 1)));
    if (!level)
      return persistence::make_error(persistence::store_errc::invalid_argument,
                                     "log level '" + std::string{part} + "': levels are trace, debug, info, warn, "
                                                                         "error, off");
    if (eq == std::string_view::npos) {
      cfg.level = *level;
    } else {
      auto component = trim(part.substr(0, eq));
      if (component.empty())
        return persistence::make_error(persistence::store_errc::invalid_argument,
                                       "log level '" + std::string{part} + "' names no component");
      cfg.components[std::string{component}] = *level;
    }
  }
  return cfg;
}

log_config log_config::from_environment() {
  log_config cfg;
  if (const char* spec = std::getenv("SOURCERY_LOG")) {
    if (auto parsed = parse(spec))
      cfg = std::move(*parsed);
    else
      std::fprintf(stderr, "sourcery: ignoring SOURCERY_LOG: %s\n", persistence::describe(parsed.error()).c_str());
  }
  if (const char* f = std::getenv("SOURCERY_LOG_FORMAT"); f != nullptr && std::string_view{f} == "json")
    cfg.format = log_format::json;
  return cfg;
}

logger::logger(log_config config) : config_(std::move(config)) {}

bool logger::enabled(log_level level, std::string_view component) const {
  if (level == log_level::off)
    return false;
  auto i = config_.components.find(component);
  auto threshold = i != config_.components.end() ? i->second : config_.level;
  return level >= threshold;
}

std::string logger::format(int64_t micros, log_level level, std::string_view component, std::string_view message,
                           std::initializer_list<log_field> fields) const {
  if (config_.format == log_format::json) {
    nlohmann::ordered_json j{{"ts", timestamp(micros)}, {"level", to_string(level)}, {"component", component},
                             {"msg", message}};
    for (auto& f : fields) {
      if (f.number)
        j[f.key] = nlohmann::json::parse(f.value, nullptr, false);
      else
        j[f.key] = f.value;
    }
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string out = "ts=" + timestamp(micros) + " level=" + to_string(level) + " component=";
  append_value(out, component, false);
  out += " msg=";
  append_value(out, message, false);
  for (auto& f : fields) {
    out += ' ';
    out += f.key;
    out += '=';
    append_value(out, f.value, f.number);
  }
  return out;
}

void logger::log(log_level level, std::string_view component, std::string_view message,
                 std::initializer_list<log_field> fields) const {
  if (!enabled(level, component))
    return;
  using namespace std::chrono;
  auto micros = duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
  auto line = format(micros, level, component, message, fields);
  std::lock_guard guard{sink_mtx_};
  if (config_.sink) {
    config_.sink(line);
  } else {
    line += '\n';
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
  }
}

} // namespace sourcery
