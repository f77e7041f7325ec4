#include "record_codec.hpp"

#include <cstring>

#include <msgpack.hpp>
#include <msgpack/v2/null_visitor.hpp>

#include "big_endian.hpp"
#include "crc32c.hpp"
#include "msgpack_reader.hpp"
#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::detail {

namespace {

constexpr uint8_t record_layout = 1;
constexpr uint8_t snapshot_layout = 1;

/// msgpack packer target writing into a byte vector.
struct vector_writer {
  bytes& out;
  void write(const char* p, size_t n) { out.insert(out.end(), p, p + n); }
};

void append_crc(bytes& out, size_t start) {
  uint32_t crc = crc32c(out.data() + start, out.size() - start);
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<uint8_t>(crc >> (8 * i)));
}

void pack_bin(msgpack::packer<vector_writer>& pk, const bytes& b) {
  pk.pack_bin(static_cast<uint32_t>(b.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
}

bool reference_everything(msgpack::type::object_type, size_t, void*) {
  return true;
}

} // namespace

msgpack::object unpack_reused(const uint8_t* data, size_t size, size_t& off) {
  thread_local msgpack::zone zone;
  zone.clear();
  return msgpack::unpack(zone, reinterpret_cast<const char*>(data), size, off, reference_everything, nullptr,
                         msgpack::unpack_limit(msgpack_limits::array, msgpack_limits::map, msgpack_limits::str,
                                               msgpack_limits::bin, msgpack_limits::ext, msgpack_limits::depth));
}

namespace {

/// Checks the trailing CRC and unpacks the array in front of it.
/// `where()` names the record in errors; called only on failure.
template <class Where>
caf::expected<msgpack::object> unpack_checked(const uint8_t* data, size_t size, size_t header, Where where) {
  if (size < 5)
    return make_error(store_errc::corrupt_record, where() + ": truncated (" + std::to_string(size) + " bytes)");
  size_t body = size - 4;
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i)
    stored |= uint32_t{data[body + i]} << (8 * i);
  if (crc32c(data, body) != stored)
    return make_error(store_errc::corrupt_record, where() + ": checksum mismatch");
  try {
    size_t off = header;
    auto obj = unpack_reused(data, body, off);
    if (off != body || obj.type != msgpack::type::ARRAY)
      return make_error(store_errc::corrupt_record, where() + ": not a record");
    return obj;
  } catch (const std::exception& e) {
    return make_error(store_errc::corrupt_record, where() + ": " + e.what());
  }
}

// Typed field readers: false on a type mismatch.
bool get(const msgpack::object& o, uint64_t& x) {
  if (o.type != msgpack::type::POSITIVE_INTEGER) return false;
  x = o.via.u64;
  return true;
}
bool get(const msgpack::object& o, int64_t& x) {
  if (o.type == msgpack::type::POSITIVE_INTEGER) {
    x = static_cast<int64_t>(o.via.u64);
    return true;
  }
  if (o.type != msgpack::type::NEGATIVE_INTEGER) return false;
  x = o.via.i64;
  return true;
}
bool get(const msgpack::object& o, uint32_t& x) {
  uint64_t v = 0;
  if (!get(o, v) || v > UINT32_MAX) return false;
  x = static_cast<uint32_t>(v);
  return true;
}
bool get(const msgpack::object& o, std::string& x) {
  if (o.type != msgpack::type::STR) return false;
  x.assign(o.via.str.ptr, o.via.str.size);
  return true;
}
bool get(const msgpack::object& o, bytes& x) {
  if (o.type != msgpack::type::BIN) return false;
  x.assign(reinterpret_cast<const uint8_t*>(o.via.bin.ptr),
           reinterpret_cast<const uint8_t*>(o.via.bin.ptr) + o.via.bin.size);
  return true;
}

} // namespace

void encode_record_body(const event_data& ev, std::string_view stream, bytes& out) {
  out.reserve(out.size() + ev.data.size() + ev.metadata.size() + stream.size() + ev.type.size()
              + ev.causation_id.size() + ev.correlation_id.size() + 48);
  vector_writer w{out};
  msgpack::packer<vector_writer> pk{w};
  pk.pack_array(9);
  pk.pack_uint8(record_layout);
  pk.pack_bin(16);
  pk.pack_bin_body(reinterpret_cast<const char*>(ev.event_id.bytes.data()), 16);
  pk.pack_str(static_cast<uint32_t>(stream.size()));
  pk.pack_str_body(stream.data(), static_cast<uint32_t>(stream.size()));
  pk.pack(ev.type);
  pk.pack_uint32(ev.schema_version);
  pack_bin(pk, ev.data);
  pack_bin(pk, ev.metadata);
  pk.pack(ev.causation_id);
  pk.pack(ev.correlation_id);
}

void write_record(uint8_t* dst, uint64_t stream_version, uint64_t prev_position, int64_t created_at,
                  const bytes& body) {
  put_be64(dst, stream_version);
  put_be64(dst + 8, prev_position);
  put_be64(dst + 16, static_cast<uint64_t>(created_at));
  std::memcpy(dst + record_header_size, body.data(), body.size());
  size_t n = record_header_size + body.size();
  uint32_t crc = crc32c(dst, n);
  for (int i = 0; i < 4; ++i)
    dst[n + i] = static_cast<uint8_t>(crc >> (8 * i));
}

caf::error decode_record_into(recorded_event& ev, const uint8_t* data, size_t size, uint64_t position,
                              uint64_t* prev_position) {
  // This runs once per event read: it parses in place with our own reader
  // and builds the error context only on failure.
  auto fail = [position](const std::string& what) {
    return make_error(store_errc::corrupt_record, "event at position " + std::to_string(position) + ": " + what);
  };
  if (size < record_header_size + record_trailer_size + 1)
    return fail("truncated (" + std::to_string(size) + " bytes)");
  size_t body = size - record_trailer_size;
  uint32_t stored = 0;
  for (size_t i = 0; i < record_trailer_size; ++i)
    stored |= uint32_t{data[body + i]} << (8 * i);
  if (crc32c(data, body) != stored)
    return fail("checksum mismatch");
  msgpack_reader in{data + record_header_size, body - record_header_size};
  auto fields = in.array();
  if (!in.ok())
    return fail("not a record");
  if (fields < 9 || in.uint() != record_layout || !in.ok())
    return fail("unknown record layout");
  auto id = in.bin();
  if (id.size() != ev.event_id.bytes.size())
    return fail("field of the wrong type");
  std::memcpy(ev.event_id.bytes.data(), id.data(), id.size());
  in.str(ev.stream_id);
  in.str(ev.type);
  auto schema = in.uint();
  in.bin(ev.data);
  in.bin(ev.metadata);
  in.str(ev.causation_id);
  in.str(ev.correlation_id);
  if (!in.ok() || schema > UINT32_MAX)
    return fail("field of the wrong type");
  if (fields != 9 || !in.at_end())
    return fail("not a record");
  ev.schema_version = static_cast<uint32_t>(schema);
  ev.position = position;
  ev.stream_version = get_be64(data);
  uint64_t prev = get_be64(data + 8);
  ev.created_at = static_cast<int64_t>(get_be64(data + 16));
  if (prev >= position)
    return fail("link to a later event");
  if (prev_position != nullptr)
    *prev_position = prev;
  return {};
}

caf::expected<recorded_event> decode_record(const uint8_t* data, size_t size, uint64_t position,
                                            uint64_t* prev_position) {
  recorded_event ev;
  if (auto err = decode_record_into(ev, data, size, position, prev_position))
    return err;
  return ev;
}

namespace {

/// Accepts exactly one msgpack value whose top level is a map, nested at most
/// `msgpack_limits::depth` deep.
struct map_checker : msgpack::null_visitor {
  size_t depth = 0;
  bool top_is_map = false;
  bool started = false;
  bool too_deep = false;
  bool enter(bool is_map) {
    if (!started) {
      started = true;
      top_is_map = is_map;
    }
    if (++depth > msgpack_limits::depth) {
      too_deep = true;
      return false;
    }
    return true;
  }
  bool start_array(uint32_t) { return enter(false); }
  bool end_array() { --depth; return true; }
  bool start_map(uint32_t) { return enter(true); }
  bool end_map() { --depth; return true; }
  bool visit_scalar() {
    if (!started)
      started = true;
    return true;
  }
  bool visit_nil() { return visit_scalar(); }
  bool visit_boolean(bool) { return visit_scalar(); }
  bool visit_positive_integer(uint64_t) { return visit_scalar(); }
  bool visit_negative_integer(int64_t) { return visit_scalar(); }
  bool visit_float32(float) { return visit_scalar(); }
  bool visit_float64(double) { return visit_scalar(); }
  bool visit_str(const char*, uint32_t) { return visit_scalar(); }
  bool visit_bin(const char*, uint32_t) { return visit_scalar(); }
  bool visit_ext(const char*, uint32_t) { return visit_scalar(); }
};

} // namespace

std::string check_msgpack_map(const uint8_t* data, size_t size) {
  map_checker v;
  size_t off = 0;
  bool ok = false;
  try {
    ok = msgpack::parse(reinterpret_cast<const char*>(data), size, off, v);
  } catch (const std::exception& e) {
    return std::string{"is not valid msgpack: "} + e.what();
  }
  if (v.too_deep)
    return "nests deeper than " + std::to_string(msgpack_limits::depth) + " levels";
  if (!ok)
    return "is not valid msgpack (truncated or malformed)";
  if (!v.top_is_map)
    return "is not a msgpack map";
  if (off != size)
    return "has trailing bytes after its msgpack map";
  return {};
}

void encode_snapshot(const snapshot& snap, bytes& out) {
  size_t start = out.size();
  vector_writer w{out};
  msgpack::packer<vector_writer> pk{w};
  pk.pack_array(6);
  pk.pack_uint8(snapshot_layout);
  pk.pack_uint64(snap.stream_version);
  pk.pack_uint32(snap.snapshot_version);
  pk.pack(snap.type);
  pack_bin(pk, snap.data);
  pk.pack_int64(snap.created_at);
  append_crc(out, start);
}

caf::expected<snapshot> decode_snapshot(const uint8_t* data, size_t size, std::string_view stream) {
  auto where = "snapshot of " + std::string{stream};
  auto obj = unpack_checked(data, size, 0, [&where] { return where; });
  if (!obj)
    return obj.error();
  const auto& arr = obj->via.array;
  uint64_t layout = 0;
  if (arr.size < 6 || !get(arr.ptr[0], layout) || layout != snapshot_layout)
    return make_error(store_errc::corrupt_record, where + ": unknown snapshot layout");
  snapshot snap;
  snap.stream_id = std::string{stream};
  if (!get(arr.ptr[1], snap.stream_version) || !get(arr.ptr[2], snap.snapshot_version)
      || !get(arr.ptr[3], snap.type) || !get(arr.ptr[4], snap.data) || !get(arr.ptr[5], snap.created_at))
    return make_error(store_errc::corrupt_record, where + ": field of the wrong type");
  return snap;
}

} // namespace sourcery::persistence::detail
