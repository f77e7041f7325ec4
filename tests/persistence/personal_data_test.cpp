// Personal data (crypto-shredding), run against every store that keeps it:
// sealed before it is written, readable while its subject has a key,
// forgotten for good once the key is deleted.

#include <cstdio>
#include <filesystem>
#include <future>
#include <tuple>
#include <fstream>
#include <iterator>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <lmdb.h>
#include <nlohmann/json.hpp>

#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/memory_store.hpp"
#include "sourcery/persistence/personal.hpp"
#include "../support/postgres.hpp"
#include "../support/eventually.hpp"
#include "../support/file_search.hpp"
#include "store_factory.hpp"
// The random generator behind keys and nonces (per-thread pools).
#include "../../persistence/src/personal_data.hpp"

using namespace sourcery::persistence;
using namespace sourcery::testing;
using sourcery::personal;
using sourcery::testing::files_hold;

namespace personal_store_tests {

struct account_opened {
  personal<std::string> owner;
  int64_t limit = 0;
  SOURCERY_FIELDS(owner, limit)
};

struct consent_given {
  std::string patient;
  personal<std::string> name;
  SOURCERY_FIELDS(patient, name)
  SOURCERY_SUBJECT(patient)
};

/// Two personal fields, and a plain one whose text holds the byte of a
/// personal field's ext type ('P', 0x50): a byte scan alone would take it
/// for one.
struct contact_changed {
  personal<std::string> email;
  std::string note;
  personal<std::string> phone;
  SOURCERY_FIELDS(email, note, phone)
};
struct note_added {
  std::string note;
  SOURCERY_FIELDS(note)
};

struct holder_state {
  personal<std::string> holder;
  int64_t balance = 0;
  SOURCERY_FIELDS(holder, balance)
};

constexpr const char* secret = "Zacharias Plaintext-Marker-7781";

std::unique_ptr<lmdb_store> open_lmdb(const temp_dir& dir) {
  lmdb_options opts;
  opts.path = (dir / "store").string();
  opts.initial_map_size = size_t{8} << 20;
  auto s = lmdb_store::open(opts);
  if (!s)
    throw std::runtime_error(describe(s.error()));
  return std::move(*s);
}

std::vector<store_factory> factories() {
  return {
    {"memory", false, [](const temp_dir&) -> std::unique_ptr<event_store> { return std::make_unique<memory_store>(); }},
    {"lmdb", true, [](const temp_dir& dir) -> std::unique_ptr<event_store> { return open_lmdb(dir); }},
    {"postgres", true,
     [](const temp_dir& dir) -> std::unique_ptr<event_store> { return open_test_pg(test_pg_options(dir)); }},
  };
}

bytes pack_state(const holder_state& s) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, s);
  return {reinterpret_cast<const uint8_t*>(buf.data()), reinterpret_cast<const uint8_t*>(buf.data()) + buf.size()};
}

holder_state unpack_state(const bytes& b) {
  holder_state s;
  auto h = msgpack::unpack(reinterpret_cast<const char*>(b.data()), b.size());
  convert_map(h.get(), s);
  return s;
}


class personal_data : public ::testing::TestWithParam<store_factory> {
protected:
  void SetUp() override {
    ASSERT_FALSE(registry_.add<account_opened>("test.account_opened"));
    ASSERT_FALSE(registry_.add<consent_given>("test.consent_given"));
    ASSERT_FALSE(registry_.add<contact_changed>("test.contact_changed"));
    ASSERT_FALSE(registry_.add<note_added>("test.note_added"));
    open();
  }
  void open() {
    store_ = GetParam().open(dir_);
    store_->use_registry(&registry_);
    store_->reveal_personal_data();
  }
  void reopen() {
    store_.reset();
    open();
  }

  template <class E>
  void append(const std::string& stream, const E& ev) {
    auto data = registry_.encode(ev);
    ASSERT_TRUE(data) << describe(data.error());
    auto r = store_->append(stream, expected_version::any(), {*data});
    ASSERT_TRUE(r) << describe(r.error());
  }

  template <class E>
  E read_one(const std::string& stream, uint64_t version = 1) {
    auto evs = store_->read_stream(stream, version, 1);
    EXPECT_TRUE(evs) << describe(evs.error());
    if (!evs || evs->empty())
      return E{};
    auto e = registry_.decode<E>(evs->front());
    EXPECT_TRUE(e) << describe(e.error());
    return e ? *e : E{};
  }

  temp_dir dir_;
  event_registry registry_;
  std::unique_ptr<event_store> store_;
};

TEST_P(personal_data, a_personal_field_reads_back_while_its_subject_has_a_key) {
  append("account-1", account_opened{std::string{secret}, 500});
  auto e = read_one<account_opened>("account-1");
  EXPECT_TRUE(e.owner.known());
  EXPECT_EQ(e.owner.value(), secret);
  EXPECT_EQ(e.limit, 500);
  if (GetParam().persistent) {
    reopen(); // the key is durable
    EXPECT_EQ(read_one<account_opened>("account-1").owner.value(), secret);
  }
}

TEST_P(personal_data, every_personal_field_of_an_event_is_sealed_and_an_event_without_one_makes_no_key) {
  append("contact-1", contact_changed{std::string{"Pat P. Person"}, "Prefers Phone", std::string{"+44 20 7946 0018"}});
  append("notes-1", note_added{"Plain Payload, Plenty of P"});
  auto e = read_one<contact_changed>("contact-1");
  ASSERT_TRUE(e.email.known());
  ASSERT_TRUE(e.phone.known());
  EXPECT_EQ(e.email.value(), "Pat P. Person");
  EXPECT_EQ(e.note, "Prefers Phone");
  EXPECT_EQ(e.phone.value(), "+44 20 7946 0018");
  EXPECT_EQ(read_one<note_added>("notes-1").note, "Plain Payload, Plenty of P");
  auto notes_had_key = store_->forget("notes-1");
  ASSERT_TRUE(notes_had_key) << describe(notes_had_key.error());
  EXPECT_FALSE(*notes_had_key) << "an event without personal fields created a key";
  auto contact_had_key = store_->forget("contact-1");
  ASSERT_TRUE(contact_had_key) << describe(contact_had_key.error());
  EXPECT_TRUE(*contact_had_key);
  e = read_one<contact_changed>("contact-1");
  EXPECT_TRUE(e.email.forgotten());
  EXPECT_TRUE(e.phone.forgotten());
  EXPECT_EQ(e.note, "Prefers Phone");
}

// Keys and nonces come from a per-thread pool of OpenSSL's random bytes. A
// process forked after drawing from it must not hand out what its parent
// hands out next: the same key in two processes, the same nonce twice.
TEST(personal_data_random, a_forked_child_draws_other_keys_than_its_parent) {
  ASSERT_TRUE(sourcery::persistence::detail::make_subject_key()); // the pool is drawn, and partly left
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto key = sourcery::persistence::detail::make_subject_key();
    bool wrote = key && ::write(fds[1], key->key.data(), key->key.size()) == static_cast<ssize_t>(key->key.size());
    ::_exit(wrote ? 0 : 1);
  }
  ::close(fds[1]);
  std::array<uint8_t, 32> child{};
  size_t got = 0;
  while (got < child.size()) {
    auto n = ::read(fds[0], child.data() + got, child.size() - got);
    if (n <= 0)
      break;
    got += static_cast<size_t>(n);
  }
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(got, child.size());
  auto parent = sourcery::persistence::detail::make_subject_key();
  ASSERT_TRUE(parent);
  EXPECT_NE(parent->key, child) << "parent and child made the same key";
}

TEST(personal_data_lmdb, the_plaintext_never_reaches_the_files) {
  temp_dir dir_;
  event_registry registry_;
  ASSERT_FALSE(registry_.add<account_opened>("test.account_opened"));
  std::unique_ptr<lmdb_store> store_;
  auto open = [&] {
    store_.reset();
    store_ = open_lmdb(dir_);
    store_->use_registry(&registry_);
    store_->reveal_personal_data();
  };
  open();
  auto append = [&](const std::string& stream, const account_opened& ev) {
    auto data = registry_.encode(ev);
    ASSERT_TRUE(data);
    ASSERT_TRUE(store_->append(stream, expected_version::any(), {*data}));
  };
  auto read_one = [&](const std::string& stream) {
    auto evs = store_->read_stream(stream, 1, 1);
    EXPECT_TRUE(evs && evs->size() == 1);
    return evs && evs->size() == 1 ? registry_.decode<account_opened>(evs->front()).value() : account_opened{};
  };
  append("account-1", account_opened{std::string{secret}, 1});
  ASSERT_TRUE(store_->save_snapshot({"account-1", 1, 1, "holder", pack_state({std::string{secret}, 7}), 0}));
  store_.reset(); // everything on disk
  EXPECT_FALSE(files_hold(dir_.path(), secret));
  open();
  EXPECT_EQ(read_one("account-1").owner.value(), secret);
  auto snap = store_->load_snapshot("account-1");
  ASSERT_TRUE(snap && *snap);
  auto state = unpack_state((*snap)->data);
  EXPECT_EQ(state.holder.value(), secret);
  EXPECT_EQ(state.balance, 7);
}

TEST_P(personal_data, forgetting_a_subject_leaves_its_fields_forgotten_and_others_untouched) {
  append("account-1", account_opened{std::string{secret}, 1});
  append("account-2", account_opened{std::string{"Other Person"}, 2});
  ASSERT_TRUE(store_->save_snapshot({"account-1", 1, 1, "holder", pack_state({std::string{secret}, 7}), 0}));

  auto forgot = store_->forget("account-1");
  ASSERT_TRUE(forgot) << describe(forgot.error());
  EXPECT_TRUE(*forgot);

  auto e = read_one<account_opened>("account-1");
  EXPECT_TRUE(e.owner.forgotten());
  EXPECT_EQ(e.owner.value(), "");
  EXPECT_EQ(e.limit, 1); // the rest of the event is intact
  auto snap = store_->load_snapshot("account-1");
  ASSERT_TRUE(snap && *snap);
  EXPECT_TRUE(unpack_state((*snap)->data).holder.forgotten());
  EXPECT_EQ(read_one<account_opened>("account-2").owner.value(), "Other Person");

  // Idempotent; unknown subjects are not an error.
  auto again = store_->forget("account-1");
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again);
  auto unknown = store_->forget("nobody");
  ASSERT_TRUE(unknown);
  EXPECT_FALSE(*unknown);
  EXPECT_FALSE(store_->forget(""));

  // The stream takes new events; new personal data gets a new key.
  append("account-1", account_opened{std::string{"New Owner"}, 3});
  EXPECT_TRUE(read_one<account_opened>("account-1", 1).owner.forgotten());
  EXPECT_EQ(read_one<account_opened>("account-1", 2).owner.value(), "New Owner");
  if (GetParam().persistent) {
    reopen();
    EXPECT_TRUE(read_one<account_opened>("account-1", 1).owner.forgotten());
    EXPECT_EQ(read_one<account_opened>("account-1", 2).owner.value(), "New Owner");
  }
}

TEST_P(personal_data, an_event_can_name_its_subject_in_a_field) {
  append("consent-9", consent_given{"patient-4", personal<std::string>{secret}});
  append("consent-10", consent_given{"patient-5", personal<std::string>{"Someone Else"}});
  ASSERT_TRUE(store_->forget("patient-4"));
  EXPECT_TRUE(read_one<consent_given>("consent-9").name.forgotten());
  EXPECT_EQ(read_one<consent_given>("consent-9").patient, "patient-4");
  EXPECT_EQ(read_one<consent_given>("consent-10").name.value(), "Someone Else");
  auto by_stream = store_->forget("consent-10"); // the stream is not the subject here
  ASSERT_TRUE(by_stream);
  EXPECT_FALSE(*by_stream);
}

TEST_P(personal_data, a_reader_that_does_not_reveal_sees_sealed_fields) {
  std::unique_ptr<event_store> tool; // opened as the operator's tools open a store
  if (GetParam().persistent) {
    append("account-1", account_opened{std::string{secret}, 1});
    store_.reset();
    tool = GetParam().open(dir_);
  } else {
    tool = GetParam().open(dir_); // a store of its own that never reveals
    auto data = registry_.encode(account_opened{std::string{secret}, 1});
    ASSERT_TRUE(tool->append("account-1", expected_version::any(), {*data}));
  }
  tool->use_registry(&registry_);
  auto evs = tool->read_stream("account-1", 1, 1);
  ASSERT_TRUE(evs && evs->size() == 1);
  auto e = registry_.decode<account_opened>((*evs)[0]);
  ASSERT_TRUE(e) << describe(e.error());
  EXPECT_EQ(e->owner.status(), personal<std::string>::state::sealed);
  EXPECT_EQ(e->owner.value(), "");
  auto json = event_registry::data_as_json((*evs)[0].data);
  ASSERT_TRUE(json);
  EXPECT_EQ(json->dump().find(secret), std::string::npos);
  // Re-encoding a sealed value keeps it sealed, byte for byte.
  auto again = registry_.encode(*e);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->data, (*evs)[0].data);
}

TEST_P(personal_data, an_altered_sealed_field_is_an_error_not_a_value) {
  auto plain = std::make_unique<memory_store>(); // reads sealed bytes without revealing
  plain->use_registry(&registry_);
  auto data = registry_.encode(account_opened{std::string{secret}, 1});
  ASSERT_TRUE(data);
  ASSERT_TRUE(plain->append("account-1", expected_version::any(), {*data}));
  auto sealed = plain->read_stream("account-1", 1, 1);
  ASSERT_TRUE(sealed && sealed->size() == 1);
  auto bytes = (*sealed)[0].data;
  ASSERT_GT(bytes.size(), 20u);
  bytes[bytes.size() - 20] ^= 0x01; // inside the ciphertext or tag
  event_data altered;
  altered.type = "test.account_opened";
  altered.data = bytes;
  ASSERT_TRUE(plain->append("account-1", expected_version::any(), {altered}));
  plain->reveal_personal_data();
  auto good = plain->read_stream("account-1", 1, 1);
  ASSERT_TRUE(good) << describe(good.error());
  auto bad = plain->read_stream("account-1", 2, 1);
  ASSERT_FALSE(bad);
  EXPECT_EQ(code_of(bad.error()), store_errc::corrupt_record) << describe(bad.error());
}

TEST_P(personal_data, a_subject_with_ten_thousand_events_is_forgotten_in_one_call) {
  for (int b = 0; b < 10; ++b) {
    std::vector<event_data> batch;
    for (int i = 0; i < 1000; ++i)
      batch.push_back(*registry_.encode(account_opened{std::string{"Name "} + std::to_string(b * 1000 + i), i}));
    ASSERT_TRUE(store_->append("account-big", expected_version::any(), std::move(batch)));
  }
  auto forgot = store_->forget("account-big");
  ASSERT_TRUE(forgot && *forgot);
  size_t seen = 0, forgotten = 0;
  ASSERT_FALSE(store_->for_each_in_stream("account-big", 1, [&](const recorded_event& ev) {
    ++seen;
    auto e = registry_.decode<account_opened>(ev);
    forgotten += e && e->owner.forgotten() ? 1 : 0;
    return true;
  }));
  EXPECT_EQ(seen, 10'000u);
  EXPECT_EQ(forgotten, 10'000u);
}

INSTANTIATE_TEST_SUITE_P(stores, personal_data, ::testing::ValuesIn(factories()),
                         [](const auto& info) { return info.param.name; });

// -- LMDB: the key's bytes leave the files -------------------------------------------

/// The stored key record of `subject`, read with LMDB itself (the store closed).
std::string raw_key_record(const std::string& path, const std::string& subject) {
  MDB_env* env = nullptr;
  mdb_env_create(&env);
  mdb_env_set_maxdbs(env, 8);
  EXPECT_EQ(mdb_env_open(env, path.c_str(), MDB_RDONLY, 0644), 0);
  MDB_txn* txn = nullptr;
  mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
  MDB_dbi dbi;
  std::string out;
  if (mdb_dbi_open(txn, "subject_keys", 0, &dbi) == 0) {
    MDB_val k{subject.size(), const_cast<char*>(subject.data())}, v;
    if (mdb_get(txn, dbi, &k, &v) == 0)
      out.assign(static_cast<const char*>(v.mv_data), 1 + 8 + 32); // format, id, key
  }
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return out;
}

TEST(personal_data_lmdb, a_forgotten_key_leaves_no_copy_in_the_files) {
  temp_dir dir;
  event_registry registry;
  ASSERT_FALSE(registry.add<account_opened>("test.account_opened"));
  auto store = open_lmdb(dir);
  // Many subjects around it, so its page is shared by nothing and the
  // neighbours' pages move while they are written.
  for (int i = 0; i < 50; ++i) {
    auto data = registry.encode(account_opened{std::string{"Person "} + std::to_string(i), i});
    ASSERT_TRUE(store->append("account-" + std::to_string(i), expected_version::any(), {*data}));
  }
  store.reset();
  auto record = raw_key_record((dir / "store").string(), "account-7");
  ASSERT_EQ(record.size(), 41u);
  auto key = record.substr(9); // the 32 key bytes
  ASSERT_TRUE(files_hold(dir.path(), key));

  store = open_lmdb(dir);
  auto forgot = store->forget("account-7");
  ASSERT_TRUE(forgot && *forgot);
  for (int i = 50; i < 60; ++i) { // later writes do not bring it back
    auto data = registry.encode(account_opened{std::string{"Person "} + std::to_string(i), i});
    ASSERT_TRUE(store->append("account-" + std::to_string(i), expected_version::any(), {*data}));
  }
  store.reset();
  EXPECT_FALSE(files_hold(dir.path(), key));
  EXPECT_EQ(raw_key_record((dir / "store").string(), "account-7"), "");
  EXPECT_NE(raw_key_record((dir / "store").string(), "account-8"), "");
}

TEST(personal_data_lmdb, a_damaged_key_is_a_clear_error_not_a_crash) {
  temp_dir dir;
  event_registry registry;
  ASSERT_FALSE(registry.add<account_opened>("test.account_opened"));
  {
    auto store = open_lmdb(dir);
    auto data = registry.encode(account_opened{std::string{secret}, 1});
    ASSERT_TRUE(store->append("account-1", expected_version::any(), {*data}));
  }
  { // damage the key record with LMDB itself
    MDB_env* env = nullptr;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 8);
    ASSERT_EQ(mdb_env_open(env, (dir / "store").c_str(), 0, 0644), 0);
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    MDB_dbi dbi;
    ASSERT_EQ(mdb_dbi_open(txn, "subject_keys", 0, &dbi), 0);
    std::string subject = "account-1", junk(100, '\x07');
    MDB_val k{subject.size(), subject.data()}, v{junk.size(), junk.data()};
    ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
  auto store = open_lmdb(dir);
  store->use_registry(&registry);
  store->reveal_personal_data();
  auto evs = store->read_stream("account-1", 1, 1);
  ASSERT_FALSE(evs);
  EXPECT_EQ(code_of(evs.error()), store_errc::corrupt_record) << describe(evs.error());
  EXPECT_NE(describe(evs.error()).find("account-1"), std::string::npos) << describe(evs.error());
  // Forgetting it still works: the damaged key is deleted like any other.
  auto forgot = store->forget("account-1");
  ASSERT_TRUE(forgot && *forgot);
  auto after = store->read_stream("account-1", 1, 1);
  ASSERT_TRUE(after) << describe(after.error());
  EXPECT_TRUE(registry.decode<account_opened>(after->front())->owner.forgotten());
}

TEST(personal_data_lmdb, wrapped_keys_need_their_master_key) {
  temp_dir dir;
  event_registry registry;
  ASSERT_FALSE(registry.add<account_opened>("test.account_opened"));
  bytes master(32, 0x5A), other(32, 0x33);
  {
    auto store = open_lmdb(dir);
    ASSERT_FALSE(store->use_master_key(master));
    auto data = registry.encode(account_opened{std::string{secret}, 1});
    ASSERT_TRUE(store->append("account-1", expected_version::any(), {*data}));
  }
  auto record = raw_key_record((dir / "store").string(), "account-1");
  ASSERT_EQ(record[0], 2) << "wrapped";
  auto read_with = [&](const bytes* key) -> caf::expected<std::vector<recorded_event>> {
    auto store = open_lmdb(dir);
    store->use_registry(&registry);
    store->reveal_personal_data();
    if (key != nullptr) {
      EXPECT_FALSE(store->use_master_key(*key));
    }
    return store->read_stream("account-1", 1, 1);
  };
  auto good = read_with(&master);
  ASSERT_TRUE(good) << describe(good.error());
  EXPECT_EQ(registry.decode<account_opened>((*good)[0])->owner.value(), secret);
  auto none = read_with(nullptr);
  ASSERT_FALSE(none);
  EXPECT_EQ(code_of(none.error()), store_errc::invalid_argument) << describe(none.error());
  auto wrong = read_with(&other);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(code_of(wrong.error()), store_errc::corrupt_record) << describe(wrong.error());
  EXPECT_TRUE(open_lmdb(dir)->use_master_key(bytes(31, 0))) << "a master key is 32 bytes";
}

// -- PostgreSQL: every node sees a forget at once ------------------------------------

/// `pg_dump` of one schema of the test server, as text.
std::string pg_dump(const std::string& schema) {
  std::string cmd = "pg_dump -d '" + test_pg_uri() + "' -n " + schema + " 2>&1";
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
      out.append(buf, n);
    EXPECT_EQ(::pclose(p), 0) << out;
  }
  return out;
}

/// Two stores on one PostgreSQL schema, as two nodes open it, each
/// revealing personal data with `registry`.
std::pair<std::unique_ptr<postgres_store>, std::unique_ptr<postgres_store>> two_revealing_nodes(
  const temp_dir& dir, const event_registry& registry) {
  auto a = open_test_pg(test_pg_options(dir));
  auto b = open_test_pg(test_pg_options(dir));
  for (auto* s : {a.get(), b.get()}) {
    s->use_registry(&registry);
    s->reveal_personal_data();
  }
  return {std::move(a), std::move(b)};
}

TEST(personal_data_postgres, a_forget_on_one_node_is_seen_by_the_others) {
  temp_dir dir;
  event_registry registry;
  ASSERT_FALSE(registry.add<account_opened>("test.account_opened"));
  auto [a, b] = two_revealing_nodes(dir, registry);
  auto data = registry.encode(account_opened{std::string{secret}, 1});
  ASSERT_TRUE(a->append("account-1", expected_version::any(), {*data}));
  auto owner_on_b = [&] {
    auto evs = b->read_stream("account-1", 1, 1);
    EXPECT_TRUE(evs && evs->size() == 1);
    return registry.decode<account_opened>(evs->front())->owner;
  };
  ASSERT_EQ(owner_on_b().value(), secret); // b has the key cached now
  // The key's bytes as stored (unwrapped: format, id, key), in hex as pg_dump writes bytea.
  auto key_hex = run_sql(test_pg_uri(), "SELECT encode(substring(record from 10 for 32), 'hex') FROM "
                                          + test_schema(dir) + ".subject_keys");
  ASSERT_EQ(key_hex.size(), 64u);
  EXPECT_NE(pg_dump(test_schema(dir)).find(key_hex), std::string::npos) << "found before the forget";
  auto forgot = a->forget("account-1");
  ASSERT_TRUE(forgot && *forgot);
  // b drops its copy when the forget's NOTIFY arrives: within a moment.
  EXPECT_TRUE(sourcery::testing::eventually([&] { return owner_on_b().forgotten(); }));
  // pg_dump of the schema holds neither the plaintext nor, now, the key.
  EXPECT_EQ(run_sql(test_pg_uri(), "SELECT count(*) FROM " + test_schema(dir) + ".subject_keys"), "0");
  auto dump = pg_dump(test_schema(dir));
  EXPECT_NE(dump.find("subject_keys"), std::string::npos) << "the dump is of this schema";
  EXPECT_EQ(dump.find(secret), std::string::npos);
  EXPECT_EQ(dump.find(key_hex), std::string::npos) << "the key's bytes are gone";
}

TEST(personal_data_postgres, two_nodes_sealing_a_new_subject_at_once_agree_on_its_key) {
  temp_dir dir;
  event_registry registry;
  ASSERT_FALSE(registry.add<consent_given>("test.consent_given"));
  auto [a, b] = two_revealing_nodes(dir, registry);
  for (int i = 0; i < 20; ++i) {
    auto patient = "patient-" + std::to_string(i);
    // Each node seals the subject's first event with a key of its own making;
    // one statement loses on the key's primary key and runs again.
    auto from_a = std::async(std::launch::async, [&] {
      return a->append("consent-a" + std::to_string(i), expected_version::any(),
                       {*registry.encode(consent_given{patient, personal<std::string>{"Name A"}})});
    });
    auto from_b = std::async(std::launch::async, [&] {
      return b->append("consent-b" + std::to_string(i), expected_version::any(),
                       {*registry.encode(consent_given{patient, personal<std::string>{"Name B"}})});
    });
    auto ra = from_a.get();
    auto rb = from_b.get();
    ASSERT_TRUE(ra) << describe(ra.error());
    ASSERT_TRUE(rb) << describe(rb.error());
    for (auto [store, stream, name] : {std::tuple{a.get(), "consent-b" + std::to_string(i), "Name B"},
                                       std::tuple{b.get(), "consent-a" + std::to_string(i), "Name A"}}) {
      auto evs = store->read_stream(stream, 1, 1);
      ASSERT_TRUE(evs && evs->size() == 1);
      EXPECT_EQ(registry.decode<consent_given>(evs->front())->name.value(), name) << stream;
    }
  }
  EXPECT_EQ(run_sql(test_pg_uri(), "SELECT count(*) FROM " + test_schema(dir) + ".subject_keys"), "20");
}

TEST(personal_data_postgres, a_refused_append_leaves_no_key) {
  temp_dir dir;
  event_registry registry;
  ASSERT_FALSE(registry.add<account_opened>("test.account_opened"));
  auto store = open_test_pg(test_pg_options(dir));
  auto refused = store->append("account-1", expected_version::exact(5),
                               {*registry.encode(account_opened{std::string{secret}, 1})});
  ASSERT_FALSE(refused);
  EXPECT_EQ(code_of(refused.error()), store_errc::wrong_expected_version);
  EXPECT_EQ(run_sql(test_pg_uri(), "SELECT count(*) FROM " + test_schema(dir) + ".subject_keys"), "0")
    << "a key commits with the first event that needs it";
}

} // namespace personal_store_tests
