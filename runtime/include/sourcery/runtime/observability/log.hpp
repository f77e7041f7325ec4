#pragma once

// Structured, levelled logging: one line per record, in logfmt (default) or
// JSON, with a level per component. The runtime logs what an operator needs
// to see: supervisor reports (child terminated, restarted, supervisor gave
// up), handler failures with their policy's decision, slow commands.
//
//   ts=2026-11-23T04:32:57.123456Z level=warn component=supervisor
//     msg="child terminated" supervisor=app_root child=projection:bank.balances reason="..."
//
// Configure with `log_config::parse("warn,supervisor=info,dispatch=debug")`
// or the environment: SOURCERY_LOG (same syntax), SOURCERY_LOG_FORMAT=json.

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include <caf/expected.hpp>

namespace sourcery {

enum class log_level : uint8_t { trace, debug, info, warn, error, off };

const char* to_string(log_level level) noexcept;

/// One key=value of a record. Numbers are written unquoted (and as JSON numbers).
struct log_field {
  std::string key;
  std::string value;
  bool number = false;

  log_field(std::string k, std::string v) : key(std::move(k)), value(std::move(v)) {}
  log_field(std::string k, const char* v) : key(std::move(k)), value(v) {}
  template <class N>
    requires std::is_integral_v<N>
  log_field(std::string k, N n) : key(std::move(k)), value(std::to_string(n)), number(true) {}
  log_field(std::string k, double x);
};

enum class log_format : uint8_t { logfmt, json };

struct log_config {
  /// Records below this level are dropped, unless their component has its own.
  log_level level = log_level::info;
  std::map<std::string, log_level, std::less<>> components;
  log_format format = log_format::logfmt;
  /// Where lines go (without their newline); empty: standard error.
  std::function<void(std::string_view line)> sink;

  /// "LEVEL[,COMPONENT=LEVEL]...", e.g. "warn,supervisor=info"; a component
  /// may also come first ("dispatch=debug"). Levels: trace, debug, info,
  /// warn, error, off. Errors: invalid_argument, naming the bad part.
  static caf::expected<log_config> parse(std::string_view spec);

  /// SOURCERY_LOG and SOURCERY_LOG_FORMAT (logfmt, json) if set and valid,
  /// else the defaults (info, logfmt, standard error).
  static log_config from_environment();
};

class logger {
public:
  explicit logger(log_config config = log_config::from_environment());

  /// Whether a record of `component` at `level` would be written: check
  /// before building expensive fields.
  bool enabled(log_level level, std::string_view component) const;

  void log(log_level level, std::string_view component, std::string_view message,
           std::initializer_list<log_field> fields = {}) const;

  void debug(std::string_view component, std::string_view message, std::initializer_list<log_field> fields = {}) const {
    log(log_level::debug, component, message, fields);
  }
  void info(std::string_view component, std::string_view message, std::initializer_list<log_field> fields = {}) const {
    log(log_level::info, component, message, fields);
  }
  void warn(std::string_view component, std::string_view message, std::initializer_list<log_field> fields = {}) const {
    log(log_level::warn, component, message, fields);
  }
  void error(std::string_view component, std::string_view message, std::initializer_list<log_field> fields = {}) const {
    log(log_level::error, component, message, fields);
  }

  /// The line a record becomes (without the newline), at time `micros`.
  std::string format(int64_t micros, log_level level, std::string_view component, std::string_view message,
                     std::initializer_list<log_field> fields) const;

private:
  log_config config_;
  mutable std::mutex sink_mtx_; // whole lines, never interleaved
};

} // namespace sourcery
