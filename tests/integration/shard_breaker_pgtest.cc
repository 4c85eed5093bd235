// The circuit breaker of a shard primary's pool (libs/store/src/pg_pool.h):
// which failures count, and when it opens, refuses and lets probes through.
// Connection failures come from a port nothing listens on; statement errors
// from the test PostgreSQL (MEDGRID_TEST_PG_DSN). Time is a simulated clock.
#include <cstdlib>

#include "boost/asio/ip/tcp.hpp"
#include "gtest/gtest.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/http_errors.h"
#include "pg_pool.h"

namespace medgrid::store {
namespace {

using resilience::BreakerState;
using std::chrono::milliseconds;
using std::chrono::seconds;

// A port that was free a moment ago: connecting to it is refused.
uint16_t ClosedPort() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

std::string TestDsn() {
  const char* dsn = std::getenv("MEDGRID_TEST_PG_DSN");
  return dsn != nullptr ? dsn : "host=127.0.0.1 port=55432 user=postgres dbname=postgres";
}

resilience::BreakerSettings Settings(int threshold) {
  resilience::BreakerSettings s = resilience::ForDependency("db");
  s.failure_threshold = threshold;
  s.success_threshold = 1;
  s.open_timeout = seconds(30);
  return s;
}

// Raises `sqlstate` on the server.
absl::Status Raise(PgPool& pool, const std::string& sqlstate) {
  return WithConnection(pool, [&](pqxx::connection_base& conn) -> absl::Status {
    pqxx::nontransaction tx(conn);
    tx.exec(core::StrCat("DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '", sqlstate, "'; END $$"));
    return absl::OkStatus();
  });
}

TEST(ShardBreaker, OpensAfterExactlyThresholdConnectFailuresThenRefusesWithoutConnecting) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  ShardBreaker breaker("s0", Settings(3), clock);
  EXPECT_EQ(breaker.breaker().settings().name, "db:s0");
  PgPool pool("s0", core::StrCat("host=127.0.0.1 port=", ClosedPort(), " user=postgres connect_timeout=5"), 2,
              milliseconds(1000), nullptr, &breaker);
  for (int i = 1; i <= 2; ++i) {
    EXPECT_EQ(pool.Acquire().status().code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(breaker.breaker().state(), BreakerState::kClosed) << "after failure " << i;
  }
  EXPECT_EQ(pool.Acquire().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(breaker.breaker().state(), BreakerState::kOpen);
  EXPECT_EQ(breaker.breaker().counters().failures, 3u);

  clock.Advance(milliseconds(10500));
  absl::Status refused = pool.Acquire().status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.message().find("Database shard s0 is unavailable"), std::string::npos) << refused;
  EXPECT_EQ(core::RetryAfterOf(refused), 20);  // 19.5 s left, rounded up
  EXPECT_EQ(breaker.breaker().counters().rejected, 1u);
  EXPECT_EQ(breaker.breaker().counters().failures, 3u);  // refused: no connection tried

  clock.Advance(milliseconds(19500));
  EXPECT_EQ(breaker.breaker().state(), BreakerState::kHalfOpen);
  // The probe fails too (the port is still closed): open again.
  EXPECT_EQ(pool.Acquire().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(breaker.breaker().state(), BreakerState::kOpen);
  EXPECT_EQ(core::RetryAfterOf(breaker.Refused()), 30);
}

TEST(ShardBreaker, StatementErrorsAndPoolWaitsNeverCount) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  ShardBreaker breaker("s0", Settings(1), clock);
  PgPool pool("s0", TestDsn(), 1, milliseconds(20), nullptr, &breaker);

  EXPECT_EQ(WithConnection(pool, [](pqxx::connection_base&) -> absl::Status { return absl::NotFoundError("gone"); })
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Raise(pool, "23505").code(), absl::StatusCode::kAlreadyExists);  // 409 on create
  EXPECT_EQ(Raise(pool, "23503").code(), absl::StatusCode::kInternal);  // a foreign key
  EXPECT_EQ(Raise(pool, "22P02").code(), absl::StatusCode::kInternal);
  EXPECT_EQ(Raise(pool, "57014").code(), absl::StatusCode::kDeadlineExceeded);  // one slow query
  {
    auto held = pool.Acquire();
    ASSERT_TRUE(held.ok()) << held.status();
    // The only connection is leased: this wait times out, the server is fine.
    absl::Status waited = pool.Acquire().status();
    // Not Unavailable, so reads are not retried into a full pool; still 503.
    EXPECT_EQ(waited.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(fhir::ToHttpError(waited).status, 503);
    EXPECT_NE(waited.message().find("No database connection free"), std::string::npos) << waited;
  }
  EXPECT_EQ(breaker.breaker().state(), BreakerState::kClosed);
  EXPECT_EQ(breaker.breaker().counters().failures, 0u);
  EXPECT_EQ(breaker.breaker().counters().successes, 6u);

  // A connection-class SQLSTATE from the server counts (threshold 1).
  EXPECT_EQ(Raise(pool, "57P01").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(breaker.breaker().state(), BreakerState::kOpen);
  EXPECT_EQ(breaker.breaker().counters().failures, 1u);
}

TEST(ShardBreaker, HalfOpenProbeOnAWorkingServerClosesIt) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  ShardBreaker breaker("s0", Settings(1), clock);
  PgPool pool("s0", TestDsn(), 2, milliseconds(1000), nullptr, &breaker);
  EXPECT_EQ(Raise(pool, "08006").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(breaker.breaker().state(), BreakerState::kOpen);
  EXPECT_EQ(pool.Acquire().status().code(), absl::StatusCode::kUnavailable);
  clock.Advance(seconds(30));
  EXPECT_EQ(breaker.breaker().state(), BreakerState::kHalfOpen);
  EXPECT_EQ(Raise(pool, "23505").code(), absl::StatusCode::kAlreadyExists);  // the server answered
  EXPECT_EQ(breaker.breaker().state(), BreakerState::kClosed);
}

}  // namespace
}  // namespace medgrid::store
