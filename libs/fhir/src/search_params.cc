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

}  // namespace

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
        def->components.push_back({Str(c.get_object(), "definition"), Str(c.get_object(), "expression")});
      }
    }
    if (!def->expression.empty()) {
      absl::StatusOr<FhirPath> compiled = FhirPath::Parse(def->expression);
      if (!compiled.ok()) {
        return absl::InvalidArgumentError(
            core::StrCat("SearchParameter ", def->url, ": ", std::string(compiled.status().message())));
      }
      def->path = std::make_shared<const FhirPath>(std::move(*compiled));
    }
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
