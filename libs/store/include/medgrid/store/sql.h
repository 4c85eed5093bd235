// Small helpers for SQL text that libpqxx 6 does not provide.
#pragma once

#include <string>
#include <vector>

namespace medgrid::store {

// A PostgreSQL text[] literal ({"a","b"}) of `values`, for one bind parameter.
std::string TextArrayLiteral(const std::vector<std::string>& values);

}  // namespace medgrid::store
