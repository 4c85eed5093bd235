// The R4 type registry, built from the official StructureDefinitions.
//
// StructureRegistry loads `Bundle-resources.json` and `Bundle-types.json` from
// the npm package hl7.fhir.r4.examples (4.0.1) once at start-up and answers
// which resource types exist and what elements each type has. It is
// immutable after loading and safe to share between threads.
//
//   ASSIGN_OR_RETURN(auto registry, fhir::StructureRegistry::LoadFromPackage(dir));
//   if (!registry->IsResourceType("Patient")) ...
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace medgrid::fhir {

struct ElementNode;

// Hash for maps keyed by std::string that are looked up with a string_view
// (JSON keys), so that a look-up never builds a std::string.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// What an ElementNode describes.
enum class NodeKind : std::uint8_t {
  kBackbone,          // the inline children of a BackboneElement/Element, e.g. Patient.contact
  kComplexType,       // the root of a complex data type: HumanName, Quantity, Element, Extension, ...
  kPrimitiveType,     // the root of a primitive data type; see ElementNode::primitive
  kResource,          // the root of a concrete resource type
  kAbstractResource,  // Resource and DomainResource
};

// The R4 primitive types, so that format checks dispatch without comparing
// type names on every value.
enum class PrimitiveType : std::uint8_t {
  kNone,
  kBase64Binary,
  kBoolean,
  kCanonical,
  kCode,
  kDate,
  kDateTime,
  kDecimal,
  kId,
  kInstant,
  kInteger,
  kMarkdown,
  kOid,
  kPositiveInt,
  kString,
  kTime,
  kUnsignedInt,
  kUri,
  kUrl,
  kUuid,
  kXhtml,
};

// Invariant: no node has more than kMaxElementsPerNode elements (the largest
// in R4, ActivityDefinition, has 54), so the validator can track which
// elements of an object it has seen in a fixed-size array on the stack.
inline constexpr std::size_t kMaxElementsPerNode = 256;

// One element of a type, e.g. Patient.name or Observation.value[x].
struct ElementDef {
  std::string name;        // JSON name without "[x]", e.g. "value" for value[x]
  bool is_choice = false;  // value[x]: JSON name is name + TypeName
  int min = 0;             // minimum cardinality
  int max = 1;             // maximum cardinality, -1 for "*"
  bool is_summary = false; // part of the summary view (_summary=true)
  // Type codes: "string", "Quantity", "Reference", "Resource", ... FHIRPath
  // System types (http://hl7.org/fhirpath/System.String) are replaced by the
  // FHIR type they stand for ("string", "uri"; "id" for Resource.id).
  std::vector<std::string> types;
  // For BackboneElement/Element children defined inline (or via
  // contentReference), the node that describes them; null otherwise.
  const ElementNode* children = nullptr;
  // The root node of each type, parallel to `types` (primitive types have
  // root nodes too; "Resource" maps to the abstract Resource root). Resolved
  // at load time so that validation never looks a type up by name.
  std::vector<const ElementNode*> type_nodes;
  // True when the definition types the element with a FHIRPath System type
  // (element ids, Extension.url, Resource.id): a bare JSON value that cannot
  // carry a "_name" extension twin.
  bool plain_value = false;
};

// The elements directly under one path (a type's root, or a backbone element).
struct ElementNode {
  std::string path;                  // e.g. "Patient" or "Patient.contact"
  std::vector<ElementDef> elements;  // in definition order
  // Index from JSON name (without "[x]") to position in `elements`.
  StringMap<std::size_t> by_name;
  // Index from the JSON name of each choice variant ("valueQuantity") to
  // {position in `elements`, position in that element's `types`}.
  StringMap<std::pair<std::size_t, std::size_t>> choice_by_name;
  NodeKind kind = NodeKind::kBackbone;
  PrimitiveType primitive = PrimitiveType::kNone;  // set for kPrimitiveType roots
};

class StructureRegistry {
 public:
  // Loads every resource and data type definition from the package
  // directory `dir` (the `package/` folder of hl7.fhir.r4.examples).
  // Profiles (derivation "constraint", e.g. SimpleQuantity) and logical
  // models are skipped. Takes about 150 ms in a Release build, most of it
  // parsing the 35 MB Bundle-resources.json.
  // Errors: NotFound if the files are missing, InvalidArgument if they do
  // not parse as expected (including a node with more than
  // kMaxElementsPerNode elements or a type code with no definition).
  static absl::StatusOr<std::unique_ptr<const StructureRegistry>> LoadFromPackage(const std::string& dir);

  // True for concrete resource types (Patient, Observation, ...; not the
  // abstract Resource or DomainResource).
  bool IsResourceType(std::string_view name) const;
  // All concrete resource types, sorted.
  const std::vector<std::string>& ResourceTypes() const { return resource_types_; }
  // True for concrete resource types derived from DomainResource (all but
  // Bundle, Binary and Parameters).
  bool IsDomainResource(std::string_view name) const;
  // True for primitive types (string, date, boolean, ...).
  bool IsPrimitiveType(std::string_view name) const;
  // The root node of a type: resource (abstract ones included), complex or
  // primitive data type; null if unknown or a profile.
  const ElementNode* Root(std::string_view type_name) const;

 private:
  StructureRegistry() = default;
  friend class StructureRegistryBuilder;

  std::vector<std::string> resource_types_;
  std::set<std::string, std::less<>> domain_resources_;
  std::vector<std::string> primitive_types_;
  // Owns all nodes; roots_ maps a type name to its root node.
  std::vector<std::unique_ptr<ElementNode>> nodes_;
  StringMap<const ElementNode*> roots_;
};

}  // namespace medgrid::fhir
