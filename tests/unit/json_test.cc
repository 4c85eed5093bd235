// Tests for FHIR JSON parsing and serialization: decimal precision, strict
// input checks and the nesting limit.
#include "medgrid/fhir/json.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "medgrid/core/status.h"

namespace medgrid::fhir {
namespace {

namespace json = boost::json;

std::string RoundTrip(std::string_view text) {
  absl::StatusOr<json::value> v = ParseJson(text);
  EXPECT_TRUE(v.ok()) << v.status() << ": " << text;
  return v.ok() ? SerializeJson(*v) : std::string();
}

void ExpectRejected(std::string_view text, const JsonLimits& limits = {}) {
  absl::StatusOr<json::value> v = ParseJson(text, limits);
  ASSERT_FALSE(v.ok()) << "accepted: " << text;
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core::HttpStatusOf(v.status()), 400);
  EXPECT_EQ(core::IssueCodeOf(v.status()), "structure");
}

std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(JsonTest, DecimalsKeepTheirPrecision) {
  EXPECT_EQ(RoundTrip(R"({"value":1.50})"), R"({"value":1.50})");
  EXPECT_EQ(RoundTrip(R"([0.10,-0.0,1.000000000000000000001,1e3,1.5E-7,100.00])"),
            R"([0.10,-0.0,1.000000000000000000001,1e3,1.5E-7,100.00])");
  // A decimal with more digits than a double holds survives untouched.
  EXPECT_EQ(RoundTrip("[3.14159265358979323846264338327950288]"), "[3.14159265358979323846264338327950288]");
}

TEST(JsonTest, DecimalValues) {
  absl::StatusOr<json::value> v = ParseJson(R"({"d":1.50,"i":2,"s":"1.50","big":18446744073709551615})");
  ASSERT_TRUE(v.ok()) << v.status();
  const json::object& o = v->get_object();
  EXPECT_TRUE(IsDecimal(o.at("d")));
  EXPECT_EQ(DecimalText(o.at("d")), "1.50");
  EXPECT_TRUE(IsNumber(o.at("d")));
  // Integers stay integers; strings that look like numbers stay strings.
  EXPECT_TRUE(o.at("i").is_int64());
  EXPECT_FALSE(IsDecimal(o.at("i")));
  EXPECT_TRUE(IsNumber(o.at("i")));
  EXPECT_FALSE(IsDecimal(o.at("s")));
  EXPECT_FALSE(IsNumber(o.at("s")));
  EXPECT_TRUE(o.at("big").is_uint64());
  EXPECT_TRUE(IsNumber(o.at("big")));

  const json::value made = MakeDecimal("2.500");
  EXPECT_TRUE(IsDecimal(made));
  EXPECT_EQ(SerializeJson(made), "2.500");
}

TEST(JsonTest, EqualityTreatsDecimalsByTextAndObjectsUnordered) {
  auto parse = [](std::string_view t) { return *ParseJson(t); };
  EXPECT_TRUE(JsonEqual(parse(R"({"a":1,"b":[1.50,"x"]})"), parse(R"({"b":[1.50,"x"],"a":1})")));
  EXPECT_FALSE(JsonEqual(parse("1.50"), parse("1.5")));
  EXPECT_FALSE(JsonEqual(parse("[1,2]"), parse("[2,1]")));
  EXPECT_FALSE(JsonEqual(parse(R"({"a":1})"), parse(R"({"a":1,"b":2})")));
  EXPECT_FALSE(JsonEqual(parse(R"("1.5")"), parse("1.5")));
}

TEST(JsonTest, StringsAndEscapesRoundTrip) {
  EXPECT_EQ(RoundTrip(R"({"s":"a\"b\\c\nd\te\u00e9\u20ac"})"), "{\"s\":\"a\\\"b\\\\c\\nd\\te\xc3\xa9\xe2\x82\xac\"}");
  EXPECT_EQ(RoundTrip(R"([true,false,null,-1,0,9223372036854775807])"), "[true,false,null,-1,0,9223372036854775807]");
  EXPECT_EQ(RoundTrip(R"({})"), "{}");
}

TEST(JsonTest, ControlCharactersAreRejected) {
  ExpectRejected("{\"s\":\"a\\u0001b\"}");  // escaped
  ExpectRejected("{\"s\":\"a\\u0000b\"}");
  ExpectRejected("{\"s\":\"a\\u001fb\"}");
  ExpectRejected("{\"a\\u0002\":1}");  // in a key
  // The decimal marker itself can therefore never come from the wire.
  ExpectRejected("[\"\\u00011.5\"]");
  // Tab, newline and carriage return are allowed.
  EXPECT_TRUE(ParseJson(R"({"s":"a\tb\nc\rd"})").ok());
}

TEST(JsonTest, InvalidUtf8IsRejected) {
  ExpectRejected("{\"s\":\"\xff\"}");
  ExpectRejected("{\"s\":\"\xc3\"}");          // truncated sequence
  ExpectRejected("{\"s\":\"\xc0\xaf\"}");      // overlong
  ExpectRejected("{\"s\":\"\xed\xa0\x80\"}");  // UTF-16 surrogate
  ExpectRejected("{\"\x80\":1}");              // in a key
  EXPECT_TRUE(ParseJson("{\"s\":\"\xc3\xa9\xf0\x9f\x98\x80\"}").ok());
}

TEST(JsonTest, TruncatedAndMalformedJsonIsRejected) {
  for (std::string_view text : {"", "{", R"({"a":)", R"({"a":1)", R"({"a":1,)", "[1,2", R"("abc)", "tru", "1.",
                                R"({"a":1}})", R"({"a":1} x)", "{a:1}", "[1,]", "'a'", "NaN", "01"}) {
    ExpectRejected(text);
  }
  const std::string full = R"({"resourceType":"Patient","name":[{"family":"Doe"}]})";
  for (std::size_t n = 0; n < full.size(); ++n) ExpectRejected(full.substr(0, n));
}

TEST(JsonTest, DepthLimit) {
  EXPECT_TRUE(ParseJson(Nested(64)).ok());
  ExpectRejected(Nested(65));
  JsonLimits limits;
  limits.max_depth = 3;
  EXPECT_TRUE(ParseJson(Nested(3), limits).ok());
  ExpectRejected(Nested(4), limits);
  ExpectRejected(R"({"a":{"b":{"c":{}}}})", limits);
  // Far beyond the limit is rejected without recursing that deep.
  ExpectRejected(Nested(100000));
}

}  // namespace
}  // namespace medgrid::fhir
