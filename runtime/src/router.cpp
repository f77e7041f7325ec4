#include "sourcery/runtime/router.hpp"

#include <cxxabi.h>

namespace sourcery {

std::string demangled_name(const char* mangled) {
  int status = 0;
  char* name = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string out = status == 0 && name != nullptr ? name : mangled;
  std::free(name);
  return out;
}

std::string demangled_name(const std::type_info& type) {
  return demangled_name(type.name());
}

void router::insert(std::type_index key, entry e) {
  if (auto i = routes_.find(key); i != routes_.end()) {
    conflicts_.push_back(e.command_name + " is routed to both " + i->second.aggregate_name + " and " + e.aggregate_name);
    return;
  }
  routes_.emplace(key, std::move(e));
}

router& router::include(const router& other) {
  for (const auto& [key, e] : other.routes_)
    insert(key, e);
  for (const auto& c : other.conflicts_)
    conflicts_.push_back(c);
  return *this;
}

} // namespace sourcery
