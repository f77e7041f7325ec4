// The LMDB store: opening (format checks, the writer thread), the public
// calls that queue writes, and restoring an export.

#include "lmdb_state.hpp"

namespace sourcery::persistence {

namespace {

constexpr std::string_view format_marker = "sourcery.event-store";

} // namespace


// -- opening ----------------------------------------------------------------------

namespace {

caf::error check_directory(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec)
      return make_error(store_errc::io_error, "cannot create " + dir.string() + ": " + ec.message());
    return {};
  }
  if (!fs::is_directory(dir, ec))
    return make_error(store_errc::foreign_store, dir.string() + " is not a directory");
  if (fs::exists(dir / "data.mdb", ec))
    return {};
  for (auto& entry : fs::directory_iterator{dir, ec})
    if (entry.path().filename() != "lock.mdb")
      return make_error(store_errc::foreign_store,
                        dir.string() + " holds other files (" + entry.path().filename().string()
                          + ") and no Sourcery store; use an empty or new directory");
  if (ec)
    return make_error(store_errc::io_error, "cannot list " + dir.string() + ": " + ec.message());
  return {};
}

} // namespace

caf::expected<std::unique_ptr<lmdb_store>> lmdb_store::open(lmdb_options options) {
  if (options.path.empty())
    return make_error(store_errc::invalid_argument, "store path is empty");
  if (options.max_batch == 0)
    return make_error(store_errc::invalid_argument, "max_batch is 0");
  fs::path dir{options.path};
  if (auto err = check_directory(dir))
    return err;
  auto st = std::make_unique<impl>();
  auto claim = detail::path_claim::take(dir.string(), "open " + options.path, !options.read_only);
  if (!claim)
    return claim.error();
  st->claim = std::move(*claim);
  int rc = mdb_env_create(&st->env);
  if (rc != 0) {
    st->env = nullptr;
    return mdb_error(rc, "create environment");
  }
  mdb_env_set_maxdbs(st->env, 8);
  mdb_env_set_maxreaders(st->env, 1024);
  mdb_env_set_mapsize(st->env, options.initial_map_size);
  if (auto err = detail::open_env(st->env, dir.string(), options.read_only, options.mode, options.check_pages,
                                  "open " + options.path))
    return err;

  // Check the format marker; create the databases in a new store.
  MDB_txn* txn = nullptr;
  rc = detail::begin_at_open(st->env, options.read_only ? MDB_RDONLY : 0, &txn);
  if (rc != 0)
    return mdb_error(rc, "begin transaction");
  auto faults_before = detail::faults_caught();
  auto fail = [&](caf::error err) {
    if (!detail::abort_write(txn, faults_before))
      st->abandoned = true;
    return err;
  };
  MDB_dbi main_db = 0;
  if ((rc = safe::dbi_open(txn, nullptr, 0, &main_db)) != 0)
    return fail(mdb_error(rc, "open main database"));
  MDB_stat main_stat;
  safe::stat(txn, main_db, &main_stat);
  bool fresh = main_stat.ms_entries == 0;
  if (fresh && options.read_only)
    return fail(make_error(store_errc::invalid_argument, options.path + " holds no store to read"));
  unsigned create = fresh ? MDB_CREATE : 0;
  rc = safe::dbi_open(txn, "meta", create, &st->meta);
  if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE)
    return fail(make_error(store_errc::foreign_store,
                           options.path + " holds an LMDB database of another program"));
  if (rc != 0)
    return fail(mdb_error(rc, "open meta"));
  if (fresh) {
    MDB_val k = str_val("format"), v = str_val(format_marker);
    uint8_t ver[8];
    put_be64(ver, format_version);
    MDB_val vk = str_val("format_version"), vv{8, ver};
    if ((rc = safe::put(txn, st->meta, &k, &v, 0)) != 0 || (rc = safe::put(txn, st->meta, &vk, &vv, 0)) != 0)
      return fail(mdb_error(rc, "write format marker"));
  } else {
    MDB_val k = str_val("format"), v;
    rc = safe::get(txn, st->meta, &k, &v);
    if (rc != 0 || std::string_view{static_cast<const char*>(v.mv_data), v.mv_size} != format_marker)
      return fail(make_error(store_errc::foreign_store,
                             options.path + " holds an LMDB database of another program"));
    MDB_val vk = str_val("format_version"), vv;
    rc = safe::get(txn, st->meta, &vk, &vv);
    if (rc != 0 || vv.mv_size != 8)
      return fail(make_error(store_errc::corrupt_store, options.path + ": format version missing"));
    auto found = get_be64(static_cast<const uint8_t*>(vv.mv_data));
    if (found != format_version)
      return fail(make_error(store_errc::unsupported_format_version,
                             options.path + " holds format version " + std::to_string(found)
                               + "; this build reads version " + std::to_string(format_version)));
  }
  struct named {
    const char* name;
    MDB_dbi* dbi;
  };
  for (auto [name, dbi] : {named{"events", &st->events}, named{"stream_index", &st->stream_index},
                           named{"streams", &st->streams}, named{"snapshots", &st->snapshots},
                           named{"checkpoints", &st->checkpoints}}) {
    if ((rc = safe::dbi_open(txn, name, create, dbi)) != 0)
      return fail(rc == MDB_NOTFOUND
                    ? make_error(store_errc::corrupt_store, options.path + ": database " + name + " missing")
                    : mdb_error(rc, std::string{"open "} + name));
  }
  // Subject keys came later: a store written before them gains the database
  // at its first open for writing.
  rc = safe::dbi_open(txn, "subject_keys", options.read_only ? 0 : MDB_CREATE, &st->subject_keys);
  if (rc != 0 && rc != MDB_NOTFOUND)
    return fail(mdb_error(rc, "open subject_keys"));
  st->has_subject_keys = rc == 0;
  MDB_stat env_stat;
  mdb_env_stat(st->env, &env_stat);
  st->key_record_size = env_stat.ms_psize - 16; // exactly one overflow page (LMDB's page header is 16 bytes)
  st->head.store(st->last_position(txn, rc));
  if (rc != 0)
    return fail(mdb_error(rc, "read log end"));
  // Committing (even a read-only transaction) keeps the database handles open.
  rc = safe::txn_commit(txn);
  if (rc != 0) {
    st->abandoned = detail::faults_caught() != faults_before;
    return mdb_error(rc, "commit store creation");
  }
  MDB_envinfo info;
  mdb_env_info(st->env, &info);
  st->map_size.store(info.me_mapsize);
  st->options = std::move(options);
  auto* raw = st.get();
  std::unique_ptr<lmdb_store> store{new lmdb_store{std::move(st)}};
  raw->owner = store.get();
  if (!raw->options.read_only)
    raw->writer = std::thread{[raw] {
      pthread_setname_np(pthread_self(), "lmdb-writer");
      raw->writer_loop();
    }};
  return store;
}

lmdb_store::lmdb_store(std::unique_ptr<impl> impl) : impl_(std::move(impl)) {}

lmdb_store::~lmdb_store() {
  close_base();
  {
    std::lock_guard guard{impl_->queue_mtx};
    impl_->stopping = true;
  }
  impl_->queue_cv.notify_all();
  if (impl_->writer.joinable())
    impl_->writer.join();
}

uint64_t lmdb_store::head_position() const {
  return impl_->head.load(std::memory_order_acquire);
}

void lmdb_store::refresh_head() const {
  auto r = impl_->begin_read();
  if (!r)
    return;
  int rc = 0;
  auto pos = impl_->last_position(r->txn, rc);
  if (rc != 0)
    return;
  auto cur = impl_->head.load();
  while (pos > cur && !impl_->head.compare_exchange_weak(cur, pos)) {
  }
  if (pos > cur)
    notify_appended();
}

lmdb_stats lmdb_store::stats() const {
  return {impl_->commits.load(), impl_->operations.load(), impl_->resizes.load(), impl_->map_size.load(),
          impl_->index_transactions.load()};
}

// -- writes -------------------------------------------------------------------------

namespace {

caf::expected<void> to_void(caf::expected<append_result> r) {
  if (!r)
    return r.error();
  return {};
}

} // namespace

void lmdb_store::do_append(std::string stream, expected_version expected, std::vector<event_data> events,
                           append_callback done) {
  if (impl_->options.read_only)
    return done(make_error(store_errc::invalid_argument, "the store is open read-only"));
  write_op op;
  op.what = write_op::kind::append;
  op.key = std::move(stream);
  op.expected = expected;
  // Encode here, on the caller's thread, so the single writer only copies;
  // personal fields are sealed by the writer, with keys of its transaction.
  bool personal = std::any_of(events.begin(), events.end(),
                              [](const event_data& ev) { return detail::has_plain_personal(ev.data); });
  if (personal) {
    op.to_seal = std::move(events);
  } else {
    op.bodies.resize(events.size());
    for (size_t i = 0; i < events.size(); ++i)
      detail::encode_record_body(events[i], op.key, op.bodies[i]);
  }
  op.done = std::move(done);
  impl_->enqueue(std::move(op));
}

namespace {

/// Runs a non-append write through the writer and waits for its answer.
caf::expected<append_result> submit_and_wait(auto& impl, write_op op) {
  if (impl.options.read_only)
    return make_error(store_errc::invalid_argument, "the store is open read-only");
  std::promise<caf::expected<append_result>> p;
  auto f = p.get_future();
  op.done = [&p](caf::expected<append_result> r) { p.set_value(std::move(r)); };
  impl.enqueue(std::move(op));
  return f.get();
}

} // namespace

caf::expected<void> lmdb_store::do_delete_stream(std::string_view stream, expected_version expected) {
  write_op op;
  op.what = write_op::kind::delete_stream;
  op.key = std::string{stream};
  op.expected = expected;
  return to_void(submit_and_wait(*impl_, std::move(op)));
}

caf::expected<void> lmdb_store::do_save_snapshot(snapshot snap) {
  write_op op;
  op.what = write_op::kind::save_snapshot;
  op.key = snap.stream_id;
  op.snap = std::move(snap);
  return to_void(submit_and_wait(*impl_, std::move(op)));
}

void lmdb_store::do_save_snapshot_async(snapshot snap, std::function<void(caf::expected<void>)> done) {
  if (impl_->options.read_only)
    return done(make_error(store_errc::invalid_argument, "the store is open read-only"));
  write_op op;
  op.what = write_op::kind::save_snapshot;
  op.key = snap.stream_id;
  op.snap = std::move(snap);
  op.done = [done = std::move(done)](caf::expected<append_result> r) { done(to_void(std::move(r))); };
  impl_->enqueue(std::move(op));
}

caf::expected<bool> lmdb_store::do_forget(std::string_view subject) {
  write_op op;
  op.what = write_op::kind::forget;
  op.key = std::string{subject};
  auto r = submit_and_wait(*impl_, std::move(op));
  if (!r)
    return r.error();
  return r->stream_version != 0;
}

caf::expected<void> lmdb_store::do_delete_snapshot(std::string_view stream) {
  write_op op;
  op.what = write_op::kind::delete_snapshot;
  op.key = std::string{stream};
  return to_void(submit_and_wait(*impl_, std::move(op)));
}

caf::expected<void> lmdb_store::do_save_checkpoint(std::string_view name, uint64_t position) {
  write_op op;
  op.what = write_op::kind::save_checkpoint;
  op.key = std::string{name};
  op.position = position;
  return to_void(submit_and_wait(*impl_, std::move(op)));
}

// -- restoring an export ---------------------------------------------------------------

caf::expected<void> lmdb_store::import_events(std::vector<recorded_event> events) {
  if (impl_->options.read_only)
    return make_error(store_errc::invalid_argument, "the store is open read-only");
  // One operation per run of consecutive events of one stream; all queued at
  // once so that group commit packs them, then awaited in order.
  std::vector<std::future<caf::expected<append_result>>> answers;
  for (size_t i = 0; i < events.size();) {
    size_t j = i;
    while (j < events.size() && events[j].stream_id == events[i].stream_id)
      ++j;
    write_op op;
    op.what = write_op::kind::append;
    op.restore = true;
    op.key = events[i].stream_id;
    if (auto err = validate_stream_id(op.key))
      return err;
    if (events[i].stream_version == 0 || events[i].position == 0)
      return make_error(store_errc::invalid_argument, "import: event of '" + op.key + "' without version or position");
    op.expected = events[i].stream_version == 1 ? expected_version::no_stream()
                                                : expected_version::exact(events[i].stream_version - 1);
    op.position = events[i].position;
    for (size_t k = i; k < j; ++k) {
      auto& ev = events[k];
      if (k > i && (ev.stream_version != events[k - 1].stream_version + 1 || ev.position != events[k - 1].position + 1))
        return make_error(store_errc::invalid_argument,
                          "import: event " + std::to_string(ev.position) + " is out of order");
      event_data data{ev.event_id, std::move(ev.type), ev.schema_version, std::move(ev.data), std::move(ev.metadata),
                      std::move(ev.causation_id), std::move(ev.correlation_id)};
      if (data.event_id.is_nil())
        return make_error(store_errc::invalid_argument, "import: event " + std::to_string(ev.position) + " has no id");
      if (auto err = detail::validate_event(data, "import: event " + std::to_string(ev.position)))
        return err;
      detail::encode_record_body(data, op.key, op.bodies.emplace_back());
      op.times.push_back(ev.created_at);
    }
    auto p = std::make_shared<std::promise<caf::expected<append_result>>>();
    answers.push_back(p->get_future());
    op.done = [p](caf::expected<append_result> r) { p->set_value(std::move(r)); };
    impl_->enqueue(std::move(op));
    i = j;
  }
  caf::error first;
  for (auto& a : answers)
    if (auto r = a.get(); !r && !first)
      first = r.error();
  if (first)
    return first;
  return {};
}

caf::expected<void> lmdb_store::import_deleted_stream(const persistence::stream_info& stream) {
  if (auto err = validate_stream_id(stream.stream_id))
    return err;
  write_op op;
  op.what = write_op::kind::delete_stream;
  op.key = stream.stream_id;
  op.expected = expected_version::exact(stream.version);
  op.restore = true;
  op.at = stream.updated_at;
  return to_void(submit_and_wait(*impl_, std::move(op)));
}

caf::expected<void> lmdb_store::import_snapshot(snapshot snap) {
  if (auto err = validate_stream_id(snap.stream_id))
    return err;
  write_op op;
  op.what = write_op::kind::save_snapshot;
  op.key = snap.stream_id;
  op.snap = std::move(snap);
  op.restore = true;
  return to_void(submit_and_wait(*impl_, std::move(op)));
}

caf::error lmdb_store::with_view(const std::function<caf::error(const detail::lmdb_view&)>& f) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  detail::lmdb_view view{r->txn, impl_->env, impl_->events, impl_->stream_index, impl_->streams,
                         impl_->snapshots, impl_->checkpoints, impl_->meta};
  return f(view);
}

} // namespace sourcery::persistence
