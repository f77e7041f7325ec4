#pragma once

// Progress of a long operation on stderr: on a terminal, one bar redrawn in
// place with rate and ETA; otherwise (a log, a pipe) a plain line now and
// then, so logs stay readable.

#include <chrono>
#include <cstdint>
#include <string>

namespace sourcery::tool {

class progress_meter {
public:
  /// `what` names the operation ("verify"), `unit` what is counted ("events").
  progress_meter(std::string what, std::string unit);
  /// Whether stderr is a terminal (tests force lines with SOURCERY_PROGRESS=lines).
  static bool on_terminal();

  void update(uint64_t done, uint64_t total);
  /// The final line, with the totals.
  void finish(uint64_t done);

private:
  std::string line(uint64_t done, uint64_t total, bool bar) const;

  std::string what_, unit_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_, last_;
  std::chrono::milliseconds every_;
  bool shown_ = false;
};

} // namespace sourcery::tool
