#include "medgrid/auth/jwks.h"

#include <fstream>
#include <iterator>
#include <utility>

#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/http/client.h"
#include "medgrid/http/external.h"

namespace medgrid::auth {
namespace {

// A JWKS of a few keys is a few KiB; anything near this is not one.
constexpr std::size_t kMaxJwksBytes = 1 << 20;

std::string_view View(absl::string_view s) { return {s.data(), s.size()}; }

absl::StatusOr<std::shared_ptr<const KeySet>> Load(const JwksSourceOptions& options, std::chrono::milliseconds deadline,
                                                   const http::ExternalCallOptions& call = {}) {
  ASSIGN_OR_RETURN(const std::string text,
                   ReadJwks(options.location, options.fetch_timeout, options.dependency, deadline, call));
  return KeySet::Parse(text);
}

}  // namespace

absl::StatusOr<std::string> ReadJwks(std::string_view location, std::chrono::milliseconds timeout,
                                     http::ExternalDependency* dependency, std::chrono::milliseconds deadline,
                                     const http::ExternalCallOptions& call) {
  if (location.starts_with("http://") || location.starts_with("https://")) {
    http::FetchRequest request;
    ASSIGN_OR_RETURN(request.url, http::ParseUrl(location));
    request.headers = {{"Accept", "application/json"}};
    request.connect_timeout = timeout;
    request.timeout = timeout;
    request.max_body = kMaxJwksBytes;
    // A GET of a key set is idempotent: FetchExternal may retry it.
    ASSIGN_OR_RETURN(http::FetchResponse response,
                     dependency != nullptr
                         ? http::FetchExternal(*dependency, request, dependency->clock().Now() + deadline, call)
                         : http::Fetch(request));
    if (response.status != 200) {
      return absl::UnavailableError(core::StrCat("the JWKS URL answered HTTP ", response.status));
    }
    return std::move(response.body);
  }
  std::ifstream in{std::string(location), std::ios::binary};
  if (!in) return absl::NotFoundError(core::StrCat("cannot open the JWKS file ", location));
  std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) return absl::UnavailableError(core::StrCat("cannot read the JWKS file ", location));
  return text;
}

absl::StatusOr<std::unique_ptr<JwksSource>> JwksSource::Start(JwksSourceOptions options, const core::Clock& clock) {
  if (options.location.empty()) return absl::InvalidArgumentError("a JWKS file or URL is required");
  if (options.refresh.count() <= 0) return absl::InvalidArgumentError("the JWKS refresh period must be positive");
  absl::StatusOr<std::shared_ptr<const KeySet>> keys = Load(options, options.fetch_deadline);
  if (!keys.ok()) {
    return absl::Status(keys.status().code(),
                        core::StrCat("JWKS ", options.location, ": ", View(keys.status().message())));
  }
  std::unique_ptr<JwksSource> source(new JwksSource(std::move(options), clock, *std::move(keys)));
  source->worker_.Start();
  return source;
}

JwksSource::JwksSource(JwksSourceOptions options, const core::Clock& clock, std::shared_ptr<const KeySet> keys)
    : options_(std::move(options)),
      clock_(clock),
      keys_(std::move(keys)),
      last_load_(clock.Now()),
      // The first step comes at once, right after the load Start did: it only waits.
      worker_([this, first = true]() mutable -> std::optional<std::chrono::milliseconds> {
        if (!std::exchange(first, false)) {
          absl::MutexLock lock(&load_mu_);
          // Stop ends a retry's wait: no refresh holds up a shutdown.
          http::ExternalCallOptions call;
          call.wait = [this](std::chrono::microseconds delay) { return worker_.Pause(delay); };
          Reload("refresh", options_.fetch_deadline, call);
        }
        return std::chrono::duration_cast<std::chrono::milliseconds>(options_.refresh);
      }) {}

JwksSource::~JwksSource() { Stop(); }

void JwksSource::Stop() { worker_.Stop(); }

std::shared_ptr<const KeySet> JwksSource::Keys() {
  absl::MutexLock lock(&mu_);
  return keys_;
}

std::shared_ptr<const KeySet> JwksSource::KeysAfterUnknownKid(std::string_view kid) {
  absl::MutexLock load(&load_mu_);
  // Requests with the same new kid queue here behind one reload, then find it.
  std::shared_ptr<const KeySet> keys = Keys();
  if (keys->HasKid(kid) || clock_.Now() - last_load_ < options_.min_refetch) return keys;
  // The caller is a request (perhaps on an I/O thread): its retries must
  // fit in one fetch's timeout, no longer than a single attempt could take.
  Reload("unknown kid", options_.fetch_timeout);
  return Keys();
}

void JwksSource::Reload(std::string_view reason, std::chrono::milliseconds deadline,
                        const http::ExternalCallOptions& call) {
  last_load_ = clock_.Now();
  absl::StatusOr<std::shared_ptr<const KeySet>> keys = Load(options_, deadline, call);
  if (!keys.ok()) {
    core::Log(core::LogLevel::kWarn, "auth.jwks_reload_failed",
              {{"location", options_.location}, {"reason", reason}, {"error", View(keys.status().message())}});
    return;
  }
  const std::string count = std::to_string((*keys)->size());
  core::Log(core::LogLevel::kDebug, "auth.jwks_reloaded",
            {{"location", options_.location}, {"reason", reason}, {"keys", count}});
  absl::MutexLock lock(&mu_);
  keys_ = *std::move(keys);
}

}  // namespace medgrid::auth
