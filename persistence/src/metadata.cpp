#include "sourcery/persistence/metadata.hpp"

#include <msgpack.hpp>

#include "sourcery/persistence/error.hpp"

namespace sourcery {

caf::expected<metadata> metadata::decode(const persistence::bytes& encoded) {
  metadata out;
  if (encoded.empty())
    return out;
  try {
    auto oh = msgpack::unpack(reinterpret_cast<const char*>(encoded.data()), encoded.size());
    const auto& obj = oh.get();
    if (obj.type != msgpack::type::MAP)
      return persistence::make_error(persistence::store_errc::malformed_payload, "metadata is not a msgpack map");
    for (uint32_t i = 0; i < obj.via.map.size; ++i) {
      const auto& kv = obj.via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR)
        return persistence::make_error(persistence::store_errc::malformed_payload, "metadata has a key that is not text");
      std::string key{kv.key.via.str.ptr, kv.key.via.str.size};
      const auto& v = kv.val;
      switch (v.type) {
        case msgpack::type::STR:
          out.fields_[std::move(key)] = std::string{v.via.str.ptr, v.via.str.size};
          break;
        case msgpack::type::BOOLEAN:
          out.fields_[std::move(key)] = v.via.boolean;
          break;
        case msgpack::type::POSITIVE_INTEGER:
          if (v.via.u64 <= static_cast<uint64_t>(INT64_MAX)) {
            out.fields_[std::move(key)] = static_cast<int64_t>(v.via.u64);
            break;
          }
          [[fallthrough]]; // beyond int64: kept as written
        default: {
          if (v.type == msgpack::type::NEGATIVE_INTEGER) {
            out.fields_[std::move(key)] = v.via.i64;
            break;
          }
          if (v.type == msgpack::type::FLOAT32 || v.type == msgpack::type::FLOAT64) {
            out.fields_[std::move(key)] = v.via.f64;
            break;
          }
          msgpack::sbuffer buf;
          msgpack::pack(buf, v);
          out.fields_[std::move(key)] = raw{persistence::bytes(buf.data(), buf.data() + buf.size())};
        }
      }
    }
  } catch (const std::exception& e) {
    return persistence::make_error(persistence::store_errc::malformed_payload,
                                   std::string{"metadata is not msgpack: "} + e.what());
  }
  return out;
}

metadata metadata::decode_or_empty(const persistence::bytes& encoded) {
  auto m = decode(encoded);
  return m ? std::move(*m) : metadata{};
}

persistence::bytes metadata::encode() const {
  if (fields_.empty())
    return {};
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{buf};
  pk.pack_map(static_cast<uint32_t>(fields_.size()));
  for (const auto& [key, v] : fields_) {
    pk.pack(key);
    std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, raw>)
          buf.write(reinterpret_cast<const char*>(x.encoded.data()), x.encoded.size()); // already msgpack
        else
          pk.pack(x);
      },
      v);
  }
  return persistence::bytes(buf.data(), buf.data() + buf.size());
}

const metadata::value* metadata::find(std::string_view key) const {
  auto i = fields_.find(key);
  return i == fields_.end() ? nullptr : &i->second;
}

namespace {
template <class T>
std::optional<T> get_as(const metadata::value* v) {
  if (v == nullptr)
    return std::nullopt;
  if (auto* x = std::get_if<T>(v))
    return *x;
  return std::nullopt;
}
} // namespace

std::optional<std::string> metadata::get_string(std::string_view key) const {
  return get_as<std::string>(find(key));
}
std::optional<int64_t> metadata::get_int(std::string_view key) const {
  return get_as<int64_t>(find(key));
}
std::optional<bool> metadata::get_bool(std::string_view key) const {
  return get_as<bool>(find(key));
}
std::optional<double> metadata::get_double(std::string_view key) const {
  return get_as<double>(find(key));
}

void metadata::erase(std::string_view key) {
  if (auto i = fields_.find(key); i != fields_.end())
    fields_.erase(i);
}

void metadata::merge(const metadata& other) {
  for (const auto& [key, v] : other.fields_)
    fields_.try_emplace(key, v);
}

} // namespace sourcery

namespace sourcery::persistence {

sourcery::metadata recorded_event::meta() const {
  return sourcery::metadata::decode_or_empty(metadata);
}

} // namespace sourcery::persistence
