#include "medgrid/bulk/export_http.h"

#include <charconv>

#include "boost/beast/http.hpp"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/http_errors.h"
#include "medgrid/fhir/operation_outcome.h"

namespace medgrid::bulk {
namespace {

namespace bhttp = boost::beast::http;

constexpr std::string_view kFhirJson = "application/fhir+json; charset=utf-8";

http::Response Make(bhttp::status status, unsigned version, std::string body, std::string_view type = kFhirJson) {
  http::Response res{status, version};
  res.set(bhttp::field::server, "medgrid");
  if (!body.empty()) {
    res.set(bhttp::field::content_type, type);
    res.body() = std::move(body);
  }
  return res;
}

http::Response ErrorOf(const absl::Status& st, unsigned version) {
  fhir::HttpError e = fhir::ToHttpError(st);
  return Make(static_cast<bhttp::status>(e.status), version, std::move(e.outcome));
}

http::Response Error(int status, const std::string& message, unsigned version) {
  return Make(static_cast<bhttp::status>(status), version, fhir::OutcomeFor(status, message));
}

http::Response NotAllowed(std::string_view allow, unsigned version) {
  http::Response res = Error(405, core::StrCat("Use ", allow, " here"), version);
  res.set(bhttp::field::allow, allow);
  return res;
}

// "bytes=a-b", "bytes=a-" or "bytes=-n" against `size`: [first, last].
std::optional<std::pair<uint64_t, uint64_t>> ParseRange(std::string_view h, uint64_t size) {
  if (h.rfind("bytes=", 0) != 0 || size == 0) return std::nullopt;
  h.remove_prefix(6);
  const std::size_t dash = h.find('-');
  if (dash == std::string_view::npos || h.find(',') != std::string_view::npos) return std::nullopt;
  auto num = [](std::string_view s) -> std::optional<uint64_t> {
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
  };
  std::string_view a = h.substr(0, dash), b = h.substr(dash + 1);
  if (a.empty()) {
    auto n = num(b);
    if (!n || *n == 0) return std::nullopt;
    return std::make_pair(size - std::min(*n, size), size - 1);
  }
  auto first = num(a);
  if (!first || *first >= size) return std::nullopt;
  uint64_t last = size - 1;
  if (!b.empty()) {
    auto l = num(b);
    if (!l || *l < *first) return std::nullopt;
    last = std::min(*l, size - 1);
  }
  return std::make_pair(*first, last);
}

}  // namespace

std::optional<http::Response> HandleExportRequest(ExportService& service, const http::Request& req,
                                                  const std::string& tenant, const std::string& rest,
                                                  const std::vector<std::pair<std::string, std::string>>& params,
                                                  const std::string& base_url, std::string& route) {
  const unsigned v = req.version();
  std::vector<std::string> seg;
  for (std::string_view s : core::StrSplit(std::string_view(rest).substr(1), '/')) seg.emplace_back(s);
  const bool get = req.method() == bhttp::verb::get;

  KickOffRequest kick;
  kick.tenant = tenant;
  if (seg.size() == 1 && seg[0] == "$export") {
    route = "/fhir/{tenant}/$export";
    kick.level = "system";
  } else if (seg.size() == 2 && seg[0] == "Patient" && seg[1] == "$export") {
    route = "/fhir/{tenant}/Patient/$export";
    kick.level = "patient";
  } else if (seg.size() == 3 && seg[0] == "Group" && seg[2] == "$export") {
    route = "/fhir/{tenant}/Group/{id}/$export";
    kick.level = "group";
    kick.group_id = seg[1];
  } else if (seg.size() == 2 && seg[0] == "$export-status") {
    route = "/fhir/{tenant}/$export-status/{job}";
    if (req.method() == bhttp::verb::delete_) {
      absl::Status st = service.Cancel(tenant, seg[1]);
      if (!st.ok()) return ErrorOf(st, v);
      return Error(202, "The export was cancelled and its files removed", v);
    }
    if (!get) return NotAllowed("GET, DELETE", v);
    absl::StatusOr<ExportStatus> status = service.Status(tenant, seg[1], base_url);
    if (!status.ok()) return ErrorOf(status.status(), v);
    switch (status->state) {
      case ExportStatus::State::kRunning: {
        http::Response res = Make(bhttp::status::accepted, v, "");
        res.set("X-Progress", status->progress);
        res.set(bhttp::field::retry_after, std::to_string(service.config().retry_after_seconds));
        return res;
      }
      case ExportStatus::State::kFailed:
        return Error(500, core::StrCat("The export failed: ", status->error), v);
      case ExportStatus::State::kDone: {
        http::Response res = Make(bhttp::status::ok, v, std::move(status->manifest), "application/json");
        res.set(bhttp::field::expires, core::FormatHttpDate(status->expires));
        return res;
      }
    }
    return Error(500, "Unknown export state", v);
  } else if (seg.size() == 3 && seg[0] == "$export-file") {
    route = "/fhir/{tenant}/$export-file/{job}/{name}";
    if (!get && req.method() != bhttp::verb::head) return NotAllowed("GET", v);
    absl::StatusOr<std::unique_ptr<ObjectReader>> file = service.OpenFile(tenant, seg[1], seg[2]);
    if (!file.ok()) return ErrorOf(file.status(), v);
    const uint64_t size = (*file)->size();
    uint64_t first = 0, last = size == 0 ? 0 : size - 1;
    bhttp::status code = bhttp::status::ok;
    if (std::string_view range = req[bhttp::field::range]; !range.empty()) {
      auto r = ParseRange(range, size);
      if (!r) {
        http::Response res = Error(416, "Unsatisfiable range", v);
        res.set(bhttp::field::content_range, core::StrCat("bytes */", size));
        return res;
      }
      std::tie(first, last) = *r;
      code = bhttp::status::partial_content;
    }
    std::string body;
    if (size > 0 && req.method() == bhttp::verb::get) {
      absl::StatusOr<std::string> bytes = (*file)->ReadAt(first, static_cast<std::size_t>(last - first + 1));
      if (!bytes.ok()) return ErrorOf(bytes.status(), v);
      body = std::move(*bytes);
    }
    http::Response res{code, v};
    res.set(bhttp::field::server, "medgrid");
    res.set(bhttp::field::content_type, "application/fhir+ndjson");
    res.set(bhttp::field::accept_ranges, "bytes");
    if (code == bhttp::status::partial_content) {
      res.set(bhttp::field::content_range, core::StrCat("bytes ", first, "-", last, "/", size));
    }
    res.body() = std::move(body);
    return res;
  } else {
    return std::nullopt;  // e.g. Patient/{id}/$export: not a bulk data path
  }

  // Kick-off.
  if (!get) return NotAllowed("GET", v);
  kick.params = params;
  kick.prefer = std::string(req["Prefer"]);
  const std::size_t query = std::string_view(req.target()).find('?');
  kick.request_url = core::StrCat(base_url, rest, query == std::string_view::npos ? "" : req.target().substr(query));
  absl::StatusOr<std::string> job = service.KickOff(kick);
  if (!job.ok()) return ErrorOf(job.status(), v);
  http::Response res = Make(bhttp::status::accepted, v, "");
  res.set(bhttp::field::content_location, core::StrCat(base_url, "/$export-status/", *job));
  return res;
}

}  // namespace medgrid::bulk
