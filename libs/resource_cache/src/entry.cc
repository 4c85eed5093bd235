#include "medgrid/resource_cache/entry.h"

#include <charconv>

#include "boost/json.hpp"
#include "medgrid/core/strings.h"

namespace medgrid::resource_cache {
namespace {

bool ParseInt(std::string_view s, int64_t& out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// "Patient/123" -> "123"; anything else (another type, a URL, a version) -> "".
std::string PatientIdOfReference(std::string_view ref) {
  constexpr std::string_view kPrefix = "Patient/";
  if (!ref.starts_with(kPrefix)) return "";
  ref.remove_prefix(kPrefix.size());
  if (ref.empty() || ref.size() > 64) return "";
  for (char c : ref) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.')) return "";
  }
  return std::string(ref);
}

}  // namespace

std::string EncodeEntry(const Entry& entry) {
  std::string out = core::StrCat(entry.version, "|", std::string_view(reinterpret_cast<const char*>(&entry.kind), 1),
                                 "|", core::ToUnixMicros(entry.last_updated), "|", entry.patient, "|");
  out += entry.body;
  return out;
}

std::optional<Entry> DecodeEntry(std::string_view text) {
  std::string_view fields[4];
  for (auto& f : fields) {
    const size_t bar = text.find('|');
    if (bar == std::string_view::npos) return std::nullopt;
    f = text.substr(0, bar);
    text.remove_prefix(bar + 1);
  }
  Entry e;
  int64_t micros = 0;
  if (!ParseInt(fields[0], e.version) || fields[1].size() != 1 || !ParseInt(fields[2], micros)) return std::nullopt;
  switch (fields[1][0]) {
    case 'b': e.kind = Entry::Kind::kBody; break;
    case 'd': e.kind = Entry::Kind::kDeleted; break;
    case 's': e.kind = Entry::Kind::kStale; break;
    default: return std::nullopt;
  }
  e.last_updated = core::FromUnixMicros(micros);
  e.patient = std::string(fields[3]);
  e.body = std::string(text);
  return e;
}

std::string PatientOf(std::string_view type, std::string_view id, std::string_view body) {
  if (type == "Patient") return std::string(id);
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(boost::json::string_view(body.data(), body.size()), ec);
  if (ec || !v.is_object()) return "";
  for (const char* field : {"subject", "patient"}) {
    const boost::json::value* ref = v.get_object().if_contains(field);
    const boost::json::object* o = ref != nullptr ? ref->if_object() : nullptr;
    const boost::json::value* r = o != nullptr ? o->if_contains("reference") : nullptr;
    if (r != nullptr && r->is_string()) {
      std::string p = PatientIdOfReference(std::string_view(r->get_string().data(), r->get_string().size()));
      if (!p.empty()) return p;
    }
  }
  return "";
}

std::string PatientOfSearch(const engine::SearchInput& input) {
  if (input.compartment == "Patient") return input.compartment_id;
  for (const auto& [name, value] : input.params) {
    if (name != "patient" && name != "subject" && name != "patient:Patient" && name != "subject:Patient") continue;
    if (value.find(',') != std::string::npos) continue;  // several patients: none in particular
    if ((name.starts_with("patient") || name.ends_with(":Patient")) && value.find('/') == std::string::npos) {
      std::string p = PatientIdOfReference(core::StrCat("Patient/", value));
      if (!p.empty()) return p;
      continue;
    }
    std::string p = PatientIdOfReference(value);
    if (!p.empty()) return p;
  }
  return "";
}

}  // namespace medgrid::resource_cache
