#include "progress_meter.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <unistd.h>

#include "tool_output.hpp"

namespace sourcery::tool {

namespace {

using clock = std::chrono::steady_clock;

std::string duration_text(double seconds) {
  auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  return buf;
}

} // namespace

progress_meter::progress_meter(std::string what, std::string unit)
  : what_(std::move(what)), unit_(std::move(unit)), terminal_(on_terminal()), start_(clock::now()), last_(start_) {
  every_ = std::chrono::milliseconds{terminal_ ? 100 : 1000};
  if (const char* ms = std::getenv("SOURCERY_PROGRESS_EVERY_MS"))
    every_ = std::chrono::milliseconds{std::strtol(ms, nullptr, 10)};
}

bool progress_meter::on_terminal() {
  if (const char* mode = std::getenv("SOURCERY_PROGRESS"))
    return std::strcmp(mode, "bar") == 0;
  return ::isatty(STDERR_FILENO) == 1;
}

std::string progress_meter::line(uint64_t done, uint64_t total, bool bar) const {
  double elapsed = std::chrono::duration<double>(clock::now() - start_).count();
  double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
  // Appends only: g++ 12 at -O3 reports a false -Wrestrict on chains of
  // string concatenation (a known GCC bug), which -Werror makes fatal.
  std::string out = what_;
  out.append(": ");
  if (bar && total > 0) {
    constexpr int width = 30;
    int filled = static_cast<int>(width * std::min(1.0, static_cast<double>(done) / static_cast<double>(total)));
    out.append("[").append(static_cast<size_t>(filled), '#').append(static_cast<size_t>(width - filled), '.');
    out.append("] ");
  }
  out.append(grouped(done));
  if (total > 0) {
    char pct[16];
    std::snprintf(pct, sizeof pct, " (%.0f%%)", 100.0 * static_cast<double>(done) / static_cast<double>(total));
    out.append("/").append(grouped(total)).append(" ").append(unit_).append(pct);
  } else {
    out.append(" ").append(unit_);
  }
  out.append(", ").append(grouped(static_cast<uint64_t>(rate))).append(" ").append(unit_).append("/s");
  if (total > done && rate > 0)
    out.append(", ETA ").append(duration_text(static_cast<double>(total - done) / rate));
  return out;
}

void progress_meter::update(uint64_t done, uint64_t total) {
  auto now = clock::now();
  // A terminal redraws ten times a second; a log gets a line a second.
  // SOURCERY_PROGRESS_EVERY_MS overrides (tests use 0: every update).
  auto every = every_;
  if (shown_ && now - last_ < every)
    return;
  if (!shown_ && now - start_ < 2 * every)
    return; // quick operations print only their final line
  last_ = now;
  shown_ = true;
  if (terminal_)
    std::fprintf(stderr, "\r\033[K%s", line(done, total, true).c_str());
  else
    std::fprintf(stderr, "%s\n", line(done, total, false).c_str());
  std::fflush(stderr);
}

void progress_meter::finish(uint64_t done) {
  double elapsed = std::chrono::duration<double>(clock::now() - start_).count();
  if (terminal_ && shown_)
    std::fprintf(stderr, "\r\033[K");
  std::fprintf(stderr, "%s: done, %s %s in %.1f s\n", what_.c_str(), grouped(done).c_str(), unit_.c_str(), elapsed);
  std::fflush(stderr);
}

} // namespace sourcery::tool
