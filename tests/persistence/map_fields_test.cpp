// convert_map must give what msgpack-c's own conversion gives, value for
// value and error for error, for every layout an event or a state can have.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/map_fields.hpp"

using sourcery::persistence::convert_map;

namespace {

struct inner {
  int32_t x = 0;
  std::string label = "unset";
  MSGPACK_DEFINE_MAP(x, label);
  bool operator==(const inner&) const = default;
};

struct outer {
  int64_t amount = -1;
  std::string note = "default";
  std::vector<int> list;
  std::optional<std::string> maybe;
  inner nested;
  MSGPACK_DEFINE_MAP(amount, note, list, maybe, nested);
  bool operator==(const outer&) const = default;
};

struct derived : inner {
  bool flag = false;
  MSGPACK_DEFINE_MAP(MSGPACK_BASE_MAP(inner), flag);
  bool operator==(const derived&) const = default;
};

struct renamed {
  int value = 0;
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("v", value));
  bool operator==(const renamed&) const = default;
};

struct as_array {
  int a = 0;
  std::string b;
  MSGPACK_DEFINE(a, b);
  bool operator==(const as_array&) const = default;
};

struct empty_event {
  SOURCERY_DEFINE_EMPTY_MAP()
  bool operator==(const empty_event&) const = default;
};

/// Packs a built name and a computed value, and unpacks in its own way: must
/// be left to its own msgpack_unpack, never written through as if it were a
/// field.
struct hand_written {
  int stored = 0;
  bool own_unpack_ran = false;
  template <class Packer>
  void msgpack_pack(Packer& pk) const {
    pk.pack_map(1);
    pk.pack(std::string{"doubled"});
    pk.pack(stored * 2);
  }
  void msgpack_unpack(const msgpack::object& o) {
    own_unpack_ran = true;
    if (o.type != msgpack::type::MAP || o.via.map.size != 1)
      throw msgpack::type_error();
    stored = o.via.map.ptr[0].val.as<int>() / 2;
  }
};

/// A member under a name built while packing: a name that would dangle.
struct built_name {
  int stored = 0;
  bool own_unpack_ran = false;
  template <class Packer>
  void msgpack_pack(Packer& pk) const {
    pk.pack_map(1);
    pk.pack(std::string{"sto"} + "red");
    pk.pack(stored);
  }
  void msgpack_unpack(const msgpack::object& o) {
    own_unpack_ran = true;
    if (o.type != msgpack::type::MAP || o.via.map.size != 1)
      throw msgpack::type_error();
    stored = o.via.map.ptr[0].val.as<int>();
  }
};

/// A msgpack map written key by key.
struct map_writer {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{buf};
  explicit map_writer(uint32_t n) { pk.pack_map(n); }
  template <class K, class V>
  map_writer& kv(const K& k, const V& v) {
    pk.pack(k);
    pk.pack(v);
    return *this;
  }
  msgpack::object_handle object() const { return msgpack::unpack(buf.data(), buf.size()); }
};

/// `v` packed by msgpack-c, then converted back by convert_map.
template <class T>
T round_trip(const T& v) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, v);
  auto oh = msgpack::unpack(buf.data(), buf.size());
  T back{};
  convert_map(oh.get(), back);
  return back;
}

/// Both conversions of `o` into a T that starts as `start`: equal values,
/// or the same exception type from both.
template <class T>
void expect_same(const msgpack::object& o, const T& start = T{}) {
  T ours = start, theirs = start;
  std::string our_error, their_error;
  try {
    convert_map(o, ours);
  } catch (const std::exception& e) {
    our_error = typeid(e).name();
  }
  try {
    o.convert(theirs);
  } catch (const std::exception& e) {
    their_error = typeid(e).name();
  }
  EXPECT_EQ(our_error, their_error);
  if (their_error.empty()) {
    EXPECT_TRUE(ours == theirs);
  }
}

} // namespace

TEST(convert_map, a_full_map_converts_like_msgpack) {
  outer v{42, "hello", {1, 2, 3}, std::string{"yes"}, {7, "in"}};
  auto got = round_trip(v);
  EXPECT_TRUE(got == v);
  msgpack::sbuffer buf;
  msgpack::pack(buf, v);
  expect_same<outer>(msgpack::unpack(buf.data(), buf.size()).get());
  // ...by the direct path: the macro's layout is recognised.
  sourcery::persistence::detail::field_collector fields{&got, sizeof got};
  got.msgpack_pack(fields);
  EXPECT_FALSE(fields.foreign());
}

TEST(convert_map, missing_keys_keep_values_and_unknown_keys_are_ignored) {
  map_writer m{3};
  m.kv("note", "only this").kv("unknown", 99).kv("also_unknown", std::vector<int>{1});
  outer got;
  convert_map(m.object().get(), got);
  EXPECT_EQ(got.note, "only this");
  EXPECT_EQ(got.amount, -1);
  EXPECT_EQ(got.nested.label, "unset");
  expect_same<outer>(m.object().get());
}

TEST(convert_map, the_first_of_repeated_keys_wins) {
  map_writer m{2};
  m.kv("amount", 1).kv("amount", 2);
  outer got;
  convert_map(m.object().get(), got);
  EXPECT_EQ(got.amount, 1);
  expect_same<outer>(m.object().get());
}

TEST(convert_map, bad_input_throws_as_msgpack_does) {
  {
    map_writer m{1};
    m.kv("amount", "not a number");
    EXPECT_THROW(convert_map(m.object().get(), *std::make_unique<outer>()), msgpack::type_error);
    expect_same<outer>(m.object().get());
  }
  {
    map_writer m{2};
    m.kv("amount", 5).kv(17, "a key that is not a string");
    EXPECT_THROW(convert_map(m.object().get(), *std::make_unique<outer>()), msgpack::type_error);
    expect_same<outer>(m.object().get());
  }
  {
    msgpack::sbuffer buf;
    msgpack::pack(buf, std::vector<int>{1, 2}); // not a map
    auto oh = msgpack::unpack(buf.data(), buf.size());
    EXPECT_THROW(convert_map(oh.get(), *std::make_unique<outer>()), msgpack::type_error);
    expect_same<outer>(oh.get());
    expect_same<empty_event>(oh.get());
  }
  {
    map_writer m{1};
    m.kv("nested", 3); // a nested map that is not one
    expect_same<outer>(m.object().get());
  }
}

TEST(convert_map, bases_renamed_fields_and_empty_maps_convert_like_msgpack) {
  derived d;
  d.x = 3;
  d.label = "base";
  d.flag = true;
  EXPECT_TRUE(round_trip(d) == d);
  msgpack::sbuffer buf;
  msgpack::pack(buf, d);
  expect_same<derived>(msgpack::unpack(buf.data(), buf.size()).get());

  map_writer r{1};
  r.kv("v", 12);
  renamed rn;
  convert_map(r.object().get(), rn);
  EXPECT_EQ(rn.value, 12);
  expect_same<renamed>(r.object().get());

  map_writer e{1};
  e.kv("ignored", 1);
  expect_same<empty_event>(e.object().get());
}

TEST(convert_map, other_layouts_are_left_to_msgpack) {
  as_array a{5, "five"};
  EXPECT_TRUE(round_trip(a) == a);

  hand_written h;
  h.stored = 21;
  auto back = round_trip(h);
  EXPECT_TRUE(back.own_unpack_ran) << "a packed value that is not a member is not a field";
  EXPECT_EQ(back.stored, 21);

  built_name bn;
  bn.stored = 5;
  auto bn_back = round_trip(bn);
  EXPECT_TRUE(bn_back.own_unpack_ran) << "a name built while packing is not kept";
  EXPECT_EQ(bn_back.stored, 5);

  EXPECT_EQ(round_trip(77), 77);
}

// SOURCERY_FIELDS (fields.hpp) writes without msgpack-c's macro: the bytes
// must be MSGPACK_DEFINE_MAP's, or stores written before could not be read.
namespace {
struct with_macro {
  std::string title;
  int64_t order = 7;
  bool done = true;
  std::vector<std::string> tags{"a", "b"};
  MSGPACK_DEFINE_MAP(title, order, done, tags);
};
struct with_fields {
  std::string title;
  int64_t order = 7;
  bool done = true;
  std::vector<std::string> tags{"a", "b"};
  SOURCERY_FIELDS(title, order, done, tags)
};
struct no_fields {
  SOURCERY_FIELDS()
};
} // namespace

TEST(sourcery_fields, write_the_bytes_msgpack_define_map_writes_and_read_them_back) {
  msgpack::sbuffer old_bytes, new_bytes;
  msgpack::pack(old_bytes, with_macro{"milk"});
  msgpack::pack(new_bytes, with_fields{"milk"});
  ASSERT_EQ(std::string(old_bytes.data(), old_bytes.size()), std::string(new_bytes.data(), new_bytes.size()));
  // Read back through msgpack-c's convert (as any msgpack user would) and
  // through convert_map (as the stores do); a missing key keeps its default.
  auto handle = msgpack::unpack(old_bytes.data(), old_bytes.size());
  auto back = handle.get().as<with_fields>();
  EXPECT_EQ(back.title, "milk");
  EXPECT_EQ(back.tags, (std::vector<std::string>{"a", "b"}));
  msgpack::sbuffer partial;
  msgpack::packer<msgpack::sbuffer> pk{partial};
  pk.pack_map(1);
  pk.pack(std::string{"order"});
  pk.pack(42);
  with_fields fast;
  fast.title = "unchanged";
  convert_map(msgpack::unpack(partial.data(), partial.size()).get(), fast);
  EXPECT_EQ(fast.order, 42);
  EXPECT_EQ(fast.title, "unchanged");
  // Not a map: msgpack-c's type_error, as MSGPACK_DEFINE_MAP throws.
  msgpack::sbuffer number;
  msgpack::pack(number, 5);
  EXPECT_THROW(msgpack::unpack(number.data(), number.size()).get().as<with_fields>(), msgpack::type_error);
  EXPECT_THROW(msgpack::unpack(number.data(), number.size()).get().as<no_fields>(), msgpack::type_error);
  msgpack::sbuffer empty;
  msgpack::pack(empty, no_fields{});
  EXPECT_EQ(empty.size(), 1u) << "an empty map";
}
