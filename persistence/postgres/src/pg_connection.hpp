#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <libpq-fe.h>

#include "sourcery/persistence/event.hpp"
#include "sourcery/persistence/uuid.hpp"

// A thin RAII layer over libpq: connections that never block past a
// deadline (non-blocking sockets polled by us, since a frozen server never
// fires its own statement_timeout), binary parameters and results.
namespace sourcery::persistence::pg {

using clock = std::chrono::steady_clock;
using deadline = clock::time_point;

/// Type OIDs of the binary parameters we send (pg_type.h).
enum class oid : unsigned {
  unknown = 0, boolean = 16, bytea = 17, int8 = 20, int4 = 23, text = 25, uuid = 2950,
  bytea_array = 1001, int4_array = 1007, text_array = 1009, int8_array = 1016, uuid_array = 2951,
};

/// Binary parameters of one statement. Values are copied into owned
/// buffers, so temporaries may be passed.
class params {
public:
  params& add(int64_t v);
  params& add(int32_t v);
  params& add(bool v);
  params& add_text(std::string_view v);
  params& add_bytea(const uint8_t* data, size_t size);
  params& add_bytea(std::string_view v) { return add_bytea(reinterpret_cast<const uint8_t*>(v.data()), v.size()); }
  params& add_bytea(const bytes& v) { return add_bytea(v.data(), v.size()); }
  params& add(const uuid& v);
  params& null(oid type);
  /// A value in text form, its type left for the server to infer
  /// (nullopt: NULL): for statements a user wrote.
  params& text_value(const std::optional<std::string>& v);

  /// A one-dimensional array, built element by element.
  class array {
  public:
    explicit array(oid element);
    array& add(int64_t v);
    array& add(int32_t v);
    array& add_bytes(const uint8_t* data, size_t size);
    array& add_bytes(std::string_view v) { return add_bytes(reinterpret_cast<const uint8_t*>(v.data()), v.size()); }
    array& add_bytes(const bytes& v) { return add_bytes(v.data(), v.size()); }
    array& add(const uuid& v) { return add_bytes(v.bytes.data(), v.bytes.size()); }
    size_t size() const { return count_; }

  private:
    friend class params;
    std::string buf_;
    oid element_;
    uint32_t count_ = 0;
  };
  params& add(array a);

  int size() const { return static_cast<int>(values_.size()); }
  const unsigned* types() const { return types_.data(); }
  /// Pointers into the values (null for SQL NULL), valid while `*this` lives.
  std::vector<const char*> values() const;
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

private:
  params& push(oid type, std::string value, bool is_null = false, int fmt = 1);
  std::vector<unsigned> types_;
  std::vector<std::string> values_;
  std::vector<bool> nulls_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
};

/// An owned PGresult with binary accessors.
class result {
public:
  result() = default;
  explicit result(PGresult* r) : r_(r, &PQclear) {}
  int rows() const { return r_ ? PQntuples(r_.get()) : 0; }
  bool is_null(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }
  int64_t int8(int row, int col) const;
  int32_t int4(int row, int col) const;
  bool boolean(int row, int col) const;
  std::string_view raw(int row, int col) const {
    return {PQgetvalue(r_.get(), row, col), static_cast<size_t>(PQgetlength(r_.get(), row, col))};
  }
  std::string text(int row, int col) const { return std::string{raw(row, col)}; }
  void bytea_into(int row, int col, bytes& out) const;
  persistence::uuid uuid(int row, int col) const;
  PGresult* raw_result() const { return r_.get(); }

private:
  std::shared_ptr<PGresult> r_;
};

enum class format : int { text = 0, binary = 1 };

/// One connection. Moves, never copies; closed by the destructor.
class connection {
public:
  connection() = default;

  /// Connects with `conninfo` (a libpq URI or key=value string) before
  /// `until`. Errors: unavailable (refused, unreachable, too slow),
  /// authentication_failed, invalid_argument (a malformed conninfo).
  static caf::expected<connection> open(const std::string& conninfo, deadline until);
  /// Starts connecting without waiting; `carry_on` goes on with it. Errors:
  /// as `open`'s, for what is known at once.
  static caf::expected<connection> start(const std::string& conninfo);
  /// Goes on connecting until connected or `until`. A connection not made
  /// by then (`connecting()` still true) may be carried on later: a server
  /// that was frozen then answers this attempt instead of a pile of new
  /// ones. Errors: as `open`'s.
  caf::error carry_on(deadline until);
  /// Started, neither connected nor failed yet.
  bool connecting() const {
    return conn_ && polling_ != PGRES_POLLING_OK && polling_ != PGRES_POLLING_FAILED;
  }

  /// Runs one statement; answers its (last) result or the error it raised.
  /// A deadline that passes while the server holds the statement cancels it
  /// there and answers timeout; the connection is kept, and the next
  /// statement first collects the cancelled one's answer (and rolls back a
  /// transaction it left open) before the same kind of deadline. A server
  /// that froze thus finds its clients' connections when it thaws, instead
  /// of a pile of new ones to start at once (a backend's start costs
  /// seconds on a loaded machine). A connection that broke, or one drained
  /// for longer than `max_drain`, is dropped. Errors: see `error_of`.
  caf::expected<result> exec(std::string_view sql, const params& p, deadline until,
                             format results = format::binary);
  caf::expected<result> exec(std::string_view sql, deadline until) { return exec(sql, params{}, until); }

  /// As `exec`, through a statement prepared under `name` on first use (the
  /// hot statements: parsed and planned once per connection). `p` must
  /// carry the same types every time.
  caf::expected<result> exec_prepared(const std::string& name, std::string_view sql, const params& p, deadline until,
                                      format results = format::binary);

  /// The SQLSTATE of the last failed statement ("" if it failed without one,
  /// e.g. because the connection broke).
  const std::string& last_sqlstate() const { return sqlstate_; }
  /// The constraint the last failed statement violated, if it names one.
  const std::string& last_constraint() const { return constraint_; }

  /// Runs statements separated by ';' (text protocol, no parameters).
  caf::error exec_script(std::string_view sql, deadline until);
  /// Runs `sql`, several statements in one round trip (no parameters:
  /// quote values with `literal`); the last statement's result, in text.
  caf::expected<result> exec_statements(std::string_view sql, deadline until);
  /// `value` as an SQL string literal, quoted for this connection.
  std::string literal(std::string_view value) const;

  bool ok() const { return conn_ && PQstatus(conn_.get()) == CONNECTION_OK; }
  /// Drops the connection (after an error that leaves its state unknown).
  void drop() {
    conn_.reset();
    prepared_.clear();
    draining_ = false;
    cancel_pending_.reset();
  }
  /// A statement past its deadline was cancelled and its answer is still
  /// to come: the next statement first collects it (see `exec`).
  bool draining() const { return conn_ && draining_; }
  /// Open, and the outcome of its last statement known (not draining): a
  /// caller may go on with it (roll back, say) instead of treating the
  /// statement as lost.
  bool settled() const { return ok() && !draining_; }
  PGconn* raw() const { return conn_.get(); }
  int socket() const { return conn_ ? PQsocket(conn_.get()) : -1; }

  /// Waits until the socket is readable (or `until`); false on timeout.
  bool wait_readable(deadline until) const;

private:
  /// After a PQsend*: flushes, collects the answer before `until`, and
  /// turns a failure into an error (the connection dropped when its state
  /// is unknown). `sent` is the PQsend* call's return.
  caf::expected<result> await(int sent, deadline until);
  /// Asks the server to cancel what this connection runs (a statement past
  /// its deadline), without waiting for the answer.
  void cancel_on_server();
  /// Clears the last error and collects a cancelled statement's answer;
  /// an error when the connection is closed, broke or is still busy at `until`.
  caf::error begin_statement(deadline until);
  /// Collects the answer of a statement given up on; rolls back what it
  /// left open. False while the server has not answered by `until`.
  bool drain(deadline until);
  /// Reads until the current result is complete (or the connection broke);
  /// false if the server has not answered by `until`.
  bool await_result(deadline until);
  /// After a statement's deadline passed: cancels it on the server and
  /// keeps the connection to drain (or drops one drained too long).
  void give_up_statement();
  static caf::error closed_error();
  caf::expected<PGresult*> collect(deadline until);
  bool flush(deadline until);
  std::unique_ptr<PGconn, void (*)(PGconn*)> conn_{nullptr, &PQfinish};
  std::string sqlstate_;
  std::string constraint_;
  std::set<std::string> prepared_;
  PostgresPollingStatusType polling_ = PGRES_POLLING_OK;
  bool draining_ = false;
  enum : int { cancel_sending, cancel_sent, cancel_failed };
  std::shared_ptr<std::atomic<int>> cancel_pending_; ///< the last cancel request, while not known sent
  deadline draining_since_{};
};

/// How long a connection waits for a cancelled statement's answer (across
/// every statement tried on it meanwhile) before it is dropped.
inline constexpr std::chrono::seconds max_drain{10};

/// The store error for a failed statement: its SQLSTATE class decides the
/// code (timeouts, lost connections, a full disk, ...); the message keeps
/// the server's words.
caf::error error_of(std::string_view sqlstate, std::string message);

/// Quotes an identifier ("name") for SQL text.
std::string quote_ident(std::string_view name);

} // namespace sourcery::persistence::pg
