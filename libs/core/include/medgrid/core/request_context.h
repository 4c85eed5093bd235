// What the transport knows about the request being handled on this thread,
// for layers below it that record who asked (the audit trail). The gateway
// sets it before calling the FHIR API; a callee reads it on entry (not from
// a callback that may run later).
#pragma once

#include <cstdint>
#include <string>

namespace medgrid::core {

// What the engine did with a request's Idempotency-Key (docs/ARCHITECTURE.md,
// "Idempotency keys"), for the gateway's headers and metrics.
enum class IdempotencyOutcome {
  kNone,      // no key, or the request never reached a keyed write
  kRecorded,  // the write ran and its response was recorded with it
  kReplayed,  // the recorded response of an earlier request was returned
  kMismatch,  // the key was used before with a different request (422)
  kInFlight,  // a request with the key is still running (409)
};

// An Idempotency-Key the gateway accepted for a write. The engine takes it
// (leaving `key` empty, so a nested call cannot use it twice) and sets
// `outcome`.
struct IdempotencyContext {
  std::string key;          // the validated key; empty: none
  std::string fingerprint;  // hex SHA-256 of the request and its caller
  // A request with the key is in flight in this process: answer only from
  // a recorded response (a replay), else 409, without trying to run.
  bool replay_only = false;
  IdempotencyOutcome outcome = IdempotencyOutcome::kNone;
};

struct RequestContext {
  // The tenant the request is for, once the gateway has read it from the
  // path; empty before, and for requests of no tenant. The store counts the
  // request's database connections against it (the per-tenant cap).
  std::string tenant;
  std::string client_address;  // the peer's IP address
  std::string purpose_of_use;  // a v3-ActReason code the request stated, or empty
  // Who asked, from a verified token: a reference such as
  // "Practitioner/123", else "Device/<client id>"; empty when anonymous.
  std::string agent;
  // The token's subject and the reason of a break-the-glass declaration.
  std::string subject;
  std::string btg_reason;
  // The version of the resource read that the client says it has (the
  // ETag of If-None-Match), 0 if none: caches never answer it with an older
  // version (read-your-writes across instances).
  int64_t known_version = 0;
  IdempotencyContext idempotency;
};

// This thread's current request (empty outside one).
RequestContext& CurrentRequest();

}  // namespace medgrid::core
