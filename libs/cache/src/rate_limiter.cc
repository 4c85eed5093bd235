#include "medgrid/cache/rate_limiter.h"

#include <cmath>

#include "fmt/format.h"
#include "medgrid/cache/redis.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/strings.h"

namespace medgrid::cache {
namespace {

// KEYS[1]: the bucket (a hash of tokens and the time they were counted).
// ARGV: rate per second, burst. Returns {allowed, microseconds to wait}.
constexpr const char* kBucketScript = R"lua(
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) / 1000000 * rate) end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate * 1000000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(math.max(now, at)))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, wait}
)lua";

}  // namespace

RateLimiter::RateLimiter(resilience::TokenBucketSettings limit, std::shared_ptr<RedisClient> redis,
                         std::string prefix, const core::Clock& clock)
    : limit_(limit), redis_(std::move(redis)), prefix_(std::move(prefix)), clock_(clock) {}

RateLimiter::~RateLimiter() = default;

resilience::TokenBucket::Decision RateLimiter::Acquire(const std::string& key) {
  if (redis_ != nullptr) {
    absl::StatusOr<RedisReply> r = redis_->Eval(kBucketScript, {core::StrCat(prefix_, ":rate:{", key, "}")},
                                                {fmt::format("{}", limit_.rate_per_second), fmt::format("{}", limit_.burst)});
    if (r.ok() && r->type == RedisReply::Type::kArray && r->elements.size() == 2 &&
        r->elements[0].type == RedisReply::Type::kInteger && r->elements[1].type == RedisReply::Type::kInteger) {
      resilience::TokenBucket::Decision d;
      d.allowed = r->elements[0].integer == 1;
      d.retry_after = std::chrono::microseconds(d.allowed ? 0 : r->elements[1].integer);
      return d;
    }
    core::Log(core::LogLevel::kWarn, "rate_limit.local_fallback",
              {{"error", r.ok() ? std::string("unexpected reply") : std::string(r.status().message())}});
  }
  return AcquireLocal(key);
}

resilience::TokenBucket::Decision RateLimiter::AcquireLocal(const std::string& key) {
  std::shared_ptr<resilience::TokenBucket> bucket;
  {
    absl::MutexLock lock(&mu_);
    // Bounded: tenants are few, but keys could be probed.
    if (local_.size() > 100000 && !local_.contains(key)) local_.clear();
    std::shared_ptr<resilience::TokenBucket>& b = local_[key];
    if (b == nullptr) b = std::make_shared<resilience::TokenBucket>(limit_, clock_);
    bucket = b;
  }
  return bucket->TryAcquire();
}

}  // namespace medgrid::cache
