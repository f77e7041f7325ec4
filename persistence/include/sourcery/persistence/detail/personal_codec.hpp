#pragma once

// How a personal<T> is written as msgpack and read back (personal.hpp):
// included by map_fields.hpp, so every place that encodes or decodes fields
// has it.

#include <string>
#include <type_traits>
#include <utility>

#include <msgpack.hpp>

#include "sourcery/persistence/map_fields.hpp"
#include "sourcery/persistence/personal.hpp"

namespace sourcery::persistence::detail {

/// The msgpack ext types of a personal field.
enum personal_ext : int8_t {
  /// The value's own msgpack, in memory only: the store seals it before writing.
  personal_plain = 80,
  /// Sealed: encrypted with its subject's key (personal_data.hpp has the layout).
  personal_sealed = 81,
  /// Forgotten: no payload.
  personal_forgotten = 82,
};

template <class Packer, class T>
void pack_personal(Packer& packer, const personal<T>& p) {
  using state = typename personal<T>::state;
  switch (p.state_) {
    case state::known: {
      thread_local msgpack::sbuffer buf;
      buf.clear();
      msgpack::pack(buf, p.value_);
      packer.pack_ext(buf.size(), personal_plain);
      packer.pack_ext_body(buf.data(), buf.size());
      return;
    }
    case state::sealed:
      packer.pack_ext(p.sealed_.size(), personal_sealed);
      packer.pack_ext_body(reinterpret_cast<const char*>(p.sealed_.data()), p.sealed_.size());
      return;
    case state::forgotten:
      packer.pack_ext(0, personal_forgotten);
      return;
  }
}

template <class Object, class T>
void unpack_personal(Object&& o, personal<T>& into) {
  if constexpr (!std::is_convertible_v<Object&&, const msgpack::object&>) {
    msgpack::object obj = o; // msgpack-c's convert adaptor hands over an implicit_type
    unpack_personal(std::as_const(obj), into);
  } else {
    using state = typename personal<T>::state;
    const msgpack::object& obj = o;
    into.sealed_.clear();
    into.value_ = T{};
    if (obj.type != msgpack::type::EXT) {
      // A plain value: written before the field was declared personal.
      convert_map(obj, into.value_);
      into.state_ = state::known;
      return;
    }
    const auto* data = obj.via.ext.data();
    const auto size = obj.via.ext.size;
    switch (obj.via.ext.type()) {
      case personal_plain: {
        auto handle = msgpack::unpack(data, size);
        convert_map(handle.get(), into.value_);
        into.state_ = state::known;
        return;
      }
      case personal_sealed:
        into.sealed_.assign(reinterpret_cast<const uint8_t*>(data), reinterpret_cast<const uint8_t*>(data) + size);
        into.state_ = state::sealed;
        return;
      case personal_forgotten:
        into.state_ = state::forgotten;
        return;
      default:
        throw msgpack::type_error();
    }
  }
}

} // namespace sourcery::persistence::detail
