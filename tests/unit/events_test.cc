// Change events without a broker: their wire form and the dedupers that turn
// at-least-once delivery into an exactly-once effect.
#include <gtest/gtest.h>

#include "medgrid/core/clock.h"
#include "medgrid/events/change.h"
#include "medgrid/events/dedupe.h"

namespace medgrid::events {
namespace {

ChangeEvent Sample() {
  ChangeEvent e;
  e.tenant = "t1";
  e.type = "Observation";
  e.id = "o-1";
  e.version = 7;
  e.operation = "patch";
  e.changed_at = core::FromUnixMicros(1764151200123456);
  e.shard = "medgrid_shard_1";
  e.outbox_seq = 42;
  return e;
}

TEST(ChangeEvent, KeyAndIdNameTheResourceAndVersion) {
  EXPECT_EQ(Sample().Key(), "t1/Observation/o-1");
  EXPECT_EQ(Sample().EventId(), "t1/Observation/o-1/_history/7");
}

TEST(ChangeEvent, RoundTripsThroughProtobufToTheMicrosecond) {
  for (bool with_body : {false, true}) {
    ChangeEvent e = Sample();
    if (with_body) e.body = R"({"resourceType":"Observation","id":"o-1"})";
    auto back = DecodeChange(EncodeChange(e));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->EventId(), e.EventId());
    EXPECT_EQ(back->operation, "patch");
    EXPECT_EQ(core::ToUnixMicros(back->changed_at), 1764151200123456);
    EXPECT_EQ(back->body, e.body);
    EXPECT_EQ(back->shard, "medgrid_shard_1");
    EXPECT_EQ(back->outbox_seq, 42);
  }
  ChangeEvent before_epoch = Sample();
  before_epoch.changed_at = core::FromUnixMicros(-1500001);
  EXPECT_EQ(core::ToUnixMicros(DecodeChange(EncodeChange(before_epoch))->changed_at), -1500001);
}

TEST(ChangeEvent, DecodeRejectsWhatIsNotAChange) {
  EXPECT_FALSE(DecodeChange("not protobuf at all \xff\xff").ok());
  EXPECT_FALSE(DecodeChange("").ok()) << "an empty message has no tenant";
  ChangeEvent no_version = Sample();
  no_version.version = 0;
  EXPECT_FALSE(DecodeChange(EncodeChange(no_version)).ok());
}

TEST(ChangeEvent, OperationsFollowTheHttpMethod) {
  EXPECT_EQ(OperationOf("POST"), "create");
  EXPECT_EQ(OperationOf("PUT"), "update");
  EXPECT_EQ(OperationOf("PATCH"), "patch");
  EXPECT_EQ(OperationOf("DELETE"), "delete");
}

TEST(VersionDeduper, AcceptsOnlyNewerVersionsPerKey) {
  VersionDeduper d;
  EXPECT_TRUE(d.Accept("a", 1));
  EXPECT_FALSE(d.Accept("a", 1));
  EXPECT_TRUE(d.Fresh("a", 2));
  EXPECT_TRUE(d.Accept("a", 2));
  EXPECT_FALSE(d.Accept("a", 1));
  EXPECT_TRUE(d.Accept("b", 1)) << "keys are independent";
}

TEST(VersionDeduper, ForgetsTheOldestKeysBeyondItsCapacity) {
  VersionDeduper d(2);
  EXPECT_TRUE(d.Accept("a", 5));
  EXPECT_TRUE(d.Accept("b", 5));
  EXPECT_TRUE(d.Accept("c", 5));
  EXPECT_TRUE(d.Accept("a", 5)) << "a was forgotten";
  EXPECT_FALSE(d.Accept("c", 5));
}

TEST(IdDeduper, AcceptsAnIdOnceWithinItsCapacity) {
  IdDeduper d(2);
  EXPECT_TRUE(d.Accept("x"));
  EXPECT_FALSE(d.Accept("x"));
  EXPECT_TRUE(d.Accept("y"));
  EXPECT_TRUE(d.Accept("z"));
  EXPECT_TRUE(d.Accept("x")) << "x was forgotten";
}

}  // namespace
}  // namespace medgrid::events
