// The websocket channel (subscription.html#2.46.7.2): clients connect to
// ws://host/fhir/{tenant}/$subscription-websocket, send "bind <id>" for a
// websocket Subscription of that tenant and get "bound <id>" back (or
// "error <id> <reason>"); each notification of the subscription is then
// "ping <id>" on every connection bound to it.
//
//   WebsocketHub hub([&](const std::string& tenant, const std::string& id) { return IsWebsocketSub(tenant, id); });
//   server.SetUpgradeHandler([&](auto& req, auto& peer, auto& socket) { return hub.TakeUpgrade(req, peer, socket); });
//   bool delivered = hub.Ping("t1", "sub-1");
//   hub.Stop();  // before the HTTP server stops
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "medgrid/http/server.h"

namespace medgrid::subscriptions {

class WebsocketSession;

class WebsocketHub {
 public:
  // Whether `tenant` has a websocket Subscription `id` that may be bound
  // now. Called on I/O threads; must not block.
  using CanBind = std::function<bool(const std::string& tenant, const std::string& id)>;
  // `send_timeout`: how long Ping waits for its writes.
  WebsocketHub(CanBind can_bind, std::chrono::milliseconds send_timeout);
  ~WebsocketHub();
  WebsocketHub(const WebsocketHub&) = delete;
  WebsocketHub& operator=(const WebsocketHub&) = delete;

  // The http::Server upgrade handler: takes upgrades of
  // /fhir/{tenant}/$subscription-websocket (any query), and no other.
  bool TakeUpgrade(http::Request& request, const http::Peer& peer, boost::asio::ip::tcp::socket& socket);
  // Writes "ping <id>" to every connection of `tenant` bound to `id`. True
  // when at least one write completed within the send timeout; false when
  // none is bound (the notification stays queued). Blocking; thread-safe.
  bool Ping(const std::string& tenant, const std::string& id);
  // Connections bound to the subscription now.
  int Bound(const std::string& tenant, const std::string& id);
  // Refuses pings from now on. Call before the HTTP server's I/O threads
  // stop (they own the connections). Idempotent.
  void Stop();

  // For the connections (websocket.cc).
  bool CanBindNow(const std::string& tenant, const std::string& id) const { return can_bind_(tenant, id); }
  void Bind(const std::string& tenant, const std::string& id, const std::shared_ptr<WebsocketSession>& session);
  void Forget(const WebsocketSession* session);

 private:
  using Key = std::pair<std::string, std::string>;  // tenant, subscription id
  // The session's address (to find it without locking the reference) and a
  // reference that does not keep it alive.
  using Binding = std::pair<const WebsocketSession*, std::weak_ptr<WebsocketSession>>;
  const CanBind can_bind_;
  const std::chrono::milliseconds send_timeout_;
  std::mutex mu_;
  std::map<Key, std::vector<Binding>> bound_;  // guarded by mu_
  bool stopped_ = false;                     // guarded by mu_
};

}  // namespace medgrid::subscriptions
