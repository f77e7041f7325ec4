// Consent management: every invariant of the article, the two queries
// through the projection, and the demo run twice.

#include <gtest/gtest.h>

#include "../../examples/consent/consent.hpp"
#include "../../examples/consent/patient_consents.hpp"
#include "../support/child_process.hpp"
#include "../support/temp_dir.hpp"
#include "sourcery/runtime/application.hpp"

using namespace consent;

namespace {

grant_scope to(std::string entity, std::string id, std::string target = "exams") {
  return {"ana", std::move(entity), std::move(id), std::move(target)};
}

template <class O>
std::string reason(const O& o) {
  return o.rejected() ? o.why().reason : "accepted";
}

patient granted_to(const grant_scope& s) {
  patient p;
  p.apply(consent_granted{s});
  return p;
}

} // namespace

TEST(consent_patient, a_granted_consent_cannot_be_asked_or_granted_again) {
  auto p = granted_to(to("doctor", "bob"));
  EXPECT_EQ(reason(p.execute(ask_consent{to("doctor", "bob")})), "consent_already_granted");
  EXPECT_EQ(reason(p.execute(grant_consent{to("doctor", "bob")})), "consent_already_granted");
  EXPECT_EQ(reason(p.execute(grant_consent{to("doctor", "bob", "conditions")})), "accepted"); // another kind
  EXPECT_EQ(reason(p.execute(grant_consent{to("nurse", "bob")})), "accepted");                // another one
}

TEST(consent_patient, only_a_granted_consent_can_be_revoked) {
  patient p;
  EXPECT_EQ(reason(p.execute(revoke_consent{to("doctor", "bob")})), "consent_not_granted");
  p.apply(consent_granted{to("doctor", "bob")});
  auto o = p.execute(revoke_consent{to("doctor", "bob")});
  ASSERT_EQ(reason(o), "accepted");
  ASSERT_EQ(o.events().size(), 1u);
  p.apply(std::get<consent_revoked>(o.events()[0]));
  EXPECT_EQ(reason(p.execute(revoke_consent{to("doctor", "bob")})), "consent_not_granted");
  EXPECT_EQ(reason(p.execute(grant_consent{to("doctor", "bob")})), "accepted"); // may be granted anew
}

TEST(consent_patient, patients_may_ask_and_be_granted_but_not_themselves) {
  patient p;
  EXPECT_EQ(reason(p.execute(ask_consent{to("patient", "carl")})), "accepted");
  EXPECT_EQ(reason(p.execute(grant_consent{to("patient", "carl")})), "accepted");
  EXPECT_EQ(reason(p.execute(ask_consent{to("patient", "ana")})), "self_consent");
}

TEST(consent_patient, professionals_are_doctors_and_nurses_and_records_of_four_kinds) {
  patient p;
  for (auto* e : {"doctor", "nurse", "patient"})
    EXPECT_EQ(reason(p.execute(ask_consent{to(e, "x")})), "accepted") << e;
  for (auto* e : {"pharmacist", "Doctor", ""})
    EXPECT_EQ(reason(p.execute(ask_consent{to(e, "x")})), "invalid_entity") << e;
  for (auto* t : {"exams", "consultations", "conditions", "er_visits"})
    EXPECT_EQ(reason(p.execute(grant_consent{to("doctor", "x", t)})), "accepted") << t;
  for (auto* t : {"dna", "er visits", ""})
    EXPECT_EQ(reason(p.execute(revoke_consent{to("doctor", "x", t)})), "invalid_target") << t;
  EXPECT_EQ(reason(p.execute(ask_consent{to("doctor", "")})), "invalid_id");
}

TEST(consent_patient, asking_twice_records_one_request) {
  patient p;
  auto first = p.execute(ask_consent{to("doctor", "bob")});
  ASSERT_EQ(first.events().size(), 1u);
  p.apply(std::get<consent_asked>(first.events()[0]));
  auto again = p.execute(ask_consent{to("doctor", "bob")});
  EXPECT_FALSE(again.rejected());
  EXPECT_TRUE(again.events().empty());
}

TEST(consent_queries, consents_of_a_patient_and_has_consent) {
  sourcery::testing::temp_dir dir;
  sourcery::application_config config;
  config.data_dir = dir.str();
  auto app = sourcery::application::start(config, routes());
  ASSERT_TRUE(app);
  ASSERT_TRUE((*app)->add_projection<patient_consents>({}, true));
  sourcery::dispatch_options strong;
  strong.consistency_level = sourcery::consistency::strong;
  for (auto& s : {to("doctor", "bob"), to("doctor", "bob", "conditions"), to("nurse", "nina", "er_visits")})
    ASSERT_TRUE((*app)->dispatch(grant_consent{s}, strong)->accepted);
  ASSERT_TRUE((*app)->dispatch(revoke_consent{to("doctor", "bob")}, strong)->accepted);
  grant_scope other{"zoe", "doctor", "bob", "exams"};
  ASSERT_TRUE((*app)->dispatch(grant_consent{other}, strong)->accepted);

  auto models = (*app)->read_models();
  ASSERT_TRUE(models);
  auto rows = consents_of(**models, "ana");
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].to_entity, "doctor");
  EXPECT_EQ((*rows)[0].targets, std::vector<std::string>{"conditions"});
  EXPECT_EQ((*rows)[1].to_id, "nina");
  EXPECT_FALSE(*has_consent(**models, to("doctor", "bob")));
  EXPECT_TRUE(*has_consent(**models, to("doctor", "bob", "conditions")));
  EXPECT_TRUE(*has_consent(**models, other));
  EXPECT_FALSE(*has_consent(**models, to("nurse", "nina", "exams")));
  EXPECT_TRUE(consents_of(**models, "nobody")->empty());
  (*app)->stop();
}

TEST(consent_demo, runs_twice_on_one_directory) {
  sourcery::testing::temp_dir dir;
  for (int run = 0; run < 2; ++run) {
    sourcery::testing::child_process demo{CONSENT_DEMO_PATH, {"--data-dir", dir.str()}};
    auto out = demo.read_all();
    EXPECT_EQ(demo.wait(), 0) << out;
    for (auto* expected : {"rejected: consent_already_granted", "rejected: invalid_entity", "rejected: invalid_target",
                           "rejected: self_consent", "rejected: consent_not_granted",
                           "has doctor dr-bob consent to Ana's exams? no",
                           "has nurse nina consent to Ana's er_visits? yes"})
      EXPECT_NE(out.find(expected), std::string::npos) << expected << "\n" << out;
    if (run == 1) {
      EXPECT_NE(out.find("continuing an earlier run"), std::string::npos) << out;
    }
  }
}
