// Invariants:
// - A redisContext lives only inside a ContextPtr; a Connection is either idle
//   in RedisClient::idle_ or owned by exactly one caller, never both.
// - open_ counts idle plus lent-out connections plus connects in progress, so
//   it never exceeds pool_size; every path that gives up a slot decrements it
//   and signals released_.
// - A connection goes back to idle_ only with no error and no unread reply;
//   anything else (timeout, EOF, protocol error) closes it, since its stream
//   position is unknown.
// - hiredis 0.14 writes with write(2), which raises SIGPIPE on a socket the
//   server closed; we flush its output buffer ourselves with SIGPIPE blocked
//   for this thread (the libpq technique), so the process never dies of it and
//   no process-wide signal setting is touched.
#include "medgrid/cache/redis.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <ctime>
#include <span>
#include <utility>

#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::cache {
namespace {

using SteadyTime = std::chrono::steady_clock::time_point;

constexpr std::chrono::milliseconds kInitialBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{5000};
// How often the subscriber's read loop looks at its stop flag.
constexpr int kStopPollMs = 50;
constexpr std::string_view kTimedOut = "timed out";
// Longest command name quoted in an error message.
constexpr size_t kMaxNameInMessage = 32;

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

struct ReplyDeleter {
  void operator()(void* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

RedisConfig Normalized(RedisConfig config) {
  config.pool_size = std::max(config.pool_size, 1);
  config.connect_timeout = std::max(config.connect_timeout, std::chrono::milliseconds(1));
  config.command_timeout = std::max(config.command_timeout, std::chrono::milliseconds(1));
  return config;
}

std::string ServerLabel(const RedisConfig& config) {
  const bool ipv6 = config.host.find(':') != std::string::npos;
  return ipv6 ? core::StrCat("[", config.host, "]:", config.port) : core::StrCat(config.host, ":", config.port);
}

timeval ToTimeval(std::chrono::microseconds d) {
  d = std::max(d, std::chrono::microseconds(1000));
  return timeval{static_cast<time_t>(d.count() / 1000000), static_cast<suseconds_t>(d.count() % 1000000)};
}

// The command's name as it may appear in a message: argv[0], cut short and
// reduced to letters, digits and spaces, so no caller data leaks through it.
std::string CommandName(std::span<const std::vector<std::string>> commands) {
  if (commands.size() != 1) return core::StrCat("pipeline of ", commands.size());
  std::string name = commands.front().front().substr(0, kMaxNameInMessage);
  for (char& ch : name) {
    const bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == ' ';
    if (!plain) ch = '?';
  }
  return name;
}

absl::Status Unavailable(std::string_view server, std::string_view command, std::string_view cause) {
  return absl::UnavailableError(core::StrCat("redis ", server, ": ", command, ": ", cause));
}

// Why `c` failed, without anything the server sent: a protocol error's errstr
// quotes reply bytes. `saved_errno` is errno right after the failing call.
std::string Cause(const redisContext& c, int saved_errno) {
  switch (c.err) {
    case REDIS_ERR_IO:
      if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK) return std::string(kTimedOut);
      return c.errstr;
    case REDIS_ERR_EOF:
      return "connection closed by server";
    case REDIS_ERR_PROTOCOL:
      return "protocol error";
    case REDIS_ERR_OOM:
      return "out of memory";
    default:
      return c.errstr[0] != '\0' ? c.errstr : "unknown error";
  }
}

RedisReply ToReply(const redisReply& r) {
  RedisReply out;
  switch (r.type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::kError;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r.integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(r.elements);
      for (size_t i = 0; i < r.elements; ++i) out.elements.push_back(ToReply(*r.element[i]));
      break;
    default:
      break;
  }
  return out;
}

// Blocks SIGPIPE for this thread while alive; on exit discards a SIGPIPE that
// was raised meanwhile and restores the mask.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask_);
    already_blocked_ = sigismember(&old_mask_, SIGPIPE) == 1;
    if (!already_blocked_) pending_before_ = SigpipePending();
  }
  ~SigpipeGuard() {
    if (already_blocked_) return;
    if (!pending_before_ && SigpipePending()) {
      sigset_t pipe_set;
      sigemptyset(&pipe_set);
      sigaddset(&pipe_set, SIGPIPE);
      const timespec zero{};
      const int saved_errno = errno;
      while (sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
      }
      errno = saved_errno;
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  static bool SigpipePending() {
    sigset_t pending;
    sigemptyset(&pending);
    return sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
  }

  sigset_t old_mask_;
  bool already_blocked_ = false;
  bool pending_before_ = false;
};

// A blocking connection with `config.command_timeout` on its socket, or
// Unavailable naming `command`, the call that needed it. Waits at most
// `timeout` for the TCP connect.
absl::StatusOr<ContextPtr> Connect(const RedisConfig& config, std::chrono::microseconds timeout,
                                   std::string_view command) {
  const std::string server = ServerLabel(config);
  ContextPtr ctx(redisConnectWithTimeout(config.host.c_str(), config.port, ToTimeval(timeout)));
  if (ctx == nullptr) return Unavailable(server, command, "connect: out of memory");
  if (ctx->err != 0) return Unavailable(server, command, core::StrCat("connect: ", ctx->errstr));
  if (redisSetTimeout(ctx.get(), ToTimeval(config.command_timeout)) != REDIS_OK ||
      redisEnableKeepAlive(ctx.get()) != REDIS_OK) {
    return Unavailable(server, command, core::StrCat("connect: ", Cause(*ctx, errno)));
  }
  return ctx;
}

// Queues `argv` in the context's output buffer (no I/O).
bool Append(redisContext* c, const std::vector<std::string>& argv) {
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (const std::string& arg : argv) {
    ptrs.push_back(arg.data());
    lens.push_back(arg.size());
  }
  return redisAppendCommandArgv(c, static_cast<int>(argv.size()), ptrs.data(), lens.data()) == REDIS_OK;
}

bool IsNoScript(const RedisReply& reply) { return reply.is_error() && reply.str.starts_with("NOSCRIPT"); }

std::vector<std::string> EvalShaArgv(const std::string& sha, const std::vector<std::string>& keys,
                                     const std::vector<std::string>& args) {
  std::vector<std::string> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("EVALSHA");
  argv.push_back(sha);
  argv.push_back(std::to_string(keys.size()));
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

}  // namespace

// ---------------------------------------------------------------------------
// Configuration

absl::StatusOr<RedisConfig> ParseRedisAddress(std::string_view host_port) {
  const auto invalid = [&](std::string_view why) {
    return absl::InvalidArgumentError(core::StrCat("redis address \"", host_port, "\": ", why));
  };
  std::string_view host;
  std::string_view port;
  if (host_port.starts_with('[')) {
    const size_t close = host_port.find(']');
    if (close == std::string_view::npos) return invalid("unclosed '['");
    host = host_port.substr(1, close - 1);
    const std::string_view rest = host_port.substr(close + 1);
    if (!rest.starts_with(':')) return invalid("expected host:port");
    port = rest.substr(1);
  } else {
    const size_t colon = host_port.rfind(':');
    if (colon == std::string_view::npos) return invalid("expected host:port");
    host = host_port.substr(0, colon);
    port = host_port.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return invalid("an IPv6 address needs brackets: [addr]:port");
  }
  if (host.empty()) return invalid("empty host");
  int port_number = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), port_number);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || port_number < 1 || port_number > 65535) {
    return invalid("port must be a number in 1..65535");
  }
  RedisConfig config;
  config.host = std::string(host);
  config.port = port_number;
  return config;
}

absl::Status ValidateRedisConfig(const RedisConfig& config) {
  if (config.host.empty()) return absl::InvalidArgumentError("redis host is empty");
  if (config.port < 1 || config.port > 65535) return absl::InvalidArgumentError("redis port must be in 1..65535");
  if (config.pool_size < 1) return absl::InvalidArgumentError("redis pool_size must be at least 1");
  if (config.connect_timeout.count() <= 0) return absl::InvalidArgumentError("redis connect_timeout must be > 0");
  if (config.command_timeout.count() <= 0) return absl::InvalidArgumentError("redis command_timeout must be > 0");
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// RedisClient::Connection

class RedisClient::Connection {
 public:
  Connection(ContextPtr ctx, std::chrono::milliseconds command_timeout, std::string server)
      : ctx_(std::move(ctx)), command_timeout_(command_timeout), server_(std::move(server)) {}

  bool broken() const { return broken_ || ctx_->err != 0; }

  // False if the server closed the socket or sent something unasked while the
  // connection sat idle (a Redis restart does the former).
  bool LooksAlive() const {
    pollfd pfd{ctx_->fd, POLLIN, 0};
    return !broken() && poll(&pfd, 1, 0) == 0;
  }

  // Writes every command, then reads one reply for each, all within
  // command_timeout. Any failure breaks the connection.
  absl::StatusOr<std::vector<RedisReply>> RoundTrip(std::span<const std::vector<std::string>> commands) {
    const SteadyTime deadline = std::chrono::steady_clock::now() + command_timeout_;
    if (timeout_shortened_) {
      if (redisSetTimeout(ctx_.get(), ToTimeval(command_timeout_)) != REDIS_OK) return Fail(commands, errno);
      timeout_shortened_ = false;
    }
    for (const auto& argv : commands) {
      if (!Append(ctx_.get(), argv)) return Fail(commands, errno);
    }
    {
      SigpipeGuard guard;
      int done = 0;
      while (done == 0) {
        RETURN_IF_ERROR(Arm(commands, deadline));
        if (redisBufferWrite(ctx_.get(), &done) != REDIS_OK) return Fail(commands, errno);
      }
    }
    std::vector<RedisReply> replies;
    replies.reserve(commands.size());
    for (size_t i = 0; i < commands.size(); ++i) {
      void* raw = nullptr;
      while (true) {
        if (redisGetReplyFromReader(ctx_.get(), &raw) != REDIS_OK) return Fail(commands, errno);
        if (raw != nullptr) break;
        RETURN_IF_ERROR(Arm(commands, deadline));
        if (redisBufferRead(ctx_.get()) != REDIS_OK) return Fail(commands, errno);
      }
      ReplyPtr reply(static_cast<redisReply*>(raw));
      replies.push_back(ToReply(*reply));
    }
    return replies;
  }

 private:
  // Before a blocking read or write: fails past the deadline, and shortens the
  // socket timeout once the remaining time is clearly below command_timeout,
  // so one call cannot wait much longer than command_timeout in total.
  absl::Status Arm(std::span<const std::vector<std::string>> commands, SteadyTime deadline) {
    const auto remaining =
        std::chrono::duration_cast<std::chrono::microseconds>(deadline - std::chrono::steady_clock::now());
    if (remaining.count() <= 0) {
      broken_ = true;
      return Unavailable(server_, CommandName(commands), TimedOut());
    }
    if (remaining < command_timeout_ * 9 / 10) {
      if (redisSetTimeout(ctx_.get(), ToTimeval(remaining)) != REDIS_OK) return Fail(commands, errno);
      timeout_shortened_ = true;
    }
    return absl::OkStatus();
  }

  absl::Status Fail(std::span<const std::vector<std::string>> commands, int saved_errno) {
    broken_ = true;
    const std::string cause = Cause(*ctx_, saved_errno);
    return Unavailable(server_, CommandName(commands), cause == kTimedOut ? TimedOut() : cause);
  }

  std::string TimedOut() const {
    return core::StrCat(kTimedOut, " (command_timeout ", command_timeout_.count(), " ms)");
  }

  ContextPtr ctx_;
  const std::chrono::milliseconds command_timeout_;
  const std::string server_;
  bool timeout_shortened_ = false;
  bool broken_ = false;
};

// ---------------------------------------------------------------------------
// RedisClient

RedisClient::RedisClient(RedisConfig config) : config_(Normalized(std::move(config))) {}

RedisClient::~RedisClient() = default;

RedisClientStats RedisClient::Stats() const {
  RedisClientStats s;
  s.connects = connects_.load(std::memory_order_relaxed);
  s.connect_failures = connect_failures_.load(std::memory_order_relaxed);
  s.discarded = discarded_.load(std::memory_order_relaxed);
  s.pool_timeouts = pool_timeouts_.load(std::memory_order_relaxed);
  s.script_loads = script_loads_.load(std::memory_order_relaxed);
  return s;
}

absl::StatusOr<std::unique_ptr<RedisClient::Connection>> RedisClient::Acquire(std::string_view command) {
  const SteadyTime deadline = std::chrono::steady_clock::now() + config_.connect_timeout;
  while (true) {
    std::unique_ptr<Connection> conn;
    {
      std::unique_lock lock(mu_);
      const bool ready = released_.wait_until(
          lock, deadline, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return !idle_.empty() || open_ < config_.pool_size; });
      if (!ready) {
        pool_timeouts_.fetch_add(1, std::memory_order_relaxed);
        return Unavailable(ServerLabel(config_), command,
                           core::StrCat("pool exhausted (pool_size ", config_.pool_size, ", waited ",
                                        config_.connect_timeout.count(), " ms)"));
      }
      if (idle_.empty()) {
        ++open_;
      } else {
        conn = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (conn == nullptr) break;
    if (conn->LooksAlive()) return conn;
    // Dead while idle: close it and look again (the slot is free now).
    discarded_.fetch_add(1, std::memory_order_relaxed);
    conn.reset();
    {
      std::lock_guard lock(mu_);
      --open_;
    }
    released_.notify_one();
  }

  // We hold a slot (open_ was raised) and connect outside the lock.
  const auto remaining =
      std::chrono::duration_cast<std::chrono::microseconds>(deadline - std::chrono::steady_clock::now());
  absl::StatusOr<ContextPtr> ctx = Connect(config_, remaining, command);
  if (!ctx.ok()) {
    connect_failures_.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard lock(mu_);
      --open_;
    }
    released_.notify_one();
    return ctx.status();
  }
  connects_.fetch_add(1, std::memory_order_relaxed);
  return std::make_unique<Connection>(*std::move(ctx), config_.command_timeout, ServerLabel(config_));
}

void RedisClient::Release(std::unique_ptr<Connection> conn) {
  if (conn->broken()) {
    discarded_.fetch_add(1, std::memory_order_relaxed);
    conn.reset();
    std::lock_guard lock(mu_);
    --open_;
  } else {
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(conn));
  }
  released_.notify_one();
}

absl::StatusOr<std::vector<RedisReply>> RedisClient::RoundTrip(std::span<const std::vector<std::string>> commands) {
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, Acquire(CommandName(commands)));
  absl::StatusOr<std::vector<RedisReply>> replies = conn->RoundTrip(commands);
  Release(std::move(conn));
  return replies;
}

absl::StatusOr<RedisReply> RedisClient::Command(const std::vector<std::string>& argv) {
  if (argv.empty()) return absl::InvalidArgumentError("redis command is empty");
  ASSIGN_OR_RETURN(std::vector<RedisReply> replies, RoundTrip(std::span(&argv, 1)));
  return std::move(replies.front());
}

absl::StatusOr<std::vector<RedisReply>> RedisClient::Pipeline(const std::vector<std::vector<std::string>>& commands) {
  if (commands.empty()) return std::vector<RedisReply>{};
  for (const auto& argv : commands) {
    if (argv.empty()) return absl::InvalidArgumentError("redis pipeline holds an empty command");
  }
  return RoundTrip(commands);
}

absl::Status RedisClient::Unexpected(std::string_view command, const RedisReply& reply) const {
  if (reply.is_error()) {
    // Only the error code ("ERR", "WRONGTYPE"): the rest may quote arguments.
    const std::string_view code = std::string_view(reply.str).substr(0, reply.str.find(' '));
    return absl::InternalError(
        core::StrCat("redis ", ServerLabel(config_), ": ", command, ": error reply ", code.substr(0, 32)));
  }
  return absl::InternalError(core::StrCat("redis ", ServerLabel(config_), ": ", command, ": unexpected reply type ",
                                          static_cast<int>(reply.type)));
}

absl::StatusOr<std::optional<std::string>> RedisClient::Get(const std::string& key) {
  ASSIGN_OR_RETURN(RedisReply reply, Command({"GET", key}));
  if (reply.type == RedisReply::Type::kNil) return std::nullopt;
  if (reply.type != RedisReply::Type::kString) return Unexpected("GET", reply);
  return std::move(reply.str);
}

absl::Status RedisClient::SetEx(const std::string& key, std::string_view value, std::chrono::seconds ttl) {
  if (ttl.count() < 1) return absl::InvalidArgumentError("redis SetEx ttl must be at least 1 s");
  ASSIGN_OR_RETURN(RedisReply reply, Command({"SET", key, std::string(value), "EX", std::to_string(ttl.count())}));
  if (reply.type != RedisReply::Type::kStatus) return Unexpected("SET", reply);
  return absl::OkStatus();
}

absl::Status RedisClient::Del(const std::vector<std::string>& keys) {
  if (keys.empty()) return absl::OkStatus();
  std::vector<std::string> argv;
  argv.reserve(keys.size() + 1);
  argv.push_back("DEL");
  argv.insert(argv.end(), keys.begin(), keys.end());
  ASSIGN_OR_RETURN(RedisReply reply, Command(argv));
  if (reply.type != RedisReply::Type::kInteger) return Unexpected("DEL", reply);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> RedisClient::Incr(const std::string& key) {
  ASSIGN_OR_RETURN(RedisReply reply, Command({"INCR", key}));
  if (reply.type != RedisReply::Type::kInteger) return Unexpected("INCR", reply);
  return reply.integer;
}

absl::Status RedisClient::Publish(const std::string& channel, std::string_view message) {
  ASSIGN_OR_RETURN(RedisReply reply, Command({"PUBLISH", channel, std::string(message)}));
  if (reply.type != RedisReply::Type::kInteger) return Unexpected("PUBLISH", reply);
  return absl::OkStatus();
}

absl::StatusOr<RedisReply> RedisClient::Eval(const std::string& script, const std::vector<std::string>& keys,
                                             const std::vector<std::string>& args) {
  std::optional<std::string> sha;
  {
    std::lock_guard lock(scripts_mu_);
    if (auto it = script_shas_.find(script); it != script_shas_.end()) sha = it->second;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, Acquire("EVALSHA"));
  absl::StatusOr<RedisReply> result = [&]() -> absl::StatusOr<RedisReply> {
    const std::vector<std::string> load = {"SCRIPT", "LOAD", script};
    if (!sha.has_value()) {
      // First run of this text here: learn its sha from the server.
      script_loads_.fetch_add(1, std::memory_order_relaxed);
      ASSIGN_OR_RETURN(std::vector<RedisReply> loaded, conn->RoundTrip(std::span(&load, 1)));
      if (loaded.front().type != RedisReply::Type::kString) return std::move(loaded.front());
      sha = loaded.front().str;
      std::lock_guard lock(scripts_mu_);
      script_shas_.try_emplace(script, *sha);
    }
    const std::vector<std::string> evalsha = EvalShaArgv(*sha, keys, args);
    ASSIGN_OR_RETURN(std::vector<RedisReply> ran, conn->RoundTrip(std::span(&evalsha, 1)));
    if (!IsNoScript(ran.front())) return std::move(ran.front());
    // Flushed or restarted since we loaded it: load and run in one round trip.
    script_loads_.fetch_add(1, std::memory_order_relaxed);
    const std::vector<std::string> load_and_run[] = {load, evalsha};
    ASSIGN_OR_RETURN(std::vector<RedisReply> retried, conn->RoundTrip(load_and_run));
    if (retried[0].is_error()) return std::move(retried[0]);
    return std::move(retried[1]);
  }();
  Release(std::move(conn));
  return result;
}

// ---------------------------------------------------------------------------
// RedisSubscriber

RedisSubscriber::RedisSubscriber(RedisConfig config, std::vector<std::string> channels,
                                 std::function<void(const std::string& channel, const std::string& message)> on_message,
                                 std::function<void()> on_reconnect)
    : config_(Normalized(std::move(config))),
      channels_(std::move(channels)),
      on_message_(std::move(on_message)),
      on_reconnect_(std::move(on_reconnect)) {
  if (!channels_.empty()) thread_ = std::jthread([this](std::stop_token stop) { Run(std::move(stop)); });
}

RedisSubscriber::~RedisSubscriber() { Stop(); }

void RedisSubscriber::Stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  thread_.join();
}

void RedisSubscriber::Run(std::stop_token stop) {
  std::mutex mu;
  std::condition_variable_any wake;  // only ever woken by `stop`
  std::chrono::milliseconds backoff = kInitialBackoff;
  bool resync = false;  // true once any attempt failed or dropped: messages may have been missed
  while (!stop.stop_requested()) {
    if (Session(stop, resync)) backoff = kInitialBackoff;
    connected_.store(false, std::memory_order_release);
    resync = true;
    std::unique_lock lock(mu);
    wake.wait_for(lock, stop, backoff, [] { return false; });
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

bool RedisSubscriber::Session(std::stop_token stop, bool resync) {
  const std::string server = ServerLabel(config_);
  absl::StatusOr<ContextPtr> connected = Connect(config_, config_.connect_timeout, "SUBSCRIBE");
  if (!connected.ok()) {
    // Repeats every backoff while Redis is down, so only at debug level.
    const std::string error(connected.status().message());
    core::Log(core::LogLevel::kDebug, "redis.subscriber.connect_failed", {{"server", server}, {"error", error}});
    return false;
  }
  redisContext* c = connected->get();
  std::vector<std::string> argv = {"SUBSCRIBE"};
  argv.insert(argv.end(), channels_.begin(), channels_.end());
  if (!Append(c, argv)) return false;
  {
    SigpipeGuard guard;
    int done = 0;
    while (done == 0) {
      if (redisBufferWrite(c, &done) != REDIS_OK) return false;
    }
  }

  const SteadyTime ack_deadline = std::chrono::steady_clock::now() + config_.command_timeout;
  size_t acks = 0;
  bool subscribed = false;
  std::string cause = "stopped";
  while (!stop.stop_requested()) {
    void* raw = nullptr;
    if (redisGetReplyFromReader(c, &raw) != REDIS_OK) {
      cause = Cause(*c, errno);
      break;
    }
    if (raw != nullptr) {
      ReplyPtr reply(static_cast<redisReply*>(raw));
      const bool well_formed = reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
                               reply->element[0]->type == REDIS_REPLY_STRING &&
                               reply->element[1]->type == REDIS_REPLY_STRING;
      const std::string_view kind =
          well_formed ? std::string_view(reply->element[0]->str, reply->element[0]->len) : std::string_view();
      if (kind == "message" && reply->element[2]->type == REDIS_REPLY_STRING) {
        on_message_(std::string(reply->element[1]->str, reply->element[1]->len),
                    std::string(reply->element[2]->str, reply->element[2]->len));
      } else if (kind == "subscribe") {
        if (++acks == channels_.size()) {
          if (resync && on_reconnect_) on_reconnect_();
          subscribed = true;
          connected_.store(true, std::memory_order_release);
          if (resync) core::Log(core::LogLevel::kInfo, "redis.subscriber.reconnected", {{"server", server}});
        }
      } else {
        cause = "unexpected reply";
        break;
      }
      continue;
    }
    if (!subscribed && std::chrono::steady_clock::now() > ack_deadline) {
      cause = "SUBSCRIBE timed out";
      break;
    }
    pollfd pfd{c->fd, POLLIN, 0};
    const int ready = poll(&pfd, 1, kStopPollMs);
    if (ready < 0 && errno != EINTR) {
      cause = "poll failed";
      break;
    }
    if (ready > 0 && redisBufferRead(c) != REDIS_OK) {
      cause = Cause(*c, errno);
      break;
    }
  }
  if (subscribed && !stop.stop_requested()) {
    core::Log(core::LogLevel::kWarn, "redis.subscriber.disconnected", {{"server", server}, {"error", cause}});
  }
  return subscribed;
}

}  // namespace medgrid::cache
