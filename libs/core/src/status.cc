#include "medgrid/core/status.h"

#include <charconv>

namespace medgrid::core {
namespace {

constexpr std::string_view kHttpPayload = "medgrid/http-status";
constexpr std::string_view kIssuePayload = "medgrid/issue-code";
constexpr std::string_view kPathPayload = "medgrid/path";
constexpr std::string_view kRetryAfterPayload = "medgrid/retry-after";

std::optional<std::string> Payload(const absl::Status& status, std::string_view key) {
  auto p = status.GetPayload(absl::string_view(key.data(), key.size()));
  if (!p.has_value()) return std::nullopt;
  return std::string(*p);
}

}  // namespace

Error::operator absl::Status() const {
  absl::Status st(code_, message_);
  if (http_) st.SetPayload(absl::string_view(kHttpPayload.data(), kHttpPayload.size()), absl::Cord(std::to_string(*http_)));
  if (issue_) st.SetPayload(absl::string_view(kIssuePayload.data(), kIssuePayload.size()), absl::Cord(*issue_));
  if (path_) st.SetPayload(absl::string_view(kPathPayload.data(), kPathPayload.size()), absl::Cord(*path_));
  if (retry_after_) {
    st.SetPayload(absl::string_view(kRetryAfterPayload.data(), kRetryAfterPayload.size()),
                  absl::Cord(std::to_string(*retry_after_)));
  }
  return st;
}

std::optional<int> HttpStatusOf(const absl::Status& status) {
  auto p = Payload(status, kHttpPayload);
  if (!p) return std::nullopt;
  int v = 0;
  auto [ptr, ec] = std::from_chars(p->data(), p->data() + p->size(), v);
  if (ec != std::errc()) return std::nullopt;
  return v;
}

std::optional<std::string> IssueCodeOf(const absl::Status& status) {
  return Payload(status, kIssuePayload);
}

std::optional<std::string> PathOf(const absl::Status& status) { return Payload(status, kPathPayload); }

std::optional<int64_t> RetryAfterOf(const absl::Status& status) {
  auto p = Payload(status, kRetryAfterPayload);
  if (!p) return std::nullopt;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(p->data(), p->data() + p->size(), v);
  if (ec != std::errc()) return std::nullopt;
  return v;
}

}  // namespace medgrid::core
