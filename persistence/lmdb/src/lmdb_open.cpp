#include "lmdb_open.hpp"

#include <cerrno>
#include <cstring>
#include <string>

#include <csignal>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmdb_error.hpp"
#include "lmdb_guard.hpp"
#include "lmdb_page_check.hpp"
#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::detail {

namespace {

/// A data file shorter than the pages its newest meta page says are in use
/// (a truncated copy, a cut-off restore).
caf::error check_not_truncated(MDB_env* env, std::string_view what) {
  MDB_envinfo info;
  MDB_stat st;
  mdb_filehandle_t fd;
  if (int rc = mdb_env_info(env, &info); rc != 0)
    return mdb_error(rc, std::string{what} + ": read its meta page");
  if (int rc = mdb_env_stat(env, &st); rc != 0)
    return mdb_error(rc, std::string{what} + ": read its page size");
  if (int rc = mdb_env_get_fd(env, &fd); rc != 0)
    return mdb_error(rc, std::string{what} + ": find its data file");
  struct stat file;
  if (::fstat(fd, &file) != 0)
    return make_error(store_errc::io_error, std::string{what} + ": stat data.mdb: " + std::strerror(errno));
  auto needed = (static_cast<uint64_t>(info.me_last_pgno) + 1) * st.ms_psize;
  auto size = static_cast<uint64_t>(file.st_size);
  if (size < needed)
    return make_error(store_errc::corrupt_store,
                      std::string{what} + ": data.mdb is truncated: " + std::to_string(size) + " bytes, where its "
                        + std::to_string(info.me_last_pgno + 1) + " pages in use need " + std::to_string(needed));
  return {};
}

/// LMDB sizes its lock file with ftruncate, maps it and writes its reader
/// table through the map. On a full filesystem the first touch of a page
/// that has no block behind it is SIGBUS, inside mdb_env_open. Reserving the
/// blocks first (without changing the size, so LMDB sizes it as always)
/// turns that into ENOSPC here. A filesystem without fallocate keeps
/// LMDB's own behaviour.
caf::error reserve_lock_file(const std::string& path, const std::string& what) {
  auto file = path + "/lock.mdb";
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return errno == ENOSPC || errno == EDQUOT
             ? make_error(store_errc::store_full, what + ": cannot create lock.mdb: " + std::strerror(errno))
             : caf::error{}; // LMDB reports it with its own words
  // 1024 reader slots of 64 bytes plus the header, rounded up.
  constexpr off_t lock_bytes = 128 << 10;
  int rc = ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, lock_bytes);
  int err = rc != 0 ? errno : 0;
  ::close(fd);
  if (err == ENOSPC || err == EDQUOT || err == EFBIG)
    return make_error(store_errc::store_full, what + ": no space for lock.mdb: " + std::strerror(err));
  return {};
}

/// A file-size limit (ulimit -f) sends SIGXFSZ, whose default action ends
/// the process, before write returns EFBIG, which the store reports as
/// store_full. Ignored once, for the whole process, unless the program chose
/// its own handler.
void ignore_file_size_signal() {
  static const bool done = [] {
    struct sigaction current {};
    if (::sigaction(SIGXFSZ, nullptr, &current) == 0 && current.sa_handler == SIG_DFL
        && (current.sa_flags & SA_SIGINFO) == 0)
      ::signal(SIGXFSZ, SIG_IGN);
    return true;
  }();
  (void)done;
}

} // namespace

caf::error open_env(MDB_env* env, const std::string& path, bool read_only, durability mode, bool check_pages,
                    const std::string& what) {
  unsigned flags = MDB_NOTLS;
  if (read_only)
    flags |= MDB_RDONLY;
  if (mode == durability::no_meta_sync)
    flags |= MDB_NOMETASYNC;
  else if (mode == durability::no_sync)
    flags |= MDB_NOSYNC;
  if (!read_only) {
    ignore_file_size_signal();
    if (auto err = reserve_lock_file(path, what))
      return err;
  }
  if (int rc = mdb_env_open(env, path.c_str(), flags, 0644); rc != 0)
    return mdb_error(rc, what);
  guard_assertions(env);
  return check_pages ? detail::check_pages(env, what) : check_not_truncated(env, what);
}

int begin_at_open(MDB_env* env, unsigned flags, MDB_txn** txn) noexcept {
  int rc = MDB_MAP_RESIZED;
  for (int attempt = 0; attempt < 8 && rc == MDB_MAP_RESIZED; ++attempt) {
    rc = mdb_txn_begin(env, nullptr, flags, txn);
    if (rc == MDB_MAP_RESIZED)
      mdb_env_set_mapsize(env, 0);
  }
  return rc;
}

} // namespace sourcery::persistence::detail
