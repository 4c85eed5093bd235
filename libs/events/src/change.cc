#include "medgrid/events/change.h"

#include "google/protobuf/timestamp.pb.h"
#include "medgrid/core/strings.h"
#include "medgrid/events/v1/resource_changed.pb.h"

namespace medgrid::events {
namespace {

namespace pb = ::medgrid::events::v1;

pb::Operation ToProto(std::string_view operation) {
  if (operation == "create") return pb::OPERATION_CREATE;
  if (operation == "update") return pb::OPERATION_UPDATE;
  if (operation == "patch") return pb::OPERATION_PATCH;
  if (operation == "delete") return pb::OPERATION_DELETE;
  return pb::OPERATION_UNSPECIFIED;
}

std::string FromProto(pb::Operation operation) {
  switch (operation) {
    case pb::OPERATION_CREATE:
      return "create";
    case pb::OPERATION_UPDATE:
      return "update";
    case pb::OPERATION_PATCH:
      return "patch";
    case pb::OPERATION_DELETE:
      return "delete";
    default:
      return "";
  }
}

}  // namespace

std::string ChangeEvent::Key() const { return core::StrCat(tenant, "/", type, "/", id); }

std::string ChangeEvent::EventId() const { return core::StrCat(tenant, "/", type, "/", id, "/_history/", version); }

std::string_view OperationOf(std::string_view method) {
  if (method == "POST") return "create";
  if (method == "PATCH") return "patch";
  if (method == "DELETE") return "delete";
  return "update";
}

std::string EncodeChange(const ChangeEvent& event) {
  pb::ResourceChanged m;
  m.set_event_id(event.EventId());
  m.set_tenant(event.tenant);
  m.set_resource_type(event.type);
  m.set_resource_id(event.id);
  m.set_version_id(event.version);
  m.set_operation(ToProto(event.operation));
  const int64_t us = core::ToUnixMicros(event.changed_at);
  m.mutable_changed_at()->set_seconds(us >= 0 ? us / 1000000 : (us - 999999) / 1000000);
  m.mutable_changed_at()->set_nanos(static_cast<int32_t>((us - m.changed_at().seconds() * 1000000) * 1000));
  if (event.body) m.set_resource(*event.body);
  m.set_shard(event.shard);
  m.set_outbox_seq(event.outbox_seq);
  return m.SerializeAsString();
}

absl::StatusOr<ChangeEvent> DecodeChange(std::string_view bytes) {
  pb::ResourceChanged m;
  if (!m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) || m.tenant().empty() ||
      m.resource_type().empty() || m.resource_id().empty() || m.version_id() <= 0) {
    return absl::InvalidArgumentError("Not a medgrid.events.v1.ResourceChanged");
  }
  ChangeEvent e;
  e.tenant = m.tenant();
  e.type = m.resource_type();
  e.id = m.resource_id();
  e.version = m.version_id();
  e.operation = FromProto(m.operation());
  e.changed_at = core::FromUnixMicros(m.changed_at().seconds() * 1000000 + m.changed_at().nanos() / 1000);
  if (m.has_resource()) e.body = m.resource();
  e.shard = m.shard();
  e.outbox_seq = m.outbox_seq();
  return e;
}

void ChangeBus::Register(ChangeHandler* handler) {
  std::lock_guard lock(mu_);
  handlers_.push_back(handler);
}

absl::Status ChangeBus::Handle(const ChangeEvent& event) {
  std::vector<ChangeHandler*> handlers;
  {
    std::lock_guard lock(mu_);
    handlers = handlers_;
  }
  absl::Status first;
  for (ChangeHandler* h : handlers) {
    absl::Status s = h->Handle(event);
    if (!s.ok() && first.ok()) first = s;
  }
  if (first.ok()) {
    std::lock_guard lock(mu_);
    ++delivered_;
  }
  return first;
}

uint64_t ChangeBus::delivered() const {
  std::lock_guard lock(mu_);
  return delivered_;
}

}  // namespace medgrid::events
