// Reads of the LMDB store: read transactions on the caller's thread, never
// waiting for the writer; stream reads combine the index and the links.

#include "lmdb_state.hpp"

namespace sourcery::persistence {

caf::expected<lmdb_store::impl::read_txn> lmdb_store::impl::begin_read() const {
  return detail::begin_read(env, resize_mtx);
}

caf::expected<std::optional<stream_rec>> lmdb_store::impl::get_stream(MDB_txn* txn, std::string_view stream) const {
  MDB_val k = str_val(stream), v;
  int rc = safe::get(txn, streams, &k, &v);
  if (rc == MDB_NOTFOUND)
    return std::optional<stream_rec>{};
  if (rc != 0)
    return mdb_error(rc, "read stream record");
  auto rec = stream_rec::decode(v);
  if (!rec)
    return make_error(store_errc::corrupt_store,
                      "stream record of '" + std::string{stream} + "' has a wrong size");
  return std::optional<stream_rec>{*rec};
}

caf::error lmdb_store::impl::get_event(MDB_txn* txn, uint64_t position, recorded_event& into, uint64_t* prev) const {
  u64_key key{position};
  MDB_val k = key.val(), v;
  int rc = safe::get(txn, events, &k, &v);
  if (rc == MDB_NOTFOUND)
    return make_error(store_errc::corrupt_store,
                      "stream points at missing event " + std::to_string(position));
  if (rc != 0)
    return mdb_error(rc, "read event");
  return detail::decode_record_into(into, static_cast<const uint8_t*>(v.mv_data), v.mv_size, position, prev);
}

caf::expected<std::vector<recorded_event>> lmdb_store::impl::walk_tail(MDB_txn* txn, std::string_view stream,
                                                     const stream_rec& rec, uint64_t low) const {
  std::vector<recorded_event> out;
  uint64_t pos = rec.last_position;
  for (uint64_t v = rec.version; v >= low && v > 0; --v) {
    uint64_t prev = 0;
    auto& ev = out.emplace_back();
    if (auto err = get_event(txn, pos, ev, &prev))
      return err;
    if (ev.stream_version != v || ev.stream_id != stream)
      return make_error(store_errc::corrupt_store, "event " + std::to_string(pos) + " is not version "
                                                     + std::to_string(v) + " of '" + std::string{stream} + "'");
    pos = prev;
  }
  return out;
}

uint64_t lmdb_store::impl::last_position(MDB_txn* txn, int& rc) const {
  MDB_cursor* cur = nullptr;
  rc = mdb_cursor_open(txn, events, &cur);
  if (rc != 0)
    return 0;
  MDB_val k, v;
  rc = safe::cursor_get(cur, &k, &v, MDB_LAST);
  uint64_t pos = 0;
  if (rc == 0 && k.mv_size == 8)
    pos = get_be64(static_cast<const uint8_t*>(k.mv_data));
  if (rc == MDB_NOTFOUND)
    rc = 0;
  mdb_cursor_close(cur);
  return pos;
}

// -- reads ---------------------------------------------------------------------------

namespace {

/// Reads events by position through one cursor. A stream's events often sit
/// next to each other in `$all` (appended together, or by a busy writer):
/// stepping to the next key is then much cheaper than a search from the root.
class event_cursor {
public:
  event_cursor(MDB_txn* txn, MDB_dbi dbi) {
    if (int rc = mdb_cursor_open(txn, dbi, &cur_); rc != 0) {
      cur_ = nullptr;
      open_error_ = rc;
    }
  }
  ~event_cursor() {
    if (cur_ != nullptr)
      mdb_cursor_close(cur_);
  }
  event_cursor(const event_cursor&) = delete;
  event_cursor& operator=(const event_cursor&) = delete;

  caf::error read(uint64_t position, recorded_event& into) {
    if (cur_ == nullptr)
      return mdb_error(open_error_, "open cursor");
    MDB_val k, v;
    int rc = MDB_NOTFOUND;
    if (at_ != 0 && position == at_ + 1) {
      rc = safe::cursor_get(cur_, &k, &v, MDB_NEXT);
      if (rc == 0 && (k.mv_size != 8 || get_be64(static_cast<const uint8_t*>(k.mv_data)) != position))
        rc = MDB_NOTFOUND; // a gap: search for it
    }
    if (rc != 0) {
      u64_key key{position};
      k = key.val();
      rc = safe::cursor_get(cur_, &k, &v, MDB_SET_KEY);
    }
    if (rc == MDB_NOTFOUND) {
      at_ = 0;
      return make_error(store_errc::corrupt_store, "stream points at missing event " + std::to_string(position));
    }
    if (rc != 0) {
      at_ = 0;
      return mdb_error(rc, "read event");
    }
    at_ = position;
    return detail::decode_record_into(into, static_cast<const uint8_t*>(v.mv_data), v.mv_size, position);
  }

private:
  MDB_cursor* cur_ = nullptr;
  int open_error_ = 0;
  uint64_t at_ = 0; // the position the cursor stands on, 0 if unknown
};

} // namespace


caf::error lmdb_store::do_read_stream(std::string_view stream, uint64_t from, size_t max_count,
                                      read_direction direction, std::vector<recorded_event>& out) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  detail::event_sink sink{out};
  auto s = impl_->get_stream(r->txn, stream);
  if (!s)
    return s.error();
  if (!*s) {
    sink.finish();
    return {};
  }
  if ((*s)->deleted)
    return make_error(store_errc::stream_deleted, "stream '" + std::string{stream} + "' is deleted");
  const auto& rec = **s;
  // The versions wanted: [lo, hi], returned ascending or descending.
  uint64_t lo, hi;
  if (direction == read_direction::forward) {
    lo = std::max<uint64_t>(from, 1);
    if (lo > rec.version) {
      sink.finish();
      return {};
    }
    hi = std::min<uint64_t>(rec.version, lo + max_count - 1);
  } else {
    hi = std::min<uint64_t>(from, rec.version);
    if (hi == 0) {
      sink.finish();
      return {};
    }
    lo = hi >= max_count ? hi - max_count + 1 : 1;
  }
  // Versions up to indexed_version come from the index...
  uint64_t indexed_hi = std::min(hi, rec.indexed_version);
  if (lo <= indexed_hi) {
    MDB_cursor* cur = nullptr;
    if (int rc = mdb_cursor_open(r->txn, impl_->stream_index, &cur); rc != 0)
      return mdb_error(rc, "open cursor");
    event_cursor events{r->txn, impl_->events};
    index_key key{rec.number, lo};
    MDB_val k = key.val(), v;
    int rc = safe::cursor_get(cur, &k, &v, MDB_SET_KEY);
    caf::error err;
    for (uint64_t version = lo; version <= indexed_hi; ++version) {
      if (rc != 0 || k.mv_size != 16 || v.mv_size != 8
          || get_be64(static_cast<const uint8_t*>(k.mv_data)) != rec.number
          || get_be64(static_cast<const uint8_t*>(k.mv_data) + 8) != version) {
        err = rc != 0 && rc != MDB_NOTFOUND
                ? mdb_error(rc, "read stream index")
                : make_error(store_errc::corrupt_store,
                             "stream index of '" + std::string{stream} + "' lacks version " + std::to_string(version));
        break;
      }
      err = events.read(get_be64(static_cast<const uint8_t*>(v.mv_data)), sink.next());
      if (err)
        break;
      if (version < indexed_hi)
        rc = safe::cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (err)
      return err;
  }
  // ...the newer ones by following the links back from the stream's end.
  if (hi > rec.indexed_version) {
    auto tail = impl_->walk_tail(r->txn, stream, rec, std::max(lo, rec.indexed_version + 1));
    if (!tail)
      return tail.error();
    size_t skip = rec.version - hi; // newer than wanted
    for (auto i = tail->rbegin(); i != tail->rend() - static_cast<std::ptrdiff_t>(skip); ++i)
      sink.next() = std::move(*i);
  }
  sink.finish();
  if (direction == read_direction::backward)
    std::reverse(out.begin(), out.end());
  return {};
}

caf::error lmdb_store::do_read_all(uint64_t from, size_t max_count, read_direction direction,
                                   std::vector<recorded_event>& out) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  detail::event_sink sink{out};
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(r->txn, impl_->events, &cur); rc != 0)
    return mdb_error(rc, "open cursor");
  MDB_val k, v;
  int rc;
  u64_key key{std::max<uint64_t>(from, 1)};
  if (direction == read_direction::forward) {
    k = key.val();
    rc = safe::cursor_get(cur, &k, &v, MDB_SET_RANGE);
  } else {
    k = key.val();
    rc = safe::cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND)
      rc = safe::cursor_get(cur, &k, &v, MDB_LAST);
    else if (rc == 0 && get_be64(static_cast<const uint8_t*>(k.mv_data)) > from)
      rc = safe::cursor_get(cur, &k, &v, MDB_PREV);
    if (from == 0)
      rc = MDB_NOTFOUND;
  }
  const MDB_cursor_op step = direction == read_direction::forward ? MDB_NEXT : MDB_PREV;
  caf::error err;
  while (rc == 0 && sink.size() < max_count) {
    if (k.mv_size != 8) {
      err = make_error(store_errc::corrupt_store, "event key of the wrong size");
      break;
    }
    auto pos = get_be64(static_cast<const uint8_t*>(k.mv_data));
    err = detail::decode_record_into(sink.next(), static_cast<const uint8_t*>(v.mv_data), v.mv_size, pos);
    if (err)
      break;
    rc = safe::cursor_get(cur, &k, &v, step);
  }
  mdb_cursor_close(cur);
  if (err)
    return err;
  if (rc != 0 && rc != MDB_NOTFOUND)
    return mdb_error(rc, "read $all");
  sink.finish();
  return {};
}

caf::expected<stream_info> lmdb_store::do_stream_info(std::string_view stream) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  auto s = impl_->get_stream(r->txn, stream);
  if (!s)
    return s.error();
  persistence::stream_info info;
  info.stream_id = std::string{stream};
  if (*s) {
    info.exists = true;
    info.version = (*s)->version;
    info.deleted = (*s)->deleted;
    info.created_at = (*s)->created_at;
    info.updated_at = (*s)->updated_at;
  }
  return info;
}

caf::expected<std::optional<snapshot>> lmdb_store::do_load_snapshot(std::string_view stream) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  MDB_val k = str_val(stream), v;
  int rc = safe::get(r->txn, impl_->snapshots, &k, &v);
  if (rc == MDB_NOTFOUND)
    return std::optional<snapshot>{};
  if (rc != 0)
    return mdb_error(rc, "read snapshot");
  auto snap = detail::decode_snapshot(static_cast<const uint8_t*>(v.mv_data), v.mv_size, stream);
  if (!snap)
    return snap.error();
  return std::optional<snapshot>{std::move(*snap)};
}

caf::expected<std::optional<uint64_t>> lmdb_store::do_load_checkpoint(std::string_view name) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  return detail::read_checkpoint(r->txn, impl_->checkpoints, name, "checkpoint '" + std::string{name} + "'");
}

// -- listing -------------------------------------------------------------------------

namespace {

/// Up to `max_count` entries of `dbi` with keys after `after`, each handed to
/// `take(key, value)`, which returns an error to stop.
template <class Take>
caf::error scan_after(MDB_txn* txn, MDB_dbi dbi, std::string_view after, size_t max_count, Take take) {
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(txn, dbi, &cur); rc != 0)
    return mdb_error(rc, "open cursor");
  MDB_val k = str_val(after), v;
  int rc = after.empty() ? safe::cursor_get(cur, &k, &v, MDB_FIRST) : safe::cursor_get(cur, &k, &v, MDB_SET_RANGE);
  if (rc == 0 && !after.empty() && std::string_view{static_cast<const char*>(k.mv_data), k.mv_size} == after)
    rc = safe::cursor_get(cur, &k, &v, MDB_NEXT);
  caf::error err;
  for (size_t n = 0; rc == 0 && n < max_count && !err; ++n) {
    err = take(std::string_view{static_cast<const char*>(k.mv_data), k.mv_size}, v);
    if (!err)
      rc = safe::cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  if (err)
    return err;
  if (rc != 0 && rc != MDB_NOTFOUND)
    return mdb_error(rc, "list");
  return {};
}

} // namespace

caf::error lmdb_store::do_list_streams(std::string_view after, size_t max_count,
                                       std::vector<persistence::stream_info>& out) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  out.clear();
  return scan_after(r->txn, impl_->streams, after, max_count, [&](std::string_view id, const MDB_val& v) -> caf::error {
    auto rec = stream_rec::decode(v);
    if (!rec)
      return make_error(store_errc::corrupt_store, "stream record of '" + std::string{id} + "' has a wrong size");
    out.push_back({std::string{id}, rec->version, true, rec->deleted, rec->created_at, rec->updated_at});
    return {};
  });
}

caf::error lmdb_store::do_list_snapshots(std::string_view after, size_t max_count, std::vector<snapshot>& out) const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  out.clear();
  return scan_after(r->txn, impl_->snapshots, after, max_count, [&](std::string_view id, const MDB_val& v) -> caf::error {
    auto snap = detail::decode_snapshot(static_cast<const uint8_t*>(v.mv_data), v.mv_size, id);
    if (!snap)
      return snap.error();
    out.push_back(std::move(*snap));
    return {};
  });
}

caf::expected<std::vector<std::pair<std::string, uint64_t>>> lmdb_store::do_list_checkpoints() const {
  auto r = impl_->begin_read();
  if (!r)
    return r.error();
  std::vector<std::pair<std::string, uint64_t>> out;
  auto err = scan_after(r->txn, impl_->checkpoints, "", SIZE_MAX, [&](std::string_view name, const MDB_val& v) -> caf::error {
    if (v.mv_size != 8)
      return make_error(store_errc::corrupt_store, "checkpoint '" + std::string{name} + "' has a wrong size");
    out.emplace_back(std::string{name}, get_be64(static_cast<const uint8_t*>(v.mv_data)));
    return {};
  });
  if (err)
    return err;
  return out;
}


} // namespace sourcery::persistence
