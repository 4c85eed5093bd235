// Builds the StructureRegistry from the snapshots of the base R4
// StructureDefinitions.
//
// Invariants once LoadFromPackage returns:
// - every type code in every ElementDef resolves to a root in roots_, and
//   ElementDef::type_nodes holds those roots in the same order as `types`;
// - an element with inline children (BackboneElement/Element) or a
//   contentReference has `children` set; every other element gets its
//   children from its type's root;
// - elements with max "0" are absent, so the validator reports them as
//   unknown;
// - no node has more than kMaxElementsPerNode elements.
#include "medgrid/fhir/structure.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>

#include "boost/json.hpp"
#include "medgrid/core/strings.h"

namespace medgrid::fhir {
namespace json = boost::json;

namespace {

constexpr std::string_view kSystemTypePrefix = "http://hl7.org/fhirpath/System.";
constexpr std::string_view kFhirTypeExtension = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type";

constexpr std::array<std::pair<std::string_view, PrimitiveType>, 20> kPrimitiveNames = {{
    {"base64Binary", PrimitiveType::kBase64Binary},
    {"boolean", PrimitiveType::kBoolean},
    {"canonical", PrimitiveType::kCanonical},
    {"code", PrimitiveType::kCode},
    {"date", PrimitiveType::kDate},
    {"dateTime", PrimitiveType::kDateTime},
    {"decimal", PrimitiveType::kDecimal},
    {"id", PrimitiveType::kId},
    {"instant", PrimitiveType::kInstant},
    {"integer", PrimitiveType::kInteger},
    {"markdown", PrimitiveType::kMarkdown},
    {"oid", PrimitiveType::kOid},
    {"positiveInt", PrimitiveType::kPositiveInt},
    {"string", PrimitiveType::kString},
    {"time", PrimitiveType::kTime},
    {"unsignedInt", PrimitiveType::kUnsignedInt},
    {"uri", PrimitiveType::kUri},
    {"url", PrimitiveType::kUrl},
    {"uuid", PrimitiveType::kUuid},
    {"xhtml", PrimitiveType::kXhtml},
}};

PrimitiveType PrimitiveByName(std::string_view name) {
  for (const auto& [n, p] : kPrimitiveNames) {
    if (n == name) return p;
  }
  return PrimitiveType::kNone;
}

std::string_view View(const json::string& s) { return std::string_view(s.data(), s.size()); }

// The string member `key` of `obj`, or empty when absent or not a string.
std::string_view StringMember(const json::object& obj, std::string_view key) {
  const json::value* v = obj.if_contains(key);
  if (v == nullptr || !v->is_string()) return {};
  return View(v->get_string());
}

absl::Status Malformed(std::string_view what) {
  return absl::InvalidArgumentError(core::StrCat("Malformed StructureDefinition bundle: ", what));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(core::StrCat("Cannot open ", path));
  std::string text;
  char buf[1 << 16];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::DataLossError(core::StrCat("Cannot read ", path));
  return text;
}

}  // namespace

// Accumulates nodes from the StructureDefinitions, then links types.
class StructureRegistryBuilder {
 public:
  StructureRegistryBuilder() : registry_(new StructureRegistry()) {}

  absl::Status AddBundle(const json::value& bundle, std::string_view file) {
    const json::object* obj = bundle.if_object();
    const json::value* entries = obj != nullptr ? obj->if_contains("entry") : nullptr;
    if (entries == nullptr || !entries->is_array()) return Malformed(core::StrCat(file, " has no entry array"));
    for (const json::value& entry : entries->get_array()) {
      const json::value* resource = entry.is_object() ? entry.get_object().if_contains("resource") : nullptr;
      if (resource == nullptr || !resource->is_object())
        return Malformed(core::StrCat(file, " has an entry without resource"));
      const json::object& sd = resource->get_object();
      if (StringMember(sd, "resourceType") != "StructureDefinition") continue;
      if (absl::Status st = AddStructureDefinition(sd); !st.ok()) return st;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<const StructureRegistry>> Finish() {
    StructureRegistry& r = *registry_;
    for (const char* required : {"Element", "Resource", "Extension"}) {
      if (r.roots_.find(std::string_view(required)) == r.roots_.end()) {
        return Malformed(core::StrCat("no definition of ", required));
      }
    }
    for (const auto& node : r.nodes_) {
      if (node->elements.size() > kMaxElementsPerNode) {
        return Malformed(core::StrCat(node->path, " has more than ", kMaxElementsPerNode, " elements"));
      }
      for (std::size_t i = 0; i < node->elements.size(); ++i) {
        ElementDef& def = node->elements[i];
        def.type_nodes.clear();
        for (std::size_t t = 0; t < def.types.size(); ++t) {
          auto it = r.roots_.find(def.types[t]);
          if (it == r.roots_.end()) {
            return Malformed(core::StrCat(node->path, ".", def.name, " has unknown type ", def.types[t]));
          }
          def.type_nodes.push_back(it->second);
          if (def.is_choice) {
            std::string variant = def.name + def.types[t];
            variant[def.name.size()] =
                static_cast<char>(std::toupper(static_cast<unsigned char>(variant[def.name.size()])));
            node->choice_by_name.emplace(std::move(variant), std::make_pair(i, t));
          }
        }
        // The validator records a choice's variant as 1 + its index in a byte.
        if (def.types.size() >= 255) {
          return Malformed(core::StrCat(node->path, ".", def.name, " has too many types"));
        }
        if (def.types.empty() && def.children == nullptr) {
          return Malformed(core::StrCat(node->path, ".", def.name, " has neither type nor children"));
        }
      }
    }
    std::sort(r.resource_types_.begin(), r.resource_types_.end());
    std::sort(r.primitive_types_.begin(), r.primitive_types_.end());
    return std::unique_ptr<const StructureRegistry>(std::move(registry_));
  }

 private:
  struct DefLocation {
    ElementNode* node;
    std::size_t index;
  };
  struct PendingReference {
    DefLocation at;
    std::string target;  // path without '#'
  };

  ElementNode* NewNode(std::string path, NodeKind kind) {
    registry_->nodes_.push_back(std::make_unique<ElementNode>());
    ElementNode* node = registry_->nodes_.back().get();
    node->path = std::move(path);
    node->kind = kind;
    return node;
  }

  absl::Status AddStructureDefinition(const json::object& sd) {
    const std::string_view kind = StringMember(sd, "kind");
    const std::string_view derivation = StringMember(sd, "derivation");
    // Profiles (SimpleQuantity, MoneyQuantity, ...) constrain a type rather
    // than define one, and logical models have no JSON form.
    if (derivation == "constraint" || kind == "logical") return absl::OkStatus();
    const std::string_view type = StringMember(sd, "type");
    if (type.empty()) return Malformed("StructureDefinition without type");
    const json::value* abstract = sd.if_contains("abstract");
    const bool is_abstract = abstract != nullptr && abstract->is_bool() && abstract->get_bool();

    NodeKind node_kind;
    if (kind == "resource") {
      node_kind = is_abstract ? NodeKind::kAbstractResource : NodeKind::kResource;
    } else if (kind == "primitive-type") {
      node_kind = NodeKind::kPrimitiveType;
    } else if (kind == "complex-type") {
      node_kind = NodeKind::kComplexType;
    } else {
      return Malformed(core::StrCat(type, " has unknown kind ", kind));
    }
    if (registry_->roots_.find(type) != registry_->roots_.end()) {
      return Malformed(core::StrCat(type, " is defined twice"));
    }

    ElementNode* root = NewNode(std::string(type), node_kind);
    if (node_kind == NodeKind::kPrimitiveType) {
      root->primitive = PrimitiveByName(type);
      if (root->primitive == PrimitiveType::kNone) return Malformed(core::StrCat("unknown primitive type ", type));
      registry_->primitive_types_.emplace_back(type);
    } else if (node_kind == NodeKind::kResource) {
      registry_->resource_types_.emplace_back(type);
      if (StringMember(sd, "baseDefinition") == "http://hl7.org/fhir/StructureDefinition/DomainResource") {
        registry_->domain_resources_.emplace(type);
      }
    }
    registry_->roots_.emplace(std::string(type), root);

    const json::value* snapshot = sd.if_contains("snapshot");
    const json::value* elements =
        snapshot != nullptr && snapshot->is_object() ? snapshot->get_object().if_contains("element") : nullptr;
    if (elements == nullptr || !elements->is_array()) return Malformed(core::StrCat(type, " has no snapshot"));

    // Local to this definition: backbone paths resolve only within it.
    StringMap<ElementNode*> nodes;
    StringMap<DefLocation> defs;
    std::vector<PendingReference> references;
    nodes.emplace(std::string(type), root);

    for (const json::value& ev : elements->get_array()) {
      if (!ev.is_object()) return Malformed(core::StrCat(type, " has a non-object element"));
      const json::object& e = ev.get_object();
      const std::string_view path = StringMember(e, "path");
      if (path == type) continue;  // the root element itself
      const std::size_t dot = path.rfind('.');
      if (dot == std::string_view::npos) return Malformed(core::StrCat("element path ", path, " outside ", type));
      const std::string_view parent_path = path.substr(0, dot);
      std::string_view name = path.substr(dot + 1);

      ElementNode* parent;
      if (auto it = nodes.find(parent_path); it != nodes.end()) {
        parent = it->second;
      } else if (auto d = defs.find(parent_path); d != defs.end()) {
        // The first child of a BackboneElement/Element: give it a node.
        parent = NewNode(std::string(parent_path), NodeKind::kBackbone);
        d->second.node->elements[d->second.index].children = parent;
        nodes.emplace(std::string(parent_path), parent);
      } else {
        // A child of an element dropped for max "0".
        continue;
      }

      const std::string_view max_text = StringMember(e, "max");
      int max = -1;
      if (max_text != "*") {
        auto [end, ec] = std::from_chars(max_text.data(), max_text.data() + max_text.size(), max);
        if (ec != std::errc() || end != max_text.data() + max_text.size() || max < 0) {
          return Malformed(core::StrCat(path, " has bad max '", max_text, "'"));
        }
      }
      if (max == 0) continue;  // prohibited, e.g. xhtml.extension

      ElementDef def;
      def.max = max;
      const json::value* min = e.if_contains("min");
      def.min = min != nullptr && min->is_int64() ? static_cast<int>(min->get_int64()) : 0;
      const json::value* summary = e.if_contains("isSummary");
      def.is_summary = summary != nullptr && summary->is_bool() && summary->get_bool();
      def.is_choice = name.ends_with("[x]");
      if (def.is_choice) name.remove_suffix(3);
      def.name = std::string(name);

      if (const json::value* types = e.if_contains("type"); types != nullptr && types->is_array()) {
        for (const json::value& tv : types->get_array()) {
          if (!tv.is_object()) return Malformed(core::StrCat(path, " has a bad type"));
          const json::object& t = tv.get_object();
          std::string_view code = StringMember(t, "code");
          if (code.starts_with(kSystemTypePrefix)) {
            // FHIRPath System types mark bare JSON values; the
            // structuredefinition-fhir-type extension says which FHIR type
            // they hold (string for ids, uri for Extension.url).
            def.plain_value = true;
            std::string_view fhir_type = "string";
            if (const json::value* exts = t.if_contains("extension"); exts != nullptr && exts->is_array()) {
              for (const json::value& x : exts->get_array()) {
                if (x.is_object() && StringMember(x.get_object(), "url") == kFhirTypeExtension) {
                  fhir_type = StringMember(x.get_object(), "valueUrl");
                }
              }
            }
            code = fhir_type;
            // The JSON schema types Resource.id as id, which the R4
            // snapshots only record as System.String.
            if (name == "id" && parent == root &&
                (node_kind == NodeKind::kResource || node_kind == NodeKind::kAbstractResource)) {
              code = "id";
            }
          }
          if (code.empty()) return Malformed(core::StrCat(path, " has a type without code"));
          def.types.emplace_back(code);
        }
      }

      const std::size_t index = parent->elements.size();
      if (!parent->by_name.emplace(def.name, index).second) {
        return Malformed(core::StrCat(path, " is defined twice"));
      }
      parent->elements.push_back(std::move(def));
      const DefLocation location{parent, index};
      defs.emplace(std::string(path), location);

      const std::string_view reference = StringMember(e, "contentReference");
      if (!reference.empty()) {
        if (!reference.starts_with('#')) return Malformed(core::StrCat(path, " has external contentReference"));
        references.push_back({location, std::string(reference.substr(1))});
      }
    }

    // Resolved after the whole snapshot, since a reference may point to an
    // element defined after it.
    for (const PendingReference& ref : references) {
      auto d = defs.find(ref.target);
      if (d == defs.end()) return Malformed(core::StrCat("contentReference to unknown #", ref.target));
      const ElementDef& target = d->second.node->elements[d->second.index];
      ElementDef& def = ref.at.node->elements[ref.at.index];
      def.children = target.children;
      if (def.types.empty()) def.types = target.types;
    }
    return absl::OkStatus();
  }

  std::unique_ptr<StructureRegistry> registry_;
};

absl::StatusOr<std::unique_ptr<const StructureRegistry>> StructureRegistry::LoadFromPackage(const std::string& dir) {
  StructureRegistryBuilder builder;
  for (const char* file : {"Bundle-types.json", "Bundle-resources.json"}) {
    absl::StatusOr<std::string> text = ReadFile(core::StrCat(dir, "/", file));
    if (!text.ok()) return text.status();
    // The 35 MB resources bundle is parsed into a monotonic arena that is
    // dropped as a whole once the registry has copied what it needs.
    json::monotonic_resource arena;
    json::error_code ec;
    json::value doc = json::parse(*text, ec, &arena);
    if (ec) return absl::InvalidArgumentError(core::StrCat(file, " is not valid JSON: ", ec.message()));
    if (absl::Status st = builder.AddBundle(doc, file); !st.ok()) return st;
  }
  return builder.Finish();
}

bool StructureRegistry::IsResourceType(std::string_view name) const {
  const ElementNode* root = Root(name);
  return root != nullptr && root->kind == NodeKind::kResource;
}

bool StructureRegistry::IsDomainResource(std::string_view name) const {
  return domain_resources_.find(name) != domain_resources_.end();
}

bool StructureRegistry::IsPrimitiveType(std::string_view name) const {
  const ElementNode* root = Root(name);
  return root != nullptr && root->kind == NodeKind::kPrimitiveType;
}

const ElementNode* StructureRegistry::Root(std::string_view type_name) const {
  auto it = roots_.find(type_name);
  return it == roots_.end() ? nullptr : it->second;
}

}  // namespace medgrid::fhir
