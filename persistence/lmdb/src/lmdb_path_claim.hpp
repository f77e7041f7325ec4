#pragma once

#include <string>

#include <caf/expected.hpp>

namespace sourcery::persistence::detail {

/// The claim of one open LMDB environment on its directory. LMDB forbids
/// opening an environment twice in one process: its locks belong to the
/// process, so closing the second copy would drop the first one's.
class path_claim {
public:
  /// Claims `dir` (canonicalised, so two spellings of one directory
  /// collide); `what` names the store in the error when it is already held.
  /// A `writer` also takes an exclusive lock on the directory for the
  /// process (flock; released when the claim is, or the process dies), so a
  /// second writing process is refused with store_in_use instead of both
  /// writing. Readers (the operator's tools) take no lock.
  static caf::expected<path_claim> take(const std::string& dir, const std::string& what, bool writer);

  path_claim() = default;
  path_claim(path_claim&& other) noexcept;
  path_claim& operator=(path_claim&& other) noexcept;
  path_claim(const path_claim&) = delete;
  path_claim& operator=(const path_claim&) = delete;
  ~path_claim();

  const std::string& path() const { return path_; }

  /// The environment was abandoned after a fault and stays open until the
  /// process exits: the path stays claimed, and a later open says why.
  void keep_forever();

private:
  explicit path_claim(std::string path) : path_(std::move(path)) {}
  void release();

  std::string path_;
  int lock_fd_ = -1; // the directory, flock'ed by a writer
};

} // namespace sourcery::persistence::detail
