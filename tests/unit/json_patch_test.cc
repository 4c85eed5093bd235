// Tests for JSON Patch: the examples of RFC 6902 appendix A, JSON Pointer
// escaping (RFC 6901), errors and atomicity.
#include "medgrid/fhir/json_patch.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "medgrid/core/status.h"
#include "medgrid/fhir/json.h"

namespace medgrid::fhir {
namespace {

namespace json = boost::json;

json::value Parse(std::string_view text) {
  absl::StatusOr<json::value> v = ParseJson(text);
  EXPECT_TRUE(v.ok()) << v.status() << ": " << text;
  return v.ok() ? *v : json::value();
}

// Applies `patch` to `doc` and expects `expected`.
void ExpectPatched(std::string_view doc, std::string_view patch, std::string_view expected) {
  json::value target = Parse(doc);
  const absl::Status st = ApplyJsonPatch(Parse(patch), target);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(JsonEqual(target, Parse(expected))) << "got " << SerializeJson(target) << "\nwant " << expected;
}

// Applies `patch` to `doc`, expects the given error, and that `doc` is
// unchanged.
void ExpectError(std::string_view doc, std::string_view patch, absl::StatusCode code, int http) {
  const json::value original = Parse(doc);
  json::value target = original;
  const absl::Status st = ApplyJsonPatch(Parse(patch), target);
  EXPECT_EQ(st.code(), code) << st;
  EXPECT_EQ(core::HttpStatusOf(st), http) << st;
  EXPECT_TRUE(JsonEqual(target, original)) << "target changed to " << SerializeJson(target);
}

void ExpectUnprocessable(std::string_view doc, std::string_view patch) {
  ExpectError(doc, patch, absl::StatusCode::kFailedPrecondition, 422);
}

void ExpectMalformed(std::string_view doc, std::string_view patch) {
  ExpectError(doc, patch, absl::StatusCode::kInvalidArgument, 400);
}

// --- RFC 6902 appendix A ---

TEST(JsonPatchTest, A1AddObjectMember) {
  ExpectPatched(R"({"foo":"bar"})", R"([{"op":"add","path":"/baz","value":"qux"}])", R"({"baz":"qux","foo":"bar"})");
}

TEST(JsonPatchTest, A2AddArrayElement) {
  ExpectPatched(R"({"foo":["bar","baz"]})", R"([{"op":"add","path":"/foo/1","value":"qux"}])",
                R"({"foo":["bar","qux","baz"]})");
}

TEST(JsonPatchTest, A3RemoveObjectMember) {
  ExpectPatched(R"({"baz":"qux","foo":"bar"})", R"([{"op":"remove","path":"/baz"}])", R"({"foo":"bar"})");
}

TEST(JsonPatchTest, A4RemoveArrayElement) {
  ExpectPatched(R"({"foo":["bar","qux","baz"]})", R"([{"op":"remove","path":"/foo/1"}])", R"({"foo":["bar","baz"]})");
}

TEST(JsonPatchTest, A5ReplaceValue) {
  ExpectPatched(R"({"baz":"qux","foo":"bar"})", R"([{"op":"replace","path":"/baz","value":"boo"}])",
                R"({"baz":"boo","foo":"bar"})");
}

TEST(JsonPatchTest, A6MoveValue) {
  ExpectPatched(R"({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}})",
                R"([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}])",
                R"({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}})");
}

TEST(JsonPatchTest, A7MoveArrayElement) {
  ExpectPatched(R"({"foo":["all","grass","cows","eat"]})", R"([{"op":"move","from":"/foo/1","path":"/foo/3"}])",
                R"({"foo":["all","cows","eat","grass"]})");
}

TEST(JsonPatchTest, A8TestSuccess) {
  ExpectPatched(R"({"baz":"qux","foo":["a",2,"c"]})",
                R"([{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}])",
                R"({"baz":"qux","foo":["a",2,"c"]})");
}

TEST(JsonPatchTest, A9TestError) {
  ExpectUnprocessable(R"({"baz":"qux"})", R"([{"op":"test","path":"/baz","value":"bar"}])");
}

TEST(JsonPatchTest, A10AddNestedMemberObject) {
  ExpectPatched(R"({"foo":"bar"})", R"([{"op":"add","path":"/child","value":{"grandchild":{}}}])",
                R"({"foo":"bar","child":{"grandchild":{}}})");
}

TEST(JsonPatchTest, A11IgnoreUnrecognizedMembers) {
  ExpectPatched(R"({"foo":"bar"})", R"([{"op":"add","path":"/baz","value":"qux","xyz":123}])",
                R"({"foo":"bar","baz":"qux"})");
}

TEST(JsonPatchTest, A12AddToNonexistentTarget) {
  ExpectUnprocessable(R"({"foo":"bar"})", R"([{"op":"add","path":"/baz/bat","value":"qux"}])");
}

TEST(JsonPatchTest, A14TildeEscapeOrdering) {
  ExpectPatched(R"({"/":9,"~1":10})", R"([{"op":"test","path":"/~01","value":10}])", R"({"/":9,"~1":10})");
  ExpectPatched(R"({"/":9,"~1":10})", R"([{"op":"replace","path":"/~1","value":8}])", R"({"/":8,"~1":10})");
  ExpectPatched(R"({"a/b":{"m~n":1}})", R"([{"op":"remove","path":"/a~1b/m~0n"}])", R"({"a/b":{}})");
}

TEST(JsonPatchTest, A15ComparingStringsAndNumbers) {
  ExpectUnprocessable(R"({"/":9,"~1":10})", R"([{"op":"test","path":"/~01","value":"10"}])");
}

TEST(JsonPatchTest, A16AddArrayValue) {
  ExpectPatched(R"({"foo":["bar"]})", R"([{"op":"add","path":"/foo/-","value":["abc","def"]}])",
                R"({"foo":["bar",["abc","def"]]})");
}

// --- Further cases ---

TEST(JsonPatchTest, AddAtArrayEndAndByIndex) {
  ExpectPatched(R"({"a":[1,2]})", R"([{"op":"add","path":"/a/2","value":3}])", R"({"a":[1,2,3]})");
  ExpectPatched(R"({"a":[1,2]})", R"([{"op":"add","path":"/a/0","value":0}])", R"({"a":[0,1,2]})");
  ExpectPatched(R"({"a":[]})", R"([{"op":"add","path":"/a/-","value":1},{"op":"add","path":"/a/-","value":2}])",
                R"({"a":[1,2]})");
  ExpectUnprocessable(R"({"a":[1,2]})", R"([{"op":"add","path":"/a/3","value":3}])");
  ExpectUnprocessable(R"({"a":[1,2]})", R"([{"op":"add","path":"/a/01","value":3}])");
  ExpectUnprocessable(R"({"a":[1,2]})", R"([{"op":"add","path":"/a/x","value":3}])");
  ExpectUnprocessable(R"({"a":[1,2]})", R"([{"op":"remove","path":"/a/-"}])");
}

TEST(JsonPatchTest, AddReplacesExistingMember) {
  ExpectPatched(R"({"a":1})", R"([{"op":"add","path":"/a","value":2}])", R"({"a":2})");
}

TEST(JsonPatchTest, WholeDocument) {
  ExpectPatched(R"({"a":1})", R"([{"op":"replace","path":"","value":{"b":2}}])", R"({"b":2})");
  ExpectPatched(R"({"a":1})", R"([{"op":"add","path":"","value":[1]}])", R"([1])");
  ExpectPatched(R"({"a":1})", R"([{"op":"test","path":"","value":{"a":1}}])", R"({"a":1})");
  ExpectUnprocessable(R"({"a":1})", R"([{"op":"remove","path":""}])");
}

TEST(JsonPatchTest, EmptyKeyIsAMember) {
  ExpectPatched(R"({"":1})", R"([{"op":"replace","path":"/","value":2}])", R"({"":2})");
}

TEST(JsonPatchTest, MissingTargets) {
  ExpectUnprocessable(R"({"a":1})", R"([{"op":"remove","path":"/b"}])");
  ExpectUnprocessable(R"({"a":1})", R"([{"op":"replace","path":"/b","value":1}])");
  ExpectUnprocessable(R"({"a":[1]})", R"([{"op":"replace","path":"/a/1","value":1}])");
  ExpectUnprocessable(R"({"a":1})", R"([{"op":"test","path":"/b","value":1}])");
  ExpectUnprocessable(R"({"a":1})", R"([{"op":"move","from":"/b","path":"/c"}])");
  ExpectUnprocessable(R"({"a":1})", R"([{"op":"copy","from":"/b","path":"/c"}])");
  ExpectUnprocessable(R"({"a":1})", R"([{"op":"add","path":"/a/b","value":1}])");  // a scalar has no members
}

TEST(JsonPatchTest, CopyIsDeep) {
  json::value target = Parse(R"({"a":{"b":[1]}})");
  ASSERT_TRUE(
      ApplyJsonPatch(Parse(R"([{"op":"copy","from":"/a","path":"/c"},{"op":"add","path":"/c/b/-","value":2}])"), target)
          .ok());
  EXPECT_TRUE(JsonEqual(target, Parse(R"({"a":{"b":[1]},"c":{"b":[1,2]}})"))) << SerializeJson(target);
}

TEST(JsonPatchTest, MoveOntoItselfAndIntoChild) {
  ExpectPatched(R"({"a":{"b":1}})", R"([{"op":"move","from":"/a","path":"/a"}])", R"({"a":{"b":1}})");
  ExpectMalformed(R"({"a":{"b":1}})", R"([{"op":"move","from":"/a","path":"/a/c"}])");
  // A sibling that merely shares a prefix of characters is fine.
  ExpectPatched(R"({"a":1})", R"([{"op":"move","from":"/a","path":"/ab"}])", R"({"ab":1})");
}

TEST(JsonPatchTest, TestUsesFhirJsonEquality) {
  // Objects compare unordered; decimals compare by their text, so 1.50 and
  // 1.5 differ, as FHIR treats precision as significant.
  ExpectPatched(R"({"a":{"x":1,"y":[1.50]}})", R"([{"op":"test","path":"/a","value":{"y":[1.50],"x":1}}])",
                R"({"a":{"x":1,"y":[1.50]}})");
  ExpectUnprocessable(R"({"a":1.50})", R"([{"op":"test","path":"/a","value":1.5}])");
  ExpectUnprocessable(R"({"a":[1,2]})", R"([{"op":"test","path":"/a","value":[2,1]}])");
  ExpectUnprocessable(R"({"a":null})", R"([{"op":"test","path":"/a","value":false}])");
  ExpectPatched(R"({"a":null})", R"([{"op":"test","path":"/a","value":null}])", R"({"a":null})");
}

TEST(JsonPatchTest, DecimalsKeepTheirText) {
  json::value target = Parse(R"({"v":1})");
  ASSERT_TRUE(ApplyJsonPatch(Parse(R"([{"op":"replace","path":"/v","value":2.50}])"), target).ok());
  EXPECT_EQ(SerializeJson(target), R"({"v":2.50})");
}

TEST(JsonPatchTest, MalformedDocuments) {
  const std::string doc = R"({"a":1})";
  ExpectMalformed(doc, R"({"op":"add","path":"/b","value":1})");  // not an array
  ExpectMalformed(doc, R"([1])");
  ExpectMalformed(doc, R"([{"path":"/b","value":1}])");
  ExpectMalformed(doc, R"([{"op":1,"path":"/b","value":1}])");
  ExpectMalformed(doc, R"([{"op":"frobnicate","path":"/b"}])");
  ExpectMalformed(doc, R"([{"op":"add","value":1}])");
  ExpectMalformed(doc, R"([{"op":"add","path":"/b"}])");  // no value
  ExpectMalformed(doc, R"([{"op":"replace","path":"/a"}])");
  ExpectMalformed(doc, R"([{"op":"test","path":"/a"}])");
  ExpectMalformed(doc, R"([{"op":"move","path":"/b"}])");  // no from
  ExpectMalformed(doc, R"([{"op":"copy","path":"/b","from":1}])");
  ExpectMalformed(doc, R"([{"op":"add","path":"b","value":1}])");     // pointer must start with '/'
  ExpectMalformed(doc, R"([{"op":"add","path":"/b~2","value":1}])");  // bad escape
  ExpectMalformed(doc, R"([{"op":"add","path":"/b~","value":1}])");
}

TEST(JsonPatchTest, ErrorsCarryIssueCodes) {
  json::value target = Parse(R"({"a":1})");
  absl::Status st = ApplyJsonPatch(Parse(R"([{"op":"remove","path":"/b"}])"), target);
  EXPECT_EQ(core::IssueCodeOf(st), "processing");
  EXPECT_NE(st.message().find("'/b'"), std::string::npos) << st;
  st = ApplyJsonPatch(Parse(R"([{"op":"remove"}])"), target);
  EXPECT_EQ(core::IssueCodeOf(st), "invalid");
}

TEST(JsonPatchTest, EmptyPatchChangesNothing) { ExpectPatched(R"({"a":1})", "[]", R"({"a":1})"); }

TEST(JsonPatchTest, AllOrNothing) {
  // The first operations succeed on the working copy; the last fails, and
  // the target must come back untouched.
  ExpectUnprocessable(R"({"a":{"b":[1,2,3]},"c":"d"})", R"([
      {"op":"remove","path":"/a/b/0"},
      {"op":"add","path":"/x","value":{"y":1}},
      {"op":"move","from":"/c","path":"/e"},
      {"op":"replace","path":"/a","value":null},
      {"op":"test","path":"/e","value":"not d"}])");
  ExpectMalformed(R"({"a":1})", R"([{"op":"replace","path":"/a","value":2},{"op":"bogus","path":"/a"}])");
}

TEST(JsonPatchTest, OperationsSeeEarlierResults) {
  ExpectPatched(R"({})", R"([
      {"op":"add","path":"/a","value":[]},
      {"op":"add","path":"/a/-","value":{"b":1}},
      {"op":"copy","from":"/a/0","path":"/a/-"},
      {"op":"replace","path":"/a/1/b","value":2},
      {"op":"test","path":"/a","value":[{"b":1},{"b":2}]},
      {"op":"move","from":"/a/1","path":"/a/0"}])",
                R"({"a":[{"b":2},{"b":1}]})");
}

}  // namespace
}  // namespace medgrid::fhir
