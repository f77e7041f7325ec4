#include "record_codec.hpp"

#include <cstring>

#include <msgpack.hpp>

#include "crc32c.hpp"
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

/// Checks the trailing CRC and unpacks the array in front of it.
caf::expected<msgpack::object_handle> unpack_checked(const uint8_t* data, size_t size,
                                                     const std::string& where) {
  if (size < 5)
    return make_error(store_errc::corrupt_record, where + ": truncated (" + std::to_string(size) + " bytes)");
  size_t body = size - 4;
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i)
    stored |= uint32_t{data[body + i]} << (8 * i);
  if (crc32c(data, body) != stored)
    return make_error(store_errc::corrupt_record, where + ": checksum mismatch");
  try {
    size_t off = 0;
    auto oh = msgpack::unpack(reinterpret_cast<const char*>(data), body, off, nullptr, nullptr,
                              msgpack::unpack_limit(msgpack_limits::array, msgpack_limits::map,
                                                    msgpack_limits::str, msgpack_limits::bin,
                                                    msgpack_limits::ext, msgpack_limits::depth));
    if (off != body || oh.get().type != msgpack::type::ARRAY)
      return make_error(store_errc::corrupt_record, where + ": not a record");
    return oh;
  } catch (const std::exception& e) {
    return make_error(store_errc::corrupt_record, where + ": " + e.what());
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
bool get(const msgpack::object& o, uuid& x) {
  if (o.type != msgpack::type::BIN || o.via.bin.size != 16) return false;
  std::memcpy(x.bytes.data(), o.via.bin.ptr, 16);
  return true;
}

} // namespace

namespace {

void encode_fields(const uuid& id, std::string_view stream, uint64_t version, std::string_view type,
                   uint32_t schema_version, const bytes& data, const bytes& metadata,
                   std::string_view causation, std::string_view correlation, int64_t created_at,
                   bytes& out) {
  size_t start = out.size();
  out.reserve(start + data.size() + metadata.size() + stream.size() + type.size()
              + causation.size() + correlation.size() + 64);
  vector_writer w{out};
  msgpack::packer<vector_writer> pk{w};
  pk.pack_array(11);
  pk.pack_uint8(record_layout);
  pk.pack_bin(16);
  pk.pack_bin_body(reinterpret_cast<const char*>(id.bytes.data()), 16);
  pk.pack_str(static_cast<uint32_t>(stream.size()));
  pk.pack_str_body(stream.data(), static_cast<uint32_t>(stream.size()));
  pk.pack_uint64(version);
  pk.pack_str(static_cast<uint32_t>(type.size()));
  pk.pack_str_body(type.data(), static_cast<uint32_t>(type.size()));
  pk.pack_uint32(schema_version);
  pack_bin(pk, data);
  pack_bin(pk, metadata);
  pk.pack_str(static_cast<uint32_t>(causation.size()));
  pk.pack_str_body(causation.data(), static_cast<uint32_t>(causation.size()));
  pk.pack_str(static_cast<uint32_t>(correlation.size()));
  pk.pack_str_body(correlation.data(), static_cast<uint32_t>(correlation.size()));
  pk.pack_int64(created_at);
  append_crc(out, start);
}

} // namespace

void encode_record(const recorded_event& ev, bytes& out) {
  encode_fields(ev.event_id, ev.stream_id, ev.stream_version, ev.type, ev.schema_version, ev.data,
                ev.metadata, ev.causation_id, ev.correlation_id, ev.created_at, out);
}

void encode_record(const event_data& ev, std::string_view stream, uint64_t stream_version,
                   int64_t created_at, bytes& out) {
  encode_fields(ev.event_id, stream, stream_version, ev.type, ev.schema_version, ev.data,
                ev.metadata, ev.causation_id, ev.correlation_id, created_at, out);
}

caf::expected<recorded_event> decode_record(const uint8_t* data, size_t size, uint64_t position) {
  auto where = "event at position " + std::to_string(position);
  auto oh = unpack_checked(data, size, where);
  if (!oh)
    return oh.error();
  const auto& arr = oh->get().via.array;
  uint64_t layout = 0;
  if (arr.size < 11 || !get(arr.ptr[0], layout) || layout != record_layout)
    return make_error(store_errc::corrupt_record, where + ": unknown record layout");
  recorded_event ev;
  ev.position = position;
  if (!get(arr.ptr[1], ev.event_id) || !get(arr.ptr[2], ev.stream_id)
      || !get(arr.ptr[3], ev.stream_version) || !get(arr.ptr[4], ev.type)
      || !get(arr.ptr[5], ev.schema_version) || !get(arr.ptr[6], ev.data)
      || !get(arr.ptr[7], ev.metadata) || !get(arr.ptr[8], ev.causation_id)
      || !get(arr.ptr[9], ev.correlation_id) || !get(arr.ptr[10], ev.created_at))
    return make_error(store_errc::corrupt_record, where + ": field of the wrong type");
  return ev;
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
  auto oh = unpack_checked(data, size, where);
  if (!oh)
    return oh.error();
  const auto& arr = oh->get().via.array;
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
