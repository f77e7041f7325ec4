#pragma once

#include <cstdint>

#include <lmdb.h>

namespace sourcery::persistence::detail {

// LMDB reads its pages straight from the memory map, so a damaged page (bit
// rot, a bad copy, a stray write) can send it, or us reading a value it
// returned, to an address past the file or outside the map: SIGBUS or
// SIGSEGV, and the whole process dies. The calls below run LMDB under a
// fault guard that turns such a fault, inside the call, into MDB_CORRUPTED
// (a corrupt_store error). The jump back skips only LMDB's C frames (nothing
// with a destructor). Faults outside a guard go to whatever handler was
// installed before (the default one, or a sanitizer's): a crash elsewhere
// still crashes.

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

/// LMDB's calls that follow pages, each under a fault_guard; those that
/// return a key or value also read one byte of each page it spans, so that
/// it is known to lie in mapped file pages before anything decodes it.
/// Out of line on purpose: a function that calls sigsetjmp is compiled
/// without keeping values in registers across it, so it must stay small
/// rather than be inlined into the read loops.
namespace safe {

int get(MDB_txn* txn, MDB_dbi dbi, MDB_val* key, MDB_val* data) noexcept;
int cursor_get(MDB_cursor* cur, MDB_val* key, MDB_val* data, MDB_cursor_op op) noexcept;
int put(MDB_txn* txn, MDB_dbi dbi, MDB_val* key, MDB_val* data, unsigned flags) noexcept;
int del(MDB_txn* txn, MDB_dbi dbi, MDB_val* key, MDB_val* data) noexcept;
int cursor_del(MDB_cursor* cur, unsigned flags) noexcept;
int stat(MDB_txn* txn, MDB_dbi dbi, MDB_stat* st) noexcept;
int dbi_open(MDB_txn* txn, const char* name, unsigned flags, MDB_dbi* dbi) noexcept;
/// Commits. On LMDB's own errors the transaction is gone, as with
/// mdb_txn_commit; if a damaged page faulted the commit (saving the free
/// list reads pages), it is left for abort_write to judge.
int txn_commit(MDB_txn* txn) noexcept;

} // namespace safe

} // namespace sourcery::persistence::detail
