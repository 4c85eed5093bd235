// Test harness for integration tests: an in-process medgrid App on a free
// port against the PostgreSQL that tests/run.sh started, and a small HTTP
// client. Each test binary gets its own control and shard databases, so
// binaries can run in parallel against one cluster.
//
//   medgrid::testing::TestServer server("crud");
//   auto res = server.client().Get("/fhir/t1/Patient/1");
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "boost/beast/http.hpp"
#include "boost/json.hpp"
#include "medgrid/app/app.h"

namespace medgrid::testing {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-cased names
  std::string body;

  std::string Header(const std::string& name) const;
  boost::json::value Json() const;  // parsed body; fails the test if not JSON
  // The first issue's code and diagnostics of an OperationOutcome body.
  std::string IssueCode() const;
  std::string Diagnostics() const;
};

// A keep-alive HTTP/1.1 client to 127.0.0.1:port. Not thread-safe: use one
// per thread.
class HttpClient {
 public:
  explicit HttpClient(uint16_t port);
  ~HttpClient();

  HttpResponse Send(const std::string& method, const std::string& target, const std::string& body = "",
                    const std::map<std::string, std::string>& headers = {});
  HttpResponse Get(const std::string& target, const std::map<std::string, std::string>& headers = {}) {
    return Send("GET", target, "", headers);
  }
  // POST/PUT with Content-Type application/fhir+json.
  HttpResponse Post(const std::string& target, const std::string& body,
                    std::map<std::string, std::string> headers = {});
  HttpResponse Put(const std::string& target, const std::string& body, std::map<std::string, std::string> headers = {});
  HttpResponse Delete(const std::string& target, const std::map<std::string, std::string>& headers = {}) {
    return Send("DELETE", target, "", headers);
  }
  // Sends raw bytes and reads one response (for malformed requests).
  HttpResponse SendRaw(const std::string& bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A signing key for auth-enabled test servers (its JWKS in a temporary
// file) and tokens signed with it.
class TestTokens {
 public:
  static constexpr const char* kIssuer = "https://idp.test.medgrid";
  static constexpr const char* kAudience = "medgrid-test";
  TestTokens();
  ~TestTokens();
  // Turns auth on in `c` with this key, a consent registry database of its
  // own (named after the config's control database) and, when the harness
  // has one (MEDGRID_TEST_REDIS), Redis with a key prefix of its own.
  void Configure(app::AppConfig& c) const;
  // A token with iss, aud, iat, nbf and exp (now + ttl_s) and these claims.
  std::string Mint(boost::json::object claims, int64_t ttl_s = 600) const;
  // medgrid/admin.
  std::string Admin() const;
  // A user of `tenant` with `scope`; `extra` claims are added (patient,
  // fhirUser, roles, ...).
  std::string User(const std::string& tenant, const std::string& scope, boost::json::object extra = {}) const;
  static std::map<std::string, std::string> Bearer(const std::string& token) {
    return {{"Authorization", "Bearer " + token}};
  }
  const std::string& jwks_path() const { return jwks_path_; }
  const std::string& key_pem() const { return key_pem_; }

 private:
  std::string dir_;
  std::string jwks_path_;
  std::string key_pem_;
};

class TestServer {
 public:
  // `name` makes the database names unique: mg_<name>_<pid>_control etc.
  // `tenants` are created through the admin API.
  // With auth on (config.security.enabled), `tokens` signs the admin token
  // that creates the tenants; they are created opt-out with btgRoles
  // ["physician"].
  explicit TestServer(const std::string& name, const std::vector<std::string>& tenants = {"t1", "t2"},
                      std::optional<app::AppConfig> config = std::nullopt, const TestTokens* tokens = nullptr);
  ~TestServer();

  uint16_t port() const { return app_->port(); }
  app::App& app() { return *app_; }
  HttpClient& client() { return *client_; }
  const app::AppConfig& config() const { return config_; }
  // libpq DSN of database `db` in the test cluster.
  static std::string Dsn(const std::string& db);
  static std::string FhirPackageDir();
  // The base config a test server uses, for tests that tweak it.
  static app::AppConfig BaseConfig(const std::string& name);
  void Stop();

 private:
  app::AppConfig config_;
  std::unique_ptr<app::App> app_;
  std::unique_ptr<HttpClient> client_;
};

// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon).
uint16_t FreeLoopbackPort();

// The shard `tenant` lives on, from GET /admin/tenants (auth off); fails the
// test and returns "" when the tenant is not listed.
std::string ShardOf(HttpClient& client, const std::string& tenant);

// A server of the test's own, started and stopped with deploy/local/lib.sh
// (what tests/run.sh uses) in a temporary directory removed on destruction.
// Run() calls another lib.sh function on it (pg_stop, pg_start, redis_stop,
// ...): `fn <dir> <port>`, true when it succeeded.
class OwnServer {
 public:
  OwnServer(const OwnServer&) = delete;
  OwnServer& operator=(const OwnServer&) = delete;
  virtual ~OwnServer();
  bool Run(const std::string& fn);
  uint16_t port() const { return port_; }

 protected:
  // `data` is the server's directory under the temporary one ("pg") or
  // empty (the temporary directory itself).
  OwnServer(const std::string& kind, std::string data, std::string stop);

 private:
  uint16_t port_;
  std::string dir_;
  std::string data_;
  std::string stop_;
};

// PostgreSQL (pg_start / pg_stop).
class OwnPostgres : public OwnServer {
 public:
  OwnPostgres() : OwnServer("pg", "pg", "pg_stop") { Run("pg_start"); }
  std::string Dsn() const;
};

// Redis (redis_start / redis_stop).
class OwnRedis : public OwnServer {
 public:
  OwnRedis() : OwnServer("redis", "", "redis_stop") { Run("redis_start"); }
  std::string Address() const;
  // redis-cli with `args`; true when it exits 0.
  bool Cli(const std::string& args) const;
};

// Reads a whole file; fails the test if it cannot.
std::string ReadFile(const std::string& path);

}  // namespace medgrid::testing
