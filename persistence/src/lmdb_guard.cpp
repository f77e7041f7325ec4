#include "lmdb_guard.hpp"

#include <mutex>
#include <vector>

#include <signal.h>

namespace sourcery::persistence::detail {

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

void on_fault(int sig, siginfo_t* info, void* context) {
  if (fault_guard* guard = innermost) {
    ++caught;
    siglongjmp(guard->jump, 1);
  }
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
  if (fault_guard* guard = innermost) {
    ++caught;
    siglongjmp(guard->jump, 1);
  }
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

} // namespace sourcery::persistence::detail
