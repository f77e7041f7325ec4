#include "sourcery/runtime/http/message.hpp"

#include <atomic>

namespace sourcery::http {

std::string request::header(std::string_view name) const {
  for (auto& [k, v] : headers)
    if (k == name)
      return v;
  return {};
}

std::string request::param(const std::string& name) const {
  auto it = params.find(name);
  return it == params.end() ? std::string{} : it->second;
}

std::string request::origin() const {
  auto host = header("host");
  return (secure ? "https://" : "http://") + (host.empty() ? std::string{"localhost"} : host);
}

std::string render_json(const json& body) {
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

response json_response(unsigned status, const json& body) {
  response r;
  r.status = status;
  r.body = render_json(body);
  return r;
}


response empty_response(unsigned status) {
  response r;
  r.status = status;
  r.content_type.clear();
  return r;
}

response error_response(const error& e) {
  return json_response(e.status, json{{"error", e.code}, {"message", e.message}, {"status", e.status}});
}

expected<json> json_object_body(const request& req) {
  // RFC 9110 §15.5.16: content in a format the route does not take is 415.
  auto type = req.header("content-type");
  auto media = type.substr(0, type.find(';'));
  while (!media.empty() && media.back() == ' ')
    media.pop_back();
  for (auto& c : media)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  bool is_json = media == "application/json" || (media.size() > 5 && media.ends_with("+json"));
  // Without a Content-Type the body is taken for what it says it is
  // (RFC 9110 §8.3 lets the recipient look): JSON, or 400.
  if (!is_json && !media.empty())
    return error{415, "unsupported_media_type", "the body is " + media + "; send it as application/json"};
  auto body = json::parse(req.body, nullptr, false);
  if (body.is_discarded())
    return error{400, "malformed_json", req.body.empty() ? "the request has no body; a JSON object is expected"
                                                          : "the body is not valid JSON"};
  if (!body.is_object())
    return error{422, "invalid_body", "the body must be a JSON object"};
  return body;
}

struct responder::state {
  std::atomic<bool> answered{false};
  sink to;
  ~state() {
    if (!answered.exchange(true) && to)
      to(error_response({500, "internal_error", "the route answered nothing"}));
  }
};

responder::responder(sink s) : state_(std::make_shared<state>()) {
  state_->to = std::move(s);
}

void responder::operator()(response r) const {
  if (!state_->answered.exchange(true))
    state_->to(std::move(r));
}

} // namespace sourcery::http
