#include "medgrid/subscriptions/rest_hook.h"

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/http/client.h"

namespace medgrid::subscriptions {

absl::Status SendRestHook(const RestHookRequest& request, const RestHookTimeouts& timeouts) {
  const fhir::HttpEndpoint& endpoint = request.endpoint;
  http::FetchRequest fetch;
  fetch.method = request.method == "PUT" ? "PUT" : "POST";
  fetch.url = {.tls = endpoint.tls, .host = endpoint.host, .port = endpoint.port, .target = endpoint.target};
  // The channel's headers may replace the User-Agent, never the Content-Type.
  fetch.headers.emplace_back("User-Agent", "medgrid-subscriptions");
  fetch.headers.insert(fetch.headers.end(), request.headers.begin(), request.headers.end());
  if (!request.content_type.empty()) fetch.headers.emplace_back("Content-Type", request.content_type);
  fetch.body = request.body;
  fetch.connect_timeout = timeouts.connect;
  fetch.timeout = timeouts.response;
  fetch.max_body = 1 << 20;  // a receiver's answer is only looked at for its status
  ASSIGN_OR_RETURN(const http::FetchResponse response, http::Fetch(fetch));
  if (response.status < 200 || response.status >= 300) {
    return absl::UnavailableError(
        core::StrCat("The endpoint ", endpoint.host, ":", endpoint.port, " answered HTTP ", response.status));
  }
  return absl::OkStatus();
}

}  // namespace medgrid::subscriptions
