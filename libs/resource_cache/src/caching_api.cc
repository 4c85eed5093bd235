// Invariants: every key starts with the tenant (cache::CacheKey), in L1, in
// Redis and on the invalidation channel. A version in L1 or L2 is replaced
// only by a newer one (or the same one with its body), so a stale marker
// written for a committed change keeps every older fill out. Nothing here
// logs or publishes resource content: keys, versions and counts only.
#include "medgrid/resource_cache/caching_api.h"

#include <charconv>

#include "boost/asio/io_context.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/thread_pool.hpp"
#include "boost/json.hpp"
#include "medgrid/cache/redis.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/request_context.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace medgrid::resource_cache {
namespace {

// SET KEYS[1] ARGV[2] EX ARGV[4] unless the value there has a newer version
// than ARGV[1], or the same version while this write (ARGV[3] ~= '1') is only
// a stale marker.
constexpr const char* kGuardedSet = R"lua(
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^(%-?%d+)|'))
  local new = tonumber(ARGV[1])
  if v and (v > new or (v == new and ARGV[3] ~= '1')) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4])
return 1
)lua";

std::string VersionKey(const std::string& tenant, const std::string& type, const std::string& id, int64_t version) {
  return cache::CacheKey(tenant, type, core::StrCat(id, "/_history/", version));
}

std::string Marker(int64_t version) {
  Entry e;
  e.kind = Entry::Kind::kStale;
  e.version = version;
  return EncodeEntry(e);
}

absl::Status Gone(const std::string& type, const std::string& id, int64_t version) {
  // The engine's own answer for a deleted resource, word for word.
  return core::Error(absl::StatusCode::kNotFound,
                     core::StrCat("Resource ", type, "/", id, " was deleted (version ", version, ")"))
      .Http(410)
      .Issue("deleted");
}

std::chrono::microseconds Since(const core::Clock& clock, core::TimePoint start) {
  return std::chrono::duration_cast<std::chrono::microseconds>(clock.Now() - start);
}

std::string SplitTenant(const std::string& key) {
  std::string tenant, rest;
  SplitCacheKey(key, tenant, rest);
  return tenant;
}

void MoveCounter(prometheus::Counter& c, uint64_t value) {
  const double delta = static_cast<double>(value) - c.Value();
  if (delta > 0) c.Increment(delta);
}

}  // namespace

struct CachingFhirApi::Impl {
  explicit Impl(int threads) : pool(static_cast<size_t>(std::max(1, threads))) {}
  boost::asio::thread_pool pool;
  std::unique_ptr<cache::RedisSubscriber> subscriber;
  std::mutex flush_mu;  // one flusher of pending invalidations at a time
  std::atomic<bool> stopped{false};
  // Metrics (null without a registry).
  prometheus::Counter* l1_hit = nullptr;
  prometheus::Counter* l1_miss = nullptr;
  prometheus::Counter* l2_hit = nullptr;
  prometheus::Counter* l2_miss = nullptr;
  prometheus::Counter* l2_error = nullptr;
  prometheus::Counter* backend = nullptr;
  prometheus::Counter* coalesced = nullptr;
  prometheus::Gauge* l1_bytes = nullptr;
  prometheus::Gauge* l1_entries = nullptr;
  prometheus::Gauge* pending = nullptr;
  prometheus::Gauge* breaker = nullptr;
};

CachingFhirApi::CachingFhirApi(CacheConfig config, engine::FhirApi& inner, std::shared_ptr<cache::RedisClient> redis,
                               HotSpots* hot, const core::Clock& clock, prometheus::Registry* metrics)
    : config_(std::move(config)),
      inner_(inner),
      redis_(std::move(redis)),
      hot_(hot),
      clock_(clock),
      l1_(clock, config_.l1),
      breaker_(config_.l2_breaker, clock,
               [this](std::string_view, resilience::BreakerState from, resilience::BreakerState to) {
                 core::Log(to == resilience::BreakerState::kOpen ? core::LogLevel::kWarn : core::LogLevel::kInfo,
                           "cache.l2_breaker",
                           {{"from", std::string(resilience::BreakerStateName(from))},
                            {"to", std::string(resilience::BreakerStateName(to))}});
                 if (impl_ != nullptr && impl_->breaker != nullptr) impl_->breaker->Set(static_cast<double>(to));
               }),
      impl_(std::make_unique<Impl>(config_.l2_threads)) {
  if (metrics != nullptr) {
    auto& requests = prometheus::BuildCounter()
                         .Name("medgrid_cache_requests_total")
                         .Help("FHIR resource cache look-ups by level (l1 in-process, l2 Redis) and result")
                         .Register(*metrics);
    impl_->l1_hit = &requests.Add({{"level", "l1"}, {"result", "hit"}});
    impl_->l1_miss = &requests.Add({{"level", "l1"}, {"result", "miss"}});
    impl_->l2_hit = &requests.Add({{"level", "l2"}, {"result", "hit"}});
    impl_->l2_miss = &requests.Add({{"level", "l2"}, {"result", "miss"}});
    impl_->l2_error = &requests.Add({{"level", "l2"}, {"result", "error"}});
    impl_->backend = &prometheus::BuildCounter()
                          .Name("medgrid_cache_backend_reads_total")
                          .Help("Reads by id the resource cache passed to the database")
                          .Register(*metrics)
                          .Add({});
    impl_->coalesced = &prometheus::BuildCounter()
                            .Name("medgrid_cache_coalesced_total")
                            .Help("Reads that waited for another caller's database read of the same key")
                            .Register(*metrics)
                            .Add({});
    auto& gauges = prometheus::BuildGauge()
                       .Name("medgrid_cache_l1")
                       .Help("The in-process resource cache: bytes charged and entries held")
                       .Register(*metrics);
    impl_->l1_bytes = &gauges.Add({{"state", "bytes"}});
    impl_->l1_entries = &gauges.Add({{"state", "entries"}});
    impl_->pending = &prometheus::BuildGauge()
                          .Name("medgrid_cache_pending_invalidations")
                          .Help("Invalidations Redis has not taken yet, kept to be written before L2 is read")
                          .Register(*metrics)
                          .Add({});
    impl_->breaker = &prometheus::BuildGauge()
                          .Name("medgrid_circuit_breaker_state")
                          .Help("Circuit breaker state by dependency: 0 closed, 1 open, 2 half-open")
                          .Register(*metrics)
                          .Add({{"dependency", "redis_cache"}});
    impl_->breaker->Set(0);
  }
  if (redis_ != nullptr) {
    impl_->subscriber = std::make_unique<cache::RedisSubscriber>(
        redis_->config(), std::vector<std::string>{core::StrCat(config_.redis_prefix, ":cache:invalidate")},
        [this](const std::string&, const std::string& message) { OnInvalidation(message); },
        [this] {
          // Invalidations published while the subscription was down are lost:
          // anything in L1 may be stale.
          l1_.Clear();
          core::Log(core::LogLevel::kWarn, "cache.l1_cleared", {{"reason", "invalidation channel reconnected"}});
        });
  }
}

CachingFhirApi::~CachingFhirApi() { Stop(); }

void CachingFhirApi::Stop() {
  if (impl_->stopped.exchange(true)) return;
  if (impl_->subscriber) impl_->subscriber->Stop();
  impl_->pool.join();
}

// ---- look-ups and fills ----

std::optional<Entry> CachingFhirApi::LookupL1(const std::string& key, int64_t min_version) {
  std::optional<cache::CachedValue> v = l1_.Get(key, min_version);
  std::optional<Entry> e = v ? DecodeEntry(*v->value) : std::nullopt;
  if (!e || e->kind == Entry::Kind::kStale) {
    l1_misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  l1_hits_.fetch_add(1, std::memory_order_relaxed);
  return e;
}

bool CachingFhirApi::L2Usable() { return redis_ != nullptr && breaker_.state() != resilience::BreakerState::kOpen; }

bool CachingFhirApi::FlushPending() {
  std::lock_guard flush(impl_->flush_mu);
  while (pending_size_.load(std::memory_order_acquire) > 0) {
    std::vector<std::pair<std::string, int64_t>> batch;
    {
      std::lock_guard lock(pending_mu_);
      for (size_t i = 0; i < pending_.size() && i < 500; ++i) batch.push_back(pending_[i]);
    }
    if (batch.empty()) return true;
    std::vector<std::vector<std::string>> commands;
    const std::string channel = core::StrCat(config_.redis_prefix, ":cache:invalidate");
    for (const auto& [key, version] : batch) {
      commands.push_back({"EVAL", kGuardedSet, "1", core::StrCat(config_.redis_prefix, ":res:", key),
                          std::to_string(version), Marker(version), "0", std::to_string(config_.l2_ttl.count())});
      commands.push_back({"PUBLISH", channel, core::StrCat(version, "|", key)});
    }
    absl::StatusOr<std::vector<cache::RedisReply>> r = redis_->Pipeline(commands);
    if (!r.ok()) return false;
    std::lock_guard lock(pending_mu_);
    // Only this flusher removes entries, and AddPending appends at the back
    // or drops from the front; drop what was sent, at most what is left.
    const size_t n = std::min(batch.size(), pending_.size());
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
    pending_size_.store(pending_.size(), std::memory_order_release);
  }
  return true;
}

void CachingFhirApi::AddPending(std::string key, int64_t version) {
  std::lock_guard lock(pending_mu_);
  pending_.emplace_back(std::move(key), version);
  if (pending_.size() > config_.max_pending_invalidations) {
    pending_.pop_front();
    if (pending_dropped_.fetch_add(1, std::memory_order_relaxed) % 1000 == 0) {
      core::Log(core::LogLevel::kError, "cache.invalidations_dropped",
                {{"dropped", std::to_string(pending_dropped_.load(std::memory_order_relaxed))},
                 {"reason", "Redis unreachable and the pending invalidations are full"}});
    }
  }
  pending_size_.store(pending_.size(), std::memory_order_release);
}

std::optional<Entry> CachingFhirApi::LookupL2(const std::string& key, int64_t min_version) {
  if (redis_ == nullptr) return std::nullopt;
  resilience::CircuitBreaker::Permit permit = breaker_.Allow();
  if (!permit) return std::nullopt;
  const core::TimePoint start = clock_.Now();
  bool ok = pending_size_.load(std::memory_order_acquire) == 0 || FlushPending();
  std::optional<std::string> value;
  if (ok) {
    absl::StatusOr<std::optional<std::string>> r = redis_->Get(core::StrCat(config_.redis_prefix, ":res:", key));
    ok = r.ok();
    if (ok) value = std::move(*r);
  }
  breaker_.Record(permit, ok ? resilience::Outcome::kSuccess : resilience::Outcome::kFailure, Since(clock_, start));
  if (!ok) {
    l2_errors_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  std::optional<Entry> e = value ? DecodeEntry(*value) : std::nullopt;
  if (!e || e->kind == Entry::Kind::kStale || e->version < min_version) {
    l2_misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  l2_hits_.fetch_add(1, std::memory_order_relaxed);
  return e;
}

std::optional<Entry> CachingFhirApi::Lookup(const std::string& key, int64_t min_version, bool use_l2) {
  if (std::optional<Entry> e = LookupL1(key, min_version)) return e;
  if (!use_l2) return std::nullopt;
  std::optional<Entry> e = LookupL2(key, min_version);
  if (e) {
    const bool hot = hot_ != nullptr && hot_->PatientHot(SplitTenant(key), e->patient);
    l1_.Put(key, std::make_shared<const std::string>(EncodeEntry(*e)), e->version,
            hot ? std::optional<std::chrono::microseconds>(config_.hot_l1_ttl) : std::nullopt);
  }
  return e;
}

absl::Status CachingFhirApi::L2Set(const std::string& key, const std::string& text, int64_t version, bool is_body,
                                   bool hot) {
  if (redis_ == nullptr) return absl::OkStatus();
  resilience::CircuitBreaker::Permit permit = breaker_.Allow();
  if (!permit) return absl::UnavailableError("the L2 breaker is open");
  const core::TimePoint start = clock_.Now();
  absl::StatusOr<cache::RedisReply> r =
      redis_->Eval(kGuardedSet, {core::StrCat(config_.redis_prefix, ":res:", key)},
                   {std::to_string(version), text, is_body ? "1" : "0",
                    std::to_string((hot ? config_.hot_l2_ttl : config_.l2_ttl).count())});
  absl::Status st = r.ok() ? (r->is_error() ? absl::InternalError("guarded SET failed") : absl::OkStatus()) : r.status();
  breaker_.Record(permit, r.ok() ? resilience::Outcome::kSuccess : resilience::Outcome::kFailure,
                  Since(clock_, start));
  if (!st.ok()) l2_errors_.fetch_add(1, std::memory_order_relaxed);
  return st;
}

void CachingFhirApi::FillL2(const std::string& key, const std::string& text, int64_t version, bool is_body, bool hot) {
  // A fill that Redis does not take is only a later miss.
  (void)L2Set(key, text, version, is_body, hot);
}

void CachingFhirApi::Fill(const std::string& key, const engine::ResourceResult& r, bool hot, bool l2) {
  Entry e;
  e.kind = r.deleted ? Entry::Kind::kDeleted : Entry::Kind::kBody;
  e.version = r.version;
  e.last_updated = r.last_updated;
  if (!r.deleted) {
    e.patient = PatientOf(r.type, r.id, r.body);
    e.body = r.body;
  }
  hot = hot || (hot_ != nullptr && hot_->PatientHot(SplitTenant(key), e.patient));
  auto text = std::make_shared<const std::string>(EncodeEntry(e));
  l1_.Put(key, text, r.version, hot ? std::optional<std::chrono::microseconds>(config_.hot_l1_ttl) : std::nullopt);
  if (l2) FillL2(key, *text, r.version, true, hot);
}

absl::StatusOr<engine::ResourceResult> CachingFhirApi::FromEntry(const std::string& type, const std::string& id,
                                                                Entry&& e) {
  if (e.kind == Entry::Kind::kDeleted) return Gone(type, id, e.version);
  engine::ResourceResult r;
  r.type = type;
  r.id = id;
  r.version = e.version;
  r.last_updated = e.last_updated;
  r.body = std::move(e.body);
  return r;
}

void CachingFhirApi::RecordPatient(const std::string& tenant, const std::string& type, const std::string& patient) {
  if (hot_ != nullptr) hot_->Record(tenant, type, patient);
}

// ---- reads ----

absl::StatusOr<engine::ResourceResult> CachingFhirApi::Read(const std::string& tenant, const std::string& type,
                                                            const std::string& id) {
  const std::string key = cache::CacheKey(tenant, type, id);
  const int64_t min_version = core::CurrentRequest().known_version;
  const std::string named = type == "Patient" ? id : "";
  if (hot_ != nullptr) RETURN_IF_ERROR(hot_->Admit(tenant, named));
  if (std::optional<Entry> e = Lookup(key, min_version, true)) {
    RecordPatient(tenant, type, e->patient);
    return FromEntry(type, id, std::move(*e));
  }
  const bool hot_patient = hot_ != nullptr && hot_->PatientHot(tenant, named);
  auto fetch = [&] {
    backend_reads_.fetch_add(1, std::memory_order_relaxed);
    absl::StatusOr<engine::ResourceResult> r = inner_.Read(tenant, type, id);
    if (r.ok()) Fill(key, *r, hot_patient, true);
    return r;
  };
  absl::StatusOr<engine::ResourceResult> r;
  if (hot_ != nullptr && hot_->Coalesce(tenant, type, named)) {
    bool ran = false;
    r = flights_.Do(key, [&] {
      ran = true;
      return fetch();
    });
    if (!ran) {
      coalesced_.fetch_add(1, std::memory_order_relaxed);
      // The shared read may have started before this client's own write.
      if (r.ok() && r->version < min_version) r = fetch();
    }
  } else {
    r = fetch();
  }
  RecordPatient(tenant, type, r.ok() && type != "Patient" ? PatientOf(type, id, r->body) : named);
  return r;
}

absl::StatusOr<engine::ResourceResult> CachingFhirApi::VRead(const std::string& tenant, const std::string& type,
                                                             const std::string& id, int64_t version) {
  const std::string key = VersionKey(tenant, type, id, version);
  const std::string named = type == "Patient" ? id : "";
  if (hot_ != nullptr) RETURN_IF_ERROR(hot_->Admit(tenant, named));
  if (std::optional<Entry> e = Lookup(key, 0, true)) {
    RecordPatient(tenant, type, e->patient);
    return FromEntry(type, id, std::move(*e));
  }
  backend_reads_.fetch_add(1, std::memory_order_relaxed);
  absl::StatusOr<engine::ResourceResult> r = inner_.VRead(tenant, type, id, version);
  if (r.ok()) Fill(key, *r, false, true);
  RecordPatient(tenant, type, named);
  return r;
}

bool CachingFhirApi::ServesWithoutBlocking(const std::string& tenant) { return inner_.ServesWithoutBlocking(tenant); }

struct AsyncReadState {
  std::string tenant, type, id, key;
  std::optional<int64_t> version;
  boost::asio::io_context* io = nullptr;
  bool coalesced = false;
  bool hot_patient = false;
  int64_t min_version = 0;
  engine::ResultCallback done;  // null when coalesced: the waiters hold the callbacks
};

void CachingFhirApi::ReadAsync(const std::string& tenant, const std::string& type, const std::string& id,
                               std::optional<int64_t> version, boost::asio::io_context& io,
                               engine::ResultCallback done) {
  const std::string key = version ? VersionKey(tenant, type, id, *version) : cache::CacheKey(tenant, type, id);
  const int64_t min_version = version ? 0 : core::CurrentRequest().known_version;
  const std::string named = type == "Patient" ? id : "";
  if (hot_ != nullptr) {
    if (absl::Status st = hot_->Admit(tenant, named); !st.ok()) return done(st);
  }
  if (std::optional<Entry> e = LookupL1(key, min_version)) {
    RecordPatient(tenant, type, e->patient);
    return done(FromEntry(type, id, std::move(*e)));
  }
  auto s = std::make_shared<AsyncReadState>();
  s->tenant = tenant;
  s->type = type;
  s->id = id;
  s->key = key;
  s->version = version;
  s->io = &io;
  s->min_version = min_version;
  s->hot_patient = hot_ != nullptr && hot_->PatientHot(tenant, named);
  s->coalesced = hot_ != nullptr && hot_->Coalesce(tenant, type, named);
  if (s->coalesced) {
    std::lock_guard lock(waiters_mu_);
    auto [it, leader] = waiters_.try_emplace(key);
    it->second.push_back(Waiter{&io, std::move(done), min_version});
    if (!leader) {
      coalesced_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  } else {
    s->done = std::move(done);
  }
  auto complete = [this, s](absl::StatusOr<engine::ResourceResult> r) {
    RecordPatient(s->tenant, s->type,
                  r.ok() && s->type != "Patient" ? PatientOf(s->type, s->id, r->body)
                                                  : (s->type == "Patient" ? s->id : ""));
    if (s->coalesced) return Deliver(*s, r);
    s->done(std::move(r));
  };
  auto from_database = [this, s, complete] {
    backend_reads_.fetch_add(1, std::memory_order_relaxed);
    inner_.ReadAsync(s->tenant, s->type, s->id, s->version, *s->io,
                     [this, s, complete](absl::StatusOr<engine::ResourceResult> r) {
                       if (r.ok()) {
                         Fill(s->key, *r, s->hot_patient, /*l2=*/false);
                         if (redis_ != nullptr && !impl_->stopped) {
                           std::optional<cache::CachedValue> v = l1_.Get(s->key, r->version);
                           if (v) {
                             boost::asio::post(impl_->pool, [this, s, text = v->value, version = r->version] {
                               FillL2(s->key, *text, version, true, s->hot_patient);
                             });
                           }
                         }
                       }
                       complete(std::move(r));
                     });
  };
  if (!L2Usable() || impl_->stopped) return from_database();
  // L2 blocks: off the I/O thread, then back to it.
  boost::asio::post(impl_->pool, [this, s, complete, from_database] {
    std::optional<Entry> e = LookupL2(s->key, s->min_version);
    if (e) {
      l1_.Put(s->key, std::make_shared<const std::string>(EncodeEntry(*e)), e->version,
              s->hot_patient ? std::optional<std::chrono::microseconds>(config_.hot_l1_ttl) : std::nullopt);
    }
    boost::asio::post(*s->io, [this, s, complete, from_database, e = std::move(e)]() mutable {
      if (!e) return from_database();
      complete(FromEntry(s->type, s->id, std::move(*e)));
    });
  });
}

void CachingFhirApi::Deliver(const AsyncReadState& s, const absl::StatusOr<engine::ResourceResult>& r) {
  std::vector<Waiter> waiters;
  {
    std::lock_guard lock(waiters_mu_);
    auto it = waiters_.find(s.key);
    if (it == waiters_.end()) return;
    waiters = std::move(it->second);
    waiters_.erase(it);
  }
  for (Waiter& w : waiters) {
    if (r.ok() && r->version < w.min_version) {
      // This caller wrote a newer version than the shared read saw.
      boost::asio::post(*w.io, [this, t = s.tenant, ty = s.type, id = s.id, io = w.io, done = std::move(w.done)] {
        backend_reads_.fetch_add(1, std::memory_order_relaxed);
        inner_.ReadAsync(t, ty, id, std::nullopt, *io, done);
      });
    } else if (w.io == s.io) {
      w.done(r);
    } else {
      boost::asio::post(*w.io, [done = std::move(w.done), r] { done(r); });
    }
  }
}

// ---- writes ----

void CachingFhirApi::WriteThrough(const std::string& tenant, const absl::StatusOr<engine::ResourceResult>& r) {
  if (!r.ok()) return;
  const std::string key = cache::CacheKey(tenant, r->type, r->id);
  Fill(key, *r, false, /*l2=*/false);
  if (redis_ == nullptr) return;
  std::optional<cache::CachedValue> v = l1_.Get(key, r->version);
  const std::string text = v ? *v->value : Marker(r->version);
  if (!L2Set(key, text, r->version, v.has_value(), false).ok()) AddPending(key, r->version);
}

absl::StatusOr<engine::ResourceResult> CachingFhirApi::Create(const std::string& tenant, const std::string& type,
                                                              const std::string& body) {
  absl::StatusOr<engine::ResourceResult> r = inner_.Create(tenant, type, body);
  WriteThrough(tenant, r);
  RecordPatient(tenant, type, r.ok() ? PatientOf(type, r->id, r->body) : "");
  return r;
}

void CachingFhirApi::CreateAsync(const std::string& tenant, const std::string& type, const std::string& body,
                                 boost::asio::io_context& io, engine::ResultCallback done) {
  inner_.CreateAsync(tenant, type, body, io,
                     [this, tenant, type, done = std::move(done)](absl::StatusOr<engine::ResourceResult> r) {
                       if (r.ok()) {
                         // A new id: no older version of it is cached anywhere,
                         // so L2 can be written later, off this I/O thread.
                         const std::string key = cache::CacheKey(tenant, r->type, r->id);
                         Fill(key, *r, false, /*l2=*/false);
                         std::optional<cache::CachedValue> v = l1_.Get(key, r->version);
                         if (v && redis_ != nullptr && !impl_->stopped) {
                           boost::asio::post(impl_->pool, [this, key, text = v->value, version = r->version] {
                             FillL2(key, *text, version, true, false);
                           });
                         }
                         RecordPatient(tenant, type, PatientOf(type, r->id, r->body));
                       } else {
                         RecordPatient(tenant, type, "");
                       }
                       done(std::move(r));
                     });
}

absl::StatusOr<engine::ResourceResult> CachingFhirApi::Update(const std::string& tenant, const std::string& type,
                                                              const std::string& id, const std::string& body,
                                                              std::optional<int64_t> if_match) {
  if (hot_ != nullptr && type == "Patient") RETURN_IF_ERROR(hot_->Admit(tenant, id));
  absl::StatusOr<engine::ResourceResult> r = inner_.Update(tenant, type, id, body, if_match);
  WriteThrough(tenant, r);
  RecordPatient(tenant, type, r.ok() ? PatientOf(type, id, r->body) : (type == "Patient" ? id : ""));
  return r;
}

absl::StatusOr<engine::ResourceResult> CachingFhirApi::Patch(const std::string& tenant, const std::string& type,
                                                             const std::string& id, const std::string& patch,
                                                             std::optional<int64_t> if_match) {
  if (hot_ != nullptr && type == "Patient") RETURN_IF_ERROR(hot_->Admit(tenant, id));
  absl::StatusOr<engine::ResourceResult> r = inner_.Patch(tenant, type, id, patch, if_match);
  WriteThrough(tenant, r);
  RecordPatient(tenant, type, r.ok() ? PatientOf(type, id, r->body) : (type == "Patient" ? id : ""));
  return r;
}

absl::StatusOr<engine::ResourceResult> CachingFhirApi::Delete(const std::string& tenant, const std::string& type,
                                                              const std::string& id, std::optional<int64_t> if_match) {
  if (hot_ != nullptr && type == "Patient") RETURN_IF_ERROR(hot_->Admit(tenant, id));
  absl::StatusOr<engine::ResourceResult> r = inner_.Delete(tenant, type, id, if_match);
  if (r.ok()) {
    engine::ResourceResult tombstone = *r;
    tombstone.deleted = true;
    tombstone.body.clear();
    WriteThrough(tenant, tombstone);
  }
  RecordPatient(tenant, type, type == "Patient" ? id : "");
  return r;
}

absl::StatusOr<engine::ResourceResult> CachingFhirApi::ConditionalCreate(const std::string& tenant,
                                                                         const std::string& type,
                                                                         const std::string& body,
                                                                         const engine::QueryParams& criteria) {
  absl::StatusOr<engine::ResourceResult> r = inner_.ConditionalCreate(tenant, type, body, criteria);
  if (r.ok() && r->created) WriteThrough(tenant, r);
  RecordPatient(tenant, type, "");
  return r;
}

absl::StatusOr<engine::ResourceResult> CachingFhirApi::ConditionalUpdate(const std::string& tenant,
                                                                         const std::string& type,
                                                                         const engine::QueryParams& criteria,
                                                                         const std::string& body) {
  absl::StatusOr<engine::ResourceResult> r = inner_.ConditionalUpdate(tenant, type, criteria, body);
  WriteThrough(tenant, r);
  RecordPatient(tenant, type, "");
  return r;
}

absl::StatusOr<std::optional<engine::ResourceResult>> CachingFhirApi::ConditionalDelete(
    const std::string& tenant, const std::string& type, const engine::QueryParams& criteria) {
  absl::StatusOr<std::optional<engine::ResourceResult>> r = inner_.ConditionalDelete(tenant, type, criteria);
  if (r.ok() && r->has_value()) {
    engine::ResourceResult tombstone = **r;
    tombstone.deleted = true;
    tombstone.body.clear();
    WriteThrough(tenant, tombstone);
  }
  RecordPatient(tenant, type, "");
  return r;
}

// ---- everything else passes through, counted for hot spots ----

absl::StatusOr<std::string> CachingFhirApi::Search(const std::string& tenant, const engine::SearchInput& input) {
  const std::string patient = PatientOfSearch(input);
  if (hot_ != nullptr) RETURN_IF_ERROR(hot_->Admit(tenant, patient));
  RecordPatient(tenant, input.type.empty() ? input.compartment : input.type, patient);
  return inner_.Search(tenant, input);
}

absl::StatusOr<std::string> CachingFhirApi::Everything(const std::string& tenant,
                                                       const engine::EverythingInput& input) {
  if (hot_ != nullptr) RETURN_IF_ERROR(hot_->Admit(tenant, input.id));
  RecordPatient(tenant, "Patient", input.id);
  return inner_.Everything(tenant, input);
}

absl::StatusOr<std::string> CachingFhirApi::ExplainSearch(const std::string& tenant, const std::string& type,
                                                          const engine::QueryParams& params) {
  return inner_.ExplainSearch(tenant, type, params);
}

absl::StatusOr<std::string> CachingFhirApi::StartReindex(const std::string& tenant,
                                                         const std::vector<std::string>& types) {
  return inner_.StartReindex(tenant, types);
}

absl::StatusOr<std::string> CachingFhirApi::ReindexStatus(const std::string& tenant) {
  return inner_.ReindexStatus(tenant);
}

absl::StatusOr<std::string> CachingFhirApi::History(const std::string& tenant, const engine::HistoryRequest& request) {
  const std::string patient = request.type && *request.type == "Patient" && request.id ? *request.id : "";
  if (hot_ != nullptr) RETURN_IF_ERROR(hot_->Admit(tenant, patient));
  RecordPatient(tenant, request.type.value_or(""), patient);
  return inner_.History(tenant, request);
}

absl::StatusOr<std::string> CachingFhirApi::ProcessBundle(const std::string& tenant, const engine::BundleInput& input) {
  RecordPatient(tenant, "Bundle", "");
  absl::StatusOr<std::string> r = inner_.ProcessBundle(tenant, input);
  if (r.ok()) MarkBundleWrites(tenant, *r);
  return r;
}

void CachingFhirApi::MarkBundleWrites(const std::string& tenant, const std::string& response) {
  // The change stream brings these writes too, but later (the relay polls):
  // until then this instance must not serve what the Bundle replaced. Each
  // entry's response.location "Type/id/_history/v" marks versions older than
  // v stale here and in L2 (one pipeline); reads answered by the Bundle (GET
  // entries) name a version this cache holds or lacks, never a newer one.
  boost::system::error_code ec;
  boost::json::value doc = boost::json::parse(response, ec);
  const boost::json::object* bundle = ec ? nullptr : doc.if_object();
  const boost::json::value* entries = bundle != nullptr ? bundle->if_contains("entry") : nullptr;
  if (entries == nullptr || !entries->is_array()) return;
  std::vector<std::vector<std::string>> commands;
  std::vector<std::pair<std::string, int64_t>> marked;
  for (const boost::json::value& entry : entries->get_array()) {
    const boost::json::object* e = entry.if_object();
    const boost::json::value* res = e != nullptr ? e->if_contains("response") : nullptr;
    const boost::json::value* loc =
        res != nullptr && res->is_object() ? res->get_object().if_contains("location") : nullptr;
    if (loc == nullptr || !loc->is_string()) continue;
    const std::vector<std::string_view> parts =
        core::StrSplit(std::string_view(loc->get_string().data(), loc->get_string().size()), '/');
    int64_t version = 0;
    if (parts.size() != 4 || parts[2] != "_history" ||
        std::from_chars(parts[3].data(), parts[3].data() + parts[3].size(), version).ec != std::errc()) {
      continue;
    }
    const std::string key = cache::CacheKey(tenant, parts[0], parts[1]);
    if (l1_.Get(key, version)) continue;
    const std::string text = Marker(version);
    l1_.Put(key, std::make_shared<const std::string>(text), version);
    marked.emplace_back(key, version);
    commands.push_back({"EVAL", kGuardedSet, "1", core::StrCat(config_.redis_prefix, ":res:", key),
                        std::to_string(version), text, "0", std::to_string(config_.l2_ttl.count())});
  }
  if (redis_ == nullptr || commands.empty()) return;
  resilience::CircuitBreaker::Permit permit = breaker_.Allow();
  bool ok = false;
  if (permit) {
    const core::TimePoint start = clock_.Now();
    ok = redis_->Pipeline(commands).ok();
    breaker_.Record(permit, ok ? resilience::Outcome::kSuccess : resilience::Outcome::kFailure, Since(clock_, start));
  }
  if (!ok) {
    l2_errors_.fetch_add(1, std::memory_order_relaxed);
    for (auto& [key, version] : marked) AddPending(std::move(key), version);
  }
}

absl::StatusOr<std::string> CachingFhirApi::Capabilities(const std::string& tenant, const std::string& base_url) {
  return inner_.Capabilities(tenant, base_url);
}

// ---- invalidation ----

absl::Status CachingFhirApi::Handle(const events::ChangeEvent& event) {
  const std::string key = cache::CacheKey(event.tenant, event.type, event.id);
  std::string text;
  bool is_body = false;
  if (event.operation == "delete") {
    Entry tombstone;
    tombstone.kind = Entry::Kind::kDeleted;
    tombstone.version = event.version;
    tombstone.last_updated = event.changed_at;
    text = EncodeEntry(tombstone);
    is_body = true;
    l1_.Put(key, std::make_shared<const std::string>(text), event.version);
  } else {
    text = Marker(event.version);
    // A body of this version (written through here) stays.
    if (!l1_.Get(key, event.version)) l1_.Put(key, std::make_shared<const std::string>(text), event.version);
  }
  if (redis_ == nullptr) return absl::OkStatus();
  resilience::CircuitBreaker::Permit permit = breaker_.Allow();
  if (!permit) {
    AddPending(key, event.version);
    return absl::OkStatus();
  }
  const core::TimePoint start = clock_.Now();
  bool ok = pending_size_.load(std::memory_order_acquire) == 0 || FlushPending();
  if (ok) {
    absl::StatusOr<std::vector<cache::RedisReply>> r = redis_->Pipeline(
        {{"EVAL", kGuardedSet, "1", core::StrCat(config_.redis_prefix, ":res:", key), std::to_string(event.version),
          text, is_body ? "1" : "0", std::to_string(config_.l2_ttl.count())},
         {"PUBLISH", core::StrCat(config_.redis_prefix, ":cache:invalidate"), core::StrCat(event.version, "|", key)}});
    ok = r.ok();
  }
  breaker_.Record(permit, ok ? resilience::Outcome::kSuccess : resilience::Outcome::kFailure, Since(clock_, start));
  if (!ok) {
    l2_errors_.fetch_add(1, std::memory_order_relaxed);
    AddPending(key, event.version);
  }
  return absl::OkStatus();
}

void CachingFhirApi::OnInvalidation(const std::string& message) {
  const size_t bar = message.find('|');
  if (bar == std::string::npos) return;
  int64_t version = 0;
  auto [ptr, ec] = std::from_chars(message.data(), message.data() + bar, version);
  if (ec != std::errc() || ptr != message.data() + bar) return;
  const std::string key = message.substr(bar + 1);
  std::string tenant, rest;
  if (!SplitCacheKey(key, tenant, rest)) return;
  invalidations_.fetch_add(1, std::memory_order_relaxed);
  if (!l1_.Get(key, version)) l1_.Put(key, std::make_shared<const std::string>(Marker(version)), version);
}

// ---- metrics ----

CachingFhirApi::Stats CachingFhirApi::stats() const {
  Stats s;
  s.l1_hits = l1_hits_.load(std::memory_order_relaxed);
  s.l1_misses = l1_misses_.load(std::memory_order_relaxed);
  s.l2_hits = l2_hits_.load(std::memory_order_relaxed);
  s.l2_misses = l2_misses_.load(std::memory_order_relaxed);
  s.l2_errors = l2_errors_.load(std::memory_order_relaxed);
  s.backend_reads = backend_reads_.load(std::memory_order_relaxed);
  s.coalesced = coalesced_.load(std::memory_order_relaxed);
  s.invalidations_received = invalidations_.load(std::memory_order_relaxed);
  s.pending_invalidations = pending_size_.load(std::memory_order_relaxed);
  s.pending_dropped = pending_dropped_.load(std::memory_order_relaxed);
  return s;
}

void CachingFhirApi::UpdateMetrics() {
  if (impl_->l1_hit == nullptr) return;
  const Stats s = stats();
  MoveCounter(*impl_->l1_hit, s.l1_hits);
  MoveCounter(*impl_->l1_miss, s.l1_misses);
  MoveCounter(*impl_->l2_hit, s.l2_hits);
  MoveCounter(*impl_->l2_miss, s.l2_misses);
  MoveCounter(*impl_->l2_error, s.l2_errors);
  MoveCounter(*impl_->backend, s.backend_reads);
  MoveCounter(*impl_->coalesced, s.coalesced);
  const cache::L1CacheStats l1 = l1_.Stats();
  impl_->l1_bytes->Set(static_cast<double>(l1.bytes));
  impl_->l1_entries->Set(static_cast<double>(l1.entries));
  impl_->pending->Set(static_cast<double>(s.pending_invalidations));
  impl_->breaker->Set(static_cast<double>(breaker_.state()));
}

}  // namespace medgrid::resource_cache
