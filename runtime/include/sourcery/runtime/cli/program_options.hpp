#pragma once

// One command line for every Sourcery program, on CLI11 (Debian
// libcli11-dev): `--help`, subcommands and errors look the same
// everywhere. A program builds a CLI::App, adds the options every program
// shares -- the store here, the cluster in cluster/cluster_options.hpp --
// and its own, then parses with `sourcery::cli::parse`:
//
//     sourcery::application_config config;
//     CLI::App app{"The todo list as a service", "todo-server"};
//     sourcery::cli::store_options store{app, config.store_uri, config.data_dir, &config.in_memory, "todo-data"};
//     app.add_option("--port", port, "...");
//     if (auto code = sourcery::cli::parse(app, argc, argv))
//       return *code;
//     if (auto code = store.finish())
//       return *code;
//
// Exit statuses: 0 after --help, 2 for bad arguments, with the message on
// standard error as `PROGRAM: what was wrong`.

#include <cstdio>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/store_uri.hpp"

namespace sourcery::cli {

/// Parses argv into `app`. Returns the exit status when the program is to
/// stop here: 0 after --help (printed on standard output), 2 after an error
/// (printed on standard error, with a pointer to --help); none to go on.
inline std::optional<int> parse(CLI::App& app, int argc, const char* const* argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success))
      return app.exit(e); // --help: the app's (or the subcommand's) help
    // The help to point at: the subcommand's, when one was named.
    std::string where = app.get_name();
    for (const CLI::App* a = &app; !a->get_subcommands().empty();) {
      a = a->get_subcommands().front();
      where += " " + a->get_name();
    }
    std::fprintf(stderr, "%s: %s\nRun '%s --help' for the options.\n", app.get_name().c_str(), e.what(),
                 where.c_str());
    return 2;
  }
}

/// Checks a store URI as `--store` takes it (persistence/store_uri.hpp).
inline std::string check_store_uri(const std::string& text) {
  auto uri = persistence::store_uri::parse(text);
  return uri ? std::string{} : persistence::describe(uri.error());
}

/// The options that name a program's store: `--store URI` and its
/// shorthands `--data-dir DIR` and `--in-memory`, at most one of them
/// (`--store lmdb:a --in-memory`: which did you mean?); none, and the
/// environment's SOURCERY_STORE names it (so that no password need sit in
/// argv), else `default_dir`.
class store_options {
public:
  /// Binds the options to `uri` (`--store`), `data_dir` (`--data-dir`, set
  /// to `default_dir` here) and `in_memory` (`--in-memory`; null: the
  /// program offers no such thing) -- application_config's fields.
  store_options(CLI::App& app, std::string& uri, std::string& data_dir, bool* in_memory, std::string default_dir)
    : app_(app.get_name()), uri_(uri) {
    data_dir = std::move(default_dir);
    store_ = app.add_option("--store", uri,
                            "where the events live: lmdb:DIR, memory: or postgresql://... (a libpq URI; schema=NAME "
                            "picks the schema); default: SOURCERY_STORE, else lmdb:" + data_dir)
               ->type_name("URI")
               ->check(check_store_uri);
    dir_ = app.add_option("--data-dir", data_dir, "short for --store lmdb:DIR")->type_name("DIR");
    store_->excludes(dir_);
    if (in_memory != nullptr) {
      memory_ = app.add_flag("--in-memory", *in_memory, "short for --store memory: (nothing survives the run)");
      memory_->excludes(store_)->excludes(dir_);
    }
  }

  /// Adds `--master-key FILE` (application_config::master_key_file): the
  /// key that wraps the subjects' keys of personal data at rest.
  void add_master_key(CLI::App& app, std::string& file) {
    app.add_option("--master-key", file,
                   "a file with the key (32 bytes, or 64 hex digits) that wraps the keys of personal data at rest")
      ->type_name("FILE")
      ->check(CLI::ExistingFile);
  }

  /// After parsing: the store from SOURCERY_STORE when none was named.
  /// Returns 2 (having said why) for a bad URI there; none to go on.
  std::optional<int> finish() const {
    if (named())
      return std::nullopt;
    auto env = persistence::store_from_environment();
    if (!env)
      return std::nullopt;
    if (auto why = check_store_uri(*env); !why.empty()) {
      std::fprintf(stderr, "%s: %s (from SOURCERY_STORE)\n", app_.c_str(), why.c_str());
      return 2;
    }
    uri_ = *env;
    return std::nullopt;
  }

  /// Whether an option (not the environment) named the store.
  bool named() const { return store_->count() > 0 || dir_->count() > 0 || (memory_ != nullptr && memory_->count() > 0); }

private:
  std::string app_;
  std::string& uri_;
  CLI::Option* store_ = nullptr;
  CLI::Option* dir_ = nullptr;
  CLI::Option* memory_ = nullptr;
};

} // namespace sourcery::cli
