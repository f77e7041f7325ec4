// The group-commit writer: one thread takes every operation waiting, applies
// them in one write transaction, commits once, then answers each.

#include "lmdb_state.hpp"

namespace sourcery::persistence {

void lmdb_store::impl::enqueue(write_op op) {
  {
    std::lock_guard guard{queue_mtx};
    if (!stopping) {
      queue.push_back(std::move(op));
      if (queue.size() >= wake_at)
        queue_cv.notify_one();
      return;
    }
  }
  op.done(make_error(store_errc::store_closed, "the event store is closed"));
}

void lmdb_store::impl::writer_loop() {
  std::vector<write_op> batch;
  std::vector<caf::expected<append_result>> results;
  for (;;) {
    {
      std::unique_lock lock{queue_mtx};
      bool woke = queue_cv.wait_for(lock, std::chrono::milliseconds{20},
                                    [this] { return stopping || !queue.empty(); });
      if (stopping && queue.empty())
        return; // everything queued has been answered
      if (!woke) {
        // Idle: index the streams with pending events.
        lock.unlock();
        if (!pending.empty() && !abandoned)
          index_idle();
        continue;
      }
    }
    // Under constant load, drain the pending index now and then so tails
    // stay short, a budget per transaction so no commit waits long for it.
    if (!draining && !pending.empty())
      draining = pending_total > 100'000
                 || std::chrono::steady_clock::now() - last_full_index > std::chrono::seconds{2};
    results.clear();
    if (abandoned) {
      take(batch, options.max_batch);
      refuse(batch, 0, damaged_error());
      batch.clear();
      continue;
    }
    int rc = collect_and_apply(batch, results);
    if (rc == 0) {
      finish(batch, 0, batch.size(), results);
    } else if (abandoned) {
      refuse(batch, 0, damaged_error());
    } else {
      // A full map, too many dirty pages or an I/O error on the way: start
      // over with the operations taken, which can split and grow the map.
      process(batch);
    }
    batch.clear();
  }
}

size_t lmdb_store::impl::take(std::vector<write_op>& batch, size_t max) {
  std::lock_guard lock{queue_mtx};
  size_t n = std::min(queue.size(), max);
  for (size_t i = 0; i < n; ++i) {
    batch.push_back(std::move(queue.front()));
    queue.pop_front();
  }
  return n;
}

int lmdb_store::impl::collect_and_apply(std::vector<write_op>& batch, std::vector<caf::expected<append_result>>& results) {
  batch_ctx ctx;
  std::shared_lock lock{resize_mtx};
  int rc = begin_write(ctx, lock);
  const size_t target = std::max<size_t>(1, std::min(last_batch_size - last_batch_size / 8, options.max_batch));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds{300};
  size_t applied = 0;
  for (;;) {
    take(batch, options.max_batch - batch.size());
    for (; rc == 0 && applied < batch.size(); ++applied) {
      auto out = apply(ctx, batch[applied]);
      rc = out.rc;
      results.push_back(std::move(out.result));
    }
    if (rc != 0 || batch.size() >= target)
      break;
    std::unique_lock qlock{queue_mtx};
    if (stopping)
      break; // what is still queued goes in the next transaction
    // Wake for a handful at a time, not for each arrival.
    wake_at = std::min<size_t>(16, target - batch.size());
    bool more = queue_cv.wait_until(qlock, deadline, [&] { return stopping || queue.size() >= wake_at; });
    wake_at = 1;
    if (!more && queue.empty())
      break;
  }
  last_batch_size = batch.size();
  if (rc == 0)
    rc = commit(ctx);
  if (rc != 0)
    end_failed(ctx);
  return rc;
}

void lmdb_store::impl::end_failed(batch_ctx& ctx) {
  if (ctx.txn != nullptr && !detail::abort_write(ctx.txn, ctx.faults_before))
    abandoned = true;
  ctx.txn = nullptr;
}

caf::error lmdb_store::impl::damaged_error() {
  return make_error(store_errc::corrupt_store,
                    "the store has a damaged page (reading it faulted) and takes no more writes; "
                    "check it with `sourcery verify`, then restore it from a copy or an export");
}

void lmdb_store::impl::refuse(std::vector<write_op>& ops, size_t begin, const caf::error& err) {
  for (size_t i = begin; i < ops.size(); ++i)
    ops[i].done(err);
}

void lmdb_store::impl::process(std::vector<write_op>& batch) {
  std::vector<caf::expected<append_result>> results;
  size_t begin = 0;
  size_t chunk = batch.size();
  while (begin < batch.size()) {
    size_t end = std::min(batch.size(), begin + chunk);
    results.clear();
    int rc = run_transaction(batch, begin, end, results);
    if (abandoned) {
      refuse(batch, begin, damaged_error());
      return;
    }
    if (rc == MDB_MAP_FULL && grow_map())
      continue; // retry the same operations with a bigger map
    if (rc == MDB_TXN_FULL && end - begin > 1) {
      chunk = (end - begin) / 2; // too many dirty pages: commit in smaller pieces
      continue;
    }
    if (rc != 0) {
      auto err = rc == MDB_TXN_FULL ? make_error(store_errc::invalid_argument, "append too large for one transaction")
                 : rc == EIO && out_of_space()
                   ? make_error(store_errc::store_full, "commit: no space left for the store's file")
                   : mdb_error(rc, "commit");
      for (size_t i = begin; i < end; ++i)
        batch[i].done(err);
    } else {
      finish(batch, begin, end, results);
    }
    begin = end;
  }
}

void lmdb_store::impl::finish(std::vector<write_op>& batch, size_t begin, size_t end,
            std::vector<caf::expected<append_result>>& results) {
  commits.fetch_add(1, std::memory_order_relaxed);
  operations.fetch_add(end - begin, std::memory_order_relaxed);
  owner->notify_appended();
  for (size_t i = begin; i < end; ++i)
    batch[i].done(std::move(results[i - begin]));
}

int lmdb_store::impl::begin_write(batch_ctx& ctx, std::shared_lock<std::shared_mutex>& lock) {
  int rc = mdb_txn_begin(env, nullptr, 0, &ctx.txn);
  if (rc == MDB_MAP_RESIZED) {
    lock.unlock();
    {
      std::unique_lock excl{resize_mtx};
      mdb_env_set_mapsize(env, 0);
    }
    lock.lock();
    rc = mdb_txn_begin(env, nullptr, 0, &ctx.txn);
  }
  if (rc != 0) {
    ctx.txn = nullptr;
    return rc;
  }
  ctx.next_position = last_position(ctx.txn, rc) + 1;
  if (rc == 0)
    rc = read_stream_counter(ctx);
  ctx.now = now_micros();
  ctx.drain = draining;
  return rc;
}

int lmdb_store::impl::commit(batch_ctx& ctx) {
  int rc = update_index(ctx);
  if (rc == 0)
    rc = flush_streams(ctx);
  if (rc != 0)
    return rc;
  rc = safe::txn_commit(ctx.txn);
  if (rc != 0 && detail::faults_caught() != ctx.faults_before)
    abandoned = true; // faulted while committing: left as it is
  ctx.txn = nullptr; // committed, freed by LMDB on its own errors, or abandoned
  if (rc == 0) {
    head.store(ctx.next_position - 1, std::memory_order_release);
    keys_committed(ctx);
    remember_pending(ctx);
    if (ctx.drained > 0)
      index_transactions.fetch_add(1, std::memory_order_relaxed);
  }
  return rc;
}

int lmdb_store::impl::run_transaction(std::vector<write_op>& batch, size_t begin, size_t end,
                    std::vector<caf::expected<append_result>>& results) {
  batch_ctx ctx;
  std::shared_lock lock{resize_mtx};
  int rc = begin_write(ctx, lock);
  for (size_t i = begin; rc == 0 && i < end; ++i) {
    auto out = apply(ctx, batch[i]);
    rc = out.rc;
    results.push_back(std::move(out.result));
  }
  if (rc == 0)
    rc = commit(ctx);
  if (rc != 0)
    end_failed(ctx);
  return rc;
}

int lmdb_store::impl::read_stream_counter(batch_ctx& ctx) {
  MDB_val k = str_val("next_stream_no"), v;
  int rc = safe::get(ctx.txn, meta, &k, &v);
  if (rc == MDB_NOTFOUND)
    return 0;
  if (rc != 0)
    return rc;
  if (v.mv_size != 8)
    return MDB_CORRUPTED;
  ctx.next_stream_no = get_be64(static_cast<const uint8_t*>(v.mv_data));
  return 0;
}

op_outcome lmdb_store::impl::load_stream(batch_ctx& ctx, const std::string& stream, stream_rec*& out) {
  op_outcome o;
  auto i = ctx.streams.find(stream);
  if (i == ctx.streams.end()) {
    auto found = get_stream(ctx.txn, stream);
    if (!found) {
      o.rc = code_of(found.error()) == store_errc::corrupt_store ? MDB_CORRUPTED : EIO;
      return o;
    }
    i = ctx.streams.emplace(stream, found->value_or(stream_rec{})).first;
  }
  out = &i->second;
  return o;
}

op_outcome lmdb_store::impl::apply(batch_ctx& ctx, write_op& op) {
  op_outcome o;
  if (!op.to_seal.empty()
      || (op.what == write_op::kind::save_snapshot
          && (!op.plain_snapshot.empty() || detail::has_plain_personal(op.snap.data)))) {
    o = seal(ctx, op);
    if (o.rc != 0 || !o.result)
      return o;
  }
  switch (op.what) {
    case write_op::kind::forget:
      return forget(ctx, op);
    case write_op::kind::append:
    case write_op::kind::delete_stream: {
      stream_rec* s = nullptr;
      o = load_stream(ctx, op.key, s);
      if (o.rc != 0)
        return o;
      if (op.restore && op.what == write_op::kind::append && op.position != ctx.next_position) {
        o.result = make_error(store_errc::invalid_argument,
                              "import: event " + std::to_string(op.position) + " does not continue the log, which ends at "
                                + std::to_string(ctx.next_position - 1));
        return o;
      }
      if (s->deleted) {
        o.result = make_error(store_errc::stream_deleted, "stream '" + op.key + "' is deleted");
        return o;
      }
      if (!op.expected.admits(s->version)) {
        o.result = make_error(store_errc::wrong_expected_version,
                              "stream '" + op.key + "' is at version " + std::to_string(s->version)
                                + ", expected " + op.expected.to_string());
        return o;
      }
      if (op.what == write_op::kind::delete_stream) {
        s->deleted = true;
        s->exists = true;
        s->updated_at = op.restore ? op.at : ctx.now;
        s->dirty = true;
        MDB_val k = str_val(op.key);
        int rc = safe::del(ctx.txn, snapshots, &k, nullptr);
        o.rc = rc == MDB_NOTFOUND ? 0 : rc;
        o.result = append_result{s->version, 0, 0};
        return o;
      }
      return append_events(ctx, op, *s);
    }
    case write_op::kind::save_snapshot: {
      ctx.buf.clear();
      if (!op.restore)
        op.snap.created_at = ctx.now;
      detail::encode_snapshot(op.snap, ctx.buf);
      MDB_val k = str_val(op.key), v{ctx.buf.size(), ctx.buf.data()};
      o.rc = safe::put(ctx.txn, snapshots, &k, &v, 0);
      return o;
    }
    case write_op::kind::delete_snapshot: {
      MDB_val k = str_val(op.key);
      int rc = safe::del(ctx.txn, snapshots, &k, nullptr);
      o.rc = rc == MDB_NOTFOUND ? 0 : rc;
      return o;
    }
    case write_op::kind::save_checkpoint: {
      u64_key pos{op.position};
      MDB_val k = str_val(op.key), v = pos.val();
      o.rc = safe::put(ctx.txn, checkpoints, &k, &v, 0);
      return o;
    }
  }
  return o;
}

op_outcome lmdb_store::impl::append_events(batch_ctx& ctx, write_op& op, stream_rec& s) {
  op_outcome o;
  append_result r;
  if (op.bodies.empty()) {
    r.stream_version = s.version;
    o.result = r;
    return o;
  }
  // Work on a copy; the operation's own data stays intact so a transaction
  // retried after growing the map can apply it again.
  auto time_of = [&](size_t i) { return op.restore ? op.times[i] : ctx.now; };
  stream_rec next = s;
  if (!next.exists) {
    next.number = ctx.next_stream_no++;
    ctx.stream_no_dirty = true;
    next.created_at = time_of(0);
    next.exists = true;
  }
  uint64_t pos = ctx.next_position;
  auto& appended = ctx.appended[op.key];
  if (appended.positions.empty())
    appended.first_version = next.version + 1;
  for (size_t i = 0; i < op.bodies.size(); ++i) {
    const auto& body = op.bodies[i];
    ++next.version;
    u64_key pkey{pos};
    MDB_val k = pkey.val(), v{detail::record_header_size + body.size() + detail::record_trailer_size, nullptr};
    if ((o.rc = safe::put(ctx.txn, events, &k, &v, MDB_APPEND | MDB_RESERVE)) != 0)
      return o;
    detail::write_record(static_cast<uint8_t*>(v.mv_data), next.version, next.last_position, time_of(i), body);
    appended.positions.push_back(pos);
    next.last_position = pos;
    if (r.first_position == 0)
      r.first_position = pos;
    r.last_position = pos;
    ++pos;
  }
  next.updated_at = time_of(op.bodies.size() - 1);
  next.dirty = true;
  s = next;
  ctx.next_position = pos;
  r.stream_version = next.version;
  o.result = r;
  return o;
}

int lmdb_store::impl::flush_streams(batch_ctx& ctx) {
  uint8_t buf[stream_rec::size];
  for (auto& [id, s] : ctx.streams) {
    if (!s.dirty)
      continue;
    s.encode(buf);
    MDB_val k = str_val(id), v{sizeof buf, buf};
    if (int rc = safe::put(ctx.txn, streams, &k, &v, 0); rc != 0)
      return rc;
  }
  if (ctx.stream_no_dirty) {
    u64_key n{ctx.next_stream_no};
    MDB_val k = str_val("next_stream_no"), v = n.val();
    if (int rc = safe::put(ctx.txn, meta, &k, &v, 0); rc != 0)
      return rc;
  }
  return 0;
}

bool lmdb_store::impl::out_of_space() const {
  constexpr uint64_t margin = uint64_t{64} << 20;
  struct statvfs fs;
  if (::statvfs(claim.path().c_str(), &fs) == 0
      && static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize < margin)
    return true;
  struct rlimit limit;
  struct stat st;
  auto file = claim.path() + "/data.mdb";
  return ::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY
         && ::stat(file.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) + margin > limit.rlim_cur;
}

bool lmdb_store::impl::grow_map() {
  std::unique_lock excl{resize_mtx};
  MDB_envinfo info;
  mdb_env_info(env, &info);
  size_t current = info.me_mapsize;
  size_t next = current * 2;
  if (options.max_map_size != 0)
    next = std::min(next, options.max_map_size);
  if (next <= current)
    return false;
  if (mdb_env_set_mapsize(env, next) != 0)
    return false;
  map_size.store(next);
  resizes.fetch_add(1, std::memory_order_relaxed);
  return true;
}

} // namespace sourcery::persistence
