#pragma once

// The operator's command-line tool, as a library: `build/bin/sourcery` runs
// it as is; an application runs it from its own `main` with its projections
// registered, so that `rebuild PROJECTION` can rebuild them.
//
//     int main(int argc, char** argv) {
//       if (argc > 1 && std::string_view{argv[1]} == "admin") {
//         sourcery::operator_tool tool{"bank-demo admin"};
//         tool.add_routes(bank::routes()).add_projection<balances_view>("account balances");
//         return tool.run(argc - 1, argv + 1);
//       }
//       ...
//     }

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "sourcery/actors/aggregates/aggregate.hpp"
#include "sourcery/actors/events/projector.hpp"
#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/event_store.hpp"
#include "sourcery/persistence/projection_store.hpp"
#include "sourcery/persistence/store_inspection.hpp"
#include "sourcery/runtime/commands/router.hpp"

namespace sourcery {

/// A projection the tool can rebuild.
struct tool_projection {
  std::string name;
  std::string description;
  /// Rebuilds the read model from the log (resetting it first); reports
  /// (position reached, head) through the callback. Returns the last
  /// position projected. The store upcasts with the tool's event types.
  std::function<caf::expected<uint64_t>(const persistence::event_store&, persistence::projection_store&,
                                        const persistence::progress_callback&)>
    rebuild;
};

class operator_tool {
public:
  /// `program` names the tool in usage texts ("sourcery", "bank-demo admin").
  explicit operator_tool(std::string program = "sourcery");

  operator_tool& add_projection(tool_projection projection);

  /// The application's routes: their aggregates' event types (to upcast)
  /// and stream prefixes (a rebuilt projection's `aggregate_id()`).
  /// Errors: throws std::logic_error for event types that clash.
  operator_tool& add_routes(const router& routes);

  /// The store `--data-dir` defaults to (the application's own; "sourcery-data").
  operator_tool& default_data_dir(std::string dir);

  /// Registers projector `P` (a default-constructible one) and its event
  /// types, with their upcasters.
  template <projector P>
  operator_tool& add_projection(std::string description = {}) {
    if (auto err = detail::variant_events<typename P::event>::register_all(*types_))
      throw std::logic_error("operator_tool: the events of " + std::string{P::projection_name}
                             + " clash with those registered before: " + persistence::describe(err));
    return add_projection(tool_projection{
      P::projection_name, std::move(description),
      [types = types_.get(), prefixes = prefixes_](const persistence::event_store& store, persistence::projection_store& models,
                             const persistence::progress_callback& progress) {
        return project_as_of<P>(store, *types, models, P::projection_name, as_of{}, std::make_unique<P>(), progress,
                                prefixes.get());
      }});
  }

  /// The event types known to the tool (those of its projections); add more
  /// for `rebuild` to upcast them.
  persistence::event_registry& event_types() noexcept { return *types_; }

  /// Runs the command line; returns the exit status: 0 done, 1 the store
  /// failed or is damaged, 2 bad arguments.
  int run(int argc, char** argv) const;

private:
  std::string program_;
  std::string data_dir_ = "sourcery-data";
  std::vector<tool_projection> projections_;
  std::unique_ptr<persistence::event_registry> types_ = std::make_unique<persistence::event_registry>();
  std::vector<std::string> prefix_list_;
  std::shared_ptr<stream_prefixes> prefixes_ = std::make_shared<stream_prefixes>();
};

} // namespace sourcery
