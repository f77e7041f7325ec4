// The lazy stream index (see ARCHITECTURE.md): streams are indexed in
// chunks, when idle, and every 2 s under load; reads follow record links
// for what is not indexed yet.

#include "lmdb_state.hpp"

namespace sourcery::persistence {

void lmdb_store::impl::index_idle() {
  std::vector<write_op> none;
  std::vector<caf::expected<append_result>> results;
  draining = true;
  for (int attempt = 0; attempt < 8 && !pending.empty();) {
    int rc = run_transaction(none, 0, 0, results);
    if (rc == MDB_MAP_FULL && grow_map()) {
      ++attempt;
      continue;
    }
    if (rc != 0)
      return; // the index stays pending; reads follow links meanwhile
    std::lock_guard lock{queue_mtx};
    if (!queue.empty() || stopping)
      return;
  }
}

int lmdb_store::impl::update_index(batch_ctx& ctx) {
  std::vector<std::string> due;
  for (auto& [id, a] : ctx.appended) {
    auto p = pending.find(id);
    size_t n = a.positions.size() + (p == pending.end() ? 0 : p->second.positions.size());
    if (n >= index_chunk)
      due.push_back(id);
  }
  if (ctx.drain) {
    size_t budget = index_budget;
    for (auto i = pending.begin(); i != pending.end() && budget > 0; ++i)
      if (auto a = ctx.appended.find(i->first); a == ctx.appended.end()
                                                || a->second.positions.size() + i->second.positions.size() < index_chunk) {
        due.push_back(i->first);
        --budget;
        ++ctx.drained;
      }
  }
  for (auto& id : due)
    if (int rc = index_stream(ctx, id); rc != 0)
      return rc;
  return 0;
}

int lmdb_store::impl::index_stream(batch_ctx& ctx, const std::string& id) {
  stream_rec* s = nullptr;
  if (auto o = load_stream(ctx, id, s); o.rc != 0)
    return o.rc;
  if (!s->exists || s->indexed_version >= s->version) {
    ctx.indexed.push_back(id);
    return 0;
  }
  // Positions of versions indexed_version+1 .. version, from memory when it
  // covers them all, else by walking the links.
  std::vector<uint64_t> positions;
  auto p = pending.find(id);
  auto a = ctx.appended.find(id);
  uint64_t from = s->indexed_version + 1;
  uint64_t covered_from = p != pending.end() ? p->second.first_version
                          : a != ctx.appended.end() ? a->second.first_version : 0;
  if (covered_from == from) {
    if (p != pending.end())
      positions = p->second.positions;
    if (a != ctx.appended.end())
      positions.insert(positions.end(), a->second.positions.begin(), a->second.positions.end());
  }
  if (positions.size() != s->version - s->indexed_version) {
    auto tail = walk_tail(ctx.txn, id, *s, from);
    if (!tail)
      return code_of(tail.error()) == store_errc::io_error ? EIO : MDB_CORRUPTED;
    positions.clear();
    for (auto i = tail->rbegin(); i != tail->rend(); ++i)
      positions.push_back(i->position);
  }
  uint64_t version = from;
  for (auto pos : positions) {
    index_key ikey{s->number, version++};
    u64_key pkey{pos};
    MDB_val ik = ikey.val(), iv = pkey.val();
    if (int rc = safe::put(ctx.txn, stream_index, &ik, &iv, 0); rc != 0)
      return rc;
  }
  s->indexed_version = s->version;
  s->dirty = true;
  ctx.indexed.push_back(id);
  return 0;
}

void lmdb_store::impl::remember_pending(batch_ctx& ctx) {
  for (auto& id : ctx.indexed)
    if (auto p = pending.find(id); p != pending.end()) {
      pending_total -= p->second.positions.size();
      pending.erase(p);
    }
  std::unordered_set<std::string> done(ctx.indexed.begin(), ctx.indexed.end());
  for (auto& [id, a] : ctx.appended) {
    if (done.count(id) != 0)
      continue;
    auto& p = pending[id];
    if (p.positions.empty())
      p.first_version = a.first_version;
    p.positions.insert(p.positions.end(), a.positions.begin(), a.positions.end());
    pending_total += a.positions.size();
  }
  if (ctx.drain && pending.empty()) {
    draining = false;
    last_full_index = std::chrono::steady_clock::now();
  }
}

} // namespace sourcery::persistence
