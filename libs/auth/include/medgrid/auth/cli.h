// `medgridctl token`: keys and tokens for local use and tests. Production
// tokens come from the identity provider; these are signed with a dev key
// that deploy/local/up.sh generates.
//
//   medgridctl token keygen --key-out dev-key.pem --jwks-out jwks.json [--alg ES256|RS256|EdDSA] [--kid dev-1]
//   medgridctl token mint --key dev-key.pem --kid dev-1 --issuer I --audience A --subject S
//       [--tenant T] [--scope "user/*.cruds openid"] [--patient P] [--fhir-user Practitioner/1]
//       [--roles physician,nurse] [--purpose-of-use TREAT] [--client-id C] [--ttl-s 3600]
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "medgrid/core/clock.h"

namespace medgrid::auth {

// Runs `token <args>`; returns the exit status (0, 1 on failure, 2 on usage
// errors) after writing the result to `out` and messages to `err`.
int RunTokenCommand(const std::vector<std::string>& args, const core::Clock& clock, std::ostream& out,
                    std::ostream& err);

}  // namespace medgrid::auth
