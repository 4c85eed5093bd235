// Helpers shared by the FhirEngine source files.
#pragma once

#include <string>

#include "medgrid/core/clock.h"
#include "medgrid/engine/fhir_api.h"
#include "medgrid/store/resource_store.h"

namespace medgrid::engine {

// A new server-assigned resource id (UUIDv7-style, time-ordered).
std::string NewId(core::TimePoint now);

ResourceResult ToResult(store::ResourceVersion&& v);

}  // namespace medgrid::engine
