// FHIR R4 Subscriptions end to end against real PostgreSQL: rest-hook
// deliveries to a real HTTP receiver in this process (with and without a
// payload, in order through a receiver that is down for a while, into
// status error after repeated failures, stopped by status off), websocket
// bind / bound / ping over a real websocket client, tenant isolation, and
// the checks that refuse unusable Subscriptions.
#include <sys/socket.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/websocket.hpp"
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "integration/receiver.h"
#include "medgrid/core/strings.h"
#include "medgrid/subscriptions/service.h"

namespace medgrid::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using tcp = asio::ip::tcp;

std::string Str(const json::value& v) { return v.is_string() ? std::string(v.as_string()) : std::string(); }

std::string SubscriptionJson(const std::string& criteria, const std::string& channel_type, const std::string& endpoint,
                             const std::string& payload = "", const std::string& header = "",
                             const std::string& status = "requested") {
  json::object channel{{"type", channel_type}};
  if (!endpoint.empty()) channel["endpoint"] = endpoint;
  if (!payload.empty()) channel["payload"] = payload;
  if (!header.empty()) channel["header"] = json::array{json::value(header)};
  json::object sub{{"resourceType", "Subscription"}, {"status", status},  {"reason", "test"},
                   {"criteria", criteria},           {"channel", channel}};
  return json::serialize(sub);
}

std::string Observation(const std::string& code) {
  return core::StrCat(R"({"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":")",
                      code, R"("}]}})");
}

constexpr const char* kCriteria = "Observation?code=http://loinc.org|1234-5";

class SubscriptionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    app::AppConfig config = TestServer::BaseConfig("subs");
    config.subscriptions.initial_backoff = milliseconds(20);
    config.subscriptions.max_backoff = milliseconds(200);
    config.subscriptions.max_failures = 1000;
    config.subscriptions.poll_interval = milliseconds(50);
    server_ = new TestServer("subs", {"t1", "t2"}, config);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  HttpClient& c() { return server_->client(); }
  subscriptions::SubscriptionService& subs() { return server_->app().subscriptions(); }

  static std::string Status(HttpClient& client, const std::string& tenant, const std::string& id) {
    auto res = client.Get(core::StrCat("/fhir/", tenant, "/Subscription/", id));
    return res.status == 200 ? Str(res.Json().at("status")) : std::string();
  }
  // Creates a Subscription and waits for the server to make it active.
  static std::string CreateActive(HttpClient& client, const std::string& tenant, const std::string& body) {
    auto res = client.Post(core::StrCat("/fhir/", tenant, "/Subscription"), body);
    EXPECT_EQ(res.status, 201) << res.body;
    if (res.status != 201) return "";
    const std::string id = Str(res.Json().at("id"));
    EXPECT_TRUE(WaitFor([&] { return Status(client, tenant, id) == "active"; })) << Status(client, tenant, id);
    return id;
  }
  std::string CreateObservation(const std::string& tenant, const std::string& code) {
    auto res = c().Post(core::StrCat("/fhir/", tenant, "/Observation"), Observation(code));
    EXPECT_EQ(res.status, 201) << res.body;
    return res.status == 201 ? Str(res.Json().at("id")) : std::string();
  }

  static TestServer* server_;

 public:
  static std::string CreateActiveFor(HttpClient& client, const std::string& tenant, const std::string& body) {
    return CreateActive(client, tenant, body);
  }
  static std::string StatusFor(HttpClient& client, const std::string& tenant, const std::string& id) {
    return Status(client, tenant, id);
  }
};
TestServer* SubscriptionTest::server_ = nullptr;

TEST_F(SubscriptionTest, RestHookGetsOneEmptyPostPerMatchingWriteAndNothingElse) {
  Receiver receiver;
  const std::string id = CreateActive(
      c(), "t1", SubscriptionJson(kCriteria, "rest-hook", receiver.Url("/hook"), "", "Authorization: Bearer s3cret"));
  ASSERT_FALSE(id.empty());
  CreateObservation("t1", "1234-5");
  CreateObservation("t1", "9999-9");  // another code
  CreateObservation("t2", "1234-5");  // another tenant
  const std::string match2 = CreateObservation("t1", "1234-5");
  // An update that still matches is a change too.
  ASSERT_EQ(c().Put("/fhir/t1/Observation/" + match2,
                    core::StrCat(R"({"resourceType":"Observation","id":")", match2,
                                 R"(","status":"amended","code":{"coding":[{"system":"http://loinc.org","code":"1234-5"}]}})"))
                .status,
            200);
  ASSERT_TRUE(WaitFor([&] { return receiver.Count() >= 3; })) << receiver.Count();
  // A marker after everything else: once it is in, anything stray would be too.
  CreateObservation("t1", "1234-5");
  ASSERT_TRUE(WaitFor([&] { return receiver.Count() >= 4; })) << receiver.Count();
  std::this_thread::sleep_for(milliseconds(200));
  const std::vector<Received> got = receiver.Requests();
  ASSERT_EQ(got.size(), 4u);
  for (const Received& r : got) {
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.target, "/hook");
    EXPECT_EQ(r.body, "");
    EXPECT_EQ(r.authorization, "Bearer s3cret");
  }
  ASSERT_EQ(c().Delete("/fhir/t1/Subscription/" + id).status, 204);
}

TEST_F(SubscriptionTest, PayloadPutsTheResourceAtEndpointTypeId) {
  Receiver receiver;
  const std::string id =
      CreateActive(c(), "t1", SubscriptionJson(kCriteria, "rest-hook", receiver.Url("/base/"), "application/fhir+json"));
  ASSERT_FALSE(id.empty());
  const std::string obs = CreateObservation("t1", "1234-5");
  ASSERT_TRUE(WaitFor([&] { return receiver.Count() >= 1; }));
  const Received r = receiver.Requests().at(0);
  EXPECT_EQ(r.method, "PUT");
  EXPECT_EQ(r.target, "/base/Observation/" + obs);
  EXPECT_EQ(r.content_type, "application/fhir+json");
  json::value body = json::parse(r.body);
  EXPECT_EQ(Str(body.at("resourceType")), "Observation");
  EXPECT_EQ(Str(body.at("id")), obs);
  // A deletion matches nothing: no notification for it.
  ASSERT_EQ(c().Delete("/fhir/t1/Observation/" + obs).status, 204);
  CreateObservation("t1", "1234-5");
  ASSERT_TRUE(WaitFor([&] { return receiver.Count() >= 2; }));
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(receiver.Count(), 2u);
  ASSERT_EQ(c().Delete("/fhir/t1/Subscription/" + id).status, 204);
}

TEST_F(SubscriptionTest, AReceiverThatIsDownForAWhileGetsEveryNotificationOnceBackInOrder) {
  auto receiver = std::make_unique<Receiver>();
  const uint16_t port = receiver->port();
  const std::string url = receiver->Url("/down/");
  receiver->Stop();  // the port is closed now
  // With the payload, each request names its resource: the order shows.
  const std::string id =
      CreateActive(c(), "t1", SubscriptionJson(kCriteria, "rest-hook", url, "application/fhir+json"));
  ASSERT_FALSE(id.empty());
  const int64_t failed_before = subs().stats().failed;
  std::vector<std::string> written;
  for (int i = 0; i < 8; ++i) {
    written.push_back("/down/Observation/" + CreateObservation("t1", "1234-5"));
    // Some are queued while the first waits for its retry.
    if (i == 3) {
      ASSERT_TRUE(WaitFor([&] { return subs().stats().failed >= failed_before + 1; }));
    }
  }
  // Deliveries fail for a while (several rounds of backoff)...
  ASSERT_TRUE(WaitFor([&] { return subs().stats().failed >= failed_before + 4; }));
  EXPECT_EQ(Status(c(), "t1", id), "active");
  // ... and all arrive, once each and in the order written, when the
  // receiver is back.
  Receiver back(port);
  ASSERT_TRUE(WaitFor([&] { return back.Count() >= written.size(); })) << back.Count();
  std::this_thread::sleep_for(milliseconds(300));
  std::vector<std::string> got;
  for (const Received& r : back.Requests()) got.push_back(r.target);
  EXPECT_EQ(got, written);
  EXPECT_EQ(Status(c(), "t1", id), "active");
  ASSERT_EQ(c().Delete("/fhir/t1/Subscription/" + id).status, 204);
}

TEST_F(SubscriptionTest, StatusOffStopsDeliveryAndRequestedStartsItAgain) {
  Receiver receiver;
  const std::string off = CreateActive(c(), "t1", SubscriptionJson(kCriteria, "rest-hook", receiver.Url("/off")));
  const std::string on = CreateActive(c(), "t1", SubscriptionJson(kCriteria, "rest-hook", receiver.Url("/on")));
  ASSERT_FALSE(off.empty());
  ASSERT_FALSE(on.empty());
  auto current = c().Get("/fhir/t1/Subscription/" + off).Json().as_object();
  current["status"] = "off";
  ASSERT_EQ(c().Put("/fhir/t1/Subscription/" + off, json::serialize(current)).status, 200);
  ASSERT_TRUE(WaitFor([&] {
    auto s = subs().Find("t1", off);
    return s && s->status == "off";
  }));
  CreateObservation("t1", "1234-5");
  ASSERT_TRUE(WaitFor([&] { return receiver.CountAt("/on") >= 1; }));
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(receiver.CountAt("/off"), 0u);
  EXPECT_EQ(Status(c(), "t1", off), "off");  // the server leaves it so

  // The client asks for it again: the server activates it and delivers.
  current = c().Get("/fhir/t1/Subscription/" + off).Json().as_object();
  current["status"] = "requested";
  ASSERT_EQ(c().Put("/fhir/t1/Subscription/" + off, json::serialize(current)).status, 200);
  ASSERT_TRUE(WaitFor([&] { return Status(c(), "t1", off) == "active"; }));
  CreateObservation("t1", "1234-5");
  ASSERT_TRUE(WaitFor([&] { return receiver.CountAt("/off") >= 1; }));
  ASSERT_EQ(c().Delete("/fhir/t1/Subscription/" + off).status, 204);
  ASSERT_EQ(c().Delete("/fhir/t1/Subscription/" + on).status, 204);
}

TEST_F(SubscriptionTest, WebsocketBindBoundPingWithinTheTenantOnly) {
  const std::string id = CreateActive(c(), "t1", SubscriptionJson(kCriteria, "websocket", ""));
  const std::string other = CreateActive(c(), "t2", SubscriptionJson(kCriteria, "websocket", ""));
  ASSERT_FALSE(id.empty());
  ASSERT_FALSE(other.empty());

  // The CapabilityStatement says where to connect.
  const boost::json::value caps = c().Get("/fhir/t1/metadata").Json();
  const boost::json::value& ext = caps.at("rest").as_array()[0].at("extension").as_array()[0];
  EXPECT_EQ(ext.at("url").as_string(), "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket");
  EXPECT_EQ(ext.at("valueUri").as_string(),
            core::StrCat("ws://127.0.0.1:", server_->port(), "/fhir/t1/$subscription-websocket"));

  asio::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()));
  beast::websocket::stream<tcp::socket> ws(std::move(socket));
  ws.handshake("127.0.0.1", "/fhir/t1/$subscription-websocket");
  // Reads one message, or "" after 20 s (the socket is shut down to end
  // the blocked read).
  auto read = [&]() -> std::string {
    auto message = std::async(std::launch::async, [&] {
      beast::flat_buffer buffer;
      beast::error_code ec;
      ws.read(buffer, ec);
      return ec ? std::string() : beast::buffers_to_string(buffer.data());
    });
    if (message.wait_for(seconds(20)) != std::future_status::ready) {
      ::shutdown(ws.next_layer().native_handle(), SHUT_RDWR);
    }
    return message.get();
  };
  ws.text(true);
  // t2's subscription cannot be bound under t1's base.
  ws.write(asio::buffer(core::StrCat("bind ", other)));
  EXPECT_EQ(read().rfind(core::StrCat("error ", other), 0), 0u);
  ws.write(asio::buffer(core::StrCat("bind ", id)));
  ASSERT_EQ(read(), core::StrCat("bound ", id));
  EXPECT_EQ(subs().websocket().Bound("t1", id), 1);
  EXPECT_EQ(subs().websocket().Bound("t2", other), 0);

  CreateObservation("t2", "1234-5");  // t2's subscription has no connection: its ping never comes here
  CreateObservation("t1", "9999-9");  // no match
  CreateObservation("t1", "1234-5");
  EXPECT_EQ(read(), core::StrCat("ping ", id));
  CreateObservation("t1", "1234-5");
  EXPECT_EQ(read(), core::StrCat("ping ", id));
  beast::error_code ec;
  ws.close(beast::websocket::close_code::normal, ec);
  ASSERT_EQ(c().Delete("/fhir/t1/Subscription/" + id).status, 204);
  ASSERT_EQ(c().Delete("/fhir/t2/Subscription/" + other).status, 204);
}

TEST_F(SubscriptionTest, UnusableSubscriptionsAreRefusedWith400) {
  const std::string hook = "http://127.0.0.1:9/x";
  struct Case {
    std::string body;
    std::string why;
  };
  const std::vector<Case> cases = {
      {SubscriptionJson(kCriteria, "email", "mailto:a@b.c"), "channel.type"},
      {SubscriptionJson(kCriteria, "rest-hook", ""), "channel.endpoint"},
      {SubscriptionJson(kCriteria, "rest-hook", "ftp://example.org/hook"), "channel.endpoint"},
      {SubscriptionJson("Observation?no-such-param=1", "rest-hook", hook), "criteria"},
      {SubscriptionJson("NoSuchType?code=1", "rest-hook", hook), "criteria"},
      {SubscriptionJson("Observation/1", "rest-hook", hook), "criteria"},
      {SubscriptionJson(kCriteria, "rest-hook", hook, "text/plain"), "payload"},
      {SubscriptionJson(kCriteria, "rest-hook", hook, "", "no colon"), "header"},
  };
  for (const Case& k : cases) {
    auto res = c().Post("/fhir/t1/Subscription", k.body);
    EXPECT_EQ(res.status, 400) << k.body << " " << res.body;
    EXPECT_EQ(Str(res.Json().at("resourceType")), "OperationOutcome");
    EXPECT_NE(res.Diagnostics().find(k.why), std::string::npos) << res.Diagnostics();
  }
  // PUT is checked the same way.
  auto res = c().Put("/fhir/t1/Subscription/bad1",
                     R"({"resourceType":"Subscription","id":"bad1","status":"requested","reason":"r",)"
                     R"("criteria":"Observation","channel":{"type":"sms"}})");
  EXPECT_EQ(res.status, 400) << res.body;
}

// Its own server: a small failure limit.
TEST(SubscriptionErrorTest, RepeatedFailuresSetStatusErrorAndStopDelivery) {
  app::AppConfig config = TestServer::BaseConfig("subs_err");
  config.subscriptions.initial_backoff = milliseconds(10);
  config.subscriptions.max_backoff = milliseconds(40);
  config.subscriptions.max_failures = 3;
  config.subscriptions.poll_interval = milliseconds(50);
  TestServer server("subs_err", {"t1"}, config);
  HttpClient& c = server.client();
  uint16_t port = 0;
  {
    Receiver closed;
    port = closed.port();
  }
  const std::string id = SubscriptionTest::CreateActiveFor(
      c, "t1", SubscriptionJson(kCriteria, "rest-hook", core::StrCat("http://127.0.0.1:", port, "/gone")));
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(c.Post("/fhir/t1/Observation", Observation("1234-5")).status, 201);
  ASSERT_EQ(c.Post("/fhir/t1/Observation", Observation("1234-5")).status, 201);
  ASSERT_TRUE(WaitFor([&] { return SubscriptionTest::StatusFor(c, "t1", id) == "error"; }));
  auto sub = c.Get("/fhir/t1/Subscription/" + id).Json();
  EXPECT_NE(Str(sub.at("error")).find("3 times"), std::string::npos) << Str(sub.at("error"));
  subscriptions::SubscriptionService& subs = server.app().subscriptions();
  // Only the first notification is tried: the second waits behind it (in
  // the same claim or, queued later, unclaimed while the first waits for its
  // retry), and is dropped with it.
  const int64_t failed = subs.stats().failed;
  EXPECT_EQ(failed, 3);
  // The counter follows the status change.
  EXPECT_TRUE(WaitFor([&] { return subs.stats().errored == 1; }));
  // In error nothing is tried: even with the receiver back.
  Receiver back(port);
  ASSERT_EQ(c.Post("/fhir/t1/Observation", Observation("1234-5")).status, 201);
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(back.Count(), 0u);
  EXPECT_EQ(subs.stats().failed, failed);
  EXPECT_EQ(SubscriptionTest::StatusFor(c, "t1", id), "error");
}

}  // namespace
}  // namespace medgrid::testing
