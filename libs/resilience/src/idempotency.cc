#include "medgrid/resilience/idempotency.h"

#include <algorithm>

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "openssl/evp.h"

namespace medgrid::resilience {
namespace {

absl::Status BadKey(std::string_view why) {
  return core::Error(absl::StatusCode::kInvalidArgument, core::StrCat("Idempotency-Key ", why))
      .Http(400)
      .Issue("invalid");
}

void AppendEncoded(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
}

}  // namespace

absl::StatusOr<std::string> ParseIdempotencyKey(std::string_view header) {
  std::string_view key = header;
  while (!key.empty() && (key.front() == ' ' || key.front() == '\t')) key.remove_prefix(1);
  while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.remove_suffix(1);
  // A Structured Field string: "..." with \" and \\ escapes.
  std::string unquoted;
  if (key.size() >= 2 && key.front() == '"' && key.back() == '"') {
    std::string_view inner = key.substr(1, key.size() - 2);
    for (std::size_t i = 0; i < inner.size(); ++i) {
      char c = inner[i];
      if (c == '\\') {
        if (i + 1 == inner.size() || (inner[i + 1] != '"' && inner[i + 1] != '\\')) {
          return BadKey("is a malformed quoted string");
        }
        c = inner[++i];
      } else if (c == '"') {
        return BadKey("is a malformed quoted string");
      }
      unquoted += c;
    }
    key = unquoted;
  }
  if (key.empty()) return BadKey("is empty");
  if (key.size() > kMaxIdempotencyKeyLength) {
    return BadKey(core::StrCat("is longer than ", kMaxIdempotencyKeyLength, " characters"));
  }
  for (char c : key) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) return BadKey("may hold printable ASCII characters only");
  }
  return std::string(key);
}

std::string CanonicalQuery(std::vector<std::pair<std::string, std::string>> params) {
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [name, value] : params) {
    if (!out.empty()) out += '&';
    AppendEncoded(out, name);
    out += '=';
    AppendEncoded(out, value);
  }
  return out;
}

std::string RequestFingerprint(const RequestParts& parts) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (const std::string* part :
       {&parts.method, &parts.path, &parts.query, &parts.prefer_return, &parts.caller, &parts.body}) {
    const std::string length = core::StrCat(part->size(), ":");
    EVP_DigestUpdate(ctx, length.data(), length.size());
    EVP_DigestUpdate(ctx, part->data(), part->size());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx, digest, &n);
  EVP_MD_CTX_free(ctx);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (unsigned int i = 0; i < n; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

InFlightKeys::Claim::~Claim() {
  if (owner_ == nullptr) return;
  absl::MutexLock lock(&owner_->mu_);
  owner_->keys_.erase(entry_);
}

InFlightKeys::Claim InFlightKeys::TryClaim(std::string_view tenant, std::string_view key) {
  // The tenant comes first and cannot hold a newline, so no two pairs share an entry.
  std::string entry = core::StrCat(tenant, "\n", key);
  absl::MutexLock lock(&mu_);
  if (!keys_.insert(entry).second) return Claim();
  return Claim(this, std::move(entry));
}

std::size_t InFlightKeys::size() const {
  absl::MutexLock lock(&mu_);
  return keys_.size();
}

}  // namespace medgrid::resilience
