#include "pg_connection.hpp"

#include <poll.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>

#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::pg {

namespace {

void put_be(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t get_be(std::string_view in) {
  uint64_t v = 0;
  for (unsigned char c : in)
    v = (v << 8) | c;
  return v;
}

oid array_type_of(oid element) {
  switch (element) {
    case oid::int8: return oid::int8_array;
    case oid::int4: return oid::int4_array;
    case oid::bytea: return oid::bytea_array;
    case oid::text: return oid::text_array;
    case oid::uuid: return oid::uuid_array;
    default: return element;
  }
}

// libpq's messages span lines ("...failed: No such file\n\tIs the server
// running..."): one line, for logs and for a program's one-line error.
std::string trimmed(const char* msg) {
  std::string s;
  bool space = false;
  for (const char* p = msg ? msg : ""; *p; ++p) {
    if (*p == '\n' || *p == '\t' || *p == '\r' || *p == ' ') {
      space = !s.empty();
      continue;
    }
    if (space)
      s += ' ';
    space = false;
    s += *p;
  }
  return s;
}

// Waits for `events` on `fd` until `until`; false on timeout.
bool wait_fd(int fd, short events, deadline until) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now()).count();
    if (left <= 0)
      return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000 * 60)));
    if (n > 0)
      return true;
    if (n < 0 && errno != EINTR)
      return true; // let libpq see and report the socket's error
  }
}

caf::error connect_error(const std::string& msg) {
  // libpq gives no SQLSTATE for a failed login: recognize the server's words.
  for (auto* word : {"password authentication failed", "authentication failed", "pg_hba.conf", "role \"",
                     "no password supplied", "permission denied for database"})
    if (msg.find(word) != std::string::npos)
      return make_error(store_errc::authentication_failed, "the database refused the login: " + msg);
  for (auto* word : {"invalid integer value", "invalid port number", "invalid sslmode"})
    if (msg.find(word) != std::string::npos)
      return make_error(store_errc::invalid_argument, "bad PostgreSQL connection string: " + msg);
  return make_error(store_errc::unavailable, "cannot connect to the database: " + msg);
}

} // namespace

// -- params -------------------------------------------------------------------

params& params::push(oid type, std::string value, bool is_null, int fmt) {
  types_.push_back(static_cast<unsigned>(type));
  lengths_.push_back(static_cast<int>(value.size()));
  formats_.push_back(fmt);
  nulls_.push_back(is_null);
  values_.push_back(std::move(value));
  return *this;
}

params& params::add(int64_t v) {
  std::string s;
  put_be(s, static_cast<uint64_t>(v), 8);
  return push(oid::int8, std::move(s));
}

params& params::add(int32_t v) {
  std::string s;
  put_be(s, static_cast<uint32_t>(v), 4);
  return push(oid::int4, std::move(s));
}

params& params::add(bool v) {
  return push(oid::boolean, std::string(1, v ? '\1' : '\0'));
}

params& params::add_text(std::string_view v) {
  return push(oid::text, std::string{v});
}

params& params::add_bytea(const uint8_t* data, size_t size) {
  return push(oid::bytea, std::string{reinterpret_cast<const char*>(data), size});
}

params& params::add(const uuid& v) {
  return push(oid::uuid, std::string{reinterpret_cast<const char*>(v.bytes.data()), v.bytes.size()});
}

params& params::text_value(const std::optional<std::string>& v) {
  // Type 0: the server infers it from the statement, as psql would.
  return push(oid::unknown, v.value_or(std::string{}), !v, 0);
}

params& params::null(oid type) {
  return push(type, {}, true);
}

params& params::add(array a) {
  // Binary array: ndim, has-null flag, element type, then (length, lower
  // bound) per dimension, then each element as (length, bytes).
  std::string s;
  put_be(s, a.count_ == 0 ? 0 : 1, 4);
  put_be(s, 0, 4);
  put_be(s, static_cast<unsigned>(a.element_), 4);
  if (a.count_ != 0) {
    put_be(s, a.count_, 4);
    put_be(s, 1, 4);
  }
  s += a.buf_;
  return push(array_type_of(a.element_), std::move(s));
}

std::vector<const char*> params::values() const {
  std::vector<const char*> out;
  out.reserve(values_.size());
  for (size_t i = 0; i < values_.size(); ++i)
    out.push_back(nulls_[i] ? nullptr : values_[i].data());
  return out;
}

params::array::array(oid element) : element_(element) {}

params::array& params::array::add(int64_t v) {
  put_be(buf_, 8, 4);
  put_be(buf_, static_cast<uint64_t>(v), 8);
  ++count_;
  return *this;
}

params::array& params::array::add(int32_t v) {
  put_be(buf_, 4, 4);
  put_be(buf_, static_cast<uint32_t>(v), 4);
  ++count_;
  return *this;
}

params::array& params::array::add_bytes(const uint8_t* data, size_t size) {
  put_be(buf_, size, 4);
  buf_.append(reinterpret_cast<const char*>(data), size);
  ++count_;
  return *this;
}

// -- result -------------------------------------------------------------------

int64_t result::int8(int row, int col) const {
  return static_cast<int64_t>(get_be(raw(row, col)));
}

int32_t result::int4(int row, int col) const {
  return static_cast<int32_t>(get_be(raw(row, col)));
}

bool result::boolean(int row, int col) const {
  auto r = raw(row, col);
  return !r.empty() && r[0] != 0;
}

void result::bytea_into(int row, int col, bytes& out) const {
  auto r = raw(row, col);
  out.assign(reinterpret_cast<const uint8_t*>(r.data()), reinterpret_cast<const uint8_t*>(r.data()) + r.size());
}

persistence::uuid result::uuid(int row, int col) const {
  persistence::uuid u;
  auto r = raw(row, col);
  if (r.size() == u.bytes.size())
    std::memcpy(u.bytes.data(), r.data(), r.size());
  return u;
}

// -- connection ---------------------------------------------------------------

caf::expected<connection> connection::open(const std::string& conninfo, deadline until) {
  // A malformed string is the caller's mistake, not an unreachable server.
  char* parse_error = nullptr;
  if (PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &parse_error)) {
    PQconninfoFree(parsed);
  } else {
    std::string msg = parse_error ? trimmed(parse_error) : "out of memory";
    if (parse_error)
      PQfreemem(parse_error);
    return make_error(store_errc::invalid_argument, "bad PostgreSQL connection string: " + msg);
  }
  auto c = start(conninfo);
  if (!c)
    return c.error();
  if (auto err = c->carry_on(until))
    return err;
  return c;
}

caf::expected<connection> connection::start(const std::string& conninfo) {
  connection c;
  c.conn_.reset(PQconnectStart(conninfo.c_str()));
  if (!c.conn_)
    return make_error(store_errc::unavailable, "cannot connect to the database: out of memory");
  if (PQstatus(c.conn_.get()) == CONNECTION_BAD)
    return connect_error(trimmed(PQerrorMessage(c.conn_.get())));
  c.polling_ = PGRES_POLLING_WRITING;
  return c;
}

caf::error connection::carry_on(deadline until) {
  if (!conn_)
    return closed_error();
  for (;;) {
    if (polling_ == PGRES_POLLING_OK)
      break;
    if (polling_ == PGRES_POLLING_FAILED)
      return connect_error(trimmed(PQerrorMessage(conn_.get())));
    short events = polling_ == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    if (!wait_fd(PQsocket(conn_.get()), events, until))
      return make_error(store_errc::unavailable, "cannot connect to the database: no answer in time");
    polling_ = PQconnectPoll(conn_.get());
  }
  // Server notices ("already exists, skipping") are not errors: libpq would
  // print them on stderr.
  PQsetNoticeProcessor(conn_.get(), [](void*, const char*) {}, nullptr);
  if (PQsetnonblocking(conn_.get(), 1) != 0)
    return make_error(store_errc::unavailable, "cannot connect to the database: " + trimmed(PQerrorMessage(conn_.get())));
  return {};
}

bool connection::wait_readable(deadline until) const {
  return wait_fd(socket(), POLLIN, until);
}

bool connection::flush(deadline until) {
  for (;;) {
    int r = PQflush(conn_.get());
    if (r == 0)
      return true;
    if (r < 0)
      return true; // the error surfaces when the result is collected
    if (!wait_fd(socket(), POLLIN | POLLOUT, until))
      return false;
    if (PQconsumeInput(conn_.get()) == 0)
      return true;
  }
}

bool connection::await_result(deadline until) {
  while (PQisBusy(conn_.get())) {
    if (!wait_readable(until))
      return false;
    if (PQconsumeInput(conn_.get()) == 0)
      break; // broken: PQgetResult reports it
  }
  return true;
}

caf::expected<PGresult*> connection::collect(deadline until) {
  PGresult* kept = nullptr;
  for (;;) {
    if (!await_result(until)) {
      if (kept)
        PQclear(kept);
      give_up_statement();
      return make_error(store_errc::timeout, "the database server did not answer in time");
    }
    PGresult* r = PQgetResult(conn_.get());
    if (!r)
      break;
    if (kept && PQresultStatus(kept) == PGRES_FATAL_ERROR) {
      PQclear(r); // keep the first error
      continue;
    }
    if (kept)
      PQclear(kept);
    kept = r;
    if (PQstatus(conn_.get()) == CONNECTION_BAD)
      break;
  }
  return kept;
}

caf::expected<result> connection::await(int sent, deadline until) {
  if (sent == 0) {
    auto msg = trimmed(PQerrorMessage(conn_.get()));
    drop();
    return make_error(store_errc::unavailable, "lost the connection to the database: " + msg);
  }
  if (!flush(until)) {
    cancel_on_server();
    drop();
    return make_error(store_errc::timeout, "the database server did not take the statement in time");
  }
  auto got = collect(until);
  if (!got)
    return got.error();
  result res{*got};
  auto status = *got ? PQresultStatus(*got) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY)
    return res;
  if (PQstatus(conn_.get()) == CONNECTION_BAD || !*got) {
    auto msg = trimmed(PQerrorMessage(conn_.get()));
    drop();
    return make_error(store_errc::unavailable, "lost the connection to the database: " + msg);
  }
  const char* state = PQresultErrorField(*got, PG_DIAG_SQLSTATE);
  sqlstate_ = state ? state : "";
  const char* constraint = PQresultErrorField(*got, PG_DIAG_CONSTRAINT_NAME);
  constraint_ = constraint ? constraint : "";
  return error_of(sqlstate_, trimmed(PQresultErrorMessage(*got)));
}

void connection::cancel_on_server() {
  // Dropping the connection alone leaves the statement running on the
  // server, holding its locks until it next notices the client gone. A
  // cancel request goes on a connection of its own; PQcancel blocks until
  // the server answers (a frozen one: until it thaws), so it runs on a
  // thread of its own, and a few at most are outstanding at once.
  static std::atomic<int> outstanding{0};
  if (!conn_ || outstanding.load() >= 4)
    return;
  PGcancel* cancel = PQgetCancel(conn_.get());
  if (cancel == nullptr)
    return;
  ++outstanding;
  auto pending = std::make_shared<std::atomic<int>>(cancel_sending);
  try {
    std::thread{[cancel, pending] {
      char why[256];
      bool sent = PQcancel(cancel, why, sizeof why) != 0;
      PQfreeCancel(cancel);
      pending->store(sent ? cancel_sent : cancel_failed);
      --outstanding;
    }}.detach();
    cancel_pending_ = std::move(pending);
  } catch (const std::system_error&) {
    PQfreeCancel(cancel);
    --outstanding;
  }
}

void connection::give_up_statement() {
  if (!draining_) {
    cancel_on_server();
    draining_ = true;
    draining_since_ = clock::now();
  } else if (clock::now() - draining_since_ > max_drain) {
    drop();
  }
}

bool connection::drain(deadline until) {
  // The cancel request first: one that reached the server late would
  // cancel the next statement instead.
  while (cancel_pending_ && cancel_pending_->load() == cancel_sending) {
    if (clock::now() >= until)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
  if (cancel_pending_ && cancel_pending_->load() == cancel_failed) {
    drop(); // the server did not take the cancel request: it is gone (restarted, failed over)
    return true;
  }
  cancel_pending_.reset();
  // The answer of the statement given up on (its error, once cancelled),
  // then nothing: the connection is ready again.
  for (;;) {
    if (!await_result(until))
      return false;
    PGresult* r = PQgetResult(conn_.get());
    if (!r)
      break;
    PQclear(r);
    if (PQstatus(conn_.get()) == CONNECTION_BAD)
      break;
  }
  draining_ = false;
  if (PQstatus(conn_.get()) != CONNECTION_OK) {
    drop();
    return true;
  }
  // Cancelled inside a transaction: leave none open for the next statement.
  if (PQtransactionStatus(conn_.get()) != PQTRANS_IDLE) {
    auto r = exec("ROLLBACK", until);
    if (!r && ok() && !draining_)
      drop();
    return !draining_;
  }
  return true;
}

caf::error connection::begin_statement(deadline until) {
  sqlstate_.clear();
  constraint_.clear();
  if (!ok())
    return closed_error();
  if (draining_) {
    if (!drain(until)) {
      give_up_statement(); // drops one drained for longer than max_drain
      if (!conn_)
        return closed_error();
      return make_error(store_errc::timeout, "the database server did not answer in time");
    }
    if (!ok())
      return closed_error();
  }
  return {};
}

caf::error connection::closed_error() {
  return make_error(store_errc::unavailable, "the connection to the database is closed");
}

caf::expected<result> connection::exec(std::string_view sql, const params& p, deadline until, format results) {
  if (auto err = begin_statement(until))
    return err;
  std::string text{sql};
  auto values = p.values();
  return await(PQsendQueryParams(conn_.get(), text.c_str(), p.size(), p.types(), values.data(), p.lengths(),
                                 p.formats(), static_cast<int>(results)),
               until);
}

caf::expected<result> connection::exec_prepared(const std::string& name, std::string_view sql, const params& p,
                                                deadline until, format results) {
  if (auto err = begin_statement(until))
    return err;
  if (!prepared_.count(name)) {
    std::string text{sql};
    if (auto r = await(PQsendPrepare(conn_.get(), name.c_str(), text.c_str(), p.size(), p.types()), until); !r)
      return r.error();
    prepared_.insert(name);
  }
  auto values = p.values();
  return await(PQsendQueryPrepared(conn_.get(), name.c_str(), p.size(), values.data(), p.lengths(), p.formats(),
                                   static_cast<int>(results)),
               until);
}

caf::error connection::exec_script(std::string_view sql, deadline until) {
  if (auto err = begin_statement(until))
    return err;
  std::string text{sql};
  auto r = await(PQsendQuery(conn_.get(), text.c_str()), until);
  return r ? caf::error{} : r.error();
}

caf::expected<result> connection::exec_statements(std::string_view sql, deadline until) {
  if (auto err = begin_statement(until))
    return err;
  std::string text{sql};
  return await(PQsendQuery(conn_.get(), text.c_str()), until);
}

std::string connection::literal(std::string_view value) const {
  std::unique_ptr<char, void (*)(void*)> quoted{PQescapeLiteral(conn_.get(), value.data(), value.size()), PQfreemem};
  if (quoted)
    return quoted.get();
  // Out of memory, or an encoding the server rejects: a literal that matches nothing.
  return "NULL";
}

caf::error error_of(std::string_view state, std::string message) {
  auto code = store_errc::io_error;
  auto cls = state.substr(0, 2);
  if (state == "57014" || state == "55P03" || state == "25P03")
    code = store_errc::timeout; // statement, lock or idle-in-transaction timeout
  else if (cls == "08" || state == "57P01" || state == "57P02" || state == "57P03" || state == "53300")
    code = store_errc::unavailable; // connection broken, server shutting down, too many clients
  else if (state == "53100")
    code = store_errc::store_full;
  else if (cls == "28")
    code = store_errc::authentication_failed;
  else if (cls == "22")
    code = store_errc::invalid_argument;
  else if (cls == "XX")
    code = store_errc::corrupt_store;
  if (!state.empty())
    message = "[" + std::string{state} + "] " + message;
  return make_error(code, "PostgreSQL: " + message);
}

std::string quote_ident(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"')
      out += '"';
    out += c;
  }
  out += '"';
  return out;
}

} // namespace sourcery::persistence::pg
