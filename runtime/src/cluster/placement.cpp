#include "sourcery/runtime/cluster/placement.hpp"

#include <algorithm>
#include <string>
#include <tuple>

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

std::vector<std::string> place_shards(const std::vector<std::string>& members, uint32_t shards) {
  std::vector<std::string> out(shards);
  std::vector<std::string> ms = members;
  std::sort(ms.begin(), ms.end());
  ms.erase(std::unique(ms.begin(), ms.end()), ms.end());
  if (ms.empty())
    return out;
  // Every (member, shard) pair by weight, the heaviest first; a pair
  // places its shard when the shard is still free and the member below
  // its cap. Ties go to the smaller shard, then the smaller name.
  const size_t cap = (shards + ms.size() - 1) / ms.size();
  std::vector<std::tuple<uint64_t, uint32_t, uint32_t>> pairs; // weight, shard, member index
  pairs.reserve(static_cast<size_t>(shards) * ms.size());
  for (uint32_t s = 0; s < shards; ++s)
    for (uint32_t m = 0; m < ms.size(); ++m)
      pairs.emplace_back(weight(ms[m], s), s, m);
  std::sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) {
    if (std::get<0>(a) != std::get<0>(b))
      return std::get<0>(a) > std::get<0>(b);
    if (std::get<1>(a) != std::get<1>(b))
      return std::get<1>(a) < std::get<1>(b);
    return std::get<2>(a) < std::get<2>(b);
  });
  std::vector<size_t> load(ms.size(), 0);
  uint32_t left = shards;
  for (auto& [w, s, m] : pairs) {
    if (!out[s].empty() || load[m] >= cap)
      continue;
    out[s] = ms[m];
    ++load[m];
    if (--left == 0)
      break;
  }
  return out;
}

std::vector<uint32_t> shards_of(const std::string& member, const std::vector<std::string>& members, uint32_t shards) {
  std::vector<uint32_t> out;
  auto owners = place_shards(members, shards);
  for (uint32_t s = 0; s < shards; ++s)
    if (owners[s] == member)
      out.push_back(s);
  return out;
}

} // namespace sourcery::cluster
