#pragma once

// The read side: a patient's granted consents, as an LMDB projection (one
// table per patient, one row per recipient listing the record kinds), and
// the two queries of the article.

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "consent.hpp"
#include "sourcery/actors/events/projector.hpp"
#include "sourcery/persistence/projection_store.hpp"

namespace consent {

struct patient_consents {
  static constexpr const char* projection_name = "consent.patient_consents";
  using event = std::variant<consent_granted, consent_revoked>;
  using writer = sourcery::persistence::projection_store::writer;
  using json = nlohmann::json;

  static std::string table_of(const std::string& patient_id) { return "granted:" + patient_id; }

  caf::error project(const consent_granted& e, const sourcery::event_context&, writer& w) {
    auto old = w.get(table_of(e.patient_id), e.to());
    auto kinds = old ? json::parse(*old) : json::array();
    if (std::find(kinds.begin(), kinds.end(), e.target) == kinds.end())
      kinds.push_back(e.target);
    w.put(table_of(e.patient_id), e.to(), kinds.dump());
    return {};
  }

  caf::error project(const consent_revoked& e, const sourcery::event_context&, writer& w) {
    auto old = w.get(table_of(e.patient_id), e.to());
    if (!old)
      return {};
    auto kinds = json::parse(*old);
    kinds.erase(std::remove(kinds.begin(), kinds.end(), e.target), kinds.end());
    if (kinds.empty())
      w.erase(table_of(e.patient_id), e.to());
    else
      w.put(table_of(e.patient_id), e.to(), kinds.dump());
    return {};
  }
};

/// One recipient's consents: who, and to which record kinds.
struct consent_row {
  std::string to_entity, to_id;
  std::vector<std::string> targets;
};

/// "Consents of a patient": every recipient with the kinds granted.
inline caf::expected<std::vector<consent_row>> consents_of(const sourcery::persistence::projection_store& models,
                                                           const std::string& patient_id) {
  auto rows = models.scan(patient_consents::projection_name, patient_consents::table_of(patient_id));
  if (!rows)
    return rows.error();
  std::vector<consent_row> out;
  for (auto& [to, kinds] : *rows) {
    auto colon = to.find(':');
    out.push_back({to.substr(0, colon), to.substr(colon + 1), nlohmann::json::parse(kinds).get<std::vector<std::string>>()});
  }
  return out;
}

/// "Has consent?": whether `to_entity:to_id` may see `target` records of the patient.
inline caf::expected<bool> has_consent(const sourcery::persistence::projection_store& models, const grant_scope& s) {
  auto row = models.get(patient_consents::projection_name, patient_consents::table_of(s.patient_id), s.to());
  if (!row)
    return row.error();
  if (!*row)
    return false;
  auto kinds = nlohmann::json::parse(**row);
  return std::find(kinds.begin(), kinds.end(), s.target) != kinds.end();
}

} // namespace consent
