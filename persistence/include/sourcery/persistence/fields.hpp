#pragma once

// The fields of a command, an event or a snapshot: what makes a plain struct
// data that can be stored and sent to another node, declared in one line:
//
//     struct deposit { std::string account; int64_t amount = 0; SOURCERY_FIELDS(account, amount) };
//
// It writes the msgpack map msgpack-c's MSGPACK_DEFINE_MAP writes (each
// field's name, then its value) and reads it back the same way (a missing
// key leaves its field alone, unknown keys are ignored), without including
// msgpack-c: a domain header stays light, and only the code that encodes or
// decodes (the stores, the runtime) compiles msgpack. The member templates
// are instantiated there, where `sourcery/persistence/map_fields.hpp`
// defines how a map is read.

#include <utility>

#include "sourcery/persistence/detail/fields_pp.hpp"

namespace sourcery::persistence {

/// Reads msgpack map `o` (a msgpack::object, or what msgpack-c's convert
/// hands to `msgpack_unpack`) into the fields `self` declared with
/// SOURCERY_FIELDS. Throws msgpack::type_error for anything but a map.
/// Defined in map_fields.hpp.
template <class Object, class T>
void unpack_fields(Object&& o, T& self);

} // namespace sourcery::persistence

/// The msgpack map of a type's fields (none is fine).
#define SOURCERY_FIELDS(...) SOURCERY_FIELDS_SELECT(__VA_OPT__(LIST))(__VA_ARGS__)
#define SOURCERY_FIELDS_SELECT(x) SOURCERY_FIELDS_SELECT_I(x)
#define SOURCERY_FIELDS_SELECT_I(x) SOURCERY_FIELDS_##x
#define SOURCERY_FIELDS_(...) SOURCERY_DEFINE_EMPTY_MAP()
#define SOURCERY_FIELDS_LIST(...)                                                                                  \
  template <class SourceryPacker>                                                                                  \
  void msgpack_pack(SourceryPacker& sourcery_packer) const {                                                       \
    sourcery_packer.pack_map(SOURCERY_PP_COUNT(__VA_ARGS__));                                                      \
    SOURCERY_PP_FOR_EACH(SOURCERY_FIELDS_PACK_ONE, __VA_ARGS__)                                                    \
  }                                                                                                                \
  template <class SourceryObject>                                                                                  \
  void msgpack_unpack(SourceryObject&& sourcery_object) {                                                          \
    ::sourcery::persistence::unpack_fields(std::forward<SourceryObject>(sourcery_object), *this);                  \
  }
#define SOURCERY_FIELDS_PACK_ONE(field)                                                                            \
  sourcery_packer.pack(#field);                                                                                    \
  sourcery_packer.pack(field);

/// The msgpack functions of a type without fields (an event such as
/// `todo_completed`), written as an empty map.
#define SOURCERY_DEFINE_EMPTY_MAP()                                                                                \
  template <class SourceryPacker>                                                                                  \
  void msgpack_pack(SourceryPacker& sourcery_packer) const {                                                       \
    sourcery_packer.pack_map(0);                                                                                   \
  }                                                                                                                \
  template <class SourceryObject>                                                                                  \
  void msgpack_unpack(SourceryObject&& sourcery_object) {                                                          \
    ::sourcery::persistence::unpack_fields(std::forward<SourceryObject>(sourcery_object), *this);                  \
  }
