// sourcery — the operator's tool for an event store (first commands).
//
//   sourcery read STREAM [--data-dir DIR] [--from VERSION] [--limit N] [--json]
//   sourcery all [--data-dir DIR] [--from POSITION] [--limit N] [--json]
//   sourcery tail [--data-dir DIR] [--from POSITION] [--json]
//   sourcery COMMAND --help
//
// The store is opened read-only (LMDB readers), so a running application
// writing it is not disturbed. Human-readable output by default; `--json`
// prints one JSON object per event. Exit status: 0 ok, 1 the store failed,
// 2 bad arguments.

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/lmdb_store.hpp"

namespace {

using sourcery::persistence::recorded_event;
using json = nlohmann::json;

constexpr const char* usage = R"(usage: sourcery COMMAND [OPTIONS]

commands:
  read STREAM   the events of one stream, oldest first
  all           the global log ($all), from a position
  tail          follows the global log: prints events as they are committed

options:
  --data-dir DIR   the store's directory (default: sourcery-data)
  --from N         read: first version (default 1); all, tail: first position
                   (all: default 1; tail: default the next event)
  --limit N        read, all: at most N events (default: all)
  --json           one JSON object per event instead of text
  --help           this text
)";

struct options {
  std::string command;
  std::string stream;
  std::string data_dir = "sourcery-data";
  uint64_t from = 0;
  bool from_given = false;
  uint64_t limit = UINT64_MAX;
  bool json_out = false;
};

[[noreturn]] void usage_error(const std::string& why) {
  std::fprintf(stderr, "sourcery: %s\n\n%s", why.c_str(), usage);
  std::exit(2);
}

uint64_t number(const char* flag, const char* text) {
  char* end = nullptr;
  errno = 0;
  auto v = std::strtoull(text, &end, 10);
  if (*text == '\0' || *end != '\0' || errno != 0 || *text == '-')
    usage_error(std::string{flag} + " takes a non-negative number, not '" + text + "'");
  return v;
}

options parse(int argc, char** argv) {
  options o;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc)
        usage_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    } else if (a == "--data-dir") {
      o.data_dir = value();
    } else if (a == "--from") {
      o.from = number("--from", value());
      o.from_given = true;
    } else if (a == "--limit") {
      o.limit = number("--limit", value());
    } else if (a == "--json") {
      o.json_out = true;
    } else if (!a.empty() && a[0] == '-') {
      usage_error("unknown option " + a);
    } else {
      positional.push_back(a);
    }
  }
  if (positional.empty())
    usage_error("no command given");
  o.command = positional[0];
  if (o.command != "read" && o.command != "all" && o.command != "tail")
    usage_error("unknown command '" + o.command + "'");
  if (o.command == "read") {
    if (positional.size() != 2)
      usage_error("read takes one STREAM");
    o.stream = positional[1];
  } else if (positional.size() != 1) {
    usage_error(o.command + " takes no arguments besides options");
  }
  return o;
}

std::string hex(const sourcery::persistence::bytes& b) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (auto c : b) {
    out += digits[static_cast<uint8_t>(c) >> 4];
    out += digits[static_cast<uint8_t>(c) & 15];
  }
  return out;
}

/// A payload as JSON when it is a msgpack map, else its bytes in hex (an
/// unknown encoding is shown, never trusted).
json payload(const sourcery::persistence::bytes& b) {
  if (b.empty())
    return json::object();
  auto j = sourcery::persistence::event_registry::data_as_json(b);
  if (j)
    return *j;
  return json{{"$hex", hex(b)}};
}

std::string time_of(int64_t micros) {
  auto t = static_cast<std::time_t>(micros / 1'000'000);
  char buf[40];
  std::strftime(buf, sizeof buf, "%FT%T", std::gmtime(&t));
  char frac[16];
  std::snprintf(frac, sizeof frac, ".%06lldZ", static_cast<long long>(micros % 1'000'000));
  return std::string{buf} + frac;
}

void print(const recorded_event& e, bool as_json) {
  if (as_json) {
    json j{{"position", e.position},
           {"stream", e.stream_id},
           {"version", e.stream_version},
           {"type", e.type},
           {"schema_version", e.schema_version},
           {"event_id", e.event_id.to_string()},
           {"created_at", time_of(e.created_at)},
           {"causation_id", e.causation_id},
           {"correlation_id", e.correlation_id},
           {"data", payload(e.data)},
           {"metadata", payload(e.metadata)}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("#%-8llu %s v%llu  %s (v%u)  %s\n  data: %s\n", static_cast<unsigned long long>(e.position),
                e.stream_id.c_str(), static_cast<unsigned long long>(e.stream_version), e.type.c_str(),
                e.schema_version, time_of(e.created_at).c_str(), payload(e.data).dump().c_str());
    auto meta = payload(e.metadata);
    if (!meta.empty())
      std::printf("  metadata: %s\n", meta.dump().c_str());
    if (!e.causation_id.empty() || !e.correlation_id.empty())
      std::printf("  causation: %s  correlation: %s\n", e.causation_id.c_str(), e.correlation_id.c_str());
  }
  std::fflush(stdout);
}

[[noreturn]] void store_error(const std::string& what, const caf::error& err) {
  std::fprintf(stderr, "sourcery: %s: %s\n", what.c_str(), sourcery::persistence::describe(err).c_str());
  std::exit(1);
}

volatile std::sig_atomic_t interrupted = 0;

} // namespace

int main(int argc, char** argv) {
  auto o = parse(argc, argv);
  if (!std::filesystem::exists(o.data_dir))
    usage_error("no store at " + o.data_dir + " (--data-dir)");
  sourcery::persistence::lmdb_options lo;
  lo.path = o.data_dir;
  lo.read_only = true;
  auto store = sourcery::persistence::lmdb_store::open(lo);
  if (!store)
    store_error("cannot open " + o.data_dir, store.error());
  auto& s = **store;
  constexpr size_t batch = 1000;

  // read and all: the store's own batch loops, stopped after `--limit` events.
  uint64_t left = o.limit;
  auto visit = [&](const recorded_event& e) {
    print(e, o.json_out);
    return --left > 0;
  };
  if (o.command == "read") {
    if (auto err = o.limit == 0 ? caf::error{} : s.for_each_in_stream(o.stream, o.from_given ? o.from : 1, visit))
      store_error("read " + o.stream, err);
    return 0;
  }
  uint64_t next = o.from_given ? o.from : (o.command == "tail" ? s.head_position() + 1 : 1);
  if (o.command == "all") {
    if (auto err = o.limit == 0 ? caf::error{} : s.for_each_in_all(next, visit))
      store_error("read $all", err);
    return 0;
  }

  // tail: until SIGINT/SIGTERM.
  std::signal(SIGINT, [](int) { interrupted = 1; });
  std::signal(SIGTERM, [](int) { interrupted = 1; });
  while (interrupted == 0) {
    if (!s.wait_for_position(next, std::chrono::milliseconds{200}))
      continue;
    auto events = s.read_all(next, batch);
    if (!events)
      store_error("read $all", events.error());
    for (auto& e : *events)
      print(e, o.json_out);
    if (!events->empty())
      next = events->back().position + 1;
  }
  return 0;
}
