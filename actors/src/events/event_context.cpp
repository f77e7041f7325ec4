#include "sourcery/actors/events/event_context.hpp"

#include <algorithm>

namespace sourcery {

stream_prefixes::stream_prefixes(std::vector<std::string> prefixes) : prefixes_(std::move(prefixes)) {
  std::erase_if(prefixes_, [](const std::string& p) { return p.empty(); });
  std::sort(prefixes_.begin(), prefixes_.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
}

uint32_t stream_prefixes::prefix_length(std::string_view stream_id) const noexcept {
  for (const auto& p : prefixes_)
    if (stream_id.size() > p.size() && stream_id.compare(0, p.size(), p) == 0)
      return static_cast<uint32_t>(p.size());
  return 0;
}

} // namespace sourcery
