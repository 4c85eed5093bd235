// Hash maps keyed by std::string that are looked up by std::string_view.
// Debian's Abseil has its own absl::string_view, so its default string hash
// does not accept std::string_view; these functors do.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"

namespace medgrid::cache {

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

struct StringViewEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};

template <typename K, typename V>
using StringMap = absl::flat_hash_map<K, V, StringViewHash, StringViewEq>;

}  // namespace medgrid::cache
