#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "medgrid/resilience/bulkhead.h"

namespace medgrid::resilience {
namespace {

using Permit = ServicePools::Permit;

std::vector<Permit> Take(ServicePools& pools, ServiceClass cls, int n, bool never_shed = false) {
  std::vector<Permit> held;
  for (int i = 0; i < n; ++i) {
    Permit p = pools.TryAcquire(cls, never_shed);
    EXPECT_TRUE(p) << ServiceClassName(cls) << " #" << i;
    held.push_back(std::move(p));
  }
  return held;
}

ServicePools Ten(double shed_fraction = 1.0) {
  return ServicePools(ServicePoolSettings{.capacity = 10, .share_pct = {60, 30, 10}, .shed_fraction = shed_fraction});
}

TEST(ServicePools, LimitsAreTheSeedShares) {
  ServicePools pools(ServicePoolSettings{});
  EXPECT_EQ(pools.stats(ServiceClass::kStandard).limit, 76);  // 30% of 256
  EXPECT_EQ(pools.stats(ServiceClass::kAi).limit, 25);        // 10% of 256
  // The critical share is a floor: critical work may use the whole capacity.
  EXPECT_EQ(pools.stats(ServiceClass::kCritical).limit, 256);
}

TEST(ServicePools, StandardAndAiStopAtTheirShare) {
  ServicePools pools = Ten();
  auto standard = Take(pools, ServiceClass::kStandard, 3);
  EXPECT_FALSE(pools.TryAcquire(ServiceClass::kStandard, false));
  auto ai = Take(pools, ServiceClass::kAi, 1);
  EXPECT_FALSE(pools.TryAcquire(ServiceClass::kAi, false));
  EXPECT_EQ(pools.stats(ServiceClass::kStandard).rejected, 1u);
  EXPECT_EQ(pools.stats(ServiceClass::kAi).rejected, 1u);
  EXPECT_EQ(pools.stats(ServiceClass::kStandard).in_flight, 3);
  // A released place can be taken again.
  standard.pop_back();
  EXPECT_TRUE(pools.TryAcquire(ServiceClass::kStandard, false));
}

TEST(ServicePools, CriticalKeepsItsShareWhenTheOthersAreFull) {
  ServicePools pools = Ten();
  auto standard = Take(pools, ServiceClass::kStandard, 3);
  auto ai = Take(pools, ServiceClass::kAi, 1);
  // 6 of 10 remain, all of them for critical work.
  auto critical = Take(pools, ServiceClass::kCritical, 6);
  EXPECT_FALSE(pools.TryAcquire(ServiceClass::kCritical, false));
  EXPECT_EQ(pools.in_flight(), 10);
}

TEST(ServicePools, CriticalBorrowsUnusedCapacity) {
  ServicePools pools = Ten();
  auto critical = Take(pools, ServiceClass::kCritical, 10);
  EXPECT_FALSE(pools.TryAcquire(ServiceClass::kCritical, false));
  // With the capacity in use, standard and ai are refused below their share.
  EXPECT_FALSE(pools.TryAcquire(ServiceClass::kStandard, false));
  EXPECT_FALSE(pools.TryAcquire(ServiceClass::kAi, false));
}

TEST(ServicePools, StandardAndAiAreShedFirstAboveTheShedMark) {
  ServicePools pools = Ten(0.5);  // shed from 5 in flight
  auto critical = Take(pools, ServiceClass::kCritical, 4);
  auto standard = Take(pools, ServiceClass::kStandard, 1);  // the 5th: at the mark, admitted
  EXPECT_FALSE(pools.TryAcquire(ServiceClass::kStandard, false));
  EXPECT_FALSE(pools.TryAcquire(ServiceClass::kAi, false));
  // Critical writes still get the capacity above the mark.
  auto more = Take(pools, ServiceClass::kCritical, 5);
  EXPECT_FALSE(pools.TryAcquire(ServiceClass::kCritical, false));
}

TEST(ServicePools, CriticalReadsAreNeverRefused) {
  ServicePools pools = Ten();
  auto critical = Take(pools, ServiceClass::kCritical, 10);
  auto reads = Take(pools, ServiceClass::kCritical, 20, /*never_shed=*/true);
  EXPECT_EQ(pools.in_flight(), 30);
  EXPECT_EQ(pools.stats(ServiceClass::kCritical).rejected, 0u);
  EXPECT_EQ(pools.stats(ServiceClass::kCritical).admitted, 30u);
}

TEST(ServicePools, PermitsReleaseOnceWhenMovedAndDestroyed) {
  ServicePools pools = Ten();
  {
    Permit a = pools.TryAcquire(ServiceClass::kAi, false);
    Permit b = std::move(a);
    EXPECT_FALSE(a);
    Permit c;
    c = std::move(b);
    EXPECT_EQ(pools.in_flight(), 1);
    c.Release();
    c.Release();
    EXPECT_EQ(pools.in_flight(), 0);
  }
  EXPECT_EQ(pools.in_flight(), 0);
  EXPECT_EQ(pools.stats(ServiceClass::kAi).in_flight, 0);
}

TEST(ServicePools, ConcurrentCallersNeverExceedALimit) {
  ServicePools pools = Ten();
  std::atomic<int> holders{0};
  std::atomic<int> most{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        Permit p = pools.TryAcquire(ServiceClass::kStandard, false);
        if (!p) continue;
        const int now = holders.fetch_add(1) + 1;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        holders.fetch_sub(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(most.load(), 3);  // 30% of 10, with 8 threads contending
  EXPECT_GE(most.load(), 1);
  EXPECT_EQ(pools.in_flight(), 0);
}

}  // namespace
}  // namespace medgrid::resilience
