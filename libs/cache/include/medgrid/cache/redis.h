// Redis client on hiredis: a pool of blocking connections for commands,
// pipelines and Lua scripts, and a subscriber that keeps one pub/sub
// connection alive on its own thread. The shared (L2) cache and the
// cross-instance invalidation channel sit on these.
//
//   ASSIGN_OR_RETURN(cache::RedisConfig config, cache::ParseRedisAddress("10.0.0.5:6379"));
//   cache::RedisClient redis(config);
//   RETURN_IF_ERROR(redis.SetEx(key, body, std::chrono::seconds(60)));
//   ASSIGN_OR_RETURN(std::optional<std::string> hit, redis.Get(key));
//
//   cache::RedisSubscriber invalidations(
//       config, {"medgrid:invalidate"},
//       [&](const std::string& channel, const std::string& key) { l1.Invalidate(key); },
//       [&] { l1.InvalidateTenant(tenant); });  // messages may have been missed while down
//
// Failures (refused, timed out, dropped, protocol error, pool exhausted) are
// absl::Unavailable. Their messages name the server, the command name and the
// cause, never keys, values or script arguments; nothing here logs values.
// Keys should hold ids only.
//
// Timeouts are real socket timeouts on the steady clock (this is the I/O edge,
// so no core::Clock): a call waits at most connect_timeout for a connection
// (a free pooled one or a new one) and then at most command_timeout for its
// round trip, after which the connection is discarded.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "medgrid/cache/string_map.h"

namespace medgrid::cache {

struct RedisConfig {
  // Server host name or IP literal (IPv6 without brackets).
  std::string host = "127.0.0.1";
  int port = 6379;
  // Most connections RedisClient keeps open at once; at least 1.
  int pool_size = 8;
  // Bound on waiting for a connection: a free pooled one or a new TCP
  // connect, together. Positive.
  std::chrono::milliseconds connect_timeout{200};
  // Bound on one command's or one pipeline's round trip (redisSetTimeout on
  // the socket, shortened towards the call's deadline). Positive.
  std::chrono::milliseconds command_timeout{100};
};

// "127.0.0.1:6379", "redis.internal:6379" or "[::1]:6379" into a config with
// that host and port and the other fields at their defaults.
// InvalidArgument for a missing host or port, a port outside 1..65535, or an
// IPv6 literal without brackets.
absl::StatusOr<RedisConfig> ParseRedisAddress(std::string_view host_port);

// OK, or InvalidArgument naming the first field out of range.
absl::Status ValidateRedisConfig(const RedisConfig& config);

// One reply, converted from hiredis (RESP2). `str` holds kString (binary-safe),
// kStatus and kError text; `integer` holds kInteger; `elements` holds kArray.
struct RedisReply {
  enum class Type { kNil, kString, kInteger, kArray, kStatus, kError };
  Type type = Type::kNil;
  std::string str;
  int64_t integer = 0;
  std::vector<RedisReply> elements;

  bool is_error() const { return type == Type::kError; }
};

struct RedisClientStats {
  uint64_t connects = 0;          // connections opened
  uint64_t connect_failures = 0;  // connects that failed or timed out
  uint64_t discarded = 0;         // connections closed after an I/O or protocol error
  uint64_t pool_timeouts = 0;     // calls that found every connection busy for connect_timeout
  uint64_t script_loads = 0;      // SCRIPT LOADs sent by Eval
};

// Thread-safe. Connections are made lazily, on the first call that finds no
// free one, and reused; a connection that errors is discarded and a later call
// makes a new one, so the client recovers from a Redis restart by itself.
// At most config.pool_size connections are open; a caller that finds them all
// busy waits for one up to connect_timeout, then gets Unavailable
// "pool exhausted".
//
// A Redis error reply (-ERR ...) is a RedisReply of kError, not a failure,
// except in the typed helpers (Get, SetEx, Del, Incr, Publish), which turn it
// (or a reply of an unexpected type) into Internal.
class RedisClient {
 public:
  // Precondition: ValidateRedisConfig(config).ok(); out-of-range sizes and
  // timeouts are raised to their minimum (1 connection, 1 ms). Connects nothing.
  explicit RedisClient(RedisConfig config);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // One command, e.g. {"SET", key, value}. InvalidArgument for an empty argv.
  [[nodiscard]] absl::StatusOr<RedisReply> Command(const std::vector<std::string>& argv);
  // Sends all commands in one round trip on one connection and returns their
  // replies in order. A failure part-way fails the whole call (some commands
  // may have run). InvalidArgument if any argv is empty; no commands: no
  // replies and no round trip.
  [[nodiscard]] absl::StatusOr<std::vector<RedisReply>> Pipeline(const std::vector<std::vector<std::string>>& commands);

  // GET: the value, or nullopt when the key is absent.
  [[nodiscard]] absl::StatusOr<std::optional<std::string>> Get(const std::string& key);
  // SET key value EX ttl. InvalidArgument for ttl < 1 s.
  [[nodiscard]] absl::Status SetEx(const std::string& key, std::string_view value, std::chrono::seconds ttl);
  // DEL of every key in one command; no keys: nothing sent.
  [[nodiscard]] absl::Status Del(const std::vector<std::string>& keys);
  // INCR: the value after the increment.
  [[nodiscard]] absl::StatusOr<int64_t> Incr(const std::string& key);
  // PUBLISH; OK whether or not anyone was subscribed.
  [[nodiscard]] absl::Status Publish(const std::string& channel, std::string_view message);

  // Runs a Lua script with EVALSHA. The sha of each script text is cached here
  // (scripts should be constants: the cache never shrinks); the first run of a
  // text loads it with SCRIPT LOAD, and a NOSCRIPT reply (after SCRIPT FLUSH or
  // a server restart) reloads it and retries once, in one more round trip on
  // the same connection. An error raised by the script, or a script that does
  // not compile, is a kError reply.
  [[nodiscard]] absl::StatusOr<RedisReply> Eval(const std::string& script, const std::vector<std::string>& keys,
                                                const std::vector<std::string>& args);

  const RedisConfig& config() const { return config_; }
  RedisClientStats Stats() const;

 private:
  class Connection;  // a redisContext in its RAII holder; src/redis.cc

  // A free connection, or a new one when fewer than pool_size are open.
  absl::StatusOr<std::unique_ptr<Connection>> Acquire(std::string_view command);
  // Returns `conn` to the pool, or closes it if it failed.
  void Release(std::unique_ptr<Connection> conn);
  // Acquire, one round trip of `commands`, Release.
  absl::StatusOr<std::vector<RedisReply>> RoundTrip(std::span<const std::vector<std::string>> commands);
  // The helpers' Redis error reply or unexpected type as Internal.
  absl::Status Unexpected(std::string_view command, const RedisReply& reply) const;

  const RedisConfig config_;

  std::mutex mu_;
  std::condition_variable released_;  // signalled when a connection is returned or closed
  std::vector<std::unique_ptr<Connection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // idle plus lent out, plus connects in progress

  std::mutex scripts_mu_;
  StringMap<std::string, std::string> script_shas_ ABSL_GUARDED_BY(scripts_mu_);  // script text -> sha1

  std::atomic<uint64_t> connects_{0};
  std::atomic<uint64_t> connect_failures_{0};
  std::atomic<uint64_t> discarded_{0};
  std::atomic<uint64_t> pool_timeouts_{0};
  std::atomic<uint64_t> script_loads_{0};
};

// A pub/sub subscription on its own connection and thread. When the connection
// cannot be made or drops, it reconnects with backoff (100 ms doubling to 5 s,
// back to 100 ms once subscribed) and, once SUBSCRIBE is confirmed again,
// calls on_reconnect: the owner should drop whatever it could have missed
// invalidations for. on_reconnect is also called when the very first attempt
// failed and a later one succeeds; it is not called after a first attempt that
// succeeds.
//
// Both callbacks run on the subscriber's thread, one at a time; they must not
// block for long, throw, or destroy the subscriber. Messages published after
// connected() turned true (or after on_reconnect returned) are delivered;
// ones published while disconnected are lost.
class RedisSubscriber {
 public:
  // Starts the thread; connects in the background. `channels` must not be
  // empty (with none, no thread is started).
  RedisSubscriber(RedisConfig config, std::vector<std::string> channels,
                  std::function<void(const std::string& channel, const std::string& message)> on_message,
                  std::function<void()> on_reconnect = nullptr);
  // Stop().
  ~RedisSubscriber();
  RedisSubscriber(const RedisSubscriber&) = delete;
  RedisSubscriber& operator=(const RedisSubscriber&) = delete;

  // Stops the thread and closes the connection. Returns within about
  // connect_timeout (a connect in progress is not interrupted); no callback
  // runs after it returns. Idempotent; not from inside a callback.
  void Stop();

  // True while subscribed to every channel. Thread-safe.
  bool connected() const { return connected_.load(std::memory_order_acquire); }

 private:
  void Run(std::stop_token stop);
  // One connection's life: connect, subscribe, deliver until it drops or
  // `stop`. True if the subscription was confirmed.
  bool Session(std::stop_token stop, bool resync);

  const RedisConfig config_;
  const std::vector<std::string> channels_;
  const std::function<void(const std::string&, const std::string&)> on_message_;
  const std::function<void()> on_reconnect_;
  std::atomic<bool> connected_{false};
  std::jthread thread_;  // last: starts after, and stops before, the members it uses
};

}  // namespace medgrid::cache
