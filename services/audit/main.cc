// medgrid-audit: the audit service on its own. Consumes the audit events that
// medgrid servers publish on Kafka (medgrid.audit.events, group medgrid-audit)
// and appends them to each tenant's ledger, signing a tree head per batch.
// Run servers with --audit-consumer=off when these processes do this work.
//
//   medgrid-audit --kafka-brokers=k1:9092 --audit-dsn="host=db dbname=medgrid_audit"
//                 --audit-key-file=/etc/medgrid/ledger-signing-key.pem
#include <csignal>
#include <iostream>
#include <string>
#include <vector>

#include "medgrid/audit/audit_index.h"
#include "medgrid/audit/service.h"
#include "medgrid/audit/sink.h"
#include "medgrid/core/logging.h"
#include "medgrid/ledger/ledger_store.h"
#include "medgrid/ledger/signer.h"

namespace {

constexpr const char* kHelp = R"(medgrid-audit: Kafka medgrid.audit.events into the audit ledger.
Flags (all --name=value):
  --kafka-brokers   Kafka bootstrap servers (required)
  --kafka-property  name=value, a librdkafka property (repeatable)
  --audit-dsn       libpq DSN of the ledger database (required; migrated on start)
  --audit-key-file  Ed25519 PEM key that signs tree heads, created when missing (required)
  --log-level       debug|info|warn|error|off (default info)
)";

int Fail(const std::string& message) {
  std::cerr << "medgrid-audit: " << message << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace medgrid;
  events::KafkaConfig kafka;
  std::string dsn, key_file;
  core::LogLevel level = core::LogLevel::kInfo;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kHelp;
      return 0;
    }
    const std::size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) return Fail("expected --name=value, got " + arg);
    const std::string name = arg.substr(2, eq - 2), value = arg.substr(eq + 1);
    if (name == "kafka-brokers") {
      kafka.brokers = value;
    } else if (name == "kafka-property") {
      const std::size_t split = value.find('=');
      if (split == 0 || split == std::string::npos) return Fail("--kafka-property must be name=value");
      kafka.properties[value.substr(0, split)] = value.substr(split + 1);
    } else if (name == "audit-dsn") {
      dsn = value;
    } else if (name == "audit-key-file") {
      key_file = value;
    } else if (name == "log-level") {
      if (!core::ParseLogLevel(value, level)) return Fail("--log-level must be debug, info, warn, error or off");
    } else {
      return Fail("unknown flag --" + name + " (see --help)");
    }
  }
  if (kafka.brokers.empty() || dsn.empty() || key_file.empty()) {
    return Fail("--kafka-brokers, --audit-dsn and --audit-key-file are required (see --help)");
  }
  core::InitLogging(level);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto fail = [](const absl::Status& s) {
    core::Log(core::LogLevel::kError, "audit_service.start_failed", {{"reason", std::string(s.message())}});
    core::FlushLogs();
    return 1;
  };
  auto signer = ledger::Signer::FromPemFile(key_file, /*create=*/true);
  if (!signer.ok()) return fail(signer.status());
  auto store = ledger::LedgerStore::Open(dsn, std::shared_ptr<ledger::Signer>(std::move(*signer)));
  if (!store.ok()) return fail(store.status());
  auto index = audit::AuditIndex::Open(dsn);
  if (!index.ok()) return fail(index.status());
  audit::LedgerSink sink(**store, index->get());
  auto consumer = audit::AuditConsumer::Start(kafka, sink);
  if (!consumer.ok()) return fail(consumer.status());
  core::Log(core::LogLevel::kInfo, "audit_service.started", {{"topic", audit::kAuditTopic}});
  int sig = 0;
  sigwait(&signals, &sig);
  core::Log(core::LogLevel::kInfo, "audit_service.stopping", {{"signal", std::to_string(sig)}});
  (*consumer)->Stop();
  core::FlushLogs();
  return 0;
}
