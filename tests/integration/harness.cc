#include "integration/harness.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core.hpp"
#include "gtest/gtest.h"
#include "medgrid/auth/jwt.h"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/json.h"
#include "pqxx/pqxx"

namespace medgrid::testing {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

std::string HttpResponse::Header(const std::string& name) const {
  std::string lower = name;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto it = headers.find(lower);
  return it == headers.end() ? "" : it->second;
}

boost::json::value HttpResponse::Json() const {
  boost::json::error_code ec;
  boost::json::value v = boost::json::parse(body, ec);
  EXPECT_FALSE(ec) << "body is not JSON: " << body.substr(0, 300);
  return ec ? boost::json::value() : v;
}

std::string HttpResponse::IssueCode() const {
  auto v = Json();
  const auto* issues = v.is_object() ? v.get_object().if_contains("issue") : nullptr;
  if (issues == nullptr || !issues->is_array() || issues->get_array().empty()) return "";
  return std::string(issues->get_array()[0].at("code").as_string());
}

std::string HttpResponse::Diagnostics() const {
  auto v = Json();
  const auto* issues = v.is_object() ? v.get_object().if_contains("issue") : nullptr;
  if (issues == nullptr || !issues->is_array() || issues->get_array().empty()) return "";
  const auto* d = issues->get_array()[0].get_object().if_contains("diagnostics");
  return d ? std::string(d->as_string()) : "";
}

struct HttpClient::Impl {
  explicit Impl(uint16_t p) : port(p) {}
  uint16_t port;
  asio::io_context io;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;

  void Connect() {
    stream.emplace(io);
    stream->connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    buffer.clear();
  }

  HttpResponse Read(bool head = false) {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.skip(head);  // a response to HEAD has no body whatever its Content-Length
    parser.body_limit(1ull << 30);
    parser.header_limit(1 << 20);
    bhttp::read(*stream, buffer, parser);
    HttpResponse out;
    auto res = parser.release();
    out.status = res.result_int();
    for (const auto& h : res) {
      std::string name(h.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      out.headers[name] = std::string(h.value());
    }
    out.body = std::move(res.body());
    if (!res.keep_alive()) stream.reset();
    return out;
  }
};

HttpClient::HttpClient(uint16_t port) : impl_(std::make_unique<Impl>(port)) {}
HttpClient::~HttpClient() = default;

HttpResponse HttpClient::Send(const std::string& method, const std::string& target, const std::string& body,
                              const std::map<std::string, std::string>& headers) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!impl_->stream) impl_->Connect();
    bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(method), target, 11};
    req.set(bhttp::field::host, "127.0.0.1:" + std::to_string(impl_->port));
    for (const auto& [k, v] : headers) req.set(k, v);
    req.body() = body;
    if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") req.prepare_payload();
    try {
      // A server may answer (413) and close before reading a large body:
      // read its response even when the write fails part-way.
      beast::error_code write_ec;
      bhttp::write(*impl_->stream, req, write_ec);
      if (write_ec && write_ec != asio::error::broken_pipe && write_ec != asio::error::connection_reset) {
        throw beast::system_error(write_ec);
      }
      return impl_->Read(method == "HEAD");
    } catch (const std::exception& e) {
      // The server may have closed an idle keep-alive connection; retry once
      // on a fresh one.
      impl_->stream.reset();
      if (attempt == 1) ADD_FAILURE() << method << " " << target << ": " << e.what();
    }
  }
  return {};
}

HttpResponse HttpClient::Post(const std::string& target, const std::string& body,
                              std::map<std::string, std::string> headers) {
  headers.emplace("Content-Type", "application/fhir+json");
  return Send("POST", target, body, headers);
}

HttpResponse HttpClient::Put(const std::string& target, const std::string& body,
                             std::map<std::string, std::string> headers) {
  headers.emplace("Content-Type", "application/fhir+json");
  return Send("PUT", target, body, headers);
}

HttpResponse HttpClient::SendRaw(const std::string& bytes) {
  impl_->Connect();
  asio::write(impl_->stream->socket(), asio::buffer(bytes));
  try {
    return impl_->Read();
  } catch (const std::exception& e) {
    impl_->stream.reset();
    HttpResponse r;
    r.status = -1;
    r.body = e.what();
    return r;
  }
}

std::string TestServer::Dsn(const std::string& db) {
  const char* base = std::getenv("MEDGRID_TEST_PG_DSN");
  if (base == nullptr) {
    ADD_FAILURE() << "MEDGRID_TEST_PG_DSN is not set; run the tests through tests/run.sh";
    return "";
  }
  return std::string(base) + " dbname=" + db;
}

std::string TestServer::FhirPackageDir() {
  const char* dir = std::getenv("MEDGRID_FHIR_PACKAGE");
  if (dir == nullptr) {
    ADD_FAILURE() << "MEDGRID_FHIR_PACKAGE is not set; run the tests through tests/run.sh";
    return "";
  }
  return dir;
}

app::AppConfig TestServer::BaseConfig(const std::string& name) {
  app::AppConfig c;
  c.http.port = 0;
  c.http.io_threads = 2;
  c.http.worker_threads = 16;
  c.store.admin_dsn = Dsn("postgres");
  const std::string prefix = "mg_" + name + "_" + std::to_string(::getpid());
  c.store.control_db = prefix + "_control";
  c.store.bootstrap_shards = {prefix + "_s0", prefix + "_s1"};
  c.store.pool_size = 8;
  c.fhir_package_dir = FhirPackageDir();
  c.log_level = core::LogLevel::kWarn;
  return c;
}

std::string ShardOf(HttpClient& client, const std::string& tenant) {
  const boost::json::value tenants = client.Get("/admin/tenants").Json();
  for (const auto& t : tenants.at("tenants").as_array()) {
    if (t.at("id").as_string() == tenant) return std::string(t.at("shard").as_string());
  }
  ADD_FAILURE() << "no tenant " << tenant;
  return "";
}

uint16_t FreeLoopbackPort() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

OwnServer::OwnServer(const std::string& kind, std::string data, std::string stop)
    : port_(FreeLoopbackPort()), data_(std::move(data)), stop_(std::move(stop)) {
  std::string tmpl = core::StrCat("/tmp/medgrid-test-", kind, ".XXXXXX");
  const char* dir = ::mkdtemp(tmpl.data());
  if (dir == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
    std::abort();
  }
  dir_ = dir;
  // The postgres user must reach a data directory in it.
  std::filesystem::permissions(dir_, std::filesystem::perms::all);
}

OwnServer::~OwnServer() {
  Run(stop_);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

bool OwnServer::Run(const std::string& fn) {
  const std::string dir = data_.empty() ? dir_ : core::StrCat(dir_, "/", data_);
  const std::string cmd = core::StrCat("bash -c 'source ", MEDGRID_SOURCE_DIR, "/deploy/local/lib.sh && ", fn, " ", dir,
                                       " ", port_, "' >/dev/null 2>&1");
  return std::system(cmd.c_str()) == 0;
}

std::string OwnPostgres::Dsn() const {
  return core::StrCat("host=127.0.0.1 port=", port(), " user=postgres dbname=postgres");
}

std::string OwnRedis::Address() const { return core::StrCat("127.0.0.1:", port()); }

bool OwnRedis::Cli(const std::string& args) const {
  return std::system(core::StrCat("redis-cli -h 127.0.0.1 -p ", port(), " ", args, " >/dev/null 2>&1").c_str()) == 0;
}

TestTokens::TestTokens() {
  char tmpl[] = "/tmp/medgrid-tokens.XXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  if (dir == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
    std::abort();
  }
  dir_ = dir;
  auto pem = auth::GeneratePrivateKeyPem(auth::JwtAlg::kES256);
  if (!pem.ok()) {
    ADD_FAILURE() << pem.status();
    std::abort();
  }
  key_pem_ = *pem;
  auto signer = auth::JwtSigner::FromPem(key_pem_, "test-1");
  if (!signer.ok()) {
    ADD_FAILURE() << signer.status();
    std::abort();
  }
  jwks_path_ = dir_ + "/jwks.json";
  std::ofstream(jwks_path_) << signer->PublicJwks();
}

TestTokens::~TestTokens() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void TestTokens::Configure(app::AppConfig& c) const {
  c.security.enabled = true;
  c.security.auth.jwks = jwks_path_;
  c.security.auth.issuer = kIssuer;
  c.security.auth.audience = kAudience;
  const std::string db = c.store.control_db + "_consent";
  if (c.security.consent_dsn.empty()) {
    pqxx::connection admin(c.store.admin_dsn);
    pqxx::nontransaction tx(admin);
    if (tx.exec_params("SELECT 1 FROM pg_database WHERE datname = $1", db).empty()) {
      tx.exec("CREATE DATABASE " + tx.quote_name(db));
    }
    c.security.consent_dsn = TestServer::Dsn(db);
  }
  if (const char* redis = std::getenv("MEDGRID_TEST_REDIS"); redis != nullptr && *redis != '\0') {
    c.redis = redis;
    c.redis_prefix = c.store.control_db;
  }
}

std::string TestTokens::Mint(boost::json::object claims, int64_t ttl_s) const {
  auto signer = auth::JwtSigner::FromPem(key_pem_, "test-1");
  EXPECT_TRUE(signer.ok()) << signer.status();
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  claims.emplace("iss", kIssuer);
  claims.emplace("aud", kAudience);
  claims.emplace("iat", now);
  claims.emplace("nbf", now);
  claims.emplace("exp", now + ttl_s);
  claims.emplace("sub", "test-user");
  return signer->Sign(claims);
}

std::string TestTokens::Admin() const { return Mint({{"sub", "test-admin"}, {"scope", "medgrid/admin"}}); }

std::string TestTokens::User(const std::string& tenant, const std::string& scope, boost::json::object extra) const {
  extra["tenant"] = tenant;
  extra["scope"] = scope;
  return Mint(std::move(extra));
}

TestServer::TestServer(const std::string& name, const std::vector<std::string>& tenants,
                       std::optional<app::AppConfig> config, const TestTokens* tokens)
    : config_(config ? *config : BaseConfig(name)) {
  core::InitLogging(config_.log_level);
  auto app = app::App::Start(config_);
  if (!app.ok()) {
    ADD_FAILURE() << "App start failed: " << app.status();
    std::abort();
  }
  app_ = std::move(*app);
  client_ = std::make_unique<HttpClient>(app_->port());
  for (const std::string& t : tenants) {
    std::map<std::string, std::string> headers = {{"Content-Type", "application/json"}};
    std::string body = "{\"id\":\"" + t + "\"}";
    if (config_.security.enabled) {
      if (tokens == nullptr) {
        ADD_FAILURE() << "an auth-enabled TestServer needs TestTokens";
        std::abort();
      }
      headers["Authorization"] = "Bearer " + tokens->Admin();
      body = "{\"id\":\"" + t + "\",\"consentPolicy\":\"opt-out\",\"btgRoles\":[\"physician\"]}";
    }
    auto res = client_->Send("POST", "/admin/tenants", body, headers);
    EXPECT_EQ(res.status, 201) << res.body;
  }
}

void TestServer::Stop() {
  client_.reset();
  if (app_) app_->Stop();
}

TestServer::~TestServer() {
  Stop();
  app_.reset();
  // Drop this run's databases so repeated runs on one cluster stay small.
  try {
    pqxx::connection admin(config_.store.admin_dsn);
    pqxx::nontransaction tx(admin);
    std::vector<std::string> dbs = config_.store.bootstrap_shards;
    dbs.push_back(config_.store.control_db);
    if (config_.security.enabled) dbs.push_back(config_.store.control_db + "_consent");
    for (const std::string& db : dbs) tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(db) + " WITH (FORCE)");
  } catch (const std::exception& e) {
    ADD_FAILURE() << "dropping test databases: " << e.what();
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace medgrid::testing
