#include "medgrid/fhir/json.h"

#include <charconv>
#include <cstdio>

#include "boost/json/basic_parser_impl.hpp"
#include "boost/json/value_stack.hpp"
#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"

namespace medgrid::fhir {
namespace json = boost::json;

namespace {

// A basic_parser handler that builds a json::value like Boost's own parser,
// but keeps non-integer numbers as decimal values with their original text
// and rejects control characters in strings and keys.
struct FhirHandler {
  static constexpr std::size_t max_object_size = json::object::max_size();
  static constexpr std::size_t max_array_size = json::array::max_size();
  static constexpr std::size_t max_key_size = json::string::max_size();
  static constexpr std::size_t max_string_size = json::string::max_size();

  explicit FhirHandler(json::storage_ptr sp) : st(std::move(sp)) {}

  json::value_stack st;
  std::string number;        // pending number text across parts
  std::string problem;       // set when a handler rejects the input

  bool CheckChars(std::string_view s) {
    for (unsigned char c : s) {
      if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
        problem = "JSON string contains a control character";
        return false;
      }
    }
    return true;
  }

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_object_begin(json::error_code&) { return true; }
  bool on_object_end(std::size_t n, json::error_code&) {
    st.push_object(n);
    return true;
  }
  bool on_array_begin(json::error_code&) { return true; }
  bool on_array_end(std::size_t n, json::error_code&) {
    st.push_array(n);
    return true;
  }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    if (!CheckChars(s)) return false;
    st.push_chars(s);
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code&) {
    if (!CheckChars(s)) return false;
    st.push_key(s);
    return true;
  }
  bool on_string_part(json::string_view s, std::size_t, json::error_code&) {
    if (!CheckChars(s)) return false;
    st.push_chars(s);
    return true;
  }
  bool on_string(json::string_view s, std::size_t, json::error_code&) {
    if (!CheckChars(s)) return false;
    st.push_string(s);
    return true;
  }
  bool on_number_part(json::string_view s, json::error_code&) {
    number.append(s.data(), s.size());
    return true;
  }
  bool on_int64(std::int64_t i, json::string_view, json::error_code&) {
    number.clear();
    st.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, json::string_view, json::error_code&) {
    number.clear();
    st.push_uint64(u);
    return true;
  }
  bool on_double(double, json::string_view s, json::error_code&) {
    number.append(s.data(), s.size());
    std::string text;
    text.reserve(number.size() + 1);
    text += kDecimalMarker;
    text += number;
    number.clear();
    st.push_string(text);
    return true;
  }
  bool on_bool(bool b, json::error_code&) {
    st.push_bool(b);
    return true;
  }
  bool on_null(json::error_code&) {
    st.push_null();
    return true;
  }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }
};

}  // namespace
}  // namespace medgrid::fhir

namespace medgrid::fhir {

absl::StatusOr<json::value> ParseJson(std::string_view text, const JsonLimits& limits) {
  json::parse_options opts;
  opts.max_depth = limits.max_depth;
  json::basic_parser<FhirHandler> p(opts, json::storage_ptr());
  json::error_code ec;
  p.reset();
  p.handler().st.reset();
  std::size_t n = p.write_some(false, text.data(), text.size(), ec);
  if (!ec && n < text.size()) ec = json::error::extra_data;
  if (ec) {
    std::string msg = !p.handler().problem.empty() ? p.handler().problem
                                                    : std::string("Malformed JSON: ") + ec.message();
    return core::Error(absl::StatusCode::kInvalidArgument, msg).Http(400).Issue("structure");
  }
  return p.handler().st.release();
}

namespace {

void WriteNumber(std::string& out, double d) {
  char buf[32];
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, d);
  out.append(buf, ec == std::errc() ? ptr : buf);
}

void Write(const json::value& v, std::string& out) {
  switch (v.kind()) {
    case json::kind::null: out += "null"; return;
    case json::kind::bool_: out += v.get_bool() ? "true" : "false"; return;
    case json::kind::int64: {
      char buf[24];
      auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, v.get_int64());
      out.append(buf, ptr);
      return;
    }
    case json::kind::uint64: {
      char buf[24];
      auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, v.get_uint64());
      out.append(buf, ptr);
      return;
    }
    case json::kind::double_: WriteNumber(out, v.get_double()); return;
    case json::kind::string: {
      const json::string& s = v.get_string();
      if (!s.empty() && s[0] == kDecimalMarker) {
        out.append(s.data() + 1, s.size() - 1);
        return;
      }
      out += '"';
      core::AppendJsonEscaped(out, std::string_view(s.data(), s.size()));
      out += '"';
      return;
    }
    case json::kind::array: {
      out += '[';
      bool first = true;
      for (const auto& e : v.get_array()) {
        if (!first) out += ',';
        first = false;
        Write(e, out);
      }
      out += ']';
      return;
    }
    case json::kind::object: {
      out += '{';
      bool first = true;
      for (const auto& kv : v.get_object()) {
        if (!first) out += ',';
        first = false;
        out += '"';
        core::AppendJsonEscaped(out, std::string_view(kv.key().data(), kv.key().size()));
        out += "\":";
        Write(kv.value(), out);
      }
      out += '}';
      return;
    }
  }
}

}  // namespace

void SerializeJsonTo(const json::value& v, std::string& out) { Write(v, out); }

std::string SerializeJson(const json::value& v) {
  std::string out;
  out.reserve(256);
  Write(v, out);
  return out;
}

bool IsDecimal(const json::value& v) {
  return v.is_string() && !v.get_string().empty() && v.get_string()[0] == kDecimalMarker;
}

std::string_view DecimalText(const json::value& v) {
  const json::string& s = v.get_string();
  return std::string_view(s.data() + 1, s.size() - 1);
}

json::value MakeDecimal(std::string_view text) {
  std::string s;
  s.reserve(text.size() + 1);
  s += kDecimalMarker;
  s += text;
  return json::value(json::string(s));
}

bool IsNumber(const json::value& v) {
  return v.is_int64() || v.is_uint64() || v.is_double() || IsDecimal(v);
}

bool JsonEqual(const json::value& a, const json::value& b) {
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case json::kind::object: {
      const auto& oa = a.get_object();
      const auto& ob = b.get_object();
      if (oa.size() != ob.size()) return false;
      for (const auto& kv : oa) {
        const json::value* other = ob.if_contains(kv.key());
        if (other == nullptr || !JsonEqual(kv.value(), *other)) return false;
      }
      return true;
    }
    case json::kind::array: {
      const auto& aa = a.get_array();
      const auto& ab = b.get_array();
      if (aa.size() != ab.size()) return false;
      for (std::size_t i = 0; i < aa.size(); ++i) {
        if (!JsonEqual(aa[i], ab[i])) return false;
      }
      return true;
    }
    default:
      return a == b;
  }
}

}  // namespace medgrid::fhir
