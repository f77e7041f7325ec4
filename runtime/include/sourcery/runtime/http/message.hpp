#pragma once

// What a route of the HTTP gateway sees and answers: a parsed request, a
// response, and the 4xx errors of bad input as values. No Beast here: the
// gateway's transport stays inside http_gateway.cpp.

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "sourcery/persistence/utf8.hpp"

namespace sourcery::http {

using json = nlohmann::json;

struct request {
  std::string method;                          ///< "GET", "POST", …
  std::string target;                          ///< as sent: path and query
  std::string path;                            ///< percent-decoded, without the query
  std::map<std::string, std::string> query;    ///< decoded query parameters
  std::map<std::string, std::string> params;   ///< the route's `{name}` segments
  std::vector<std::pair<std::string, std::string>> headers; ///< names in lower case
  std::string body;
  bool secure = false; ///< it came over TLS (HTTPS)

  /// A header's value ("" when absent); `name` in lower case.
  std::string header(std::string_view name) const;
  /// A route parameter ("" when absent).
  std::string param(const std::string& name) const;
  /// "http://host" (or "https://host") from the Host header, for absolute URLs.
  std::string origin() const;
};

struct response {
  unsigned status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string content_type = "application/json";
  std::string body;

  response& with_header(std::string name, std::string value) {
    headers.emplace_back(std::move(name), std::move(value));
    return *this;
  }
};

/// A 4xx/5xx answer as a value: rendered as a JSON body
/// `{"error": code, "message": message, "status": status}`.
struct error {
  unsigned status = 400;
  std::string code;
  std::string message;
};

/// Renders `body`; never throws: a string that is not valid UTF-8 (a
/// C++ application may put any bytes into one) shows U+FFFD in its place.
response json_response(unsigned status, const json& body);
/// `body` as JSON text, invalid UTF-8 replaced by U+FFFD (never throws).
std::string render_json(const json& body);
using persistence::valid_utf8;
response empty_response(unsigned status = 204);
response error_response(const error& e);

/// A value or the error to answer with.
template <class T>
class expected {
public:
  expected(T value) : value_(std::move(value)) {}
  expected(error e) : error_(std::move(e)) {}
  explicit operator bool() const noexcept { return value_.has_value(); }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  const error& err() const noexcept { return error_; }

private:
  std::optional<T> value_;
  error error_;
};

/// The body as a JSON object. Errors: 415 `unsupported_media_type` (it has
/// a Content-Type, not application/json or `*/*+json`), 400
/// `malformed_json` (not JSON at all), 422 `invalid_body` (JSON, but not an
/// object).
expected<json> json_object_body(const request& req);

namespace detail {
template <class T>
bool holds(const json& v) {
  if constexpr (std::is_same_v<T, bool>)
    return v.is_boolean();
  else if constexpr (std::is_integral_v<T>)
    return v.is_number_integer();
  else if constexpr (std::is_floating_point_v<T>)
    return v.is_number();
  else if constexpr (std::is_same_v<T, std::string>)
    return v.is_string();
  else
    return !v.is_discarded();
}
/// An integer JSON value fits in T (9223372036854775808 does not fit an int64_t).
template <class T>
bool in_range(const json& v) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (v.is_number_unsigned())
      return v.template get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
    auto s = v.template get<int64_t>();
    if constexpr (std::is_signed_v<T>)
      return s >= static_cast<int64_t>(std::numeric_limits<T>::min())
             && s <= static_cast<int64_t>(std::numeric_limits<T>::max());
    else
      return s >= 0 && static_cast<uint64_t>(s) <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  } else {
    return true;
  }
}
template <class T>
const char* type_word() {
  if constexpr (std::is_same_v<T, bool>)
    return "a boolean";
  else if constexpr (std::is_integral_v<T>)
    return "an integer";
  else if constexpr (std::is_floating_point_v<T>)
    return "a number";
  else if constexpr (std::is_same_v<T, std::string>)
    return "a string";
  else
    return "a value";
}
} // namespace detail

/// Field `name` of object `obj` if present (null counts as absent).
/// Errors: 422 `invalid_field` when it has another type.
template <class T>
expected<std::optional<T>> optional_field(const json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null())
    return std::optional<T>{};
  if (!detail::holds<T>(*it))
    return error{422, "invalid_field", std::string{"field '"} + name + "' must be " + detail::type_word<T>()};
  if (!detail::in_range<T>(*it)) // nlohmann's get<> would wrap it silently
    return error{422, "invalid_field", std::string{"field '"} + name + "' is out of range"};
  try {
    return std::optional<T>{it->template get<T>()};
  } catch (const json::exception&) { // an integer out of T's range
    return error{422, "invalid_field", std::string{"field '"} + name + "' is out of range"};
  }
}

/// Field `name` of object `obj`. Errors: 422 `missing_field`, `invalid_field`.
template <class T>
expected<T> required_field(const json& obj, const char* name) {
  auto v = optional_field<T>(obj, name);
  if (!v)
    return v.err();
  if (!*v)
    return error{422, "missing_field", std::string{"field '"} + name + "' is required"};
  return std::move(**v);
}

/// The first error among `values`, in order; nullptr when all hold values.
///     if (auto* bad = http::first_error(title, order)) return answer(*bad);
template <class... T>
const error* first_error(const expected<T>&... values) {
  const error* out = nullptr;
  ((out = out != nullptr ? out : (values ? nullptr : &values.err())), ...);
  return out;
}

/// Answers a request exactly once, from any thread; copies share that one
/// answer (later calls are ignored). When the last copy is dropped
/// unanswered (a route that lost it), it answers 500, so no client waits
/// forever.
class responder {
public:
  using sink = std::function<void(response)>;
  explicit responder(sink s);

  void operator()(response r) const;
  void operator()(const error& e) const { (*this)(error_response(e)); }

private:
  struct state;
  std::shared_ptr<state> state_;
};

/// A route: answers through the responder, now or later (after a dispatch).
using handler = std::function<void(request&, responder)>;

} // namespace sourcery::http
