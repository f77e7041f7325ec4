#include "personal_data.hpp"

#include <atomic>
#include <cstring>
#include <fstream>
#include <iterator>

#include <pthread.h>

#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/rand.h>

#include "big_endian.hpp"
#include "sourcery/persistence/detail/personal_codec.hpp"
#include "sourcery/persistence/error.hpp"
#include "sourcery/persistence/hex.hpp"

namespace sourcery::persistence::detail {

namespace {

constexpr size_t nonce_size = 12;
constexpr size_t tag_size = 16;
constexpr size_t max_subject = 400;
constexpr uint8_t sealed_format = 1;
constexpr uint8_t key_plain = 1, key_wrapped = 2;

// -- finding ext values ----------------------------------------------------------

struct ext_span {
  size_t begin = 0, end = 0; // the whole value
  int8_t type = 0;
  size_t payload = 0, size = 0;
};

/// Walks one msgpack value at `p`, collecting its ext values; false when
/// malformed or nested deeper than 64.
class ext_finder {
public:
  ext_finder(const uint8_t* data, size_t size, std::vector<ext_span>& out) : d_(data), n_(size), out_(out) {}

  bool document() {
    size_t at = 0;
    return value(at, 0) && at == n_;
  }

private:
  bool need(size_t at, size_t k) const { return at <= n_ && n_ - at >= k; }
  uint64_t be(size_t at, size_t k) const {
    uint64_t x = 0;
    for (size_t i = 0; i < k; ++i)
      x = (x << 8) | d_[at + i];
    return x;
  }
  bool skip(size_t& at, size_t k) {
    if (!need(at, k))
      return false;
    at += k;
    return true;
  }
  bool sized(size_t& at, size_t len_bytes) { // str, bin: length then bytes
    if (!need(at, len_bytes))
      return false;
    auto len = be(at, len_bytes);
    at += len_bytes;
    return skip(at, len);
  }
  bool ext(size_t begin, size_t& at, size_t len_bytes, size_t fixed) {
    size_t len = fixed;
    if (len_bytes != 0) {
      if (!need(at, len_bytes))
        return false;
      len = be(at, len_bytes);
      at += len_bytes;
    }
    if (!need(at, 1))
      return false;
    auto type = static_cast<int8_t>(d_[at++]);
    if (!need(at, len))
      return false;
    out_.push_back({begin, at + len, type, at, len});
    at += len;
    return true;
  }
  bool items(size_t& at, uint64_t count, int depth) {
    for (uint64_t i = 0; i < count; ++i)
      if (!value(at, depth + 1))
        return false;
    return true;
  }
  bool value(size_t& at, int depth) {
    if (depth > 64 || !need(at, 1))
      return false;
    size_t begin = at;
    uint8_t b = d_[at++];
    if (b <= 0x7F || b >= 0xE0)
      return true;
    if ((b & 0xF0) == 0x80)
      return items(at, uint64_t{b & 0x0Fu} * 2, depth);
    if ((b & 0xF0) == 0x90)
      return items(at, b & 0x0Fu, depth);
    if ((b & 0xE0) == 0xA0)
      return skip(at, b & 0x1Fu);
    switch (b) {
      case 0xC0: case 0xC2: case 0xC3: return true;
      case 0xC4: case 0xD9: return sized(at, 1);
      case 0xC5: case 0xDA: return sized(at, 2);
      case 0xC6: case 0xDB: return sized(at, 4);
      case 0xC7: return ext(begin, at, 1, 0);
      case 0xC8: return ext(begin, at, 2, 0);
      case 0xC9: return ext(begin, at, 4, 0);
      case 0xCA: return skip(at, 4);
      case 0xCB: return skip(at, 8);
      case 0xCC: case 0xD0: return skip(at, 1);
      case 0xCD: case 0xD1: return skip(at, 2);
      case 0xCE: case 0xD2: return skip(at, 4);
      case 0xCF: case 0xD3: return skip(at, 8);
      case 0xD4: return ext(begin, at, 0, 1);
      case 0xD5: return ext(begin, at, 0, 2);
      case 0xD6: return ext(begin, at, 0, 4);
      case 0xD7: return ext(begin, at, 0, 8);
      case 0xD8: return ext(begin, at, 0, 16);
      case 0xDC: case 0xDE: {
        if (!need(at, 2))
          return false;
        auto n = be(at, 2) * (b == 0xDE ? 2 : 1);
        at += 2;
        return items(at, n, depth);
      }
      case 0xDD: case 0xDF: {
        if (!need(at, 4))
          return false;
        auto n = be(at, 4) * (b == 0xDF ? 2 : 1);
        at += 4;
        return items(at, n, depth);
      }
      default: return false; // 0xC1
    }
  }

  const uint8_t* d_;
  size_t n_;
  std::vector<ext_span>& out_;
};

caf::error find_exts(const bytes& data, std::vector<ext_span>& out) {
  // Callers pass a thread's own vector (exts_buffer): every append and
  // every read of a personal field parses, and need not allocate to do so.
  out.clear();
  if (data.empty())
    return {};
  if (!ext_finder{data.data(), data.size(), out}.document())
    return make_error(store_errc::malformed_payload, "personal data: the document is not well-formed msgpack");
  return {};
}

std::vector<ext_span>& exts_buffer() {
  thread_local std::vector<ext_span> exts;
  return exts;
}

/// Whether `data` may hold an ext value of `type`: its type byte occurs.
bool may_hold(const bytes& data, int8_t type) {
  return !data.empty() && std::memchr(data.data(), static_cast<uint8_t>(type), data.size()) != nullptr;
}

bool holds(const bytes& data, int8_t type) {
  if (!may_hold(data, type))
    return false;
  auto& exts = exts_buffer();
  if (find_exts(data, exts))
    return false;
  for (auto& e : exts)
    if (e.type == type)
      return true;
  return false;
}

void put_ext_header(bytes& out, size_t size, int8_t type) {
  if (size <= 0xFF) {
    out.push_back(0xC7);
    out.push_back(static_cast<uint8_t>(size));
  } else if (size <= 0xFFFF) {
    out.push_back(0xC8);
    out.push_back(static_cast<uint8_t>(size >> 8));
    out.push_back(static_cast<uint8_t>(size));
  } else {
    out.push_back(0xC9);
    for (int shift = 24; shift >= 0; shift -= 8)
      out.push_back(static_cast<uint8_t>(size >> shift));
  }
  out.push_back(static_cast<uint8_t>(type));
}

/// Rewrites `data`, replacing each ext of `type` by what `replace` appends.
/// `first()` runs once, before the first replacement, and may fail: the
/// whole rewrite is one parse, and what only a found ext needs (a key) is
/// fetched only when one is found. `extra` is what each replacement adds.
template <class First, class Replace>
caf::error rewrite(bytes& data, int8_t type, size_t extra, First&& first, Replace&& replace) {
  // `replace` reads its span of `data`, which stays intact until the end.
  if (!may_hold(data, type))
    return {};
  // The thread's buffer, borrowed for the rewrite and given back after it:
  // `first` and `replace` may parse other documents meanwhile.
  struct borrowed {
    std::vector<ext_span> spans = std::move(exts_buffer());
    ~borrowed() { exts_buffer() = std::move(spans); }
  } held;
  auto& exts = held.spans;
  if (auto err = find_exts(data, exts))
    return err;
  bytes out;
  size_t copied = 0;
  bool found = false;
  for (auto& e : exts) {
    if (e.type != type)
      continue;
    if (!found) {
      found = true;
      if (auto err = first())
        return err;
      out.reserve(data.size() + extra * exts.size());
    }
    out.insert(out.end(), data.begin() + static_cast<ptrdiff_t>(copied), data.begin() + static_cast<ptrdiff_t>(e.begin));
    if (auto err = replace(e, out))
      return err;
    copied = e.end;
  }
  if (!found)
    return {};
  out.insert(out.end(), data.begin() + static_cast<ptrdiff_t>(copied), data.end());
  data = std::move(out);
  return {};
}

// -- AES-256-GCM ------------------------------------------------------------------

// The cipher is fetched once (OpenSSL 3 looks a legacy EVP_CIPHER up in its
// providers at every init otherwise), and each thread keeps one context per
// direction with the cipher set: a seal then costs a key schedule and the
// encryption itself.
const EVP_CIPHER* aes_256_gcm() {
  static const EVP_CIPHER* cipher = [] {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    if (const EVP_CIPHER* fetched = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr))
      return fetched;
#endif
    return EVP_aes_256_gcm();
  }();
  return cipher;
}

struct cipher_ctx {
  explicit cipher_ctx(bool encrypt) : ctx(EVP_CIPHER_CTX_new()) {
    ready = ctx != nullptr
            && (encrypt ? EVP_EncryptInit_ex(ctx, aes_256_gcm(), nullptr, nullptr, nullptr)
                        : EVP_DecryptInit_ex(ctx, aes_256_gcm(), nullptr, nullptr, nullptr))
                 == 1;
  }
  ~cipher_ctx() { EVP_CIPHER_CTX_free(ctx); }
  EVP_CIPHER_CTX* ctx;
  bool ready = false;
};

/// Encrypts `n` bytes at `in` to `out` (n bytes) and writes the tag.
bool gcm_seal(const uint8_t* key, const uint8_t* nonce, const uint8_t* aad, size_t aad_n, const uint8_t* in,
              size_t n, uint8_t* out, uint8_t* tag) {
  thread_local cipher_ctx c{true};
  int len = 0;
  return c.ready && EVP_EncryptInit_ex(c.ctx, nullptr, nullptr, key, nonce) == 1 // 12-byte IVs: GCM's default
         && EVP_EncryptUpdate(c.ctx, nullptr, &len, aad, static_cast<int>(aad_n)) == 1
         && (n == 0 || EVP_EncryptUpdate(c.ctx, out, &len, in, static_cast<int>(n)) == 1)
         && EVP_EncryptFinal_ex(c.ctx, out + n, &len) == 1
         && EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_GET_TAG, tag_size, tag) == 1;
}

/// Decrypts; false when the tag does not match.
bool gcm_open(const uint8_t* key, const uint8_t* nonce, const uint8_t* aad, size_t aad_n, const uint8_t* in,
              size_t n, const uint8_t* tag, uint8_t* out) {
  thread_local cipher_ctx c{false};
  int len = 0;
  uint8_t tag_copy[tag_size];
  std::memcpy(tag_copy, tag, tag_size);
  return c.ready && EVP_DecryptInit_ex(c.ctx, nullptr, nullptr, key, nonce) == 1
         && EVP_DecryptUpdate(c.ctx, nullptr, &len, aad, static_cast<int>(aad_n)) == 1
         && (n == 0 || EVP_DecryptUpdate(c.ctx, out, &len, in, static_cast<int>(n)) == 1)
         && EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_TAG, tag_size, tag_copy) == 1
         && EVP_DecryptFinal_ex(c.ctx, out + n, &len) == 1;
}

/// Bumped in the child of every fork: a child must not hand out the bytes
/// its parent drew (the same nonces and keys in two processes).
std::atomic<uint64_t> forks{0};
[[maybe_unused]] const int fork_handler = pthread_atfork(nullptr, nullptr, [] { forks.fetch_add(1); });

/// Random bytes from OpenSSL's generator, drawn a few kilobytes at a time
/// per thread (a call per 12-byte nonce costs more than the encryption).
bool random_bytes(uint8_t* p, size_t n) {
  thread_local std::array<uint8_t, 4096> pool;
  thread_local size_t left = 0;
  thread_local uint64_t drawn_in = 0; // the process generation the pool was drawn in
  if (n > pool.size())
    return RAND_bytes(p, static_cast<int>(n)) == 1;
  if (auto now = forks.load(std::memory_order_relaxed); drawn_in != now) {
    left = 0; // drawn before a fork: the parent hands these out too
    drawn_in = now;
  }
  if (left < n) {
    if (RAND_bytes(pool.data(), static_cast<int>(pool.size())) != 1)
      return false;
    left = pool.size();
  }
  std::memcpy(p, pool.data() + (pool.size() - left), n);
  std::memset(pool.data() + (pool.size() - left), 0, n); // handed out once
  left -= n;
  return true;
}

} // namespace

caf::expected<subject_key> make_subject_key() {
  subject_key k;
  if (!random_bytes(k.id.data(), k.id.size()) || !random_bytes(k.key.data(), k.key.size()))
    return make_error(store_errc::io_error, "personal data: the random generator failed (RAND_bytes)");
  return k;
}

bool has_plain_personal(const bytes& data) {
  return holds(data, personal_plain);
}

bool has_sealed_personal(const bytes& data) {
  return holds(data, personal_sealed);
}

namespace {

constexpr size_t sealed_header = 1 + 8 + nonce_size + 2;

/// The subject of a sealed payload, or nullopt when it is too short.
std::optional<std::string_view> subject_of(const uint8_t* p, size_t n) {
  if (n < sealed_header + tag_size || p[0] != sealed_format)
    return std::nullopt;
  size_t len = get_be16(p + 1 + 8 + nonce_size);
  if (n < sealed_header + len + tag_size)
    return std::nullopt;
  return std::string_view{reinterpret_cast<const char*>(p + sealed_header), len};
}

} // namespace

caf::error sealed_subjects(const bytes& data, const std::function<void(std::string_view)>& visit) {
  if (!may_hold(data, personal_sealed))
    return {};
  std::vector<ext_span> exts; // `visit` may read other documents, which would reuse the thread's buffer
  if (auto err = find_exts(data, exts))
    return err;
  for (auto& e : exts) {
    if (e.type != personal_sealed)
      continue;
    auto subject = subject_of(data.data() + e.payload, e.size);
    if (!subject)
      return make_error(store_errc::malformed_payload, "personal data: a sealed field is cut short");
    visit(*subject);
  }
  return {};
}

caf::error seal_personal(bytes& data, std::string_view subject, const subject_key& key) {
  return seal_personal(data, subject, [&key](std::string_view) -> caf::expected<subject_key> { return key; });
}

caf::error seal_personal(bytes& data, std::string_view subject, const key_source& key_for) {
  if (!may_hold(data, personal_plain))
    return {};
  if (subject.empty() || subject.size() > max_subject)
    return make_error(store_errc::invalid_argument, "personal data: a subject is 1 to 400 bytes");
  subject_key key;
  auto fetch_key = [&]() -> caf::error {
    auto found = key_for(subject);
    if (!found)
      return found.error();
    key = *found;
    return {};
  };
  const size_t extra = 5 + sealed_header + subject.size() + tag_size; // a sealed field's growth, at most
  return rewrite(data, personal_plain, extra, fetch_key, [&](const ext_span& e, bytes& out) -> caf::error {
    const uint8_t* plain = data.data() + e.payload;
    size_t payload = sealed_header + subject.size() + e.size + tag_size;
    put_ext_header(out, payload, personal_sealed);
    size_t at = out.size();
    out.resize(at + payload);
    uint8_t* p = out.data() + at;
    p[0] = sealed_format;
    std::memcpy(p + 1, key.id.data(), 8);
    if (!random_bytes(p + 9, nonce_size))
      return make_error(store_errc::io_error, "personal data: the random generator failed (RAND_bytes)");
    put_be16(p + 9 + nonce_size, static_cast<uint16_t>(subject.size()));
    std::memcpy(p + sealed_header, subject.data(), subject.size());
    size_t aad = sealed_header + subject.size();
    if (!gcm_seal(key.key.data(), p + 9, p, aad, plain, e.size, p + aad, p + aad + e.size))
      return make_error(store_errc::io_error, "personal data: encryption failed");
    return {};
  });
}

caf::error open_personal(bytes& data, const std::function<const subject_key*(std::string_view)>& key_of) {
  return rewrite(data, personal_sealed, 0, [] { return caf::error{}; }, [&](const ext_span& e, bytes& out) -> caf::error {
    const uint8_t* p = data.data() + e.payload;
    auto subject = subject_of(p, e.size);
    if (!subject)
      return make_error(store_errc::malformed_payload, "personal data: a sealed field is cut short");
    const subject_key* key = key_of(*subject);
    if (key == nullptr || std::memcmp(key->id.data(), p + 1, 8) != 0) {
      put_ext_header(out, 0, personal_forgotten);
      return {};
    }
    size_t aad = sealed_header + subject->size();
    size_t n = e.size - aad - tag_size;
    put_ext_header(out, n, personal_plain);
    size_t at = out.size();
    out.resize(at + n);
    if (!gcm_open(key->key.data(), p + 9, p, aad, p + aad, n, p + aad + n, out.data() + at))
      return make_error(store_errc::corrupt_record, "personal data: a sealed field of subject '"
                                                      + std::string{*subject} + "' fails its check (altered)");
    return {};
  });
}

caf::expected<fresh_key> make_fresh_key(std::string_view subject, const master_key* master) {
  auto key = make_subject_key();
  if (!key)
    return key.error();
  auto record = encode_key_record(subject, *key, master);
  if (!record)
    return record.error();
  return fresh_key{*key, std::move(*record)};
}

caf::expected<bytes> encode_key_record(std::string_view subject, const subject_key& key, const master_key* master) {
  bytes out;
  if (master == nullptr) {
    out.push_back(key_plain);
    out.insert(out.end(), key.id.begin(), key.id.end());
    out.insert(out.end(), key.key.begin(), key.key.end());
    return out;
  }
  out.resize(1 + 8 + nonce_size + 32 + tag_size);
  out[0] = key_wrapped;
  std::memcpy(out.data() + 1, key.id.data(), 8);
  uint8_t* nonce = out.data() + 9;
  if (!random_bytes(nonce, nonce_size))
    return make_error(store_errc::io_error, "personal data: the random generator failed (RAND_bytes)");
  bytes aad(out.begin(), out.begin() + 9);
  aad.insert(aad.end(), subject.begin(), subject.end());
  if (!gcm_seal(master->data(), nonce, aad.data(), aad.size(), key.key.data(), 32, nonce + nonce_size,
                nonce + nonce_size + 32))
    return make_error(store_errc::io_error, "personal data: wrapping a key failed");
  return out;
}

caf::expected<std::optional<subject_key>> decode_key_record(std::string_view subject, const uint8_t* data,
                                                            size_t size, const master_key* master) {
  if (size == 0 || data[0] == 0)
    return std::optional<subject_key>{}; // scrubbed
  subject_key k;
  if (data[0] == key_plain && size >= 1 + 8 + 32) {
    std::memcpy(k.id.data(), data + 1, 8);
    std::memcpy(k.key.data(), data + 9, 32);
    return std::optional<subject_key>{k};
  }
  if (data[0] == key_wrapped && size >= 1 + 8 + nonce_size + 32 + tag_size) {
    if (master == nullptr)
      return make_error(store_errc::invalid_argument, "personal data: the subject keys are wrapped with a "
                                                      "master key; give it (--master-key FILE)");
    std::memcpy(k.id.data(), data + 1, 8);
    bytes aad(data, data + 9);
    aad.insert(aad.end(), subject.begin(), subject.end());
    const uint8_t* nonce = data + 9;
    if (!gcm_open(master->data(), nonce, aad.data(), aad.size(), nonce + nonce_size, 32, nonce + nonce_size + 32,
                  k.key.data()))
      return make_error(store_errc::corrupt_record, "personal data: the key of subject '" + std::string{subject}
                                                      + "' does not unwrap: another master key, or damaged");
    return std::optional<subject_key>{k};
  }
  return make_error(store_errc::corrupt_record,
                    "personal data: the key record of subject '" + std::string{subject} + "' is damaged");
}

caf::expected<master_key> read_master_key(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return make_error(store_errc::invalid_argument, "master key: cannot read " + path);
  std::string text{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
  master_key key{};
  if (text.size() == key.size()) {
    std::memcpy(key.data(), text.data(), key.size());
    return key;
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
    text.pop_back();
  if (text.size() != 2 * key.size())
    return make_error(store_errc::invalid_argument,
                      "master key: " + path + " holds neither 32 bytes nor 64 hexadecimal digits");
  for (size_t i = 0; i < key.size(); ++i) {
    int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return make_error(store_errc::invalid_argument, "master key: " + path + " is not hexadecimal");
    key[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return key;
}

} // namespace sourcery::persistence::detail
