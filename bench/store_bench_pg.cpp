// The store suite on PostgreSQL (`sourcery-bench store --store postgresql://...`):
// durable appends with 1, 16 and 256 concurrent appenders (group commit),
// reads of $all and of one stream, and, in alternating rounds of the same
// run, the ceiling: plain INSERTs of 256 events per durable commit from one
// connection, with no checks. Everything runs in a schema of its own,
// dropped at the end.

#include <unistd.h>

#include <libpq-fe.h>

#include "append_load.hpp"
#include "bench.hpp"
#include "sourcery/persistence/store_uri.hpp"

namespace sourcery::bench {

namespace {

std::string hex_bytea(const bytes& b) {
  static const char* digits = "0123456789abcdef";
  std::string out = "\\x";
  for (auto c : b) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

/// Plain INSERTs of `batch` events per durable commit (one prepared
/// multi-row statement) into `table`, with no checks: events/s, or 0 on
/// failure.
double raw_insert(PGconn* c, const std::string& table, size_t total, size_t batch) {
  std::string sql = "INSERT INTO " + table + " VALUES ";
  for (size_t i = 0; i < batch; ++i) {
    size_t p = i * 6;
    sql += (i ? ",(" : "(") + ("$" + std::to_string(p + 1)) + "::bigint,$" + std::to_string(p + 2) + "::uuid,$"
           + std::to_string(p + 3) + ",$" + std::to_string(p + 4) + "::bigint,$" + std::to_string(p + 5) + ",$"
           + std::to_string(p + 6) + "::bytea)";
  }
  auto name = "raw_" + std::to_string(batch) + "_" + std::to_string(std::hash<std::string>{}(table) % 1000);
  PGresult* prep = PQprepare(c, name.c_str(), sql.c_str(), 0, nullptr);
  bool prepared = PQresultStatus(prep) == PGRES_COMMAND_OK;
  PQclear(prep);
  if (!prepared)
    return 0;
  static int64_t position = 0, batches = 0;
  auto data = hex_bytea(payload(42));
  std::vector<std::string> values(batch * 6);
  std::vector<const char*> ptrs(batch * 6);
  auto start = std::chrono::steady_clock::now();
  for (size_t done = 0; done < total; done += batch) {
    for (size_t i = 0; i < batch; ++i) {
      ++position;
      values[i * 6] = std::to_string(position);
      values[i * 6 + 1] = uuid::random().to_string();
      values[i * 6 + 2] = "raw-" + std::to_string(i);
      values[i * 6 + 3] = std::to_string(batches + 1);
      values[i * 6 + 4] = "bank.deposited";
      values[i * 6 + 5] = data;
    }
    ++batches;
    for (size_t k = 0; k < values.size(); ++k)
      ptrs[k] = values[k].c_str();
    PQclear(PQexec(c, "BEGIN"));
    PGresult* r = PQexecPrepared(c, name.c_str(), static_cast<int>(ptrs.size()), ptrs.data(), nullptr, nullptr, 0);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    r = PQexec(c, "COMMIT");
    ok = ok && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
      std::fprintf(stderr, "raw insert failed: %s\n", PQerrorMessage(c));
      return 0;
    }
  }
  std::string dealloc = "DEALLOCATE " + name;
  PQclear(PQexec(c, dealloc.c_str()));
  return static_cast<double>(total) / seconds_since(start);
}

bool exec(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok)
    std::fprintf(stderr, "%s: %s\n", sql.c_str(), PQresultErrorMessage(r));
  PQclear(r);
  return ok;
}

} // namespace

int run_pg_store_suite(const options& opts) {
  const std::string suite = "store";
  auto uri = store_uri::parse(opts.store);
  if (!uri) {
    std::fprintf(stderr, "sourcery-bench: %s\n", describe(uri.error()).c_str());
    return 1;
  }
  auto ms = [&](int base) { return std::chrono::milliseconds{static_cast<int>(base * opts.scale)}; };
  const std::string schema = "bench_" + std::to_string(::getpid());
  postgres_options po;
  po.conninfo = uri->location;
  po.schema = schema;
  po.setup = schema_setup::create; // the bench's own schema, dropped at the end
  auto store = postgres_store::open(po);
  if (!store) {
    std::fprintf(stderr, "sourcery-bench: cannot open %s: %s\n", uri->to_string().c_str(),
                 describe(store.error()).c_str());
    return 1;
  }
  PGconn* raw = PQconnectdb(uri->location.c_str());
  PQsetNoticeProcessor(raw, [](void*, const char*) {}, nullptr); // "drop cascades to ..."
  if (PQstatus(raw) != CONNECTION_OK) {
    std::fprintf(stderr, "sourcery-bench: %s\n", PQerrorMessage(raw));
    PQfinish(raw);
    return 1;
  }
  // The ceiling: the events alone, in a table with the event table's keys
  // (position, event id, stream and version): what inserting 256 events
  // costs before any check, counter or stream row. And the same rows into
  // a table without any index, for the cost of the keys themselves.
  const std::string table = "\"" + schema + "\".raw_events", heap = "\"" + schema + "\".raw_heap";
  if (!exec(raw, "SET synchronous_commit = on")
      || !exec(raw, "CREATE TABLE " + table
                      + " (position bigint PRIMARY KEY, event_id uuid UNIQUE, stream_id text, stream_version bigint,"
                        " type text, data bytea, UNIQUE (stream_id, stream_version))")
      || !exec(raw, "CREATE TABLE " + heap
                      + " (position bigint, event_id uuid, stream_id text, stream_version bigint, type text,"
                        " data bytea)")) {
    PQfinish(raw);
    return 1;
  }
  // Commit latency drifts on a shared virtual disk: the ceiling and the
  // store run in alternating rounds, each reporting its median.
  const int rounds = 3;
  std::vector<double> ceiling, no_index;
  std::map<int, std::vector<double>> rates, per_commit;
  const size_t raw_events = static_cast<size_t>(256 * 100 * opts.scale) / 256 * 256 + 256;
  for (int round = 0; round < rounds; ++round) {
    ceiling.push_back(raw_insert(raw, table, raw_events, 256));
    no_index.push_back(raw_insert(raw, heap, raw_events, 256));
    for (int appenders : {1, 16, 256}) {
      if (!wanted("append_" + std::to_string(appenders)))
        continue;
      double pc = 0;
      rates[appenders].push_back(
        durable_appends(**store, "round" + std::to_string(round), appenders, ms(appenders == 1 ? 500 : 1000), pc));
      per_commit[appenders].push_back(pc);
    }
  }
  report(suite, "pg_raw_insert_256", median(ceiling), "events/s");
  report(suite, "pg_raw_insert_256_no_index", median(no_index), "events/s");
  for (auto& [appenders, r] : rates) {
    report(suite, "pg_append_durable_" + std::to_string(appenders), median(r), "events/s");
    report(suite, "pg_append_durable_" + std::to_string(appenders) + "_per_commit", median(per_commit[appenders]),
           "appends/commit");
  }
  if (auto r256 = rates.find(256); r256 != rates.end())
    report(suite, "pg_append_durable_256_vs_raw_insert_256", median(r256->second) / median(ceiling), "ratio");

  if (wanted("reads") && !measure_reads(**store, suite, "pg_", static_cast<size_t>(100'000 * opts.scale)))
    return 1;
  store->reset();
  exec(raw, "DROP SCHEMA \"" + schema + "\" CASCADE");
  PQfinish(raw);
  return 0;
}

} // namespace sourcery::bench
