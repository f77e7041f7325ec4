#include "frame_limit.hpp"

#include <atomic>
#include <cstdlib>
#include <utility>

#include <dlfcn.h>

#include <caf/io/network/stream.hpp>
#include <caf/io/receive_policy.hpp>

#include "sourcery/actors/aggregates/command_envelope.hpp"
#include "sourcery/actors/aggregates/command_result.hpp"
#include "sourcery/runtime/cluster/cluster_settings.hpp"

namespace sourcery::cluster::detail {

using sourcery::cluster::default_max_frame_bytes;

namespace {

std::atomic<size_t> limit{default_max_frame_bytes};
std::atomic<uint64_t> refused{0};

// caf::io::network::stream::configure_read(receive_policy::config), mangled.
constexpr const char* configure_read_symbol =
  "_ZN3caf2io7network6stream14configure_readESt4pairINS0_19receive_policy_flagEmE";

using configure_read_fn = void (*)(caf::io::network::stream*, caf::io::receive_policy::config);

/// CAF's own definition: the next one after this program's.
configure_read_fn caf_configure_read() {
  static const auto fn = reinterpret_cast<configure_read_fn>(dlsym(RTLD_NEXT, configure_read_symbol));
  return fn;
}

// Per element of a sequence and per field: CAF writes lengths and integers
// in at most this many bytes.
constexpr size_t overhead = 16;

size_t strings(std::initializer_list<size_t> sizes) {
  size_t n = 0;
  for (auto s : sizes)
    n += s + overhead;
  return n;
}

} // namespace

void set_frame_limit(size_t bytes) { limit.store(bytes, std::memory_order_relaxed); }

size_t frame_limit() { return limit.load(std::memory_order_relaxed); }

uint64_t frames_refused() { return refused.load(std::memory_order_relaxed); }

bool frame_limit_active() {
  auto first = dlsym(RTLD_DEFAULT, configure_read_symbol);
  return first != nullptr && caf_configure_read() != nullptr && first != reinterpret_cast<void*>(caf_configure_read());
}

caf::error too_large(const std::string& what, size_t size) {
  return make_error(dispatch_errc::too_large, what + " is about " + std::to_string(size)
                                                + " bytes: more than a link between nodes carries (half of"
                                                  " max_frame_bytes, "
                                                + std::to_string(frame_limit()) + ")");
}

size_t wire_size(const command_envelope& e) {
  return strings({e.aggregate_type.size(), e.stream_id.size(), e.command_type.size(), e.payload.size(),
                  e.metadata.size(), e.causation_id.size(), e.correlation_id.size(), e.tenant.size()})
         + 4 * overhead;
}

size_t wire_size(const dispatch_result& r) {
  size_t n = strings({r.why.reason.size(), r.why.message.size(), r.aggregate_id.size(), r.state.size()}) + 8 * overhead;
  for (auto& e : r.events)
    n += strings({e.stream_id.size(), e.type.size(), e.data.size(), e.metadata.size(), e.causation_id.size(),
                  e.correlation_id.size()})
         + 8 * overhead;
  return n;
}

} // namespace sourcery::cluster::detail

// This program's definition of CAF's (see frame_limit.hpp): the same
// contract, with exact reads above the limit cut to one byte.
void caf::io::network::stream::configure_read(caf::io::receive_policy::config config) {
  using namespace sourcery::cluster::detail;
  if (config.first == caf::io::receive_policy_flag::exactly && config.second > limit.load(std::memory_order_relaxed)) {
    refused.fetch_add(1, std::memory_order_relaxed);
    config.second = 1;
  }
  if (auto caf_own = caf_configure_read())
    return caf_own(this, config);
  std::abort(); // CAF's definition is not there to call: no stream can read
}
