// Idempotency keys (the IETF draft "The Idempotency-Key HTTP Header Field",
// and Stripe's practice): the parts that need no storage. The gateway
// validates a request's key, fingerprints the request, and keeps the keys
// of this process's requests in flight; the write itself, and the record of
// its response, happen in one transaction on the tenant's shard
// (store::ResourceStore::RunIdempotent).
//
//   ASSIGN_OR_RETURN(std::string key, resilience::ParseIdempotencyKey(header));
//   std::string fp = resilience::RequestFingerprint({.method = "POST", ...});
//   resilience::InFlightKeys::Claim claim = in_flight.TryClaim(tenant, key);
//   if (!claim) return Conflict();
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace medgrid::resilience {

// Longest key accepted, in bytes.
inline constexpr std::size_t kMaxIdempotencyKeyLength = 255;

// The key of an Idempotency-Key header value. The draft makes the value a
// Structured Field string ("..."); a bare token, as Stripe takes it, is
// accepted too. Errors: InvalidArgument (HTTP 400) for an empty key, one
// over 255 bytes, or one with control characters or non-ASCII bytes.
absl::StatusOr<std::string> ParseIdempotencyKey(std::string_view header);

// Decoded query parameters in a canonical order: sorted by name, then
// value, and serialized with percent-encoding, so that the same criteria in
// another order (or encoded differently) give the same text.
std::string CanonicalQuery(std::vector<std::pair<std::string, std::string>> params);

// What makes two requests with one key "the same request".
struct RequestParts {
  std::string method;         // POST, PUT or PATCH
  std::string path;           // /fhir/{tenant}/..., as routed
  std::string query;          // CanonicalQuery of the decoded parameters
  std::string body;           // the bytes as received
  std::string prefer_return;  // Prefer: return=..., which shapes the response
  std::string caller;         // who asked (the token's agent and subject); empty without auth
};

// Lower-case hex SHA-256 over the length-prefixed parts, so that no two
// different sets of parts hash the same text.
std::string RequestFingerprint(const RequestParts& parts);

// The (tenant, key) pairs of requests running in this process: a fast path
// that answers a concurrent duplicate with 409 before it takes a database
// connection. The shard's advisory lock is what holds across instances.
// Thread-safe.
class InFlightKeys {
 public:
  // Releases the claim when it goes out of scope.
  class Claim {
   public:
    Claim() = default;
    Claim(Claim&& o) noexcept : owner_(std::exchange(o.owner_, nullptr)), entry_(std::move(o.entry_)) {}
    Claim& operator=(Claim&&) = delete;
    ~Claim();
    explicit operator bool() const { return owner_ != nullptr; }

   private:
    friend class InFlightKeys;
    Claim(InFlightKeys* owner, std::string entry) : owner_(owner), entry_(std::move(entry)) {}
    InFlightKeys* owner_ = nullptr;
    std::string entry_;
  };

  // An empty Claim when a request with this tenant and key is in flight here.
  Claim TryClaim(std::string_view tenant, std::string_view key);
  std::size_t size() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_set<std::string> keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace medgrid::resilience
