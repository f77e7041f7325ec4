#include "lmdb_page_check.hpp"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>
#include <sys/stat.h>

#include "lmdb_error.hpp"
#include "lmdb_open.hpp"
#include "sourcery/persistence/error.hpp"

namespace sourcery::persistence::detail {

namespace {

// LMDB 0.9's on-disk layout (lmdb/mdb.c), for 64-bit builds.
constexpr size_t page_header = 16; // pgno(8) pad(2) flags(2) lower(2) upper(2) | overflow count(4)
constexpr size_t node_header = 8;  // lo(2) hi(2) flags(2) ksize(2)
constexpr uint16_t p_branch = 0x01, p_leaf = 0x02, p_overflow = 0x04, p_leaf2 = 0x20;
constexpr uint16_t f_bigdata = 0x01, f_subdata = 0x02, f_dupdata = 0x04;
constexpr uint32_t meta_magic = 0xBEEFC0DE;
constexpr size_t db_record = 48; // MDB_db: pad(4) flags(2) depth(2) branch, leaf, overflow pages, entries, root (8 each)
constexpr uint64_t no_page = ~uint64_t{0};
constexpr int max_depth = 32; // LMDB's cursor stack

uint16_t u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint32_t u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

struct tree {
  std::string name;
  uint64_t root = no_page;
  uint16_t depth = 0;
};

tree tree_of(std::string name, const uint8_t* rec) {
  return {std::move(name), u64(rec + 40), u16(rec + 6)};
}

class walker {
public:
  walker(int fd, size_t psize, uint64_t last_pgno)
    : fd_(fd), psize_(psize), last_(last_pgno), seen_(last_pgno + 1, false) {}

  std::string problem; // empty while the pages are sound

  /// Walks one tree; named databases found in it (the main tree) are
  /// appended to `more`.
  void walk(const tree& t, std::vector<tree>& more) {
    if (t.root == no_page)
      return;
    tree_ = &t;
    leaf_depth_ = -1;
    visit(t.root, 1, more);
    if (problem.empty() && leaf_depth_ != t.depth)
      fail(t.root, "leaves at depth " + std::to_string(leaf_depth_) + ", recorded depth " + std::to_string(t.depth));
  }

  /// The free list's entries: each is a count and that many page numbers.
  void check_free_lists() {
    tree_ = &free_list_;
    for (auto& [pgno, ids] : free_lists_) {
      if (!problem.empty())
        return;
      if (ids.size() < 8 || u64(ids.data()) > (ids.size() - 8) / 8) {
        fail(pgno, "a free-list entry whose count exceeds its size");
        return;
      }
      uint64_t n = u64(ids.data());
      for (uint64_t i = 1; i <= n; ++i) {
        uint64_t free_page = u64(ids.data() + 8 * i);
        if (free_page < 2 || free_page > last_)
          return fail(pgno, "a free-list entry names page " + std::to_string(free_page) + ", out of range");
        if (seen_[free_page])
          return fail(pgno, "a free-list entry names page " + std::to_string(free_page) + ", which is in use");
      }
    }
  }

private:
  int fd_;
  size_t psize_;
  uint64_t last_;
  std::vector<bool> seen_;
  const tree* tree_ = nullptr;
  const tree free_list_{"(free list)"};
  int leaf_depth_ = -1;
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> free_lists_;

  void fail(uint64_t pgno, const std::string& what) {
    if (problem.empty())
      problem = "page " + std::to_string(pgno) + " of database " + tree_->name + ": " + what;
  }

  bool read(uint64_t pgno, size_t pages, std::vector<uint8_t>& out) {
    out.resize(pages * psize_);
    auto n = ::pread(fd_, out.data(), out.size(), static_cast<off_t>(pgno * psize_));
    if (n != static_cast<ssize_t>(out.size())) {
      fail(pgno, n < 0 ? std::string{"cannot read it: "} + std::strerror(errno) : "past the end of the file");
      return false;
    }
    return true;
  }

  bool claim(uint64_t pgno, uint64_t pages, uint64_t from) {
    if (pgno < 2 || pages == 0 || pgno > last_ || pages > last_ + 1 - pgno) {
      fail(from, "points at page " + std::to_string(pgno) + ", out of range");
      return false;
    }
    for (uint64_t p = pgno; p < pgno + pages; ++p) {
      if (seen_[p]) {
        fail(from, "points at page " + std::to_string(p) + ", reached twice");
        return false;
      }
      seen_[p] = true;
    }
    return true;
  }

  void visit(uint64_t pgno, int depth, std::vector<tree>& more) {
    if (!problem.empty())
      return;
    if (depth > max_depth)
      return fail(pgno, "the tree is deeper than LMDB can follow");
    if (!claim(pgno, 1, pgno))
      return;
    std::vector<uint8_t> page;
    if (!read(pgno, 1, page))
      return;
    const uint8_t* p = page.data();
    if (u64(p) != pgno)
      return fail(pgno, "its header names page " + std::to_string(u64(p)));
    uint16_t flags = u16(p + 10), lower = u16(p + 12), upper = u16(p + 14);
    if (flags != p_branch && flags != p_leaf && flags != (p_leaf | p_leaf2))
      return fail(pgno, "impossible flags " + std::to_string(flags));
    if (lower < page_header || lower > upper || upper > psize_ || (lower - page_header) % 2 != 0)
      return fail(pgno, "impossible bounds " + std::to_string(lower) + ".." + std::to_string(upper));
    size_t keys = (lower - page_header) / 2;
    if (keys == 0)
      return fail(pgno, "no entries");
    if ((flags & p_leaf2) != 0)
      return; // fixed-size keys, no nodes (DUPFIXED databases; Sourcery has none)
    if (flags == p_leaf) {
      if (leaf_depth_ == -1)
        leaf_depth_ = depth;
      else if (leaf_depth_ != depth)
        return fail(pgno, "a leaf at depth " + std::to_string(depth) + ", others at " + std::to_string(leaf_depth_));
    }
    for (size_t i = 0; i < keys && problem.empty(); ++i) {
      size_t off = u16(p + page_header + 2 * i);
      if (off < upper || off % 2 != 0 || off + node_header > psize_)
        return fail(pgno, "entry " + std::to_string(i) + " at impossible offset " + std::to_string(off));
      const uint8_t* node = p + off;
      uint16_t nflags = u16(node + 4), ksize = u16(node + 6);
      size_t key_end = off + node_header + ksize;
      if (key_end > psize_)
        return fail(pgno, "entry " + std::to_string(i) + " has a key past the page");
      if (flags == p_branch) {
        uint64_t child = uint64_t{u16(node)} | uint64_t{u16(node + 2)} << 16 | uint64_t{nflags} << 32;
        visit(child, depth + 1, more);
        continue;
      }
      uint64_t dsize = uint64_t{u16(node)} | uint64_t{u16(node + 2)} << 16;
      const uint8_t* data = node + node_header + ksize;
      std::vector<uint8_t> big;
      if ((nflags & f_bigdata) != 0) {
        if (key_end + 8 > psize_)
          return fail(pgno, "entry " + std::to_string(i) + " has an overflow page number past the page");
        uint64_t ov = u64(data);
        uint64_t pages = (page_header - 1 + dsize) / psize_ + 1;
        if (!claim(ov, pages, pgno) || !read(ov, 1, big))
          return;
        if (u64(big.data()) != ov || u16(big.data() + 10) != p_overflow || u32(big.data() + 12) < pages
            || u32(big.data() + 12) > last_ + 1 - ov)
          return fail(ov, "not the overflow page entry " + std::to_string(i) + " of page " + std::to_string(pgno)
                            + " points at");
        // Pages an overflow run claims beyond what its entry needs.
        for (uint64_t extra = ov + pages; extra < ov + u32(big.data() + 12); ++extra)
          if (!claim(extra, 1, ov))
            return;
        if (tree_->name == "(free list)" && !read(ov, pages, big))
          return;
        data = big.data() + page_header;
      } else if (key_end + dsize > psize_) {
        return fail(pgno, "entry " + std::to_string(i) + " has data past the page");
      }
      if ((nflags & f_subdata) != 0) {
        if (dsize != db_record)
          return fail(pgno, "entry " + std::to_string(i) + " is a database record of the wrong size");
        auto name = std::string(reinterpret_cast<const char*>(node + node_header), ksize);
        if ((nflags & f_dupdata) != 0)
          name = tree_->name + " (duplicates)";
        more.push_back(tree_of(std::move(name), data));
      } else if ((nflags & f_dupdata) != 0) {
        continue; // duplicates in a sub-page of the entry itself, bounds checked above
      } else if (tree_->name == "(free list)") {
        free_lists_.emplace_back(pgno, std::vector<uint8_t>(data, data + dsize));
      }
    }
  }
};

} // namespace

std::string find_damaged_page(MDB_env* env, MDB_txn* txn, bool& raced) {
  raced = false;
  MDB_stat st;
  mdb_filehandle_t fd;
  if (int rc = mdb_env_stat(env, &st); rc != 0)
    return std::string{"cannot read its page size: "} + mdb_strerror(rc);
  if (int rc = mdb_env_get_fd(env, &fd); rc != 0)
    return std::string{"cannot find its data file: "} + mdb_strerror(rc);
  const size_t psize = st.ms_psize;
  // The meta page that describes the snapshot: the two meta pages
  // alternate, so another process's commits overwrite it only two commits
  // after the snapshot began.
  uint64_t txnid = mdb_txn_id(txn);
  std::vector<uint8_t> metas(2 * psize);
  if (::pread(fd, metas.data(), metas.size(), 0) != static_cast<ssize_t>(metas.size()))
    return "cannot read its meta pages";
  const uint8_t* meta = nullptr;
  for (int m = 0; m < 2; ++m) {
    const uint8_t* candidate = metas.data() + m * psize + page_header;
    if (u32(candidate) == meta_magic && u64(candidate + 24 + 2 * db_record + 8) == txnid)
      meta = candidate;
  }
  if (meta == nullptr) {
    raced = true;
    return {};
  }
  uint64_t last_pgno = u64(meta + 24 + 2 * db_record);
  struct stat file;
  if (::fstat(fd, &file) != 0)
    return std::string{"cannot stat data.mdb: "} + std::strerror(errno);
  if (static_cast<uint64_t>(file.st_size) < (last_pgno + 1) * psize)
    return "data.mdb is truncated: " + std::to_string(file.st_size) + " bytes, where its "
           + std::to_string(last_pgno + 1) + " pages in use need " + std::to_string((last_pgno + 1) * psize);
  walker w{fd, psize, last_pgno};
  std::vector<tree> trees{tree_of("(free list)", meta + 24), tree_of("(main)", meta + 24 + db_record)};
  for (size_t i = 0; i < trees.size() && w.problem.empty(); ++i) {
    tree t = trees[i]; // walk may grow `trees`
    w.walk(t, trees);
  }
  if (w.problem.empty())
    w.check_free_lists();
  return w.problem;
}

caf::error check_pages(MDB_env* env, std::string_view what) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    MDB_txn* txn = nullptr;
    if (int rc = begin_at_open(env, MDB_RDONLY, &txn); rc != 0)
      return mdb_error(rc, std::string{what} + ": begin a read transaction");
    bool raced = false;
    auto problem = find_damaged_page(env, txn, raced);
    mdb_txn_abort(txn);
    if (raced)
      continue;
    if (!problem.empty())
      return make_error(store_errc::corrupt_store, std::string{what} + ": damaged: " + problem);
    return {};
  }
  return make_error(store_errc::io_error, std::string{what} + ": its meta pages keep changing under the page check");
}

} // namespace sourcery::persistence::detail
