// The HTTP side of $export: maps the bulk data paths of a tenant onto
// ExportService, for gateway::Gateway::SetExportHook.
//
//   GET    {base}/$export, {base}/Patient/$export, {base}/Group/{id}/$export  kick-off: 202, Content-Location
//   GET    {base}/$export-status/{job}   202 (X-Progress, Retry-After) | 200 manifest | 4xx/5xx OperationOutcome
//   DELETE {base}/$export-status/{job}   cancel: 202
//   GET    {base}/$export-file/{job}/{name}  application/fhir+ndjson (Range: bytes=... gives 206)
//
// A file is answered from one read of at most ExportConfig::max_file_bytes
// (the HTTP layer sends string bodies), or of the requested range: the
// memory a download holds is bounded by the part size, not the export.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "medgrid/bulk/export_service.h"
#include "medgrid/http/server.h"

namespace medgrid::bulk {

// Answers `rest` (the path after /fhir/{tenant}) when it is a bulk data
// path, setting `route`; nullopt otherwise. Errors are OperationOutcomes.
std::optional<http::Response> HandleExportRequest(ExportService& service, const http::Request& request,
                                                  const std::string& tenant, const std::string& rest,
                                                  const std::vector<std::pair<std::string, std::string>>& params,
                                                  const std::string& base_url, std::string& route);

}  // namespace medgrid::bulk
