#include "medgrid/audit/pipeline.h"

#include <thread>

#include "medgrid/core/logging.h"
#include "medgrid/core/strings.h"

namespace medgrid::audit {
namespace {

constexpr std::size_t kBatch = 1000;
// After a batch smaller than kBatch, the thread waits this long for more, so
// that a busy server appends (and signs a head) a few times a second rather
// than once per handful of events.
constexpr std::chrono::milliseconds kBatchInterval(200);

// A spooled record: tenant, event id and the event's facts (FactsLine),
// each ended by a newline, then the AuditEvent JSON.
struct Parsed {
  std::string_view tenant;
  std::string_view id;
  std::string_view facts;
  std::string_view event;
};
bool Parse(std::string_view record, Parsed& out) {
  const std::size_t a = record.find('\n');
  const std::size_t b = a == std::string_view::npos ? a : record.find('\n', a + 1);
  const std::size_t c = b == std::string_view::npos ? b : record.find('\n', b + 1);
  if (c == std::string_view::npos) return false;
  out = {record.substr(0, a), record.substr(a + 1, b - a - 1), record.substr(b + 1, c - b - 1), record.substr(c + 1)};
  return true;
}

}  // namespace

AuditPipeline::AuditPipeline(Spool& spool, AuditSink& sink, std::string source)
    : spool_(spool), sink_(sink), source_(std::move(source)) {}

AuditPipeline::~AuditPipeline() { Stop(); }

bool AuditPipeline::Record(const Interaction& interaction) {
  const std::string id = NewEventId(interaction.recorded);
  const std::string record = core::StrCat(interaction.tenant, "\n", id, "\n", FactsLine(FactsOf(interaction, id)), "\n",
                                          AuditEventJson(interaction, id, source_));
  absl::Status s = spool_.Append(record);
  if (!s.ok()) {
    ++spool_failures_;
    core::Log(core::LogLevel::kError, "audit.spool_failed",
              {{"tenant", interaction.tenant}, {"event", id}, {"error", std::string(s.message())}});
    return false;
  }
  ++recorded_;
  // No wake-up: the thread looks at the spool every 100 ms at most, and
  // waking it per event would cost two context switches per interaction.
  return true;
}

int64_t AuditPipeline::MoveBatch() {
  absl::Status synced = spool_.Sync();
  if (!synced.ok()) core::Log(core::LogLevel::kError, "audit.spool_sync_failed", {{"error", std::string(synced.message())}});
  absl::StatusOr<Spool::Batch> batch = spool_.Read(kBatch);
  if (!batch.ok()) {
    core::Log(core::LogLevel::kError, "audit.spool_read_failed", {{"error", std::string(batch.status().message())}});
    return -1;
  }
  if (batch->records.empty()) return 0;
  std::vector<PendingEvent> events;
  events.reserve(batch->records.size());
  for (const std::string& record : batch->records) {
    Parsed p;
    if (!Parse(record, p)) {
      core::Log(core::LogLevel::kError, "audit.record_malformed", {{"bytes", std::to_string(record.size())}});
      continue;
    }
    events.push_back({std::string(p.tenant), std::string(p.id), std::string(p.facts), std::string(p.event)});
  }
  if (absl::Status delivered = sink_.Deliver(events); !delivered.ok()) {
    ++append_failures_;
    core::Log(core::LogLevel::kWarn, "audit.delivery_failed",
              {{"events", std::to_string(events.size())}, {"error", std::string(delivered.message())}});
    return -1;
  }
  absl::Status committed = spool_.Commit(batch->end);
  if (!committed.ok()) {
    core::Log(core::LogLevel::kError, "audit.spool_commit_failed", {{"error", std::string(committed.message())}});
    return -1;
  }
  appended_ += batch->records.size();
  return static_cast<int64_t>(batch->records.size());
}

std::optional<std::chrono::milliseconds> AuditPipeline::Step() {
  using Ms = std::chrono::milliseconds;
  // Nothing spooled: look again in 100 ms (Record does not wake the thread:
  // waking it per event would cost two context switches per interaction).
  if (spool_.written() == spool_.committed()) return Ms(100);
  const int64_t moved = MoveBatch();
  if (moved < 0) return backoff_ = core::NextBackoff(backoff_);
  backoff_ = Ms(0);
  return moved < static_cast<int64_t>(kBatch) && !draining_ ? kBatchInterval : Ms(0);
}

bool AuditPipeline::Drain(std::chrono::milliseconds timeout) {
  const uint64_t target = spool_.written();
  if (!worker_.running()) return spool_.committed() >= target;  // nobody would move them
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  draining_ = true;
  bool done = true;
  while (spool_.committed() < target) {
    if (std::chrono::steady_clock::now() >= deadline) {
      done = false;
      break;
    }
    worker_.Wake();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  draining_ = false;
  return done;
}

AuditPipeline::Stats AuditPipeline::stats() const {
  Stats s;
  s.recorded = recorded_.load();
  s.spool_failures = spool_failures_.load();
  s.appended = appended_.load();
  s.append_failures = append_failures_.load();
  s.pending_bytes = spool_.written() - spool_.committed();
  return s;
}

}  // namespace medgrid::audit
