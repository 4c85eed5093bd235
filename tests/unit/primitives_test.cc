// Tests for the R4 primitive format checks (datatypes.html).
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "medgrid/fhir/validator.h"

namespace medgrid::fhir {
namespace {

using Check = bool (*)(std::string_view);

void ExpectValid(Check check, std::initializer_list<std::string_view> values) {
  for (std::string_view v : values) EXPECT_TRUE(check(v)) << "should be valid: '" << v << "'";
}

void ExpectInvalid(Check check, std::initializer_list<std::string_view> values) {
  for (std::string_view v : values) EXPECT_FALSE(check(v)) << "should be invalid: '" << v << "'";
}

TEST(PrimitivesTest, Id) {
  ExpectValid(IsValidId, {"a", "example", "A-1.b", "123", "-", ".", std::string(64, 'x')});
  ExpectInvalid(IsValidId, {"", std::string(65, 'x'), "a b", "a_b", "a/b", "é", "a\n", "a:b"});
}

TEST(PrimitivesTest, Date) {
  ExpectValid(IsValidDate, {"2020", "2020-01", "2020-12-31", "0001", "9999-12-31", "2000-02-29", "2024-02-29"});
  ExpectInvalid(IsValidDate, {
                                 "",
                                 "0000",                  // no year zero
                                 "20",                    // too short
                                 "20201",                 // neither YYYY nor YYYY-MM
                                 "2020-13",               // month
                                 "2020-00",               // month
                                 "2020-1",                // month needs two digits
                                 "2020-01-00",            // day
                                 "2020-01-32",            // day
                                 "2020-04-31",            // April has 30 days
                                 "2021-02-29",            // not a leap year
                                 "1900-02-29",            // century, not a leap year
                                 "2020/01/01",            // separator
                                 "2020-01-01T10:00:00Z",  // a dateTime
                                 "2020-01-01 ",           // trailing space
                                 "-2020",
                             });
}

TEST(PrimitivesTest, DateTime) {
  ExpectValid(IsValidDateTime, {
                                   "2020",
                                   "2020-06",
                                   "2020-06-15",
                                   "2020-06-15T10:20:30Z",
                                   "2020-06-15T10:20:30.1Z",
                                   "2020-06-15T10:20:30.123456789+05:30",
                                   "2020-06-15T00:00:00-14:00",
                                   "2020-06-15T23:59:60+14:00",  // leap second, furthest zone
                                   "2020-06-15T10:20:30+13:59",
                               });
  ExpectInvalid(IsValidDateTime, {
                                     "",
                                     "2020-06-15T",
                                     "2020-06-15T10:20",           // seconds are required
                                     "2020-06-15T10:20:30",        // with a time, the zone is required
                                     "2020-06-15T24:00:00Z",       // hour
                                     "2020-06-15T10:60:00Z",       // minute
                                     "2020-06-15T10:20:61Z",       // second
                                     "2020-06-15T10:20:30.Z",      // empty fraction
                                     "2020-06-15T10:20:30+14:30",  // beyond +14:00
                                     "2020-06-15T10:20:30+15:00",
                                     "2020-06-15T10:20:30+05",  // zone needs minutes
                                     "2020-06-15T10:20:30+0530",
                                     "2020-06-15T10:20:30z",
                                     "2020-06-15T10:20:30ZZ",
                                     "2020-06-15 10:20:30Z",
                                     "2020-02-30T10:20:30Z",
                                     "2020-06T10:20:30Z",
                                 });
}

TEST(PrimitivesTest, Instant) {
  ExpectValid(IsValidInstant, {"2015-02-07T13:28:17.239+02:00", "2017-01-01T00:00:00Z", "2017-01-01T00:00:00.000Z"});
  ExpectInvalid(IsValidInstant, {"", "2017", "2017-01", "2017-01-01", "2017-01-01T00:00:00", "2017-01-01T00:00Z",
                                 "2017-13-01T00:00:00Z"});
}

TEST(PrimitivesTest, Time) {
  ExpectValid(IsValidTime, {"00:00:00", "23:59:59", "23:59:60", "12:30:00.5", "12:30:00.123456"});
  ExpectInvalid(IsValidTime, {"", "24:00:00", "12:60:00", "12:00:61", "12:00", "1:00:00", "12:00:00.", "12:00:00Z",
                              "12:00:00+01:00", "12-00-00", "12:00:00 "});
}

TEST(PrimitivesTest, Code) {
  ExpectValid(IsValidCode, {"a", "final", "entered-in-error", "mm[Hg]", "a b", "a b c", "<", "x.y/z"});
  ExpectInvalid(IsValidCode, {"", " ", " a", "a ", "a  b", "a\tb", "a\nb", "\ta"});
}

TEST(PrimitivesTest, Uri) {
  ExpectValid(IsValidUri,
              {"http://hl7.org/fhir", "urn:oid:1.2.3", "#local", "Patient/1", "a", "http://x.org/ValueSet/v|1.0"});
  ExpectInvalid(IsValidUri, {"", " ", "http://a b", "http://a\tb", "http://a\n", " http://a"});
}

TEST(PrimitivesTest, Oid) {
  ExpectValid(IsValidOid, {"urn:oid:1.2", "urn:oid:2.16.840.1.113883.4.642.1.1", "urn:oid:0.0", "urn:oid:1.0.10"});
  ExpectInvalid(IsValidOid, {"", "urn:oid:", "urn:oid:1", "urn:oid:3.1", "urn:oid:1.02", "urn:oid:1..2", "urn:oid:1.2.",
                             "1.2.3", "urn:OID:1.2", "urn:oid:1.2a", "urn:oid:.1"});
}

TEST(PrimitivesTest, Uuid) {
  ExpectValid(IsValidUuid,
              {"urn:uuid:c757873d-ec9a-4326-a141-556f43239520", "urn:uuid:00000000-0000-0000-0000-000000000000"});
  ExpectInvalid(IsValidUuid, {"", "urn:uuid:", "c757873d-ec9a-4326-a141-556f43239520",
                              "urn:uuid:C757873D-EC9A-4326-A141-556F43239520",   // R4 requires lowercase
                              "urn:uuid:c757873d-ec9a-4326-a141-556f4323952",    // short
                              "urn:uuid:c757873d-ec9a-4326-a141-556f432395200",  // long
                              "urn:uuid:c757873dec9a-4326-a141-556f43239520-",   // dashes misplaced
                              "urn:uuid:g757873d-ec9a-4326-a141-556f43239520"});
}

TEST(PrimitivesTest, Base64) {
  ExpectValid(IsValidBase64, {"aGVsbG8=", "aGVsbG8h", "aGVsbA==", "AAAA", "aGVs\nbG8h", " aGVs bG8h ", "+/+/"});
  ExpectInvalid(IsValidBase64, {"", "   ", "abc", "abcde", "a===", "ab=c", "=abc", "aGVsbG8=aGVs", "ab-_", "ab*c"});
}

}  // namespace
}  // namespace medgrid::fhir
