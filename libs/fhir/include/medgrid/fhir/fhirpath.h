// A FHIRPath evaluator for the subset of FHIRPath (R4, normative N1) that
// the R4 SearchParameter expressions use, as the foundation of search
// indexing.
//
// An expression is parsed once into an immutable tree and then evaluated
// against many resources. Results point into the evaluated resource, so
// indexing copies nothing it does not keep:
//
//   ASSIGN_OR_RETURN(fhir::FhirPath path,
//                    fhir::FhirPath::Parse("Observation.subject.where(resolve() is Patient)"));
//   ASSIGN_OR_RETURN(std::vector<fhir::FhirPathItem> items, path.Evaluate(observation));
//   for (const fhir::FhirPathItem& item : items) Index(*item.value);
//
// Supported: path navigation with implicit flattening of arrays; a leading
// type name as a filter ("Patient.name", "Resource.id"); choice elements
// ("Observation.value" yields valueQuantity, valueString, ...); the indexer
// [n]; literals ('string' with escapes, integer, decimal, true, false, {});
// $this, %resource, %context; the operators . [] is as | = != in contains
// and or xor implies; the functions where, exists, all, empty, first, last,
// not, hasValue, as, is, ofType, extension, resolve, startsWith, endsWith and
// contains. Parse rejects everything else, so an expression either evaluates
// with the specified meaning or is refused up front.
//
// Typing is best effort, since the evaluator works on JSON without the
// StructureDefinitions: an item's type is known for resources (resourceType),
// for choice elements (the key suffix: valueQuantity is a Quantity), for
// resolve() results and for JSON primitives (string, boolean, integer,
// decimal). Other complex elements have no known type and match no `is`.
// Type tests honour the R4 specializations (Age is a Quantity, code is a
// string, canonical is a uri, positiveInt is an integer).
//
// Deliberate deviations, chosen for search indexing:
// - `as` and as() filter like ofType() instead of failing on collections of
//   several items: "(Observation.component.value as Quantity)" must index
//   every component.
// - resolve() never loads anything. A local reference ("#id") resolves to the
//   contained resource; any other reference yields a stand-in item whose
//   type is the type named in the reference ("Patient/1" and
//   "http://x/fhir/Patient/1/_history/2" are Patients) or in Reference.type,
//   so that "where(resolve() is Patient)" works without a database.
// - Decimal equality compares values as doubles.
// - FHIR and System primitive types are not told apart: a JSON boolean is
//   both a FHIR.boolean and a System.Boolean.
// - Extensions on primitive elements (JSON's "_birthDate" twin) are not
//   visible: birthDate.extension(...) is empty. No R4 search parameter
//   needs them.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "boost/json/value.hpp"

namespace medgrid::fhir {

// One item of a result collection.
struct FhirPathItem {
  // Never null. Points into the evaluated resource, into the FhirPath (for
  // literals) or at static constants (computed booleans); valid while both
  // the resource and the FhirPath live and the resource is not modified.
  const boost::json::value* value = nullptr;
  // The FHIR type name when the context says it ("Quantity" for
  // valueQuantity, "DateTime" for onsetDateTime: the key suffix, so the
  // first letter of a primitive type is upper case; "Patient" after
  // resolve()); empty otherwise. Views the same storage as `value`.
  std::string_view type;
  // True for the stand-in that resolve() yields for a reference it does not
  // load: `value` is then the Reference (or the reference string), and the
  // item has no members.
  bool unresolved_reference = false;
};

class FhirPath {
 public:
  // Parses `expression`. Errors: InvalidArgument for a syntax error or an
  // unknown function, with the 0-based character offset in the message;
  // Unimplemented for valid FHIRPath outside the supported subset (the
  // message names the operator, function or literal).
  static absl::StatusOr<FhirPath> Parse(std::string_view expression);

  FhirPath(FhirPath&&) noexcept;
  FhirPath& operator=(FhirPath&&) noexcept;
  ~FhirPath();

  // Evaluates against `resource` (normally a resource object as ParseJson
  // returns it, with decimal values). Errors: InvalidArgument where the
  // specification raises an evaluation error, e.g. a multi-item collection
  // where a single boolean is expected, or a non-integer index.
  // Thread-safe: a FhirPath is immutable, so any number of threads may
  // evaluate one concurrently.
  [[nodiscard]] absl::StatusOr<std::vector<FhirPathItem>> Evaluate(const boost::json::value& resource) const;

  // The expression as given to Parse.
  const std::string& expression() const { return expression_; }

  struct Node;  // The parsed tree; defined in fhirpath.cc.

 private:
  FhirPath(std::string expression, std::unique_ptr<const Node> root);

  std::string expression_;
  std::unique_ptr<const Node> root_;
};

}  // namespace medgrid::fhir
