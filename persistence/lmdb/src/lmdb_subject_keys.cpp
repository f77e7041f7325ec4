// Personal data in the LMDB store: subject keys created inside the writer's
// transactions, sealed events, forgetting, and zeroing a forgotten key's
// page once its deletion committed (lmdb_store.hpp says why that suffices).

#include <cstdio>

#include <unistd.h>

#include "lmdb_state.hpp"

namespace sourcery::persistence {

caf::expected<detail::subject_key> lmdb_store::impl::key_in(batch_ctx& ctx, std::string_view subject) {
  std::string s{subject};
  if (auto i = ctx.new_keys.find(s); i != ctx.new_keys.end())
    return i->second;
  if (ctx.forgotten.count(s) == 0) { // forgotten in this batch: a new key
    if (auto cached = owner->keys().find(s))
      return *cached;
    MDB_val k = str_val(s), v;
    int rc = safe::get(ctx.txn, subject_keys, &k, &v);
    if (rc == 0) {
      auto key = detail::decode_key_record(s, static_cast<const uint8_t*>(v.mv_data), v.mv_size, owner->master_key());
      if (!key)
        return key.error();
      if (*key)
        return **key;
    } else if (rc != MDB_NOTFOUND) {
      return mdb_error(rc, "read subject key");
    }
  }
  auto fresh = detail::make_fresh_key(s, owner->master_key());
  if (!fresh)
    return fresh.error();
  const auto& record = fresh->record;
  MDB_val k = str_val(s), v{key_record_size, nullptr};
  if (int rc = safe::put(ctx.txn, subject_keys, &k, &v, MDB_RESERVE); rc != 0)
    return mdb_error(rc, "write subject key");
  auto* out = static_cast<uint8_t*>(v.mv_data);
  std::memcpy(out, record.data(), record.size());
  std::memset(out + record.size(), 0, key_record_size - record.size());
  ctx.new_keys.emplace(s, fresh->key);
  ctx.forgotten.erase(s);
  return fresh->key;
}

op_outcome lmdb_store::impl::seal(batch_ctx& ctx, write_op& op) {
  op_outcome o;
  auto key_for = [&](std::string_view subject) { return key_in(ctx, subject); };
  auto fail = [&](caf::error err) {
    // A subject key that could not be written aborts the transaction: the
    // batch is run again (a full map grows); anything else fails this op.
    o.result = std::move(err);
    return o;
  };
  if (op.what == write_op::kind::save_snapshot) {
    if (op.plain_snapshot.empty())
      op.plain_snapshot = op.snap.data;
    op.snap.data = op.plain_snapshot;
    if (auto err = owner->seal_personal_fields(op.snap.data, op.key, key_for))
      return fail(std::move(err));
    return o;
  }
  // From the unsealed events every time: a transaction run again after the
  // map grew creates its keys again.
  op.bodies.resize(op.to_seal.size());
  for (size_t i = 0; i < op.to_seal.size(); ++i) {
    auto ev = op.to_seal[i];
    if (auto err = owner->seal_personal_fields(ev.data, ev.subject.empty() ? op.key : ev.subject, key_for))
      return fail(std::move(err));
    detail::encode_record_body(ev, op.key, op.bodies[i]);
  }
  return o;
}

op_outcome lmdb_store::impl::forget(batch_ctx& ctx, write_op& op) {
  op_outcome o;
  append_result r; // stream_version 1: the subject had a key
  ctx.new_keys.erase(op.key);
  ctx.forgotten.insert(op.key);
  MDB_val k = str_val(op.key), v;
  int rc = safe::get(ctx.txn, subject_keys, &k, &v);
  if (rc == MDB_NOTFOUND) {
    o.result = r;
    return o;
  }
  if (rc != 0) {
    o.rc = rc;
    return o;
  }
  // Where the record lies in the file: a page committed earlier is read
  // from the map (a key created in this transaction never reached the file).
  MDB_envinfo info;
  mdb_env_info(env, &info);
  auto* base = static_cast<const uint8_t*>(info.me_mapaddr);
  auto* at = static_cast<const uint8_t*>(v.mv_data);
  if (base != nullptr && at >= base && at + v.mv_size <= base + info.me_mapsize)
    ctx.scrub.emplace_back(static_cast<size_t>(at - base), v.mv_size);
  if ((o.rc = safe::del(ctx.txn, subject_keys, &k, nullptr)) != 0)
    return o;
  r.stream_version = 1;
  o.result = r;
  return o;
}

void lmdb_store::impl::keys_committed(batch_ctx& ctx) {
  for (auto& s : ctx.forgotten)
    owner->keys().drop(s);
  for (auto& [s, key] : ctx.new_keys)
    owner->keys().put(s, key);
  if (ctx.scrub.empty())
    return;
  // The freed pages are not reused before the writer's next transaction,
  // which this thread has not begun: zero them now, and sync.
  int fd = -1;
  if (mdb_env_get_fd(env, &fd) != 0)
    return;
  std::vector<uint8_t> zeros;
  for (auto [offset, size] : ctx.scrub) {
    zeros.assign(size, 0);
    if (::pwrite(fd, zeros.data(), size, static_cast<off_t>(offset)) != static_cast<ssize_t>(size))
      std::fprintf(stderr, "sourcery: could not zero a forgotten key's page at offset %zu of %s/data.mdb: %s\n",
                   offset, claim.path().c_str(), std::strerror(errno));
  }
  if (::fdatasync(fd) != 0)
    std::fprintf(stderr, "sourcery: could not sync %s/data.mdb after zeroing forgotten keys: %s\n",
                 claim.path().c_str(), std::strerror(errno));
}

caf::error lmdb_store::do_load_key_records(const std::vector<std::string>& subjects,
                                           std::vector<std::pair<std::string, bytes>>& found) const {
  if (!impl_->has_subject_keys)
    return {};
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  for (auto& s : subjects) {
    MDB_val k = str_val(s), v;
    int rc = safe::get(r->txn, impl_->subject_keys, &k, &v);
    if (rc == MDB_NOTFOUND)
      continue;
    if (rc != 0)
      return mdb_error(rc, "read subject key");
    auto* p = static_cast<const uint8_t*>(v.mv_data);
    found.emplace_back(s, bytes(p, p + std::min<size_t>(v.mv_size, 128))); // the record; the rest is padding
  }
  return {};
}

} // namespace sourcery::persistence
