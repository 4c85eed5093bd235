// Consent decision benchmark: the cost of a decision whose patient's Consents
// are not cached (an L1 miss without Redis: the registry is asked, on the
// service's own threads, and the Consents are evaluated), against a plain
// `SELECT 1` round trip to the same PostgreSQL through libpqxx (the
// baseline, in the same run), and of a decision from the L1 cache.
//
// The registry holds `--patients` patients with `--consents` privacy
// Consents each (a deny for another actor with a nested permit, a period and
// a purpose); every decision asks about an Observation of a random patient.
//
//   build/release/bench/consent_bench --dsn DSN [--patients 2000] [--consents 2] [--iterations 20000]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "boost/json.hpp"
#include "medgrid/consent/service.h"
#include "medgrid/core/clock.h"
#include "medgrid/core/strings.h"
#include "prometheus/registry.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace json = boost::json;

std::string ConsentJson(int patient, int n) {
  return medgrid::core::StrCat(
      R"({"resourceType":"Consent","id":"c-)", patient, "-", n,
      R"(","status":"active","scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},)",
      R"("category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],"patient":{"reference":"Patient/p)",
      patient, R"("},"dateTime":"2026-01-0)", 1 + n % 9,
      R"(T00:00:00Z","policyRule":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"OPTOUT"}]},)",
      R"("provision":{"period":{"start":"2020-01-01","end":"2030-12-31"},"actor":[{"role":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ParticipationType","code":"PRCP"}]},"reference":{"reference":"Practitioner/other-)",
      n, R"("}}],"purpose":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"HMARKT"}],)",
      R"("provision":[{"type":"permit","purpose":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"TREAT"}]}]}})");
}

struct Stats {
  double p50_us, p99_us, mean_us;
};

Stats Summarize(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  double sum = 0;
  for (double v : us) sum += v;
  return {us[us.size() / 2], us[us.size() * 99 / 100], sum / static_cast<double>(us.size())};
}

}  // namespace

int main(int argc, char** argv) {
  std::string dsn;
  int patients = 2000;
  int consents = 2;
  int iterations = 20000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--dsn") dsn = argv[i + 1];
    else if (flag == "--patients") patients = std::atoi(argv[i + 1]);
    else if (flag == "--consents") consents = std::atoi(argv[i + 1]);
    else if (flag == "--iterations") iterations = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (dsn.empty() || patients < 1 || iterations < 100) {
    std::fprintf(stderr, "usage: consent_bench --dsn DSN [--patients N] [--consents N] [--iterations N]\n");
    return 2;
  }
  medgrid::core::RealClock clock;
  prometheus::Registry metrics;
  medgrid::consent::ConsentServiceConfig config;
  config.dsn = dsn;
  config.l1_ttl = std::chrono::microseconds(0);  // every decision misses L1
  config.deadline = std::chrono::milliseconds(1000);
  auto fetch = [](const std::string&, const std::string&, int64_t) -> absl::StatusOr<std::optional<std::string>> {
    return std::optional<std::string>();
  };
  auto service = medgrid::consent::ConsentService::Open(config, nullptr, fetch, clock, metrics);
  if (!service.ok()) {
    std::fprintf(stderr, "consent service: %s\n", std::string(service.status().message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "loading %d patients x %d Consents\n", patients, consents);
  for (int p = 1; p <= patients; ++p) {
    for (int n = 0; n < consents; ++n) {
      absl::Status st = (*service)->Record("bench", medgrid::core::StrCat("c-", p, "-", n), 1, ConsentJson(p, n));
      if (!st.ok()) {
        std::fprintf(stderr, "record: %s\n", std::string(st.message()).c_str());
        return 1;
      }
    }
  }
  json::object observation = json::parse(
      R"({"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"effectiveDateTime":"2026-03-01"})")
      .as_object();
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> pick(1, patients);
  auto decide = [&]() {
    medgrid::consent::AccessRequest req;
    req.patient_id = medgrid::core::StrCat("p", pick(rng));
    req.resource = &observation;
    req.actor_references = {"Practitioner/other-0"};
    req.actor_roles = {{"http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PRCP"}};
    req.purposes = {{"http://terminology.hl7.org/CodeSystem/v3-ActReason", "TREAT"}};
    req.now = clock.Now();
    auto t0 = Clock::now();
    absl::StatusOr<medgrid::consent::Decision> d =
        (*service)->Decide("bench", medgrid::consent::DefaultPolicy::kOptOut, req);
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (!d.ok()) {
      std::fprintf(stderr, "decide: %s\n", std::string(d.status().message()).c_str());
      std::exit(1);
    }
    return us;
  };
  for (int i = 0; i < 1000; ++i) decide();  // warm connections and plans
  std::vector<double> miss;
  miss.reserve(iterations);
  for (int i = 0; i < iterations; ++i) miss.push_back(decide());

  pqxx::connection conn(dsn);
  std::vector<double> select1;
  select1.reserve(iterations);
  for (int i = 0; i < iterations + 1000; ++i) {
    auto t0 = Clock::now();
    pqxx::nontransaction tx(conn);
    tx.exec("SELECT 1");
    if (i >= 1000) select1.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }

  // The same decisions from L1.
  config.l1_ttl = std::chrono::seconds(60);
  service->reset();
  service = medgrid::consent::ConsentService::Open(config, nullptr, fetch, clock, metrics);
  if (!service.ok()) return 1;
  for (int p = 1; p <= patients; ++p) {
    pick = std::uniform_int_distribution<int>(p, p);
    decide();
  }
  pick = std::uniform_int_distribution<int>(1, patients);
  std::vector<double> hit;
  hit.reserve(iterations);
  for (int i = 0; i < iterations; ++i) hit.push_back(decide());

  const Stats m = Summarize(miss), s = Summarize(select1), h = Summarize(hit);
  std::printf("\nconsent decisions, %d patients x %d Consents, %d decisions each\n", patients, consents, iterations);
  std::printf("| measurement | p50 us | p99 us | mean us | p99 / baseline p99 |\n|---|---:|---:|---:|---:|\n");
  std::printf("| SELECT 1 round trip (baseline) | %.0f | %.0f | %.0f | 1.00 |\n", s.p50_us, s.p99_us, s.mean_us);
  std::printf("| decision, L1 miss (registry + evaluation) | %.0f | %.0f | %.0f | %.2f |\n", m.p50_us, m.p99_us,
              m.mean_us, m.p99_us / s.p99_us);
  std::printf("| decision, L1 hit (evaluation only) | %.1f | %.1f | %.1f | %.2f |\n", h.p50_us, h.p99_us, h.mean_us,
              h.p99_us / s.p99_us);
  std::printf("target: p99 of a miss under 2000 us: %s\n", m.p99_us < 2000 ? "met" : "NOT met");
  return 0;
}
