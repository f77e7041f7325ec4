#pragma once

// The subject keys a store knows to be committed, so that sealing and
// opening personal fields (personal_data.hpp) costs no read per event. A
// key leaves it when its subject is forgotten, before the forget returns.

#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "personal_data.hpp"

namespace sourcery::persistence::detail {

class key_cache {
public:
  std::optional<subject_key> find(std::string_view subject) const {
    std::lock_guard guard{mtx_};
    auto i = keys_.find(std::string{subject});
    if (i == keys_.end())
      return std::nullopt;
    return i->second;
  }

  void put(std::string subject, const subject_key& key) {
    std::lock_guard guard{mtx_};
    if (keys_.size() >= max_keys)
      keys_.clear(); // bounded: a store of millions of subjects reloads what it uses
    keys_.insert_or_assign(std::move(subject), key);
  }

  void drop(std::string_view subject) {
    std::lock_guard guard{mtx_};
    keys_.erase(std::string{subject});
  }

  void clear() {
    std::lock_guard guard{mtx_};
    keys_.clear();
  }

private:
  static constexpr size_t max_keys = 100'000;
  mutable std::mutex mtx_;
  std::unordered_map<std::string, subject_key> keys_;
};

} // namespace sourcery::persistence::detail
