// What the transport knows about the request being handled on this thread,
// for layers below it that record who asked (the audit trail). The gateway
// sets it before calling the FHIR API; a callee reads it on entry (not from
// a callback that may run later).
#pragma once

#include <cstdint>
#include <string>

namespace medgrid::core {

struct RequestContext {
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
};

// This thread's current request (empty outside one).
RequestContext& CurrentRequest();

}  // namespace medgrid::core
