#include "sourcery/runtime/commands/dispatcher.hpp"

namespace sourcery {

dispatcher::~dispatcher() = default;

caf::error dispatcher::late_timeout(std::chrono::milliseconds waited) {
  return make_error(dispatch_errc::timeout, "no answer within " + std::to_string(waited.count()) + " ms");
}

} // namespace sourcery
