#pragma once

#include <cstddef>
#include <cstdint>

namespace sourcery::persistence::detail {

/// CRC-32C (Castagnoli) of `n` bytes, used to detect damaged records.
uint32_t crc32c(const uint8_t* data, size_t n) noexcept;

} // namespace sourcery::persistence::detail
