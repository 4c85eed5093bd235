// Kafka through librdkafka: a producer that reports each message's delivery,
// and a consumer that commits offsets only after its handler succeeded.
//
//   ASSIGN_OR_RETURN(auto producer, Producer::Create({.brokers = "k1:9092"}));
//   std::vector<absl::Status> acked = producer->Publish(messages);
//
//   ASSIGN_OR_RETURN(auto consumer, Consumer::Create(config, "medgrid-audit"));
//   RETURN_IF_ERROR(consumer->Subscribe({"medgrid.audit.events"}));
//   consumer->Poll(handle, 500, std::chrono::milliseconds(100));
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace medgrid::events {

struct KafkaConfig {
  std::string brokers;                            // bootstrap.servers; empty means no Kafka (local mode)
  std::map<std::string, std::string> properties;  // any other librdkafka property, applied last
};

struct OutMessage {
  std::string topic;
  std::string key;
  std::string value;
};

// An idempotent producer: enable.idempotence=true (so acks=all and in-order
// retries without duplicates per partition), keys partitioned with murmur2
// as the Java client does, lz4 compression, message.timeout.ms 30 s.
class Producer {
 public:
  static absl::StatusOr<std::unique_ptr<Producer>> Create(const KafkaConfig& config);
  ~Producer();  // waits up to 5 s for messages still queued

  // Produces `messages` in order and waits for their delivery reports: one
  // status per message, OK once every in-sync replica has it. Waits at most
  // message.timeout.ms plus 2.5 s in all; a message still unreported then
  // is DeadlineExceeded (and may yet be delivered: at least once).
  // Thread-safe; calls run one at a time.
  std::vector<absl::Status> Publish(const std::vector<OutMessage>& messages);
  // True after a fatal error (the idempotence guarantee could not be kept):
  // this producer fails every message from then on; create a new one.
  bool fatal() const;

 private:
  struct Handle;  // the librdkafka handle (kafka.cc)
  Producer();
  // librdkafka's delivery report callback: `message` is the report, `opaque`
  // the Producer.
  static void OnDelivery(const void* message, void* opaque);

  std::unique_ptr<Handle> handle_;
  std::chrono::milliseconds message_timeout_{30000};
  std::mutex publish_mu_;  // one Publish at a time
  // The current Publish call's report slots, by the number each message
  // carries as its opaque; a report for a number no longer here belongs to an
  // earlier call that gave up on it.
  std::mutex mu_;
  uint64_t next_ = 1;                                   // guarded by mu_
  std::map<uint64_t, std::pair<absl::Status*, int*>> slots_;  // guarded by mu_: status, remaining counter
};

struct InMessage {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  std::string key;
  std::string value;
};

// A consumer that never commits an offset before its handler has processed
// the message (enable.auto.commit=false), so a crash redelivers rather than
// loses: at least once. It starts from the group's committed offsets, else
// from the earliest message.
class Consumer {
 public:
  static absl::StatusOr<std::unique_ptr<Consumer>> Create(const KafkaConfig& config, const std::string& group_id);
  ~Consumer();

  // Reads `partitions` of `topic` (every partition when empty) without
  // joining the group: fast to start, for one consumer per partition set.
  absl::Status Assign(const std::string& topic, std::vector<int32_t> partitions = {});
  // Reads every partition of `topic` from the first message published at
  // or after `since`, without joining the group: for a process that needs
  // what happened since it started and nothing before. Such a consumer
  // does not commit offsets (it never starts from them).
  absl::Status AssignFromTime(const std::string& topic, std::chrono::system_clock::time_point since,
                              std::chrono::milliseconds timeout);
  // Joins the group: the brokers share the topics' partitions out.
  absl::Status Subscribe(const std::vector<std::string>& topics);

  // Handles one batch of messages, in partition order; an error has the
  // whole batch delivered again.
  using Handler = std::function<absl::Status(const std::vector<InMessage>&)>;
  // Reads up to `max` messages, waiting at most `timeout` for the first, and
  // hands them to `handle`. When it succeeds, commits per partition the
  // offset after the batch's last message (unless positioned by time); when it fails, rewinds each
  // partition to the batch's first message, so the batch comes again (and
  // the handler must tolerate what it had already done: dedupe.h). Returns
  // the messages handled, or the handler's or the commit's error.
  absl::StatusOr<int> Poll(const Handler& handle, int max, std::chrono::milliseconds timeout);

  // Per assigned partition, the messages not yet handled: the high watermark
  // minus the consumer's position.
  absl::StatusOr<std::map<std::pair<std::string, int32_t>, int64_t>> Lag(std::chrono::milliseconds timeout);

 private:
  struct Handle;  // the librdkafka handle (kafka.cc)
  Consumer();
  std::unique_ptr<Handle> handle_;
  bool commits_ = true;  // false once positioned by time
};

}  // namespace medgrid::events
