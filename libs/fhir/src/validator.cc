// Structural validation of R4 JSON against the StructureRegistry.
//
// One Walker per Validate call walks the JSON once, depth first, keeping the
// current FHIRPath in a single string buffer that grows and shrinks with the
// walk. Nothing is allocated per element on the happy path: names are looked
// up with string_views in the registry's hash maps, the set of elements seen
// in an object lives in a stack array (kMaxElementsPerNode bounds it), and
// strings are only built when an issue is reported.
#include "medgrid/fhir/validator.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "boost/json.hpp"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/json.h"

namespace medgrid::fhir {
namespace json = boost::json;

namespace {

constexpr std::string_view kStructure = "structure";
constexpr std::string_view kRequired = "required";
constexpr std::string_view kValue = "value";
constexpr std::string_view kInvalid = "invalid";

// Values quoted in messages are cut to this many bytes, so that one huge
// string cannot blow up the OperationOutcome.
constexpr std::size_t kMaxQuotedValue = 64;

std::string_view View(json::string_view s) { return std::string_view(s.data(), s.size()); }

bool IsPlainString(const json::value& v) { return v.is_string() && !IsDecimal(v); }

std::string_view PrimitiveName(PrimitiveType p) {
  switch (p) {
    case PrimitiveType::kBase64Binary:
      return "base64Binary";
    case PrimitiveType::kBoolean:
      return "boolean";
    case PrimitiveType::kCanonical:
      return "canonical";
    case PrimitiveType::kCode:
      return "code";
    case PrimitiveType::kDate:
      return "date";
    case PrimitiveType::kDateTime:
      return "dateTime";
    case PrimitiveType::kDecimal:
      return "decimal";
    case PrimitiveType::kId:
      return "id";
    case PrimitiveType::kInstant:
      return "instant";
    case PrimitiveType::kInteger:
      return "integer";
    case PrimitiveType::kMarkdown:
      return "markdown";
    case PrimitiveType::kOid:
      return "oid";
    case PrimitiveType::kPositiveInt:
      return "positiveInt";
    case PrimitiveType::kString:
      return "string";
    case PrimitiveType::kTime:
      return "time";
    case PrimitiveType::kUnsignedInt:
      return "unsignedInt";
    case PrimitiveType::kUri:
      return "uri";
    case PrimitiveType::kUrl:
      return "url";
    case PrimitiveType::kUuid:
      return "uuid";
    case PrimitiveType::kXhtml:
      return "xhtml";
    case PrimitiveType::kNone:
      break;
  }
  return "primitive";
}

std::string_view KindName(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      return "number";
    case json::kind::string:
      return IsDecimal(v) ? "number" : "string";
    case json::kind::array:
      return "array";
    case json::kind::object:
      return "object";
  }
  return "value";
}

// The value as it appeared in the JSON, cut to kMaxQuotedValue.
std::string Quote(const json::value& v) {
  std::string text = v.is_string() && !IsDecimal(v) ? std::string(View(v.get_string())) : SerializeJson(v);
  if (text.size() > kMaxQuotedValue) {
    text.resize(kMaxQuotedValue);
    text += "...";
  }
  return text;
}

constexpr std::size_t kMaxStringChars = 1024 * 1024;

// Checks the JSON form and format of one primitive value; returns an empty
// string when valid, else what is wrong.
std::string CheckPrimitive(PrimitiveType type, const json::value& v) {
  const std::string_view type_name = PrimitiveName(type);
  auto wrong_kind = [&](std::string_view expected) {
    return core::StrCat("expected a JSON ", expected, " for ", type_name, ", found ", KindName(v));
  };
  switch (type) {
    case PrimitiveType::kBoolean:
      return v.is_bool() ? std::string() : wrong_kind("boolean");
    case PrimitiveType::kDecimal:
      return IsNumber(v) ? std::string() : wrong_kind("number");
    case PrimitiveType::kInteger:
    case PrimitiveType::kPositiveInt:
    case PrimitiveType::kUnsignedInt: {
      // FHIR integers are 32-bit and written without fraction or exponent,
      // which ParseJson keeps apart as decimal values.
      if (!v.is_int64() && !v.is_uint64()) return wrong_kind("integer");
      const std::int64_t low = type == PrimitiveType::kInteger       ? std::numeric_limits<std::int32_t>::min()
                               : type == PrimitiveType::kPositiveInt ? 1
                                                                     : 0;
      const bool in_range =
          v.is_int64() && v.get_int64() >= low && v.get_int64() <= std::numeric_limits<std::int32_t>::max();
      if (!in_range) return core::StrCat("out of range for ", type_name);
      return std::string();
    }
    case PrimitiveType::kNone:
      return "not a primitive type";
    default:
      break;
  }
  if (!IsPlainString(v)) return wrong_kind("string");
  const std::string_view s = View(v.get_string());
  if (s.empty()) return "empty strings are not allowed";
  bool ok = true;
  switch (type) {
    case PrimitiveType::kString:
    case PrimitiveType::kMarkdown:
      if (s.size() > kMaxStringChars) {
        // R4 datatypes: strings SHALL NOT exceed 1 MB (1024*1024 characters).
        std::size_t chars = 0;
        for (unsigned char c : s) chars += (c & 0xC0) != 0x80;
        if (chars > kMaxStringChars) {
          return core::StrCat("longer than the ", kMaxStringChars, " characters FHIR allows for ", type_name);
        }
      }
      break;
    case PrimitiveType::kCode:
      ok = IsValidCode(s);
      break;
    case PrimitiveType::kId:
      ok = IsValidId(s);
      break;
    case PrimitiveType::kUri:
    case PrimitiveType::kUrl:
    case PrimitiveType::kCanonical:
      ok = IsValidUri(s);
      break;
    case PrimitiveType::kOid:
      ok = IsValidOid(s);
      break;
    case PrimitiveType::kUuid:
      ok = IsValidUuid(s);
      break;
    case PrimitiveType::kBase64Binary:
      ok = IsValidBase64(s);
      break;
    case PrimitiveType::kDate:
      ok = IsValidDate(s);
      break;
    case PrimitiveType::kDateTime:
      ok = IsValidDateTime(s);
      break;
    case PrimitiveType::kInstant:
      ok = IsValidInstant(s);
      break;
    case PrimitiveType::kTime:
      ok = IsValidTime(s);
      break;
    case PrimitiveType::kXhtml:
      ok = s.starts_with("<div");
      break;
    default:
      break;
  }
  return ok ? std::string() : std::string("bad format");
}

class Walker {
 public:
  Walker(const StructureRegistry& registry, std::size_t max_issues, std::vector<ValidationIssue>& issues)
      : registry_(registry), element_root_(registry.Root("Element")), max_issues_(max_issues), issues_(issues) {
    path_.reserve(256);
  }

  void TopLevel(const json::value& v) {
    if (!v.is_object()) {
      Add(kStructure, core::StrCat("A resource must be a JSON object, found ", KindName(v)));
      return;
    }
    Resource(v.get_object());
  }

 private:
  // Appends a path segment for the lifetime of the scope.
  class Segment {
   public:
    Segment(std::string& path, std::string_view name) : path_(path), mark_(path.size()) {
      path_ += '.';
      path_ += name;
    }
    Segment(std::string& path, std::size_t index) : path_(path), mark_(path.size()) {
      char buf[24];
      buf[0] = '[';
      char* end = std::to_chars(buf + 1, buf + sizeof buf - 1, index).ptr;
      *end++ = ']';
      path_.append(buf, end);
    }
    ~Segment() { path_.resize(mark_); }
    Segment(const Segment&) = delete;
    Segment& operator=(const Segment&) = delete;

   private:
    std::string& path_;
    std::size_t mark_;
  };

  bool Full() const { return issues_.size() >= max_issues_; }

  void Add(std::string_view code, std::string message) {
    if (Full()) return;
    issues_.push_back(ValidationIssue{std::string(code), path_, std::move(message)});
  }

  // A whole resource at path_ (empty at the top level, where the resource
  // type becomes the path).
  void Resource(const json::object& obj) {
    const json::value* type = obj.if_contains("resourceType");
    if (type == nullptr) {
      Add(kRequired, path_.empty() ? std::string("Missing 'resourceType' in resource")
                                   : core::StrCat("Missing 'resourceType' in resource at ", path_));
      return;
    }
    const ElementNode* root = IsPlainString(*type) ? registry_.Root(View(type->get_string())) : nullptr;
    if (root == nullptr || root->kind != NodeKind::kResource) {
      Add(kInvalid, core::StrCat("Unknown resource type '", Quote(*type), "'", path_.empty() ? "" : " at ", path_));
      return;
    }
    if (path_.empty()) path_ = root->path;
    Object(*root, obj, /*resource_root=*/true);
  }

  // The members of `obj`, described by `node`, at path_.
  void Object(const ElementNode& node, const json::object& obj, bool resource_root) {
    if (obj.empty()) {
      Add(kStructure, core::StrCat("Empty object at ", path_, " (FHIR JSON never has empty objects)"));
      return;
    }
    // seen[i]: 0 if elements[i] is absent so far, else 1 + the index of the
    // type of the variant present (always 1 for non-choice elements).
    std::array<std::uint8_t, kMaxElementsPerNode> seen;
    std::fill_n(seen.begin(), node.elements.size(), std::uint8_t{0});

    for (const json::key_value_pair& member : obj) {
      if (Full()) return;
      const std::string_view key = View(member.key());
      if (key == "resourceType") {
        if (!resource_root) {
          Segment segment(path_, key);
          Add(kStructure,
              core::StrCat("Unknown element '", path_, "' ('resourceType' is only allowed at the root of a resource)"));
        }
        continue;
      }
      const bool twin = key.starts_with('_');
      const std::string_view name = twin ? key.substr(1) : key;

      std::size_t index = 0;
      std::size_t type_index = 0;
      bool found = false;
      if (auto it = node.by_name.find(name); it != node.by_name.end()) {
        // A choice element is only ever present as one of its variants.
        found = !node.elements[it->second].is_choice;
        index = it->second;
      } else if (auto c = node.choice_by_name.find(name); c != node.choice_by_name.end()) {
        found = true;
        index = c->second.first;
        type_index = c->second.second;
      }
      const ElementDef* def = found ? &node.elements[index] : nullptr;
      const ElementNode* type_node = def != nullptr && def->children == nullptr && !def->type_nodes.empty()
                                         ? def->type_nodes[type_index]
                                         : nullptr;
      const bool primitive = type_node != nullptr && type_node->kind == NodeKind::kPrimitiveType;
      if (def == nullptr || (twin && (!primitive || def->plain_value))) {
        Segment segment(path_, key);
        Add(kStructure, core::StrCat("Unknown element '", path_, "'"));
        continue;
      }

      if (def->is_choice && seen[index] != 0 && seen[index] != type_index + 1) {
        // Reported at the later variant, the one a client would drop.
        const std::string& other = def->types[seen[index] - 1];
        const std::string choice = core::StrCat(path_, ".", def->name, "[x]");
        Segment segment(path_, name);
        Add(kStructure, core::StrCat("Choice element '", choice, "' has more than one variant: '", path_,
                                     "' conflicts with '", def->name, CapitalizedFirst(other), other.substr(1), "'"));
        continue;
      }
      seen[index] = static_cast<std::uint8_t>(type_index + 1);

      // Issues inside a primitive's extensions are reported at the
      // primitive's own path (given[1].extension[0]), as FHIRPath sees them.
      Segment segment(path_, name);
      if (twin) {
        PrimitiveExtensions(*def, member.value(), obj.if_contains(name));
      } else {
        const json::value* extensions = primitive ? FindTwin(obj, key) : nullptr;
        Value(*def, type_node, member.value(), extensions);
      }
    }

    for (std::size_t i = 0; i < node.elements.size() && !Full(); ++i) {
      const ElementDef& def = node.elements[i];
      if (def.min >= 1 && seen[i] == 0) {
        Segment segment(path_, def.is_choice ? core::StrCat(def.name, "[x]") : def.name);
        Add(kRequired, core::StrCat("Missing required element '", path_, "'"));
      }
    }
  }

  static char CapitalizedFirst(const std::string& s) {
    return static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  }

  static const json::value* FindTwin(const json::object& obj, std::string_view key) {
    // Keys are short; build "_key" on the stack rather than the heap.
    std::array<char, 128> buf;
    if (key.size() + 1 > buf.size()) return obj.if_contains(core::StrCat("_", key));
    buf[0] = '_';
    std::copy(key.begin(), key.end(), buf.begin() + 1);
    return obj.if_contains(std::string_view(buf.data(), key.size() + 1));
  }

  // The value of element `def` (of type `type_node`, or with def.children)
  // at path_; `extensions` is the "_name" twin of a primitive, if any.
  void Value(const ElementDef& def, const ElementNode* type_node, const json::value& v, const json::value* extensions) {
    if (def.max == 1) {
      if (v.is_array()) {
        Add(kStructure, core::StrCat("Element '", path_, "' has max cardinality 1 and must not be an array"));
        return;
      }
      if (v.is_null()) {
        Add(kStructure, core::StrCat("Null value at ", path_, " (omit the element instead)"));
        return;
      }
      Item(def, type_node, v);
      return;
    }
    if (!v.is_array()) {
      Add(kStructure,
          core::StrCat("Element '", path_, "' has max cardinality ", def.max < 0 ? "*" : std::to_string(def.max),
                       " and must be an array, found ", KindName(v)));
      return;
    }
    const json::array& items = v.get_array();
    if (items.empty()) {
      Add(kStructure, core::StrCat("Empty array at ", path_, " (FHIR JSON never has empty arrays)"));
      return;
    }
    if (def.max > 1 && items.size() > static_cast<std::size_t>(def.max)) {
      Add(kStructure,
          core::StrCat("Element '", path_, "' has ", items.size(), " items, more than its maximum ", def.max));
    }
    const json::array* twins = extensions != nullptr && extensions->is_array() ? &extensions->get_array() : nullptr;
    for (std::size_t i = 0; i < items.size() && !Full(); ++i) {
      Segment segment(path_, i);
      if (items[i].is_null()) {
        // A null keeps a primitive array aligned with its "_name" array
        // where only the extension is present.
        const bool has_twin = twins != nullptr && i < twins->size() && !(*twins)[i].is_null();
        if (!has_twin) Add(kStructure, core::StrCat("Null value at ", path_, " without a matching extension"));
        continue;
      }
      Item(def, type_node, items[i]);
    }
  }

  // One item of element `def` at path_.
  void Item(const ElementDef& def, const ElementNode* type_node, const json::value& v) {
    const ElementNode* node = def.children != nullptr ? def.children : type_node;
    if (node->kind == NodeKind::kPrimitiveType) {
      std::string problem = CheckPrimitive(node->primitive, v);
      if (!problem.empty()) {
        Add(kValue,
            core::StrCat("Invalid ", PrimitiveName(node->primitive), " '", Quote(v), "' at ", path_, ": ", problem));
      }
      return;
    }
    if (!v.is_object()) {
      Add(kStructure, core::StrCat("Element '", path_, "' must be a JSON object, found ", KindName(v)));
      return;
    }
    if (node->kind == NodeKind::kAbstractResource || node->kind == NodeKind::kResource) {
      Resource(v.get_object());
    } else {
      Object(*node, v.get_object(), /*resource_root=*/false);
    }
  }

  // The "_name" twin `v` of primitive element `def` at path_; `values` is the
  // primitive itself, if present.
  void PrimitiveExtensions(const ElementDef& def, const json::value& v, const json::value* values) {
    if (def.max == 1) {
      if (!v.is_object()) {
        Add(kStructure, core::StrCat("The extensions of '", path_, "' must be a JSON object, found ", KindName(v)));
        return;
      }
      Object(*element_root_, v.get_object(), /*resource_root=*/false);
      return;
    }
    if (!v.is_array()) {
      Add(kStructure, core::StrCat("The extensions of '", path_, "' must be an array, found ", KindName(v)));
      return;
    }
    const json::array& items = v.get_array();
    if (items.empty()) {
      Add(kStructure, core::StrCat("Empty array of extensions at ", path_));
      return;
    }
    const json::array* primitives = values != nullptr && values->is_array() ? &values->get_array() : nullptr;
    if (primitives != nullptr && primitives->size() != items.size()) {
      Add(kStructure, core::StrCat("The extensions of '", path_, "' have ", items.size(), " items but the values have ",
                                   primitives->size()));
    }
    for (std::size_t i = 0; i < items.size() && !Full(); ++i) {
      Segment segment(path_, i);
      const json::value& item = items[i];
      if (item.is_null()) {
        // Where the value is null too, Value() reports it.
        if (primitives == nullptr || i >= primitives->size()) {
          Add(kStructure, core::StrCat("Null extensions at ", path_, " without a matching value"));
        }
        continue;
      }
      if (!item.is_object()) {
        Add(kStructure, core::StrCat("The extensions of '", path_, "' must be a JSON object, found ", KindName(item)));
        continue;
      }
      Object(*element_root_, item.get_object(), /*resource_root=*/false);
    }
  }

  const StructureRegistry& registry_;
  const ElementNode* element_root_;
  const std::size_t max_issues_;
  std::vector<ValidationIssue>& issues_;
  std::string path_;
};

}  // namespace

std::vector<ValidationIssue> Validator::Validate(const json::value& resource, std::size_t max_issues) const {
  std::vector<ValidationIssue> issues;
  if (max_issues == 0) return issues;
  Walker(registry_, max_issues, issues).TopLevel(resource);
  return issues;
}

}  // namespace medgrid::fhir
