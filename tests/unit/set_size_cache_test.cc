#include "medgrid/store/set_size_cache.h"

#include <gtest/gtest.h>

namespace medgrid::store {
namespace {

using std::chrono::seconds;

TEST(SetSizeCache, EntriesExpireAfterTheirTtl) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  SetSizeCache cache(clock, seconds(30));
  const std::string key = SetSizeCache::Key("SELECT 1", {"t1"});
  EXPECT_EQ(cache.Get(key), std::nullopt);
  cache.Put(key, {5, 1000});
  clock.Advance(seconds(29));
  EXPECT_EQ(cache.Get(key), (std::vector<int64_t>{5, 1000}));
  clock.Advance(seconds(1));
  EXPECT_EQ(cache.Get(key), std::nullopt);
  cache.Put(key, {7, 1000});
  EXPECT_EQ(cache.Get(key), (std::vector<int64_t>{7, 1000}));
  cache.Erase(key);
  EXPECT_EQ(cache.Get(key), std::nullopt);
}

TEST(SetSizeCache, KeysSeparateStatementsAndParameters) {
  // The tenant is a parameter: the same statement for two tenants has two keys.
  EXPECT_NE(SetSizeCache::Key("SELECT $1", {"t1"}), SetSizeCache::Key("SELECT $1", {"t2"}));
  // Length prefixes keep parts apart wherever their text would run together.
  EXPECT_NE(SetSizeCache::Key("a", {"b,c"}), SetSizeCache::Key("a", {"b", "c"}));
  EXPECT_NE(SetSizeCache::Key("a,1:b", {}), SetSizeCache::Key("a", {"b"}));
  EXPECT_EQ(SetSizeCache::Key("a", {"b", "c"}), SetSizeCache::Key("a", {"b", "c"}));
}

TEST(SetSizeCache, AFullCacheDropsExpiredEntriesFirstThenEverything) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  SetSizeCache cache(clock, seconds(30), 3);
  cache.Put("old", {1});
  clock.Advance(seconds(20));
  cache.Put("a", {2});
  cache.Put("b", {3});
  clock.Advance(seconds(15));  // "old" has expired; "a" and "b" have not.
  cache.Put("c", {4});
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.Get("a"), std::vector<int64_t>{2});
  EXPECT_EQ(cache.Get("c"), std::vector<int64_t>{4});
  cache.Put("a", {5});  // a key already held replaces its entry
  EXPECT_EQ(cache.size(), 3u);
  cache.Put("d", {6});  // nothing expired: all go
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.Get("d"), std::vector<int64_t>{6});
  EXPECT_EQ(cache.Get("a"), std::nullopt);
}

}  // namespace
}  // namespace medgrid::store
