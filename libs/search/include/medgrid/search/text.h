// Text normalisation shared by indexing and querying, so both sides of a
// string comparison are folded the same way.
#pragma once

#include <string>
#include <string_view>

namespace medgrid::search {

// Case- and accent-insensitive form of `text` (UTF-8), for string search:
// canonical decomposition (NFD), combining marks removed, Unicode case
// folding, whitespace runs collapsed to one space and trimmed. "Élodie
// ÇAĞLAR" and "elodie caglar" fold to the same string. Invalid UTF-8
// sequences are dropped.
std::string FoldText(std::string_view text);

}  // namespace medgrid::search
