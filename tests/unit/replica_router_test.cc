// The read routing rules of a shard's ReplicaRouter on a simulated clock,
// fed with sample results directly (no server): lag from the primary's
// samples, the lag threshold, read-your-writes per tenant and caller, a
// replica that stops answering, and the failover signal.
#include <chrono>
#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "medgrid/core/clock.h"
#include "medgrid/core/request_context.h"
#include "replicas.h"

namespace medgrid::store {
namespace {

using std::chrono::milliseconds;
using Observation = ReplicaRouter::ReplicaObservation;

Observation Replayed(int64_t lsn, bool all_received = true) {
  return Observation{.reachable = true, .standby = true, .replay_lsn = lsn, .replayed_received = all_received};
}

// The reads of `subject` (as a verified token's), until the next one.
void As(const std::string& subject) {
  core::RequestContext& ctx = core::CurrentRequest();
  ctx = {};
  ctx.subject = subject;
}

class ReplicaRouterTest : public ::testing::Test {
 protected:
  ReplicaRouterTest() : clock_(core::FromUnixMicros(1'000'000'000'000)), router_(MakeRouter(clock_)) {}
  ~ReplicaRouterTest() override { core::CurrentRequest() = {}; }

  static ReplicaRouter MakeRouter(const core::Clock& clock) {
    StoreConfig config;  // replica_max_lag 100 ms, monitor interval 100 ms, failover after 3
    // Never connected: the pools open connections lazily, and no test here
    // reads through them or starts the monitor.
    return ReplicaRouter("s0", "host=127.0.0.1 port=1 dbname=s0", {"host=127.0.0.1 port=2 dbname=s0"}, config,
                         clock, nullptr);
  }

  // One round: the primary at `lsn`, the replica having replayed `replay`.
  void Round(int64_t lsn, int64_t replay) {
    router_.RecordPrimary(clock_.Now(), lsn);
    router_.RecordReplica(0, Replayed(replay));
  }
  double Lag() { return router_.Stats().replicas.at(0).lag_seconds; }

  core::SimulatedClock clock_;
  ReplicaRouter router_;
};

TEST_F(ReplicaRouterTest, AReplicaThatHasReplayedEverythingServesReads) {
  Round(100, 100);
  As("reader");
  EXPECT_EQ(router_.Pick("t1"), 0);
  EXPECT_EQ(Lag(), 0);
}

TEST_F(ReplicaRouterTest, LagIsTheTimeSinceTheOldestPrimarySampleNotReplayed) {
  Round(100, 100);
  clock_.Advance(milliseconds(100));
  Round(200, 100);  // the primary moved on; the replica has not
  As("reader");
  EXPECT_EQ(router_.Pick("t1"), 0);  // missing WAL for 0 ms so far
  clock_.Advance(milliseconds(60));
  EXPECT_NEAR(Lag(), 0.060, 1e-9);
  EXPECT_EQ(router_.Pick("t1"), 0);  // under 100 ms
  clock_.Advance(milliseconds(40));
  Round(300, 150);  // replayed part of it: still missing the sample of 200
  EXPECT_NEAR(Lag(), 0.100, 1e-9);
  EXPECT_EQ(router_.Pick("t1"), -1);  // 100 ms and more: the primary
  clock_.Advance(milliseconds(500));
  Round(300, 150);
  EXPECT_NEAR(Lag(), 0.600, 1e-9);
  EXPECT_EQ(router_.Pick("t1"), -1);
  // Caught up: back to the replica at once.
  clock_.Advance(milliseconds(100));
  Round(300, 300);
  EXPECT_EQ(Lag(), 0);
  EXPECT_EQ(router_.Pick("t1"), 0);
}

TEST_F(ReplicaRouterTest, AWriterReadsThePrimaryUntilTheReplicaHasReplayedPastItsWrite) {
  Round(100, 100);
  clock_.Advance(milliseconds(10));
  As("writer");
  router_.NoteWrite("t1", CurrentCaller());
  EXPECT_EQ(router_.Pick("t1"), -1);  // no sample after the write yet
  As("reader");
  EXPECT_EQ(router_.Pick("t1"), 0);   // another caller is not held back
  As("writer");
  EXPECT_EQ(router_.Pick("t2"), 0);   // nor is the writer in another tenant
  clock_.Advance(milliseconds(10));
  Round(200, 100);  // a sample after the write, not replayed yet
  EXPECT_EQ(router_.Pick("t1"), -1);
  clock_.Advance(milliseconds(10));
  Round(200, 200);  // replayed: the replica holds the write
  EXPECT_EQ(router_.Pick("t1"), 0);
}

TEST_F(ReplicaRouterTest, ReadsOutsideARequestGoToThePrimary) {
  Round(100, 100);
  core::CurrentRequest() = {};
  EXPECT_EQ(router_.Pick("t1"), -1);
}

TEST_F(ReplicaRouterTest, AReplicaThatFailsIsSkippedUntilASampleFindsItAgain) {
  Round(100, 100);
  As("reader");
  router_.ReportFailure(0);
  EXPECT_EQ(router_.Pick("t1"), -1);
  router_.RecordPrimary(clock_.Now(), 100);
  router_.RecordReplica(0, Observation{});  // unreachable
  EXPECT_EQ(router_.Pick("t1"), -1);
  EXPECT_FALSE(router_.Stats().replicas.at(0).reachable);
  Round(100, 100);
  EXPECT_EQ(router_.Pick("t1"), 0);
  // A node that left recovery (promoted) is no replica.
  router_.RecordReplica(0, Observation{.reachable = true, .standby = false, .replay_lsn = 0,
                                       .replayed_received = false});
  EXPECT_EQ(router_.Pick("t1"), -1);
}

TEST_F(ReplicaRouterTest, WithoutAWritablePrimaryAStandbyThatReplayedAllItReceivedServesEveryone) {
  Round(100, 100);
  As("writer");
  router_.NoteWrite("t1", CurrentCaller());
  for (int i = 0; i < 2; ++i) {
    clock_.Advance(milliseconds(100));
    router_.RecordPrimary(clock_.Now(), std::nullopt);
  }
  EXPECT_TRUE(router_.primary_writable());  // two failed samples are not a failover
  clock_.Advance(milliseconds(100));
  router_.RecordPrimary(clock_.Now(), std::nullopt);
  EXPECT_FALSE(router_.primary_writable());  // the third is
  router_.RecordReplica(0, Replayed(100, /*all_received=*/false));
  EXPECT_EQ(router_.Pick("t1"), -1);  // it still has WAL to replay
  router_.RecordReplica(0, Replayed(150, /*all_received=*/true));
  EXPECT_EQ(router_.Pick("t1"), 0);  // read-only mode: the writer too
  // A primary answers again.
  router_.RecordPrimary(clock_.Now(), 150);
  EXPECT_TRUE(router_.primary_writable());
}

}  // namespace
}  // namespace medgrid::store
