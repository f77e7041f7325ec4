#pragma once

// Raw access to a closed store's LMDB files, to damage them on purpose.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>
#include <lmdb.h>

namespace sourcery::testing {

struct raw_env {
  MDB_env* env = nullptr;
  MDB_txn* txn = nullptr;
  explicit raw_env(const std::string& path) {
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 8);
    EXPECT_EQ(mdb_env_open(env, path.c_str(), 0, 0644), 0);
    EXPECT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  }
  MDB_dbi db(const char* name, unsigned flags = 0) {
    MDB_dbi dbi = 0;
    EXPECT_EQ(mdb_dbi_open(txn, name, flags, &dbi), 0);
    return dbi;
  }
  void put(MDB_dbi dbi, std::string_view key, const std::vector<uint8_t>& value) {
    MDB_val k{key.size(), const_cast<char*>(key.data())}, v{value.size(), const_cast<uint8_t*>(value.data())};
    EXPECT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
  }
  std::vector<uint8_t> get(MDB_dbi dbi, std::string_view key) {
    MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
    EXPECT_EQ(mdb_get(txn, dbi, &k, &v), 0);
    auto p = static_cast<const uint8_t*>(v.mv_data);
    return {p, p + v.mv_size};
  }
  void del(MDB_dbi dbi, std::string_view key) {
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    EXPECT_EQ(mdb_del(txn, dbi, &k, nullptr), 0);
  }
  ~raw_env() {
    EXPECT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
};

inline std::string position_key(uint64_t pos) {
  std::string k(8, '\0');
  for (int i = 7; i >= 0; --i, pos >>= 8)
    k[static_cast<size_t>(i)] = static_cast<char>(pos & 0xFF);
  return k;
}

/// A stream-index key: stream number and version, big-endian.
inline std::string index_key(uint64_t number, uint64_t version) {
  return position_key(number) + position_key(version);
}

} // namespace sourcery::testing
