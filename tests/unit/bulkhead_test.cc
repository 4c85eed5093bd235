#include <atomic>
#include <chrono>
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

using Slot = KeyedBulkhead::Slot;
using std::chrono::steady_clock;

TEST(KeyedBulkhead, EachKeyHasItsOwnLimit) {
  KeyedBulkhead slots(2);
  Slot a1 = slots.TryAcquire("a");
  Slot a2 = slots.TryAcquire("a");
  EXPECT_TRUE(a1);
  EXPECT_TRUE(a2);
  EXPECT_FALSE(slots.TryAcquire("a", /*count_refusal=*/false));  // a look before waiting: not counted
  EXPECT_EQ(slots.rejections(), 0u);
  EXPECT_FALSE(slots.TryAcquire("a"));  // the third of a key is refused ...
  Slot b1 = slots.TryAcquire("b");
  EXPECT_TRUE(b1);                       // ... while another key is not
  EXPECT_EQ(slots.InUse("a"), 2);
  EXPECT_EQ(slots.InUse("b"), 1);
  EXPECT_EQ(slots.MaxInUse(), 2);
  EXPECT_EQ(slots.rejections(), 1u);
  a1.Release();
  EXPECT_EQ(slots.InUse("a"), 1);
  EXPECT_TRUE(slots.TryAcquire("a"));  // freed again at once (a temporary)
  EXPECT_EQ(slots.InUse("a"), 1);
  EXPECT_EQ(slots.rejections(), 1u);
}

TEST(KeyedBulkhead, SlotsReleaseOnceWhenMovedAndDestroyed) {
  KeyedBulkhead slots(1);
  {
    Slot s = slots.TryAcquire("t");
    Slot moved(std::move(s));
    EXPECT_FALSE(s);  // NOLINT(bugprone-use-after-move): checking the move
    Slot assigned;
    assigned = std::move(moved);
    EXPECT_EQ(slots.InUse("t"), 1);
  }
  EXPECT_EQ(slots.InUse("t"), 0);
  EXPECT_EQ(slots.MaxInUse(), 0);  // the key's entry is gone with its holders
  EXPECT_TRUE(slots.TryAcquire("t"));
}

TEST(KeyedBulkhead, AWaiterGetsTheNextFreePlaceBeforeItsDeadline) {
  KeyedBulkhead slots(1);
  Slot held = slots.TryAcquire("t");
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    Slot s = slots.Acquire("t", steady_clock::now() + std::chrono::seconds(30));
    got = static_cast<bool>(s);
  });
  while (slots.Waiting("t") == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  held.Release();  // handed to the waiter: a newcomer cannot take it in between
  EXPECT_FALSE(slots.TryAcquire("t") && !got);
  waiter.join();
  EXPECT_TRUE(got);
  EXPECT_EQ(slots.InUse("t"), 0);
}

TEST(KeyedBulkhead, AWaitThatOutlivesItsDeadlineIsRefusedAndCounted) {
  KeyedBulkhead slots(1);
  Slot held = slots.TryAcquire("t");
  const auto start = steady_clock::now();
  Slot late = slots.Acquire("t", start + std::chrono::milliseconds(20));
  EXPECT_FALSE(late);
  EXPECT_GE(steady_clock::now() - start, std::chrono::milliseconds(20));
  EXPECT_EQ(slots.rejections(), 1u);
  EXPECT_EQ(slots.InUse("t"), 1);
  held.Release();
  EXPECT_EQ(slots.MaxInUse(), 0);
}

TEST(KeyedBulkhead, ConcurrentHoldersOfAKeyNeverExceedTheLimit) {
  KeyedBulkhead slots(3);
  std::atomic<int> holders{0};
  std::atomic<int> most{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5000; ++i) {
        // Half the threads wait a little, half never do.
        Slot s = t % 2 == 0 ? slots.TryAcquire("k") : slots.Acquire("k", steady_clock::now() +
                                                                            std::chrono::microseconds(200));
        if (!s) continue;
        const int now = holders.fetch_add(1) + 1;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        holders.fetch_sub(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(most.load(), 3);
  EXPECT_GE(most.load(), 1);
  EXPECT_EQ(slots.InUse("k"), 0);
  EXPECT_EQ(slots.MaxInUse(), 0);
}

TEST(KeyedBulkhead, AsyncAcquireGetsAFreePlaceAtOnce) {
  KeyedBulkhead slots(1);
  bool called = false;
  KeyedBulkhead::AsyncAcquired got = slots.AcquireAsync("t", [&](Slot) { called = true; });
  EXPECT_TRUE(got.slot);
  EXPECT_EQ(got.ticket, 0u);
  EXPECT_FALSE(called);  // the place came back directly
  EXPECT_EQ(slots.InUse("t"), 1);
}

TEST(KeyedBulkhead, AsyncWaitersAreGrantedInOrderByTheReleasingThread) {
  KeyedBulkhead slots(1);
  Slot held = slots.TryAcquire("t");
  std::vector<int> order;
  std::vector<Slot> granted;
  KeyedBulkhead::AsyncAcquired first = slots.AcquireAsync("t", [&](Slot s) {
    order.push_back(1);
    granted.push_back(std::move(s));
  });
  KeyedBulkhead::AsyncAcquired second = slots.AcquireAsync("t", [&](Slot s) {
    order.push_back(2);
    granted.push_back(std::move(s));
  });
  EXPECT_FALSE(first.slot);
  EXPECT_NE(first.ticket, 0u);
  EXPECT_NE(second.ticket, first.ticket);
  EXPECT_EQ(slots.Waiting("t"), 2);
  EXPECT_FALSE(slots.TryAcquire("t"));  // no overtaking the queue
  held.Release();
  EXPECT_EQ(order, std::vector<int>{1});
  EXPECT_EQ(slots.InUse("t"), 1);  // handed over, not freed
  EXPECT_FALSE(slots.CancelWait("t", first.ticket));  // already granted
  // The grant below appends to `granted`, moving the slot being released
  // while its Release runs: the slot must not touch itself afterwards.
  granted.front().Release();
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  granted.clear();
  EXPECT_EQ(slots.InUse("t"), 0);
  EXPECT_EQ(slots.rejections(), 1u);  // the TryAcquire only
}

TEST(KeyedBulkhead, ACancelledAsyncWaitIsNeverGrantedAndCounts) {
  KeyedBulkhead slots(1);
  Slot held = slots.TryAcquire("t");
  bool called = false;
  KeyedBulkhead::AsyncAcquired got = slots.AcquireAsync("t", [&](Slot) { called = true; });
  EXPECT_TRUE(slots.CancelWait("t", got.ticket));
  EXPECT_FALSE(slots.CancelWait("t", got.ticket));
  EXPECT_EQ(slots.rejections(), 1u);
  EXPECT_EQ(slots.Waiting("t"), 0);
  held.Release();
  EXPECT_FALSE(called);
  EXPECT_EQ(slots.MaxInUse(), 0);
}

}  // namespace
}  // namespace medgrid::resilience
