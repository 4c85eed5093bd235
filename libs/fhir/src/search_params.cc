#include "medgrid/fhir/search_params.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "boost/json.hpp"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::fhir {
namespace json = boost::json;

namespace {

std::string Str(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string();
}

std::vector<std::string> Strings(const json::object& o, std::string_view key) {
  std::vector<std::string> out;
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_array()) return out;
  for (const json::value& e : v->get_array()) {
    if (e.is_string()) out.emplace_back(e.get_string());
  }
  return out;
}

absl::Status Malformed(std::string_view what) {
  return absl::InvalidArgumentError(core::StrCat("Malformed Bundle-searchParams.json: ", what));
}

// `expression` compiled. Errors name the parameter `url`, then `context`
// (which of its expressions failed; empty for the main one).
absl::StatusOr<std::shared_ptr<const FhirPath>> Compile(std::string_view url, std::string_view expression,
                                                        std::string_view context) {
  absl::StatusOr<FhirPath> compiled = FhirPath::Parse(expression);
  if (!compiled.ok()) {
    return absl::InvalidArgumentError(
        core::StrCat("SearchParameter ", url, ": ", context, std::string(compiled.status().message())));
  }
  return std::make_shared<const FhirPath>(*std::move(compiled));
}

// One SearchParameter resource as a definition, its expressions compiled.
absl::StatusOr<std::unique_ptr<SearchParamDef>> ParseDef(const json::object& sp) {
  auto def = std::make_unique<SearchParamDef>();
  def->url = Str(sp, "url");
  def->code = Str(sp, "code");
  def->type = Str(sp, "type");
  def->base = Strings(sp, "base");
  def->expression = Str(sp, "expression");
  def->targets = Strings(sp, "target");
  def->comparators = Strings(sp, "comparator");
  if (def->url.empty() || def->code.empty() || def->type.empty() || def->base.empty()) {
    return Malformed(core::StrCat("SearchParameter '", def->url, "' lacks url, code, type or base"));
  }
  if (const json::value* components = sp.if_contains("component"); components != nullptr && components->is_array()) {
    for (const json::value& c : components->get_array()) {
      if (!c.is_object()) return Malformed(core::StrCat(def->url, " has a malformed component"));
      SearchParamComponent component{Str(c.get_object(), "definition"), Str(c.get_object(), "expression"), nullptr};
      ASSIGN_OR_RETURN(component.path, Compile(def->url, component.expression,
                                               core::StrCat("component ", def->components.size(), " '",
                                                            component.expression, "': ")));
      def->components.push_back(std::move(component));
    }
  }
  if (!def->expression.empty()) {
    ASSIGN_OR_RETURN(def->path, Compile(def->url, def->expression, ""));
  }
  return def;
}

absl::Status Invalid(std::string message) {
  return core::Error(absl::StatusCode::kInvalidArgument, std::move(message)).Http(400).Issue("invalid");
}

}  // namespace

absl::StatusOr<std::unique_ptr<const SearchParamDef>> SearchParamRegistry::CustomDef(
    const json::object& resource, const StructureRegistry& structures) const {
  absl::StatusOr<std::unique_ptr<SearchParamDef>> parsed = ParseDef(resource);
  if (!parsed.ok()) return Invalid(std::string(parsed.status().message()));
  std::unique_ptr<SearchParamDef> def = *std::move(parsed);
  static constexpr std::string_view kTypes[] = {"number", "date",      "string",   "token", "reference",
                                                "composite", "quantity", "uri"};
  if (std::find(std::begin(kTypes), std::end(kTypes), def->type) == std::end(kTypes)) {
    return Invalid(core::StrCat("SearchParameter type '", def->type, "' cannot be a custom parameter"));
  }
  if (def->expression.empty()) return Invalid("A custom SearchParameter needs an expression");
  for (char c : def->code) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') || def->code[0] == '_') {
      return Invalid(core::StrCat("SearchParameter code '", def->code,
                                  "' must be letters, digits, '-' and '_', not starting with '_'"));
    }
  }
  for (const std::string& base : def->base) {
    if (base != "Resource" && base != "DomainResource" && !structures.IsResourceType(base)) {
      return Invalid(core::StrCat("SearchParameter base '", base, "' is not a resource type"));
    }
    if (base != "Resource" && base != "DomainResource" && Find(base, def->code) != nullptr &&
        Find(base, def->code)->url != def->url) {
      return Invalid(core::StrCat(base, " already has a search parameter '", def->code, "'"));
    }
  }
  for (const std::string& target : def->targets) {
    if (!structures.IsResourceType(target)) {
      return Invalid(core::StrCat("SearchParameter target '", target, "' is not a resource type"));
    }
  }
  for (const SearchParamComponent& c : def->components) {
    if (ByUrl(c.definition) == nullptr) {
      return Invalid(core::StrCat("SearchParameter component definition '", c.definition, "' is not known"));
    }
  }
  return std::unique_ptr<const SearchParamDef>(std::move(def));
}

absl::StatusOr<std::unique_ptr<const SearchParamRegistry>> SearchParamRegistry::Extend(
    std::vector<std::unique_ptr<const SearchParamDef>> custom, const StructureRegistry& structures) const {
  std::unique_ptr<SearchParamRegistry> out(new SearchParamRegistry());
  out->by_type_code_ = by_type_code_;
  out->by_url_ = by_url_;
  for (auto& def : custom) {
    out->by_url_[def->url] = def.get();
    for (const std::string& base : def->base) {
      if (base == "Resource" || base == "DomainResource") {
        for (const std::string& type : structures.ResourceTypes()) {
          if (base == "Resource" || structures.IsDomainResource(type)) {
            out->by_type_code_.emplace(core::StrCat(type, "/", def->code), def.get());
          }
        }
      } else {
        out->by_type_code_.emplace(core::StrCat(base, "/", def->code), def.get());
      }
    }
    out->custom_.push_back(std::move(def));
  }
  return std::unique_ptr<const SearchParamRegistry>(std::move(out));
}

absl::StatusOr<std::unique_ptr<const SearchParamRegistry>> SearchParamRegistry::LoadFromPackage(
    const std::string& dir, const StructureRegistry& structures) {
  const std::string path = dir + "/Bundle-searchParams.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(core::StrCat("Cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  json::error_code ec;
  json::value bundle = json::parse(text.str(), ec);
  if (ec || !bundle.is_object()) return Malformed("not a JSON object");
  const json::value* entries = bundle.get_object().if_contains("entry");
  if (entries == nullptr || !entries->is_array()) return Malformed("no entry array");

  std::unique_ptr<SearchParamRegistry> registry(new SearchParamRegistry());
  for (const json::value& entry : entries->get_array()) {
    const json::value* resource = entry.is_object() ? entry.get_object().if_contains("resource") : nullptr;
    if (resource == nullptr || !resource->is_object()) return Malformed("an entry has no resource");
    const json::object& sp = resource->get_object();
    if (Str(sp, "resourceType") != "SearchParameter") continue;
    ASSIGN_OR_RETURN(std::unique_ptr<SearchParamDef> def, ParseDef(sp));
    registry->defs_.push_back(std::move(def));
  }

  for (const auto& def : registry->defs_) {
    registry->by_url_.emplace(def->url, def.get());
    for (const std::string& base : def->base) {
      // A type's own definition overwrites; a Resource or DomainResource one
      // only fills a gap (emplace), whatever the order in the file.
      if (base == "Resource" || base == "DomainResource") {
        for (const std::string& type : structures.ResourceTypes()) {
          if (base == "Resource" || structures.IsDomainResource(type)) {
            registry->by_type_code_.emplace(core::StrCat(type, "/", def->code), def.get());
          }
        }
      } else {
        registry->by_type_code_[core::StrCat(base, "/", def->code)] = def.get();
      }
    }
  }
  return std::unique_ptr<const SearchParamRegistry>(std::move(registry));
}

const SearchParamDef* SearchParamRegistry::Find(std::string_view type, std::string_view code) const {
  auto it = by_type_code_.find(core::StrCat(type, "/", code));
  return it == by_type_code_.end() ? nullptr : it->second;
}

std::vector<const SearchParamDef*> SearchParamRegistry::ForType(std::string_view type) const {
  std::vector<const SearchParamDef*> out;
  const std::string prefix = core::StrCat(type, "/");
  for (auto it = by_type_code_.lower_bound(prefix); it != by_type_code_.end() && it->first.starts_with(prefix); ++it) {
    out.push_back(it->second);
  }
  return out;  // map order: sorted by code
}

const SearchParamDef* SearchParamRegistry::ByUrl(std::string_view url) const {
  auto it = by_url_.find(url);
  return it == by_url_.end() ? nullptr : it->second;
}

}  // namespace medgrid::fhir
