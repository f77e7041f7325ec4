#pragma once

// Whether a secret reached the disk: a byte search through every file under
// a folder (the stores' files, read models, anything beside them).

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

namespace sourcery::testing {

/// Whether any regular file under `dir` holds the bytes `needle`.
inline bool files_hold(const std::filesystem::path& dir, std::string_view needle) {
  for (auto& f : std::filesystem::recursive_directory_iterator{dir}) {
    if (!f.is_regular_file())
      continue;
    std::ifstream in{f.path(), std::ios::binary};
    std::string bytes{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
    if (bytes.find(needle) != std::string::npos)
      return true;
  }
  return false;
}

} // namespace sourcery::testing
