// The audit spool (framing, reading from the committed offset, recovery
// after a crash, the size bound, segments) and the AuditEvent resources.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "boost/json.hpp"
#include "medgrid/audit/audit_event.h"
#include "medgrid/audit/audit_index.h"
#include "medgrid/audit/spool.h"

namespace medgrid::audit {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

class SpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("medgrid-spool-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::unique_ptr<Spool> Open(uint64_t max_bytes = 1 << 20, uint64_t segment_bytes = 1 << 16) {
    auto s = Spool::Open({dir_.string(), max_bytes, segment_bytes});
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
  std::vector<fs::path> Segments() {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().extension() == ".seg") out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  fs::path dir_;
};

TEST(Crc32, KnownValue) { EXPECT_EQ(Crc32("123456789"), 0xCBF43926u); }

TEST_F(SpoolTest, ReadsFromTheCommittedOffsetAcrossReopens) {
  auto spool = Open();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(spool->Append("record " + std::to_string(i)).ok());
  ASSERT_TRUE(spool->Append("").ok());  // an empty record is a record
  auto batch = spool->Read(4);
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->records, (std::vector<std::string>{"record 0", "record 1", "record 2", "record 3"}));
  // Reading again without committing gives the same records.
  EXPECT_EQ(spool->Read(4)->records, batch->records);
  ASSERT_TRUE(spool->Commit(batch->end).ok());
  EXPECT_EQ(spool->Read(1)->records, std::vector<std::string>{"record 4"});
  const uint64_t written = spool->written();
  spool.reset();

  spool = Open();
  EXPECT_EQ(spool->written(), written);
  auto rest = spool->Read(100);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->records.size(), 7u);
  EXPECT_EQ(rest->records.front(), "record 4");
  EXPECT_EQ(rest->records.back(), "");
  ASSERT_TRUE(spool->Commit(rest->end).ok());
  EXPECT_TRUE(spool->Read(100)->records.empty());
  EXPECT_FALSE(spool->Commit(rest->end + 1).ok());
  EXPECT_FALSE(spool->Commit(0).ok());
}

TEST_F(SpoolTest, OneProcessAtATime) {
  auto spool = Open();
  const pid_t child = ::fork();
  if (child == 0) {
    // Another process: the lock is held.
    auto other = Spool::Open({dir_.string()});
    ::_exit(!other.ok() && other.status().code() == absl::StatusCode::kFailedPrecondition ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  spool.reset();
  EXPECT_TRUE(Spool::Open({dir_.string()}).ok());  // free again once closed
}

TEST_F(SpoolTest, ARecordCutShortByACrashIsDropped) {
  {
    auto spool = Open();
    ASSERT_TRUE(spool->Append("whole").ok());
    ASSERT_TRUE(spool->Append("also whole").ok());
  }
  // A crash in the middle of writing a third record: its header and a few bytes.
  const fs::path seg = Segments().back();
  const uint64_t whole = fs::file_size(seg);
  {
    std::ofstream out(seg, std::ios::binary | std::ios::app);
    out.write("\x20\x00\x00\x00\x01\x02\x03\x04par", 11);
  }
  auto spool = Open();
  EXPECT_EQ(fs::file_size(seg), whole);
  EXPECT_EQ(spool->Read(10)->records, (std::vector<std::string>{"whole", "also whole"}));
  ASSERT_TRUE(spool->Append("after").ok());
  EXPECT_EQ(spool->Read(10)->records.back(), "after");
}

TEST_F(SpoolTest, AFullSpoolRefusesAppendsUntilCommitted) {
  auto spool = Open(/*max_bytes=*/100);
  const std::string record(40, 'x');  // 48 bytes framed
  ASSERT_TRUE(spool->Append(record).ok());
  ASSERT_TRUE(spool->Append(record).ok());
  EXPECT_EQ(spool->Append(record).code(), absl::StatusCode::kResourceExhausted);
  auto batch = spool->Read(1);
  ASSERT_TRUE(spool->Commit(batch->end).ok());
  EXPECT_TRUE(spool->Append(record).ok());
}

TEST_F(SpoolTest, SegmentsRollAndGoOnceCommitted) {
  auto spool = Open(/*max_bytes=*/1 << 20, /*segment_bytes=*/1000);
  const std::string record(92, 'r');  // 100 bytes framed: 10 to a segment
  for (int i = 0; i < 35; ++i) ASSERT_TRUE(spool->Append(record + std::to_string(i % 10)).ok());
  EXPECT_EQ(Segments().size(), 4u);
  auto batch = spool->Read(25);
  ASSERT_EQ(batch->records.size(), 25u);
  EXPECT_EQ(batch->records[24], record + "4");
  ASSERT_TRUE(spool->Commit(batch->end).ok());
  EXPECT_EQ(Segments().size(), 2u);  // the first two were wholly handled
  spool.reset();
  spool = Open(1 << 20, 1000);
  auto rest = spool->Read(100);
  ASSERT_EQ(rest->records.size(), 10u);
  EXPECT_EQ(rest->records[0], record + "5");
}

TEST(AuditEvent, ReadOfAPatientsObservation) {
  Interaction in;
  in.tenant = "t1";
  in.interaction = "read";
  in.action = 'R';
  in.http_status = 200;
  in.type = "Observation";
  in.id = "o1";
  in.resources = {"Observation/o1"};
  in.patients = PatientReferences(R"({"subject":{"reference":"Patient/p1"},"performer":[{"reference":"Patient/p1"},)"
                                   R"({"reference":"Practitioner/x"},{"reference":"Patient/p2/_history/3"}]})");
  in.agent_address = "10.0.0.7";
  in.purpose_of_use = {"TREAT"};
  in.recorded = core::FromUnixMicros(1'700'000'000'000'000);
  EXPECT_EQ(in.patients, std::vector<std::string>{"Patient/p1"});
  const json::value e = json::parse(AuditEventJson(in, "11111111-2222-4333-8444-555555555555", "medgrid test"));
  EXPECT_EQ(e.at("resourceType"), "AuditEvent");
  EXPECT_EQ(e.at("id"), "11111111-2222-4333-8444-555555555555");
  EXPECT_EQ(e.at("type").at("code"), "rest");
  EXPECT_EQ(e.at("subtype").at(0).at("code"), "read");
  EXPECT_EQ(e.at("action"), "R");
  EXPECT_EQ(e.at("outcome"), "0");
  EXPECT_EQ(e.at("recorded"), "2023-11-14T22:13:20.000Z");
  EXPECT_EQ(e.at("agent").at(0).at("network").at("address"), "10.0.0.7");
  EXPECT_EQ(e.at("agent").at(0).at("purposeOfUse").at(0).at("coding").at(0).at("code"), "TREAT");
  EXPECT_EQ(e.at("source").at("site"), "t1");
  const json::array& entity = e.at("entity").as_array();
  ASSERT_EQ(entity.size(), 2u);
  EXPECT_EQ(entity[0].at("what").at("reference"), "Patient/p1");
  EXPECT_EQ(entity[0].at("role").at("code"), "1");
  EXPECT_EQ(entity[1].at("what").at("reference"), "Observation/o1");
  EXPECT_EQ(entity[1].at("role").at("code"), "4");
}

// A break-the-glass grant: a DICOM security alert, Emergency Override
// Started, with the purpose of use and the clinician's reason.
TEST(AuditEvent, EmergencyOverrideIsASecurityAlertWithItsReason) {
  Interaction in;
  in.tenant = "t1";
  in.interaction = "break-the-glass";
  in.action = 'E';
  in.patients = {"Patient/p1"};
  in.agent = "Practitioner/d1";
  in.purpose_of_use = {"BTG"};
  in.emergency_override = true;
  in.override_reason = "unconscious in ED";
  in.recorded = core::FromUnixMicros(1'700'000'000'000'000);
  const json::value e = json::parse(AuditEventJson(in, NewEventId(in.recorded), "medgrid test"));
  EXPECT_EQ(e.at("type").at("system"), "http://dicom.nema.org/resources/ontology/DCM");
  EXPECT_EQ(e.at("type").at("code"), "110113");
  EXPECT_EQ(e.at("subtype").at(0).at("code"), "110127");
  EXPECT_EQ(e.at("agent").at(0).at("who").at("reference"), "Practitioner/d1");
  EXPECT_EQ(e.at("agent").at(0).at("purposeOfUse").at(0).at("coding").at(0).at("code"), "BTG");
  const json::array& entity = e.at("entity").as_array();
  ASSERT_EQ(entity.size(), 2u);
  EXPECT_EQ(entity[0].at("what").at("reference"), "Patient/p1");
  EXPECT_EQ(entity[1].at("detail").at(0).at("valueString"), "unconscious in ED");
  // An ordinary interaction is not one.
  in.emergency_override = false;
  const json::value plain = json::parse(AuditEventJson(in, NewEventId(in.recorded), "medgrid test"));
  EXPECT_EQ(plain.at("type").at("code"), "rest");
  for (const json::value& en : plain.at("entity").as_array()) EXPECT_FALSE(en.as_object().contains("detail"));
}

TEST(AuditEvent, FailedSearchKeepsItsQuery) {
  Interaction in;
  in.tenant = "t1";
  in.interaction = "search-type";
  in.action = 'E';
  in.http_status = 400;
  in.type = "Patient";
  in.query = "name=smith&bogus=1";
  const json::value e = json::parse(AuditEventJson(in, NewEventId(in.recorded), "medgrid test"));
  EXPECT_EQ(e.at("outcome"), "4");
  EXPECT_EQ(e.at("agent").at(0).at("who").at("display"), "anonymous");
  const json::value& query = e.at("entity").at(0);
  EXPECT_EQ(query.at("role").at("code"), "24");
  EXPECT_EQ(query.at("query"), "bmFtZT1zbWl0aCZib2d1cz0x");  // base64 of the query string
  const core::TimePoint t = core::FromUnixMicros(1'700'000'000'000'000);
  EXPECT_NE(NewEventId(t), NewEventId(t));
  EXPECT_EQ(NewEventId(t).size(), 36u);
  EXPECT_LT(NewEventId(t), NewEventId(t + std::chrono::milliseconds(1))) << "later ids sort later";
  EXPECT_EQ(NewEventId(t).substr(14, 1), "7") << "UUID version 7";
}

TEST(AuditEvent, AnAgentThatIsAReferenceIsRecordedAndIndexedAsOne) {
  EXPECT_TRUE(IsReference("Practitioner/p-1"));
  EXPECT_TRUE(IsReference("Device/app.7"));
  EXPECT_FALSE(IsReference("practitioner/p1"));
  EXPECT_FALSE(IsReference("Practitioner/"));
  EXPECT_FALSE(IsReference("/p1"));
  EXPECT_FALSE(IsReference("Practitioner/p 1"));
  EXPECT_FALSE(IsReference("Dr. Who"));
  Interaction in;
  in.tenant = "t1";
  in.interaction = "read";
  in.agent = "Practitioner/p-1";
  in.patients = {"Patient/a", "Patient/b"};
  in.recorded = core::FromUnixMicros(1'700'000'000'000'000);
  const json::value e = json::parse(AuditEventJson(in, NewEventId(in.recorded), "medgrid test"));
  EXPECT_EQ(e.at("agent").at(0).at("who").at("reference"), "Practitioner/p-1");
  EventFacts back;
  ASSERT_TRUE(ParseFactsLine(FactsLine(FactsOf(in, "e1")), back));
  EXPECT_EQ(back.agent, "Practitioner/p-1");
  EXPECT_EQ(back.patients, in.patients);
  EXPECT_EQ(back.recorded_us, 1'700'000'000'000'000);
  // A line from a spool written before agents were indexed still reads.
  ASSERT_TRUE(ParseFactsLine("17\tR\t0\tread\t10.0.0.1\tPatient/a", back));
  EXPECT_EQ(back.agent, "");
  EXPECT_EQ(back.address, "10.0.0.1");
  EXPECT_FALSE(ParseFactsLine("17\tR\t0\tread", back));
}

}  // namespace
}  // namespace medgrid::audit
