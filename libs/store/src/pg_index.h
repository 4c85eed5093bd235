// How search index entries reach PostgreSQL: one jsonb parameter per write,
// expanded by jsonb_to_recordset in data-modifying CTEs of the same
// statement that writes the version, so indexes commit with it; or, for a
// large write set, rows built here and sent by COPY in the same transaction
// (CopyIndexRows), the same rows.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>
#include <string>
#include <string_view>

#include "medgrid/search/index.h"
#include "medgrid/store/resource_store.h"
#include "medgrid/store/sql.h"
#include "pqxx/pqxx"

namespace medgrid::store {

// The entries as the JSON document the CTEs read. Empty lists are left out.
std::string EncodeIndex(const search::IndexEntries& entries);

// CTEs (each starting with ", ") that insert the rows of the document in
// parameter $`param` for the resource ($1 tenant, $2 type, $3 id).
std::string IndexInsertCtes(int param);

// The same for many resources: CTEs (each starting with ", ") that read
// the relation `k` (columns t: type, i: id, j: the index document, NULL for
// a deletion; existed: whether the resource had index rows to replace) of
// the statement's tenant $1. IndexDeleteManyCtes deletes the index rows of
// the keys that existed; IndexInsertManyCtes inserts the new ones.
std::string IndexInsertManyCtes();
std::string IndexDeleteManyCtes();

// Rows in COPY's text format, built field by field: `\N` for NULL,
// backslash, tab, newline and carriage return escaped, other bytes as they
// are (the connection's encoding is the database's, UTF-8).
class CopyRows {
 public:
  CopyRows& Text(std::string_view value);
  CopyRows& OptText(const std::optional<std::string>& value) { return value ? Text(*value) : Null(); }
  CopyRows& Int(int64_t value);
  CopyRows& Bool(bool value) { return Raw(value ? "t" : "f"); }
  CopyRows& Null() { return Raw("\\N"); }
  // A field that needs no escaping.
  CopyRows& Raw(std::string_view value);
  void EndRow();

  bool empty() const { return text_.empty(); }
  // Sends the rows with COPY `table` (`columns`) FROM STDIN, in one
  // message, in the transaction `tx`; nothing when there are none.
  void Copy(pqxx::transaction_base& tx, const std::string& table, const std::vector<std::string>& columns);

 private:
  std::string text_;
  bool row_open_ = false;
};

// The COPY path of TransactionScope::Write for large write sets: streams
// the rows of every index table but idx_text for `writes` of `tenant`
// (nothing for deletions) with COPY, the same rows IndexInsertManyCtes
// inserts from EncodeIndex's documents, and the +1 token count deltas.
// idx_text needs to_tsvector, so the caller inserts it. Throws what libpqxx
// throws.
void CopyIndexRows(pqxx::transaction_base& tx, const std::string& tenant, const std::vector<PendingWrite>& writes);

// A PostgreSQL array literal of text values, NULL for nullopt.
std::string OptionalTextArrayLiteral(const std::vector<std::optional<std::string>>& values);

// A row of kVersionColumns (res_type, res_id, version_id, deleted, last
// updated in microseconds, method, body) as a ResourceVersion.
ResourceVersion TypedRowToVersion(const pqxx::row& row);
#define MEDGRID_VERSION_COLUMNS \
  "v.res_type, v.res_id, v.version_id, v.deleted, (extract(epoch from v.last_updated) * 1000000)::bigint, " \
  "v.method, v.body"

// CTEs (each starting with ", ") that delete every index row of the resource
// ($1 tenant, $2 type, $3 id).
std::string IndexDeleteCtes();

// A token parameter and a date parameter of one resource type that are also
// indexed together, in idx_token_date (migration 6): one row per pair of a
// code and a date range of the resource. "code=X&date=ge...&date=lt..." on
// Observation then reads one index range (the code's rows around the dates)
// instead of intersecting a code set with date sets that each grow with the
// data.
struct TokenDateCombo {
  const char* type;
  const char* token_param;
  const char* date_param;
};
inline constexpr TokenDateCombo kTokenDateCombos[] = {
    {"Observation", "code", "date"},
    {"Condition", "code", "onset-date"},
    {"Procedure", "code", "date"},
    {"DiagnosticReport", "code", "date"},
    {"MedicationRequest", "code", "authoredon"},
    {"MedicationAdministration", "code", "effective-time"},
    {"Immunization", "vaccine-code", "date"},
    {"Encounter", "type", "date"},
};

// idx_token_date keys a date range [lo, hi) by its span class: the first
// class whose width bounds hi - lo (a dateTime or a day; a month; a year),
// or kDateSpanClasses for wider ranges. Within a class a condition "hi > x"
// bounds lo from below (lo > x - width), so the index range over lo has both
// ends. Widths in microseconds.
inline constexpr int64_t kDateSpanWidths[] = {
    2 * 86'400'000'000LL,
    32 * 86'400'000'000LL,
    367 * 86'400'000'000LL,
};
inline constexpr int kDateSpanClasses = 3;

// The span class of [lo, hi) in SQL (lo and hi are bigint expressions).
std::string DateSpanClassSql(std::string_view lo, std::string_view hi);

// The combinations as a SQL row list: "(VALUES ('Observation', 'code',
// 'date'), ...) AS alias(rt, tp, dp)".
std::string TokenDateComboValues(std::string_view alias);

}  // namespace medgrid::store
