#pragma once

// The subject keys a store knows to be committed, so that sealing and
// opening personal fields (personal_data.hpp) costs no read per event. A
// key leaves it when its subject is forgotten, before the forget returns.

#include <mutex>
#include <shared_mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "personal_data.hpp"

namespace sourcery::persistence::detail {

class key_cache {
public:
  std::optional<subject_key> find(std::string_view subject) const {
    // Every sealed field asks: readers share the lock, and the subject is
    // looked up as it is, without a copy.
    std::shared_lock guard{mtx_};
    auto i = keys_.find(subject);
    if (i == keys_.end())
      return std::nullopt;
    return i->second;
  }

  void put(std::string subject, const subject_key& key) {
    std::unique_lock guard{mtx_};
    if (keys_.size() >= max_keys)
      keys_.clear(); // bounded: a store of millions of subjects reloads what it uses
    keys_.insert_or_assign(std::move(subject), key);
  }

  void drop(std::string_view subject) {
    std::unique_lock guard{mtx_};
    if (auto i = keys_.find(subject); i != keys_.end())
      keys_.erase(i);
  }

  void clear() {
    std::unique_lock guard{mtx_};
    keys_.clear();
  }

private:
  static constexpr size_t max_keys = 100'000;
  struct text_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  mutable std::shared_mutex mtx_;
  std::unordered_map<std::string, subject_key, text_hash, std::equal_to<>> keys_;
};

} // namespace sourcery::persistence::detail
