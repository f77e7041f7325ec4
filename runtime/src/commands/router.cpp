#include "sourcery/runtime/commands/router.hpp"

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

void router::insert(detail::command_route r) {
  if (auto i = commands_.find(r.command_name); i != commands_.end()) {
    if (i->second.type != r.type)
      conflicts_.push_back("two command types are named " + r.command_name);
    else
      conflicts_.push_back(r.command_name + " is routed to both " + i->second.aggregate_name + " and "
                           + r.aggregate_name);
    return;
  }
  auto name = r.command_name;
  commands_.emplace(std::move(name), std::move(r));
}

router& router::include(const router& other) {
  for (const auto& [name, d] : other.aggregates_) {
    auto i = aggregates_.find(name);
    if (i == aggregates_.end()) {
      aggregates_.emplace(name, d);
    } else if (i->second.type != d.type) {
      conflicts_.push_back("two aggregate types are named " + name);
    } else if (other.declared_.count(name) != 0) {
      if (declared_.count(name) != 0)
        conflicts_.push_back("aggregate " + name + " is declared twice");
      i->second.prefix = d.prefix;
      i->second.settings = d.settings;
    }
  }
  for (const auto& name : other.declared_)
    declared_.insert(name);
  for (const auto& [name, r] : other.commands_)
    insert(r);
  for (const auto& c : other.conflicts_)
    conflicts_.push_back(c);
  return *this;
}

const detail::command_route* router::find(std::string_view command_name) const {
  auto i = commands_.find(command_name);
  return i == commands_.end() ? nullptr : &i->second;
}

} // namespace sourcery
