// Idempotency keys without storage: key validation, the canonical query and
// the request fingerprint, and the in-process set of keys in flight.
#include <string>

#include "gtest/gtest.h"
#include "medgrid/core/status.h"
#include "medgrid/resilience/idempotency.h"

namespace medgrid::resilience {
namespace {

void ExpectBadKey(std::string_view header) {
  absl::StatusOr<std::string> key = ParseIdempotencyKey(header);
  ASSERT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument) << header;
  EXPECT_EQ(core::HttpStatusOf(key.status()), 400) << header;
}

TEST(IdempotencyKey, AcceptsTokensAndStructuredFieldStrings) {
  EXPECT_EQ(*ParseIdempotencyKey("8e03978e-40d5-43e8-bc93-6894a57f9324"), "8e03978e-40d5-43e8-bc93-6894a57f9324");
  // The draft's form: a Structured Field string, with its escapes.
  EXPECT_EQ(*ParseIdempotencyKey(R"("8e03978e-40d5")"), "8e03978e-40d5");
  EXPECT_EQ(*ParseIdempotencyKey(R"("a \"quoted\" \\ key")"), R"(a "quoted" \ key)");
  EXPECT_EQ(*ParseIdempotencyKey("  padded\t"), "padded");
  EXPECT_EQ(*ParseIdempotencyKey("inner space"), "inner space");
  EXPECT_EQ(ParseIdempotencyKey(std::string(255, 'k'))->size(), 255u);
}

TEST(IdempotencyKey, RejectsEmptyLongAndControlCharacters) {
  ExpectBadKey("");
  ExpectBadKey("   ");
  ExpectBadKey(R"("")");
  ExpectBadKey(std::string(256, 'k'));
  ExpectBadKey(std::string("\"") + std::string(256, 'k') + "\"");
  ExpectBadKey("a\tb");
  ExpectBadKey(
      std::string("a\x01"
                  "b"));
  ExpectBadKey("a\x7f");
  ExpectBadKey("caf\xc3\xa9");  // non-ASCII
  ExpectBadKey(R"("a"b")");     // a quote inside a quoted string
  ExpectBadKey(R"("a\b")");     // an escape other than \" and \\ .
}

TEST(IdempotencyFingerprint, CanonicalQueryIgnoresOrderAndEncoding) {
  EXPECT_EQ(CanonicalQuery({{"b", "2"}, {"a", "1"}}), CanonicalQuery({{"a", "1"}, {"b", "2"}}));
  EXPECT_EQ(CanonicalQuery({{"identifier", "http://x|1"}}), "identifier=http%3A%2F%2Fx%7C1");
  // Values are encoded, so a delimiter inside one cannot pass for a second parameter.
  EXPECT_NE(CanonicalQuery({{"a", "1&b=2"}}), CanonicalQuery({{"a", "1"}, {"b", "2"}}));
  EXPECT_NE(CanonicalQuery({{"a", "1"}}), CanonicalQuery({{"a", "2"}}));
  EXPECT_EQ(CanonicalQuery({}), "");
}

RequestParts Sample() {
  RequestParts p;
  p.method = "POST";
  p.path = "/fhir/t1/Patient";
  p.query = "";
  p.body = R"({"resourceType":"Patient"})";
  p.prefer_return = "representation";
  p.caller = "Practitioner/1\nsub-1";
  return p;
}

TEST(IdempotencyFingerprint, EveryPartCounts) {
  const std::string base = RequestFingerprint(Sample());
  EXPECT_EQ(base.size(), 64u);  // hex SHA-256
  EXPECT_EQ(base, RequestFingerprint(Sample()));
  for (std::string RequestParts::*part : {&RequestParts::method, &RequestParts::path, &RequestParts::query,
                                          &RequestParts::body, &RequestParts::prefer_return, &RequestParts::caller}) {
    RequestParts changed = Sample();
    changed.*part += "x";
    EXPECT_NE(RequestFingerprint(changed), base);
  }
  // Parts are length-prefixed: moving a boundary changes the hash.
  RequestParts a = Sample();
  RequestParts b = Sample();
  a.method = "POST";
  a.path = "/x";
  b.method = "POS";
  b.path = "T/x";
  EXPECT_NE(RequestFingerprint(a), RequestFingerprint(b));
  // A body that differs in one byte (whitespace included) is another request.
  RequestParts spaced = Sample();
  spaced.body = R"({"resourceType": "Patient"})";
  EXPECT_NE(RequestFingerprint(spaced), base);
}

TEST(InFlightKeys, OneClaimPerTenantAndKeyUntilReleased) {
  InFlightKeys keys;
  {
    InFlightKeys::Claim first = keys.TryClaim("t1", "k");
    ASSERT_TRUE(first);
    EXPECT_FALSE(keys.TryClaim("t1", "k"));
    // Another tenant's key of the same text is another key.
    InFlightKeys::Claim other_tenant = keys.TryClaim("t2", "k");
    EXPECT_TRUE(other_tenant);
    EXPECT_TRUE(keys.TryClaim("t1", "k2"));  // released at once: a temporary
    EXPECT_EQ(keys.size(), 2u);
    InFlightKeys::Claim moved(std::move(first));
    EXPECT_TRUE(moved);
    EXPECT_FALSE(keys.TryClaim("t1", "k"));
  }
  EXPECT_EQ(keys.size(), 0u);
  EXPECT_TRUE(keys.TryClaim("t1", "k"));
}

}  // namespace
}  // namespace medgrid::resilience
