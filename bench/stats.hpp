#pragma once

// Figures the benchmark suites share.

#include <algorithm>
#include <vector>

namespace sourcery::bench {

/// The `p`-quantile (0..1) of `xs` by nearest rank; 0 without samples.
inline double percentile(std::vector<double> xs, double p) {
  std::sort(xs.begin(), xs.end());
  return xs.empty() ? 0 : xs[std::min(xs.size() - 1, static_cast<size_t>(p * static_cast<double>(xs.size())))];
}

} // namespace sourcery::bench
