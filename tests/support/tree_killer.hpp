#pragma once

// Kills a child of an application's root supervisor, again at each restart,
// until the root gives up (its restart intensity) or `rounds` kills are done.

#include <chrono>
#include <string>
#include <thread>

#include "sourcery/runtime/application.hpp"

namespace sourcery::testing {

inline void kill_until_tree_fails(application& app, const std::string& child_id, int rounds = 12) {
  for (int i = 0; i < rounds && !app.failure(); ++i) {
    auto kids = app.root().which_children();
    if (!kids)
      return; // the root is gone
    for (auto& k : *kids) {
      if (k.id != child_id || !k.actor)
        continue;
      caf::anon_send_exit(k.actor, caf::exit_reason::kill);
      for (int w = 0; w < 200; ++w) { // until its restart is under way
        auto again = app.root().which_children();
        if (!again)
          return;
        bool replaced = false;
        for (auto& a : *again)
          if (a.id == k.id && a.actor && a.actor != k.actor)
            replaced = true;
        if (replaced)
          break;
        std::this_thread::sleep_for(std::chrono::milliseconds{2});
      }
    }
  }
}

} // namespace sourcery::testing
