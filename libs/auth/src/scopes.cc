#include "medgrid/auth/scopes.h"

#include <algorithm>

#include "medgrid/core/strings.h"

namespace medgrid::auth {
namespace {

using Context = ResourceScope::Context;

absl::Status Malformed(std::string_view scope, std::string_view why) {
  return absl::InvalidArgumentError(core::StrCat("Malformed scope \"", scope, "\": ", why));
}

bool IsTypeName(std::string_view s) {
  if (s.empty() || s.size() > 64 || s[0] < 'A' || s[0] > 'Z') return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); });
}

struct Permissions {
  uint8_t bits = 0;  // 0: invalid
  bool v2 = false;
};

// v1 words, else v2 letters in "cruds" order, each at most once.
Permissions ParsePermissions(std::string_view s) {
  if (s == "read") return {kRead | kSearch, false};
  if (s == "write") return {kCreate | kUpdate | kDelete, false};
  if (s == "*") return {kAllInteractions, false};
  static constexpr std::pair<char, Interaction> kLetters[] = {
      {'c', kCreate}, {'r', kRead}, {'u', kUpdate}, {'d', kDelete}, {'s', kSearch}};
  uint8_t bits = 0;
  std::size_t next = 0;  // letters before kLetters[next] can no longer appear
  for (char c : s) {
    while (next < std::size(kLetters) && kLetters[next].first != c) ++next;
    if (next == std::size(kLetters)) return {};
    bits |= kLetters[next++].second;
  }
  return {bits, true};
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> PercentDecode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    int hi = i + 2 < s.size() ? HexValue(s[i + 1]) : -1;
    int lo = hi >= 0 ? HexValue(s[i + 2]) : -1;
    if (lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

}  // namespace

absl::StatusOr<std::optional<ResourceScope>> ParseResourceScope(std::string_view scope) {
  static constexpr std::pair<std::string_view, Context> kContexts[] = {
      {"patient/", Context::kPatient}, {"user/", Context::kUser}, {"system/", Context::kSystem}};
  const auto* prefix = std::find_if(std::begin(kContexts), std::end(kContexts),
                                    [&](const auto& p) { return scope.starts_with(p.first); });
  if (prefix == std::end(kContexts)) return std::nullopt;

  ResourceScope out;
  out.context = prefix->second;
  out.text = std::string(scope);
  std::string_view rest = scope.substr(prefix->first.size());
  std::string_view query;
  bool has_query = false;
  if (std::size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
    has_query = true;
  }
  std::size_t dot = rest.find('.');
  if (dot == std::string_view::npos) return Malformed(scope, "expected <type>.<permissions>");
  std::string_view type = rest.substr(0, dot);
  if (type != "*" && !IsTypeName(type)) return Malformed(scope, "bad resource type");
  out.type = std::string(type);
  Permissions permissions = ParsePermissions(rest.substr(dot + 1));
  if (permissions.bits == 0) return Malformed(scope, "bad permissions");
  out.interactions = permissions.bits;
  out.v2 = permissions.v2;
  if (!has_query) return out;

  if (!out.v2) return Malformed(scope, "query filters need v2 permissions");
  // An empty key or value could be read as "no constraint" downstream, widening the grant: refuse them.
  for (std::string_view pair : core::StrSplit(query, '&')) {
    std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos) return Malformed(scope, "filter pair without '='");
    std::optional<std::string> key = PercentDecode(pair.substr(0, eq));
    std::optional<std::string> value = PercentDecode(pair.substr(eq + 1));
    if (!key || !value) return Malformed(scope, "bad percent escape in filter");
    if (key->empty() || value->empty()) return Malformed(scope, "empty filter key or value");
    out.filter.emplace_back(*std::move(key), *std::move(value));
  }
  return out;
}

ScopeSet ScopeSet::Parse(std::string_view space_separated) {
  ScopeSet set;
  for (std::string_view scope : core::StrSplit(space_separated, ' ')) {
    if (!scope.empty()) set.Add(scope);
  }
  return set;
}

ScopeSet ScopeSet::FromList(const std::vector<std::string>& scopes) {
  ScopeSet set;
  for (const std::string& scope : scopes) {
    if (!scope.empty()) set.Add(scope);
  }
  return set;
}

void ScopeSet::Add(std::string_view scope) {
  absl::StatusOr<std::optional<ResourceScope>> parsed = ParseResourceScope(scope);
  if (!parsed.ok()) {
    rejected_.emplace_back(scope);
  } else if (parsed->has_value()) {
    resource_scopes_.push_back(**std::move(parsed));
  } else {
    plain_.emplace_back(scope);
  }
}

bool ScopeSet::Has(std::string_view plain_scope) const {
  return std::find(plain_.begin(), plain_.end(), plain_scope) != plain_.end();
}

std::vector<const ResourceScope*> ScopeSet::Granting(std::string_view type, Interaction interaction,
                                                     ContextMask contexts) const {
  std::vector<const ResourceScope*> out;
  for (const ResourceScope& s : resource_scopes_) {
    if ((contexts & ContextBit(s.context)) && (s.interactions & interaction) && (s.type == "*" || s.type == type)) {
      out.push_back(&s);
    }
  }
  return out;
}

ScopeSet::Grant ScopeSet::Check(std::string_view type, Interaction interaction, ContextMask contexts) const {
  std::vector<const ResourceScope*> granting = Granting(type, interaction, contexts);
  if (granting.empty()) return Grant::kDenied;
  bool full = std::any_of(granting.begin(), granting.end(), [](const ResourceScope* s) { return s->filter.empty(); });
  return full ? Grant::kFull : Grant::kFiltered;
}

bool ScopeSet::AnyContext(ResourceScope::Context c) const {
  return std::any_of(resource_scopes_.begin(), resource_scopes_.end(),
                     [c](const ResourceScope& s) { return s.context == c; });
}

}  // namespace medgrid::auth
