#pragma once

// Sealing and opening personal fields (personal.hpp) inside msgpack
// documents, and the subjects' keys as stored. Shared by every store.
//
// A sealed field is msgpack ext 81 holding
//   [1: format = 1][8: key id][12: nonce][2: subject length, big-endian]
//   [subject][ciphertext][16: GCM tag]
// encrypted with AES-256-GCM under the subject's key; everything before the
// ciphertext is authenticated too, so a field cannot be moved to another
// subject. A key id that is not the subject's current key's means the key
// that sealed it is gone: the field reads as forgotten (ext 82).
//
// A key record is [1: format][8: key id] then, for format 1, the 32-byte
// key; for format 2, the key wrapped with the master key:
// [12: nonce][32: ciphertext][16: tag], the subject and id authenticated.

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "sourcery/persistence/event.hpp"

namespace sourcery::persistence::detail {

/// One subject's data key.
struct subject_key {
  std::array<uint8_t, 8> id{};
  std::array<uint8_t, 32> key{};
};

/// The key that wraps subject keys at rest (`--master-key FILE`).
using master_key = std::array<uint8_t, 32>;

/// A fresh random key (OpenSSL's RAND_bytes). Errors: io_error if the
/// random generator fails.
caf::expected<subject_key> make_subject_key();

/// Whether `data` holds personal fields still in plaintext (ext 80), or
/// sealed ones (ext 81). Cheap when there are none: a byte scan first.
bool has_plain_personal(const bytes& data);
bool has_sealed_personal(const bytes& data);

/// Calls `visit` with the subject of every sealed field of `data`.
/// Errors: malformed_payload.
caf::error sealed_subjects(const bytes& data, const std::function<void(std::string_view)>& visit);

/// Seals every plaintext personal field of `data` for `subject` with `key`.
/// Errors: malformed_payload, invalid_argument (a subject over 400 bytes).
caf::error seal_personal(bytes& data, std::string_view subject, const subject_key& key);

/// The same in one parse of `data`, asking `key_for(subject)` for the key
/// only when a plaintext field is found (nothing is asked, and nothing
/// changes, when there is none). Errors: those of `key_for`, and as above.
using key_source = std::function<caf::expected<subject_key>(std::string_view)>;
caf::error seal_personal(bytes& data, std::string_view subject, const key_source& key_for);

/// Opens every sealed field of `data`: `key_of(subject)` gives the
/// subject's current key, or null when it has none (forgotten). A field of
/// another key than the subject's current one reads as forgotten.
/// Errors: malformed_payload, corrupt_record (the tag does not match: the
/// field was altered).
caf::error open_personal(bytes& data, const std::function<const subject_key*(std::string_view)>& key_of);

/// A fresh key for `subject` and its record as stored (wrapped when
/// `master` is given): what every store writes for a subject's first key.
struct fresh_key {
  subject_key key;
  bytes record;
};
caf::expected<fresh_key> make_fresh_key(std::string_view subject, const master_key* master);

/// A key record as stored, wrapped when `master` is given.
caf::expected<bytes> encode_key_record(std::string_view subject, const subject_key& key, const master_key* master);

/// A stored key record. Trailing bytes (padding) are ignored; a record of
/// all zeros (scrubbed) reads as none. Errors: corrupt_record (damaged, or
/// wrapped with another master key), invalid_argument (wrapped but no
/// master key given).
caf::expected<std::optional<subject_key>> decode_key_record(std::string_view subject, const uint8_t* data,
                                                            size_t size, const master_key* master);

/// Reads a master key file: 32 raw bytes, or 64 hexadecimal digits (with
/// an optional final newline). Errors: invalid_argument.
caf::expected<master_key> read_master_key(const std::string& path);

} // namespace sourcery::persistence::detail
