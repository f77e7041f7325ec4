#include "sourcery/runtime/cluster/placement.hpp"

#include <string>

namespace sourcery::cluster {

uint64_t stable_hash(std::string_view bytes) noexcept {
  uint64_t h = 14695981039346656037ull; // FNV offset basis
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull; // FNV prime
  }
  return h;
}

uint32_t shard_of(std::string_view stream_id, uint32_t shards) noexcept {
  return shards == 0 ? 0 : static_cast<uint32_t>(stable_hash(stream_id) % shards);
}

namespace {

/// A well-mixed weight of (member, shard): FNV of the member, mixed with
/// the shard by splitmix64's finalizer, so near-equal names spread.
uint64_t weight(std::string_view member, uint32_t shard) noexcept {
  uint64_t x = stable_hash(member) ^ (0x9e3779b97f4a7c15ull * (static_cast<uint64_t>(shard) + 1));
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

} // namespace

std::optional<std::string> owner_of(uint32_t shard, const std::vector<std::string>& members) {
  const std::string* best = nullptr;
  uint64_t best_weight = 0;
  for (const auto& m : members) {
    auto w = weight(m, shard);
    // Ties (astronomically rare) go to the smaller name: the same everywhere.
    if (best == nullptr || w > best_weight || (w == best_weight && m < *best)) {
      best = &m;
      best_weight = w;
    }
  }
  if (best == nullptr)
    return std::nullopt;
  return *best;
}

std::string shard_lease(uint32_t shard) {
  return "shard:" + std::to_string(shard);
}

std::string handler_lease(std::string_view handler) {
  return "handler:" + std::string{handler};
}

std::vector<uint32_t> shards_of(const std::string& member, const std::vector<std::string>& members, uint32_t shards) {
  std::vector<uint32_t> out;
  for (uint32_t s = 0; s < shards; ++s)
    if (auto o = owner_of(s, members); o && *o == member)
      out.push_back(s);
  return out;
}

} // namespace sourcery::cluster
