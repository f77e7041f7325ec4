#pragma once

// A tmpfs of a few megabytes mounted on a fresh directory, for tests of a
// full disk (ENOSPC) through real system calls. Needs root (tests and CI
// run as root): a test that cannot mount fails and says why, it does not
// skip.

#include <sys/mount.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "temp_dir.hpp"

namespace sourcery::testing {

class small_filesystem {
public:
  explicit small_filesystem(size_t megabytes = 8) {
    auto opts = "size=" + std::to_string(megabytes) + "m";
    if (::mount("tmpfs", dir_.str().c_str(), "tmpfs", 0, opts.c_str()) != 0)
      error_ = std::string{"cannot mount a tmpfs on "} + dir_.str() + " (run the tests as root): " + std::strerror(errno);
    else
      mounted_ = true;
  }
  ~small_filesystem() {
    if (mounted_)
      ::umount2(dir_.str().c_str(), MNT_DETACH);
  }
  small_filesystem(const small_filesystem&) = delete;
  small_filesystem& operator=(const small_filesystem&) = delete;

  /// Empty when mounted, else why not.
  const std::string& error() const { return error_; }
  std::filesystem::path operator/(const std::string& name) const { return dir_ / name; }
  std::string str() const { return dir_.str(); }

  /// Fills every free byte with a file of its own (`free_filler` gives the
  /// space back).
  void fill() {
    int fd = ::open((dir_ / "filler").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
      return;
    static char block[4096] = {};
    for (size_t chunk = sizeof block; chunk > 0;) {
      if (::write(fd, block, chunk) < 0)
        chunk /= 2; // down to the last byte
    }
    ::close(fd);
  }
  void free_filler() { ::unlink((dir_ / "filler").c_str()); }

private:
  temp_dir dir_;
  bool mounted_ = false;
  std::string error_;
};

} // namespace sourcery::testing
