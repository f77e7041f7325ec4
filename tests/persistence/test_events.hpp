#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <msgpack.hpp>

#include "sourcery/persistence/event.hpp"
#include "sourcery/persistence/event_registry.hpp"

namespace sourcery::testing {

struct deposited {
  std::string account;
  int64_t amount = 0;
  std::string currency;
  MSGPACK_DEFINE_MAP(account, amount, currency);
  friend bool operator==(const deposited&, const deposited&) = default;
};

struct withdrawn {
  std::string account;
  int64_t amount = 0;
  MSGPACK_DEFINE_MAP(account, amount);
};

/// A msgpack map {"n": n, "tag": tag} as event data.
inline persistence::bytes map_payload(int64_t n, const std::string& tag = "x") {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{buf};
  pk.pack_map(2);
  pk.pack(std::string{"n"});
  pk.pack(n);
  pk.pack(std::string{"tag"});
  pk.pack(tag);
  return {reinterpret_cast<const uint8_t*>(buf.data()), reinterpret_cast<const uint8_t*>(buf.data()) + buf.size()};
}

/// One event of type `type` whose data carries `n`.
inline persistence::event_data make_event(int64_t n, std::string type = "test.happened") {
  persistence::event_data ev;
  ev.type = std::move(type);
  ev.data = map_payload(n);
  return ev;
}

inline std::vector<persistence::event_data> make_events(int64_t first, size_t count) {
  std::vector<persistence::event_data> out;
  for (size_t i = 0; i < count; ++i)
    out.push_back(make_event(first + static_cast<int64_t>(i)));
  return out;
}

/// The `n` field of data written by `map_payload`.
inline int64_t payload_n(const persistence::recorded_event& ev) {
  auto oh = msgpack::unpack(reinterpret_cast<const char*>(ev.data.data()), ev.data.size());
  std::map<std::string, msgpack::object> m;
  oh.get().convert(m);
  return m.at("n").as<int64_t>();
}

} // namespace sourcery::testing
