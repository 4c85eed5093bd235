// Change events end to end, against the test PostgreSQL and librdkafka's
// mock cluster (three brokers speaking the Kafka protocol on loopback):
// every committed write reaches consumers, in version order per resource,
// through broker errors and outages, and a relay that dies between
// publishing and removing its rows resends what consumers then drop as
// repeats. In local mode the relay delivers in-process.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <pqxx/pqxx>
#include <thread>

#include <gtest/gtest.h>

#include "integration/harness.h"
#include "medgrid/app/app.h"
#include "medgrid/audit/audit_index.h"
#include "medgrid/audit/pipeline.h"
#include "medgrid/audit/service.h"
#include "medgrid/audit/sink.h"
#include "medgrid/core/clock.h"
#include "medgrid/core/strings.h"
#include "medgrid/events/change.h"
#include "medgrid/events/consumer_loop.h"
#include "medgrid/events/dedupe.h"
#include "medgrid/events/kafka.h"
#include "medgrid/events/relay.h"
#include "medgrid/ledger/ledger_store.h"
#include "medgrid/ledger/signer.h"
#include "medgrid/store/store.h"

namespace medgrid::testing {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

// A mock Kafka cluster of three brokers, hosted by a client handle of its own.
class MockKafka {
 public:
  MockKafka() {
    char err[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    host_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    cluster_ = rd_kafka_mock_cluster_new(host_, 3);
  }
  ~MockKafka() {
    rd_kafka_mock_cluster_destroy(cluster_);
    rd_kafka_destroy(host_);
  }
  // Partition p is led by broker p % 3 + 1, so that every broker leads some
  // (the mock cluster picks leaders at random otherwise).
  void CreateTopic(const std::string& name, int partitions) {
    ASSERT_EQ(rd_kafka_mock_topic_create(cluster_, name.c_str(), partitions, 3), RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int p = 0; p < partitions; ++p) {
      ASSERT_EQ(rd_kafka_mock_partition_set_leader(cluster_, name.c_str(), p, p % 3 + 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    }
  }
  events::KafkaConfig Config() const {
    events::KafkaConfig c;
    c.brokers = rd_kafka_mock_cluster_bootstraps(cluster_);
    // An outage fails deliveries in 3 s rather than 30, so the test sees the
    // relay hold and resend them.
    c.properties["message.timeout.ms"] = "3000";
    c.properties["log_level"] = "3";
    // A group whose coordinator went down settles in seconds, not the
    // default 45 s session.
    c.properties["session.timeout.ms"] = "6000";
    c.properties["heartbeat.interval.ms"] = "1000";
    return c;
  }
  rd_kafka_mock_cluster_t* cluster() { return cluster_; }

 private:
  rd_kafka_t* host_ = nullptr;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
};

// Everything a consumer of the change topic read, in order, as first seen.
struct Observed {
  uint64_t raw = 0;                                  // messages, repeats included
  std::map<std::string, std::vector<int64_t>> versions;  // per key, first deliveries in arrival order
  std::map<std::string, std::string> operations;     // event id -> operation
  std::map<std::string, bool> has_body;              // event id -> the event carried a body
};

// Reads `topic` from its beginning until `want` distinct events arrived and
// then nothing more for a second (so repeats behind them are counted), or
// `timeout` passed.
Observed Observe(const events::KafkaConfig& kafka, const std::string& topic, std::size_t want, seconds timeout,
                 const std::string& group) {
  Observed seen;
  auto consumer = events::Consumer::Create(kafka, group);
  EXPECT_TRUE(consumer.ok()) << consumer.status();
  if (!consumer.ok()) return seen;
  EXPECT_TRUE((*consumer)->Assign(topic).ok());
  events::IdDeduper ids;
  std::size_t distinct = 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto quiet_since = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < deadline) {
    if (distinct >= want && std::chrono::steady_clock::now() - quiet_since > seconds(1)) break;
    auto polled = (*consumer)->Poll(
        [&](const std::vector<events::InMessage>& batch) {
          for (const events::InMessage& m : batch) {
            ++seen.raw;
            auto e = events::DecodeChange(m.value);
            EXPECT_TRUE(e.ok()) << e.status();
            if (!e.ok()) continue;
            EXPECT_EQ(m.key, e->Key());
            if (!ids.Accept(e->EventId())) continue;
            ++distinct;
            seen.versions[e->Key()].push_back(e->version);
            seen.operations[e->EventId()] = e->operation;
            seen.has_body[e->EventId()] = e->body.has_value();
          }
          return absl::OkStatus();
        },
        1000, milliseconds(200));
    EXPECT_TRUE(polled.ok()) << polled.status();
    if (polled.value_or(0) > 0) quiet_since = std::chrono::steady_clock::now();
  }
  return seen;
}

// Records what the bus hands it; fails each event's first delivery when
// `fail_first` is set (so the relay must deliver it again).
class Recorder final : public events::ChangeHandler {
 public:
  explicit Recorder(bool fail_first = false) : fail_first_(fail_first) {}
  absl::Status Handle(const events::ChangeEvent& e) override {
    std::lock_guard lock(mu_);
    ++calls_;
    if (fail_first_ && failed_once_.insert(e.EventId()).second) {
      return absl::UnavailableError("first delivery refused by the test");
    }
    events_.push_back(e);
    return absl::OkStatus();
  }
  std::vector<events::ChangeEvent> Of(const std::string& key) {
    std::lock_guard lock(mu_);
    std::vector<events::ChangeEvent> out;
    for (const auto& e : events_) {
      if (e.Key() == key) out.push_back(e);
    }
    return out;
  }
  std::size_t size() {
    std::lock_guard lock(mu_);
    return events_.size();
  }
  uint64_t calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }

 private:
  const bool fail_first_;
  std::mutex mu_;
  std::vector<events::ChangeEvent> events_;
  std::set<std::string> failed_once_;
  uint64_t calls_ = 0;
};

template <typename Pred>
bool WaitFor(Pred pred, seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return true;
}

// The value of a /metrics sample, or -1.
double Metric(HttpClient& c, const std::string& sample) {
  const std::string body = c.Get("/metrics").body;
  const std::size_t at = body.find(core::StrCat(sample, " "));
  return at == std::string::npos ? -1 : std::stod(body.substr(at + sample.size() + 1));
}

// The Kafka protocol's ApiKey of Produce requests.
constexpr int16_t kProduceApiKey = 0;

const char* kPatient = R"({"resourceType":"Patient","active":true,"name":[{"family":"Event"}]})";

TEST(LocalEvents, EveryCommittedChangeReachesTheBusInOrderAndNothingElse) {
  Recorder recorder(/*fail_first=*/true);  // outlives the server that calls it
  TestServer server("events_local", {"e1"});
  server.app().changes().Register(&recorder);
  HttpClient& c = server.client();
  auto created = c.Post("/fhir/e1/Patient", kPatient);
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string id = created.Json().at("id").as_string().c_str();
  ASSERT_EQ(c.Put(core::StrCat("/fhir/e1/Patient/", id), core::StrCat(R"({"resourceType":"Patient","id":")", id, R"(","active":false})"))
                .status,
            200);
  ASSERT_EQ(c.Send("PATCH", core::StrCat("/fhir/e1/Patient/", id), R"([{"op":"replace","path":"/active","value":true}])",
                   {{"Content-Type", "application/json-patch+json"}})
                .status,
            200);
  // A write that fails commits nothing, so it has no event.
  ASSERT_EQ(c.Put(core::StrCat("/fhir/e1/Patient/", id), R"({"resourceType":"Patient","id":"other"})").status, 400);
  ASSERT_EQ(c.Delete(core::StrCat("/fhir/e1/Patient/", id)).status, 204);
  // Another tenant, created to carry bodies in its events.
  ASSERT_EQ(c.Send("POST", "/admin/tenants", R"({"id":"e2","eventsIncludeBody":true})",
                   {{"Content-Type", "application/json"}})
                .status,
            201);
  auto other = c.Post("/fhir/e2/Patient", kPatient);
  ASSERT_EQ(other.status, 201);
  const std::string other_id = other.Json().at("id").as_string().c_str();

  const std::string key = core::StrCat("e1/Patient/", id);
  ASSERT_TRUE(WaitFor([&] { return recorder.size() >= 5; }, seconds(20))) << recorder.size();
  std::vector<events::ChangeEvent> mine = recorder.Of(key);
  ASSERT_EQ(mine.size(), 4u);
  const std::vector<std::string> operations = {"create", "update", "patch", "delete"};
  for (std::size_t i = 0; i < mine.size(); ++i) {
    EXPECT_EQ(mine[i].version, static_cast<int64_t>(i + 1));
    EXPECT_EQ(mine[i].operation, operations[i]);
    EXPECT_FALSE(mine[i].body.has_value()) << "tenant e1 does not include bodies";
    EXPECT_EQ(mine[i].tenant, "e1");
  }
  std::vector<events::ChangeEvent> theirs = recorder.Of(core::StrCat("e2/Patient/", other_id));
  ASSERT_EQ(theirs.size(), 1u);
  ASSERT_TRUE(theirs[0].body.has_value());
  EXPECT_NE(theirs[0].body->find("\"family\":\"Event\""), std::string::npos);
  // Each event was refused once and delivered again.
  EXPECT_GE(recorder.calls(), 2 * recorder.size());
  EXPECT_GT(Metric(c, core::StrCat("medgrid_outbox_relay{shard=\"", server.config().store.bootstrap_shards[0],
                                 "\",state=\"leading\"}")),
            0.5);
}

// A store of the test's own (no server), for driving relays by hand.
class RelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.admin_dsn = TestServer::Dsn("postgres");
    const std::string prefix = core::StrCat("mg_relay_", static_cast<int64_t>(::getpid()));
    config_.control_db = core::StrCat(prefix, "_control");
    config_.bootstrap_shards = {core::StrCat(prefix, "_s0")};
    auto store = store::Store::Open(config_, clock_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    ASSERT_TRUE(store_->CreateTenant("r1", {}).ok());
  }
  void TearDown() override {
    store_.reset();
    pqxx::connection admin(config_.admin_dsn);
    pqxx::nontransaction tx(admin);
    for (const std::string& db : {config_.bootstrap_shards[0], config_.control_db}) {
      tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(db) + " WITH (FORCE)");
    }
  }
  store::ResourceStore& shard() { return **store_->ForTenant("r1"); }
  std::unique_ptr<store::Outbox> Outbox() {
    auto outbox = shard().OpenOutbox();
    EXPECT_TRUE(outbox.ok());
    return std::move(*outbox);
  }
  int64_t Backlog() { return *Outbox()->Backlog(); }
  void Create(const std::string& id) {
    auto v = shard().Create({"r1", "Patient", id}, [&](const auto&, int64_t, core::TimePoint) {
      return absl::StatusOr<store::StoredBody>(store::StoredBody{kPatient, {}});
    });
    ASSERT_TRUE(v.ok()) << v.status();
  }

  core::RealClock clock_;
  store::StoreConfig config_;
  std::unique_ptr<store::Store> store_;
};

TEST_F(RelayTest, ARelayKilledBetweenPublishAndRemoveIsResentAndDroppedDownstream) {
  MockKafka kafka;
  const std::string topic = "medgrid.resource.changed.resend";
  kafka.CreateTopic(topic, 4);
  for (int i = 0; i < 100; ++i) Create(core::StrCat("p", i));
  ASSERT_EQ(Backlog(), 100);

  auto sink = events::KafkaSink::Create(kafka.Config(), topic);
  ASSERT_TRUE(sink.ok()) << sink.status();
  {
    events::RelayOptions dies;
    dies.before_remove = [](const std::vector<int64_t>& delivered) {
      EXPECT_EQ(delivered.size(), 100u);
      return false;  // the process dies here
    };
    events::OutboxRelay first(Outbox(), **sink, clock_, dies);
    EXPECT_EQ(first.RunOnce().status().code(), absl::StatusCode::kAborted);
    // While it holds the shard's lead, no other relay sends anything.
    events::OutboxRelay second(Outbox(), **sink, clock_);
    EXPECT_EQ(*second.RunOnce(), 0);
    EXPECT_FALSE(second.stats().leading);
  }
  EXPECT_EQ(Backlog(), 100) << "nothing was removed before the relay died";
  events::OutboxRelay restarted(Outbox(), **sink, clock_);
  ASSERT_TRUE(WaitFor([&] { return restarted.RunOnce().ok() && Backlog() == 0; }, seconds(30)));

  Observed seen = Observe(kafka.Config(), topic, 100, seconds(30), "resend-observer");
  EXPECT_EQ(seen.raw, 200u) << "every change went out twice";
  EXPECT_EQ(seen.versions.size(), 100u) << "and each is one change after dedupe";
  // The consumer library's handler drops the repeats by version.
  Recorder recorder;
  events::VersionDeduper versions;
  auto consumer = events::Consumer::Create(kafka.Config(), "resend-handler");
  ASSERT_TRUE(consumer.ok());
  ASSERT_TRUE((*consumer)->Assign(topic).ok());
  const events::Consumer::Handler handle = events::ChangeMessageHandler(recorder, versions);
  int handled = 0;
  ASSERT_TRUE(WaitFor([&] { handled += (*consumer)->Poll(handle, 500, milliseconds(100)).value_or(0);
                            return handled >= 200; },
                      seconds(30)));
  EXPECT_EQ(recorder.size(), 100u);
}

TEST_F(RelayTest, HandlerFailuresHoldLaterVersionsOfTheResourceBack) {
  Create("held");
  auto update = [&](int n) {
    auto v = shard().Update({"r1", "Patient", "held"}, "PUT", [&](const auto&, int64_t, core::TimePoint) {
      return absl::StatusOr<store::StoredBody>(store::StoredBody{kPatient, {}});
    });
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(v->version, n);
  };
  update(2);
  update(3);
  Recorder refuses(/*fail_first=*/true);
  events::HandlerSink sink(refuses);
  events::OutboxRelay relay(Outbox(), sink, clock_);
  // Round 1: version 1 only (the oldest of the resource), refused.
  EXPECT_FALSE(relay.RunOnce().ok());
  EXPECT_EQ(refuses.size(), 0u);
  EXPECT_EQ(Backlog(), 3);
  // Then one version per round, in order, each refused once first.
  for (int round = 0; round < 5 && Backlog() > 0; ++round) (void)relay.RunOnce();
  std::vector<events::ChangeEvent> got = refuses.Of("r1/Patient/held");
  ASSERT_EQ(got.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(got[i].version, i + 1);
  EXPECT_EQ(Backlog(), 0);
}

// A handler that refuses every change of one resource.
class RefusesOne final : public events::ChangeHandler {
 public:
  explicit RefusesOne(std::string key) : key_(std::move(key)) {}
  absl::Status Handle(const events::ChangeEvent& e) override {
    if (e.Key() == key_) return absl::UnavailableError("refused by the test");
    ++accepted_;
    return absl::OkStatus();
  }
  int accepted() const { return accepted_; }

 private:
  const std::string key_;
  int accepted_ = 0;
};

TEST_F(RelayTest, OneResourcesFailingChangeDoesNotHoldTheOthersBack) {
  for (int i = 0; i < 10; ++i) Create(core::StrCat("q", i));
  RefusesOne handler("r1/Patient/q3");
  events::HandlerSink sink(handler);
  events::OutboxRelay relay(Outbox(), sink, clock_);
  auto moved = relay.RunOnce();
  ASSERT_TRUE(moved.ok()) << "a round that delivered some is not a failure: " << moved.status();
  EXPECT_EQ(*moved, 9);
  EXPECT_EQ(handler.accepted(), 9);
  EXPECT_EQ(Backlog(), 1);
  // Only the refused one is left, and now the round fails (the relay pauses).
  EXPECT_EQ(relay.RunOnce().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(relay.stats().failed, 2u);
}

TEST(KafkaEvents, TenThousandChangesSurviveProduceErrorsAndABrokerOutageInOrderOnce) {
  MockKafka kafka;
  kafka.CreateTopic(events::kResourceChangedTopic, 6);
  app::AppConfig config = TestServer::BaseConfig("events_kafka");
  config.kafka = kafka.Config();
  Recorder recorder;  // outlives the server that calls it
  TestServer server("events_kafka", {"k1"}, config);

  constexpr int kWriters = 4, kKeysPerWriter = 50, kVersions = 50;
  std::atomic<int> written{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      HttpClient c(server.port());
      for (int v = 1; v <= kVersions && !failed; ++v) {
        for (int k = 0; k < kKeysPerWriter; ++k) {
          const std::string id = core::StrCat("w", w, "-", k);
          auto res = c.Put(core::StrCat("/fhir/k1/Patient/", id),
                           core::StrCat(R"({"resourceType":"Patient","id":")", id, R"(","birthDate":"19)", 10 + v,
                                        R"(-01-01"})"));
          if (res.status != (v == 1 ? 201 : 200)) {
            ADD_FAILURE() << res.status << " " << res.body;
            failed = true;
            return;
          }
          ++written;
        }
      }
    });
  }
  // Faults while the writes go on: produce requests refused with retriable
  // errors, then one broker down for longer than a message may wait.
  ASSERT_TRUE(WaitFor([&] { return written >= 1000 || failed; }, seconds(60)));
  rd_kafka_mock_push_request_errors(kafka.cluster(), kProduceApiKey, 6, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                    RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                                    RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                    RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
  ASSERT_TRUE(WaitFor([&] { return written >= 3000 || failed; }, seconds(60)));
  ASSERT_EQ(rd_kafka_mock_broker_set_down(kafka.cluster(), 2), RD_KAFKA_RESP_ERR_NO_ERROR);
  // Down until deliveries to its partitions have failed (the relay holds
  // those changes and sends them again once it is back).
  HttpClient probe(server.port());
  const auto failed_metric = [&](int shard) {
    return core::StrCat("medgrid_outbox_relay{shard=\"", config.store.bootstrap_shards[shard], "\",state=\"failed\"}");
  };
  EXPECT_TRUE(WaitFor([&] { return std::max(Metric(probe, failed_metric(0)), Metric(probe, failed_metric(1))) > 0; },
                      seconds(60)))
      << "no delivery failed while a broker was down";
  ASSERT_EQ(rd_kafka_mock_broker_set_up(kafka.cluster(), 2), RD_KAFKA_RESP_ERR_NO_ERROR);
  for (auto& t : writers) t.join();
  ASSERT_FALSE(failed);
  constexpr std::size_t kTotal = kWriters * kKeysPerWriter * kVersions;

  Observed seen = Observe(kafka.Config(), events::kResourceChangedTopic, kTotal, seconds(120), "observer");
  std::size_t distinct = 0;
  for (const auto& [key, versions] : seen.versions) {
    distinct += versions.size();
    for (std::size_t i = 0; i < versions.size(); ++i) {
      ASSERT_EQ(versions[i], static_cast<int64_t>(i + 1)) << key << ": versions out of order or missing";
    }
  }
  EXPECT_EQ(seen.versions.size(), static_cast<std::size_t>(kWriters * kKeysPerWriter));
  EXPECT_EQ(distinct, kTotal) << "every committed change arrives";
  EXPECT_GE(seen.raw, kTotal);
  // The server's own consumer of the topic (everything since the server
  // started) feeds its ChangeBus.
  server.app().changes().Register(&recorder);
  ASSERT_EQ(server.client().Put("/fhir/k1/Patient/w0-0", R"({"resourceType":"Patient","id":"w0-0"})").status, 200);
  EXPECT_TRUE(WaitFor([&] { return !recorder.Of("k1/Patient/w0-0").empty(); }, seconds(60)))
      << server.client().Get("/metrics").body;
}

// A fresh database for a ledger and a scratch directory, both named after
// `name` and this process, dropped and removed when it goes (after the
// server using them: declare it first).
struct LedgerScratch {
  explicit LedgerScratch(const std::string& name)
      : db(core::StrCat("mg_", name, "_", static_cast<int64_t>(::getpid()))),
        dir(std::filesystem::temp_directory_path() / db) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    pqxx::connection admin(TestServer::Dsn("postgres"));
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + db);
    tx.exec("CREATE DATABASE " + db);
  }
  ~LedgerScratch() {
    pqxx::connection admin(TestServer::Dsn("postgres"));
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
    std::filesystem::remove_all(dir);
  }
  const std::string db;
  const std::filesystem::path dir;
};

TEST(KafkaEvents, AuditEventsReachTheLedgerThroughKafka) {
  MockKafka kafka;
  kafka.CreateTopic(events::kResourceChangedTopic, 2);
  kafka.CreateTopic(audit::kAuditTopic, 3);
  LedgerScratch scratch("events_audit");
  const std::string& db = scratch.db;
  {
    app::AppConfig config = TestServer::BaseConfig("events_audit");
    config.kafka = kafka.Config();
    config.audit.spool_dir = (scratch.dir / "spool").string();
    config.audit.dsn = TestServer::Dsn(db);
    TestServer server("events_audit", {"a1"}, config);
    auto created = server.client().Post("/fhir/a1/Patient", kPatient);
    ASSERT_EQ(created.status, 201);
    const std::string id = created.Json().at("id").as_string().c_str();
    // With every broker down, reads are still served at once; their events
    // wait in the spool.
    for (int b = 1; b <= 3; ++b) ASSERT_EQ(rd_kafka_mock_broker_set_down(kafka.cluster(), b), RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int i = 0; i < 20; ++i) {
      const auto start = std::chrono::steady_clock::now();
      ASSERT_EQ(server.client().Get(core::StrCat("/fhir/a1/Patient/", id)).status, 200);
      EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(1)) << "a read waited on Kafka";
    }
    EXPECT_FALSE(server.app().audit()->Drain(milliseconds(500))) << "nothing can reach Kafka";
    EXPECT_GT(server.app().audit()->stats().pending_bytes, 0u);
    for (int b = 1; b <= 3; ++b) ASSERT_EQ(rd_kafka_mock_broker_set_up(kafka.cluster(), b), RD_KAFKA_RESP_ERR_NO_ERROR);
    // Spooled, then published: the spool is empty once Kafka has them.
    ASSERT_TRUE(server.app().audit()->Drain(seconds(60)));
    // The audit consumer appends them to the ledger: the tenant's creation
    // (an admin action), the create and the 20 reads.
    pqxx::connection conn(TestServer::Dsn(db));
    auto count = [&] {
      pqxx::nontransaction tx(conn);
      return tx.exec_params1("SELECT count(*) FROM ledger_entries WHERE tenant_id = 'a1'")[0].as<int>();
    };
    ASSERT_TRUE(WaitFor([&] { return count() >= 22; }, seconds(120))) << count();
    std::this_thread::sleep_for(seconds(1));
    EXPECT_EQ(count(), 22) << "each event once";
    // AuditEvent search answers from there (indexed just after each append).
    // (Each search is audited too, so count the reads only.)
    auto reads = [&] {
      auto found = server.client().Get(core::StrCat("/fhir/a1/AuditEvent?subtype=read&patient=Patient/", id));
      EXPECT_EQ(found.status, 200) << found.body;
      const json::value bundle = found.Json();
      const json::value* entries = bundle.as_object().if_contains("entry");
      return entries ? entries->as_array().size() : std::size_t{0};
    };
    EXPECT_TRUE(WaitFor([&] { return reads() == 20u; }, seconds(30))) << reads();
  }
}

// A split deployment: the server publishes its audit events and leaves them
// to the audit service (what services/audit runs), here with a ledger store
// of its own.
TEST(KafkaEvents, AServerWithoutTheAuditConsumerLeavesItsEventsToTheAuditService) {
  MockKafka kafka;
  kafka.CreateTopic(events::kResourceChangedTopic, 2);
  kafka.CreateTopic(audit::kAuditTopic, 3);
  LedgerScratch scratch("events_split");
  const std::string& db = scratch.db;
  const std::filesystem::path& dir = scratch.dir;
  {
    app::AppConfig config = TestServer::BaseConfig("events_split");
    config.kafka = kafka.Config();
    config.audit.spool_dir = (dir / "spool").string();
    config.audit.dsn = TestServer::Dsn(db);
    config.audit.consume = false;
    TestServer server("events_split", {"s1"}, config);
    ASSERT_EQ(server.client().Put("/fhir/s1/Patient/p", R"({"resourceType":"Patient","id":"p"})").status, 201);
    ASSERT_TRUE(server.app().audit()->Drain(seconds(30))) << "published";
    pqxx::connection conn(TestServer::Dsn(db));
    auto count = [&] {
      pqxx::nontransaction tx(conn);
      return tx.exec_params1("SELECT count(*) FROM ledger_entries WHERE tenant_id = 's1'")[0].as<int>();
    };
    std::this_thread::sleep_for(seconds(2));
    EXPECT_EQ(count(), 0) << "the server consumed its own events";

    auto signer = ledger::Signer::FromPemFile((dir / "service-key.pem").string(), /*create=*/true);
    ASSERT_TRUE(signer.ok()) << signer.status();
    auto store = ledger::LedgerStore::Open(TestServer::Dsn(db), std::shared_ptr<ledger::Signer>(std::move(*signer)));
    ASSERT_TRUE(store.ok()) << store.status();
    auto index = audit::AuditIndex::Open(TestServer::Dsn(db));
    ASSERT_TRUE(index.ok());
    audit::LedgerSink sink(**store, index->get());
    auto service = audit::AuditConsumer::Start(kafka.Config(), sink);
    ASSERT_TRUE(service.ok()) << service.status();
    // The tenant's creation and the update-as-create.
    EXPECT_TRUE(WaitFor([&] { return count() == 2; }, seconds(60))) << count();
    (*service)->Stop();
    auto verified = (*store)->Verify("s1");
    ASSERT_TRUE(verified.ok());
    EXPECT_TRUE(verified->ok);
  }
}

}  // namespace
}  // namespace medgrid::testing
