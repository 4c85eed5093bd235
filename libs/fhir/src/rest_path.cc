#include "medgrid/fhir/rest_path.h"

#include <cctype>
#include <charconv>
#include <vector>

#include "medgrid/core/strings.h"
#include "medgrid/core/status.h"
#include "medgrid/fhir/validator.h"

namespace medgrid::fhir {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes one segment; nullopt on a malformed escape.
std::optional<std::string> Decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = HexValue(s[i + 1]);
    int lo = HexValue(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

bool IsTypeName(std::string_view s) {
  if (s.empty() || s.size() > 64 || s[0] < 'A' || s[0] > 'Z') return false;
  for (char c : s) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

absl::Status NotSupported(std::string_view path) {
  return core::Error(absl::StatusCode::kNotFound, core::StrCat("No FHIR interaction at '", path, "'"))
      .Http(404)
      .Issue("not-supported");
}

absl::Status BadSegment(std::string_view what, std::string_view value) {
  // Echo the segment without control characters and cut it short, so an
  // error message cannot carry arbitrary bytes back to the client.
  std::string shown;
  for (char c : value.substr(0, 80)) shown += static_cast<unsigned char>(c) < 0x20 ? '?' : c;
  if (value.size() > 80) shown += "...";
  return core::Error(absl::StatusCode::kInvalidArgument, core::StrCat("Invalid ", what, " '", shown, "'"))
      .Http(400)
      .Issue("value");
}

}  // namespace

bool IsValidTenantId(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<RestPath> ParseRestPath(std::string_view path) {
  constexpr std::string_view kPrefix = "/fhir/";
  if (path.substr(0, kPrefix.size()) != kPrefix) return NotSupported(path);
  std::string_view rest = path.substr(kPrefix.size());
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  std::vector<std::string> segs;
  for (std::string_view raw : core::StrSplit(rest, '/')) {
    auto d = Decode(raw);
    if (!d) return BadSegment("URL segment", raw);
    segs.push_back(std::move(*d));
  }
  if (segs.empty() || segs[0].empty()) return NotSupported(path);
  RestPath p;
  if (!IsValidTenantId(segs[0])) return BadSegment("tenant", segs[0]);
  p.tenant = segs[0];
  const std::size_t n = segs.size();
  if (n == 1) {
    p.kind = RestPath::Kind::kSystem;
    return p;
  }
  if (n == 2 && segs[1] == "metadata") {
    p.kind = RestPath::Kind::kMetadata;
    return p;
  }
  if (n == 2 && segs[1] == "_history") {
    p.kind = RestPath::Kind::kSystemHistory;
    return p;
  }
  auto operation_name = [](const std::string& seg) {
    if (seg.size() < 2 || seg[0] != '$') return false;
    for (std::size_t i = 1; i < seg.size(); ++i) {
      if (!(std::isalnum(static_cast<unsigned char>(seg[i])) || seg[i] == '-')) return false;
    }
    return true;
  };
  if (n == 2 && operation_name(segs[1])) {
    p.kind = RestPath::Kind::kSystemOperation;
    p.operation = segs[1].substr(1);
    return p;
  }
  if (n == 2 && segs[1] == "_search") {
    p.kind = RestPath::Kind::kSystemSearch;
    return p;
  }
  if (!IsTypeName(segs[1])) return NotSupported(path);
  p.type = segs[1];
  if (n == 2) {
    p.kind = RestPath::Kind::kType;
    return p;
  }
  if (n == 3 && operation_name(segs[2])) {
    p.kind = RestPath::Kind::kTypeOperation;
    p.operation = segs[2].substr(1);
    return p;
  }
  if (segs[2] == "_search" && n == 3) {
    p.kind = RestPath::Kind::kTypeSearch;
    return p;
  }
  if (segs[2] == "_history") {
    if (n != 3) return NotSupported(path);
    p.kind = RestPath::Kind::kTypeHistory;
    return p;
  }
  if (!segs[2].empty() && (segs[2][0] == '$' || segs[2][0] == '_')) return NotSupported(path);
  // "." and ".." match the id syntax but cannot be addressed in a URL.
  if (!IsValidId(segs[2]) || segs[2] == "." || segs[2] == "..") return BadSegment("resource id", segs[2]);
  p.id = segs[2];
  if (n == 3) {
    p.kind = RestPath::Kind::kInstance;
    return p;
  }
  if (n == 4 && operation_name(segs[3])) {
    p.kind = RestPath::Kind::kInstanceOperation;
    p.operation = segs[3].substr(1);
    return p;
  }
  if (n == 4 && (segs[3] == "*" || IsTypeName(segs[3]))) {
    p.target = segs[3];
    p.kind = RestPath::Kind::kCompartment;
    return p;
  }
  if (segs[3] != "_history" || n > 5) return NotSupported(path);
  if (n == 4) {
    p.kind = RestPath::Kind::kInstanceHistory;
    return p;
  }
  const std::string& v = segs[4];
  long long version = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), version);
  if (ec != std::errc() || ptr != v.data() + v.size() || version < 1 || v[0] == '0') {
    return BadSegment("version id", v);
  }
  p.version = v;
  p.kind = RestPath::Kind::kVersion;
  return p;
}

std::optional<long long> ParseETagVersion(std::string_view etag) {
  if (etag.substr(0, 2) == "W/") etag.remove_prefix(2);
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
    etag = etag.substr(1, etag.size() - 2);
  }
  long long v = 0;
  auto [ptr, ec] = std::from_chars(etag.data(), etag.data() + etag.size(), v);
  if (etag.empty() || ec != std::errc() || ptr != etag.data() + etag.size() || v < 1) return std::nullopt;
  return v;
}

std::string FormatETag(long long version) { return core::StrCat("W/\"", version, "\""); }

std::optional<std::vector<std::pair<std::string, std::string>>> DecodeQuery(std::string_view query) {
  auto decode = [](std::string_view s) -> std::optional<std::string> {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '+') {
        out += ' ';
      } else if (s[i] == '%') {
        if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
            !std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
          return std::nullopt;
        }
        out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
        i += 2;
      } else {
        out += s[i];
      }
    }
    return out;
  };
  std::vector<std::pair<std::string, std::string>> out;
  for (std::string_view part : core::StrSplit(query, '&')) {
    if (part.empty()) continue;
    std::size_t eq = part.find('=');
    auto k = decode(part.substr(0, eq));
    auto val = decode(eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1));
    if (!k || !val) return std::nullopt;
    out.emplace_back(std::move(*k), std::move(*val));
  }
  return out;
}


}  // namespace medgrid::fhir
