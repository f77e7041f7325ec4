#pragma once

#include <cstdint>

namespace sourcery::persistence::detail {

/// Big-endian integers: LMDB keys sort as the numbers they encode.
inline void put_be64(uint8_t* p, uint64_t x) {
  for (int i = 7; i >= 0; --i, x >>= 8)
    p[i] = static_cast<uint8_t>(x);
}

inline uint64_t get_be64(const uint8_t* p) {
  uint64_t x = 0;
  for (int i = 0; i < 8; ++i)
    x = (x << 8) | p[i];
  return x;
}

inline void put_be16(uint8_t* p, uint16_t x) {
  p[0] = static_cast<uint8_t>(x >> 8);
  p[1] = static_cast<uint8_t>(x);
}

inline uint16_t get_be16(const uint8_t* p) {
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}

} // namespace sourcery::persistence::detail
