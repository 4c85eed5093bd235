#include "pg_index.h"

#include <cstdio>
#include <set>
#include <tuple>

#include "medgrid/core/logging.h"
#include "medgrid/core/strings.h"
#include "pqxx/tablewriter"

namespace medgrid::store {
namespace {

void Key(std::string& out, std::string_view key, std::string_view value) {
  core::StrAppend(out, "\"", key, "\":\"");
  core::AppendJsonEscaped(out, value);
  out += '"';
}

void OptKey(std::string& out, std::string_view key, const std::optional<std::string>& value) {
  if (value) {
    Key(out, key, *value);
  } else {
    core::StrAppend(out, "\"", key, "\":null");
  }
}

template <typename Entry, typename Fn>
void List(std::string& out, std::string_view name, const std::vector<Entry>& entries, Fn&& fields) {
  if (entries.empty()) return;
  if (out.size() > 1) out += ',';
  core::StrAppend(out, "\"", name, "\":[");
  bool first = true;
  for (const Entry& e : entries) {
    if (!first) out += ',';
    first = false;
    out += '{';
    Key(out, "p", e.param);
    core::StrAppend(out, ",\"g\":", e.group, ",");
    fields(e);
    out += '}';
  }
  out += ']';
}

struct Table {
  const char* key;      // the list in the document
  const char* table;
  const char* columns;  // after tenant_id, res_type, res_id, param, grp
  const char* record;   // jsonb_to_recordset column list after p text, g int
  const char* select;   // expressions after x.p, x.g
};

constexpr Table kTables[] = {
    {"s", "idx_string", "folded, exact", "f text, e text", "x.f, x.e"},
    {"t", "idx_token", "system, code, text, type_system, type_code", "s text, c text, x text, ts text, tc text",
     "x.s, x.c, x.x, x.ts, x.tc"},
    {"d", "idx_date", "lo, hi", "l bigint, h bigint", "x.l, x.h"},
    {"r", "idx_reference", "target_type, target_id, url, version", "tt text, ti text, u text, v text",
     "x.tt, x.ti, x.u, x.v"},
    {"q", "idx_quantity", "low, high, system, code, unit", "l numeric, h numeric, s text, c text, u text",
     "x.l, x.h, x.s, x.c, x.u"},
    {"u", "idx_uri", "uri", "u text", "x.u"},
};

constexpr const char* kCountColumns = "(tenant_id, res_type, param, code, by_system, system, n)";

// The count deltas of a resource's token rows `rows` (columns param, code,
// system): `n` for each distinct (param, code), and for each distinct
// (param, system, code).
std::string CountDeltas(std::string_view rows, std::string_view n) {
  return core::StrCat("SELECT $1, $2, k.param, k.code, false, NULL, ", n, " FROM (SELECT DISTINCT param, code FROM ",
                      rows, " r) k UNION ALL SELECT $1, $2, k.param, k.code, true, k.system, ", n,
                      " FROM (SELECT DISTINCT param, code, system FROM ", rows, " r) k");
}

// The same for the token rows of many resources (columns res_type,
// res_id, param, code, system): per resource, `n` for each distinct
// (param, code) and each distinct (param, system, code).
std::string CountDeltasMany(std::string_view rows, std::string_view n) {
  return core::StrCat("SELECT $1, k.res_type, k.param, k.code, false, NULL, ", n,
                      " FROM (SELECT DISTINCT res_type, res_id, param, code FROM ", rows,
                      ") k UNION ALL SELECT $1, k.res_type, k.param, k.code, true, k.system, ", n,
                      " FROM (SELECT DISTINCT res_type, res_id, param, code, system FROM ", rows, ") k");
}

}  // namespace

std::string EncodeIndex(const search::IndexEntries& e) {
  std::string out = "{";
  List(out, "s", e.strings, [&](const search::StringEntry& s) {
    Key(out, "f", s.folded);
    out += ',';
    Key(out, "e", s.exact);
  });
  List(out, "t", e.tokens, [&](const search::TokenEntry& t) {
    OptKey(out, "s", t.system);
    out += ',';
    Key(out, "c", t.code);
    out += ',';
    Key(out, "x", t.text);
    out += ',';
    OptKey(out, "ts", t.type_system);
    out += ',';
    OptKey(out, "tc", t.type_code);
  });
  List(out, "d", e.dates, [&](const search::DateEntry& d) { core::StrAppend(out, "\"l\":", d.lo, ",\"h\":", d.hi); });
  List(out, "r", e.references, [&](const search::ReferenceEntry& r) {
    Key(out, "tt", r.target_type);
    out += ',';
    Key(out, "ti", r.target_id);
    out += ',';
    Key(out, "u", r.url);
    out += ',';
    Key(out, "v", r.version);
  });
  List(out, "q", e.quantities, [&](const search::QuantityEntry& q) {
    Key(out, "l", q.low.empty() ? "-Infinity" : q.low);
    out += ',';
    Key(out, "h", q.high.empty() ? "Infinity" : q.high);
    out += ',';
    Key(out, "s", q.system);
    out += ',';
    Key(out, "c", q.code);
    out += ',';
    Key(out, "u", q.unit);
  });
  List(out, "u", e.uris, [&](const search::UriEntry& u) { Key(out, "u", u.uri); });
  if (!e.content.empty() || !e.narrative.empty()) {
    if (out.size() > 1) out += ',';
    Key(out, "c", e.content);
    out += ',';
    Key(out, "n", e.narrative);
  }
  out += '}';
  return out;
}

std::string IndexInsertCtes(int param) {
  std::string sql = core::StrCat(", ix AS (SELECT $", param, "::jsonb AS j)");
  for (const Table& t : kTables) {
    core::StrAppend(sql, ", i_", t.key, " AS (INSERT INTO ", t.table, " (tenant_id, res_type, res_id, param, grp, ",
                    t.columns, ") SELECT $1, $2, $3, x.p, x.g, ", t.select, " FROM ix, jsonb_to_recordset(ix.j->'",
                    t.key, "') AS x(p text, g int, ", t.record, "))");
  }
  // A resource's (code, date range) pairs of each combination, and whether
  // the resource has exactly one value of the date parameter.
  core::StrAppend(sql, ", i_td AS (INSERT INTO idx_token_date (tenant_id, res_type, res_id, token_param, date_param, "
                  "system, code, lo, hi, single) SELECT $1, $2, $3, k.tp, k.dp, t.s, t.c, d.l, d.h, "
                  "(SELECT count(*) FROM jsonb_to_recordset(ix.j->'d') AS e(p text) WHERE e.p = k.dp) = 1 FROM ix, ",
                  TokenDateComboValues("k"), ", jsonb_to_recordset(ix.j->'t') AS t(p text, s text, c text), "
                  "jsonb_to_recordset(ix.j->'d') AS d(p text, l bigint, h bigint) "
                  "WHERE k.rt = $2 AND t.p = k.tp AND d.p = k.dp)");
  // +1 for each code (and each system and code) the resource has, however
  // many times: idx_token_count_delta (migration 7).
  core::StrAppend(sql, ", i_tc AS (INSERT INTO idx_token_count_delta ", kCountColumns, " ",
                  CountDeltas("(SELECT x.p AS param, x.c AS code, x.s AS system FROM ix, "
                              "jsonb_to_recordset(ix.j->'t') AS x(p text, c text, s text))",
                              "1"),
                  ")");
  core::StrAppend(sql,
                  ", i_text AS (INSERT INTO idx_text (tenant_id, res_type, res_id, content, narrative) "
                  "SELECT $1, $2, $3, to_tsvector('simple', ix.j->>'c'), to_tsvector('simple', ix.j->>'n') "
                  "FROM ix WHERE ix.j ? 'c')");
  return sql;
}

std::string IndexInsertManyCtes() {
  std::string sql;
  for (const Table& t : kTables) {
    core::StrAppend(sql, ", m_", t.key, " AS (INSERT INTO ", t.table, " (tenant_id, res_type, res_id, param, grp, ",
                    t.columns, ") SELECT $1, k.t, k.i, x.p, x.g, ", t.select, " FROM k, jsonb_to_recordset(k.j->'",
                    t.key, "') AS x(p text, g int, ", t.record, ") WHERE k.j IS NOT NULL)");
  }
  core::StrAppend(sql, ", m_td AS (INSERT INTO idx_token_date (tenant_id, res_type, res_id, token_param, date_param, "
                  "system, code, lo, hi, single) SELECT $1, k.t, k.i, c.tp, c.dp, x.s, x.c, d.l, d.h, "
                  "(SELECT count(*) FROM jsonb_to_recordset(k.j->'d') AS e(p text) WHERE e.p = c.dp) = 1 FROM k, ",
                  TokenDateComboValues("c"), ", jsonb_to_recordset(k.j->'t') AS x(p text, s text, c text), "
                  "jsonb_to_recordset(k.j->'d') AS d(p text, l bigint, h bigint) "
                  "WHERE k.j IS NOT NULL AND c.rt = k.t AND x.p = c.tp AND d.p = c.dp)");
  // +1 for each code (and each system and code) of each resource.
  core::StrAppend(sql, ", m_tok AS (SELECT DISTINCT k.t AS res_type, k.i AS res_id, x.p AS param, x.c AS code, "
                  "x.s AS system FROM k, jsonb_to_recordset(k.j->'t') AS x(p text, c text, s text) "
                  "WHERE k.j IS NOT NULL)",
                  ", m_tc AS (INSERT INTO idx_token_count_delta ", kCountColumns, " ", CountDeltasMany("m_tok", "1"),
                  ")");
  core::StrAppend(sql,
                  ", m_text AS (INSERT INTO idx_text (tenant_id, res_type, res_id, content, narrative) "
                  "SELECT $1, k.t, k.i, to_tsvector('simple', k.j->>'c'), to_tsvector('simple', k.j->>'n') "
                  "FROM k WHERE k.j ? 'c')");
  return sql;
}

std::string IndexDeleteManyCtes() {
  std::string sql;
  for (const Table& t : kTables) {
    core::StrAppend(sql, ", n_", t.key, " AS (DELETE FROM ", t.table,
                    " x USING k WHERE k.existed AND x.tenant_id = $1 AND x.res_type = k.t AND x.res_id = k.i",
                    std::string_view(t.key) == "t" ? " RETURNING x.res_type, x.res_id, x.param, x.code, x.system)"
                                                   : ")");
  }
  core::StrAppend(sql, ", n_tc AS (INSERT INTO idx_token_count_delta ", kCountColumns, " ",
                  CountDeltasMany("n_t", "-1"), ")");
  for (const char* table : {"idx_token_date", "idx_text"}) {
    core::StrAppend(sql, ", n_", table, " AS (DELETE FROM ", table,
                    " x USING k WHERE k.existed AND x.tenant_id = $1 AND x.res_type = k.t AND x.res_id = k.i)");
  }
  return sql;
}

CopyRows& CopyRows::Raw(std::string_view value) {
  if (row_open_) text_ += '\t';
  row_open_ = true;
  text_ += value;
  return *this;
}

CopyRows& CopyRows::Text(std::string_view value) {
  if (row_open_) text_ += '\t';
  row_open_ = true;
  std::size_t start = 0;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    const char* escaped = c == '\\' ? "\\\\" : c == '\t' ? "\\t" : c == '\n' ? "\\n" : c == '\r' ? "\\r" : nullptr;
    if (escaped == nullptr) continue;
    text_.append(value.data() + start, i - start);
    text_ += escaped;
    start = i + 1;
  }
  text_.append(value.data() + start, value.size() - start);
  return *this;
}

CopyRows& CopyRows::Int(int64_t value) {
  char buf[24];
  const int n = std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(value));
  return Raw(std::string_view(buf, static_cast<std::size_t>(n)));
}

void CopyRows::EndRow() {
  text_ += '\n';
  row_open_ = false;
}

void CopyRows::Copy(pqxx::transaction_base& tx, const std::string& table, const std::vector<std::string>& columns) {
  if (text_.empty()) return;
  // libpqxx 6.4 sends raw COPY data only through tablewriter (stream_to
  // escapes and sends each row as its own message); it adds a newline to
  // what it is given, so the last one is dropped here.
  text_.pop_back();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  pqxx::tablewriter out(tx, table, columns.begin(), columns.end());
#pragma GCC diagnostic pop
  out.write_raw_line(text_);
  out.complete();
  text_.clear();
}

void CopyIndexRows(pqxx::transaction_base& tx, const std::string& tenant, const std::vector<PendingWrite>& writes) {
  // Each row as IndexInsertManyCtes builds it from the document: NULL for
  // an absent optional, "" for an empty string, open quantity ends as
  // -Infinity/Infinity. A connection has one COPY in progress at a time, so
  // the tables are filled one after the other.
  auto live = [&](auto&& fn) {
    for (const PendingWrite& w : writes) {
      if (w.method != "DELETE") fn(w, w.body.index);
    }
  };
  auto key = [&](CopyRows& rows, const PendingWrite& w) -> CopyRows& {
    return rows.Text(tenant).Text(w.key.type).Text(w.key.id);
  };
  CopyRows rows;
  live([&](const PendingWrite& w, const search::IndexEntries& e) {
    for (const search::StringEntry& x : e.strings) {
      key(rows, w).Text(x.param).Int(x.group).Text(x.folded).Text(x.exact).EndRow();
    }
  });
  rows.Copy(tx, "idx_string", {"tenant_id", "res_type", "res_id", "param", "grp", "folded", "exact"});
  live([&](const PendingWrite& w, const search::IndexEntries& e) {
    for (const search::TokenEntry& x : e.tokens) {
      key(rows, w)
          .Text(x.param)
          .Int(x.group)
          .OptText(x.system)
          .Text(x.code)
          .Text(x.text)
          .OptText(x.type_system)
          .OptText(x.type_code)
          .EndRow();
    }
  });
  rows.Copy(tx, "idx_token",
            {"tenant_id", "res_type", "res_id", "param", "grp", "system", "code", "text", "type_system", "type_code"});
  live([&](const PendingWrite& w, const search::IndexEntries& e) {
    for (const search::DateEntry& x : e.dates) key(rows, w).Text(x.param).Int(x.group).Int(x.lo).Int(x.hi).EndRow();
  });
  rows.Copy(tx, "idx_date", {"tenant_id", "res_type", "res_id", "param", "grp", "lo", "hi"});
  live([&](const PendingWrite& w, const search::IndexEntries& e) {
    for (const search::ReferenceEntry& x : e.references) {
      key(rows, w)
          .Text(x.param)
          .Int(x.group)
          .Text(x.target_type)
          .Text(x.target_id)
          .Text(x.url)
          .Text(x.version)
          .EndRow();
    }
  });
  rows.Copy(tx, "idx_reference",
            {"tenant_id", "res_type", "res_id", "param", "grp", "target_type", "target_id", "url", "version"});
  live([&](const PendingWrite& w, const search::IndexEntries& e) {
    for (const search::QuantityEntry& x : e.quantities) {
      key(rows, w)
          .Text(x.param)
          .Int(x.group)
          .Text(x.low.empty() ? "-Infinity" : x.low)
          .Text(x.high.empty() ? "Infinity" : x.high)
          .Text(x.system)
          .Text(x.code)
          .Text(x.unit)
          .EndRow();
    }
  });
  rows.Copy(tx, "idx_quantity",
            {"tenant_id", "res_type", "res_id", "param", "grp", "low", "high", "system", "code", "unit"});
  live([&](const PendingWrite& w, const search::IndexEntries& e) {
    for (const search::UriEntry& x : e.uris) key(rows, w).Text(x.param).Int(x.group).Text(x.uri).EndRow();
  });
  rows.Copy(tx, "idx_uri", {"tenant_id", "res_type", "res_id", "param", "grp", "uri"});
  live([&](const PendingWrite& w, const search::IndexEntries& e) {
    for (const TokenDateCombo& k : kTokenDateCombos) {
      if (w.key.type != k.type) continue;
      int dates = 0;
      for (const search::DateEntry& d : e.dates) dates += d.param == k.date_param ? 1 : 0;
      if (dates == 0) continue;
      for (const search::TokenEntry& t : e.tokens) {
        if (t.param != k.token_param) continue;
        for (const search::DateEntry& d : e.dates) {
          if (d.param != k.date_param) continue;
          key(rows, w)
              .Text(k.token_param)
              .Text(k.date_param)
              .OptText(t.system)
              .Text(t.code)
              .Int(d.lo)
              .Int(d.hi)
              .Bool(dates == 1)
              .EndRow();
        }
      }
    }
  });
  // span is generated from lo and hi.
  rows.Copy(tx, "idx_token_date",
            {"tenant_id", "res_type", "res_id", "token_param", "date_param", "system", "code", "lo", "hi", "single"});
  // +1 per distinct (param, code) and per distinct (param, system, code) of
  // each resource; std::set compares nullopt systems equal, as DISTINCT
  // does NULLs.
  live([&](const PendingWrite& w, const search::IndexEntries& e) {
    std::set<std::pair<std::string_view, std::string_view>> codes;
    std::set<std::tuple<std::string_view, std::string_view, std::optional<std::string_view>>> system_codes;
    for (const search::TokenEntry& t : e.tokens) {
      if (codes.emplace(t.param, t.code).second) {
        rows.Text(tenant).Text(w.key.type).Text(t.param).Text(t.code).Bool(false).Null().Int(1).EndRow();
      }
      std::optional<std::string_view> system;
      if (t.system) system = *t.system;
      if (system_codes.emplace(t.param, t.code, system).second) {
        rows.Text(tenant).Text(w.key.type).Text(t.param).Text(t.code).Bool(true).OptText(t.system).Int(1).EndRow();
      }
    }
  });
  rows.Copy(tx, "idx_token_count_delta", {"tenant_id", "res_type", "param", "code", "by_system", "system", "n"});
}

std::string OptionalTextArrayLiteral(const std::vector<std::optional<std::string>>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    if (!values[i]) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char c : *values[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

std::string TextArrayLiteral(const std::vector<std::string>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : values[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

ResourceVersion TypedRowToVersion(const pqxx::row& row) {
  ResourceVersion v;
  v.type = row[0].as<std::string>();
  v.id = row[1].as<std::string>();
  v.version = row[2].as<int64_t>();
  v.deleted = row[3].as<bool>();
  v.last_updated = core::FromUnixMicros(row[4].as<int64_t>());
  v.method = row[5].as<std::string>();
  if (!row[6].is_null()) v.body = row[6].as<std::string>();
  return v;
}

std::string IndexDeleteCtes() {
  std::string sql;
  for (const Table& t : kTables) {
    core::StrAppend(sql, ", d_", t.key, " AS (DELETE FROM ", t.table,
                    " WHERE tenant_id = $1 AND res_type = $2 AND res_id = $3",
                    std::string_view(t.key) == "t" ? " RETURNING param, code, system)" : ")");
  }
  core::StrAppend(sql, ", d_tc AS (INSERT INTO idx_token_count_delta ", kCountColumns, " ", CountDeltas("d_t", "-1"),
                  ")");
  core::StrAppend(sql, ", d_td AS (DELETE FROM idx_token_date WHERE tenant_id = $1 AND res_type = $2 AND res_id = $3)",
                  ", d_text AS (DELETE FROM idx_text WHERE tenant_id = $1 AND res_type = $2 AND res_id = $3)");
  return sql;
}

std::string DateSpanClassSql(std::string_view lo, std::string_view hi) {
  std::string sql = "CASE";
  for (int i = 0; i < kDateSpanClasses; ++i) {
    core::StrAppend(sql, " WHEN ", hi, "::numeric - ", lo, " <= ", kDateSpanWidths[i], " THEN ", i);
  }
  core::StrAppend(sql, " ELSE ", kDateSpanClasses, " END");
  return sql;
}

std::string TokenDateComboValues(std::string_view alias) {
  std::string sql = "(VALUES ";
  bool first = true;
  for (const TokenDateCombo& k : kTokenDateCombos) {
    core::StrAppend(sql, first ? "" : ", ", "('", k.type, "', '", k.token_param, "', '", k.date_param, "')");
    first = false;
  }
  core::StrAppend(sql, ") AS ", alias, "(rt, tp, dp)");
  return sql;
}

}  // namespace medgrid::store
