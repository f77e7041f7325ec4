#pragma once

// What the narrated demos share: printing as they go, dispatching a command
// and telling what became of it, and the usual command-line options.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/store_uri.hpp"
#include "sourcery/runtime/application.hpp"

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
  return j ? j->dump() : "<" + std::to_string(e.data.size()) + " bytes>";
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

/// A port given on the command line: 0 to 65535, nothing else.
inline std::optional<uint16_t> parse_port(const char* text) {
  char* end = nullptr;
  long port = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || port < 0 || port > 65535)
    return std::nullopt;
  return static_cast<uint16_t>(port);
}

/// `--cluster NAME` and `--node HOST:PORT` go together, on a PostgreSQL
/// store: exits with status 2 otherwise.
inline void check_cluster_options(const sourcery::application_config& config, const char* program) {
  if (config.cluster.name.empty() && config.cluster.node.empty())
    return;
  const char* why = nullptr;
  if (config.cluster.name.empty() || config.cluster.node.empty())
    why = "--cluster NAME and --node HOST:PORT go together";
  else if (auto uri = sourcery::persistence::store_uri::parse(config.store_uri); !uri || !uri->is_postgres())
    why = "the nodes of a cluster share a PostgreSQL store: give --store postgresql://...";
  else if (auto address = sourcery::cluster::split_node_address(config.cluster.node); !address)
    why = "--node takes HOST:PORT with a port from 1 to 65535";
  if (why) {
    std::fprintf(stderr, "%s: %s\n", program, why);
    std::exit(2);
  }
}

/// The options that name a program's store: `--store URI` and its
/// shorthands `--data-dir DIR` and `--in-memory`. One of them at most
/// (`--store lmdb:a --in-memory` is refused: which one did you mean?);
/// none, and SOURCERY_STORE names it, else the program's default directory.
class store_options {
public:
  explicit store_options(const char* program) : program_(program) {}

  /// Takes argv[i] (and its value) when it names the store; exits with
  /// status 2 on a second one, 1 on a bad URI.
  bool take(int argc, char** argv, int& i, sourcery::application_config& config) {
    std::string flag = argv[i];
    bool valued = flag == "--store" || flag == "--data-dir";
    if (!valued && flag != "--in-memory")
      return false;
    if (valued && i + 1 >= argc)
      return false; // the usage text says what is missing
    if (!named_by_.empty()) {
      std::fprintf(stderr, "%s: %s and %s both name the store: give one\n", program_, named_by_.c_str(),
                   flag.c_str());
      std::exit(2);
    }
    named_by_ = flag;
    if (flag == "--store")
      set_uri(argv[++i], config);
    else if (flag == "--data-dir")
      config.data_dir = argv[++i];
    else
      config.in_memory = true;
    return true;
  }

  /// After the options: the store from SOURCERY_STORE when none was named.
  void finish(sourcery::application_config& config) {
    if (named_by_.empty())
      if (auto env = sourcery::persistence::store_from_environment())
        set_uri(*env, config, " (from SOURCERY_STORE)");
  }

private:
  void set_uri(const std::string& text, sourcery::application_config& config, const char* from = "") {
    auto uri = sourcery::persistence::store_uri::parse(text);
    if (!uri) {
      std::fprintf(stderr, "%s: %s%s\n", program_, sourcery::persistence::describe(uri.error()).c_str(), from);
      std::exit(1);
    }
    // lmdb:DIR is the directory itself, as --data-dir: what the program
    // says and where it writes are the same.
    if (uri->type == sourcery::persistence::store_uri::kind::lmdb)
      config.data_dir = uri->location;
    else if (uri->type == sourcery::persistence::store_uri::kind::memory)
      config.in_memory = true;
    else
      config.store_uri = text;
  }

  const char* program_;
  std::string named_by_;
};

/// `--store URI`, its shorthands `--data-dir DIR` and `--in-memory`,
/// `--cluster NAME --node HOST:PORT` (and `--help`); exits on anything
/// else, and with status 1 on a bad URI.
inline sourcery::application_config parse_options(int argc, char** argv, const char* program,
                                                  const char* default_dir) {
  sourcery::application_config config;
  config.data_dir = default_dir;
  store_options store{program};
  for (int i = 1; i < argc; ++i) {
    if (store.take(argc, argv, i, config)) {
    } else if (std::strcmp(argv[i], "--cluster") == 0 && i + 1 < argc) {
      config.cluster.name = argv[++i];
    } else if (std::strcmp(argv[i], "--node") == 0 && i + 1 < argc) {
      config.cluster.node = argv[++i];
    } else {
      bool help = std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0;
      std::fprintf(help ? stdout : stderr,
                   "usage: %s [--store lmdb:DIR|memory:|postgresql://...] [--data-dir DIR] [--in-memory]"
                   " [--cluster NAME --node HOST:PORT]\n\n"
                   "  --store URI        where the events live (default: lmdb:%s, or SOURCERY_STORE)\n"
                   "  --data-dir DIR     short for --store lmdb:DIR\n"
                   "  --in-memory        short for --store memory: (nothing survives the run)\n"
                   "  --cluster NAME     run as a node of cluster NAME (PostgreSQL store)\n"
                   "  --node HOST:PORT   this node's address in the cluster\n",
                   program, default_dir);
      std::exit(help ? 0 : 2);
    }
  }
  store.finish(config);
  check_cluster_options(config, program);
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
  auto config = parse_options(argc, argv, program, default_dir);
  say("== %s ==", title);
  auto app = sourcery::application::start(config, std::move(routes));
  if (!app)
    fail(program, "start the application on " + store_location(config), app.error());
  tell_store(**app, config);
  return {std::move(config), std::move(*app)};
}

} // namespace demo
