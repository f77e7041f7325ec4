#include "sourcery/persistence/uuid.hpp"

#include <chrono>
#include <random>

#include "sourcery/persistence/hex.hpp"

namespace sourcery::persistence {

namespace {
std::mt19937_64& generator() {
  thread_local std::mt19937_64 gen{[] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
    return std::mt19937_64{seq};
  }()};
  return gen;
}
} // namespace

uuid uuid::time_ordered() {
  auto id = random();
  auto ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count());
  for (size_t i = 0; i < 6; ++i)
    id.bytes[i] = static_cast<uint8_t>(ms >> (8 * (5 - i)));
  id.bytes[6] = static_cast<uint8_t>((id.bytes[6] & 0x0F) | 0x70); // version 7
  return id;
}

uuid uuid::random() {
  auto& gen = generator();
  uuid id;
  for (size_t i = 0; i < 16; i += 8) {
    auto x = gen();
    for (size_t j = 0; j < 8; ++j)
      id.bytes[i + j] = static_cast<uint8_t>(x >> (8 * j));
  }
  id.bytes[6] = static_cast<uint8_t>((id.bytes[6] & 0x0F) | 0x40); // version 4
  id.bytes[8] = static_cast<uint8_t>((id.bytes[8] & 0x3F) | 0x80); // variant 1
  return id;
}

std::optional<uuid> uuid::parse(std::string_view text) {
  if (text.size() != 36)
    return std::nullopt;
  uuid id;
  size_t out = 0;
  for (size_t i = 0; i < 36;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-')
        return std::nullopt;
      ++i;
      continue;
    }
    int hi = hex_value(text[i]);
    int lo = hex_value(text[i + 1]);
    if (hi < 0 || lo < 0)
      return std::nullopt;
    id.bytes[out++] = static_cast<uint8_t>(hi * 16 + lo);
    i += 2;
  }
  return id;
}

bool uuid::is_nil() const noexcept {
  for (auto b : bytes)
    if (b != 0)
      return false;
  return true;
}

std::string uuid::to_string() const {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      out += '-';
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 0x0F];
  }
  return out;
}

} // namespace sourcery::persistence
