// Helpers shared by the FhirEngine source files.
#pragma once

#include <string>

#include "medgrid/core/clock.h"
#include "medgrid/engine/fhir_api.h"
#include "medgrid/store/resource_store.h"

namespace medgrid::engine {


ResourceResult ToResult(store::ResourceVersion&& v);

}  // namespace medgrid::engine
