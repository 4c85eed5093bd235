// Outbox relay benchmark, against librdkafka's mock cluster (three brokers
// on loopback, in this process) and the PostgreSQL that bench/outbox.sh
// starts.
//
// 1. Relay throughput. N changes are written into a shard's outbox (through
//    the store's own create statement, in parallel), then one relay moves
//    them to Kafka (KafkaSink: read, publish, wait for every delivery report,
//    remove). Baseline, same run: the same N encoded events published by a
//    bare Producer, in the relay's batch size, with no database. A relay
//    delivering in-process (local mode) is timed too.
// 2. Lag under a sustained create load. Writer threads create resources as
//    fast as they can for D seconds, first with no relay (baseline), then
//    with the relay publishing to Kafka meanwhile. Reports creates/s of both,
//    their ratio, the relay's lag (age of the oldest undelivered change,
//    sampled every 50 ms) and the backlog left when the writers stop.
//
//   build/release/bench/outbox_bench --dsn DSN [--changes N] [--writers W]
//                                    [--duration-s D] [--seed S]
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "medgrid/core/clock.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/strings.h"
#include "medgrid/events/change.h"
#include "medgrid/events/kafka.h"
#include "medgrid/events/relay.h"
#include "medgrid/store/store.h"

namespace {

using Steady = std::chrono::steady_clock;
using namespace medgrid;

double Seconds(Steady::time_point since) { return std::chrono::duration<double>(Steady::now() - since).count(); }

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "outbox_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Must(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) Die(core::StrCat(what, ": ", v.status().ToString()));
  return std::move(*v);
}

// A Patient body of about the size of Synthea's, with seeded content.
std::string Body(std::mt19937_64& rng) {
  std::string family(8 + rng() % 8, 'a');
  for (char& c : family) c = static_cast<char>('a' + rng() % 26);
  return core::StrCat(R"({"resourceType":"Patient","active":true,"name":[{"family":")", family,
                      R"(","given":["Bench"]}],"gender":"female","birthDate":"19)", 10 + rng() % 89,
                      R"(-01-01","address":[{"line":["1 Main St"],"city":"Springfield","postalCode":"01101"}]})");
}

// Creates resources from `writers` threads until `count` are written or
// `stop` is set; returns how many.
int64_t Create(store::ResourceStore& shard, const std::string& tenant, int writers, int64_t count,
               const std::atomic<bool>* stop, unsigned seed) {
  std::atomic<int64_t> next{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(seed + w);
      for (;;) {
        if (stop != nullptr && stop->load()) return;
        const int64_t i = next.fetch_add(1);
        if (count > 0 && i >= count) return;
        const std::string body = Body(rng);
        auto v = shard.Create({tenant, "Patient", core::StrCat("b", seed, "-", i)},
                              [&](const auto&, int64_t, core::TimePoint) {
                                return absl::StatusOr<store::StoredBody>(store::StoredBody{body, {}});
                              });
        if (!v.ok()) Die(core::StrCat("create: ", v.status().ToString()));
      }
    });
  }
  for (auto& t : threads) t.join();
  // Every index taken was created.
  return count > 0 ? std::min(next.load(), count) : next.load();
}

}  // namespace

int main(int argc, char** argv) {
  core::InitLogging(core::LogLevel::kWarn);
  std::string dsn;
  int64_t changes = 100'000;
  int writers = 8;
  int duration_s = 15;
  unsigned seed = 42;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--dsn") dsn = argv[i + 1];
    else if (flag == "--changes") changes = std::strtoll(argv[i + 1], nullptr, 10);
    else if (flag == "--writers") writers = std::atoi(argv[i + 1]);
    else if (flag == "--duration-s") duration_s = std::atoi(argv[i + 1]);
    else if (flag == "--seed") seed = static_cast<unsigned>(std::strtoul(argv[i + 1], nullptr, 10));
    else Die(core::StrCat("unknown flag ", flag));
  }
  if (dsn.empty()) Die("--dsn is required");

  // The mock cluster: three brokers, the change topic on six partitions.
  char err[256];
  rd_kafka_conf_t* host_conf = rd_kafka_conf_new();
  rd_kafka_conf_set(host_conf, "log_level", "3", err, sizeof err);
  rd_kafka_t* host = rd_kafka_new(RD_KAFKA_PRODUCER, host_conf, err, sizeof err);
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(host, 3);
  rd_kafka_mock_topic_create(cluster, events::kResourceChangedTopic, 6, 3);
  events::KafkaConfig kafka;
  kafka.brokers = rd_kafka_mock_cluster_bootstraps(cluster);

  core::RealClock clock;
  store::StoreConfig config;
  config.admin_dsn = dsn;
  config.pool_size = writers;
  auto store = Must(store::Store::Open(config, clock), "store");
  (void)Must(store->CreateTenant("bench", {}), "tenant");
  store::ResourceStore& shard = *Must(store->ForTenant("bench"), "shard");
  const events::RelayOptions options;
  const int batch = options.batch;

  // 1. Relay throughput.
  std::printf("relay throughput, %lld changes, batch %d:\n", static_cast<long long>(changes), batch);
  std::mt19937_64 rng(seed);
  std::vector<events::OutMessage> bare;
  bare.reserve(changes);
  for (int64_t i = 0; i < changes; ++i) {
    events::ChangeEvent e;
    e.tenant = "bench";
    e.type = "Patient";
    e.id = core::StrCat("b", seed, "-", i);
    e.version = 1;
    e.operation = "create";
    e.changed_at = clock.Now();
    e.shard = "medgrid_shard_0";
    e.outbox_seq = i + 1;
    bare.push_back({events::kResourceChangedTopic, e.Key(), events::EncodeChange(e)});
  }
  // Each producer's first delivery waits for its connections and producer
  // id (up to a second); both sides are warmed up before they are timed.
  const std::vector<events::OutMessage> warm_up = {{events::kResourceChangedTopic, "warm-up", "warm-up"}};
  auto producer = Must(events::Producer::Create(kafka), "producer");
  (void)producer->Publish(warm_up);
  Steady::time_point t0 = Steady::now();
  for (int64_t i = 0; i < changes; i += batch) {
    const std::vector<events::OutMessage> part(bare.begin() + i, bare.begin() + std::min<int64_t>(i + batch, changes));
    for (const absl::Status& s : producer->Publish(part)) {
      if (!s.ok()) Die(core::StrCat("bare publish: ", s.ToString()));
    }
  }
  const double bare_s = Seconds(t0);
  std::printf("  bare producer (baseline)    %9.0f events/s\n", changes / bare_s);

  auto drain = [&](events::ChangeSink& sink) {
    events::OutboxRelay relay(Must(shard.OpenOutbox(), "outbox"), sink, clock, options);
    Steady::time_point start = Steady::now();
    int64_t moved = 0;
    while (moved < changes) moved += Must(relay.RunOnce(), "relay");
    return Seconds(start);
  };
  t0 = Steady::now();
  Create(shard, "bench", writers, changes, nullptr, seed);
  std::printf("  (wrote %lld changes in %.1f s)\n", static_cast<long long>(changes), Seconds(t0));
  auto kafka_sink = Must(events::KafkaSink::Create(kafka), "sink");
  {
    events::ChangeEvent warm;
    warm.tenant = "warm-up";
    warm.type = "Patient";
    warm.id = "warm-up";
    warm.version = 1;
    (void)kafka_sink->Deliver({warm});
  }
  const double relay_s = drain(*kafka_sink);
  std::printf("  relay to Kafka              %9.0f events/s   ratio to bare producer %.2f\n", changes / relay_s,
              bare_s / relay_s);
  // Local mode: the same rows again, delivered to an in-process bus.
  events::ChangeBus bus;
  events::HandlerSink local(bus);
  Create(shard, "bench", writers, changes, nullptr, seed + 1);
  const double local_s = drain(local);
  std::printf("  relay in-process            %9.0f events/s\n", changes / local_s);

  // 2. Creates with and without the relay, and the relay's lag.
  std::printf("sustained creates, %d writers, %d s each:\n", writers, duration_s);
  auto run = [&](bool relaying, unsigned run_seed) {
    std::atomic<bool> stop{false};
    std::unique_ptr<events::OutboxRelay> relay;
    if (relaying) {
      relay = std::make_unique<events::OutboxRelay>(Must(shard.OpenOutbox(), "outbox"), *kafka_sink, clock, options);
      relay->Start();
    }
    std::vector<int64_t> lags;
    std::thread sampler([&] {
      while (!stop) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        if (relay) lags.push_back(relay->stats().oldest_pending_us);
      }
    });
    std::thread timer([&] {
      std::this_thread::sleep_for(std::chrono::seconds(duration_s));
      stop = true;
    });
    Steady::time_point start = Steady::now();
    const int64_t created = Create(shard, "bench", writers, 0, &stop, run_seed);
    const double secs = Seconds(start);
    timer.join();
    sampler.join();
    int64_t backlog = 0;
    if (relay) {
      relay->Stop();
      backlog = Must(Must(shard.OpenOutbox(), "outbox")->Backlog(), "backlog");
      std::sort(lags.begin(), lags.end());
      auto at = [&](double q) { return lags.empty() ? 0 : lags[std::min(lags.size() - 1, size_t(q * lags.size()))]; };
      std::printf("  relay lag: p50 %.1f ms, p99 %.1f ms, max %.1f ms; backlog at the end %lld\n", at(0.5) / 1e3,
                  at(0.99) / 1e3, lags.empty() ? 0.0 : lags.back() / 1e3, static_cast<long long>(backlog));
    }
    return created / secs;
  };
  const double without = run(false, seed + 2);
  std::printf("  creates, no relay (baseline) %8.0f /s\n", without);
  {
    // What that run left in the outbox goes out before the next one.
    events::OutboxRelay relay(Must(shard.OpenOutbox(), "outbox"), *kafka_sink, clock, options);
    while (Must(relay.RunOnce(), "relay") > 0) {
    }
  }
  const double with = run(true, seed + 3);
  std::printf("  creates, relay to Kafka      %8.0f /s   ratio %.2f\n", with, with / without);

  kafka_sink.reset();
  producer.reset();
  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(host);
  return 0;
}
