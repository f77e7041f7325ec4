#include "lmdb_path_claim.hpp"

#include <filesystem>
#include <map>
#include <mutex>

#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::detail {

namespace {

enum class held : bool { open, abandoned };

std::mutex claims_mtx;
std::map<std::string, held, std::less<>> claims;

} // namespace

caf::expected<path_claim> path_claim::take(const std::string& dir, const std::string& what) {
  std::error_code ec;
  auto canonical = std::filesystem::canonical(dir, ec);
  if (ec)
    return make_error(store_errc::io_error, what + ": cannot resolve " + dir + ": " + ec.message());
  std::lock_guard guard{claims_mtx};
  auto [at, fresh] = claims.emplace(canonical.string(), held::open);
  if (fresh)
    return path_claim{at->first};
  if (at->second == held::abandoned)
    return make_error(store_errc::invalid_argument,
                      what + ": " + dir
                        + " was left open in this process after a fault on a damaged page and cannot be opened "
                          "again until the process restarts; check it with `sourcery verify`");
  return make_error(store_errc::invalid_argument,
                    what + ": " + dir + " is already open in this process; share that store instead");
}

path_claim::path_claim(path_claim&& other) noexcept : path_(std::move(other.path_)) {
  other.path_.clear();
}

path_claim& path_claim::operator=(path_claim&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

path_claim::~path_claim() {
  release();
}

void path_claim::keep_forever() {
  if (path_.empty())
    return;
  std::lock_guard guard{claims_mtx};
  claims[path_] = held::abandoned;
  path_.clear();
}

void path_claim::release() {
  if (path_.empty())
    return;
  std::lock_guard guard{claims_mtx};
  claims.erase(path_);
  path_.clear();
}

} // namespace sourcery::persistence::detail
