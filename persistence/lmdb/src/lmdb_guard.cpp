#include "lmdb_guard.hpp"

#include <csetjmp>
#include <mutex>
#include <vector>

#include <signal.h>

namespace sourcery::persistence::detail {

/// One guarded LMDB call: where a fault inside it jumps back to.
struct fault_guard {
  sigjmp_buf jump;
  fault_guard* outer;
  fault_guard() noexcept;
  ~fault_guard();
  fault_guard(const fault_guard&) = delete;
  fault_guard& operator=(const fault_guard&) = delete;
};

namespace {

// Trivially initialized, so reading them in a signal handler needs no TLS
// setup; initial-exec, so each guard's access is one load, not a call.
[[gnu::tls_model("initial-exec")]] thread_local fault_guard* innermost = nullptr;
[[gnu::tls_model("initial-exec")]] thread_local uint64_t caught = 0;

struct sigaction previous_segv {}, previous_bus {};

void pass_on(int sig, siginfo_t* info, void* context) {
  struct sigaction& prev = sig == SIGBUS ? previous_bus : previous_segv;
  if ((prev.sa_flags & SA_SIGINFO) != 0 && prev.sa_sigaction != nullptr) {
    prev.sa_sigaction(sig, info, context);
    return;
  }
  if ((prev.sa_flags & SA_SIGINFO) == 0 && prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  // The default action: put it back and return; the faulting instruction
  // runs again and the process dies as it would have without us.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
}

/// Inside a guarded call, jumps back to it (and does not return).
void jump_back_if_guarded() {
  if (fault_guard* guard = innermost) {
    ++caught;
    siglongjmp(guard->jump, 1);
  }
}

void on_fault(int sig, siginfo_t* info, void* context) {
  jump_back_if_guarded();
  pass_on(sig, info, context);
}

void install_handlers() {
  struct sigaction sa {};
  sa.sa_sigaction = on_fault;
  sigemptyset(&sa.sa_mask);
  // NODEFER: the jump back leaves the signal unblocked without saving and
  // restoring the mask at every guard (a system call each).
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigaction(SIGSEGV, &sa, &previous_segv);
  sigaction(SIGBUS, &sa, &previous_bus);
}

void on_assert(MDB_env*, const char*) {
  jump_back_if_guarded(); // outside a guard LMDB aborts, as before
}

} // namespace

uint64_t faults_caught() noexcept {
  return caught;
}

bool abort_write(MDB_txn* txn, uint64_t faults_before) noexcept {
  if (caught != faults_before)
    return false;
  mdb_txn_abort(txn);
  return true;
}

void retain_abandoned(MDB_env* env) noexcept {
  static std::mutex mtx;
  static auto* kept = new std::vector<MDB_env*>; // never freed: reachable to the end
  std::lock_guard lock{mtx};
  kept->push_back(env);
}

void guard_assertions(MDB_env* env) noexcept {
  mdb_env_set_assert(env, on_assert);
}

fault_guard::fault_guard() noexcept : outer(innermost) {
  [[maybe_unused]] static const bool installed = (install_handlers(), true);
  innermost = this;
}

fault_guard::~fault_guard() {
  innermost = outer;
}

namespace {

/// Runs `call` (an LMDB call returning its code) under a fault_guard.
template <class Call>
int guarded(const Call& call) noexcept {
  fault_guard guard;
  if (sigsetjmp(guard.jump, 0) != 0)
    return MDB_CORRUPTED;
  return call();
}

void touch(const MDB_val& v) noexcept {
  auto p = static_cast<const volatile uint8_t*>(v.mv_data);
  for (size_t off = 0; off < v.mv_size; off += 4096)
    (void)p[off];
  if (v.mv_size > 0)
    (void)p[v.mv_size - 1];
}

} // namespace

namespace safe {

int get(MDB_txn* txn, MDB_dbi dbi, MDB_val* key, MDB_val* data) noexcept {
  return guarded([&] {
    int rc = mdb_get(txn, dbi, key, data);
    if (rc == 0)
      touch(*data);
    return rc;
  });
}

int cursor_get(MDB_cursor* cur, MDB_val* key, MDB_val* data, MDB_cursor_op op) noexcept {
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

int put(MDB_txn* txn, MDB_dbi dbi, MDB_val* key, MDB_val* data, unsigned flags) noexcept {
  return guarded([&] { return mdb_put(txn, dbi, key, data, flags); });
}

int del(MDB_txn* txn, MDB_dbi dbi, MDB_val* key, MDB_val* data) noexcept {
  return guarded([&] { return mdb_del(txn, dbi, key, data); });
}

int cursor_del(MDB_cursor* cur, unsigned flags) noexcept {
  return guarded([&] { return mdb_cursor_del(cur, flags); });
}

int stat(MDB_txn* txn, MDB_dbi dbi, MDB_stat* st) noexcept {
  return guarded([&] { return mdb_stat(txn, dbi, st); });
}

int dbi_open(MDB_txn* txn, const char* name, unsigned flags, MDB_dbi* dbi) noexcept {
  return guarded([&] { return mdb_dbi_open(txn, name, flags, dbi); });
}

int txn_commit(MDB_txn* txn) noexcept {
  return guarded([&] { return mdb_txn_commit(txn); });
}

} // namespace safe

} // namespace sourcery::persistence::detail
