// Helpers shared by the FhirEngine source files.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "medgrid/core/clock.h"
#include "medgrid/engine/fhir_api.h"
#include "medgrid/store/resource_store.h"

namespace medgrid::engine {


ResourceResult ToResult(store::ResourceVersion&& v);

// 410 for a resource whose current version (`version`) is a deletion.
absl::Status Gone(const std::string& type, const std::string& id, int64_t version);
// 412 when `if_match` is set and is not the current version.
absl::Status CheckIfMatch(std::optional<int64_t> if_match, const std::optional<store::ResourceVersion>& current);
// 412 for conditional criteria that match several resources of `type`.
absl::Status MultipleMatches(const std::string& type);
// The advisory lock key of conditional criteria: the same for the same
// parameters in any order.
std::string LockKey(const std::string& type, const QueryParams& criteria);

}  // namespace medgrid::engine
