#pragma once

#include <csetjmp>
#include <cstddef>
#include <cstdint>

#include <lmdb.h>

namespace sourcery::persistence::detail {

/// LMDB reads its pages straight from the memory map, so a damaged page (bit
/// rot, a bad copy, a stray write) can send it, or us reading a value it
/// returned, to an address past the file or outside the map: SIGBUS or
/// SIGSEGV, and the whole process dies. A fault_guard turns such a fault
/// inside the LMDB call it wraps into MDB_CORRUPTED, a corrupt_store error.
///
/// The jump back skips only LMDB's C frames and the wrapping lambda (nothing
/// with a destructor). Faults outside a guard go to whatever handler was
/// installed before (the default one, or a sanitizer's): a crash elsewhere
/// still crashes.
struct fault_guard {
  sigjmp_buf jump;
  fault_guard* outer;
  fault_guard() noexcept;
  ~fault_guard();
  fault_guard(const fault_guard&) = delete;
  fault_guard& operator=(const fault_guard&) = delete;
};

/// Faults (and LMDB assertions) caught on this thread so far.
uint64_t faults_caught() noexcept;

/// Ends a write transaction that failed, unless it faulted on this thread
/// since `faults_before`: LMDB's state in that one cannot be trusted (aborting
/// it can free garbage), so it is left as it is and this returns false. The
/// environment must then not be written to again, nor closed.
bool abort_write(MDB_txn* txn, uint64_t faults_before) noexcept;

/// Keeps an environment with an abandoned write transaction for the rest of
/// the process, instead of closing it (closing could free LMDB's garbage).
/// It stays reachable, so leak checkers do not count it.
void retain_abandoned(MDB_env* env) noexcept;

/// Makes LMDB's failed internal assertions (a damaged page caught in the
/// act) jump back to the innermost fault_guard too, instead of aborting.
/// Outside a guard LMDB aborts, as before.
void guard_assertions(MDB_env* env) noexcept;

/// Runs `call` (an LMDB call returning its code) under a fault_guard.
template <class Call>
int guarded(const Call& call) noexcept {
  fault_guard guard;
  if (sigsetjmp(guard.jump, 0) != 0)
    return MDB_CORRUPTED;
  return call();
}

/// Reads one byte of every page `v` spans, so that a value LMDB returned is
/// known to lie in mapped file pages before anything decodes it.
inline void touch(const MDB_val& v) noexcept {
  auto p = static_cast<const volatile uint8_t*>(v.mv_data);
  for (size_t off = 0; off < v.mv_size; off += 4096)
    (void)p[off];
  if (v.mv_size > 0)
    (void)p[v.mv_size - 1];
}

/// LMDB's calls that follow pages, under a fault_guard; those that return a
/// key or value also touch it.
namespace safe {

inline int get(MDB_txn* txn, MDB_dbi dbi, MDB_val* key, MDB_val* data) noexcept {
  return guarded([&] {
    int rc = mdb_get(txn, dbi, key, data);
    if (rc == 0)
      touch(*data);
    return rc;
  });
}

inline int cursor_get(MDB_cursor* cur, MDB_val* key, MDB_val* data, MDB_cursor_op op) noexcept {
  return guarded([&] {
    int rc = mdb_cursor_get(cur, key, data, op);
    if (rc == 0) {
      if (key != nullptr)
        touch(*key);
      if (data != nullptr)
        touch(*data);
    }
    return rc;
  });
}

inline int put(MDB_txn* txn, MDB_dbi dbi, MDB_val* key, MDB_val* data, unsigned flags) noexcept {
  return guarded([&] { return mdb_put(txn, dbi, key, data, flags); });
}

inline int del(MDB_txn* txn, MDB_dbi dbi, MDB_val* key, MDB_val* data) noexcept {
  return guarded([&] { return mdb_del(txn, dbi, key, data); });
}

inline int cursor_del(MDB_cursor* cur, unsigned flags) noexcept {
  return guarded([&] { return mdb_cursor_del(cur, flags); });
}

inline int stat(MDB_txn* txn, MDB_dbi dbi, MDB_stat* st) noexcept {
  return guarded([&] { return mdb_stat(txn, dbi, st); });
}

inline int dbi_open(MDB_txn* txn, const char* name, unsigned flags, MDB_dbi* dbi) noexcept {
  return guarded([&] { return mdb_dbi_open(txn, name, flags, dbi); });
}

/// Commits. On LMDB's own errors the transaction is gone, as with
/// mdb_txn_commit; if a damaged page faulted the commit (saving the free
/// list reads pages), it is left for abort_write to judge.
inline int txn_commit(MDB_txn* txn) noexcept {
  return guarded([&] { return mdb_txn_commit(txn); });
}

} // namespace safe

} // namespace sourcery::persistence::detail
