#include "shard_table.hpp"

#include "sourcery/persistence/personal.hpp"

#include "sourcery/runtime/cluster/placement.hpp"

namespace sourcery::cluster::detail {

shard_table::shard_table(std::string cluster, std::string owner, uint32_t shards, std::chrono::milliseconds lease_ttl)
  // A fifth of the ttl covers the renewal's own round trip and clock drift.
  : cluster_(std::move(cluster)), owner_(std::move(owner)), trust_(lease_ttl - lease_ttl / 5), slots_(shards) {}

void shard_table::set_owner(std::string owner) {
  std::lock_guard guard{mtx_};
  owner_ = std::move(owner);
}

std::string shard_table::owner() const {
  std::lock_guard guard{mtx_};
  return owner_;
}

uint32_t shard_table::shard_of(std::string_view stream) const noexcept {
  return cluster::shard_of(stream, shards());
}

persistence::fence_lease shard_table::lease_for(std::string_view stream) const {
  if (stream == forgotten_subjects_stream)
    return {"", 0, false};
  auto shard = shard_of(stream);
  std::lock_guard guard{mtx_};
  return {shard_lease(shard), slots_[shard].epoch};
}

std::string_view consumer_of_checkpoint(std::string_view name) noexcept {
  for (std::string_view kind : {"handler:", "process:"})
    if (name.substr(0, kind.size()) == kind)
      name.remove_prefix(kind.size());
  return name;
}

persistence::fence_lease shard_table::lease_for_checkpoint(std::string_view name) const {
  auto lease = handler_lease(consumer_of_checkpoint(name));
  std::lock_guard guard{mtx_};
  auto i = named_.find(lease);
  return {lease, i == named_.end() ? 0 : i->second.epoch};
}

void shard_table::held_named(const std::string& lease, int64_t epoch) {
  std::lock_guard guard{mtx_};
  named_[lease] = named_lease{epoch, clock::now()};
}

void shard_table::renewed_named(const std::string& lease, int64_t epoch, clock::time_point at) {
  std::lock_guard guard{mtx_};
  auto i = named_.find(lease);
  if (i != named_.end() && i->second.epoch == epoch && at > i->second.confirmed)
    i->second.confirmed = at;
}

bool shard_table::lost_named_if_confirmed_before(const std::string& lease, clock::time_point since) {
  std::lock_guard guard{mtx_};
  auto i = named_.find(lease);
  if (i == named_.end() || i->second.confirmed >= since)
    return false;
  named_.erase(i);
  return true;
}

std::vector<std::string> shard_table::named_leases() const {
  std::lock_guard guard{mtx_};
  std::vector<std::string> out;
  for (auto& [name, lease] : named_)
    out.push_back(name);
  return out;
}

void shard_table::lost_named(const std::string& lease) {
  std::lock_guard guard{mtx_};
  named_.erase(lease);
}

int64_t shard_table::epoch_named(const std::string& lease) const {
  std::lock_guard guard{mtx_};
  auto i = named_.find(lease);
  return i == named_.end() ? 0 : i->second.epoch;
}

bool shard_table::enter(uint32_t shard) {
  std::lock_guard guard{mtx_};
  auto& s = slots_[shard];
  if (s.epoch == 0 || s.releasing || clock::now() >= s.trusted_until)
    return false;
  ++s.in_flight;
  return true;
}

void shard_table::leave(uint32_t shard) {
  std::lock_guard guard{mtx_};
  --slots_[shard].in_flight;
}

void shard_table::held(uint32_t shard, int64_t epoch, clock::time_point renewed) {
  std::lock_guard guard{mtx_};
  auto& s = slots_[shard];
  if (s.epoch != epoch)
    s.releasing = false; // (re)acquired
  s.epoch = epoch;
  // Confirmed once the acquire answered (now): a renewal that began after
  // this saw the lease, one that began before may not have.
  s.confirmed = clock::now();
  s.trusted_until = renewed + trust_;
}

void shard_table::renewed(uint32_t shard, int64_t epoch, clock::time_point at) {
  std::lock_guard guard{mtx_};
  auto& s = slots_[shard];
  if (s.epoch != epoch || at <= s.confirmed)
    return;
  s.confirmed = at;
  s.trusted_until = at + trust_;
}

bool shard_table::lost_if_confirmed_before(uint32_t shard, clock::time_point since) {
  std::lock_guard guard{mtx_};
  auto& s = slots_[shard];
  if (s.epoch == 0 || s.confirmed >= since)
    return false;
  s.epoch = 0;
  s.releasing = false;
  s.trusted_until = {};
  return true;
}

void shard_table::lost(uint32_t shard) {
  std::lock_guard guard{mtx_};
  auto& s = slots_[shard];
  s.epoch = 0;
  s.releasing = false;
  s.trusted_until = {};
}

void shard_table::lose_all() {
  std::lock_guard guard{mtx_};
  for (auto& s : slots_) {
    s.epoch = 0;
    s.releasing = false;
    s.trusted_until = {};
  }
  named_.clear();
}

int64_t shard_table::epoch(uint32_t shard) const {
  std::lock_guard guard{mtx_};
  return slots_[shard].epoch;
}

std::vector<uint32_t> shard_table::held_shards() const {
  std::lock_guard guard{mtx_};
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < slots_.size(); ++i)
    if (slots_[i].epoch != 0)
      out.push_back(i);
  return out;
}

std::vector<std::string> shard_table::held_leases() const {
  std::lock_guard guard{mtx_};
  std::vector<std::string> out;
  for (uint32_t i = 0; i < slots_.size(); ++i)
    if (slots_[i].epoch != 0)
      out.push_back(shard_lease(i));
  for (auto& [name, lease] : named_)
    out.push_back(name);
  return out;
}

void shard_table::release(uint32_t shard) {
  std::lock_guard guard{mtx_};
  slots_[shard].releasing = true;
}

size_t shard_table::in_flight(uint32_t shard) const {
  std::lock_guard guard{mtx_};
  return slots_[shard].in_flight;
}

} // namespace sourcery::cluster::detail
