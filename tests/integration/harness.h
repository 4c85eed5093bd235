// Test harness for integration tests: an in-process medgrid App on a free
// port against the PostgreSQL that tests/run.sh started, and a small HTTP
// client. Each test binary gets its own control and shard databases, so
// binaries can run in parallel against one cluster.
//
//   medgrid::testing::TestServer server("crud");
//   auto res = server.client().Get("/fhir/t1/Patient/1");
#pragma once

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

class TestServer {
 public:
  // `name` makes the database names unique: mg_<name>_<pid>_control etc.
  // `tenants` are created through the admin API.
  explicit TestServer(const std::string& name, const std::vector<std::string>& tenants = {"t1", "t2"},
                      std::optional<app::AppConfig> config = std::nullopt);
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

// Reads a whole file; fails the test if it cannot.
std::string ReadFile(const std::string& path);

}  // namespace medgrid::testing
