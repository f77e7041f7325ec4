#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "big_endian.hpp"
#include "sourcery/persistence/event.hpp"

namespace sourcery::persistence::detail {

/// Reads the few msgpack forms our own record layout uses, in place and
/// without allocating, for the hot read path (msgpack-c's generic parser
/// builds an object tree and allocates its stacks per call). Every read
/// checks the bounds; after a failed read `ok()` is false and later reads
/// fail too, so callers check once at the end.
class msgpack_reader {
public:
  msgpack_reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}

  bool ok() const { return ok_; }
  bool at_end() const { return p_ == end_; }

  /// An array header; its element count.
  uint32_t array() {
    uint8_t b = byte();
    if ((b & 0xF0) == 0x90)
      return b & 0x0F;
    if (b == 0xDC)
      return static_cast<uint32_t>(be(2));
    if (b == 0xDD)
      return static_cast<uint32_t>(be(4));
    return fail();
  }

  /// A non-negative integer of any width.
  uint64_t uint() {
    uint8_t b = byte();
    if (b <= 0x7F)
      return b;
    switch (b) {
    case 0xCC: return be(1);
    case 0xCD: return be(2);
    case 0xCE: return be(4);
    case 0xCF: return be(8);
    default: return fail();
    }
  }

  /// A string, as a view into the input.
  std::string_view str() {
    uint8_t b = byte();
    size_t n = 0;
    if ((b & 0xE0) == 0xA0)
      n = b & 0x1F;
    else if (b == 0xD9)
      n = be(1);
    else if (b == 0xDA)
      n = be(2);
    else if (b == 0xDB)
      n = be(4);
    else
      return fail(), std::string_view{};
    return view(n);
  }

  /// A binary, as a view into the input.
  std::string_view bin() {
    uint8_t b = byte();
    size_t n = 0;
    if (b == 0xC4)
      n = be(1);
    else if (b == 0xC5)
      n = be(2);
    else if (b == 0xC6)
      n = be(4);
    else
      return fail(), std::string_view{};
    return view(n);
  }

  void str(std::string& out) {
    auto v = str();
    out.assign(v.data(), v.size());
  }

  void bin(bytes& out) {
    auto v = bin();
    out.assign(reinterpret_cast<const uint8_t*>(v.data()), reinterpret_cast<const uint8_t*>(v.data()) + v.size());
  }

private:
  uint32_t fail() {
    ok_ = false;
    p_ = end_;
    return 0;
  }
  uint8_t byte() {
    if (p_ == end_)
      return static_cast<uint8_t>(fail());
    return *p_++;
  }
  uint64_t be(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n)
      return fail();
    uint64_t x = 0;
    for (size_t i = 0; i < n; ++i)
      x = x << 8 | p_[i];
    p_ += n;
    return x;
  }
  std::string_view view(size_t n) {
    if (!ok_ || static_cast<size_t>(end_ - p_) < n)
      return fail(), std::string_view{};
    std::string_view v{reinterpret_cast<const char*>(p_), n};
    p_ += n;
    return v;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  bool ok_ = true;
};

} // namespace sourcery::persistence::detail
