// Access decisions from a patient's FHIR R4 privacy consents (Consent with
// scope patient-privacy): given the patient's Consent resources and one
// access request, says permit or deny, which Consent decided and why. Pure
// logic: no I/O, no clock (the request carries `now`), no state. Every
// function is thread-safe and never throws on any JSON input.
//
//   consent::AccessRequest req;
//   req.patient_id = "f001";
//   req.resource = &observation;  // the resource about to be returned
//   req.actor_references = {"Practitioner/p1", "Organization/o1"};
//   req.actor_roles = {{"http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PRCP"}};
//   req.purposes = {{"http://terminology.hl7.org/CodeSystem/v3-ActReason", "TREAT"}};
//   req.now = clock.Now();
//   consent::Decision d = consent::Evaluate(consents, req, consent::DefaultPolicy::kOptOut);
//   if (d.effect == consent::Effect::kDeny) { /* 403; audit d.consent_id, d.reason */ }
//
// THE RULES (R4 leaves much of the evaluation open; the choices are marked
// "choice").
//
// Which Consents count. resourceType "Consent", a string id, status
// "active", scope patient-privacy (IsPrivacyConsent) and Consent.patient
// naming the request's patient (PatientsOf). Others are ignored.
//
// Malformed Consents are skipped as if absent (choice: the caller cannot fix
// them mid-request, and guessing at a broken rule is worse). Malformed means
// an element read here has the wrong JSON type (object, array, string) or an
// invalid value: a date or dateTime that does not parse, provision.type other
// than "permit"/"deny", provision.data without meaning or reference or with an
// unknown meaning, an actor with neither role nor reference.
//
// What a provision says (R4: Consent.provision is "An exception to the base
// policy of this consent"; provision.type is "Not permitted in root rule,
// required in all nested rules").
// - The base policy comes from Consent.policyRule (system
//   http://terminology.hl7.org/CodeSystem/v3-ActCode): OPTIN and OPTINR
//   permit, OPTOUT and OPTOUTE deny; other codes give none.
// - A Consent without a provision is a bare opt-in or opt-out: it covers
//   every request with the base policy's effect (none: it says nothing).
// - The root provision is an exception to the base policy: its effect is the
//   opposite of the base's (choice; this is what makes the official examples
//   notThis, notThem, notAuthor and notTime deny and grantor permit, and makes
//   basic and Out read the other way round from their narratives). A root
//   provision.type, though R4 forbids it, is honoured when present (the
//   official notOrg example has one).
// - A nested provision's effect is its type; one without a type is the
//   opposite of its parent's (choice: nested provisions are exceptions to
//   their parent). A provision whose effect cannot be determined (no type up
//   to the root and no base policy) decides nothing.
//
// When a provision applies. Its period contains `now` and every criterion it
// states matches; a criterion it does not state (absent or empty array)
// matches anything. A nested provision is looked at only inside an
// applicable parent, so it applies only inside its own period and its
// ancestors'. Within each criterion any one listed value is enough:
// - actor: an actor matches when its reference, if any, names one of
//   actor_references and its role, if any, has a coding in actor_roles.
//   References compare as "Type/id": absolute URLs and /_history/ suffixes
//   are cut to that (choice: no server base check). An actor reference by
//   identifier or display only cannot be compared and never matches.
// - action: a coding in `actions` ({consentaction, "access"} when empty).
// - securityLabel: a label in the resource's meta.security. For
//   http://terminology.hl7.org/CodeSystem/v3-Confidentiality it is a high
//   water mark, as the R4 element comment says: a provision label R covers
//   resources labelled U, L, M, N or R. Other systems match exactly.
// - purpose: a coding in `purposes`. Exact match (choice: the v3-ActReason
//   hierarchy is not expanded, so TREAT does not cover ETREAT).
// - class: system http://hl7.org/fhir/resource-types names the resource's
//   type; urn:ietf:bcp:13 names a MIME type matched against Binary.contentType
//   or DocumentReference.content.attachment.contentType; any other coding's
//   code is compared with the resource's meta.profile (versions ignored).
// - code: a coding of the resource's code, type or category (single
//   CodeableConcept or array).
// - dataPeriod: overlaps the resource's clinically relevant time, the first
//   present of effective[x], occurrence[x], performed[x], onset[x], issued,
//   period, authoredOn, recordedDate, date, recorded, created, and
//   meta.lastUpdated as the fallback. A resource with none never matches.
// - data: meaning instance, related and dependents all match the resource
//   itself ("Type/id") only (choice: no graph walk to related or dependent
//   resources); authoredby matches a resource whose author, recorder,
//   asserter, requester or performer(.actor) is the reference.
// Codings match on system and code, both equal (a missing system equals
// only a missing system). Criteria about the resource never match when the
// request has no resource.
//
// Dates. A date, dateTime or instant stands for the whole interval of its
// precision. Periods include their start and include their end at the end's
// precision: an end of "2026-01-31" covers all of that day, an end of
// "2026-01-31T12:00:00Z" the whole of that second. A time without a zone is
// read as UTC.
//
// Within one Consent the deepest applicable provision decides; at equal
// depth deny wins. If the root does not apply, the Consent says nothing.
//
// Across Consents the most recent one that says something decides: recency
// is Consent.dateTime, or meta.lastUpdated for a Consent without one, read as
// its first instant; equal recency is broken by meta.lastUpdated (missing is
// oldest); if still equal, deny wins. With none, `policy` decides.
#pragma once

#include <string>
#include <vector>

#include "boost/json/object.hpp"
#include "medgrid/core/clock.h"

namespace medgrid::consent {

struct Coding {
  std::string system;  // empty when the coding has none
  std::string code;
};

enum class DefaultPolicy {
  kOptIn,   // deny unless a Consent permits
  kOptOut,  // permit unless a Consent denies
};

struct AccessRequest {
  std::string patient_id;                         // the patient whose data it is (id only)
  const boost::json::object* resource = nullptr;  // the resource accessed; not owned; may be null
  std::vector<std::string> actor_references;      // who asks: "Practitioner/p1", "Organization/o1"...
  std::vector<Coding> actor_roles;                // v3-ParticipationType or v3-RoleCode codings
  std::vector<Coding> actions;                    // empty means {consentaction, "access"}
  std::vector<Coding> purposes;                   // v3-ActReason: TREAT, ETREAT, HPAYMT...
  core::TimePoint now;
};

enum class Effect { kPermit, kDeny };

struct Decision {
  Effect effect = Effect::kDeny;
  // Consent.id of the Consent that decided; empty when the default policy did.
  std::string consent_id;
  // Short and free of clinical content, for audit logs: "denied by
  // Consent/x provision 1.2" (the root provision is 1, its second nested
  // provision 1.2), "permitted by Consent/x policyRule OPTIN", "default
  // opt-out".
  std::string reason;
};

// Decides `request` by `consents`, the patient's Consent resources in any
// status and order; null pointers and Consents that do not count (see the
// rules above) are ignored. The pointed-to objects must outlive the call;
// nothing is kept.
Decision Evaluate(const std::vector<const boost::json::object*>& consents, const AccessRequest& request,
                  DefaultPolicy policy);

// True when Consent.scope has the coding
// http://terminology.hl7.org/CodeSystem/consentscope|patient-privacy.
bool IsPrivacyConsent(const boost::json::object& consent);

// The patient ids in Consent.patient.reference ("Patient/x", or an absolute
// URL ending in Patient/x, optionally with /_history/n): zero or one id.
std::vector<std::string> PatientsOf(const boost::json::object& consent);

}  // namespace medgrid::consent
