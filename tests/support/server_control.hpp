#pragma once

// The PostgreSQL server behind a URI, when this process may freeze, thaw,
// crash and restart it (on this machine, as its owner or root): for the
// chaos run and the cluster bench's store freeze. Its log is read where
// scripts/pg.sh puts it (server.log beside the data directory).

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "postgres.hpp"
#include "process_tree.hpp"

namespace sourcery::testing {

/// run_sql's value, or "" when the server cannot answer it (asked while a
/// fault may be under way: an answer is wanted, not an exception).
inline std::string query_value(const std::string& uri, const std::string& sql) {
  try {
    return run_sql(uri, sql);
  } catch (const std::exception&) {
    return {};
  }
}

/// The server behind a URI, when this process may freeze and restart it:
/// on this machine, signalled as its owner or root.
class server_control {
public:
  explicit server_control(const std::string& uri) {
    data_dir_ = query_value(uri, "SHOW data_directory");
    auto version = query_value(uri, "SHOW server_version_num");
    if (data_dir_.empty() || version.size() < 2) {
      why_not_ = "the server's data directory cannot be read";
      return;
    }
    std::ifstream pidfile{data_dir_ + "/postmaster.pid"};
    if (!(pidfile >> master_) || ::kill(master_, 0) != 0) {
      why_not_ = "the server is not on this machine, or not ours to signal (run as its owner or root)";
      master_ = 0;
      return;
    }
    pg_ctl_ = "/usr/lib/postgresql/" + std::to_string(std::stoi(version) / 10000) + "/bin/pg_ctl";
    struct stat st{};
    if (::stat(data_dir_.c_str(), &st) == 0)
      if (auto* pw = ::getpwuid(st.st_uid))
        owner_ = pw->pw_name;
    auto parent = data_dir_.substr(0, data_dir_.find_last_of('/'));
    log_ = parent + "/server.log"; // scripts/pg.sh's layout
  }
  bool can_signal() const { return master_ > 0; }
  bool can_restart() const { return master_ > 0 && ::access(pg_ctl_.c_str(), X_OK) == 0 && !owner_.empty(); }
  const std::string& why_not() const { return why_not_; }

  void freeze() { signal_process_tree(master_, SIGSTOP); }
  void thaw() { signal_process_tree(master_, SIGCONT); }
  /// A crash and a restart with the same options (postmaster.opts): true when it runs again.
  bool crash_and_restart() {
    std::string as = ::geteuid() == 0 && owner_ != "root" ? "runuser -u " + owner_ + " -- " : "";
    std::string cmd = as + pg_ctl_ + " restart -m immediate -w -t 60 -D '" + data_dir_ + "' -l '" + log_
                      + "' >/dev/null 2>&1";
    bool ok = std::system(cmd.c_str()) == 0;
    std::ifstream pidfile{data_dir_ + "/postmaster.pid"};
    pidfile >> master_;
    return ok;
  }
  int log_count(const std::string& text) const {
    std::ifstream log{log_};
    if (!log)
      return -1;
    int n = 0;
    for (std::string line; std::getline(log, line);)
      n += line.find(text) != std::string::npos;
    return n;
  }

private:
  std::string data_dir_, pg_ctl_, owner_, log_, why_not_;
  pid_t master_ = 0;
};

} // namespace sourcery::testing
