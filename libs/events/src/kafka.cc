#include "medgrid/events/kafka.h"

#include <librdkafka/rdkafka.h>

#include <set>

#include "medgrid/core/logging.h"
#include "medgrid/core/strings.h"

namespace medgrid::events {
namespace {

using Ms = std::chrono::milliseconds;

absl::Status KafkaError(std::string_view what, rd_kafka_resp_err_t err) {
  return absl::UnavailableError(core::StrCat(what, ": ", rd_kafka_err2str(err)));
}

// A configuration with `defaults`, then the operator's properties, then
// `fixed` (what the code relies on). Null with a message on a bad property.
rd_kafka_conf_t* MakeConf(const KafkaConfig& config, const std::map<std::string, std::string>& defaults,
                          const std::map<std::string, std::string>& fixed, std::string& error) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[512];
  auto set = [&](const std::string& name, const std::string& value) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr) == RD_KAFKA_CONF_OK) return true;
    error = core::StrCat("Kafka property ", name, ": ", errstr);
    return false;
  };
  bool ok = set("bootstrap.servers", config.brokers);
  for (const auto* group : {&defaults, &config.properties, &fixed}) {
    for (const auto& [name, value] : *group) ok = ok && set(name, value);
  }
  if (!ok) {
    rd_kafka_conf_destroy(conf);
    return nullptr;
  }
  return conf;
}

// The librdkafka partition list of (topic, partition) -> offset.
rd_kafka_topic_partition_list_t* ListOf(const std::map<std::pair<std::string, int32_t>, int64_t>& offsets) {
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(static_cast<int>(offsets.size()));
  for (const auto& [tp, offset] : offsets) {
    rd_kafka_topic_partition_list_add(list, tp.first.c_str(), tp.second)->offset = offset;
  }
  return list;
}

// The number of partitions of `topic` (metadata through `rk`'s brokers).
absl::StatusOr<int> PartitionCount(rd_kafka_t* rk, const std::string& topic, Ms timeout) {
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, static_cast<int>(timeout.count()));
  rd_kafka_topic_destroy(rkt);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return KafkaError(core::StrCat("No metadata for ", topic), err);
  absl::StatusOr<int> count = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR
                                  ? absl::StatusOr<int>(md->topics[0].partition_cnt)
                                  : absl::NotFoundError(core::StrCat("Kafka topic ", topic, " is not known"));
  rd_kafka_metadata_destroy(md);
  return count;
}

}  // namespace

struct Producer::Handle {
  rd_kafka_t* rk = nullptr;
  ~Handle() {
    if (rk == nullptr) return;
    rd_kafka_flush(rk, 5000);
    rd_kafka_destroy(rk);
  }
};

struct Consumer::Handle {
  rd_kafka_t* rk = nullptr;
  ~Handle() {
    if (rk == nullptr) return;
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
  }
};

Producer::Producer() : handle_(std::make_unique<Handle>()) {}
Consumer::Consumer() : handle_(std::make_unique<Handle>()) {}

absl::StatusOr<std::unique_ptr<Producer>> Producer::Create(const KafkaConfig& config) {
  std::unique_ptr<Producer> p(new Producer());
  std::string error;
  rd_kafka_conf_t* conf = MakeConf(config,
                                   {{"partitioner", "murmur2_random"},
                                    {"compression.codec", "lz4"},
                                    {"linger.ms", "5"},
                                    {"message.timeout.ms", "30000"}},
                                   {{"enable.idempotence", "true"}, {"acks", "all"}}, error);
  if (conf == nullptr) return absl::InvalidArgumentError(error);
  char value[64];
  std::size_t size = sizeof value;
  if (rd_kafka_conf_get(conf, "message.timeout.ms", value, &size) == RD_KAFKA_CONF_OK) {
    p->message_timeout_ = Ms(std::stoll(value));
  }
  rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    OnDelivery(m, opaque);
  });
  rd_kafka_conf_set_opaque(conf, p.get());
  char errstr[512];
  p->handle_->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (p->handle_->rk == nullptr) return absl::InvalidArgumentError(core::StrCat("Kafka producer: ", errstr));
  return p;
}

// The handle goes first, while the report slots are still there.
Producer::~Producer() { handle_.reset(); }

void Producer::OnDelivery(const void* message, void* opaque) {
  const auto* m = static_cast<const rd_kafka_message_t*>(message);
  auto* self = static_cast<Producer*>(opaque);
  std::lock_guard lock(self->mu_);
  auto it = self->slots_.find(reinterpret_cast<uintptr_t>(m->_private));
  if (it == self->slots_.end()) return;  // an earlier Publish gave up on it
  *it->second.first = m->err == RD_KAFKA_RESP_ERR_NO_ERROR ? absl::OkStatus() : KafkaError("Delivery failed", m->err);
  --*it->second.second;
  self->slots_.erase(it);
}

std::vector<absl::Status> Producer::Publish(const std::vector<OutMessage>& messages) {
  std::lock_guard publishing(publish_mu_);
  std::vector<absl::Status> out(messages.size(), absl::DeadlineExceededError("No delivery report in time"));
  int remaining = static_cast<int>(messages.size());
  std::vector<uint64_t> ids(messages.size());
  {
    std::lock_guard lock(mu_);
    for (std::size_t i = 0; i < messages.size(); ++i) {
      ids[i] = next_++;
      slots_[ids[i]] = {&out[i], &remaining};
    }
  }
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const OutMessage& m = messages[i];
    for (;;) {
      rd_kafka_resp_err_t err = rd_kafka_producev(
          handle_->rk, RD_KAFKA_V_TOPIC(m.topic.c_str()), RD_KAFKA_V_KEY(m.key.data(), m.key.size()),
          RD_KAFKA_V_VALUE(const_cast<char*>(m.value.data()), m.value.size()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<uintptr_t>(ids[i]))), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_poll(handle_->rk, 10);
        continue;
      }
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        std::lock_guard lock(mu_);
        out[i] = KafkaError("Produce failed", err);
        --remaining;
        slots_.erase(ids[i]);
      }
      break;
    }
  }
  // librdkafka scans for timed-out messages once a second: allow for it.
  const auto deadline = std::chrono::steady_clock::now() + message_timeout_ + Ms(2500);
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (remaining == 0) break;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    rd_kafka_poll(handle_->rk, 20);
  }
  std::lock_guard lock(mu_);
  for (uint64_t id : ids) slots_.erase(id);
  return out;
}

bool Producer::fatal() const {
  char reason[256];
  return rd_kafka_fatal_error(handle_->rk, reason, sizeof reason) != RD_KAFKA_RESP_ERR_NO_ERROR;
}

absl::StatusOr<std::unique_ptr<Consumer>> Consumer::Create(const KafkaConfig& config, const std::string& group_id) {
  std::unique_ptr<Consumer> c(new Consumer());
  std::string error;
  rd_kafka_conf_t* conf = MakeConf(config, {{"auto.offset.reset", "earliest"}},
                                   {{"group.id", group_id},
                                    {"enable.auto.commit", "false"},
                                    {"enable.auto.offset.store", "false"},
                                    {"enable.partition.eof", "false"}},
                                   error);
  if (conf == nullptr) return absl::InvalidArgumentError(error);
  char errstr[512];
  c->handle_->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
  if (c->handle_->rk == nullptr) return absl::InvalidArgumentError(core::StrCat("Kafka consumer: ", errstr));
  rd_kafka_poll_set_consumer(c->handle_->rk);
  return c;
}

Consumer::~Consumer() = default;

absl::Status Consumer::Assign(const std::string& topic, std::vector<int32_t> partitions) {
  if (partitions.empty()) {
    absl::StatusOr<int> count = PartitionCount(handle_->rk, topic, Ms(10000));
    if (!count.ok()) return count.status();
    for (int32_t p = 0; p < *count; ++p) partitions.push_back(p);
  }
  std::map<std::pair<std::string, int32_t>, int64_t> offsets;
  for (int32_t p : partitions) offsets[{topic, p}] = RD_KAFKA_OFFSET_STORED;
  rd_kafka_topic_partition_list_t* list = ListOf(offsets);
  rd_kafka_resp_err_t err = rd_kafka_assign(handle_->rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  return err == RD_KAFKA_RESP_ERR_NO_ERROR ? absl::OkStatus() : KafkaError("Assign failed", err);
}

absl::Status Consumer::AssignFromTime(const std::string& topic, std::chrono::system_clock::time_point since,
                                      Ms timeout) {
  absl::StatusOr<int> count = PartitionCount(handle_->rk, topic, timeout);
  if (!count.ok()) return count.status();
  const int64_t since_ms = std::chrono::duration_cast<Ms>(since.time_since_epoch()).count();
  std::map<std::pair<std::string, int32_t>, int64_t> times;
  for (int32_t p = 0; p < *count; ++p) times[{topic, p}] = since_ms;
  rd_kafka_topic_partition_list_t* list = ListOf(times);
  // Each partition's offset becomes that of its first message at or after
  // the time (or its end, when there is none yet).
  rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(handle_->rk, list, static_cast<int>(timeout.count()));
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    for (int i = 0; i < list->cnt; ++i) {
      if (list->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) err = list->elems[i].err;
      if (list->elems[i].offset < 0) list->elems[i].offset = RD_KAFKA_OFFSET_END;
    }
  }
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) err = rd_kafka_assign(handle_->rk, list);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) commits_ = false;
  rd_kafka_topic_partition_list_destroy(list);
  return err == RD_KAFKA_RESP_ERR_NO_ERROR ? absl::OkStatus() : KafkaError("Assign by time failed", err);
}

absl::Status Consumer::Subscribe(const std::vector<std::string>& topics) {
  std::map<std::pair<std::string, int32_t>, int64_t> names;
  for (const std::string& t : topics) names[{t, RD_KAFKA_PARTITION_UA}] = 0;
  rd_kafka_topic_partition_list_t* list = ListOf(names);
  rd_kafka_resp_err_t err = rd_kafka_subscribe(handle_->rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  return err == RD_KAFKA_RESP_ERR_NO_ERROR ? absl::OkStatus() : KafkaError("Subscribe failed", err);
}

absl::StatusOr<int> Consumer::Poll(const Handler& handle, int max, Ms timeout) {
  std::vector<rd_kafka_message_t*> batch;
  rd_kafka_message_t* m = rd_kafka_consumer_poll(handle_->rk, static_cast<int>(timeout.count()));
  while (m != nullptr) {
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      batch.push_back(m);
    } else {
      // Errors on the consumer queue (a broker going away, say) are
      // reported and retried by librdkafka; nothing to hand out.
      core::Log(core::LogLevel::kWarn, "kafka.consumer_error", {{"error", rd_kafka_message_errstr(m)}});
      rd_kafka_message_destroy(m);
    }
    if (static_cast<int>(batch.size()) >= max) break;
    m = rd_kafka_consumer_poll(handle_->rk, 0);
  }
  if (batch.empty()) return 0;
  std::vector<InMessage> messages;
  messages.reserve(batch.size());
  std::map<std::pair<std::string, int32_t>, int64_t> first;  // per partition: the batch's first offset
  std::map<std::pair<std::string, int32_t>, int64_t> next;   // and the offset after its last
  for (rd_kafka_message_t* msg : batch) {
    InMessage& in = messages.emplace_back();
    in.topic = rd_kafka_topic_name(msg->rkt);
    in.partition = msg->partition;
    in.offset = msg->offset;
    if (msg->key != nullptr) in.key.assign(static_cast<const char*>(msg->key), msg->key_len);
    if (msg->payload != nullptr) in.value.assign(static_cast<const char*>(msg->payload), msg->len);
    first.try_emplace({in.topic, in.partition}, in.offset);
    next[{in.topic, in.partition}] = in.offset + 1;
    rd_kafka_message_destroy(msg);
  }
  absl::Status handled = handle(messages);
  rd_kafka_topic_partition_list_t* list = ListOf(handled.ok() ? next : first);
  if (!handled.ok()) {
    if (rd_kafka_error_t* e = rd_kafka_seek_partitions(handle_->rk, list, 10000); e != nullptr) {
      core::Log(core::LogLevel::kWarn, "kafka.seek_failed", {{"error", rd_kafka_error_string(e)}});
      rd_kafka_error_destroy(e);
    }
  } else if (commits_) {
    rd_kafka_resp_err_t err = rd_kafka_commit(handle_->rk, list, /*async=*/0);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) handled = KafkaError("Commit failed", err);
  }
  rd_kafka_topic_partition_list_destroy(list);
  if (!handled.ok()) return handled;
  return static_cast<int>(messages.size());
}

absl::StatusOr<std::map<std::pair<std::string, int32_t>, int64_t>> Consumer::Lag(Ms timeout) {
  rd_kafka_topic_partition_list_t* assigned = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_assignment(handle_->rk, &assigned);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return KafkaError("No assignment", err);
  rd_kafka_position(handle_->rk, assigned);
  rd_kafka_topic_partition_list_t* committed = rd_kafka_topic_partition_list_copy(assigned);
  rd_kafka_committed(handle_->rk, committed, static_cast<int>(timeout.count()));
  std::map<std::pair<std::string, int32_t>, int64_t> lag;
  for (int i = 0; i < assigned->cnt; ++i) {
    const rd_kafka_topic_partition_t& p = assigned->elems[i];
    int64_t low = 0, high = 0;
    err = rd_kafka_query_watermark_offsets(handle_->rk, p.topic, p.partition, &low, &high, static_cast<int>(timeout.count()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
    int64_t position = p.offset >= 0 ? p.offset : committed->elems[i].offset;
    if (position < 0) position = low;
    lag[{p.topic, p.partition}] = std::max<int64_t>(0, high - position);
  }
  rd_kafka_topic_partition_list_destroy(committed);
  rd_kafka_topic_partition_list_destroy(assigned);
  return lag;
}

}  // namespace medgrid::events
