// FHIRPath parser and evaluator (see fhirpath.h for the supported subset).
//
// Invariants:
// - Parse either builds a tree in which every node is evaluable or fails:
//   unsupported constructs are refused at parse time, so Evaluate never
//   meets a node it cannot handle and only fails on data (singleton rules).
// - The tree is immutable after Parse; Evaluate keeps all its state on the
//   stack, which is what makes concurrent evaluation safe.
// - Every FhirPathItem::value points into the evaluated resource, into a
//   Node::literal of this tree (nodes live on the heap, so moving a FhirPath
//   keeps them in place), or at the static booleans of BoolValue().
//   FhirPathItem::type views one of the same three storages.
// - Decimal values (json.h) are numbers here, never strings: every string
//   test checks IsDecimal first.
#include "medgrid/fhir/fhirpath.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "boost/json/value.hpp"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/json.h"

namespace medgrid::fhir {

namespace json = boost::json;

namespace {

std::string_view View(json::string_view s) { return std::string_view(s.data(), s.size()); }
json::string_view JsonView(std::string_view s) { return json::string_view(s.data(), s.size()); }

// ---------------------------------------------------------------------------
// Lexer

enum class Tok {
  kEnd,
  kIdentifier,  // plain identifier; keywords (and, as, true, ...) included
  kDelimited,   // `delimited identifier`, never a keyword
  kString,      // 'string literal', unescaped
  kNumber,
  kDateTime,  // @2020-01-01 and friends
  kDollar,    // $this, $index, $total (text without the '$')
  kVariable,  // %name (text without the '%')
  kSymbol,
};

struct Token {
  Tok kind = Tok::kEnd;
  std::string text;
  std::size_t pos = 0;
};

absl::Status SyntaxError(std::size_t pos, std::string_view message) {
  return absl::InvalidArgumentError(core::StrCat("FHIRPath syntax error at offset ", pos, ": ", message));
}

absl::Status Unsupported(std::size_t pos, std::string_view what) {
  return absl::UnimplementedError(core::StrCat("FHIRPath ", what, " at offset ", pos, " is not supported"));
}

bool IsIdentStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0 || c == '_'; }
bool IsIdentChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

class Lexer {
 public:
  explicit Lexer(std::string_view src) : src_(src) {}

  absl::StatusOr<std::vector<Token>> Run() {
    std::vector<Token> out;
    while (true) {
      RETURN_IF_ERROR(SkipSpaceAndComments());
      Token t;
      t.pos = i_;
      if (i_ == src_.size()) {
        out.push_back(std::move(t));
        return out;
      }
      const char c = src_[i_];
      if (IsIdentStart(c)) {
        t.kind = Tok::kIdentifier;
        t.text = std::string(Identifier());
      } else if (c == '`' || c == '\'') {
        t.kind = c == '`' ? Tok::kDelimited : Tok::kString;
        ASSIGN_OR_RETURN(t.text, Quoted(c));
      } else if (IsDigit(c)) {
        t.kind = Tok::kNumber;
        const std::size_t start = i_;
        while (i_ < src_.size() && IsDigit(src_[i_])) ++i_;
        // "1.5" is a decimal, but in "entry[0].resource" the '.' navigates.
        if (i_ + 1 < src_.size() && src_[i_] == '.' && IsDigit(src_[i_ + 1])) {
          ++i_;
          while (i_ < src_.size() && IsDigit(src_[i_])) ++i_;
        }
        t.text = std::string(src_.substr(start, i_ - start));
      } else if (c == '@') {
        t.kind = Tok::kDateTime;
        const std::size_t start = i_++;
        while (i_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[i_])) != 0 || src_[i_] == '-' ||
                                    src_[i_] == ':' || src_[i_] == '.' || src_[i_] == '+')) {
          ++i_;
        }
        t.text = std::string(src_.substr(start, i_ - start));
      } else if (c == '$' || c == '%') {
        t.kind = c == '$' ? Tok::kDollar : Tok::kVariable;
        ++i_;
        if (i_ < src_.size() && IsIdentStart(src_[i_])) {
          t.text = std::string(Identifier());
        } else if (c == '%' && i_ < src_.size() && (src_[i_] == '`' || src_[i_] == '\'')) {
          ASSIGN_OR_RETURN(t.text, Quoted(src_[i_]));
        } else {
          return SyntaxError(t.pos, core::StrCat("expected a name after '", c, "'"));
        }
      } else {
        t.kind = Tok::kSymbol;
        const std::string_view two = src_.substr(i_, 2);
        if (two == "!=" || two == "!~" || two == "<=" || two == ">=") {
          t.text = std::string(two);
          i_ += 2;
        } else if (std::string_view(".[](),|=~<>+-*/&{}").find(c) != std::string_view::npos) {
          t.text = std::string(1, c);
          ++i_;
        } else {
          return SyntaxError(i_, core::StrCat("unexpected character '", c, "'"));
        }
      }
      out.push_back(std::move(t));
    }
  }

 private:
  absl::Status SkipSpaceAndComments() {
    while (i_ < src_.size()) {
      const char c = src_[i_];
      if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
        ++i_;
      } else if (src_.substr(i_, 2) == "//") {
        while (i_ < src_.size() && src_[i_] != '\n') ++i_;
      } else if (src_.substr(i_, 2) == "/*") {
        const std::size_t end = src_.find("*/", i_ + 2);
        if (end == std::string_view::npos) return SyntaxError(i_, "unterminated comment");
        i_ = end + 2;
      } else {
        break;
      }
    }
    return absl::OkStatus();
  }

  std::string_view Identifier() {
    const std::size_t start = i_;
    while (i_ < src_.size() && IsIdentChar(src_[i_])) ++i_;
    return src_.substr(start, i_ - start);
  }

  // A '...' or `...` token with the FHIRPath escapes resolved.
  absl::StatusOr<std::string> Quoted(char quote) {
    const std::size_t start = i_++;
    std::string out;
    while (i_ < src_.size() && src_[i_] != quote) {
      if (src_[i_] != '\\') {
        out.push_back(src_[i_++]);
        continue;
      }
      const std::size_t esc = i_;
      if (++i_ == src_.size()) break;
      const char e = src_[i_++];
      switch (e) {
        case '\'':
        case '"':
        case '`':
        case '\\':
        case '/':
          out.push_back(e);
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          ASSIGN_OR_RETURN(std::uint32_t cp, Hex4(esc));
          // A surrogate pair spells one code point beyond the BMP.
          if (cp >= 0xD800 && cp < 0xDC00 && src_.substr(i_, 2) == "\\u") {
            const std::size_t low_at = i_;
            i_ += 2;
            ASSIGN_OR_RETURN(std::uint32_t low, Hex4(low_at));
            if (low < 0xDC00 || low > 0xDFFF) return SyntaxError(low_at, "invalid surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          core::AppendUtf8(out, cp);
          break;
        }
        default:
          return SyntaxError(esc, core::StrCat("unknown escape '\\", e, "'"));
      }
    }
    if (i_ >= src_.size()) return SyntaxError(start, "unterminated quoted text");
    ++i_;  // closing quote
    return out;
  }

  absl::StatusOr<std::uint32_t> Hex4(std::size_t esc) {
    std::uint32_t cp = 0;
    const std::string_view hex = src_.substr(i_, 4);
    const auto [end, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), cp, 16);
    if (hex.size() != 4 || ec != std::errc() || end != hex.data() + 4) {
      return SyntaxError(esc, "\\u needs four hex digits");
    }
    i_ += 4;
    return cp;
  }

  std::string_view src_;
  std::size_t i_ = 0;
};

// ---------------------------------------------------------------------------
// Tree

enum class NodeKind {
  kLiteral,   // literal
  kEmpty,     // {}
  kThis,      // $this
  kRoot,      // %resource, %context
  kMember,    // [lhs.]name
  kIndex,     // lhs[rhs]
  kCall,      // [lhs.]fn(args)
  kTypeTest,  // lhs is name
  kTypeCast,  // lhs as name
  kBinary,    // lhs op rhs
};

enum class Fn {
  kWhere,
  kExists,
  kAll,
  kEmpty,
  kFirst,
  kLast,
  kNot,
  kHasValue,
  kAs,
  kIs,
  kOfType,
  kExtension,
  kResolve,
  kStartsWith,
  kEndsWith,
  kContains,
};

enum class BinOp { kUnion, kEq, kNe, kIn, kContains, kAnd, kOr, kXor, kImplies };

struct FunctionInfo {
  std::string_view name;
  Fn fn;
  int min_args;
  int max_args;
  bool type_argument;  // the argument is a type specifier, not an expression
};

constexpr FunctionInfo kFunctions[] = {
    {"where", Fn::kWhere, 1, 1, false},
    {"exists", Fn::kExists, 0, 1, false},
    {"all", Fn::kAll, 1, 1, false},
    {"empty", Fn::kEmpty, 0, 0, false},
    {"first", Fn::kFirst, 0, 0, false},
    {"last", Fn::kLast, 0, 0, false},
    {"not", Fn::kNot, 0, 0, false},
    {"hasValue", Fn::kHasValue, 0, 0, false},
    {"as", Fn::kAs, 1, 1, true},
    {"is", Fn::kIs, 1, 1, true},
    {"ofType", Fn::kOfType, 1, 1, true},
    {"extension", Fn::kExtension, 1, 1, false},
    {"resolve", Fn::kResolve, 0, 0, false},
    {"startsWith", Fn::kStartsWith, 1, 1, false},
    {"endsWith", Fn::kEndsWith, 1, 1, false},
    {"contains", Fn::kContains, 1, 1, false},
};

// Functions of FHIRPath N1 and the FHIR R4 additions that are not
// implemented: Parse answers Unimplemented for these and InvalidArgument for
// any other name, which is a typo rather than a gap.
// clang-format off
constexpr std::string_view kUnsupportedFunctions[] = {
    "allTrue", "anyTrue", "allFalse", "anyFalse", "subsetOf", "supersetOf", "isDistinct", "distinct", "count",
    "select", "repeat", "single", "tail", "skip", "take", "intersect", "exclude", "union", "combine", "iif",
    "toBoolean", "convertsToBoolean", "toInteger", "convertsToInteger", "toDate", "convertsToDate",
    "toDateTime", "convertsToDateTime", "toDecimal", "convertsToDecimal", "toQuantity", "convertsToQuantity",
    "toString", "convertsToString", "toTime", "convertsToTime", "indexOf", "substring", "upper", "lower",
    "replace", "matches", "replaceMatches", "length", "toChars", "children", "descendants", "trace", "now",
    "timeOfDay", "today", "aggregate", "abs", "ceiling", "exp", "floor", "ln", "log", "power", "round",
    "sqrt", "truncate", "getValue", "elementDefinition", "slice", "checkModifiers", "conformsTo", "memberOf",
    "subsumes", "subsumedBy", "htmlChecks", "htmlchecks", "encode", "decode", "escape", "unescape", "split",
    "join", "lowBoundary", "highBoundary", "precision", "type",
};
// clang-format on

const FunctionInfo* FindFunction(std::string_view name) {
  for (const FunctionInfo& f : kFunctions) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

bool IsUnsupportedFunction(std::string_view name) {
  for (std::string_view f : kUnsupportedFunctions) {
    if (f == name) return true;
  }
  return false;
}

}  // namespace

struct FhirPath::Node {
  NodeKind kind = NodeKind::kLiteral;
  std::size_t pos = 0;
  std::unique_ptr<const Node> lhs;  // kMember/kCall: null means the implicit focus
  std::unique_ptr<const Node> rhs;  // kIndex: the index; kBinary: right operand
  std::vector<std::unique_ptr<const Node>> args;
  std::string name;  // member or function name; type name (namespace dropped)
  Fn fn = Fn::kWhere;
  BinOp op = BinOp::kUnion;
  json::value literal;
};

namespace {

using Node = FhirPath::Node;
using NodePtr = std::unique_ptr<const Node>;

// ---------------------------------------------------------------------------
// Parser: recursive descent over the FHIRPath precedence levels, lowest
// first. Levels whose operators are all unsupported still exist so that the
// error names the operator instead of complaining about a stray token.

constexpr std::string_view kCalendarUnits[] = {
    "year", "years", "month",  "months",  "week",   "weeks",   "day",         "days",
    "hour", "hours", "minute", "minutes", "second", "seconds", "millisecond", "milliseconds",
};

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  absl::StatusOr<NodePtr> ParseAll() {
    ASSIGN_OR_RETURN(NodePtr root, Expression());
    if (Peek().kind != Tok::kEnd) return Unexpected(Peek());
    return root;
  }

 private:
  enum Level {
    kImplies,
    kOr,
    kAnd,
    kMembership,
    kEquality,
    kInequality,
    kUnion,
    kType,
    kAdditive,
    kMultiplicative,
    kUnary
  };

  const Token& Peek() const { return t_[i_]; }
  const Token& Next() { return t_[i_ == t_.size() - 1 ? i_ : i_++]; }

  bool IsSymbol(std::string_view s) const { return Peek().kind == Tok::kSymbol && Peek().text == s; }

  static absl::Status Unexpected(const Token& t) {
    if (t.kind == Tok::kEnd) return SyntaxError(t.pos, "unexpected end of expression");
    return SyntaxError(t.pos, core::StrCat("unexpected '", t.text, "'"));
  }

  absl::Status Expect(std::string_view symbol) {
    if (!IsSymbol(symbol)) {
      return Peek().kind == Tok::kEnd
                 ? SyntaxError(Peek().pos, core::StrCat("expected '", symbol, "' before end of expression"))
                 : SyntaxError(Peek().pos, core::StrCat("expected '", symbol, "', found '", Peek().text, "'"));
    }
    Next();
    return absl::OkStatus();
  }

  absl::StatusOr<NodePtr> Expression() { return Binary(kImplies); }

  // The binary operator at the cursor that belongs to `level`, if any.
  std::optional<std::string_view> OperatorAt(int level) const {
    static constexpr std::string_view kOps[][4] = {
        {"implies"},
        {"or", "xor"},
        {"and"},
        {"in", "contains"},
        {"=", "!=", "~", "!~"},
        {"<", ">", "<=", ">="},
        {"|"},
        {"is", "as"},
        {"+", "-", "&"},
        {"*", "/", "div", "mod"},
    };
    const Token& t = Peek();
    if (t.kind != Tok::kSymbol && t.kind != Tok::kIdentifier) return std::nullopt;
    for (std::string_view op : kOps[level]) {
      if (!op.empty() && t.text == op) return op;
    }
    return std::nullopt;
  }

  absl::StatusOr<NodePtr> Binary(int level) {
    if (level == kUnary) return Unary();
    ASSIGN_OR_RETURN(NodePtr lhs, Binary(level + 1));
    while (std::optional<std::string_view> op = OperatorAt(level)) {
      const Token& tok = Next();
      auto node = std::make_unique<Node>();
      node->pos = tok.pos;
      node->lhs = std::move(lhs);
      if (level == kType) {
        node->kind = *op == "is" ? NodeKind::kTypeTest : NodeKind::kTypeCast;
        ASSIGN_OR_RETURN(node->name, TypeSpecifier());
      } else {
        node->kind = NodeKind::kBinary;
        static constexpr std::pair<std::string_view, BinOp> kSupported[] = {
            {"|", BinOp::kUnion},           {"=", BinOp::kEq},    {"!=", BinOp::kNe}, {"in", BinOp::kIn},
            {"contains", BinOp::kContains}, {"and", BinOp::kAnd}, {"or", BinOp::kOr}, {"xor", BinOp::kXor},
            {"implies", BinOp::kImplies},
        };
        const auto* found = std::find_if(std::begin(kSupported), std::end(kSupported),
                                         [&](const auto& entry) { return entry.first == *op; });
        if (found == std::end(kSupported)) return Unsupported(tok.pos, core::StrCat("operator '", *op, "'"));
        node->op = found->second;
        ASSIGN_OR_RETURN(node->rhs, Binary(level + 1));
      }
      lhs = std::move(node);
    }
    return lhs;
  }

  absl::StatusOr<NodePtr> Unary() {
    if (IsSymbol("+") || IsSymbol("-")) return Unsupported(Peek().pos, core::StrCat("unary '", Peek().text, "'"));
    ASSIGN_OR_RETURN(NodePtr node, Term());
    while (true) {
      if (IsSymbol(".")) {
        Next();
        const Token& name = Peek();
        if (name.kind != Tok::kIdentifier && name.kind != Tok::kDelimited) {
          return name.kind == Tok::kEnd
                     ? SyntaxError(name.pos, "expected a name after '.'")
                     : SyntaxError(name.pos, core::StrCat("expected a name after '.', found '", name.text, "'"));
        }
        Next();
        ASSIGN_OR_RETURN(node, Invocation(name, std::move(node)));
      } else if (IsSymbol("[")) {
        auto index = std::make_unique<Node>();
        index->kind = NodeKind::kIndex;
        index->pos = Next().pos;
        index->lhs = std::move(node);
        ASSIGN_OR_RETURN(index->rhs, Expression());
        RETURN_IF_ERROR(Expect("]"));
        node = std::move(index);
      } else {
        return node;
      }
    }
  }

  // A member access or function call on `lhs` (null: the implicit focus).
  absl::StatusOr<NodePtr> Invocation(const Token& name, NodePtr lhs) {
    auto node = std::make_unique<Node>();
    node->pos = name.pos;
    node->name = name.text;
    node->lhs = std::move(lhs);
    if (!IsSymbol("(")) {
      node->kind = NodeKind::kMember;
      return node;
    }
    node->kind = NodeKind::kCall;
    const FunctionInfo* info = FindFunction(name.text);
    if (info == nullptr) {
      if (IsUnsupportedFunction(name.text)) return Unsupported(name.pos, core::StrCat("function '", name.text, "()'"));
      return absl::InvalidArgumentError(
          core::StrCat("unknown FHIRPath function '", name.text, "()' at offset ", name.pos));
    }
    node->fn = info->fn;
    Next();  // '('
    int count = 0;
    if (!IsSymbol(")")) {
      while (true) {
        ++count;
        if (info->type_argument) {
          ASSIGN_OR_RETURN(node->name, TypeSpecifier());
        } else {
          ASSIGN_OR_RETURN(NodePtr arg, Expression());
          node->args.push_back(std::move(arg));
        }
        if (!IsSymbol(",")) break;
        Next();
      }
    }
    RETURN_IF_ERROR(Expect(")"));
    if (count < info->min_args || count > info->max_args) {
      const std::string expected = info->min_args == info->max_args
                                       ? core::StrCat(info->min_args)
                                       : core::StrCat(info->min_args, " to ", info->max_args);
      return absl::InvalidArgumentError(core::StrCat("FHIRPath function '", name.text, "()' at offset ", name.pos,
                                                     " takes ", expected, " argument(s), got ", count));
    }
    return node;
  }

  // qualifiedIdentifier; the FHIR and System namespaces are dropped because
  // type tests compare FHIR and System names alike (see MatchesType). System
  // has only the primitive types, so any other System name (System.Patient)
  // names no type: it stays qualified and matches nothing.
  absl::StatusOr<std::string> TypeSpecifier() {
    std::string name;
    const std::size_t pos = Peek().pos;
    while (true) {
      if (Peek().kind != Tok::kIdentifier && Peek().kind != Tok::kDelimited) {
        return Peek().kind == Tok::kEnd
                   ? SyntaxError(Peek().pos, "expected a type name")
                   : SyntaxError(Peek().pos, core::StrCat("expected a type name, found '", Peek().text, "'"));
      }
      if (!name.empty()) name += '.';
      name += Next().text;
      if (!IsSymbol(".")) break;
      Next();
    }
    static constexpr std::string_view kSystemTypes[] = {"Boolean", "String",   "Integer", "Decimal",
                                                        "Date",    "DateTime", "Time",    "Quantity"};
    if (name.starts_with("FHIR.")) {
      name.erase(0, 5);
    } else if (name.starts_with("System.")) {
      if (std::find(std::begin(kSystemTypes), std::end(kSystemTypes), std::string_view(name).substr(7)) ==
          std::end(kSystemTypes)) {
        return name;
      }
      name.erase(0, 7);
    }
    if (name.find('.') != std::string::npos) return SyntaxError(pos, core::StrCat("unknown type '", name, "'"));
    return name;
  }

  absl::StatusOr<NodePtr> Term() {
    const Token& tok = Peek();
    auto node = std::make_unique<Node>();
    node->pos = tok.pos;
    switch (tok.kind) {
      case Tok::kSymbol:
        if (tok.text == "(") {
          Next();
          ASSIGN_OR_RETURN(NodePtr inner, Expression());
          RETURN_IF_ERROR(Expect(")"));
          return inner;
        }
        if (tok.text == "{") {
          Next();
          RETURN_IF_ERROR(Expect("}"));
          node->kind = NodeKind::kEmpty;
          return node;
        }
        return Unexpected(tok);
      case Tok::kString:
        node->literal = json::string(JsonView(Next().text));
        return node;
      case Tok::kNumber: {
        const Token& num = Next();
        if (Peek().kind == Tok::kString ||
            (Peek().kind == Tok::kIdentifier && std::find(std::begin(kCalendarUnits), std::end(kCalendarUnits),
                                                          Peek().text) != std::end(kCalendarUnits))) {
          return Unsupported(num.pos, "quantity literal");
        }
        if (num.text.find('.') != std::string::npos) {
          node->literal = MakeDecimal(num.text);
          return node;
        }
        std::int64_t v = 0;
        const auto [end, ec] = std::from_chars(num.text.data(), num.text.data() + num.text.size(), v);
        if (ec != std::errc() || end != num.text.data() + num.text.size()) {
          return SyntaxError(num.pos, core::StrCat("integer out of range: ", num.text));
        }
        node->literal = v;
        return node;
      }
      case Tok::kDateTime:
        return Unsupported(tok.pos, "date/time literal");
      case Tok::kDollar:
        if (tok.text == "this") {
          Next();
          node->kind = NodeKind::kThis;
          return node;
        }
        return Unsupported(tok.pos, core::StrCat("variable '$", tok.text, "'"));
      case Tok::kVariable:
        if (tok.text == "resource" || tok.text == "context" || tok.text == "rootResource") {
          Next();
          node->kind = NodeKind::kRoot;
          return node;
        }
        return Unsupported(tok.pos, core::StrCat("environment variable '%", tok.text, "'"));
      case Tok::kIdentifier:
        if (tok.text == "true" || tok.text == "false") {
          node->literal = Next().text == "true";
          return node;
        }
        [[fallthrough]];
      case Tok::kDelimited: {
        const Token& name = Next();
        return Invocation(name, nullptr);
      }
      case Tok::kEnd:
        break;
    }
    return Unexpected(tok);
  }

  std::vector<Token> t_;  // ends with a kEnd token
  std::size_t i_ = 0;
};

// ---------------------------------------------------------------------------
// Types

// FHIR type names compared with the first letter folded: a choice suffix
// spells "DateTime" where the type is "dateTime", and System.String names
// FHIR's string.
bool TypeNameEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && !a.empty() &&
         std::tolower(static_cast<unsigned char>(a[0])) == std::tolower(static_cast<unsigned char>(b[0])) &&
         a.substr(1) == b.substr(1);
}

// The R4 specializations that search expressions can meet: "as Quantity"
// must take valueAge, "as uri" a canonical.
std::string_view BaseType(std::string_view type) {
  static constexpr std::pair<std::string_view, std::string_view> kBases[] = {
      {"Age", "Quantity"},
      {"Count", "Quantity"},
      {"Distance", "Quantity"},
      {"Duration", "Quantity"},
      {"MoneyQuantity", "Quantity"},
      {"SimpleQuantity", "Quantity"},
      {"code", "string"},
      {"id", "string"},
      {"markdown", "string"},
      {"url", "uri"},
      {"canonical", "uri"},
      {"oid", "uri"},
      {"uuid", "uri"},
      {"positiveInt", "integer"},
      {"unsignedInt", "integer"},
  };
  for (const auto& [derived, base] : kBases) {
    if (TypeNameEquals(derived, type)) return base;
  }
  return {};
}

bool DerivesFrom(std::string_view type, std::string_view wanted) {
  for (; !type.empty(); type = BaseType(type)) {
    if (TypeNameEquals(type, wanted)) return true;
  }
  return false;
}

bool ResourceIs(std::string_view resource_type, std::string_view wanted) {
  if (wanted == resource_type || wanted == "Resource") return true;
  return wanted == "DomainResource" && resource_type != "Bundle" && resource_type != "Binary" &&
         resource_type != "Parameters";
}

// The resourceType of a resource object, or empty.
std::string_view ResourceTypeOf(const json::value& v) {
  if (!v.is_object()) return {};
  const json::value* rt = v.get_object().if_contains("resourceType");
  return rt != nullptr && rt->is_string() ? View(rt->get_string()) : std::string_view();
}

bool MatchesType(const FhirPathItem& item, std::string_view wanted) {
  if (item.unresolved_reference) return ResourceIs(item.type, wanted);
  if (!item.type.empty()) return DerivesFrom(item.type, wanted);
  const json::value& v = *item.value;
  if (v.is_object()) {
    const std::string_view rt = ResourceTypeOf(v);
    return !rt.empty() && ResourceIs(rt, wanted);
  }
  if (v.is_bool()) return DerivesFrom("boolean", wanted);
  if (v.is_int64() || v.is_uint64()) return DerivesFrom("integer", wanted);
  if (v.is_double() || IsDecimal(v)) return DerivesFrom("decimal", wanted);
  if (v.is_string()) return DerivesFrom("string", wanted);
  return false;
}

// ---------------------------------------------------------------------------
// Evaluation

using Items = std::vector<FhirPathItem>;

const json::value& BoolValue(bool b) {
  static const json::value kTrue(true);
  static const json::value kFalse(false);
  return b ? kTrue : kFalse;
}

Items Bool(bool b) { return Items{FhirPathItem{&BoolValue(b), {}, false}}; }

bool IsPlainString(const json::value& v) { return v.is_string() && !IsDecimal(v); }

double AsDouble(const json::value& v) {
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  if (v.is_double()) return v.get_double();
  const std::string_view text = DecimalText(v);
  double d = 0;
  std::from_chars(text.data(), text.data() + text.size(), d);
  return d;
}

// FHIRPath '=' on two single items.
bool ItemsEqual(const FhirPathItem& a, const FhirPathItem& b) {
  if (a.unresolved_reference || b.unresolved_reference) {
    return a.unresolved_reference == b.unresolved_reference && a.value == b.value;
  }
  const json::value& x = *a.value;
  const json::value& y = *b.value;
  if (&x == &y) return true;
  if (IsNumber(x) || IsNumber(y)) {
    if (!IsNumber(x) || !IsNumber(y)) return false;
    if (x.is_int64() && y.is_int64()) return x.get_int64() == y.get_int64();
    if (x.is_uint64() && y.is_uint64()) return x.get_uint64() == y.get_uint64();
    return AsDouble(x) == AsDouble(y);
  }
  if (x.is_string() && y.is_string()) return x.get_string() == y.get_string();
  if (x.is_bool() && y.is_bool()) return x.get_bool() == y.get_bool();
  if ((x.is_object() && y.is_object()) || (x.is_array() && y.is_array())) return JsonEqual(x, y);
  return false;
}

bool CollectionsEqual(const Items& a, const Items& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!ItemsEqual(a[i], b[i])) return false;
  }
  return true;
}

bool ContainsEqual(const Items& c, const FhirPathItem& item) {
  for (const FhirPathItem& x : c) {
    if (ItemsEqual(x, item)) return true;
  }
  return false;
}

// Singleton evaluation of a collection where a boolean is expected: empty is
// unknown, one boolean is itself, any other single item is true.
absl::StatusOr<std::optional<bool>> ToBool(const Items& c, std::string_view what) {
  if (c.empty()) return std::optional<bool>();
  if (c.size() > 1) {
    return absl::InvalidArgumentError(
        core::StrCat(what, " expects a single boolean, got a collection of ", c.size(), " items"));
  }
  const json::value& v = *c[0].value;
  return std::optional<bool>(v.is_bool() ? v.get_bool() : true);
}

absl::StatusOr<const FhirPathItem*> Singleton(const Items& c, std::string_view what) {
  if (c.empty()) return nullptr;
  if (c.size() > 1) {
    return absl::InvalidArgumentError(
        core::StrCat(what, " expects a single item, got a collection of ", c.size(), " items"));
  }
  return &c[0];
}

// Adds `v` (an element's JSON value) to `out`, flattening arrays. Nulls are
// the placeholders of primitive arrays whose items only have extensions.
void AppendElement(const json::value& v, std::string_view type, Items& out) {
  if (v.is_array()) {
    for (const json::value& e : v.get_array()) {
      if (!e.is_null()) out.push_back(FhirPathItem{&e, type, false});
    }
  } else if (!v.is_null()) {
    out.push_back(FhirPathItem{&v, type, false});
  }
}

// Whether `suffix` names a type that an R4 choice element "name[x]" can take,
// spelt as in a JSON key (first letter upper-case): without this check a
// missing `performer` would match its sibling `performerType`, and `status`
// a `statusReason`. These are the R4 "open" types (Extension.value[x]),
// which are also every type of every [x] element in the R4 resource and
// data type definitions.
bool IsChoiceTypeSuffix(std::string_view suffix) {
  // clang-format off
  static constexpr std::string_view kChoiceTypes[] = {
      "Address", "Age", "Annotation", "Attachment", "Base64Binary", "Boolean", "Canonical", "Code",
      "CodeableConcept", "Coding", "ContactDetail", "ContactPoint", "Contributor", "Count",
      "DataRequirement", "Date", "DateTime", "Decimal", "Distance", "Dosage", "Duration",
      "Expression", "HumanName", "Id", "Identifier", "Instant", "Integer", "Markdown", "Meta",
      "Money", "Oid", "ParameterDefinition", "Period", "PositiveInt", "Quantity", "Range", "Ratio",
      "Reference", "RelatedArtifact", "SampledData", "Signature", "String", "Time", "Timing",
      "TriggerDefinition", "UnsignedInt", "Uri", "Url", "UsageContext", "Uuid",
  };
  // clang-format on
  static_assert(std::ranges::is_sorted(kChoiceTypes));
  return std::ranges::binary_search(kChoiceTypes, suffix);
}

// The children called `name` of `item`, including the variants of a choice
// element "name[x]" (nameQuantity, nameString, ...), typed by their suffix.
void AppendChildren(const FhirPathItem& item, std::string_view name, Items& out) {
  if (item.unresolved_reference || !item.value->is_object()) return;
  const json::object& obj = item.value->get_object();
  if (const json::value* v = obj.if_contains(JsonView(name))) {
    AppendElement(*v, {}, out);
    return;
  }
  for (const json::key_value_pair& kv : obj) {
    const std::string_view key = View(kv.key());
    if (key.size() > name.size() && key.starts_with(name) && IsChoiceTypeSuffix(key.substr(name.size()))) {
      AppendElement(kv.value(), key.substr(name.size()), out);
    }
  }
}

// The type named by a reference: "Patient/1", "http://x/fhir/Patient/1",
// "Patient/1/_history/2", or a canonical "http://x/Library/lib|1.0".
std::string_view ReferenceType(std::string_view ref) {
  ref = ref.substr(0, ref.find_first_of("|#?"));
  if (const std::size_t h = ref.find("/_history/"); h != std::string_view::npos) ref = ref.substr(0, h);
  const std::size_t id_slash = ref.rfind('/');
  if (id_slash == std::string_view::npos || id_slash == 0) return {};
  const std::size_t type_slash = ref.rfind('/', id_slash - 1);
  const std::string_view type = ref.substr(type_slash == std::string_view::npos ? 0 : type_slash + 1,
                                           id_slash - (type_slash == std::string_view::npos ? 0 : type_slash + 1));
  if (type.empty() || std::isupper(static_cast<unsigned char>(type[0])) == 0) return {};
  for (char c : type) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0) return {};
  }
  return type;
}

void AppendResolved(const FhirPathItem& item, const json::value& root, Items& out) {
  const json::value& v = *item.value;
  std::string_view ref;
  std::string_view declared_type;  // Reference.type, for references without a typed URL
  if (IsPlainString(v)) {
    ref = View(v.get_string());
  } else if (v.is_object()) {
    const json::object& obj = v.get_object();
    if (const json::value* r = obj.if_contains("reference"); r != nullptr && r->is_string())
      ref = View(r->get_string());
    if (const json::value* t = obj.if_contains("type"); t != nullptr && t->is_string()) {
      declared_type = View(t->get_string());
    }
  } else {
    return;
  }
  // A local reference names a contained resource of the root resource.
  if (ref.starts_with('#')) {
    if (!root.is_object()) return;
    const json::value* contained = root.get_object().if_contains("contained");
    if (contained == nullptr || !contained->is_array()) return;
    for (const json::value& c : contained->get_array()) {
      if (!c.is_object()) continue;
      const json::value* id = c.get_object().if_contains("id");
      if (id != nullptr && id->is_string() && View(id->get_string()) == ref.substr(1)) {
        out.push_back(FhirPathItem{&c, {}, false});
        return;
      }
    }
    return;
  }
  std::string_view type = ReferenceType(ref);
  if (type.empty()) type = declared_type.substr(declared_type.rfind('/') + 1);
  if (!type.empty()) out.push_back(FhirPathItem{&v, type, true});
}

struct Context {
  const json::value* root;
  FhirPathItem this_item;  // $this: the root, or the item a where() visits
};

class Evaluator {
 public:
  explicit Evaluator(const json::value& root) : ctx_{&root, FhirPathItem{&root, {}, false}} {}

  absl::StatusOr<Items> Run(const Node& node) { return Eval(node, Items{ctx_.this_item}, ctx_); }

 private:
  absl::StatusOr<Items> Eval(const Node& node, const Items& focus, const Context& ctx) {
    switch (node.kind) {
      case NodeKind::kLiteral:
        return Items{FhirPathItem{&node.literal, {}, false}};
      case NodeKind::kEmpty:
        return Items{};
      case NodeKind::kThis:
        return Items{ctx.this_item};
      case NodeKind::kRoot:
        return Items{FhirPathItem{ctx.root, {}, false}};
      case NodeKind::kMember:
        return Member(node, focus, ctx);
      case NodeKind::kIndex:
        return Index(node, focus, ctx);
      case NodeKind::kCall:
        return Call(node, focus, ctx);
      case NodeKind::kTypeTest:
      case NodeKind::kTypeCast: {
        ASSIGN_OR_RETURN(Items input, Eval(*node.lhs, focus, ctx));
        return node.kind == NodeKind::kTypeTest ? IsType(input, node.name) : OfType(input, node.name);
      }
      case NodeKind::kBinary:
        return BinaryOp(node, focus, ctx);
    }
    return absl::InternalError("unknown FHIRPath node");
  }

  absl::StatusOr<Items> Member(const Node& node, const Items& focus, const Context& ctx) {
    Items out;
    if (node.lhs != nullptr) {
      ASSIGN_OR_RETURN(Items input, Eval(*node.lhs, focus, ctx));
      for (const FhirPathItem& item : input) AppendChildren(item, node.name, out);
      return out;
    }
    // At the start of a path a type name filters the focus ("Patient.name"
    // on a Patient); element names are lower case, so no member is hidden.
    const bool maybe_type = std::isupper(static_cast<unsigned char>(node.name[0])) != 0;
    for (const FhirPathItem& item : focus) {
      if (maybe_type && !item.unresolved_reference && MatchesType(item, node.name) &&
          !ResourceTypeOf(*item.value).empty()) {
        out.push_back(item);
      } else {
        AppendChildren(item, node.name, out);
      }
    }
    return out;
  }

  absl::StatusOr<Items> Index(const Node& node, const Items& focus, const Context& ctx) {
    ASSIGN_OR_RETURN(Items input, Eval(*node.lhs, focus, ctx));
    ASSIGN_OR_RETURN(Items index_items, Eval(*node.rhs, Items{ctx.this_item}, ctx));
    ASSIGN_OR_RETURN(const FhirPathItem* index, Singleton(index_items, "the indexer"));
    if (index == nullptr) return Items{};
    const json::value& i = *index->value;
    if (!i.is_int64() && !i.is_uint64()) return absl::InvalidArgumentError("the indexer expects an integer");
    if (i.is_int64() && i.get_int64() < 0) return Items{};
    const std::uint64_t n = i.is_int64() ? static_cast<std::uint64_t>(i.get_int64()) : i.get_uint64();
    if (n >= input.size()) return Items{};
    return Items{input[n]};
  }

  static absl::StatusOr<Items> IsType(const Items& input, std::string_view type) {
    ASSIGN_OR_RETURN(const FhirPathItem* item, Singleton(input, "'is'"));
    if (item == nullptr) return Items{};
    return Bool(MatchesType(*item, type));
  }

  static Items OfType(const Items& input, std::string_view type) {
    Items out;
    for (const FhirPathItem& item : input) {
      if (MatchesType(item, type)) out.push_back(item);
    }
    return out;
  }

  // The string an argument such as extension('url') evaluates to; nullopt
  // when it is empty.
  absl::StatusOr<std::optional<std::string_view>> StringArg(const Node& call, const Context& ctx) {
    ASSIGN_OR_RETURN(Items arg, Eval(*call.args[0], Items{ctx.this_item}, ctx));
    ASSIGN_OR_RETURN(const FhirPathItem* item, Singleton(arg, core::StrCat(call.name, "()")));
    if (item == nullptr) return std::optional<std::string_view>();
    if (!IsPlainString(*item->value)) {
      return absl::InvalidArgumentError(core::StrCat(call.name, "() expects a string argument"));
    }
    return std::optional<std::string_view>(View(item->value->get_string()));
  }

  absl::StatusOr<Items> Call(const Node& node, const Items& focus, const Context& ctx) {
    Items input_storage;
    const Items* input_ptr = &focus;
    if (node.lhs != nullptr) {
      ASSIGN_OR_RETURN(input_storage, Eval(*node.lhs, focus, ctx));
      input_ptr = &input_storage;
    }
    const Items& input = *input_ptr;
    switch (node.fn) {
      case Fn::kWhere:
      case Fn::kExists:
      case Fn::kAll: {
        if (node.args.empty()) return Bool(!input.empty());  // exists()
        Items matching;
        for (const FhirPathItem& item : input) {
          const Context inner{ctx.root, item};
          ASSIGN_OR_RETURN(Items criteria, Eval(*node.args[0], Items{item}, inner));
          ASSIGN_OR_RETURN(std::optional<bool> b, ToBool(criteria, core::StrCat(node.name, "()")));
          if (b.value_or(false)) {
            if (node.fn == Fn::kExists) return Bool(true);
            matching.push_back(item);
          } else if (node.fn == Fn::kAll) {
            return Bool(false);
          }
        }
        if (node.fn == Fn::kExists) return Bool(false);
        if (node.fn == Fn::kAll) return Bool(true);
        return matching;
      }
      case Fn::kEmpty:
        return Bool(input.empty());
      case Fn::kFirst:
        return input.empty() ? Items{} : Items{input.front()};
      case Fn::kLast:
        return input.empty() ? Items{} : Items{input.back()};
      case Fn::kNot: {
        ASSIGN_OR_RETURN(std::optional<bool> b, ToBool(input, "not()"));
        return b.has_value() ? Bool(!*b) : Items{};
      }
      case Fn::kHasValue:
        return Bool(input.size() == 1 && !input[0].unresolved_reference && !input[0].value->is_object() &&
                    !input[0].value->is_array());
      case Fn::kAs:
      case Fn::kOfType:
        return OfType(input, node.name);
      case Fn::kIs:
        return IsType(input, node.name);
      case Fn::kExtension: {
        ASSIGN_OR_RETURN(std::optional<std::string_view> url, StringArg(node, ctx));
        Items out;
        if (!url.has_value()) return out;
        for (const FhirPathItem& item : input) {
          if (item.unresolved_reference || !item.value->is_object()) continue;
          const json::value* ext = item.value->get_object().if_contains("extension");
          if (ext == nullptr || !ext->is_array()) continue;
          for (const json::value& e : ext->get_array()) {
            if (!e.is_object()) continue;
            const json::value* u = e.get_object().if_contains("url");
            if (u != nullptr && u->is_string() && View(u->get_string()) == *url) {
              out.push_back(FhirPathItem{&e, "Extension", false});
            }
          }
        }
        return out;
      }
      case Fn::kResolve: {
        Items out;
        for (const FhirPathItem& item : input) AppendResolved(item, *ctx.root, out);
        return out;
      }
      case Fn::kStartsWith:
      case Fn::kEndsWith:
      case Fn::kContains: {
        ASSIGN_OR_RETURN(const FhirPathItem* item, Singleton(input, core::StrCat(node.name, "()")));
        if (item == nullptr || !IsPlainString(*item->value)) return Items{};
        ASSIGN_OR_RETURN(std::optional<std::string_view> arg, StringArg(node, ctx));
        if (!arg.has_value()) return Items{};
        const std::string_view s = View(item->value->get_string());
        if (node.fn == Fn::kStartsWith) return Bool(s.starts_with(*arg));
        if (node.fn == Fn::kEndsWith) return Bool(s.ends_with(*arg));
        return Bool(s.find(*arg) != std::string_view::npos);
      }
    }
    return absl::InternalError("unknown FHIRPath function");
  }

  absl::StatusOr<Items> BinaryOp(const Node& node, const Items& focus, const Context& ctx) {
    ASSIGN_OR_RETURN(Items lhs, Eval(*node.lhs, focus, ctx));
    // The boolean operators may decide on the left operand alone.
    if (node.op == BinOp::kAnd || node.op == BinOp::kOr || node.op == BinOp::kImplies) {
      ASSIGN_OR_RETURN(std::optional<bool> l, ToBool(lhs, "a boolean operator"));
      if (node.op == BinOp::kAnd && l == false) return Bool(false);
      if (node.op == BinOp::kOr && l == true) return Bool(true);
      if (node.op == BinOp::kImplies && l == false) return Bool(true);
    }
    ASSIGN_OR_RETURN(Items rhs, Eval(*node.rhs, focus, ctx));
    switch (node.op) {
      case BinOp::kUnion: {
        // '|' removes duplicates; results are small, so quadratic is cheapest.
        Items out;
        out.reserve(lhs.size() + rhs.size());
        for (const Items* side : {&lhs, &rhs}) {
          for (const FhirPathItem& item : *side) {
            if (!ContainsEqual(out, item)) out.push_back(item);
          }
        }
        return out;
      }
      case BinOp::kEq:
      case BinOp::kNe:
        if (lhs.empty() || rhs.empty()) return Items{};
        return Bool(CollectionsEqual(lhs, rhs) == (node.op == BinOp::kEq));
      case BinOp::kIn:
      case BinOp::kContains: {
        const Items& element = node.op == BinOp::kIn ? lhs : rhs;
        const Items& collection = node.op == BinOp::kIn ? rhs : lhs;
        ASSIGN_OR_RETURN(const FhirPathItem* item, Singleton(element, node.op == BinOp::kIn ? "'in'" : "'contains'"));
        if (item == nullptr) return Items{};
        return Bool(ContainsEqual(collection, *item));
      }
      case BinOp::kAnd:
      case BinOp::kOr:
      case BinOp::kXor:
      case BinOp::kImplies: {
        ASSIGN_OR_RETURN(std::optional<bool> l, ToBool(lhs, "a boolean operator"));
        ASSIGN_OR_RETURN(std::optional<bool> r, ToBool(rhs, "a boolean operator"));
        switch (node.op) {
          case BinOp::kAnd:
            if (r == false) return Bool(false);
            return l.has_value() && r.has_value() ? Bool(true) : Items{};
          case BinOp::kOr:
            if (r == true) return Bool(true);
            return l.has_value() && r.has_value() ? Bool(false) : Items{};
          case BinOp::kXor:
            return l.has_value() && r.has_value() ? Bool(*l != *r) : Items{};
          default:  // implies, with the left operand true or empty
            if (r == true) return Bool(true);
            return l.has_value() && r.has_value() ? Bool(false) : Items{};
        }
      }
    }
    return absl::InternalError("unknown FHIRPath operator");
  }

  Context ctx_;
};

}  // namespace

FhirPath::FhirPath(std::string expression, std::unique_ptr<const Node> root)
    : expression_(std::move(expression)), root_(std::move(root)) {}
FhirPath::FhirPath(FhirPath&&) noexcept = default;
FhirPath& FhirPath::operator=(FhirPath&&) noexcept = default;
FhirPath::~FhirPath() = default;

absl::StatusOr<FhirPath> FhirPath::Parse(std::string_view expression) {
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Lexer(expression).Run());
  ASSIGN_OR_RETURN(NodePtr root, Parser(std::move(tokens)).ParseAll());
  return FhirPath(std::string(expression), std::move(root));
}

absl::StatusOr<std::vector<FhirPathItem>> FhirPath::Evaluate(const json::value& resource) const {
  absl::StatusOr<Items> result = Evaluator(resource).Run(*root_);
  if (!result.ok()) {
    const auto message = result.status().message();  // absl::string_view, not std's
    return absl::Status(result.status().code(), core::StrCat("FHIRPath '", expression_,
                                                             "': ", std::string_view(message.data(), message.size())));
  }
  return result;
}

}  // namespace medgrid::fhir
