#include "lmdb_path_claim.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <map>
#include <mutex>

#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::detail {

namespace {

enum class held : bool { open, abandoned };

std::mutex claims_mtx;
std::map<std::string, held, std::less<>> claims;

} // namespace

caf::expected<path_claim> path_claim::take(const std::string& dir, const std::string& what, bool writer) {
  std::error_code ec;
  auto canonical = std::filesystem::canonical(dir, ec);
  if (ec)
    return make_error(store_errc::io_error, what + ": cannot resolve " + dir + ": " + ec.message());
  std::lock_guard guard{claims_mtx};
  auto [at, fresh] = claims.emplace(canonical.string(), held::open);
  if (fresh) {
    path_claim claim{at->first};
    if (!writer)
      return claim;
    // On the directory itself, not on lock.mdb: closing any descriptor of
    // lock.mdb would drop LMDB's own POSIX locks on it.
    claim.lock_fd_ = ::open(at->first.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (claim.lock_fd_ < 0) {
      auto why = std::string{std::strerror(errno)};
      claims.erase(at);
      claim.path_.clear();
      return make_error(store_errc::io_error, what + ": cannot open " + dir + ": " + why);
    }
    if (::flock(claim.lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      auto busy = errno == EWOULDBLOCK;
      auto why = std::string{std::strerror(errno)};
      claims.erase(at);
      claim.path_.clear();
      return busy ? make_error(store_errc::store_in_use,
                               what + ": " + dir
                                 + " is open for writing in another process (one writing process per store; "
                                   "read-only tools may run beside it)")
                  : make_error(store_errc::io_error, what + ": cannot lock " + dir + ": " + why);
    }
    return claim;
  }
  if (at->second == held::abandoned)
    return make_error(store_errc::invalid_argument,
                      what + ": " + dir
                        + " was left open in this process after a fault on a damaged page and cannot be opened "
                          "again until the process restarts; check it with `sourcery verify`");
  return make_error(store_errc::invalid_argument,
                    what + ": " + dir + " is already open in this process; share that store instead");
}

path_claim::path_claim(path_claim&& other) noexcept
  : path_(std::move(other.path_)), lock_fd_(std::exchange(other.lock_fd_, -1)) {
  other.path_.clear();
}

path_claim& path_claim::operator=(path_claim&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    other.path_.clear();
    lock_fd_ = std::exchange(other.lock_fd_, -1);
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
  lock_fd_ = -1; // stays locked: the environment is still open
}

void path_claim::release() {
  if (lock_fd_ >= 0)
    ::close(std::exchange(lock_fd_, -1)); // ends the flock
  if (path_.empty())
    return;
  std::lock_guard guard{claims_mtx};
  claims.erase(path_);
  path_.clear();
}

} // namespace sourcery::persistence::detail
