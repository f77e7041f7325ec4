#include "sourcery/persistence/projection_store.hpp"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include <lmdb.h>

#include "big_endian.hpp"
#include "lmdb_error.hpp"
#include "lmdb_guard.hpp"
#include "lmdb_open.hpp"
#include "lmdb_path_claim.hpp"
#include "lmdb_read_txn.hpp"
#include "read_model_names.hpp"

namespace sourcery::persistence {

namespace {

namespace safe = detail::safe;
using detail::mdb_error;

// Rows live in one database, keyed projection \0 table \0 key, so a
// projection's rows are one key range (reset, dump) and a table's too (scan).
std::string row_prefix(std::string_view projection, std::string_view table) {
  std::string k;
  k.reserve(projection.size() + table.size() + 2);
  k.append(projection).push_back('\0');
  k.append(table).push_back('\0');
  return k;
}

std::string projection_prefix(std::string_view projection) {
  std::string k{projection};
  k.push_back('\0');
  return k;
}

MDB_val val(std::string_view s) {
  return {s.size(), const_cast<char*>(s.data())};
}

std::string_view view(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

/// Visits the rows whose key starts with `prefix`, in order.
template <class F>
int for_prefix(MDB_txn* txn, MDB_dbi dbi, const std::string& prefix, F&& f) {
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(txn, dbi, &cur); rc != 0)
    return rc;
  MDB_val k = val(prefix), v;
  int rc = safe::cursor_get(cur, &k, &v, MDB_SET_RANGE);
  while (rc == 0 && view(k).substr(0, prefix.size()) == prefix) {
    f(view(k).substr(prefix.size()), view(v));
    rc = safe::cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/// The writes of one LMDB write transaction, with a write-behind cache: a
/// batch that updates the same rows again and again (counters, balances)
/// touches each row once in LMDB, at the end.
class lmdb_row_writer final : public projection_store::writer {
public:
  lmdb_row_writer(MDB_txn* txn, MDB_dbi dbi, std::string_view projection)
    : txn_(txn), dbi_(dbi), projection_(projection) {}
  void put(std::string_view table, std::string_view key, std::string_view value) override;
  std::optional<std::string> get(std::string_view table, std::string_view key) const override;
  bool erase(std::string_view table, std::string_view key) override;
  std::vector<std::pair<std::string, std::string>> scan(std::string_view table) const override;

  /// Writes the dirty rows, in key order, into the transaction.
  void flush() const;
  /// The first LMDB error (the transaction is then aborted), or 0.
  int failed() const { return failed_; }

private:
  /// The full key of a row, in a buffer reused from call to call.
  const std::string& row_key(std::string_view table, std::string_view key) const;
  struct row {
    std::optional<std::string> value; // nullopt: no such row (or erased)
    bool dirty = false;
  };
  /// The cached row of the key in `key_`, read from LMDB on a miss.
  row& cached(bool load) const;

  struct hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  MDB_txn* txn_;
  MDB_dbi dbi_;
  std::string_view projection_;
  mutable int failed_ = 0;
  mutable std::string key_;
  mutable std::unordered_map<std::string, row, hash, std::equal_to<>> rows_;
};

/// Read models in LMDB: rows and checkpoints in two databases of one
/// environment, so a batch and its checkpoint commit together.
class lmdb_projection_store final : public projection_store {
public:
  struct impl;
  explicit lmdb_projection_store(std::unique_ptr<impl> impl);
  ~lmdb_projection_store() override;
  caf::error write(std::string_view projection, uint64_t position,
                   const std::function<caf::error(writer&)>& f) override;
  caf::error write_after(std::string_view projection, uint64_t after, uint64_t position,
                         const std::function<caf::error(writer&)>& f) override;
  caf::error update(std::string_view projection, const std::function<caf::error(writer&)>& f) override;
  caf::expected<std::optional<uint64_t>> checkpoint(std::string_view projection) const override;
  caf::expected<std::vector<std::pair<std::string, uint64_t>>> checkpoints() const override;
  caf::expected<std::optional<std::string>> get(std::string_view projection, std::string_view table,
                                                std::string_view key) const override;
  caf::expected<std::vector<std::pair<std::string, std::string>>> scan(std::string_view projection,
                                                                       std::string_view table) const override;
  caf::expected<std::vector<std::tuple<std::string, std::string, std::string>>>
  dump(std::string_view projection) const override;
  caf::error reset(std::string_view projection, const std::function<caf::error(writer&)>& also) override;

private:
  caf::error commit(std::string_view projection, const uint64_t* checkpoint,
                    const std::function<caf::error(writer&)>& f, const uint64_t* after = nullptr);
  std::unique_ptr<impl> impl_;
};

} // namespace

struct lmdb_projection_store::impl {
  detail::path_claim claim; // this directory, for this process; released once the environment is closed
  MDB_env* env = nullptr;
  MDB_dbi rows = 0, checkpoints = 0;
  std::mutex write_mtx;             // one writer at a time
  mutable std::shared_mutex resize_mtx; // growing the map excludes every transaction

  // Set when a write transaction faulted on a damaged page (see lmdb_guard):
  // it is left open, later writes are refused, and the environment is not
  // closed but kept (closing could free LMDB's garbage).
  std::atomic<bool> abandoned{false};

  ~impl() {
    if (env != nullptr && abandoned)
      detail::retain_abandoned(env);
    else if (env != nullptr)
      mdb_env_close(env);
    if (abandoned)
      claim.keep_forever();
  }

  /// Ends a write transaction that failed; one that faulted is abandoned.
  void end_failed(MDB_txn* txn, uint64_t faults_before) {
    if (!detail::abort_write(txn, faults_before))
      abandoned = true;
  }

  /// After a failed commit: whether it faulted.
  void check_commit(int rc, uint64_t faults_before) {
    if (rc != 0 && detail::faults_caught() != faults_before)
      abandoned = true;
  }

  caf::error refuse_if_abandoned() const {
    if (!abandoned)
      return {};
    return make_error(store_errc::corrupt_store,
                      "the read models' store has a damaged page (reading it faulted) and takes no more writes; "
                      "delete it and rebuild the projections");
  }

  using read_txn = detail::read_txn;

  caf::expected<read_txn> begin_read() const {
    return detail::begin_read(env, resize_mtx);
  }

  bool grow() {
    std::unique_lock excl{resize_mtx};
    MDB_envinfo info;
    mdb_env_info(env, &info);
    return mdb_env_set_mapsize(env, info.me_mapsize * 2) == 0;
  }
};

caf::expected<std::unique_ptr<projection_store>> projection_store::open(projection_store_options options) {
  std::error_code ec;
  if (options.read_only && !std::filesystem::exists(options.path + "/data.mdb", ec))
    return make_error(store_errc::invalid_argument, options.path + " holds no read models");
  std::filesystem::create_directories(options.path, ec);
  if (ec)
    return make_error(store_errc::io_error, "cannot create " + options.path + ": " + ec.message());
  auto p = std::make_unique<lmdb_projection_store::impl>();
  auto claim = detail::path_claim::take(options.path, "open read models at " + options.path, !options.read_only);
  if (!claim)
    return claim.error();
  p->claim = std::move(*claim);
  if (int rc = mdb_env_create(&p->env); rc != 0)
    return mdb_error(rc, "create environment");
  mdb_env_set_maxdbs(p->env, 4);
  mdb_env_set_mapsize(p->env, options.initial_map_size);
  if (auto err = detail::open_env(p->env, options.path, options.read_only, options.mode, options.check_pages,
                                  "open read models at " + options.path))
    return err;
  MDB_txn* txn = nullptr;
  if (int rc = detail::begin_at_open(p->env, options.read_only ? MDB_RDONLY : 0, &txn); rc != 0)
    return mdb_error(rc, "begin");
  auto faults_before = detail::faults_caught();
  unsigned create = options.read_only ? 0 : MDB_CREATE;
  int rc = safe::dbi_open(txn, "rows", create, &p->rows);
  if (rc == 0)
    rc = safe::dbi_open(txn, "checkpoints", create, &p->checkpoints);
  if (rc == 0) {
    rc = safe::txn_commit(txn);
    p->check_commit(rc, faults_before);
  } else {
    p->end_failed(txn, faults_before);
  }
  if (rc != 0)
    return mdb_error(rc, "open read model tables");
  return std::unique_ptr<projection_store>{new lmdb_projection_store{std::move(p)}};
}

lmdb_projection_store::lmdb_projection_store(std::unique_ptr<impl> impl) : impl_(std::move(impl)) {}

lmdb_projection_store::~lmdb_projection_store() = default;

// -- writer -------------------------------------------------------------------

const std::string& lmdb_row_writer::row_key(std::string_view table, std::string_view key) const {
  key_.clear();
  key_.append(projection_).push_back('\0');
  key_.append(table).push_back('\0');
  key_.append(key);
  return key_;
}

lmdb_row_writer::row& lmdb_row_writer::cached(bool load) const {
  auto i = rows_.find(std::string_view{key_});
  if (i != rows_.end())
    return i->second;
  row r;
  if (load) {
    MDB_val kv = val(key_), vv;
    int rc = safe::get(txn_, dbi_, &kv, &vv);
    if (rc == 0)
      r.value = std::string{view(vv)};
    else if (rc != MDB_NOTFOUND && failed_ == 0)
      failed_ = rc;
  }
  return rows_.emplace(key_, std::move(r)).first->second;
}

void lmdb_row_writer::flush() const {
  std::vector<std::pair<const std::string*, row*>> dirty;
  for (auto& [k, r] : rows_)
    if (r.dirty)
      dirty.emplace_back(&k, &r);
  std::sort(dirty.begin(), dirty.end(), [](const auto& a, const auto& b) { return *a.first < *b.first; });
  auto* txn = txn_;
  for (auto& [k, r] : dirty) {
    if (failed_ != 0)
      return;
    MDB_val kv = val(*k);
    int rc = 0;
    if (r->value) {
      MDB_val vv = val(*r->value);
      rc = safe::put(txn, dbi_, &kv, &vv, 0);
    } else {
      rc = safe::del(txn, dbi_, &kv, nullptr);
      if (rc == MDB_NOTFOUND)
        rc = 0;
    }
    if (rc != 0)
      failed_ = rc;
    r->dirty = false;
  }
}

void lmdb_row_writer::put(std::string_view table, std::string_view key, std::string_view value) {
  if (failed_ != 0)
    return;
  if (!detail::valid_read_model_name(table)) {
    failed_ = EINVAL;
    return;
  }
  row_key(table, key);
  auto& r = cached(false);
  if (r.value)
    r.value->assign(value.data(), value.size());
  else
    r.value.emplace(value);
  r.dirty = true;
}

std::optional<std::string> lmdb_row_writer::get(std::string_view table, std::string_view key) const {
  row_key(table, key);
  return cached(true).value;
}

bool lmdb_row_writer::erase(std::string_view table, std::string_view key) {
  if (failed_ != 0)
    return false;
  row_key(table, key);
  auto& r = cached(true);
  bool existed = r.value.has_value();
  r.value.reset();
  r.dirty = true;
  return existed;
}

std::vector<std::pair<std::string, std::string>> lmdb_row_writer::scan(std::string_view table) const {
  flush(); // the scan reads LMDB, which must see this batch's writes
  std::vector<std::pair<std::string, std::string>> out;
  for_prefix(txn_, dbi_, row_prefix(projection_, table),
             [&](std::string_view k, std::string_view v) { out.emplace_back(k, v); });
  return out;
}

// -- store --------------------------------------------------------------------

caf::error lmdb_projection_store::write(std::string_view projection, uint64_t position,
                                   const std::function<caf::error(writer&)>& f) {
  return commit(projection, &position, f);
}

caf::error lmdb_projection_store::write_after(std::string_view projection, uint64_t after, uint64_t position,
                                              const std::function<caf::error(writer&)>& f) {
  return commit(projection, &position, f, &after);
}

caf::error lmdb_projection_store::update(std::string_view projection, const std::function<caf::error(writer&)>& f) {
  return commit(projection, nullptr, f);
}

caf::error lmdb_projection_store::commit(std::string_view projection, const uint64_t* checkpoint,
                                         const std::function<caf::error(writer&)>& f, const uint64_t* after) {
  if (!detail::valid_read_model_name(projection))
    return detail::bad_read_model_name("projection");
  std::lock_guard writing{impl_->write_mtx};
  for (int attempt = 0; attempt < 16; ++attempt) {
    if (auto err = impl_->refuse_if_abandoned())
      return err;
    std::shared_lock lock{impl_->resize_mtx};
    MDB_txn* txn = nullptr;
    if (int rc = mdb_txn_begin(impl_->env, nullptr, 0, &txn); rc != 0)
      return mdb_error(rc, "begin write transaction");
    auto faults_before = detail::faults_caught();
    MDB_val ck = val(projection), cv;
    if (int rc = safe::get(txn, impl_->checkpoints, &ck, &cv); checkpoint && rc == 0 && cv.mv_size == 8) {
      auto stored = detail::get_be64(static_cast<const uint8_t*>(cv.mv_data));
      if (stored > *checkpoint || (after && stored != *after)) {
        impl_->end_failed(txn, faults_before);
        return make_error(store_errc::invalid_argument, "projection " + std::string{projection} + " is at position "
                                                           + std::to_string(stored) + ", not "
                                                           + std::to_string(after ? *after : *checkpoint));
      }
    }
    lmdb_row_writer w{txn, impl_->rows, projection};
    caf::error err = f(w);
    if (err) {
      impl_->end_failed(txn, faults_before);
      return err;
    }
    w.flush();
    int rc = w.failed();
    if (rc == 0 && checkpoint) {
      uint8_t buf[8];
      detail::put_be64(buf, *checkpoint);
      MDB_val pv{8, buf};
      rc = safe::put(txn, impl_->checkpoints, &ck, &pv, 0);
    }
    if (rc == 0) {
      rc = safe::txn_commit(txn);
      impl_->check_commit(rc, faults_before);
    } else {
      impl_->end_failed(txn, faults_before);
    }
    if (auto err = impl_->refuse_if_abandoned())
      return err;
    if (rc == 0)
      return {};
    if (rc == EINVAL)
      return detail::bad_read_model_name("table");
    if (rc != MDB_MAP_FULL)
      return mdb_error(rc, "write projection " + std::string{projection});
    lock.unlock();
    if (!impl_->grow())
      return mdb_error(rc, "grow read models");
  }
  return make_error(store_errc::store_full, "read models: the map cannot grow enough");
}

caf::expected<std::optional<uint64_t>> lmdb_projection_store::checkpoint(std::string_view projection) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  return detail::read_checkpoint(r->txn, impl_->checkpoints, projection,
                                 "checkpoint of " + std::string{projection});
}

caf::expected<std::vector<std::pair<std::string, uint64_t>>> lmdb_projection_store::checkpoints() const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(r->txn, impl_->checkpoints, &cur); rc != 0)
    return mdb_error(rc, "open cursor");
  std::vector<std::pair<std::string, uint64_t>> out;
  MDB_val k, v;
  int rc = safe::cursor_get(cur, &k, &v, MDB_FIRST);
  for (; rc == 0; rc = safe::cursor_get(cur, &k, &v, MDB_NEXT))
    if (v.mv_size == 8)
      out.emplace_back(std::string{view(k)}, detail::get_be64(static_cast<const uint8_t*>(v.mv_data)));
  mdb_cursor_close(cur);
  if (rc != MDB_NOTFOUND)
    return mdb_error(rc, "list checkpoints");
  return out;
}

caf::expected<std::optional<std::string>> lmdb_projection_store::get(std::string_view projection, std::string_view table,
                                                                std::string_view key) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  auto k = row_prefix(projection, table).append(key);
  MDB_val kv = val(k), vv;
  int rc = safe::get(r->txn, impl_->rows, &kv, &vv);
  if (rc == MDB_NOTFOUND)
    return std::optional<std::string>{};
  if (rc != 0)
    return mdb_error(rc, "read row");
  return std::optional<std::string>{std::string{view(vv)}};
}

caf::expected<std::vector<std::pair<std::string, std::string>>>
lmdb_projection_store::scan(std::string_view projection, std::string_view table) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  std::vector<std::pair<std::string, std::string>> out;
  if (int rc = for_prefix(r->txn, impl_->rows, row_prefix(projection, table),
                          [&](std::string_view k, std::string_view v) { out.emplace_back(k, v); });
      rc != 0)
    return mdb_error(rc, "scan table");
  return out;
}

caf::expected<std::vector<std::tuple<std::string, std::string, std::string>>>
lmdb_projection_store::dump(std::string_view projection) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  std::vector<std::tuple<std::string, std::string, std::string>> out;
  if (int rc = for_prefix(r->txn, impl_->rows, projection_prefix(projection),
                          [&](std::string_view k, std::string_view v) {
                            auto cut = k.find('\0');
                            out.emplace_back(std::string{k.substr(0, cut)}, std::string{k.substr(cut + 1)},
                                             std::string{v});
                          });
      rc != 0)
    return mdb_error(rc, "dump projection");
  return out;
}

caf::error lmdb_projection_store::reset(std::string_view projection, const std::function<caf::error(writer&)>& also) {
  if (!detail::valid_read_model_name(projection))
    return detail::bad_read_model_name("projection");
  std::lock_guard writing{impl_->write_mtx};
  if (auto err = impl_->refuse_if_abandoned())
    return err;
  std::shared_lock lock{impl_->resize_mtx};
  MDB_txn* txn = nullptr;
  if (int rc = mdb_txn_begin(impl_->env, nullptr, 0, &txn); rc != 0)
    return mdb_error(rc, "begin write transaction");
  auto faults_before = detail::faults_caught();
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn, impl_->rows, &cur);
  auto prefix = projection_prefix(projection);
  if (rc == 0) {
    MDB_val k = val(prefix), v;
    rc = safe::cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && view(k).substr(0, prefix.size()) == prefix) {
      rc = safe::cursor_del(cur, 0);
      if (rc == 0) {
        k = val(prefix); // search again: where a deleted cursor stands varies
        rc = safe::cursor_get(cur, &k, &v, MDB_SET_RANGE);
      }
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
      rc = 0; // past the last row
  }
  if (rc == 0) {
    MDB_val ck = val(projection);
    rc = safe::del(txn, impl_->checkpoints, &ck, nullptr);
    if (rc == MDB_NOTFOUND)
      rc = 0;
  }
  if (rc == 0 && also) {
    lmdb_row_writer w{txn, impl_->rows, projection};
    if (auto err = also(w)) {
      impl_->end_failed(txn, faults_before);
      return err;
    }
    w.flush();
    rc = w.failed();
  }
  if (rc == 0) {
    rc = safe::txn_commit(txn);
    impl_->check_commit(rc, faults_before);
  } else {
    impl_->end_failed(txn, faults_before);
  }
  return rc == 0 ? caf::error{} : mdb_error(rc, "reset projection " + std::string{projection});
}

} // namespace sourcery::persistence
