#pragma once

// Signals a process and the processes it started (their parent is it), as
// fault tests and the cluster bench freeze or thaw a PostgreSQL server: its
// postmaster and every backend.

#include <dirent.h>
#include <signal.h>
#include <sys/types.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace sourcery::testing {

/// Sends `sig` to `parent`, then to each process whose parent it is.
/// False if `parent` could not be signalled (gone, or not ours to signal).
inline bool signal_process_tree(pid_t parent, int sig) {
  if (parent <= 0 || ::kill(parent, sig) != 0)
    return false;
  if (DIR* d = ::opendir("/proc")) {
    while (auto* e = ::readdir(d)) {
      pid_t pid = std::atoi(e->d_name);
      if (pid <= 0)
        continue;
      std::ifstream stat{std::string{"/proc/"} + e->d_name + "/stat"};
      std::string all;
      std::getline(stat, all);
      auto close = all.rfind(')'); // the command name may hold spaces and parentheses
      if (close == std::string::npos || close + 2 > all.size())
        continue;
      std::istringstream rest{all.substr(close + 2)};
      char state;
      pid_t ppid = 0;
      rest >> state >> ppid;
      if (ppid == parent)
        ::kill(pid, sig);
    }
    ::closedir(d);
  }
  return true;
}

} // namespace sourcery::testing
