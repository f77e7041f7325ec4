#pragma once

// What the narrated demos share: printing as they go, dispatching a command
// and telling what became of it, and the usual command-line options.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/personal_json.hpp"
#include "sourcery/persistence/store_uri.hpp"
#include "sourcery/config.hpp"
#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/cli/program_options.hpp"
#include "sourcery/runtime/cluster/cluster_settings.hpp"
#include "sourcery/runtime/http/gateway.hpp"
#if SOURCERY_WITH_POSTGRES
#include "sourcery/runtime/cluster/cluster_options.hpp"
#endif

namespace demo {

inline void say(const char* fmt, auto... args) {
  std::printf(fmt, args...);
  std::printf("\n");
  std::fflush(stdout);
}

inline void say(const char* text) {
  say("%s", text);
}

inline void section(const char* title) {
  say("\n-- %s", title);
}

[[noreturn]] inline void fail(const char* program, const std::string& what, const caf::error& err) {
  std::fprintf(stderr, "%s: %s: %s\n", program, what.c_str(), sourcery::describe_error(err).c_str());
  std::exit(1);
}

/// An event's data as JSON (its size when it is not a msgpack map).
inline std::string data_of(const sourcery::persistence::recorded_event& e) {
  auto j = sourcery::persistence::event_registry::data_as_json(e.data);
  if (!j)
    return "<" + std::to_string(e.data.size()) + " bytes>";
  sourcery::persistence::show_personal_fields(*j);
  return j->dump();
}

/// Dispatches `cmd` and says what happened: its events, or its rejection.
template <class C>
sourcery::dispatch_result run(sourcery::application& app, const std::string& what, const C& cmd,
                              sourcery::consistency level = sourcery::consistency::eventual) {
  sourcery::dispatch_options opts;
  opts.returns = sourcery::returning::events;
  opts.consistency_level = level;
  auto r = app.dispatch(cmd, opts);
  if (!r)
    fail("demo", what, r.error());
  if (!r->accepted) {
    say("  %-34s -> rejected: %s%s%s", what.c_str(), r->why.reason.c_str(), r->why.message.empty() ? "" : " — ",
        r->why.message.c_str());
  } else if (r->events.empty()) {
    say("  %-34s -> accepted, nothing new to record", what.c_str());
  } else {
    for (auto& e : r->events)
      say("  %-34s -> #%llu %s v%llu %s %s", what.c_str(), static_cast<unsigned long long>(e.position),
          e.stream_id.c_str(), static_cast<unsigned long long>(e.stream_version), e.type.c_str(), data_of(e).c_str());
  }
  return *r;
}

/// The options every demo shares: the store (`--store URI`, `--data-dir
/// DIR`, `--in-memory`) and, where the build has it, the cluster
/// (`--cluster NAME --node HOST:PORT`, and `--listen HOST:PORT` where
/// `listen`). Add them to `app`, add the program's own, then `parse`.
class demo_options {
public:
  demo_options(CLI::App& app, sourcery::application_config& config, const char* default_dir, bool listen = false)
    : store_(app, config.store_uri, config.data_dir, &config.in_memory, default_dir)
#if SOURCERY_WITH_POSTGRES
      , cluster_(app, listen)
#endif
  {
    store_.add_master_key(app, config.master_key_file);
#if !SOURCERY_WITH_POSTGRES
    // Taken, so that a build without the cluster says so instead of
    // "unexpected argument".
    app.add_option("--cluster", unbuilt_.name, "(this build has no cluster)")->type_name("NAME");
    app.add_option("--node", unbuilt_.node, "(this build has no cluster)")->type_name("HOST:PORT");
    if (listen)
      app.add_option("--listen", unbuilt_.listen, "(this build has no cluster)")->type_name("HOST:PORT");
    // The server's own certificate: HTTPS (cluster_options takes them in a build with the cluster).
    auto* cert = app.add_option("--tls-cert", unbuilt_.tls.cert, "this server's certificate (PEM): HTTPS")
                   ->type_name("FILE")
                   ->check(CLI::ExistingFile);
    auto* key = app.add_option("--tls-key", unbuilt_.tls.key, "this server's private key (PEM)")
                  ->type_name("FILE")
                  ->check(CLI::ExistingFile);
    cert->needs(key);
    key->needs(cert);
#endif
    (void) listen;
  }

  /// Parses argv; exits 0 after --help, 2 on a bad argument.
  void parse(CLI::App& app, int argc, char** argv, sourcery::application_config& config) {
    if (auto code = sourcery::cli::parse(app, argc, argv))
      std::exit(*code);
    if (auto code = store_.finish())
      std::exit(*code);
#if SOURCERY_WITH_POSTGRES
    cluster_.finish(config);
#else
    (void) config;
    if (!unbuilt_.name.empty() || !unbuilt_.node.empty()) {
      std::fprintf(stderr, "%s: this build of Sourcery has no cluster (built with -DSOURCERY_WITH_POSTGRES=OFF)\n",
                   app.get_name().c_str());
      std::exit(2);
    }
#endif
  }

  /// The cluster's name and this node's address ("" when alone).
  std::string cluster_name() const { return settings().name; }
  std::string node() const { return settings().node; }
  /// The server's own certificate and key (`--tls-cert`, `--tls-key`): HTTPS where it serves HTTP.
  sourcery::http::tls_files server_tls() const { return {settings().tls.cert, settings().tls.key}; }

private:
  sourcery::cli::store_options store_;
#if SOURCERY_WITH_POSTGRES
  sourcery::cluster::cluster_options cluster_;
#else
  sourcery::cluster::cluster_settings unbuilt_; ///< what was asked of a cluster this build lacks
#endif
  const sourcery::cluster::cluster_settings& settings() const {
#if SOURCERY_WITH_POSTGRES
    return cluster_.settings;
#else
    return unbuilt_;
#endif
  }
};

/// A demo's options: the store's and the cluster's (and `--help`).
inline sourcery::application_config parse_options(int argc, char** argv, const char* program, const char* title,
                                                  const char* default_dir) {
  sourcery::application_config config;
  CLI::App app{title, program};
  demo_options options{app, config, default_dir};
  options.parse(app, argc, argv, config);
  return config;
}

/// Where `config` keeps its events, in words.
inline std::string store_location(const sourcery::application_config& config) {
  if (!config.store_uri.empty())
    if (auto uri = sourcery::persistence::store_uri::parse(config.store_uri))
      return uri->to_string();
  return config.in_memory ? std::string{"memory:"} : "lmdb:" + config.data_dir;
}

/// Says where the store is and how much it already holds.
inline void tell_store(sourcery::application& app, const sourcery::application_config& config) {
  auto head = app.store().head_position();
  auto where = store_location(config);
  if (where == "memory:")
    say("store: in memory (nothing survives this run)");
  else if (where.rfind("postgres", 0) == 0)
    say("store: PostgreSQL at %s, every acknowledged event committed with synchronous_commit = on; the log holds"
        " %llu events%s", where.c_str(), static_cast<unsigned long long>(head),
        head > 0 ? " (continuing an earlier run)" : "");
  else
    say("store: LMDB in %s, every acknowledged event fsynced; the log holds %llu events%s", where.substr(5).c_str(),
        static_cast<unsigned long long>(head), head > 0 ? " (continuing an earlier run)" : "");
}

/// A demo's start: its options, its title, the application on `routes`, and
/// where its store is. Exits with a message when the application cannot start.
struct started {
  sourcery::application_config config;
  std::unique_ptr<sourcery::application> app;
};
inline started start(int argc, char** argv, const char* program, const char* title, const char* default_dir,
                     sourcery::router routes) {
  auto config = parse_options(argc, argv, program, title, default_dir);
  say("== %s ==", title);
  auto app = sourcery::application::start(config, std::move(routes));
  if (!app)
    fail(program, "start the application on " + store_location(config), app.error());
  tell_store(**app, config);
  return {std::move(config), std::move(*app)};
}

} // namespace demo
