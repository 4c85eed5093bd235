#include "medgrid/auth/scopes.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace medgrid::auth {
namespace {

using Context = ResourceScope::Context;
using Grant = ScopeSet::Grant;

constexpr ContextMask kPatientOnly = ContextBit(Context::kPatient);
constexpr ContextMask kUserOnly = ContextBit(Context::kUser);
constexpr ContextMask kSystemOnly = ContextBit(Context::kSystem);
constexpr Interaction kEach[] = {kCreate, kRead, kUpdate, kDelete, kSearch};

// The scope, parsed; fails the test (and returns an empty scope) unless it is a valid clinical scope.
ResourceScope MustParse(std::string_view text) {
  absl::StatusOr<std::optional<ResourceScope>> parsed = ParseResourceScope(text);
  EXPECT_TRUE(parsed.ok()) << text << ": " << parsed.status();
  if (!parsed.ok()) return {};
  EXPECT_TRUE(parsed->has_value()) << text;
  return parsed->value_or(ResourceScope{});
}

absl::StatusCode CodeOf(std::string_view text) { return ParseResourceScope(text).status().code(); }

TEST(ParseResourceScope, EveryV1Form) {
  struct Prefix {
    std::string text;
    Context context;
  };
  struct Suffix {
    std::string text;
    uint8_t interactions;
  };
  const Prefix prefixes[] = {{"patient/", Context::kPatient}, {"user/", Context::kUser}, {"system/", Context::kSystem}};
  const Suffix suffixes[] = {
      {"read", kRead | kSearch}, {"write", kCreate | kUpdate | kDelete}, {"*", kAllInteractions}};
  int checked = 0;
  for (const Prefix& p : prefixes) {
    for (const Suffix& s : suffixes) {
      for (std::string type : {"Observation", "*"}) {
        std::string text = p.text + type + "." + s.text;
        SCOPED_TRACE(text);
        ResourceScope scope = MustParse(text);
        EXPECT_EQ(scope.context, p.context);
        EXPECT_EQ(scope.type, type);
        EXPECT_EQ(scope.interactions, s.interactions);
        EXPECT_FALSE(scope.v2);
        EXPECT_TRUE(scope.filter.empty());
        EXPECT_EQ(scope.text, text);
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 18);
}

TEST(ParseResourceScope, AllThirtyOneOrderedV2SubsetsAreAccepted) {
  const std::string letters = "cruds";
  const uint8_t bits[] = {kCreate, kRead, kUpdate, kDelete, kSearch};
  for (int mask = 1; mask <= kAllInteractions; ++mask) {
    std::string perms;
    uint8_t expected = 0;
    for (int i = 0; i < 5; ++i) {
      if (mask & (1 << i)) {
        perms += letters[i];
        expected |= bits[i];
      }
    }
    std::string text = "user/Condition." + perms;
    SCOPED_TRACE(text);
    ResourceScope scope = MustParse(text);
    EXPECT_EQ(scope.interactions, expected);
    EXPECT_TRUE(scope.v2);
    EXPECT_EQ(scope.context, Context::kUser);
    EXPECT_EQ(scope.type, "Condition");
  }
}

TEST(ParseResourceScope, BadPermissionsAreRejected) {
  for (std::string perms :
       {"",     "sr",    "rr",  "rc",   "sdr", "crudss",     "ccruds", "x",      "rsx", "R",  "READ",
        "Read", "reads", "rea", "writ", "**",  "read,write", "r s",    "cruds*", "*r",  ".rs"}) {
    std::string text = "patient/Observation." + perms;
    SCOPED_TRACE(text);
    EXPECT_EQ(CodeOf(text), absl::StatusCode::kInvalidArgument);
  }
}

TEST(ParseResourceScope, TypeNames) {
  std::string longest(64, 'b');
  longest[0] = 'A';
  std::string too_long = longest;
  too_long.push_back('c');
  for (const std::string& type : std::vector<std::string>{"A", "Observation", "MedicationRequest", "*", longest}) {
    SCOPED_TRACE(type);
    EXPECT_EQ(MustParse("system/" + type + ".rs").type, type);
  }
  for (const std::string& type :
       std::vector<std::string>{"", "observation", "Obs1", "Obs_x", "Obs-x", "**", "*Obs", "Élan", too_long}) {
    SCOPED_TRACE(type);
    EXPECT_EQ(CodeOf("system/" + type + ".rs"), absl::StatusCode::kInvalidArgument);
  }
}

TEST(ParseResourceScope, QueryFilters) {
  struct Case {
    std::string text;
    std::vector<std::pair<std::string, std::string>> filter;
  };
  const Case cases[] = {
      {"patient/Observation.rs?category=laboratory", {{"category", "laboratory"}}},
      {"patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
       {{"category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"}}},
      {"patient/Observation.rs?category=http%3A%2F%2Fexample.org%7Cvital-signs",
       {{"category", "http://example.org|vital-signs"}}},
      {"user/Observation.rs?category=laboratory&status=final", {{"category", "laboratory"}, {"status", "final"}}},
      {"system/Patient.rs?identifier=urn%3Aoid%3A1.2%26x%3Dy", {{"identifier", "urn:oid:1.2&x=y"}}},
      {"patient/*.r?_tag=a%2Bb+c", {{"_tag", "a+b+c"}}},
      {"patient/Encounter.cruds?date=ge2020-01-01T00:00:00+01:00", {{"date", "ge2020-01-01T00:00:00+01:00"}}},
      {"patient/Observation.s?code%3Amissing=false", {{"code:missing", "false"}}},
      {"patient/Observation.s?a=b=c", {{"a", "b=c"}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    ResourceScope scope = MustParse(c.text);
    EXPECT_EQ(scope.filter, c.filter);
    EXPECT_TRUE(scope.v2);
    EXPECT_EQ(scope.text, c.text);
  }
}

TEST(ParseResourceScope, BadQueryFiltersAreRejected) {
  for (std::string text : {
           "patient/Observation.read?category=laboratory",  // filter on v1
           "patient/Observation.*?category=laboratory",     // filter on v1
           "user/Observation.write?status=final",           // filter on v1
           "patient/Observation.rs?",                       // no pairs
           "patient/Observation.rs?=laboratory",            // empty key
           "patient/Observation.rs?%=laboratory",           // bad escape in key
           "patient/Observation.rs?category",               // no '='
           "patient/Observation.rs?category=",              // empty value
           "patient/Observation.rs?category=laboratory&",   // empty pair
           "patient/Observation.rs?&category=laboratory",   // empty pair
           "patient/Observation.rs?a=b&&c=d",               // empty pair
           "patient/Observation.rs?category=lab%zz",        // bad escape
           "patient/Observation.rs?category=lab%4",         // truncated escape
           "patient/Observation.rs?category=lab%",          // truncated escape
           "patient/Observation?category=laboratory",       // no permissions
       }) {
    SCOPED_TRACE(text);
    EXPECT_EQ(CodeOf(text), absl::StatusCode::kInvalidArgument);
  }
}

TEST(ParseResourceScope, NonClinicalScopesAreNotScopes) {
  for (std::string text : {"openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
                           "offline_access", "online_access", "medgrid/admin", "Patient/Observation.read",
                           "patients/Observation.read", "patient", "user", "system", "/patient/Observation.read"}) {
    SCOPED_TRACE(text);
    absl::StatusOr<std::optional<ResourceScope>> parsed = ParseResourceScope(text);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, std::nullopt);
  }
}

TEST(ParseResourceScope, MalformedClinicalScopesAreErrors) {
  for (std::string text : {"patient/", "user/", "system/", "patient/Observation", "patient/.read",
                           "patient/Observation.", "user/Observation.rs.x", "system/Patient/Observation.read",
                           "patient/Observation read", "patient/*", "patient/*.", "patient/.*"}) {
    SCOPED_TRACE(text);
    absl::StatusOr<std::optional<ResourceScope>> parsed = ParseResourceScope(text);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(text), absl::string_view::npos) << parsed.status();
  }
}

// The interactions that Check() grants on `type` in `contexts`, as a bitmask.
uint8_t Granted(const ScopeSet& set, std::string_view type, ContextMask contexts) {
  uint8_t out = 0;
  for (Interaction i : kEach) {
    if (set.Check(type, i, contexts) != Grant::kDenied) out |= i;
  }
  return out;
}

TEST(ScopeSet, GrantsExactlyTheScopesInteractions) {
  struct Case {
    std::string scopes;
    uint8_t on_observation;
  };
  const Case cases[] = {
      {"patient/Observation.read", kRead | kSearch},
      {"patient/Observation.write", kCreate | kUpdate | kDelete},
      {"patient/Observation.*", kAllInteractions},
      {"patient/Observation.c", kCreate},
      {"patient/Observation.r", kRead},
      {"patient/Observation.u", kUpdate},
      {"patient/Observation.d", kDelete},
      {"patient/Observation.s", kSearch},
      {"patient/Observation.rs", kRead | kSearch},
      {"patient/Observation.cud", kCreate | kUpdate | kDelete},
      {"patient/Observation.cruds", kAllInteractions},
      {"patient/Patient.cruds", 0},
      {"openid fhirUser", 0},
      {"", 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.scopes);
    EXPECT_EQ(Granted(ScopeSet::Parse(c.scopes), "Observation", kAnyContext), c.on_observation);
  }
}

TEST(ScopeSet, V1AndV2FormsGrantTheSame) {
  const std::pair<std::string, std::string> pairs[] = {{"read", "rs"}, {"write", "cud"}, {"*", "cruds"}};
  for (const auto& [v1, v2] : pairs) {
    for (std::string prefix : {"patient/", "user/", "system/"}) {
      ScopeSet a = ScopeSet::Parse(prefix + "Observation." + v1);
      ScopeSet b = ScopeSet::Parse(prefix + "Observation." + v2);
      SCOPED_TRACE(prefix + v1);
      ASSERT_EQ(a.resource_scopes().size(), 1u);
      ASSERT_EQ(b.resource_scopes().size(), 1u);
      for (ContextMask contexts = 0; contexts <= kAnyContext; ++contexts) {
        for (Interaction i : kEach) {
          EXPECT_EQ(a.Check("Observation", i, contexts), b.Check("Observation", i, contexts));
        }
      }
      EXPECT_EQ(Granted(a, "Observation", kAnyContext), Granted(b, "Observation", kAnyContext));
      EXPECT_NE(Granted(a, "Observation", kAnyContext), 0);
    }
  }
}

TEST(ScopeSet, ContextsMustBeAccepted) {
  struct Case {
    std::string scope;
    ContextMask contexts;
    Grant want;
  };
  const Case cases[] = {
      {"patient/Observation.rs", kPatientOnly, Grant::kFull},
      {"patient/Observation.rs", kUserOnly, Grant::kDenied},
      {"patient/Observation.rs", kSystemOnly, Grant::kDenied},
      {"patient/Observation.rs", kUserOnly | kSystemOnly, Grant::kDenied},
      {"patient/Observation.rs", kAnyContext, Grant::kFull},
      {"user/Observation.rs", kUserOnly, Grant::kFull},
      {"user/Observation.rs", kPatientOnly, Grant::kDenied},
      {"user/Observation.rs", kSystemOnly, Grant::kDenied},
      {"user/Observation.rs", kPatientOnly | kUserOnly, Grant::kFull},
      {"system/Observation.rs", kSystemOnly, Grant::kFull},
      {"system/Observation.rs", kPatientOnly | kUserOnly, Grant::kDenied},
      {"system/Observation.rs", 0, Grant::kDenied},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.scope + " in " + std::to_string(c.contexts));
    EXPECT_EQ(ScopeSet::Parse(c.scope).Check("Observation", kRead, c.contexts), c.want);
  }
}

TEST(ScopeSet, WildcardTypeGrantsEveryType) {
  ScopeSet set = ScopeSet::Parse("patient/*.rs");
  for (std::string type : {"Observation", "Patient", "MedicationRequest", "A"}) {
    SCOPED_TRACE(type);
    EXPECT_EQ(set.Check(type, kRead, kPatientOnly), Grant::kFull);
    EXPECT_EQ(set.Check(type, kSearch, kPatientOnly), Grant::kFull);
    EXPECT_EQ(set.Check(type, kCreate, kPatientOnly), Grant::kDenied);
    EXPECT_EQ(set.Check(type, kRead, kUserOnly), Grant::kDenied);
  }
  // A concrete type does not grant others.
  EXPECT_EQ(ScopeSet::Parse("patient/Patient.rs").Check("Observation", kRead, kPatientOnly), Grant::kDenied);
}

TEST(ScopeSet, SeveralScopesCombine) {
  ScopeSet set = ScopeSet::Parse("patient/Observation.r patient/Observation.s user/Patient.c system/*.d");
  EXPECT_EQ(Granted(set, "Observation", kPatientOnly), kRead | kSearch);
  EXPECT_EQ(Granted(set, "Patient", kUserOnly), kCreate);
  EXPECT_EQ(Granted(set, "Observation", kAnyContext), kRead | kSearch | kDelete);
  EXPECT_EQ(Granted(set, "Patient", kAnyContext), kCreate | kDelete);
  EXPECT_EQ(Granted(set, "Encounter", kPatientOnly | kUserOnly), 0);
  EXPECT_EQ(set.resource_scopes().size(), 4u);
}

TEST(ScopeSet, CheckTellsFullFromFiltered) {
  struct Case {
    std::string scopes;
    std::string type;
    Interaction interaction;
    Grant want;
  };
  const Case cases[] = {
      {"patient/Observation.rs?category=laboratory", "Observation", kSearch, Grant::kFiltered},
      {"patient/Observation.rs?category=laboratory", "Observation", kRead, Grant::kFiltered},
      {"patient/Observation.rs?category=laboratory", "Observation", kCreate, Grant::kDenied},
      {"patient/Observation.rs?category=laboratory", "Condition", kSearch, Grant::kDenied},
      {"patient/Observation.rs?category=laboratory patient/Observation.rs", "Observation", kSearch, Grant::kFull},
      {"patient/Observation.rs patient/Observation.rs?category=laboratory", "Observation", kSearch, Grant::kFull},
      {"patient/Observation.rs?category=laboratory patient/Observation.read", "Observation", kSearch, Grant::kFull},
      {"patient/Observation.rs?category=laboratory patient/*.s", "Observation", kSearch, Grant::kFull},
      {"patient/Observation.rs?category=laboratory patient/Observation.r", "Observation", kSearch, Grant::kFiltered},
      {"patient/Observation.rs?category=laboratory patient/Observation.r", "Observation", kRead, Grant::kFull},
      {"patient/Observation.rs?category=laboratory user/Observation.rs", "Observation", kSearch, Grant::kFiltered},
      {"patient/*.rs?_security=N patient/Condition.s", "Observation", kSearch, Grant::kFiltered},
      {"patient/*.rs?_security=N patient/Condition.s", "Condition", kSearch, Grant::kFull},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.scopes + " / " + c.type);
    EXPECT_EQ(ScopeSet::Parse(c.scopes).Check(c.type, c.interaction, kPatientOnly), c.want);
  }
}

TEST(ScopeSet, GrantingListsEveryMatchingScopeInOrder) {
  ScopeSet set = ScopeSet::Parse(
      "patient/Observation.rs?category=laboratory patient/Condition.rs patient/Observation.rs?category=vital-signs "
      "user/Observation.rs patient/*.r");
  std::vector<std::string> texts;
  for (const ResourceScope* s : set.Granting("Observation", kSearch, kPatientOnly)) {
    EXPECT_TRUE(s >= set.resource_scopes().data() && s < set.resource_scopes().data() + set.resource_scopes().size());
    texts.push_back(s->text);
  }
  EXPECT_EQ(texts, (std::vector<std::string>{"patient/Observation.rs?category=laboratory",
                                             "patient/Observation.rs?category=vital-signs"}));
  EXPECT_EQ(set.Granting("Observation", kRead, kPatientOnly).size(), 3u);
  EXPECT_EQ(set.Granting("Observation", kRead, kAnyContext).size(), 4u);
  EXPECT_TRUE(set.Granting("Observation", kCreate, kAnyContext).empty());
}

TEST(ScopeSet, MalformedScopesAreRejectedAndTheRestStillWork) {
  ScopeSet set = ScopeSet::Parse(
      "openid patient/Observation.sr fhirUser patient/Patient.read user/Encounter.rs?=x system/observation.rs "
      "launch/patient");
  EXPECT_EQ(set.rejected(),
            (std::vector<std::string>{"patient/Observation.sr", "user/Encounter.rs?=x", "system/observation.rs"}));
  ASSERT_EQ(set.resource_scopes().size(), 1u);
  EXPECT_EQ(set.resource_scopes()[0].text, "patient/Patient.read");
  EXPECT_EQ(set.Check("Patient", kRead, kAnyContext), Grant::kFull);
  EXPECT_EQ(set.Check("Observation", kSearch, kAnyContext), Grant::kDenied);
  EXPECT_EQ(set.Check("Encounter", kSearch, kAnyContext), Grant::kDenied);
  EXPECT_TRUE(set.Has("openid"));
  EXPECT_TRUE(set.Has("fhirUser"));
  EXPECT_TRUE(set.Has("launch/patient"));
  EXPECT_FALSE(set.Has("patient/Observation.sr"));
}

TEST(ScopeSet, HasMatchesPlainScopesExactly) {
  ScopeSet set = ScopeSet::Parse("openid medgrid/admin patient/Patient.read");
  EXPECT_TRUE(set.Has("openid"));
  EXPECT_TRUE(set.Has("medgrid/admin"));
  EXPECT_FALSE(set.Has("openi"));
  EXPECT_FALSE(set.Has("openid "));
  EXPECT_FALSE(set.Has("medgrid"));
  EXPECT_FALSE(set.Has("offline_access"));
  EXPECT_FALSE(set.Has("patient/Patient.read"));  // clinical: ask Check()
  EXPECT_FALSE(set.Has(""));
}

TEST(ScopeSet, ParseToleratesRunsOfSpaces) {
  ScopeSet set = ScopeSet::Parse("  openid   patient/Patient.rs  offline_access ");
  EXPECT_TRUE(set.Has("openid"));
  EXPECT_TRUE(set.Has("offline_access"));
  EXPECT_EQ(set.resource_scopes().size(), 1u);
  EXPECT_TRUE(set.rejected().empty());
  EXPECT_FALSE(set.Has(""));
  EXPECT_TRUE(ScopeSet::Parse("").resource_scopes().empty());
}

TEST(ScopeSet, FromListMatchesParse) {
  const std::vector<std::string> list = {
      "openid",       "patient/Observation.rs?category=laboratory", "", "user/*.read", "patient/Observation.rr",
      "medgrid/admin"};
  ScopeSet from_list = ScopeSet::FromList(list);
  ScopeSet parsed = ScopeSet::Parse(
      "openid patient/Observation.rs?category=laboratory user/*.read patient/Observation.rr medgrid/admin");
  EXPECT_EQ(from_list.rejected(), (std::vector<std::string>{"patient/Observation.rr"}));
  EXPECT_EQ(from_list.rejected(), parsed.rejected());
  ASSERT_EQ(from_list.resource_scopes().size(), 2u);
  ASSERT_EQ(parsed.resource_scopes().size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(from_list.resource_scopes()[i].text, parsed.resource_scopes()[i].text);
    EXPECT_EQ(from_list.resource_scopes()[i].filter, parsed.resource_scopes()[i].filter);
  }
  EXPECT_TRUE(from_list.Has("openid"));
  EXPECT_TRUE(from_list.Has("medgrid/admin"));
  EXPECT_FALSE(from_list.Has(""));
  EXPECT_EQ(from_list.Check("Observation", kSearch, kPatientOnly), Grant::kFiltered);
  EXPECT_EQ(from_list.Check("Observation", kSearch, kUserOnly), Grant::kFull);
  EXPECT_EQ(from_list.Check("Observation", kCreate, kAnyContext), Grant::kDenied);
}

TEST(ScopeSet, AnyContext) {
  struct Case {
    std::string scopes;
    bool patient, user, system;
  };
  const Case cases[] = {
      {"patient/Observation.rs", true, false, false},
      {"user/*.cruds openid", false, true, false},
      {"system/Patient.read", false, false, true},
      {"patient/Patient.r system/*.s", true, false, true},
      {"openid launch/patient medgrid/admin", false, false, false},
      {"patient/Observation.sr", false, false, false},  // rejected scopes do not count
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.scopes);
    ScopeSet set = ScopeSet::Parse(c.scopes);
    EXPECT_EQ(set.AnyContext(Context::kPatient), c.patient);
    EXPECT_EQ(set.AnyContext(Context::kUser), c.user);
    EXPECT_EQ(set.AnyContext(Context::kSystem), c.system);
  }
}

}  // namespace
}  // namespace medgrid::auth
