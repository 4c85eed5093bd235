// RedisClient and RedisSubscriber against real redis-servers: the shared one
// that tests/run.sh starts (MEDGRID_TEST_REDIS="host:port"), and, for failure
// handling, private ones this test starts and kills on a free port. Without
// MEDGRID_TEST_REDIS the live tests skip. Keys and channels carry the pid and
// test name, so concurrent runs against one server do not collide.
#include "medgrid/cache/redis.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "medgrid/core/strings.h"

namespace medgrid::cache {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;
using Type = RedisReply::Type;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// Polls `pred` every few milliseconds until it holds or `timeout` passes.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout = 15s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// Messages a subscriber received, and how often it called on_reconnect.
class Inbox {
 public:
  std::function<void(const std::string&, const std::string&)> OnMessage() {
    return [this](const std::string& channel, const std::string& message) {
      std::lock_guard lock(mu_);
      messages_.emplace_back(channel, message);
    };
  }
  std::function<void()> OnReconnect() {
    return [this] { reconnects_.fetch_add(1); };
  }
  std::vector<std::pair<std::string, std::string>> messages() {
    std::lock_guard lock(mu_);
    return messages_;
  }
  bool Has(const std::string& channel, const std::string& message) {
    std::lock_guard lock(mu_);
    return std::find(messages_.begin(), messages_.end(), std::pair(channel, message)) != messages_.end();
  }
  int reconnects() const { return reconnects_.load(); }

 private:
  std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> messages_;
  std::atomic<int> reconnects_{0};
};

// ---------------------------------------------------------------------------
// Configuration (no server needed)

TEST(ParseRedisAddressTest, AcceptsHostPortAndBracketedIpv6) {
  absl::StatusOr<RedisConfig> v4 = ParseRedisAddress("127.0.0.1:6379");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 6379);
  EXPECT_EQ(v4->pool_size, RedisConfig{}.pool_size);
  EXPECT_EQ(v4->command_timeout, RedisConfig{}.command_timeout);

  absl::StatusOr<RedisConfig> v6 = ParseRedisAddress("[::1]:6380");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 6380);

  absl::StatusOr<RedisConfig> name = ParseRedisAddress("redis.internal:1");
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(name->host, "redis.internal");
  EXPECT_EQ(name->port, 1);

  absl::StatusOr<RedisConfig> top = ParseRedisAddress("h:65535");
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_EQ(top->port, 65535);
}

TEST(ParseRedisAddressTest, RejectsMalformedAddresses) {
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", ":6379", "[::1]", "[::1]6379", "[::1:6379", "::1:6379",
                          "[]:6379", "h:0", "h:65536", "h:-1", "h:+1", "h:12a", "h: 1", "h:99999999999"}) {
    absl::StatusOr<RedisConfig> parsed = ParseRedisAddress(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
  }
}

TEST(ValidateRedisConfigTest, NamesTheFieldOutOfRange) {
  EXPECT_TRUE(ValidateRedisConfig(RedisConfig{}).ok());
  RedisConfig c;
  c.pool_size = 0;
  EXPECT_EQ(ValidateRedisConfig(c).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(ValidateRedisConfig(c)), HasSubstr("pool_size"));
  c = RedisConfig{};
  c.command_timeout = 0ms;
  EXPECT_THAT(Msg(ValidateRedisConfig(c)), HasSubstr("command_timeout"));
  c = RedisConfig{};
  c.port = 70000;
  EXPECT_THAT(Msg(ValidateRedisConfig(c)), HasSubstr("port"));
}

// ---------------------------------------------------------------------------
// Against the shared server

class RedisTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* env = std::getenv("MEDGRID_TEST_REDIS");
    if (env == nullptr || *env == '\0') GTEST_SKIP() << "MEDGRID_TEST_REDIS is not set (tests/run.sh sets it)";
    absl::StatusOr<RedisConfig> parsed = ParseRedisAddress(env);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    config_ = *parsed;
    // Generous: these tests are about behaviour, and CI machines are shared.
    config_.connect_timeout = 2s;
    config_.command_timeout = 5s;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    prefix_ = core::StrCat("medgrid-redis-test:", static_cast<int64_t>(::getpid()), ":", info->name(), ":");
  }

  void TearDown() override {
    if (keys_.empty()) return;
    RedisClient client(config_);
    EXPECT_TRUE(client.Del(keys_).ok());
  }

  // A key (or channel) private to this test; deleted at the end.
  std::string Key(const std::string& name) {
    keys_.push_back(prefix_ + name);
    return keys_.back();
  }

  RedisConfig config_;
  std::string prefix_;
  std::vector<std::string> keys_;
};

TEST_F(RedisTest, HelpersRoundTrip) {
  RedisClient redis(config_);
  const std::string key = Key("k");
  ASSERT_TRUE(redis.SetEx(key, "v1", 100s).ok());
  absl::StatusOr<std::optional<std::string>> got = redis.Get(key);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->value_or("<nil>"), "v1");

  absl::StatusOr<RedisReply> ttl = redis.Command({"TTL", key});
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  ASSERT_EQ(ttl->type, Type::kInteger);
  EXPECT_GT(ttl->integer, 0);
  EXPECT_LE(ttl->integer, 100);

  absl::StatusOr<RedisReply> expire = redis.Command({"EXPIRE", key, "50"});
  ASSERT_TRUE(expire.ok()) << expire.status();
  EXPECT_EQ(expire->type, Type::kInteger);
  EXPECT_EQ(expire->integer, 1);
  ttl = redis.Command({"TTL", key});
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  EXPECT_GT(ttl->integer, 0);
  EXPECT_LE(ttl->integer, 50);

  const std::string counter = Key("counter");
  absl::StatusOr<int64_t> one = redis.Incr(counter);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, 1);
  absl::StatusOr<int64_t> two = redis.Incr(counter);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(*two, 2);

  ASSERT_TRUE(redis.Del({key, counter}).ok());
  got = redis.Get(key);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->has_value());
  absl::StatusOr<RedisReply> exists = redis.Command({"EXISTS", key, counter});
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_EQ(exists->integer, 0);
  EXPECT_TRUE(redis.Del({}).ok());
}

TEST_F(RedisTest, ReplyTypes) {
  RedisClient redis(config_);
  const std::string a = Key("a");
  const std::string b = Key("b");
  const std::string missing = Key("missing");

  absl::StatusOr<RedisReply> pong = redis.Command({"PING"});
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(pong->type, Type::kStatus);
  EXPECT_EQ(pong->str, "PONG");

  absl::StatusOr<RedisReply> nil = redis.Command({"GET", missing});
  ASSERT_TRUE(nil.ok()) << nil.status();
  EXPECT_EQ(nil->type, Type::kNil);

  ASSERT_TRUE(redis.Command({"SET", a, "1"}).ok());
  ASSERT_TRUE(redis.Command({"SET", b, "2"}).ok());
  absl::StatusOr<RedisReply> incrby = redis.Command({"INCRBY", a, "41"});
  ASSERT_TRUE(incrby.ok()) << incrby.status();
  EXPECT_EQ(incrby->type, Type::kInteger);
  EXPECT_EQ(incrby->integer, 42);

  absl::StatusOr<RedisReply> mget = redis.Command({"MGET", a, missing, b});
  ASSERT_TRUE(mget.ok()) << mget.status();
  ASSERT_EQ(mget->type, Type::kArray);
  ASSERT_EQ(mget->elements.size(), 3u);
  EXPECT_EQ(mget->elements[0].type, Type::kString);
  EXPECT_EQ(mget->elements[0].str, "42");
  EXPECT_EQ(mget->elements[1].type, Type::kNil);
  EXPECT_EQ(mget->elements[2].str, "2");
}

TEST_F(RedisTest, ErrorRepliesAreRepliesButHelpersFailInternal) {
  RedisClient redis(config_);
  const std::string text = Key("text");
  const std::string list = Key("list");
  ASSERT_TRUE(redis.SetEx(text, "private-value", 100s).ok());
  ASSERT_TRUE(redis.Command({"RPUSH", list, "x"}).ok());

  absl::StatusOr<RedisReply> incr = redis.Command({"INCR", text});
  ASSERT_TRUE(incr.ok()) << incr.status();
  EXPECT_EQ(incr->type, Type::kError);
  EXPECT_TRUE(incr->is_error());
  EXPECT_THAT(incr->str, HasSubstr("ERR"));

  absl::StatusOr<RedisReply> unknown = redis.Command({"NOSUCHCOMMAND", "private-value"});
  ASSERT_TRUE(unknown.ok()) << unknown.status();
  EXPECT_EQ(unknown->type, Type::kError);

  absl::StatusOr<int64_t> typed = redis.Incr(text);
  EXPECT_EQ(typed.status().code(), absl::StatusCode::kInternal) << typed.status();
  absl::StatusOr<std::optional<std::string>> wrongtype = redis.Get(list);
  EXPECT_EQ(wrongtype.status().code(), absl::StatusCode::kInternal) << wrongtype.status();
  EXPECT_THAT(Msg(wrongtype.status()), HasSubstr("WRONGTYPE"));

  EXPECT_EQ(redis.Command({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(redis.SetEx(text, "v", 0s).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(redis.Pipeline({{"PING"}, {}}).status().code(), absl::StatusCode::kInvalidArgument);

  // The error replies left the connection usable.
  EXPECT_EQ(redis.Stats().discarded, 0u);
  EXPECT_EQ(redis.Stats().connects, 1u);
  EXPECT_TRUE(redis.Command({"PING"}).ok());
}

TEST_F(RedisTest, ValuesAreBinarySafe) {
  RedisClient redis(config_);
  const std::string key = Key("binary");
  const std::string value("a\0b\r\n\0\xff$3\r\n", 11);
  ASSERT_EQ(value.size(), 11u);
  ASSERT_TRUE(redis.SetEx(key, value, 100s).ok());
  absl::StatusOr<std::optional<std::string>> got = redis.Get(key);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(**got, value);
  absl::StatusOr<RedisReply> strlen = redis.Command({"STRLEN", key});
  ASSERT_TRUE(strlen.ok()) << strlen.status();
  EXPECT_EQ(strlen->integer, 11);
}

TEST_F(RedisTest, PipelineOfHundredRepliesInOrder) {
  RedisClient redis(config_);
  const std::string counter = Key("counter");
  std::vector<std::vector<std::string>> commands;
  for (int i = 0; i < 100; ++i) {
    if (i % 2 == 0) {
      commands.push_back({"INCR", counter});
    } else {
      commands.push_back({"ECHO", core::StrCat("v", i)});
    }
  }
  absl::StatusOr<std::vector<RedisReply>> replies = redis.Pipeline(commands);
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), 100u);
  for (int i = 0; i < 100; ++i) {
    const RedisReply& r = (*replies)[i];
    if (i % 2 == 0) {
      ASSERT_EQ(r.type, Type::kInteger) << i;
      EXPECT_EQ(r.integer, i / 2 + 1) << i;
    } else {
      ASSERT_EQ(r.type, Type::kString) << i;
      EXPECT_EQ(r.str, core::StrCat("v", i));
    }
  }
  EXPECT_EQ(redis.Stats().connects, 1u);

  // An error reply in the middle is just that reply.
  absl::StatusOr<std::vector<RedisReply>> mixed = redis.Pipeline({{"PING"}, {"NOSUCHCOMMAND"}, {"ECHO", "x"}});
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  ASSERT_EQ(mixed->size(), 3u);
  EXPECT_EQ((*mixed)[0].str, "PONG");
  EXPECT_EQ((*mixed)[1].type, Type::kError);
  EXPECT_EQ((*mixed)[2].str, "x");

  absl::StatusOr<std::vector<RedisReply>> none = redis.Pipeline({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
}

TEST_F(RedisTest, EvalLoadsOnceThenRunsBySha) {
  RedisClient redis(config_);
  const std::string key = Key("scripted");
  const std::string script = "return redis.call('INCRBY', KEYS[1], ARGV[1])";

  absl::StatusOr<RedisReply> first = redis.Eval(script, {key}, {"5"});
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->type, Type::kInteger);
  EXPECT_EQ(first->integer, 5);
  EXPECT_EQ(redis.Stats().script_loads, 1u);

  // Second run: EVALSHA only, no SCRIPT LOAD.
  absl::StatusOr<RedisReply> second = redis.Eval(script, {key}, {"5"});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->integer, 10);
  EXPECT_EQ(redis.Stats().script_loads, 1u);

  // After SCRIPT FLUSH the server answers NOSCRIPT; Eval reloads and runs once.
  absl::StatusOr<RedisReply> flushed = redis.Command({"SCRIPT", "FLUSH"});
  ASSERT_TRUE(flushed.ok()) << flushed.status();
  ASSERT_EQ(flushed->type, Type::kStatus);
  absl::StatusOr<RedisReply> third = redis.Eval(script, {key}, {"5"});
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->type, Type::kInteger);
  EXPECT_EQ(third->integer, 15);
  EXPECT_EQ(redis.Stats().script_loads, 2u);
  absl::StatusOr<RedisReply> fourth = redis.Eval(script, {key}, {"5"});
  ASSERT_TRUE(fourth.ok()) << fourth.status();
  EXPECT_EQ(fourth->integer, 20);
  EXPECT_EQ(redis.Stats().script_loads, 2u);
}

TEST_F(RedisTest, EvalReturnsArraysAndScriptErrors) {
  RedisClient redis(config_);
  const std::string key = Key("k");
  absl::StatusOr<RedisReply> array = redis.Eval("return {KEYS[1], ARGV[1], 3}", {key}, {"arg"});
  ASSERT_TRUE(array.ok()) << array.status();
  ASSERT_EQ(array->type, Type::kArray);
  ASSERT_EQ(array->elements.size(), 3u);
  EXPECT_EQ(array->elements[0].str, key);
  EXPECT_EQ(array->elements[1].str, "arg");
  EXPECT_EQ(array->elements[2].integer, 3);

  absl::StatusOr<RedisReply> raised = redis.Eval("return redis.error_reply('boom')", {}, {});
  ASSERT_TRUE(raised.ok()) << raised.status();
  EXPECT_EQ(raised->type, Type::kError);
  EXPECT_THAT(raised->str, HasSubstr("boom"));

  absl::StatusOr<RedisReply> syntax = redis.Eval("this is not lua", {}, {});
  ASSERT_TRUE(syntax.ok()) << syntax.status();
  EXPECT_EQ(syntax->type, Type::kError);
  EXPECT_EQ(redis.Stats().discarded, 0u);
}

TEST_F(RedisTest, PoolSharesFourConnectionsAmongSixteenThreads) {
  config_.pool_size = 4;
  RedisClient redis(config_);
  const std::string counter = Key("counter");
  constexpr int kThreads = 16;
  constexpr int kPerThread = 200;
  std::vector<std::vector<int64_t>> seen(kThreads);
  std::atomic<int> failures{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          absl::StatusOr<int64_t> v = redis.Incr(counter);
          if (v.ok()) {
            seen[t].push_back(*v);
          } else {
            failures.fetch_add(1);
          }
        }
      });
    }
  }
  EXPECT_EQ(failures.load(), 0);
  std::vector<int64_t> all;
  for (const auto& s : seen) all.insert(all.end(), s.begin(), s.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), size_t{kThreads * kPerThread});
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], static_cast<int64_t>(i) + 1) << i;
  absl::StatusOr<std::optional<std::string>> total = redis.Get(counter);
  ASSERT_TRUE(total.ok()) << total.status();
  EXPECT_EQ(total->value_or(""), std::to_string(kThreads * kPerThread));

  const RedisClientStats stats = redis.Stats();
  EXPECT_GE(stats.connects, 1u);
  EXPECT_LE(stats.connects, 4u);
  EXPECT_EQ(stats.pool_timeouts, 0u);
  EXPECT_EQ(stats.discarded, 0u);
}

TEST_F(RedisTest, ExhaustedPoolIsUnavailable) {
  config_.pool_size = 1;
  config_.connect_timeout = 100ms;
  config_.command_timeout = 10s;
  RedisClient redis(config_);
  RedisClient other(config_);
  const std::string list = Key("list");

  // The only connection blocks in BLPOP until we push.
  absl::StatusOr<RedisReply> popped;
  std::jthread blocker([&] { popped = redis.Command({"BLPOP", list, "8"}); });
  ASSERT_TRUE(WaitFor([&] { return redis.Stats().connects == 1; }));

  absl::StatusOr<std::optional<std::string>> starved = redis.Get(Key("x"));
  EXPECT_EQ(starved.status().code(), absl::StatusCode::kUnavailable) << starved.status();
  EXPECT_THAT(Msg(starved.status()), HasSubstr("pool exhausted"));
  EXPECT_EQ(redis.Stats().pool_timeouts, 1u);

  ASSERT_TRUE(other.Command({"RPUSH", list, "wake"}).ok());
  blocker.join();
  ASSERT_TRUE(popped.ok()) << popped.status();
  ASSERT_EQ(popped->type, Type::kArray);
  ASSERT_EQ(popped->elements.size(), 2u);
  EXPECT_EQ(popped->elements[1].str, "wake");

  // The connection came back and is reused.
  EXPECT_TRUE(redis.Get(Key("x")).ok());
  EXPECT_EQ(redis.Stats().connects, 1u);
}

TEST_F(RedisTest, CommandTimeoutDiscardsTheConnection) {
  config_.command_timeout = 100ms;
  RedisClient redis(config_);
  ASSERT_TRUE(redis.Command({"PING"}).ok());
  // BLPOP holds the reply for 2 s, far past the 100 ms command timeout.
  absl::StatusOr<RedisReply> slow = redis.Command({"BLPOP", Key("empty"), "2"});
  EXPECT_EQ(slow.status().code(), absl::StatusCode::kUnavailable) << slow.status();
  EXPECT_EQ(redis.Stats().discarded, 1u);
  // A stale reply must not reach the next caller: it gets a fresh connection.
  absl::StatusOr<RedisReply> pong = redis.Command({"PING"});
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(pong->str, "PONG");
  EXPECT_EQ(redis.Stats().connects, 2u);
}

TEST_F(RedisTest, SubscriberReceivesPublishedMessages) {
  RedisClient redis(config_);
  const std::string c1 = Key("channel1");
  const std::string c2 = Key("channel2");
  Inbox inbox;
  RedisSubscriber subscriber(config_, {c1, c2}, inbox.OnMessage(), inbox.OnReconnect());
  ASSERT_TRUE(WaitFor([&] { return subscriber.connected(); }));

  const std::string binary("x\0y", 3);
  ASSERT_TRUE(redis.Publish(c1, "hello").ok());
  ASSERT_TRUE(redis.Publish(c2, binary).ok());
  ASSERT_TRUE(WaitFor([&] { return inbox.messages().size() >= 2; }));
  const auto messages = inbox.messages();
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0], std::pair(c1, std::string("hello")));
  EXPECT_EQ(messages[1], std::pair(c2, binary));
  EXPECT_EQ(inbox.reconnects(), 0);

  subscriber.Stop();
  EXPECT_FALSE(subscriber.connected());
}

// ---------------------------------------------------------------------------
// Failure handling against a private server

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// A redis-server child on 127.0.0.1:port, killed with SIGKILL (a crash, not a
// clean shutdown) by Kill() or at destruction, and with the test process.
class RedisServerProcess {
 public:
  explicit RedisServerProcess(int port) : port_(std::to_string(port)) {}
  ~RedisServerProcess() { Kill(); }
  RedisServerProcess(const RedisServerProcess&) = delete;
  RedisServerProcess& operator=(const RedisServerProcess&) = delete;

  bool Start() {
    std::vector<std::string> args = {"redis-server", "--port", port_,          "--bind", "127.0.0.1",
                                     "--save",       "",       "--appendonly", "no"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int devnull = ::open("/dev/null", O_WRONLY);
      if (devnull >= 0) ::dup2(devnull, STDOUT_FILENO);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    return true;
  }

  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  std::string port_;
  pid_t pid_ = -1;
};

TEST_F(RedisTest, RecoversFromServerRestartWithoutNewClient) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  RedisServerProcess server(port);
  ASSERT_TRUE(server.Start());

  RedisConfig config;
  config.host = "127.0.0.1";
  config.port = port;
  config.pool_size = 2;
  config.connect_timeout = 1s;
  config.command_timeout = 1s;
  RedisClient redis(config);
  ASSERT_TRUE(WaitFor([&] { return redis.Command({"PING"}).ok(); })) << "redis-server did not start on " << port;
  Inbox inbox;
  RedisSubscriber subscriber(config, {"invalidate"}, inbox.OnMessage(), inbox.OnReconnect());
  ASSERT_TRUE(WaitFor([&] { return subscriber.connected(); }));
  ASSERT_TRUE(redis.Publish("invalidate", "before").ok());
  ASSERT_TRUE(WaitFor([&] { return inbox.Has("invalidate", "before"); }));
  const std::string script = "return redis.call('INCR', KEYS[1])";
  absl::StatusOr<RedisReply> scripted = redis.Eval(script, {"n"}, {});
  ASSERT_TRUE(scripted.ok()) << scripted.status();
  EXPECT_EQ(scripted->integer, 1);
  ASSERT_TRUE(redis.SetEx("k", "v", 60s).ok());

  server.Kill();

  // Every kind of call fails Unavailable while it is down (refused connects,
  // after the pooled connection the server closed is dropped).
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::optional<std::string>> got = redis.Get("k");
    EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable) << got.status();
  }
  absl::Status set = redis.SetEx("k", "secret-value", 60s);
  EXPECT_EQ(set.code(), absl::StatusCode::kUnavailable) << set;
  EXPECT_THAT(Msg(set), Not(HasSubstr("secret")));
  EXPECT_EQ(redis.Pipeline({{"PING"}, {"PING"}}).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(redis.Eval(script, {"n"}, {}).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(redis.Publish("invalidate", "lost").code(), absl::StatusCode::kUnavailable);
  EXPECT_GE(redis.Stats().connect_failures, 1u);
  ASSERT_TRUE(WaitFor([&] { return !subscriber.connected(); }));
  EXPECT_EQ(inbox.reconnects(), 0);
  // One that never got a first connection also resyncs once it connects.
  Inbox late_inbox;
  RedisSubscriber late(config, {"invalidate"}, late_inbox.OnMessage(), late_inbox.OnReconnect());

  ASSERT_TRUE(server.Start());

  // The same client recovers; until then it only ever reports Unavailable.
  std::vector<absl::StatusCode> other_codes;
  ASSERT_TRUE(WaitFor([&] {
    absl::StatusOr<RedisReply> pong = redis.Command({"PING"});
    if (!pong.ok() && pong.status().code() != absl::StatusCode::kUnavailable) {
      other_codes.push_back(pong.status().code());
    }
    return pong.ok();
  }));
  EXPECT_TRUE(other_codes.empty());
  absl::StatusOr<std::optional<std::string>> fresh = redis.Get("k");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_FALSE(fresh->has_value()) << "a restarted server without persistence has no keys";
  // The new server has no scripts either: NOSCRIPT, reload, run.
  scripted = redis.Eval(script, {"n"}, {});
  ASSERT_TRUE(scripted.ok()) << scripted.status();
  EXPECT_EQ(scripted->type, Type::kInteger);
  EXPECT_EQ(scripted->integer, 1);
  EXPECT_EQ(redis.Stats().script_loads, 2u);

  ASSERT_TRUE(WaitFor([&] { return subscriber.connected() && late.connected(); }));
  EXPECT_EQ(inbox.reconnects(), 1);
  EXPECT_EQ(late_inbox.reconnects(), 1);
  ASSERT_TRUE(redis.Publish("invalidate", "after").ok());
  ASSERT_TRUE(WaitFor([&] { return inbox.Has("invalidate", "after") && late_inbox.Has("invalidate", "after"); }));
  EXPECT_FALSE(inbox.Has("invalidate", "lost"));
}

TEST_F(RedisTest, IdleConnectionsClosedByARestartCostNoFailedCall) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  RedisServerProcess server(port);
  ASSERT_TRUE(server.Start());
  RedisConfig config;
  config.host = "127.0.0.1";
  config.port = port;
  config.pool_size = 2;
  config.connect_timeout = 1s;
  config.command_timeout = 1s;
  RedisClient redis(config);
  RedisClient probe(config);
  ASSERT_TRUE(WaitFor([&] { return redis.Command({"PING"}).ok(); }));
  ASSERT_EQ(redis.Stats().connects, 1u);

  // Restart while `redis` sits idle; `probe` tells when the new one is up.
  server.Kill();
  ASSERT_TRUE(server.Start());
  ASSERT_TRUE(WaitFor([&] { return probe.Command({"PING"}).ok(); }));

  // The pooled connection the old server closed is noticed and replaced
  // before use, so the first call succeeds.
  absl::StatusOr<RedisReply> pong = redis.Command({"PING"});
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(redis.Stats().discarded, 1u);
  EXPECT_EQ(redis.Stats().connects, 2u);
}

}  // namespace
}  // namespace medgrid::cache
