// Idempotency keys on the tenant's shard (shard migration 13): the record of
// a completed keyed write, written in the transaction of the write itself,
// so a crash cannot keep one without the other. See
// ResourceStore::RunIdempotent and docs/ARCHITECTURE.md, "Idempotency keys".
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace medgrid::store {

class TransactionScope;

// A request's key and what identifies the request.
struct IdempotencyKey {
  std::string key;                                        // as the client sent it (validated by the gateway)
  std::string fingerprint;                                // hex SHA-256 of method, path, query, body, Prefer and caller
  std::chrono::milliseconds ttl{std::chrono::hours(24)};  // how long the record answers
  // Another request with the key runs in this process: only a recorded
  // answer may be returned (kReplayed, kMismatch), else kInFlight; the lock
  // is not tried and nothing runs.
  bool replay_only = false;
};

// What is kept to answer the request again: the status and either the
// version written (or matched), whose stored body is immutable, or the
// response body itself (a batch or transaction Bundle's response).
struct IdempotentResponse {
  int status = 200;
  std::string type;
  std::string id;
  int64_t version = 0;
  std::optional<std::string> body;
};

struct IdempotentResult {
  enum class Outcome {
    kExecuted,  // the write ran; `response` is what it returned and was recorded
    kReplayed,  // an unexpired record with the same fingerprint: `response`
    kMismatch,  // an unexpired record with another fingerprint; nothing ran
    kInFlight,  // another transaction holds the key; nothing ran
  };
  Outcome outcome = Outcome::kExecuted;
  IdempotentResponse response;
};

// The keyed write: runs in the shard transaction that also records its
// response. May run more than once when the transaction is retried.
using IdempotentFn = std::function<absl::StatusOr<IdempotentResponse>(TransactionScope&)>;

}  // namespace medgrid::store
