#include "medgrid/engine/reindexer.h"

#include <unistd.h>

#include <random>

#include "fmt/format.h"
#include "medgrid/core/logging.h"

namespace medgrid::engine {
namespace {

std::string OwnerName() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}/{}/{:08x}", host, getpid(), rng() & 0xffffffff);
}

}  // namespace

Reindexer::Reindexer(const FhirEngine& engine, store::Store& store, ReindexerConfig config)
    : engine_(engine), store_(store), config_(config), owner_(OwnerName()) {}

Reindexer::~Reindexer() { Stop(); }

void Reindexer::Start() {
  stopping_ = false;
  thread_ = std::thread([this] { Run(); });
}

void Reindexer::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Reindexer::Run() {
  while (!stopping_) {
    if (std::chrono::steady_clock::now() - last_statistics_ >= config_.statistics_every) RefreshStatistics();
    if (WorkOnce()) continue;
    std::unique_lock lock(mu_);
    wake_.wait_for(lock, config_.idle_poll, [this] { return stopping_.load(); });
  }
}

void Reindexer::RefreshStatistics() {
  last_statistics_ = std::chrono::steady_clock::now();
  for (store::ResourceStore* shard : store_.AllShards()) {
    if (stopping_) return;
    absl::StatusOr<std::vector<std::string>> analyzed = shard->RefreshStatistics();
    if (!analyzed.ok()) {
      core::Log(core::LogLevel::kWarn, "statistics.refresh_failed",
                {{"reason", std::string(analyzed.status().message())}});
      continue;
    }
    for (const std::string& table : *analyzed) core::Log(core::LogLevel::kInfo, "statistics.refreshed", {{"table", table}});
    // Expired idempotency records go in the background, a bounded batch at
    // a time (a lookup ignores and replaces an expired one anyway).
    absl::StatusOr<int64_t> purged = shard->PurgeExpiredIdempotencyKeys(config_.idempotency_purge_batch);
    if (!purged.ok()) {
      core::Log(core::LogLevel::kWarn, "idempotency.purge_failed",
                {{"reason", std::string(purged.status().message())}});
    } else if (*purged > 0) {
      core::Log(core::LogLevel::kInfo, "idempotency.purged", {{"rows", std::to_string(*purged)}});
    }
  }
}

bool Reindexer::WorkOnce() {
  bool worked = false;
  for (store::ResourceStore* shard : store_.AllShards()) {
    if (stopping_) return worked;
    absl::StatusOr<std::optional<store::ReindexJob>> claimed = shard->ClaimReindex(owner_, config_.lease);
    if (!claimed.ok()) {
      core::Log(core::LogLevel::kWarn, "reindex.claim_failed", {{"reason", std::string(claimed.status().message())}});
      continue;
    }
    if (!*claimed) continue;
    worked = true;
    store::ReindexJob job = **claimed;
    // The tenant's parameters as they are now; a SearchParameter written
    // during the job is applied by the writes after it and by a new job.
    store::IndexFn index = engine_.IndexerFor(job.tenant);
    core::Log(core::LogLevel::kInfo, "reindex.claimed",
              {{"tenant", job.tenant}, {"job", std::to_string(job.id)}, {"processed", std::to_string(job.processed)}});
    while (!stopping_ && job.status == "running") {
      absl::StatusOr<store::ReindexJob> next = shard->ReindexBatch(job, owner_, config_.batch, index, config_.lease);
      if (!next.ok()) {
        core::Log(core::LogLevel::kWarn, "reindex.batch_failed",
                  {{"tenant", job.tenant}, {"job", std::to_string(job.id)},
                   {"reason", std::string(next.status().message())}});
        break;
      }
      job = *std::move(next);
    }
    if (job.status == "done") {
      core::Log(core::LogLevel::kInfo, "reindex.done",
                {{"tenant", job.tenant}, {"job", std::to_string(job.id)}, {"processed", std::to_string(job.processed)}});
    }
  }
  return worked;
}

}  // namespace medgrid::engine
