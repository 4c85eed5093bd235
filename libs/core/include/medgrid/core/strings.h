// String concatenation on std::string_view.
//
// Debian's Abseil is built in pre-C++17 mode, so absl::string_view is not
// std::string_view and absl::StrCat rejects std::string_view arguments. These
// small helpers take std::string_view, integers and chars.
//
//   std::string s = core::StrCat("Patient/", id, "/_history/", version);
#pragma once

#include <concepts>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace medgrid::core {

namespace strings_internal {
inline void Append(std::string& out, std::string_view s) { out.append(s.data(), s.size()); }
inline void Append(std::string& out, char c) { out.push_back(c); }
template <typename T>
  requires(std::integral<T> && !std::same_as<T, char> && !std::same_as<T, bool>)
void Append(std::string& out, T v) {
  out += std::to_string(v);
}
}  // namespace strings_internal

template <typename... Args>
void StrAppend(std::string& out, const Args&... args) {
  (strings_internal::Append(out, args), ...);
}

template <typename... Args>
std::string StrCat(const Args&... args) {
  std::string out;
  StrAppend(out, args...);
  return out;
}

// Splits on `sep`, keeping empty pieces. Views point into `s`.
std::vector<std::string_view> StrSplit(std::string_view s, char sep);

// Replaces every occurrence of `from` in `s` by `to`.
std::string StrReplaceAll(std::string_view s, std::string_view from, std::string_view to);

// Appends code point `cp` as UTF-8. NUL, surrogates and values above
// U+10FFFF are not characters and are dropped.
void AppendUtf8(std::string& out, uint32_t cp);

// Decodes base64 (RFC 4648 section 4), or with `url_safe` its URL and file
// name alphabet (section 5). Padding is optional; the standard alphabet
// also skips whitespace (line-wrapped data). nullopt for any other
// character.
std::optional<std::string> Base64Decode(std::string_view in, bool url_safe = false);

}  // namespace medgrid::core
