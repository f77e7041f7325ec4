#pragma once

// Another process that holds a read-model store open for writing (as a
// running application does) until the holder is destroyed or `release`d.

#include <csignal>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

#include "sourcery/persistence/projection_store.hpp"

namespace sourcery::testing {

class read_model_holder {
public:
  explicit read_model_holder(const std::string& path) {
    int ready[2];
    if (::pipe(ready) != 0)
      return;
    pid_ = ::fork();
    if (pid_ == 0) {
      persistence::projection_store_options po;
      po.path = path;
      auto models = persistence::projection_store::open(po);
      char c = models ? 'y' : 'n';
      (void)!::write(ready[1], &c, 1);
      ::pause();
      ::_exit(0);
    }
    char c = 0;
    holding_ = pid_ > 0 && ::read(ready[0], &c, 1) == 1 && c == 'y';
    ::close(ready[0]);
    ::close(ready[1]);
  }
  ~read_model_holder() { release(); }
  read_model_holder(const read_model_holder&) = delete;
  read_model_holder& operator=(const read_model_holder&) = delete;

  /// The child opened the store and holds it.
  bool holding() const { return holding_; }

  /// Ends the child (SIGKILL: its lock goes with it).
  void release() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

private:
  pid_t pid_ = -1;
  bool holding_ = false;
};

} // namespace sourcery::testing
