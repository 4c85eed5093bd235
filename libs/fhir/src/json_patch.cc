// JSON Patch (RFC 6902) over JSON Pointers (RFC 6901).
//
// Atomicity: the operations run on a copy of the target, which replaces the
// target only once every operation has succeeded. A copy costs one pass over
// a resource, which is small next to the database write that follows a
// PATCH, and it is far simpler to get right than undoing a half-applied move.
#include "medgrid/fhir/json_patch.h"

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "boost/json.hpp"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/json.h"

namespace medgrid::fhir {
namespace json = boost::json;

namespace {

std::string_view View(json::string_view s) { return std::string_view(s.data(), s.size()); }

// A patch document the server cannot understand: the client's mistake,
// whatever the target holds.
absl::Status Malformed(std::size_t op_index, std::string_view what) {
  return core::Error(absl::StatusCode::kInvalidArgument,
                     core::StrCat("Invalid JSON Patch operation ", op_index, ": ", what))
      .Http(400)
      .Issue("invalid");
}

// A well-formed operation that does not apply to this target.
absl::Status Unprocessable(std::size_t op_index, std::string_view what) {
  return core::Error(absl::StatusCode::kFailedPrecondition,
                     core::StrCat("JSON Patch operation ", op_index, " failed: ", what))
      .Http(422)
      .Issue("processing");
}

// RFC 6901: "" is the whole document, else '/'-separated tokens in which
// "~1" stands for '/' and "~0" for '~' (decoded in that order, so "~01" is
// "~1").
bool ParsePointer(std::string_view text, std::vector<std::string>& tokens) {
  tokens.clear();
  if (text.empty()) return true;
  if (text[0] != '/') return false;
  std::size_t pos = 1;
  while (true) {
    std::string& token = tokens.emplace_back();
    while (pos < text.size() && text[pos] != '/') {
      if (text[pos] == '~') {
        if (pos + 1 >= text.size()) return false;
        const char next = text[pos + 1];
        if (next == '0') {
          token += '~';
        } else if (next == '1') {
          token += '/';
        } else {
          return false;
        }
        pos += 2;
      } else {
        token += text[pos++];
      }
    }
    if (pos >= text.size()) return true;
    ++pos;  // the '/'
  }
}

// An array index token: "0" or digits without a leading zero, below `limit`
// (inclusive when `allow_end`).
bool ParseIndex(const std::string& token, std::size_t size, bool allow_end, std::size_t& index) {
  if (token.empty() || token.size() > 18 || (token.size() > 1 && token[0] == '0')) return false;
  std::size_t value = 0;
  for (char c : token) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<std::size_t>(c - '0');
  }
  if (allow_end ? value > size : value >= size) return false;
  index = value;
  return true;
}

std::string Describe(const std::vector<std::string>& tokens, std::size_t count) {
  std::string out;
  for (std::size_t i = 0; i < count; ++i) {
    out += '/';
    for (char c : tokens[i]) {
      if (c == '~') {
        out += "~0";
      } else if (c == '/') {
        out += "~1";
      } else {
        out += c;
      }
    }
  }
  return out;
}

class Patcher {
 public:
  explicit Patcher(json::value& doc) : doc_(doc) {}

  absl::Status Apply(std::size_t op_index, const json::object& op) {
    op_index_ = op_index;
    const json::value* op_name = op.if_contains("op");
    if (op_name == nullptr || !op_name->is_string()) return Malformed(op_index_, "missing \"op\"");
    const std::string_view name = View(op_name->get_string());

    std::vector<std::string> path;
    if (absl::Status st = Pointer(op, "path", path); !st.ok()) return st;

    if (name == "add" || name == "replace" || name == "test") {
      const json::value* value = op.if_contains("value");
      if (value == nullptr) return Malformed(op_index_, core::StrCat("\"", name, "\" needs a \"value\""));
      if (name == "add") return Add(path, json::value(*value, doc_.storage()));
      if (name == "replace") return Replace(path, json::value(*value, doc_.storage()));
      return Test(path, *value);
    }
    if (name == "remove") return Remove(path).status();
    if (name == "move" || name == "copy") {
      std::vector<std::string> from;
      if (absl::Status st = Pointer(op, "from", from); !st.ok()) return st;
      if (name == "copy") {
        absl::StatusOr<json::value*> source = Find(from);
        if (!source.ok()) return source.status();
        return Add(path, json::value(**source, doc_.storage()));
      }
      if (from == path) {
        // Moving a value onto itself changes nothing, but it must exist.
        return Find(from).status();
      }
      if (from.size() < path.size() && std::equal(from.begin(), from.end(), path.begin())) {
        return Malformed(op_index_, "cannot move a value into one of its own children");
      }
      absl::StatusOr<json::value> moved = Remove(from);
      if (!moved.ok()) return moved.status();
      return Add(path, std::move(*moved));
    }
    return Malformed(op_index_, core::StrCat("unknown op \"", name, "\""));
  }

 private:
  absl::Status Pointer(const json::object& op, std::string_view member, std::vector<std::string>& tokens) {
    const json::value* text = op.if_contains(member);
    if (text == nullptr || !text->is_string()) {
      return Malformed(op_index_, core::StrCat("missing \"", member, "\""));
    }
    if (!ParsePointer(View(text->get_string()), tokens)) {
      return Malformed(op_index_,
                       core::StrCat("\"", member, "\" is not a JSON Pointer: '", View(text->get_string()), "'"));
    }
    return absl::OkStatus();
  }

  absl::Status Missing(const std::vector<std::string>& tokens, std::size_t count) {
    return Unprocessable(op_index_, core::StrCat("path '", Describe(tokens, count), "' does not exist"));
  }

  // The value at the first `count` tokens.
  absl::StatusOr<json::value*> Walk(const std::vector<std::string>& tokens, std::size_t count) {
    json::value* at = &doc_;
    for (std::size_t i = 0; i < count; ++i) {
      const std::string& token = tokens[i];
      if (json::object* obj = at->if_object()) {
        at = obj->if_contains(token);
        if (at == nullptr) return Missing(tokens, i + 1);
      } else if (json::array* arr = at->if_array()) {
        std::size_t index;
        if (!ParseIndex(token, arr->size(), /*allow_end=*/false, index)) return Missing(tokens, i + 1);
        at = &(*arr)[index];
      } else {
        return Missing(tokens, i + 1);
      }
    }
    return at;
  }

  absl::StatusOr<json::value*> Find(const std::vector<std::string>& tokens) { return Walk(tokens, tokens.size()); }

  absl::Status Add(const std::vector<std::string>& path, json::value value) {
    if (path.empty()) {
      doc_ = std::move(value);
      return absl::OkStatus();
    }
    absl::StatusOr<json::value*> parent = Walk(path, path.size() - 1);
    if (!parent.ok()) return parent.status();
    const std::string& last = path.back();
    if (json::object* obj = (*parent)->if_object()) {
      (*obj)[last] = std::move(value);
      return absl::OkStatus();
    }
    if (json::array* arr = (*parent)->if_array()) {
      if (last == "-") {
        arr->push_back(std::move(value));
        return absl::OkStatus();
      }
      std::size_t index;
      if (!ParseIndex(last, arr->size(), /*allow_end=*/true, index)) return Missing(path, path.size());
      arr->insert(arr->begin() + static_cast<std::ptrdiff_t>(index), std::move(value));
      return absl::OkStatus();
    }
    return Unprocessable(op_index_,
                         core::StrCat("'", Describe(path, path.size() - 1), "' is neither object nor array"));
  }

  absl::StatusOr<json::value> Remove(const std::vector<std::string>& path) {
    if (path.empty()) return Unprocessable(op_index_, "cannot remove the whole document");
    absl::StatusOr<json::value*> parent = Walk(path, path.size() - 1);
    if (!parent.ok()) return parent.status();
    const std::string& last = path.back();
    if (json::object* obj = (*parent)->if_object()) {
      auto it = obj->find(last);
      if (it == obj->end()) return Missing(path, path.size());
      json::value removed = std::move(it->value());
      obj->erase(it);
      return removed;
    }
    if (json::array* arr = (*parent)->if_array()) {
      std::size_t index;
      if (!ParseIndex(last, arr->size(), /*allow_end=*/false, index)) return Missing(path, path.size());
      json::value removed = std::move((*arr)[index]);
      arr->erase(arr->begin() + static_cast<std::ptrdiff_t>(index));
      return removed;
    }
    return Missing(path, path.size());
  }

  absl::Status Replace(const std::vector<std::string>& path, json::value value) {
    absl::StatusOr<json::value*> target = Find(path);
    if (!target.ok()) return target.status();
    **target = std::move(value);
    return absl::OkStatus();
  }

  absl::Status Test(const std::vector<std::string>& path, const json::value& expected) {
    absl::StatusOr<json::value*> target = Find(path);
    if (!target.ok()) return target.status();
    if (!JsonEqual(**target, expected)) {
      return Unprocessable(op_index_, core::StrCat("test of '", Describe(path, path.size()), "' failed"));
    }
    return absl::OkStatus();
  }

  json::value& doc_;
  std::size_t op_index_ = 0;
};

}  // namespace

absl::Status ApplyJsonPatch(const json::value& patch, json::value& target) {
  const json::array* ops = patch.if_array();
  if (ops == nullptr) {
    return core::Error(absl::StatusCode::kInvalidArgument, "A JSON Patch document must be a JSON array")
        .Http(400)
        .Issue("invalid");
  }
  json::value work(target, target.storage());
  Patcher patcher(work);
  for (std::size_t i = 0; i < ops->size(); ++i) {
    const json::object* op = (*ops)[i].if_object();
    if (op == nullptr) return Malformed(i, "an operation must be a JSON object");
    if (absl::Status st = patcher.Apply(i, *op); !st.ok()) return st;
  }
  target = std::move(work);
  return absl::OkStatus();
}

}  // namespace medgrid::fhir
