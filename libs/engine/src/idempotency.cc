// Idempotency keys in the engine: every single-resource write of a request
// with a key goes through FhirEngine::Write, which runs it inside
// ResourceStore::RunIdempotent, so the version and the record of its
// response commit together. Bundles use RunIdempotent directly (bundle.cc).
#include <chrono>

#include "internal.h"
#include "medgrid/core/request_context.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/engine/fhir_engine.h"

namespace medgrid::engine {
namespace {

using Outcome = store::IdempotentResult::Outcome;

// The shard by itself: the ordinary write paths.
class ShardTarget final : public WriteTarget {
 public:
  explicit ShardTarget(store::ResourceStore& shard) : shard_(shard) {}
  absl::StatusOr<store::ResourceVersion> Create(const store::ResourceKey& key, const store::BodyFn& body) override {
    return shard_.Create(key, body);
  }
  absl::StatusOr<store::ResourceVersion> Update(const store::ResourceKey& key, const std::string& method,
                                                const store::BodyFn& body) override {
    return shard_.Update(key, method, body);
  }
  absl::StatusOr<std::optional<store::ResourceVersion>> Conditional(const std::string& tenant,
                                                                    const search::SearchRequest& match,
                                                                    const std::string& lock_key,
                                                                    const store::DecideFn& decide) override {
    return shard_.Conditional(tenant, match, lock_key, decide);
  }

 private:
  store::ResourceStore& shard_;
};

// Inside an open transaction: the same writes through the TransactionScope
// a transaction Bundle uses (lock the row, next version, one statement).
class ScopeTarget final : public WriteTarget {
 public:
  explicit ScopeTarget(store::TransactionScope& scope) : scope_(scope) {}
  absl::StatusOr<store::ResourceVersion> Create(const store::ResourceKey& key, const store::BodyFn& body) override {
    return Update(key, "POST", body);
  }
  absl::StatusOr<store::ResourceVersion> Update(const store::ResourceKey& key, const std::string& method,
                                                const store::BodyFn& body_fn) override {
    ASSIGN_OR_RETURN(std::vector<std::optional<store::ResourceVersion>> current,
                     scope_.Current({key}, /*lock=*/true, /*with_bodies=*/method == "PATCH"));
    const std::optional<store::ResourceVersion>& cur = current[0];
    const int64_t next = cur ? cur->version + 1 : 1;
    core::TimePoint now = scope_.Now();
    // lastUpdated strictly increases per resource, as in ResourceStore::Update.
    if (cur && now <= cur->last_updated) now = cur->last_updated + std::chrono::microseconds(1);
    ASSIGN_OR_RETURN(store::StoredBody body, body_fn(cur, next, now));
    store::ResourceVersion v;
    v.type = key.type;
    v.id = key.id;
    v.version = next;
    v.last_updated = now;
    v.method = method;
    v.body = body.json;
    RETURN_IF_ERROR(scope_.Write({store::PendingWrite{key, next, method, now, std::move(body)}}));
    return v;
  }
  absl::StatusOr<std::optional<store::ResourceVersion>> Conditional(const std::string&,
                                                                    const search::SearchRequest& match,
                                                                    const std::string& lock_key,
                                                                    const store::DecideFn& decide) override {
    RETURN_IF_ERROR(scope_.Lock(lock_key));
    ASSIGN_OR_RETURN(store::SearchPage page, scope_.Search(match, std::nullopt));
    ASSIGN_OR_RETURN(std::optional<store::ConditionalWrite> write, decide(page.matches));
    if (!write) return std::optional<store::ResourceVersion>();
    if (write->method == "DELETE") return absl::InternalError("A keyed conditional write cannot delete");
    ASSIGN_OR_RETURN(store::ResourceVersion v, Update(write->key, write->method, write->body));
    return std::optional<store::ResourceVersion>(std::move(v));
  }

 private:
  store::TransactionScope& scope_;
};

}  // namespace

absl::Status IdempotencyRefusal(Outcome outcome) {
  core::CurrentRequest().idempotency.outcome =
      outcome == Outcome::kInFlight ? core::IdempotencyOutcome::kInFlight : core::IdempotencyOutcome::kMismatch;
  if (outcome == Outcome::kInFlight) {
    return core::Error(absl::StatusCode::kAborted,
                       "A request with this Idempotency-Key is still being processed; retry after it completes")
        .Http(409)
        .Issue("conflict");
  }
  return core::Error(absl::StatusCode::kFailedPrecondition,
                     "This Idempotency-Key was used with a different request (method, URL, body, Prefer or caller); "
                     "use a new key for a new request")
      .Http(422)
      .Issue("business-rule");
}

void MarkIdempotency(core::IdempotencyOutcome outcome) { core::CurrentRequest().idempotency.outcome = outcome; }

std::optional<store::IdempotencyKey> FhirEngine::TakeIdempotencyKey() const {
  core::IdempotencyContext& ctx = core::CurrentRequest().idempotency;
  if (ctx.key.empty()) return std::nullopt;
  store::IdempotencyKey key{std::move(ctx.key), std::move(ctx.fingerprint), options_.idempotency_ttl,
                            ctx.replay_only};
  ctx.key.clear();
  ctx.fingerprint.clear();
  return key;
}

absl::StatusOr<ResourceResult> FhirEngine::Write(store::ResourceStore& shard, const std::string& tenant,
                                                 const WriteFn& fn) {
  std::optional<store::IdempotencyKey> key = TakeIdempotencyKey();
  if (!key) {
    ShardTarget target(shard);
    return fn(target);
  }
  ResourceResult written;
  ASSIGN_OR_RETURN(store::IdempotentResult r,
                   shard.RunIdempotent(
                       tenant, *key, [&](store::TransactionScope& scope) -> absl::StatusOr<store::IdempotentResponse> {
                         ScopeTarget target(scope);
                         ASSIGN_OR_RETURN(written, fn(target));
                         store::IdempotentResponse response;
                         response.status = written.created ? 201 : 200;
                         response.type = written.type;
                         response.id = written.id;
                         response.version = written.version;
                         return response;
                       }));
  switch (r.outcome) {
    case Outcome::kExecuted:
      MarkIdempotency(core::IdempotencyOutcome::kRecorded);
      return written;
    case Outcome::kReplayed: {
      if (r.response.body || r.response.type.empty()) return IdempotencyRefusal(Outcome::kMismatch);
      // The version recorded is immutable: its body is the one first returned.
      ASSIGN_OR_RETURN(store::ResourceVersion v,
                       shard.ReadVersion({tenant, r.response.type, r.response.id}, r.response.version));
      MarkIdempotency(core::IdempotencyOutcome::kReplayed);
      ResourceResult out = ToResult(std::move(v));
      out.created = r.response.status == 201;
      return out;
    }
    case Outcome::kMismatch:
    case Outcome::kInFlight:
      return IdempotencyRefusal(r.outcome);
  }
  return absl::InternalError("unknown idempotency outcome");
}

}  // namespace medgrid::engine
