// The pure parts of Subscriptions: the delivery backoff, the Subscription
// resource checks and the rest-hook endpoint parser; and that an https
// rest-hook speaks TLS (a loopback socket that answers in plain HTTP).
#include <thread>

#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/write.hpp"
#include "gtest/gtest.h"
#include "medgrid/fhir/json.h"
#include "medgrid/fhir/subscription.h"
#include "medgrid/subscriptions/rest_hook.h"
#include "medgrid/subscriptions/service.h"

namespace medgrid::subscriptions {
namespace {

using std::chrono::milliseconds;

TEST(DeliveryBackoffTest, DoublesFromTheInitialPauseUpToTheCap) {
  SubscriptionConfig c;  // 1 s doubling to 5 min
  EXPECT_EQ(DeliveryBackoff(1, c), milliseconds(1000));
  EXPECT_EQ(DeliveryBackoff(2, c), milliseconds(2000));
  EXPECT_EQ(DeliveryBackoff(3, c), milliseconds(4000));
  EXPECT_EQ(DeliveryBackoff(9, c), milliseconds(256000));
  EXPECT_EQ(DeliveryBackoff(10, c), milliseconds(300000));
  EXPECT_EQ(DeliveryBackoff(1000000, c), milliseconds(300000));
  c.initial_backoff = milliseconds(20);
  c.max_backoff = milliseconds(50);
  EXPECT_EQ(DeliveryBackoff(2, c), milliseconds(40));
  EXPECT_EQ(DeliveryBackoff(3, c), milliseconds(50));
}

absl::StatusOr<fhir::SubscriptionSpec> Parse(const std::string& text) {
  absl::StatusOr<boost::json::value> v = fhir::ParseJson(text);
  if (!v.ok()) return v.status();
  return fhir::ParseSubscription(*v);
}

TEST(ParseSubscriptionTest, ReadsCriteriaChannelAndHeaders) {
  auto s = Parse(R"({"resourceType":"Subscription","id":"s1","meta":{"versionId":"3"},"status":"active",
    "reason":"r","criteria":"Observation?code=http://loinc.org%7C1234-5&status=final",
    "channel":{"type":"rest-hook","endpoint":"http://hooks.example:8081/in?x=1","payload":"application/fhir+json",
    "header":["Authorization: Bearer abc"]}})");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->version, 3);
  EXPECT_EQ(s->criteria_type, "Observation");
  ASSERT_EQ(s->criteria_params.size(), 2u);
  EXPECT_EQ(s->criteria_params[0].second, "http://loinc.org|1234-5");
  EXPECT_EQ(s->endpoint.host, "hooks.example");
  EXPECT_EQ(s->endpoint.port, 8081);
  EXPECT_EQ(s->endpoint.target, "/in?x=1");
  ASSERT_EQ(s->headers.size(), 1u);
  EXPECT_EQ(s->headers[0].first, "Authorization");
  EXPECT_EQ(s->headers[0].second, "Bearer abc");
}

TEST(ParseSubscriptionTest, RefusesWhatCannotBeDelivered) {
  const std::string head = R"({"resourceType":"Subscription","status":"requested","reason":"r",)";
  for (const std::string& tail : {
           std::string(R"("criteria":"Observation","channel":{"type":"email","endpoint":"mailto:a@b"}})"),
           std::string(R"("criteria":"Observation","channel":{"type":"rest-hook"}})"),
           std::string(R"("criteria":"Observation","channel":{"type":"rest-hook","endpoint":"ftp://a/b"}})"),
           std::string(R"("criteria":"Observation/1","channel":{"type":"websocket"}})"),
           std::string(R"("criteria":"?code=1","channel":{"type":"websocket"}})"),
           std::string(R"("criteria":"Observation","channel":{"type":"websocket","header":["x\r\ny: 1"]}})"),
       }) {
    EXPECT_EQ(Parse(head + tail).status().code(), absl::StatusCode::kInvalidArgument) << tail;
  }
}

TEST(ParseHttpEndpointTest, SplitsHostPortAndTarget) {
  auto e = fhir::ParseHttpEndpoint("http://127.0.0.1:9000");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "127.0.0.1");
  EXPECT_EQ(e->port, 9000);
  EXPECT_EQ(e->target, "/");
  e = fhir::ParseHttpEndpoint("http://[::1]/a#frag");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->port, 80);
  EXPECT_EQ(e->target, "/a");
  e = fhir::ParseHttpEndpoint("https://hooks.example.org/in");
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->tls);
  EXPECT_EQ(e->port, 443);
  EXPECT_EQ(e->target, "/in");
  e = fhir::ParseHttpEndpoint("https://hooks.example.org:8443");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->port, 8443);
  EXPECT_FALSE(fhir::ParseHttpEndpoint("http://u:p@host/").ok());
  EXPECT_FALSE(fhir::ParseHttpEndpoint("http://host:99999/").ok());
  EXPECT_FALSE(fhir::ParseHttpEndpoint("http:///x").ok());
}

TEST(RestHookTest, HttpsEndpointsSpeakTls) {
  // A receiver that answers every connection with plain "200 OK": a client
  // that skipped TLS would take it as delivered.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  const uint16_t port = acceptor.local_endpoint().port();
  std::thread receiver([&] {
    for (int i = 0; i < 2; ++i) {
      boost::asio::ip::tcp::socket socket(io);
      acceptor.accept(socket);
      boost::system::error_code ec;
      boost::asio::write(socket, boost::asio::buffer(std::string("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")), ec);
    }
  });
  RestHookRequest request;
  auto endpoint = fhir::ParseHttpEndpoint("http://127.0.0.1:" + std::to_string(port) + "/hook");
  ASSERT_TRUE(endpoint.ok());
  request.endpoint = *endpoint;
  EXPECT_TRUE(SendRestHook(request, {}).ok());  // plain http: delivered
  request.endpoint.tls = true;
  absl::Status tls = SendRestHook(request, {});
  receiver.join();
  EXPECT_EQ(tls.code(), absl::StatusCode::kUnavailable) << tls;
  EXPECT_NE(tls.message().find("tls handshake"), std::string_view::npos) << tls;
}

}  // namespace
}  // namespace medgrid::subscriptions
