#pragma once

// Consent management, from "My Journey into CQRS and Event Sourcing" (Rodrigo
// Botti): a patient's consents for others to see their health records.
//
// Who may be given consent: a doctor, a nurse, or another patient. What:
// exams, consultations, conditions, ER visits. The invariants:
// - a consent already granted cannot be asked for, nor granted, again;
// - only a granted consent can be revoked (not one never granted, nor one
//   already revoked);
// - patients may ask other patients, and grant consent to them;
// - professionals are doctors and nurses only; records are of the four kinds only;
// - a patient needs no consent to their own records.

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <variant>

#include <msgpack.hpp>

#include "sourcery/actors/aggregates/aggregate.hpp"
#include "sourcery/persistence/personal.hpp"
#include "sourcery/runtime/commands/router.hpp"

namespace consent {

inline constexpr std::array<const char*, 3> entities = {"patient", "doctor", "nurse"};
inline constexpr std::array<const char*, 4> record_kinds = {"exams", "consultations", "conditions", "er_visits"};

/// Who asks for or receives consent, and for which kind of record.
struct grant_scope {
  std::string patient_id; ///< whose records
  std::string to_entity;  ///< "patient", "doctor" or "nurse"
  std::string to_id;
  std::string target; ///< "exams", "consultations", "conditions" or "er_visits"
  MSGPACK_DEFINE_MAP(patient_id, to_entity, to_id, target);

  /// The key of the one it is for: "doctor:ann".
  std::string to() const { return to_entity + ":" + to_id; }
};

// -- commands ------------------------------------------------------------------
/// A patient's name is personal data (personal.hpp): sealed with the key of
/// the patient's stream, and gone once the patient is forgotten.
struct register_patient { std::string patient_id, name; SOURCERY_FIELDS(patient_id, name) };
struct ask_consent { grant_scope scope; SOURCERY_FIELDS(scope) };
struct grant_consent { grant_scope scope; SOURCERY_FIELDS(scope) };
struct revoke_consent { grant_scope scope; SOURCERY_FIELDS(scope) };

// -- events --------------------------------------------------------------------
struct patient_registered {
  sourcery::personal<std::string> name;
  SOURCERY_EVENT("consent.patient_registered", name)
};
struct consent_asked : grant_scope {
  static constexpr const char* type_name = "consent.asked";
};
struct consent_granted : grant_scope {
  static constexpr const char* type_name = "consent.granted";
};
struct consent_revoked : grant_scope {
  static constexpr const char* type_name = "consent.revoked";
};

// -- the aggregate: one patient --------------------------------------------------
struct patient {
  using event = std::variant<patient_registered, consent_asked, consent_granted, consent_revoked>;

  /// Known once registered; forgotten when the patient asks to be forgotten.
  sourcery::personal<std::string> name;

  /// "doctor:ann" -> record kinds granted; kept so every check is one lookup.
  std::map<std::string, std::set<std::string>> granted;
  /// "doctor:ann/exams" asked and not yet granted.
  std::set<std::string> pending;
  MSGPACK_DEFINE_MAP(granted, pending, name);

  sourcery::outcome<event> execute(const register_patient& c) const {
    if (c.patient_id.empty() || c.name.empty())
      return sourcery::reject("invalid_id", "a patient has an id and a name");
    if (name.known() && name.value() == c.name)
      return sourcery::no_events; // registered already
    return patient_registered{c.name};
  }

  sourcery::outcome<event> execute(const ask_consent& c) const {
    if (auto bad = check(c.scope))
      return *bad;
    if (has(c.scope))
      return sourcery::reject("consent_already_granted", c.scope.to() + " already has consent to " + c.scope.target);
    if (pending.count(c.scope.to() + "/" + c.scope.target) != 0)
      return sourcery::no_events; // asked already: one pending request is enough
    return consent_asked{c.scope};
  }

  sourcery::outcome<event> execute(const grant_consent& c) const {
    if (auto bad = check(c.scope))
      return *bad;
    if (has(c.scope))
      return sourcery::reject("consent_already_granted", c.scope.to() + " already has consent to " + c.scope.target);
    return consent_granted{c.scope};
  }

  sourcery::outcome<event> execute(const revoke_consent& c) const {
    if (auto bad = check(c.scope))
      return *bad;
    if (!has(c.scope))
      return sourcery::reject("consent_not_granted", c.scope.to() + " has no consent to " + c.scope.target
                                                       + " (never granted, or revoked already)");
    return consent_revoked{c.scope};
  }

  void apply(const patient_registered& e) { name = e.name; }
  void apply(const consent_asked& e) { pending.insert(e.to() + "/" + e.target); }
  void apply(const consent_granted& e) {
    pending.erase(e.to() + "/" + e.target);
    granted[e.to()].insert(e.target);
  }
  void apply(const consent_revoked& e) {
    auto it = granted.find(e.to());
    if (it == granted.end())
      return;
    it->second.erase(e.target);
    if (it->second.empty())
      granted.erase(it);
  }

  bool has(const grant_scope& s) const {
    auto it = granted.find(s.to());
    return it != granted.end() && it->second.count(s.target) != 0;
  }

  static std::optional<sourcery::rejection> check(const grant_scope& s) {
    auto in = [](const auto& list, const std::string& v) {
      return std::find_if(list.begin(), list.end(), [&](const char* x) { return v == x; }) != list.end();
    };
    if (s.patient_id.empty() || s.to_id.empty())
      return sourcery::reject("invalid_id", "patient and recipient ids must not be empty");
    if (!in(entities, s.to_entity))
      return sourcery::reject("invalid_entity", "'" + s.to_entity + "' is not a patient, doctor or nurse");
    if (!in(record_kinds, s.target))
      return sourcery::reject("invalid_target",
                              "'" + s.target + "' is not exams, consultations, conditions or er_visits");
    if (s.to_entity == "patient" && s.to_id == s.patient_id)
      return sourcery::reject("self_consent", "a patient needs no consent to their own records");
    return std::nullopt;
  }
};

inline sourcery::router routes() {
  sourcery::router r;
  r.aggregate<patient>(
     [](const auto& c) {
       if constexpr (requires { c.scope; })
         return c.scope.patient_id;
       else
         return c.patient_id;
     },
     "patient-")
    .dispatch<register_patient, ask_consent, grant_consent, revoke_consent>();
  return r;
}

} // namespace consent
