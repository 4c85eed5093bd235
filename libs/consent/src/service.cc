#include "medgrid/consent/service.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "boost/json.hpp"
#include "medgrid/cache/redis.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "pqxx/pqxx"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace medgrid::consent {
namespace json = boost::json;
namespace {


// Fills the Redis entry only if the patient's epoch is still the one read
// before the registry was asked; a newer epoch means the set changed since.
constexpr std::string_view kFillScript = R"lua(
local e = redis.call('GET', KEYS[1]) or '0'
if e ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], e .. '\n' .. ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
)lua";

absl::Status Unavailable(std::string_view why) {
  return core::Error(absl::StatusCode::kUnavailable, core::StrCat("The consent service is unavailable: ", why))
      .Http(503)
      .Issue("transient");
}

// One patient's privacy Consents, parsed.
struct ConsentSet {
  std::vector<json::object> consents;
};

std::shared_ptr<const ConsentSet> ParseSet(std::string_view array_json) {
  auto set = std::make_shared<ConsentSet>();
  boost::system::error_code ec;
  json::value v = json::parse(array_json, ec);
  if (!ec && v.is_array()) {
    for (json::value& c : v.get_array()) {
      if (c.is_object()) set->consents.push_back(std::move(c.get_object()));
    }
  }
  return set;
}

std::string InvalidateChannel(std::string_view prefix) { return core::StrCat(prefix, ":consent:invalidate"); }

}  // namespace

struct ConsentService::Impl {
  ConsentServiceConfig config;
  std::shared_ptr<cache::RedisClient> redis;
  ConsentFetcher fetch;
  const core::Clock& clock;
  resilience::CircuitBreaker breaker;
  std::unique_ptr<cache::RedisSubscriber> subscriber;

  // The registry's threads, each with its own connection.
  std::mutex mu;
  std::condition_variable cv;
  // Each item gets its thread's connection: null when the registry cannot
  // be reached; the item may replace it (Connect) after it broke.
  using Work = std::function<void(std::unique_ptr<pqxx::connection>&)>;
  std::deque<Work> queue;  // guarded by mu
  bool stopping = false;   // guarded by mu
  std::vector<std::thread> threads;

  // L1: parsed sets by "tenant\x1fpatient".
  struct Entry {
    std::shared_ptr<const ConsentSet> set;
    core::TimePoint expires;
  };
  std::mutex l1_mu;
  std::unordered_map<std::string, Entry> l1;  // guarded by l1_mu
  // Bumped by every invalidation: a fill that began before one is dropped.
  std::atomic<uint64_t> generation{0};
  // Redis is skipped until then after an error.
  std::atomic<int64_t> redis_retry_at_us{0};

  std::atomic<uint64_t> l1_hits{0}, l2_hits{0}, misses{0}, failures{0}, redis_errors{0}, registry_us{0};
  // medgrid_consent_lookups_total by source: l1, l2, registry, failed.
  prometheus::Counter* lookups_l1 = nullptr;
  prometheus::Counter* lookups_l2 = nullptr;
  prometheus::Counter* lookups_registry = nullptr;
  prometheus::Counter* lookups_failed = nullptr;
  prometheus::Gauge* breaker_gauge = nullptr;

  std::string RedisTag(std::string_view tenant, std::string_view patient) const {
    // One hash tag, so both keys of a patient live in the same cluster slot.
    return core::StrCat(config.redis_prefix, ":consent:{", tenant, "/", patient, "}");
  }

  Impl(ConsentServiceConfig c, std::shared_ptr<cache::RedisClient> r, ConsentFetcher f, const core::Clock& cl,
       prometheus::Registry& metrics)
      : config(std::move(c)),
        redis(std::move(r)),
        fetch(std::move(f)),
        clock(cl),
        breaker(config.breaker, cl, [this](std::string_view name, resilience::BreakerState from,
                                           resilience::BreakerState to) {
          core::Log(to == resilience::BreakerState::kOpen ? core::LogLevel::kWarn : core::LogLevel::kInfo,
                    "breaker.transition",
                    {{"dependency", std::string(name)},
                     {"from", std::string(resilience::BreakerStateName(from))},
                     {"to", std::string(resilience::BreakerStateName(to))}});
          if (breaker_gauge != nullptr) breaker_gauge->Set(static_cast<double>(to));
        }) {
    auto& lookups = prometheus::BuildCounter()
                        .Name("medgrid_consent_lookups_total")
                        .Help("Consent lookups by where the patient's Consents came from: l1, l2 (Redis), registry, "
                              "or failed (registry unavailable, timed out, or breaker open)")
                        .Register(metrics);
    lookups_l1 = &lookups.Add({{"source", "l1"}});
    lookups_l2 = &lookups.Add({{"source", "l2"}});
    lookups_registry = &lookups.Add({{"source", "registry"}});
    lookups_failed = &lookups.Add({{"source", "failed"}});
    breaker_gauge = &prometheus::BuildGauge()
                         .Name("medgrid_circuit_breaker_state")
                         .Help("Circuit breaker state by dependency: 0 closed, 1 open, 2 half-open")
                         .Register(metrics)
                         .Add({{"dependency", "consent"}});
  }


  void StartThreads() {
    for (int i = 0; i < config.pool_size; ++i) threads.emplace_back([this] { Run(); });
  }

  void StopThreads() {
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    cv.notify_all();
    for (std::thread& t : threads) t.join();
  }

  // A new registry connection, or null when it cannot be made.
  std::unique_ptr<pqxx::connection> Connect() {
    try {
      auto conn = std::make_unique<pqxx::connection>(config.dsn + " connect_timeout=2");
      pqxx::nontransaction tx(*conn);
      tx.exec(core::StrCat("SET statement_timeout = ", std::max<int64_t>(config.deadline.count(), 1)));
      return conn;
    } catch (const std::exception&) {
      return nullptr;
    }
  }

  // A registry thread: runs queued work on its connection, reconnecting
  // after errors.
  void Run() {
    std::unique_ptr<pqxx::connection> conn;
    for (;;) {
      Work work;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (stopping) return;
        work = std::move(queue.front());
        queue.pop_front();
      }
      if (!conn || !conn->is_open()) conn = Connect();
      work(conn);
      if (conn && !conn->is_open()) conn.reset();
    }
  }

  // Runs `fn` on a registry thread, waiting at most `deadline`.
  // `fn` may run after the caller gave up: it must own what it uses. When
  // the connection breaks under it, `fn` runs once more on a new one: it
  // must be safe to repeat.
  template <typename T>
  absl::StatusOr<T> OnRegistry(std::chrono::milliseconds deadline,
                               std::function<absl::StatusOr<T>(pqxx::connection&)> fn) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<T>>>();
    std::future<absl::StatusOr<T>> future = promise->get_future();
    {
      std::lock_guard lock(mu);
      if (static_cast<int>(queue.size()) >= config.max_queue) return Unavailable("too many requests waiting");
      const core::TimePoint give_up = clock.Now() + deadline;
      queue.push_back([promise, fn = std::move(fn), give_up, this](std::unique_ptr<pqxx::connection>& conn) {
        for (int attempt = 1;; ++attempt) {
          if (clock.Now() > give_up) {
            promise->set_value(Unavailable("deadline passed before the registry was asked"));
            return;
          }
          if (conn == nullptr) {
            promise->set_value(Unavailable("the registry database cannot be reached"));
            return;
          }
          try {
            promise->set_value(fn(*conn));
            return;
          } catch (const pqxx::broken_connection&) {
            // A connection made before the registry restarted breaks at its
            // first use: once more on a new one. The work may be repeated
            // (lookups read; the write is guarded by the Consent's version).
            if (attempt == 1) {
              conn = Connect();
              continue;
            }
            promise->set_value(Unavailable("the registry connection broke"));
          } catch (const std::exception& e) {
            core::Log(core::LogLevel::kWarn, "consent.registry_error", {{"error", e.what()}});
            promise->set_value(Unavailable("the registry failed"));
          }
          return;
        }
      });
    }
    cv.notify_one();
    if (future.wait_for(deadline) != std::future_status::ready) return Unavailable("the registry did not answer in time");
    return future.get();
  }

  // Invalidations Redis did not take: (tenant, patient). While any is
  // left, L2 is not read, since it may hold a set they should have removed.
  std::mutex pending_mu;
  std::set<std::pair<std::string, std::string>> pending;  // guarded by pending_mu
  std::atomic<bool> l2_disabled{false};

  // Sends one patient's invalidation to Redis (the epoch bump, the set's
  // removal, and the message to other instances).
  absl::Status SendInvalidation(const std::string& tenant, const std::string& patient) {
    const std::string tag = RedisTag(tenant, patient);
    absl::StatusOr<std::vector<cache::RedisReply>> r = redis->Pipeline({
        {"INCR", tag + ":e"},
        {"EXPIRE", tag + ":e", "86400"},
        {"DEL", tag + ":s"},
        {"PUBLISH", InvalidateChannel(config.redis_prefix), core::StrCat(tenant, "/", patient)},
    });
    if (!r.ok()) return r.status();
    for (const cache::RedisReply& reply : *r) {
      if (reply.type == cache::RedisReply::Type::kError) return absl::UnavailableError("Redis refused an invalidation");
    }
    return absl::OkStatus();
  }

  // Whether L2 may be read now: Redis configured, not failing lately, and
  // every invalidation it missed delivered.
  bool RedisUsable() {
    if (redis == nullptr || l2_disabled.load() || core::ToUnixMicros(clock.Now()) < redis_retry_at_us.load()) {
      return false;
    }
    std::lock_guard lock(pending_mu);
    while (!pending.empty()) {
      const auto& [tenant, patient] = *pending.begin();
      if (absl::Status st = SendInvalidation(tenant, patient); !st.ok()) {
        RedisFailed(st);
        return false;
      }
      pending.erase(pending.begin());
    }
    return true;
  }

  void RedisFailed(const absl::Status& st) {
    ++redis_errors;
    const int64_t now = core::ToUnixMicros(clock.Now());
    const int64_t backoff_us = std::chrono::duration_cast<std::chrono::microseconds>(config.redis_backoff).count();
    if (redis_retry_at_us.exchange(now + backoff_us) < now) {
      core::Log(core::LogLevel::kWarn, "consent.redis_bypassed", {{"error", std::string(st.message())}});
    }
  }

  std::shared_ptr<const ConsentSet> L1Get(const std::string& key) {
    std::lock_guard lock(l1_mu);
    auto it = l1.find(key);
    if (it == l1.end()) return nullptr;
    if (clock.Now() >= it->second.expires) {
      l1.erase(it);
      return nullptr;
    }
    return it->second.set;
  }

  void L1Put(const std::string& key, std::shared_ptr<const ConsentSet> set, uint64_t started_generation) {
    std::lock_guard lock(l1_mu);
    if (generation.load() != started_generation) return;
    if (l1.size() >= config.l1_max_entries) {
      const core::TimePoint now = clock.Now();
      std::erase_if(l1, [&](const auto& kv) { return now >= kv.second.expires; });
      if (l1.size() >= config.l1_max_entries) l1.clear();
    }
    l1[key] = Entry{std::move(set), clock.Now() + config.l1_ttl};
  }

  void L1Drop(const std::string& key) {
    std::lock_guard lock(l1_mu);
    ++generation;
    l1.erase(key);
  }

  void L1Clear() {
    std::lock_guard lock(l1_mu);
    ++generation;
    l1.clear();
  }

  // The patient's Consents: L1, then Redis, then the registry.
  absl::StatusOr<std::shared_ptr<const ConsentSet>> Load(const std::string& tenant, const std::string& patient) {
    const std::string key = core::StrCat(tenant, "\x1f", patient);
    const uint64_t started = generation.load();
    if (auto set = L1Get(key)) {
      ++l1_hits;
      lookups_l1->Increment();
      return set;
    }
    const std::string tag = RedisTag(tenant, patient);
    std::optional<std::string> epoch;  // set when Redis answered
    if (RedisUsable()) {
      absl::StatusOr<cache::RedisReply> r = redis->Command({"MGET", tag + ":e", tag + ":s"});
      if (!r.ok() || r->type != cache::RedisReply::Type::kArray || r->elements.size() != 2) {
        RedisFailed(r.ok() ? absl::InternalError("unexpected MGET reply") : r.status());
      } else {
        epoch = r->elements[0].type == cache::RedisReply::Type::kString ? r->elements[0].str : "0";
        if (r->elements[1].type == cache::RedisReply::Type::kString) {
          const std::string& value = r->elements[1].str;
          const std::size_t nl = value.find('\n');
          if (nl != std::string::npos && std::string_view(value).substr(0, nl) == *epoch) {
            auto set = ParseSet(std::string_view(value).substr(nl + 1));
            ++l2_hits;
            lookups_l2->Increment();
            L1Put(key, set, started);
            return set;
          }
        }
      }
    }
    resilience::CircuitBreaker::Permit permit = breaker.Allow();
    if (!permit) {
      ++failures;
      lookups_failed->Increment();
      return Unavailable("circuit open after repeated failures");
    }
    const core::TimePoint t0 = clock.Now();
    absl::StatusOr<std::string> rows = OnRegistry<std::string>(
        config.deadline, [tenant, patient](pqxx::connection& conn) -> absl::StatusOr<std::string> {
          pqxx::nontransaction tx(conn);
          pqxx::result r = tx.exec_params(
              "SELECT coalesce(json_agg(body::json), '[]')::text FROM consents "
              "WHERE tenant_id = $1 AND patient_id = $2 AND body IS NOT NULL",
              tenant, patient);
          return r[0][0].as<std::string>();
        });
    const auto took = std::chrono::duration_cast<std::chrono::microseconds>(clock.Now() - t0);
    registry_us += static_cast<uint64_t>(std::max<int64_t>(took.count(), 0));
    breaker.Record(permit, rows.ok() ? resilience::Outcome::kSuccess : resilience::Outcome::kFailure, took);
    if (!rows.ok()) {
      ++failures;
      lookups_failed->Increment();
      return rows.status();
    }
    ++misses;
    lookups_registry->Increment();
    auto set = ParseSet(*rows);
    L1Put(key, set, started);
    if (epoch && RedisUsable()) {
      absl::StatusOr<cache::RedisReply> r =
          redis->Eval(std::string(kFillScript), {tag + ":e", tag + ":s"},
                      {*epoch, *rows, std::to_string(config.redis_ttl.count())});
      if (!r.ok()) RedisFailed(r.status());
    }
    return set;
  }
};

ConsentService::ConsentService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ConsentService::~ConsentService() {
  impl_->subscriber.reset();
  impl_->StopThreads();
}

absl::StatusOr<std::unique_ptr<ConsentService>> ConsentService::Open(ConsentServiceConfig config,
                                                                     std::shared_ptr<cache::RedisClient> redis,
                                                                     ConsentFetcher fetch, const core::Clock& clock,
                                                                     prometheus::Registry& metrics) {
  if (config.dsn.empty()) return absl::InvalidArgumentError("the consent registry needs a database DSN");
  try {
    pqxx::connection conn(config.dsn);
    pqxx::work tx(conn);
    // One row per Consent: its latest version; body is null once deleted
    // (or when it is not a privacy Consent).
    tx.exec(R"sql(
      CREATE TABLE IF NOT EXISTS consents (
        tenant_id  text NOT NULL,
        id         text NOT NULL,
        version    bigint NOT NULL,
        patient_id text,
        body       jsonb,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, id)
      );
      CREATE INDEX IF NOT EXISTS consents_by_patient ON consents (tenant_id, patient_id);
    )sql");
    tx.commit();
  } catch (const std::exception& e) {
    return core::Error(absl::StatusCode::kUnavailable, core::StrCat("consent registry: ", e.what()));
  }
  auto impl = std::make_unique<Impl>(std::move(config), std::move(redis), std::move(fetch), clock, metrics);
  impl->StartThreads();
  Impl* raw = impl.get();
  if (raw->redis != nullptr) {
    raw->subscriber = std::make_unique<cache::RedisSubscriber>(
        raw->redis->config(), std::vector<std::string>{InvalidateChannel(raw->config.redis_prefix)},
        [raw](const std::string&, const std::string& message) {
          const std::size_t slash = message.find('/');
          if (slash == std::string::npos) return;
          raw->L1Drop(core::StrCat(message.substr(0, slash), "\x1f", message.substr(slash + 1)));
        },
        // Invalidations may have been missed while disconnected.
        [raw] { raw->L1Clear(); });
  }
  return std::unique_ptr<ConsentService>(new ConsentService(std::move(impl)));
}

absl::StatusOr<Decision> ConsentService::Decide(const std::string& tenant, DefaultPolicy policy,
                                                const AccessRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<const ConsentSet> set, impl_->Load(tenant, request.patient_id));
  std::vector<const json::object*> consents;
  consents.reserve(set->consents.size());
  for (const json::object& c : set->consents) consents.push_back(&c);
  return Evaluate(consents, request, policy);
}

std::optional<bool> ConsentService::HasConsentsCached(const std::string& tenant, const std::string& patient) {
  std::shared_ptr<const ConsentSet> set = impl_->L1Get(core::StrCat(tenant, "\x1f", patient));
  if (set == nullptr) return std::nullopt;
  ++impl_->l1_hits;
  impl_->lookups_l1->Increment();
  return !set->consents.empty();
}

std::optional<Decision> ConsentService::DecideIfCached(const std::string& tenant, DefaultPolicy policy,
                                                      const AccessRequest& request) {
  std::shared_ptr<const ConsentSet> set = impl_->L1Get(core::StrCat(tenant, "\x1f", request.patient_id));
  if (set == nullptr) return std::nullopt;
  ++impl_->l1_hits;
  impl_->lookups_l1->Increment();
  std::vector<const json::object*> consents;
  consents.reserve(set->consents.size());
  for (const json::object& c : set->consents) consents.push_back(&c);
  return Evaluate(consents, request, policy);
}

void ConsentService::Invalidate(const std::string& tenant, const std::string& patient) {
  impl_->L1Drop(core::StrCat(tenant, "\x1f", patient));
  if (impl_->redis == nullptr) return;
  // Tried even while L2 reads are bypassed. One Redis did not take is kept
  // and sent before L2 is read again: a stale set must not outlive Redis
  // coming back.
  if (absl::Status st = impl_->SendInvalidation(tenant, patient); !st.ok()) {
    impl_->RedisFailed(st);
    std::lock_guard lock(impl_->pending_mu);
    if (impl_->pending.size() < 100000) {
      impl_->pending.emplace(tenant, patient);
    } else if (!impl_->l2_disabled.exchange(true)) {
      // Too many to remember: L2 can no longer be trusted by this process.
      core::Log(core::LogLevel::kError, "consent.l2_disabled", {{"reason", "too many invalidations Redis missed"}});
    }
  }
}

absl::Status ConsentService::Record(const std::string& tenant, const std::string& id, int64_t version,
                                    const std::optional<std::string>& body) {
  std::optional<std::string> stored;  // what goes into the registry
  std::string patient;
  if (body) {
    boost::system::error_code ec;
    json::value v = json::parse(*body, ec);
    if (!ec && v.is_object() && IsPrivacyConsent(v.get_object())) {
      std::vector<std::string> patients = PatientsOf(v.get_object());
      if (!patients.empty()) patient = patients.front();
      stored = *body;
    }
  }
  // Writes get a longer deadline than decisions: they are rare and must land.
  absl::StatusOr<std::vector<std::string>> affected = impl_->OnRegistry<std::vector<std::string>>(
      std::chrono::milliseconds(5000),
      [tenant, id, version, patient, stored](pqxx::connection& conn) -> absl::StatusOr<std::vector<std::string>> {
        pqxx::work tx(conn);
        tx.exec("SET LOCAL statement_timeout = 5000");
        std::vector<std::string> patients;
        pqxx::result old = tx.exec_params(
            "SELECT version, patient_id FROM consents WHERE tenant_id = $1 AND id = $2 FOR UPDATE", tenant, id);
        if (!old.empty()) {
          if (!old[0][1].is_null()) patients.push_back(old[0][1].as<std::string>());
          // Already as new (the other feed got here first): its patient is
          // invalidated again, as that feed may not have done it yet.
          if (old[0][0].as<int64_t>() >= version) return patients;
        }
        tx.exec_params(
            "INSERT INTO consents (tenant_id, id, version, patient_id, body) VALUES ($1, $2, $3, $4, $5::jsonb) "
            "ON CONFLICT (tenant_id, id) DO UPDATE SET version = EXCLUDED.version, patient_id = EXCLUDED.patient_id, "
            "body = EXCLUDED.body, updated_at = now()",
            tenant, id, version, patient.empty() ? std::optional<std::string>() : std::optional<std::string>(patient),
            stored);
        tx.commit();
        if (!patient.empty() && std::find(patients.begin(), patients.end(), patient) == patients.end()) {
          patients.push_back(patient);
        }
        return patients;
      });
  if (!affected.ok()) {
    // The cached set may be stale now; drop it so the next decision asks
    // the registry (and fails closed while the registry is down).
    if (!patient.empty()) Invalidate(tenant, patient);
    return affected.status();
  }
  for (const std::string& p : *affected) Invalidate(tenant, p);
  return absl::OkStatus();
}

absl::Status ConsentService::Handle(const events::ChangeEvent& event) {
  if (event.type != "Consent") return absl::OkStatus();
  std::optional<std::string> body = event.body;
  if (event.operation == "delete") {
    body.reset();
  } else if (!body) {
    ASSIGN_OR_RETURN(body, impl_->fetch(event.tenant, event.id, event.version));
  }
  return Record(event.tenant, event.id, event.version, body);
}

ConsentService::Stats ConsentService::stats() const {
  return {impl_->l1_hits.load(), impl_->l2_hits.load(), impl_->misses.load(), impl_->failures.load(),
          impl_->redis_errors.load(), impl_->registry_us.load()};
}

resilience::BreakerState ConsentService::breaker_state() { return impl_->breaker.state(); }

}  // namespace medgrid::consent
