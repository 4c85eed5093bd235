// How search index entries reach PostgreSQL: one jsonb parameter per write,
// expanded by jsonb_to_recordset in data-modifying CTEs of the same
// statement that writes the version, so indexes commit with it.
#pragma once

#include <string>

#include "medgrid/search/index.h"

namespace medgrid::store {

// The entries as the JSON document the CTEs read. Empty lists are left out.
std::string EncodeIndex(const search::IndexEntries& entries);

// CTEs (each starting with ", ") that insert the rows of the document in
// parameter $`param` for the resource ($1 tenant, $2 type, $3 id).
std::string IndexInsertCtes(int param);

// CTEs (each starting with ", ") that delete every index row of the resource
// ($1 tenant, $2 type, $3 id).
std::string IndexDeleteCtes();

}  // namespace medgrid::store
