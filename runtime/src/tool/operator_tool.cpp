// The operator tool's command line: the commands, their options and help,
// and the rebuild of registered projections.

#include "sourcery/runtime/tool/operator_tool.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "progress_meter.hpp"
#include "sourcery/config.hpp"
#include "sourcery/runtime/cli/program_options.hpp"
#include "tool_context.hpp"
#include "tool_output.hpp"

namespace sourcery {

namespace tool {

namespace {

struct command {
  const char* name;
  const char* arguments; // positional, for the usage line
  size_t positional;     // how many
  const char* summary;
  const char* details;
  std::set<std::string> flags; // besides --data-dir, --help
  int (*run)(const context&);
};

const std::vector<command>& commands() {
  static const std::vector<command> all = {
    {"streams", "", 0, "lists streams with their version and last write",
     "Deleted streams are listed too, marked as such. In stream-id order.", {"--json", "--limit"}, run_streams},
    {"read", "STREAM", 1, "prints the events of one stream, oldest first",
     "Each event with its metadata; payloads decoded as JSON, bytes that are not a\n"
     "msgpack map shown as {\"$hex\": ...}.", {"--json", "--from", "--limit"}, run_read},
    {"all", "", 0, "prints the global log ($all) from a position",
     "Filters: --type, --category (the stream id's prefix before '-'), --correlation\n"
     "and --causation (ids, as events carry them); --backward reads newest first\n"
     "(from --from, default the head). --limit counts the events shown.",
     {"--json", "--from", "--limit", "--type", "--category", "--correlation", "--causation", "--backward"}, run_all},
    {"trace", "EVENT_ID", 1, "prints the tree of events one event caused, across streams",
     "Every event whose causation is the event, or an event of the tree (a process\n"
     "manager's commands carry the event that caused them), grouped by the command\n"
     "that appended them. --json: one nested object.", {"--json"}, run_trace},
    {"tail", "", 0, "follows the global log: prints events as they are committed",
     "Runs until interrupted (Ctrl-C, SIGTERM). Sees appends of other processes.", {"--json", "--from"}, run_tail},
    {"stats", "", 0, "counts, sizes, map usage, and how far behind each checkpoint is",
     "Checkpoints of the event store's named subscriptions (event handlers,\n"
     "process managers) and of the projections in the read models.", {"--json", "--read-models"}, run_stats},
    {"verify", "", 0, "checks the integrity of a store; never writes",
     "Checks that $all is gapless, every record decodes, every stream record and\n"
     "stream-index entry agrees with the log, and snapshots and checkpoints are\n"
     "within range. Exit status 1 and a report of each problem when damaged.", {"--json"}, run_verify},
    {"export", "", 0, "writes the store as newline-delimited JSON",
     "Events (with their exact payload bytes), deleted streams, snapshots and\n"
     "checkpoints. Importing the file reproduces the store exactly. The export is\n"
     "JSON whatever the options; --json only makes the summary on stderr JSON too.",
     {"--output", "--json"}, run_export},
    {"import", "", 0, "creates a store from an export",
     "--data-dir names the new store's directory, which must be new or empty.\n"
     "The import is written beside it and moved into place only once complete and\n"
     "verified: a failed import leaves nothing behind. Checkpoints come along, and\n"
     "process managers' states with their positions, so nothing runs twice; the\n"
     "projections this program registers are rebuilt, others copied between LMDB\n"
     "stores. What cannot be carried is listed, and starts at the head (or, with\n"
     "--handlers-from start, from the origin).",
     {"--input", "--json", "--handlers-from"}, run_import},
    {"rebuild", "PROJECTION", 1, "rebuilds a projection's read model from the log",
     "For projections the application registers (operator_tool::add_projection).\n"
     "Stop the application first: the read model is reset, then rebuilt.", {"--read-models", "--json"},
     run_rebuild},
    {"handlers", "", 0, "lists every handler, projection and process manager: state, position, lag",
     "Stopped on an event (and which), parked events, and in a cluster the node\n"
     "running each.", {"--json"}, run_handlers},
    {"reset", "NAME", 1, "moves an event handler or a process manager to a position",
     "--to POSITION|start|head. A running application carries it out itself (on\n"
     "PostgreSQL; an LMDB store has one writer: stop the application first). A\n"
     "projection is rebuilt instead (`rebuild`).", {"--to"}, run_reset},
    {"skip", "NAME", 1, "a handler stopped on an event goes on after it; the event is parked",
     "Parked events are listed by `handlers`.", {}, run_skip},
    {"retry", "NAME", 1, "a handler stopped on an event handles it again",
     "--parked POSITION: an event handler handles that parked event again, alone,\n"
     "beside its position (a running application does it; handled, it is parked no\n"
     "more; failed, it stays parked and the application's log says why).", {"--parked"}, run_retry},
    {"init", "", 0, "creates a store (and its read models), or checks the one there",
     "The one command besides import that creates anything: every other command\n"
     "only reads, and refuses a place without a store (status 2).", {"--json"}, run_init},
    {"drop", "", 0, "removes a store and its read models for good",
     "Only a Sourcery store, only while no application uses it (store_in_use), and\n"
     "only with --yes.", {"--yes"}, run_drop},
    {"delete", "STREAM", 1, "soft-deletes a stream: it takes no more events",
     "Its events stay in $all (handlers have seen them). --expected-version N\n"
     "deletes only while the stream is at version N (wrong_expected_version).",
     {"--expected-version"}, run_delete},
    {"forget", "SUBJECT", 1, "forgets a subject's personal data: its key is deleted for good",
     "Personal fields sealed for SUBJECT (an event's stream, or the subject its\n"
     "events name) read as forgotten from then on, everywhere. Handlers and\n"
     "projections are told first (a sourcery.subject_forgotten event), so that\n"
     "they erase their copies. Forgetting again, or an unknown subject, is fine.", {}, run_forget},
    {"cluster", "", 0, "lists each cluster's members, their shards and the handlers they run",
     "From the membership and lease tables of a PostgreSQL store (--store): each\n"
     "member's state (up, down, left), incarnation and last renewal by the\n"
     "database's clock, how many shards it holds, and which node runs each event\n"
     "handler, projection and process manager. --cluster NAME shows one cluster.",
     {"--json", "--cluster"}, run_cluster},
  };
  return all;
}

const char* const general_footer =
  "The store is opened read-only except by init, import, rebuild, drop, delete, forget and the\n"
  "handler operations (reset, skip, retry), so a running application is not disturbed,\n"
  "and nothing is created where no store is. The store: --store URI, else SOURCERY_STORE,\n"
  "else --data-dir's default. 'help COMMAND' is 'COMMAND --help'.\n"
  "Exit status: 0 done, 1 the store failed or is damaged, 2 bad arguments or no store.";

/// The options of one command, bound to `o`: the store's (every command)
/// and those the command takes.
void add_options(CLI::App& sub, const command& c, options& o, uint64_t& expected_version) {
  auto has = [&](const char* flag) { return c.flags.count(flag) != 0; };
  if (c.positional > 0)
    sub.add_option(c.arguments, o.args, "")->required()->expected(static_cast<int>(c.positional));
  if (has("--json"))
    sub.add_flag("--json", o.json, "JSON instead of text (one object per line for events and streams)");
  if (has("--from"))
    sub.add_option("--from", o.from,
                   c.name == std::string{"read"}   ? "the first version (default 1)"
                   : c.name == std::string{"all"} ? "the first position (default 1; --backward: the head)"
                                                   : "the first position (default: the next event)")
      ->type_name("N");
  if (has("--limit"))
    sub.add_option("--limit", o.limit, "at most N items (default: all)")->type_name("N");
  if (has("--cluster"))
    sub.add_option("--cluster", o.cluster, "one cluster (default: every cluster on the store)")->type_name("NAME");
  if (has("--read-models"))
    sub.add_option("--read-models", o.read_models, "the read models (default: DATA_DIR/read-models)")
      ->type_name("DIR");
  if (has("--output"))
    sub.add_option("--output", o.output, "where to write (default: standard output)")->type_name("FILE");
  if (has("--input"))
    sub.add_option("--input", o.input, "where to read (default: standard input)")->type_name("FILE");
  if (has("--handlers-from"))
    sub.add_option("--handlers-from", o.handlers_from,
                   "where a read model the import cannot carry starts: head or start (default: head)")
      ->check(CLI::IsMember({"head", "start"}));
  if (has("--type"))
    sub.add_option("--type", o.type, "only events of this type");
  if (has("--category"))
    sub.add_option("--category", o.category, "only events of streams NAME-... (and NAME)")->type_name("NAME");
  if (has("--correlation"))
    sub.add_option("--correlation", o.correlation, "only events with this correlation id")->type_name("ID");
  if (has("--causation"))
    sub.add_option("--causation", o.causation, "only events with this causation id")->type_name("ID");
  if (has("--backward"))
    sub.add_flag("--backward", o.backward, "newest first");
  if (has("--yes"))
    sub.add_flag("--yes", o.yes, "yes, remove it");
  if (has("--to"))
    sub.add_option("--to", o.to, "a position, start or head")->type_name("WHERE");
  if (has("--parked"))
    sub.add_option("--parked", o.parked, "the position of a parked event (`handlers` lists them)")
      ->type_name("POSITION")
      ->check(CLI::PositiveNumber);
  if (has("--expected-version"))
    sub.add_option("--expected-version", expected_version, "the version the stream must be at")->type_name("N");
}

[[noreturn]] void usage_error(const std::string& program, const std::string& command, const std::string& why) {
  std::fprintf(stderr, "%s: %s\nRun '%s %s--help' for the options.\n", program.c_str(), why.c_str(), program.c_str(),
               command.empty() ? "" : (command + " ").c_str());
  std::exit(2);
}

options parse(const std::string& program, const std::string& data_dir, int argc, char** argv) {
  options o;
  std::vector<const char*> args{argv, argv + argc};
  if (args.size() >= 2 && std::string{args[1]} == "help") { // "help COMMAND" is "COMMAND --help"
    args.erase(args.begin() + 1);
    args.push_back("--help");
  }
  CLI::App app{"Sourcery's operator tool: reads, checks, exports and operates a store.", program};
  app.require_subcommand(1);
  app.footer(general_footer);
  uint64_t expected_version = 0;
  struct subcommand {
    const command* cmd;
    std::unique_ptr<cli::store_options> store;
  };
  std::map<const CLI::App*, subcommand> by_app;
  for (auto& c : commands()) {
    auto* sub = app.add_subcommand(c.name, c.summary);
    if (*c.details)
      sub->footer(c.details);
    by_app[sub] = {&c, std::make_unique<cli::store_options>(*sub, o.store, o.data_dir, nullptr, data_dir)};
    add_options(*sub, c, o, expected_version);
  }
  if (auto code = cli::parse(app, static_cast<int>(args.size()), args.data()))
    std::exit(*code);
  auto* sub = app.get_subcommands().front();
  const auto& chosen = by_app.at(sub);
  const command& cmd = *chosen.cmd;
  o.command = cmd.name;
  auto given = [&](const char* flag) {
    const auto* opt = sub->get_option_no_throw(flag);
    return opt != nullptr && opt->count() > 0;
  };
  o.from_given = given("--from");
  if (given("--expected-version"))
    o.expected_version = expected_version;
  if (auto code = chosen.store->finish())
    std::exit(*code);
  if (!o.store.empty()) {
    auto uri = persistence::store_uri::parse(o.store); // checked already
    if (uri->type == persistence::store_uri::kind::memory)
      usage_error(program, o.command, "memory: holds nothing to inspect");
#if !SOURCERY_WITH_POSTGRES
    if (uri->is_postgres())
      usage_error(program, o.command,
                  "this build of Sourcery has no PostgreSQL store (built with -DSOURCERY_WITH_POSTGRES=OFF)");
#endif
    if (uri->type == persistence::store_uri::kind::lmdb) {
      o.data_dir = uri->location;
      o.store.clear();
    }
  }
  std::error_code ec;
  if (o.command == "cluster" && o.store.empty())
    usage_error(program, o.command, "a cluster lives in a PostgreSQL store: give --store postgresql://...");
  if (o.store.empty() && o.command != "import" && o.command != "init" && !std::filesystem::exists(o.data_dir, ec))
    usage_error(program, o.command, "no store at " + o.data_dir + " (--data-dir)");
  return o;
}

const command& command_named(const std::string& name) {
  for (auto& c : commands())
    if (name == c.name)
      return c;
  std::abort(); // parse accepted only known names
}

} // namespace

std::string context::read_model_dir() const {
  return opts.read_models.empty() ? (std::filesystem::path{opts.data_dir} / "read-models").string() : opts.read_models;
}

int store_failure(const context& ctx, const std::string& what, const caf::error& err) {
  std::fprintf(stderr, "%s: %s: %s\n", ctx.program.c_str(), what.c_str(), persistence::describe(err).c_str());
  return 1;
}

void no_store(const context& ctx, const caf::error& err) {
  // As a missing LMDB directory: the arguments name nothing to work on.
  auto ctx_msg = err.context();
  std::string why = ctx_msg.size() == 1 && ctx_msg.match_element<std::string>(0) ? ctx_msg.get_as<std::string>(0)
                                                                                 : persistence::describe(err);
  std::fprintf(stderr, "%s: %s (%s; `%s init` creates one)\n", ctx.program.c_str(), why.c_str(),
               ctx.where().c_str(), ctx.program.c_str());
  std::exit(2);
}

int failure(const context& ctx, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", ctx.program.c_str(), what.c_str());
  return 1;
}

persistence::store_uri context::uri() const {
  if (opts.store.empty())
    return persistence::store_uri::lmdb(opts.data_dir);
  return *persistence::store_uri::parse(opts.store); // checked by parse
}

std::string context::where() const {
  return uri().to_string();
}

caf::expected<std::unique_ptr<persistence::projection_store>> context::open_read_models(bool read_only) const {
  auto u = uri();
  persistence::store_open_options opts;
  opts.read_only = read_only;
  if (u.is_postgres())
    return persistence::open_read_models(u, opts);
  return persistence::open_read_models(persistence::store_uri::lmdb(read_model_dir()), opts);
}

std::unique_ptr<persistence::event_store> open_read_only(const context& ctx, bool check_pages) {
  // A missing directory was refused as a usage error by `parse`. A
  // PostgreSQL store is opened as any client: the tool only reads there.
  persistence::store_open_options opts;
  opts.read_only = true;
  opts.check_pages = check_pages;
  if (!ctx.uri().is_postgres()) {
    std::error_code ec;
    auto data = std::filesystem::path{ctx.opts.data_dir} / "data.mdb";
    bool there = std::filesystem::exists(data, ec);
    if (ec == std::errc::permission_denied) { // not "no store": one the tool may not look into
      std::fprintf(stderr, "%s: cannot open %s: permission denied: %s cannot be read by this user; run as the"
                           " store's owner\n",
                   ctx.program.c_str(), ctx.where().c_str(), ctx.opts.data_dir.c_str());
      return nullptr;
    }
    if (!there)
      no_store(ctx, persistence::make_error(persistence::store_errc::no_store,
                                            "no store at " + ctx.opts.data_dir + " (no data.mdb in it)"));
  }
  auto store = persistence::open_store(ctx.uri(), opts);
  if (!store && !ctx.uri().is_postgres()
      && persistence::describe(store.error()).find("Permission denied") != std::string::npos) {
    // LMDB readers register in the lock file: reading needs write access to it.
    std::fprintf(stderr,
                 "%s: cannot open %s: permission denied. Readers of an LMDB store register in its lock file, so"
                 " reading needs write access to %s/lock.mdb; run as the store's owner, or read a copy"
                 " (cp -r %s /tmp/copy && %s COMMAND --data-dir /tmp/copy)\n",
                 ctx.program.c_str(), ctx.where().c_str(), ctx.opts.data_dir.c_str(), ctx.opts.data_dir.c_str(),
                 ctx.program.c_str());
    return nullptr;
  }
  if (!store) {
    if (persistence::code_of(store.error()) == persistence::store_errc::no_store)
      no_store(ctx, store.error());
    store_failure(ctx, "cannot open " + ctx.where(), store.error());
    return nullptr;
  }
  return std::move(*store);
}

persistence::store_maintenance& maintenance_of(persistence::event_store& store) {
  // Every durable store implements it; open_read_only opens only those.
  return dynamic_cast<persistence::store_maintenance&>(store);
}

int run_rebuild(const context& ctx) {
  const auto& name = ctx.opts.args.at(0);
  const tool_projection* found = nullptr;
  for (auto& p : ctx.projections)
    if (p.name == name)
      found = &p;
  if (found == nullptr) {
    std::string known;
    for (auto& p : ctx.projections)
      known += "\n  " + p.name + (p.description.empty() ? "" : "  " + p.description);
    std::fprintf(stderr, "%s: no projection '%s' is registered%s\n", ctx.program.c_str(), name.c_str(),
                 known.empty() ? "; this program registers none (an application registers its own with "
                                 "sourcery::operator_tool::add_projection)"
                               : ("; registered:" + known).c_str());
    return 2;
  }
  auto store = open_read_only(ctx);
  if (!store)
    return 1;
  store->use_registry(&ctx.types); // projections see events in their current shape
  auto models = ctx.open_read_models(false);
  if (!models)
    return store_failure(ctx, "cannot open the read models of " + ctx.where(), models.error());
  progress_meter meter{"rebuild " + name, "events"};
  auto reached = found->rebuild(*store, **models, [&](uint64_t done, uint64_t total) { meter.update(done, total); });
  if (!reached)
    return store_failure(ctx, "rebuild " + name, reached.error());
  meter.finish(*reached);
  if (ctx.opts.json)
    std::printf("%s\n", nlohmann::json{{"projection", name}, {"position", *reached}}.dump().c_str());
  else
    std::printf("rebuilt %s up to position %s\n", name.c_str(), grouped(*reached).c_str());
  return 0;
}

} // namespace tool

operator_tool::operator_tool(std::string program) : program_(std::move(program)) {}

operator_tool& operator_tool::add_routes(const router& routes) {
  for (const auto& [name, decl] : routes.aggregates()) {
    if (auto err = decl.register_events(*types_))
      throw std::logic_error("operator_tool: the events of aggregate " + name
                             + " clash with those registered before: " + persistence::describe(err));
    prefix_list_.push_back(decl.prefix);
  }
  // The same object the projections' rebuilds hold, so the order of the calls does not matter.
  *prefixes_ = stream_prefixes{prefix_list_};
  return *this;
}

operator_tool& operator_tool::default_data_dir(std::string dir) {
  data_dir_ = std::move(dir);
  return *this;
}

operator_tool& operator_tool::add_projection(tool_projection projection) {
  projections_.push_back(std::move(projection));
  return *this;
}

int operator_tool::run(int argc, char** argv) const {
  auto opts = tool::parse(program_, data_dir_, argc, argv);
  tool::context ctx{opts, program_, projections_, *types_};
  return tool::command_named(opts.command).run(ctx);
}

} // namespace sourcery
