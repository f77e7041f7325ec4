#pragma once

// Personal data that can be forgotten (crypto-shredding). One word per field:
//
//     struct account_opened {
//       sourcery::personal<std::string> owner;
//       SOURCERY_EVENT("bank.account_opened", owner)
//     };
//
// A personal field belongs to a subject: the stream of its event (or of its
// snapshot) unless the event names another with SOURCERY_SUBJECT. The
// store encrypts it with the subject's own key (AES-256-GCM) before writing
// it, so its plaintext never reaches the event log, snapshots or exports;
// forgetting the subject deletes the key (event_store::forget). From then
// on the field reads as forgotten: `value()` is `T{}` and `forgotten()` is
// true, a valid state, so aggregates still rehydrate and projections rebuild.
//
// What is stored (msgpack ext types; see persistence/src/personal_data.hpp):
// the plaintext form (ext 80) exists only in memory, between encoding an
// event and the store sealing it (ext 81); ext 82 is a forgotten value.
// A field that was not personal when older events were written reads their
// plain value as known.

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "sourcery/persistence/fields.hpp"

namespace sourcery {

template <class T>
class personal;

namespace persistence::detail {
/// Defined in personal_codec.hpp, where msgpack is included.
template <class Packer, class T>
void pack_personal(Packer& packer, const personal<T>& value);
template <class Object, class T>
void unpack_personal(Object&& object, personal<T>& into);
} // namespace persistence::detail

/// A value of type `T` that belongs to a subject and can be forgotten.
template <class T>
class personal {
public:
  /// What a read found.
  enum class state : uint8_t {
    known,     ///< the value is here
    forgotten, ///< its subject was forgotten: the key is gone for good
    sealed,    ///< still encrypted: read by a program that does not reveal personal data (the tools)
  };

  personal() = default;
  personal(T value) : value_(std::move(value)) {}
  /// From anything a `T` is made of: `personal<std::string>{"Ada"}`.
  template <class U>
    requires(std::is_constructible_v<T, U &&> && !std::is_same_v<std::decay_t<U>, T>
             && !std::is_same_v<std::decay_t<U>, personal>)
  personal(U&& value) : value_(std::forward<U>(value)) {}
  personal& operator=(T value) {
    value_ = std::move(value);
    state_ = state::known;
    sealed_.clear();
    return *this;
  }

  /// The value; `T{}` unless `known()`.
  const T& value() const noexcept { return value_; }
  const T& operator*() const noexcept { return value_; }
  const T* operator->() const noexcept { return &value_; }

  bool known() const noexcept { return state_ == state::known; }
  bool forgotten() const noexcept { return state_ == state::forgotten; }
  state status() const noexcept { return state_; }

  /// A forgotten value (what a read of an erased field gives).
  static personal forgotten_value() {
    personal p;
    p.state_ = state::forgotten;
    return p;
  }

  friend bool operator==(const personal& a, const personal& b) {
    return a.state_ == b.state_ && a.value_ == b.value_ && a.sealed_ == b.sealed_;
  }

  template <class Packer>
  void msgpack_pack(Packer& packer) const {
    persistence::detail::pack_personal(packer, *this);
  }
  template <class Object>
  void msgpack_unpack(Object&& object) {
    persistence::detail::unpack_personal(std::forward<Object>(object), *this);
  }
  /// Not a map of fields: decoders take it whole.
  using sourcery_opaque = void;

private:
  template <class Packer, class U>
  friend void persistence::detail::pack_personal(Packer&, const personal<U>&);
  template <class Object, class U>
  friend void persistence::detail::unpack_personal(Object&&, personal<U>&);

  T value_{};
  state state_ = state::known;
  std::vector<uint8_t> sealed_; // the sealed form, kept as read when `sealed`
};

/// Announces that a subject was forgotten (application::forget, `sourcery
/// forget`), before its key is deleted. A projection or handler that copies
/// personal data lists it among its events and erases its copy:
///
///     caf::error project(const sourcery::subject_forgotten& e, const sourcery::event_context&, writer& w) {
///       w.erase("owners", e.subject);
///       return {};
///     }
///
/// Replayed like any event, so a rebuilt read model forgets again.
struct subject_forgotten {
  static constexpr const char* type_name = "sourcery.subject_forgotten";
  std::string subject;
  SOURCERY_FIELDS(subject)
};

/// The stream of `subject_forgotten` events. Any node of a cluster appends
/// to it (its appends are not fenced: nothing in it depends on order).
inline constexpr const char* forgotten_subjects_stream = "sourcery.forgotten";

} // namespace sourcery

/// Names the field whose value is the subject of an event's personal fields,
/// in place of its stream: `SOURCERY_SUBJECT(patient)` (a string field).
#define SOURCERY_SUBJECT(field)                                                                                    \
  std::string sourcery_subject() const {                                                                           \
    return std::string{field};                                                                                     \
  }
