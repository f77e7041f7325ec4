#pragma once

// A program run as a child process, for tests that need a real second
// process: its stdout is read line by line, and it can be killed.

#include <chrono>
#include <csignal>
#include <optional>
#include <thread>
#include <cstdio>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace sourcery::testing {

class child_process {
public:
  /// Starts `program` with `args`; its stdout comes through a pipe.
  /// `stderr_file`: where its stderr goes (default: this process's).
  child_process(const std::string& program, const std::vector<std::string>& args, const std::string& stderr_file = {}) {
    int fds[2];
    if (::pipe(fds) != 0)
      return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      if (!stderr_file.empty()) {
        int err = ::open(stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (err >= 0)
          ::dup2(err, STDERR_FILENO);
      }
      ::close(fds[0]);
      ::close(fds[1]);
      std::vector<char*> argv{const_cast<char*>(program.c_str())};
      for (auto& a : args)
        argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(program.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    out_ = ::fdopen(fds[0], "r");
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
    if (out_ != nullptr)
      ::fclose(out_);
  }

  /// The next line of its stdout (without the newline); "" at its end.
  std::string read_line() {
    std::string line;
    if (out_ == nullptr)
      return line;
    int c;
    while ((c = std::fgetc(out_)) != EOF && c != '\n')
      line += static_cast<char>(c);
    return line;
  }

  /// Everything it writes to stdout until it closes it (usually: exits).
  std::string read_all() {
    std::string out;
    int c;
    while (out_ != nullptr && (c = std::fgetc(out_)) != EOF)
      out += static_cast<char>(c);
    return out;
  }

  void signal(int sig) { ::kill(pid_, sig); }

  /// Waits for it to end; its exit status (128 + signal when killed).
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  /// Its exit status if it ends within `limit` (reaped), else nullopt.
  std::optional<int> wait_for(std::chrono::milliseconds limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() >= until)
        return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
  }

  pid_t pid() const { return pid_; }

private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
  bool reaped_ = false;
};

} // namespace sourcery::testing
