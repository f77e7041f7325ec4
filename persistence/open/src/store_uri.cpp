#include "sourcery/persistence/store_uri.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <regex>

#include "sourcery/config.hpp"
#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/memory_store.hpp"
#include "personal_data.hpp"
#if SOURCERY_WITH_POSTGRES
#include "sourcery/persistence/postgres_projection_store.hpp"
#include "sourcery/persistence/postgres_store.hpp"
#endif

namespace sourcery::persistence {

namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Takes our own parameters out of the query of a libpq URI (libpq refuses
// parameters it does not know): `schema=NAME` and `operation_timeout=S`;
// reads libpq's `connect_timeout=S` too (with a non-blocking connect, the
// deadline is ours to keep). Returns false on a value that is not a number.
bool take_parameters(store_uri& u) {
  auto& uri = u.location;
  auto q = uri.find('?');
  if (q == std::string::npos)
    return true;
  std::string query = uri.substr(q + 1), kept;
  auto seconds = [](const std::string& v, std::chrono::milliseconds& out) {
    char* end = nullptr;
    double d = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(d > 0) || d > 86400)
      return false;
    out = std::chrono::milliseconds{static_cast<int64_t>(d * 1000)};
    return true;
  };
  size_t start = 0;
  bool ok = true;
  while (start <= query.size()) {
    auto end = query.find('&', start);
    if (end == std::string::npos)
      end = query.size();
    auto part = query.substr(start, end - start);
    if (starts_with(part, "schema=")) {
      u.schema = part.substr(7);
    } else if (starts_with(part, "operation_timeout=")) {
      ok &= seconds(part.substr(18), u.operation_timeout);
    } else if (!part.empty()) {
      if (starts_with(part, "connect_timeout="))
        ok &= seconds(part.substr(16), u.connect_timeout);
      kept += (kept.empty() ? "" : "&") + part;
    }
    start = end + 1;
  }
  uri = uri.substr(0, q) + (kept.empty() ? "" : "?" + kept);
  return ok;
}

} // namespace

caf::expected<store_uri> store_uri::parse(std::string_view text) {
  auto bad = [&](std::string why) {
    return make_error(store_errc::invalid_argument,
                      "bad store URI '" + redact_password(text) + "': " + why
                        + " (use lmdb:DIR, memory: or postgresql://...)");
  };
  if (starts_with(text, "lmdb:")) {
    auto dir = text.substr(5);
    if (starts_with(dir, "//"))
      dir.remove_prefix(2);
    if (dir.empty())
      return bad("no directory");
    return store_uri::lmdb(std::string{dir});
  }
  if (text == "memory:" || text == "memory")
    return store_uri::memory();
  if (starts_with(text, "postgresql://") || starts_with(text, "postgres://")) {
    store_uri u;
    u.type = kind::postgres;
    u.location = std::string{text};
    if (!take_parameters(u))
      return bad("connect_timeout and operation_timeout take seconds");
    if (u.schema.empty())
      return bad("schema= needs a name");
    return u;
  }
  return bad("unknown scheme");
}

std::string redact_password(std::string_view text) {
  std::string out{text};
  // postgresql://user:password@host/... -> postgresql://user@host/...
  if (auto scheme_end = out.find("://"); scheme_end != std::string::npos) {
    auto at = out.find('@', scheme_end + 3);
    auto slash = out.find_first_of("/?", scheme_end + 3);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
      auto colon = out.find(':', scheme_end + 3);
      if (colon != std::string::npos && colon < at)
        out.erase(colon, at - colon);
    }
  }
  // A `password=` parameter of a URI's query or of a key=value connection
  // string (quoted or not): its value becomes "***".
  static const std::regex parameter{R"((^|[?&\s])(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*))",
                                    std::regex::icase};
  return std::regex_replace(out, parameter, "$1$2***");
}

std::optional<std::string> store_from_environment() {
  const char* v = std::getenv("SOURCERY_STORE");
  if (v == nullptr || *v == '\0')
    return std::nullopt;
  return std::string{v};
}

std::string store_uri::text() const {
  switch (type) {
    case kind::lmdb: return "lmdb:" + location;
    case kind::memory: return "memory:";
    case kind::postgres: {
      auto out = location;
      auto add = [&](const std::string& kv) { out += (out.find('?') == std::string::npos ? "?" : "&") + kv; };
      if (schema != "sourcery")
        add("schema=" + schema);
      if (operation_timeout != std::chrono::milliseconds{10000}) {
        char seconds[32];
        std::snprintf(seconds, sizeof seconds, "operation_timeout=%g",
                      static_cast<double>(operation_timeout.count()) / 1000.0);
        add(seconds);
      }
      return out;
    }
  }
  return {};
}

std::string store_uri::to_string() const {
  return redact_password(text());
}

namespace {

// The options of an LMDB store or its read models.
template <class Options>
Options lmdb_like(const store_uri& uri, const store_open_options& options) {
  Options o;
  o.path = uri.location;
  o.mode = options.mode;
  o.read_only = options.read_only;
  o.check_pages = options.check_pages;
  return o;
}

#if SOURCERY_WITH_POSTGRES
// The options of a PostgreSQL store or its read models.
template <class Options>
Options postgres_like(const store_uri& uri, const store_open_options& options) {
  Options o;
  o.conninfo = uri.location;
  o.schema = uri.schema;
  o.setup = options.read_only ? schema_setup::none : options.create ? schema_setup::create : schema_setup::upgrade;
  o.mode = options.mode;
  o.connect_timeout = uri.connect_timeout;
  o.operation_timeout = uri.operation_timeout;
  return o;
}
#else
caf::error without_postgres() {
  return make_error(store_errc::invalid_argument,
                    "this build of Sourcery has no PostgreSQL store (built with -DSOURCERY_WITH_POSTGRES=OFF)");
}
#endif

template <class Base, class T>
caf::expected<std::unique_ptr<Base>> widen(caf::expected<std::unique_ptr<T>> opened) {
  if (!opened)
    return opened.error();
  return std::unique_ptr<Base>{std::move(*opened)};
}

} // namespace

namespace {

caf::expected<std::unique_ptr<event_store>> open_store_only(const store_uri& uri, const store_open_options& options) {
  switch (uri.type) {
    case store_uri::kind::memory:
      return std::unique_ptr<event_store>{std::make_unique<memory_store>()};
    case store_uri::kind::lmdb:
      return widen<event_store>(lmdb_store::open(lmdb_like<lmdb_options>(uri, options)));
    case store_uri::kind::postgres:
#if SOURCERY_WITH_POSTGRES
      return widen<event_store>(postgres_store::open(postgres_like<postgres_options>(uri, options)));
#else
      return without_postgres();
#endif
  }
  return make_error(store_errc::invalid_argument, "unknown store kind");
}

} // namespace

caf::expected<std::unique_ptr<event_store>> open_store(const store_uri& uri, const store_open_options& options) {
  std::optional<detail::master_key> master;
  if (!options.master_key_file.empty()) { // read first: a bad file opens nothing
    auto key = detail::read_master_key(options.master_key_file);
    if (!key)
      return key.error();
    master = *key;
  }
  auto store = open_store_only(uri, options);
  if (store && master)
    if (auto err = (*store)->use_master_key(bytes(master->begin(), master->end())))
      return err;
  return store;
}

caf::expected<std::unique_ptr<projection_store>> open_read_models(const store_uri& uri,
                                                                  const store_open_options& options) {
  switch (uri.type) {
    case store_uri::kind::memory:
      return make_error(store_errc::invalid_argument, "read models need a directory or a database, not memory:");
    case store_uri::kind::lmdb:
      return projection_store::open(lmdb_like<projection_store_options>(uri, options));
    case store_uri::kind::postgres:
#if SOURCERY_WITH_POSTGRES
      return widen<projection_store>(
        postgres_projection_store::open(postgres_like<postgres_read_model_options>(uri, options)));
#else
      return without_postgres();
#endif
  }
  return make_error(store_errc::invalid_argument, "unknown store kind");
}

caf::expected<store_init> init_store(const store_uri& uri, const store_open_options& options) {
  if (uri.type == store_uri::kind::memory)
    return make_error(store_errc::invalid_argument, "memory: holds nothing to create");
  store_init result;
  auto make = options;
  make.read_only = false;
  make.create = false;
  // The store as an application opens it (upgraded when older); only when
  // there is none, a new one.
  std::error_code ec;
  if (uri.type == store_uri::kind::lmdb)
    make.create = result.created = !std::filesystem::exists(std::filesystem::path{uri.location} / "data.mdb", ec);
  auto store = open_store(uri, make);
  if (!store && !make.create && code_of(store.error()) == store_errc::no_store) {
    make.create = result.created = true;
    store = open_store(uri, make);
  }
  if (!store)
    return store.error();
  result.head_position = (*store)->head_position();
  if (uri.is_postgres())
    if (auto models = open_read_models(uri, make); !models)
      return models.error();
  return result;
}

} // namespace sourcery::persistence
