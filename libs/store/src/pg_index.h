// How search index entries reach PostgreSQL: one jsonb parameter per write,
// expanded by jsonb_to_recordset in data-modifying CTEs of the same
// statement that writes the version, so indexes commit with it.
#pragma once

#include <string>

#include "medgrid/search/index.h"
#include "medgrid/store/resource_store.h"
#include "pqxx/pqxx"

namespace medgrid::store {

// The entries as the JSON document the CTEs read. Empty lists are left out.
std::string EncodeIndex(const search::IndexEntries& entries);

// CTEs (each starting with ", ") that insert the rows of the document in
// parameter $`param` for the resource ($1 tenant, $2 type, $3 id).
std::string IndexInsertCtes(int param);

// The text form of a PostgreSQL text[] literal: {"a","b"}.
std::string TextArrayLiteral(const std::vector<std::string>& values);

// A row of kVersionColumns (res_type, res_id, version_id, deleted, last
// updated in microseconds, method, body) as a ResourceVersion.
ResourceVersion TypedRowToVersion(const pqxx::row& row);
#define MEDGRID_VERSION_COLUMNS \
  "v.res_type, v.res_id, v.version_id, v.deleted, (extract(epoch from v.last_updated) * 1000000)::bigint, " \
  "v.method, v.body"

// CTEs (each starting with ", ") that delete every index row of the resource
// ($1 tenant, $2 type, $3 id).
std::string IndexDeleteCtes();

}  // namespace medgrid::store
