#include "medgrid/fhir/compartments.h"

#include <fstream>
#include <sstream>

#include "boost/json.hpp"
#include "medgrid/core/strings.h"

namespace medgrid::fhir {
namespace json = boost::json;

absl::StatusOr<std::unique_ptr<const CompartmentRegistry>> CompartmentRegistry::LoadFromPackage(
    const std::string& dir) {
  std::unique_ptr<CompartmentRegistry> reg(new CompartmentRegistry());
  for (const char* name : {"patient", "encounter", "relatedPerson", "practitioner", "device"}) {
    const std::string path = core::StrCat(dir, "/CompartmentDefinition-", name, ".json");
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(core::StrCat("Cannot read ", path));
    std::stringstream text;
    text << in.rdbuf();
    boost::system::error_code ec;
    json::value doc = json::parse(text.str(), ec);
    const json::object* o = ec ? nullptr : doc.if_object();
    const json::value* code = o ? o->if_contains("code") : nullptr;
    const json::value* resources = o ? o->if_contains("resource") : nullptr;
    if (code == nullptr || !code->is_string() || resources == nullptr || !resources->is_array()) {
      return absl::InvalidArgumentError(core::StrCat(path, " is not a CompartmentDefinition"));
    }
    auto& by_type = reg->params_[std::string(code->get_string())];
    for (const json::value& r : resources->get_array()) {
      const json::object* ro = r.if_object();
      const json::value* type = ro ? ro->if_contains("code") : nullptr;
      if (type == nullptr || !type->is_string()) return absl::InvalidArgumentError(core::StrCat(path, ": bad resource"));
      std::vector<std::string>& params = by_type[std::string(type->get_string())];
      if (const json::value* ps = ro->if_contains("param"); ps != nullptr && ps->is_array()) {
        for (const json::value& p : ps->get_array()) {
          if (p.is_string()) params.emplace_back(p.get_string());
        }
      }
    }
  }
  return std::unique_ptr<const CompartmentRegistry>(std::move(reg));
}

bool CompartmentRegistry::IsCompartment(std::string_view compartment) const {
  return params_.find(compartment) != params_.end();
}

const std::vector<std::string>& CompartmentRegistry::Params(std::string_view compartment,
                                                           std::string_view type) const {
  static const std::vector<std::string> kNone;
  auto c = params_.find(compartment);
  if (c == params_.end()) return kNone;
  auto t = c->second.find(type);
  return t == c->second.end() ? kNone : t->second;
}

}  // namespace medgrid::fhir
