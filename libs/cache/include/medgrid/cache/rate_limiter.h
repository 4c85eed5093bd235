// Rate limits shared by every instance: token buckets kept in Redis and
// updated by one Lua script (atomic, on Redis's own clock), so a tenant's
// limit holds across instances. When Redis is not configured or fails, each
// instance falls back to a local bucket of the same size (the limit then
// holds per instance, not in total).
//
//   RateLimiter limiter({.rate_per_second = 50, .burst = 100}, redis, "mg", clock);
//   resilience::TokenBucket::Decision d = limiter.Acquire("tenant:t1");
//   if (!d.allowed) return TooManyRequests(d.retry_after);
#pragma once

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "medgrid/core/clock.h"
#include "medgrid/resilience/token_bucket.h"

namespace medgrid::cache {

class RedisClient;

class RateLimiter {
 public:
  // `redis` may be null (local buckets only). `prefix` namespaces the keys.
  RateLimiter(resilience::TokenBucketSettings limit, std::shared_ptr<RedisClient> redis, std::string prefix,
              const core::Clock& clock);
  ~RateLimiter();

  // Takes one token from `key`'s bucket. Thread-safe.
  resilience::TokenBucket::Decision Acquire(const std::string& key);

  const resilience::TokenBucketSettings& limit() const { return limit_; }

 private:
  resilience::TokenBucket::Decision AcquireLocal(const std::string& key);

  const resilience::TokenBucketSettings limit_;
  const std::shared_ptr<RedisClient> redis_;
  const std::string prefix_;
  const core::Clock& clock_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<resilience::TokenBucket>> local_ ABSL_GUARDED_BY(mu_);
};

}  // namespace medgrid::cache
