#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>

#include <msgpack.hpp>

#include "sourcery/persistence/fields.hpp"

namespace sourcery::persistence {

namespace detail {

/// Where a field collector's base packer would write: any write means the
/// type packed something other than name-member pairs.
struct packed_bytes_flag {
  bool* wrote;
  void write(const char*, size_t) { *wrote = true; }
};

struct field_collector_sink {
  bool foreign = false;
  packed_bytes_flag flag{&foreign};
};

/// Stands in for a packer in `t.msgpack_pack(...)` to learn the fields of a
/// MSGPACK_DEFINE_MAP type: that macro packs a map, then each field's name
/// and the field itself. It keeps (name, address) pairs. Anything else (an
/// array layout, a name that is not a string literal, a value that does not
/// lie in the object, more than 64 fields, any call of the packer's other
/// functions, which write bytes) marks the type foreign.
class field_collector : private field_collector_sink, public msgpack::packer<packed_bytes_flag> {
public:
  field_collector(const void* object, size_t size)
    : msgpack::packer<packed_bytes_flag>(flag),
      begin_(reinterpret_cast<uintptr_t>(object)),
      end_(begin_ + size) {}

  bool foreign() const { return field_collector_sink::foreign; }

  field_collector& pack_map(uint32_t n) {
    if (maps_++ != 0 || n > max_fields)
      field_collector_sink::foreign = true;
    return *this;
  }

  field_collector& pack_array(uint32_t) {
    field_collector_sink::foreign = true;
    return *this;
  }

  template <class X>
  field_collector& pack(const X& x) {
    if (field_collector_sink::foreign || maps_ != 1)
      return mark_foreign();
    if (!named_) {
      // Names are string literals in MSGPACK_DEFINE_MAP and MSGPACK_NVP: they
      // outlive the collector, where a std::string built for packing would not.
      if constexpr (std::is_array_v<X> && std::is_same_v<std::remove_cv_t<std::remove_extent_t<X>>, char>) {
        name_ = std::string_view{x};
        named_ = true;
        return *this;
      } else {
        return mark_foreign();
      }
    }
    auto at = reinterpret_cast<uintptr_t>(std::addressof(x));
    if (at < begin_ || at + sizeof(X) > end_ || count_ == max_fields)
      return mark_foreign(); // not a member: a value computed while packing
    // The object is the caller's, not const: writing through is allowed.
    fields_[count_++] = {name_, const_cast<X*>(std::addressof(x)), &convert_field<X>};
    named_ = false;
    return *this;
  }

  /// Converts the map `o` into the collected fields, as msgpack-c's
  /// define_map does: keys must be strings, a missing key leaves its
  /// field alone, unknown keys are ignored, the first of repeated keys
  /// wins. Throws msgpack::type_error.
  void assign(const msgpack::object& o) const {
    if (o.type != msgpack::type::MAP)
      throw msgpack::type_error();
    const auto* kv = o.via.map.ptr;
    const uint32_t n = o.via.map.size;
    for (uint32_t i = 0; i < n; ++i)
      if (kv[i].key.type != msgpack::type::STR)
        throw msgpack::type_error();
    uint64_t seen = 0;
    for (uint32_t i = 0; i < n; ++i) {
      std::string_view key{kv[i].key.via.str.ptr, kv[i].key.via.str.size};
      for (size_t f = 0; f < count_; ++f) {
        if (fields_[f].name != key)
          continue;
        if ((seen & (uint64_t{1} << f)) == 0) {
          seen |= uint64_t{1} << f;
          fields_[f].convert(kv[i].val, fields_[f].member);
        }
        break;
      }
    }
  }

private:
  static constexpr size_t max_fields = 64;

  struct field {
    std::string_view name;
    void* member = nullptr;
    void (*convert)(const msgpack::object&, void*) = nullptr;
  };

  template <class X>
  static void convert_field(const msgpack::object& o, void* member);

  field_collector& mark_foreign() {
    field_collector_sink::foreign = true;
    return *this;
  }

  uintptr_t begin_, end_;
  std::array<field, max_fields> fields_{};
  size_t count_ = 0;
  uint32_t maps_ = 0;
  bool named_ = false;
  std::string_view name_;
};

} // namespace detail

/// `o.convert(t)`, with the same result and errors, faster for types laid
/// out with MSGPACK_DEFINE_MAP: their fields are converted in place, where
/// msgpack-c first builds a std::map of the object's keys (half the cost of
/// decoding a small event). Nested map types go the same way; any other
/// type is left to msgpack-c. A type is taken as laid out so when its
/// msgpack_pack writes one map of string literals to its own members, as
/// MSGPACK_DEFINE_MAP, MSGPACK_NVP and MSGPACK_BASE_MAP do: a hand-written
/// msgpack_unpack that reads such a map differently is then not called.
template <class T>
void convert_map(const msgpack::object& o, T& t) {
  if constexpr (std::is_class_v<T> && !requires { typename T::sourcery_opaque; }
                && requires(const T& c, detail::field_collector& k) { c.msgpack_pack(k); }) {
    detail::field_collector fields{std::addressof(t), sizeof(T)};
    std::as_const(t).msgpack_pack(fields);
    if (!fields.foreign()) {
      fields.assign(o);
      return;
    }
  }
  o.convert(t);
}

template <class X>
void detail::field_collector::convert_field(const msgpack::object& o, void* member) {
  convert_map(o, *static_cast<X*>(member));
}

template <class Object, class T>
void unpack_fields(Object&& o, T& self) {
  if constexpr (std::is_convertible_v<Object&&, const msgpack::object&>) {
    const msgpack::object& map = o;
    detail::field_collector fields{std::addressof(self), sizeof(T)};
    std::as_const(self).msgpack_pack(fields);
    if (fields.foreign())
      throw msgpack::type_error(); // not SOURCERY_FIELDS's layout: a broken invariant
    fields.assign(map);
  } else {
    // msgpack-c's convert adaptor hands over an implicit_type.
    msgpack::object map = o;
    unpack_fields(std::as_const(map), self);
  }
}

} // namespace sourcery::persistence

// personal<T>'s codec, which reads its value with convert_map.
#include "sourcery/persistence/detail/personal_codec.hpp"
