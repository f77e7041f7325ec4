#pragma once

// A scoped_actor that leaves nothing behind in its thread. CAF 0.17's
// scoped_actor (and an actor system's constructor) make the calling thread
// hold its actor system's logger in a thread_local, and ~actor_system waits
// until that logger is destroyed: a system stopped on another thread would
// wait for this one to exit. Applications are stopped on other threads than
// the ones that used them (a host of tenants stops them on its own).

#include <caf/logger.hpp>
#include <caf/scoped_actor.hpp>

namespace sourcery::detail {

/// Drops the calling thread's reference to an actor system's logger.
inline void release_thread_logger() noexcept {
  caf::logger::set_current_actor_system(nullptr);
}

class scoped_self {
public:
  explicit scoped_self(caf::actor_system& sys) : self_(sys) {}
  scoped_self(const scoped_self&) = delete;
  scoped_self& operator=(const scoped_self&) = delete;

  caf::blocking_actor* operator->() const noexcept { return self_.ptr(); }
  caf::scoped_actor& get() noexcept { return self_; }

private:
  struct release { // destroyed after `self_`
    ~release() { release_thread_logger(); }
  } release_;
  caf::scoped_actor self_;
};

} // namespace sourcery::detail
