// Damage to the LMDB file itself (bit rot, a cut copy, a stray write): every
// store refuses it, or survives it, with a corrupt_store error; none crashes.
// The page check at open refuses damage at rest; the fault guard turns what
// slips past it (damage made while open, or the check turned off) into errors.

#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "../support/temp_dir.hpp"
#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/projection_store.hpp"
#include "test_events.hpp"

using namespace sourcery::persistence;
using namespace sourcery::testing;
namespace fs = std::filesystem;

namespace {

constexpr size_t page_size = 4096;

std::vector<uint8_t> slurp(const fs::path& file) {
  std::ifstream in{file, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

void spill(const fs::path& file, const std::vector<uint8_t>& bytes) {
  std::ofstream out{file, std::ios::binary | std::ios::trunc};
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

uint16_t u16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | p[1] << 8);
}

/// A store with `streams` streams of `per_stream` events, stream ids
/// `id_length` bytes long (so their tree's pages can be told apart).
void fill_damaged(const std::string& path, int streams, int per_stream, size_t id_length) {
  auto store = lmdb_store::open({.path = path});
  ASSERT_TRUE(store) << describe(store.error());
  for (int s = 0; s < streams; ++s) {
    auto id = "s-" + std::to_string(s);
    id.resize(id_length, '.');
    ASSERT_TRUE((*store)->append(id, expected_version::any(), make_events(s, static_cast<size_t>(per_stream))));
  }
}

std::string stream_id(int s, size_t id_length) {
  auto id = "s-" + std::to_string(s);
  id.resize(id_length, '.');
  return id;
}

/// Calls `change(page, keys)` on every page of `file` with these `flags`
/// (0x01 branch, 0x02 leaf) whose node `probe` has a key of `key_size` bytes
/// (so one tree's pages can be told from another's; any_key: every such
/// page). Returns how many.
constexpr size_t any_key = ~size_t{0};

template <class Change>
int change_pages(const fs::path& file, uint16_t flags, size_t probe, size_t key_size, Change change) {
  auto bytes = slurp(file);
  int changed = 0;
  for (size_t page = 2; (page + 1) * page_size <= bytes.size(); ++page) {
    uint8_t* p = bytes.data() + page * page_size;
    uint16_t lower = u16(p + 12);
    size_t keys = lower >= 16 ? (lower - 16u) / 2 : 0;
    if (u16(p + 10) != flags || keys <= probe || p[0] + 256u * p[1] != (page & 0xFFFF))
      continue;
    if (key_size != any_key && u16(p + u16(p + 16 + 2 * probe) + 6) != key_size)
      continue;
    change(p, keys);
    ++changed;
  }
  spill(file, bytes);
  return changed;
}

/// Points every child of the branch pages of the tree keyed by `key_size`
/// bytes at `pgno`.
int redirect_branches(const fs::path& file, size_t key_size, uint64_t pgno) {
  // Node 0 of a branch has an empty key: tell the trees apart by node 1.
  return change_pages(file, 0x01, 1, key_size, [&](uint8_t* p, size_t keys) {
    for (size_t i = 0; i < keys; ++i) {
      uint8_t* node = p + u16(p + 16 + 2 * i);
      for (int b = 0; b < 6; ++b) // lo, hi, flags: the child's page number
        node[b] = static_cast<uint8_t>(pgno >> (8 * b));
    }
  });
}

/// Gives every entry of the leaf pages of the tree keyed by `key_size` bytes
/// a data size of about 2 GB: LMDB hands such values out as they are, and
/// reading one runs off the end of the file.
int inflate_leaves(const fs::path& file, size_t key_size) {
  return change_pages(file, 0x02, 0, key_size, [](uint8_t* p, size_t keys) {
    for (size_t i = 0; i < keys; ++i) {
      uint8_t* node = p + u16(p + 16 + 2 * i);
      node[0] = 0xFF, node[1] = 0xFF, node[2] = 0xFF, node[3] = 0x7F;
    }
  });
}

/// Opening (with the page check) refuses the store, with `phrase` in the error.
void expect_refused(const std::string& path, const std::string& phrase) {
  auto store = lmdb_store::open({.path = path});
  ASSERT_FALSE(store);
  EXPECT_EQ(code_of(store.error()), store_errc::corrupt_store);
  EXPECT_NE(describe(store.error()).find(phrase), std::string::npos) << describe(store.error());
}

lmdb_options unchecked(const std::string& path) {
  lmdb_options opts;
  opts.path = path;
  opts.check_pages = false;
  return opts;
}

/// 300 streams whose records run off the end of the file, opened without
/// the page check.
caf::expected<std::unique_ptr<lmdb_store>> open_inflated(const temp_dir& dir) {
  auto path = (dir / "store").string();
  fill_damaged(path, 300, 1, 120);
  if (inflate_leaves(dir / "store/data.mdb", 120) == 0)
    return make_error(store_errc::invalid_argument, "no leaf page of stream records");
  return lmdb_store::open(unchecked(path));
}

TEST(damaged_pages, a_truncated_file_is_refused_by_every_store) {
  temp_dir dir;
  auto path = (dir / "store").string();
  fill_damaged(path, 40, 20, 16);
  {
    projection_store_options po;
    po.path = (dir / "models").string();
    auto models = projection_store::open(po);
    ASSERT_TRUE(models);
    for (int i = 0; i < 40; ++i)
      ASSERT_FALSE((*models)->update("p", [&](projection_store::writer& w) {
        w.put("t", "row-" + std::to_string(i), std::string(500, 'x'));
        return caf::error{};
      }));
  }
  for (auto* file : {"store/data.mdb", "models/data.mdb"})
    fs::resize_file(dir / file, fs::file_size(dir / file) / 2);
  for (bool check : {true, false}) {
    auto opts = unchecked(path);
    opts.check_pages = check;
    auto store = lmdb_store::open(opts);
    ASSERT_FALSE(store);
    EXPECT_EQ(code_of(store.error()), store_errc::corrupt_store);
    EXPECT_NE(describe(store.error()).find("truncated"), std::string::npos) << describe(store.error());
  }
  projection_store_options po;
  po.path = (dir / "models").string();
  auto models = projection_store::open(po);
  ASSERT_FALSE(models);
  EXPECT_EQ(code_of(models.error()), store_errc::corrupt_store);
}

TEST(damaged_pages, a_child_page_out_of_range_is_refused_at_open) {
  temp_dir dir;
  auto path = (dir / "store").string();
  fill_damaged(path, 300, 1, 120);
  ASSERT_GT(redirect_branches(dir / "store/data.mdb", 120, 1'000'000), 0) << "no branch page of stream records";
  expect_refused(path, "out of range");
}

TEST(damaged_pages, a_page_marked_dirty_is_refused_at_open) {
  // LMDB would take such a page for one of its own buffers and free it.
  temp_dir dir;
  auto path = (dir / "store").string();
  fill_damaged(path, 50, 10, 16);
  // Every leaf, in use or free: some are in use.
  ASSERT_GT(change_pages(dir / "store/data.mdb", 0x02, 0, any_key, [](uint8_t* p, size_t) { p[10] |= 0x10; }), 0);
  expect_refused(path, "flags");
}

TEST(damaged_pages, an_entry_past_its_page_is_refused_at_open) {
  temp_dir dir;
  auto path = (dir / "store").string();
  fill_damaged(path, 300, 1, 120);
  ASSERT_GT(inflate_leaves(dir / "store/data.mdb", 120), 0);
  expect_refused(path, "past the page");
}

TEST(damaged_pages, a_read_that_runs_off_the_file_fails_instead_of_crashing) {
  // With the check off, the stream records' values run off the end of the
  // file: SIGBUS, caught by the fault guard.
  temp_dir dir;
  auto store = open_inflated(dir);
  ASSERT_TRUE(store) << describe(store.error());
  for (int s : {0, 7, 299}) {
    auto info = (*store)->stream_info(stream_id(s, 120));
    ASSERT_FALSE(info);
    EXPECT_EQ(code_of(info.error()), store_errc::corrupt_store) << describe(info.error());
  }
  // The events' own tree is intact and still reads.
  auto all = (*store)->read_all(1, 1000);
  ASSERT_TRUE(all) << describe(all.error());
  EXPECT_EQ(all->size(), 300u);
}

TEST(damaged_pages, a_write_through_a_bad_page_stops_the_writer_with_an_error) {
  temp_dir dir;
  auto store = open_inflated(dir);
  ASSERT_TRUE(store) << describe(store.error());
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto r = (*store)->append(stream_id(attempt, 120), expected_version::any(), {make_event(attempt)});
    ASSERT_FALSE(r);
    EXPECT_EQ(code_of(r.error()), store_errc::corrupt_store) << describe(r.error());
    if (attempt > 0) { // the first write faulted; the writer refuses the rest
      EXPECT_NE(describe(r.error()).find("takes no more writes"), std::string::npos) << describe(r.error());
    }
  }
  auto all = (*store)->read_all(1, 1000);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 300u) << "nothing was added";
  store->reset(); // closing after an abandoned write must not crash either
  auto again = lmdb_store::open(unchecked((dir / "store").string()));
  ASSERT_FALSE(again) << "its environment is still open in this process";
  EXPECT_EQ(code_of(again.error()), store_errc::invalid_argument);
  EXPECT_NE(describe(again.error()).find("after a fault on a damaged page"), std::string::npos)
    << describe(again.error());
}

TEST(damaged_pages, random_damage_never_crashes_a_store) {
  // Garbage over a page, flipped header bits, scattered bytes: each of 60
  // damaged copies is refused at open or served with errors, never a crash.
  temp_dir dir;
  auto original = (dir / "original").string();
  fill_damaged(original, 120, 8, 24);
  std::mt19937 rng{20261123};
  int refused = 0;
  for (int round = 0; round < 60; ++round) {
    auto copy = dir / ("copy-" + std::to_string(round));
    fs::create_directories(copy);
    auto bytes = slurp(fs::path{original} / "data.mdb");
    size_t pages = bytes.size() / page_size;
    uint8_t* p = bytes.data() + (2 + rng() % (pages - 2)) * page_size;
    switch (round % 3) {
      case 0:
        for (size_t i = 0; i < page_size; ++i)
          p[i] = static_cast<uint8_t>(rng());
        break;
      case 1:
        for (int i = 0; i < 8; ++i)
          p[rng() % 64] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      default:
        for (int i = 0; i < 16; ++i)
          p[rng() % page_size] = static_cast<uint8_t>(rng());
    }
    spill(copy / "data.mdb", bytes);
    // Unchecked and read-only first: only the fault guard stands between
    // LMDB and a crash. (Writes through unchecked damage can overrun LMDB's
    // own buffers; refusing that damage is what the check is for.)
    for (bool check : {false, true}) {
      auto opts = unchecked(copy.string());
      opts.check_pages = check;
      opts.read_only = !check;
      auto store = lmdb_store::open(opts);
      if (!store) {
        auto code = code_of(store.error());
        EXPECT_TRUE(code == store_errc::corrupt_store || code == store_errc::foreign_store) << describe(store.error());
        refused += check ? 1 : 0;
        continue;
      }
      (void)(*store)->read_all(1, 10'000);
      for (int s = 0; s < 120; s += 7)
        (void)(*store)->read_stream(stream_id(s, 24), 1, 100);
      (void)(*store)->verify();
      if (check) {
        (void)(*store)->append(stream_id(round, 24), expected_version::any(), {make_event(round)});
        (void)(*store)->append("new-" + std::to_string(round), expected_version::no_stream(), {make_event(round)});
      }
    }
  }
  EXPECT_GT(refused, 10) << "the page check refused too little of the damage";
}

} // namespace
