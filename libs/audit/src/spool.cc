#include "medgrid/audit/spool.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::audit {
namespace {

namespace fs = std::filesystem;
constexpr std::size_t kHeader = 8;  // length, CRC-32

std::string SegmentName(uint64_t start) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%020llu.seg", static_cast<unsigned long long>(start));
  return buf;
}

void PutU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t GetU32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

absl::Status Errno(std::string_view what, const std::string& path) {
  return absl::InternalError(core::StrCat("Audit spool: ", what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

uint32_t Crc32(std::string_view bytes) {
  static const std::array<uint32_t, 256> kTable = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) c = kTable[(c ^ b) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

Spool::Spool(SpoolOptions options) : options_(std::move(options)) {}

Spool::~Spool() {
  if (fd_ >= 0) ::close(fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

absl::StatusOr<std::unique_ptr<Spool>> Spool::Open(SpoolOptions options) {
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) return absl::InternalError(core::StrCat("Audit spool: cannot create ", options.dir, ": ", ec.message()));
  std::unique_ptr<Spool> spool(new Spool(std::move(options)));
  RETURN_IF_ERROR(spool->Recover());
  return spool;
}

absl::Status Spool::Recover() {
  std::lock_guard lock(mu_);
  // One process per spool: a second would interleave its records with ours.
  const std::string lock_path = (fs::path(options_.dir) / "lock").string();
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) return Errno("cannot open", lock_path);
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(
        core::StrCat("Audit spool ", options_.dir, " is in use by another process; give each its own"));
  }
  for (const fs::directory_entry& e : fs::directory_iterator(options_.dir)) {
    const std::string name = e.path().filename().string();
    if (name.size() == 24 && name.ends_with(".seg")) segments_.push_back(std::stoull(name.substr(0, 20)));
  }
  std::sort(segments_.begin(), segments_.end());
  {
    std::ifstream in(fs::path(options_.dir) / "committed");
    uint64_t c = 0;
    if (in >> c) committed_ = c;
  }
  if (segments_.empty()) segments_.push_back(committed_);
  // The valid length of the last segment: whole records only.
  const std::string last = (fs::path(options_.dir) / SegmentName(segments_.back())).string();
  std::ifstream in(last, std::ios::binary);
  uint64_t valid = 0;
  std::string payload;
  for (unsigned char header[kHeader]; in.read(reinterpret_cast<char*>(header), kHeader);) {
    const uint32_t len = GetU32(header);
    payload.resize(len);
    if (!in.read(payload.data(), len) || Crc32(payload) != GetU32(header + 4)) break;
    valid += kHeader + len;
  }
  in.close();
  if (fs::exists(last)) fs::resize_file(last, valid);
  written_ = segments_.back() + valid;
  if (committed_ > written_ || committed_ < segments_.front()) committed_ = std::min(written_, segments_.front());
  return OpenSegmentLocked(segments_.back());
}

absl::Status Spool::OpenSegmentLocked(uint64_t start) {
  const std::string path = (fs::path(options_.dir) / SegmentName(start)).string();
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("cannot open", path);
  if (fd_ >= 0) {
    ::fdatasync(fd_);
    ::close(fd_);
  }
  fd_ = fd;
  return absl::OkStatus();
}

absl::Status Spool::Append(std::string_view record) {
  std::string frame(kHeader, '\0');
  PutU32(frame.data(), static_cast<uint32_t>(record.size()));
  PutU32(frame.data() + 4, Crc32(record));
  frame.append(record);
  std::lock_guard lock(mu_);
  if (written_ - committed_ + frame.size() > options_.max_bytes) {
    return absl::ResourceExhaustedError(
        core::StrCat("Audit spool is full: ", written_ - committed_, " bytes not yet handled"));
  }
  if (written_ > segments_.back() && written_ - segments_.back() + frame.size() > options_.segment_bytes) {
    RETURN_IF_ERROR(OpenSegmentLocked(written_));
    segments_.push_back(written_);
  }
  const ssize_t n = ::write(fd_, frame.data(), frame.size());
  if (n != static_cast<ssize_t>(frame.size())) {
    // A short write leaves a torn record, which Recover drops; undo it now.
    if (n > 0) ::ftruncate(fd_, static_cast<off_t>(written_ - segments_.back()));
    return Errno("cannot write to", SegmentName(segments_.back()));
  }
  written_ += frame.size();
  dirty_ = true;
  return absl::OkStatus();
}

absl::Status Spool::Sync() {
  // The sync waits for the disk: not under the lock appends take. A copy of
  // the descriptor stays valid if a new segment replaces it meanwhile (that
  // one is synced when it is closed).
  int fd = -1;
  std::string name;
  {
    std::lock_guard lock(mu_);
    if (!dirty_) return absl::OkStatus();
    dirty_ = false;
    fd = ::dup(fd_);
    name = SegmentName(segments_.back());
  }
  if (fd < 0) return Errno("cannot sync", name);
  const int rc = ::fdatasync(fd);
  ::close(fd);
  if (rc != 0) return Errno("cannot sync", name);
  return absl::OkStatus();
}

absl::StatusOr<Spool::Batch> Spool::Read(std::size_t max_records) {
  // What lies below `written` never changes, and only Commit (the consumer's,
  // like Read) removes segments: read it without holding up appends.
  std::vector<uint64_t> segments;
  uint64_t written = 0;
  uint64_t pos = 0;
  {
    std::lock_guard lock(mu_);
    segments = segments_;
    written = written_;
    pos = committed_;
  }
  Batch batch;
  while (batch.records.size() < max_records && pos < written) {
    // The segment holding pos.
    auto seg = std::upper_bound(segments.begin(), segments.end(), pos);
    const uint64_t start = *(seg - 1);
    const uint64_t end = seg == segments.end() ? written : *seg;
    if (pos >= end) {
      pos = end;
      continue;
    }
    const std::string path = (fs::path(options_.dir) / SegmentName(start)).string();
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Errno("cannot open", path);
    while (batch.records.size() < max_records && pos < end) {
      unsigned char header[kHeader];
      if (::pread(fd, header, kHeader, static_cast<off_t>(pos - start)) != static_cast<ssize_t>(kHeader)) break;
      std::string record(GetU32(header), '\0');
      if (::pread(fd, record.data(), record.size(), static_cast<off_t>(pos - start + kHeader)) !=
              static_cast<ssize_t>(record.size()) ||
          Crc32(record) != GetU32(header + 4)) {
        ::close(fd);
        return absl::DataLossError(core::StrCat("Audit spool: the record at offset ", pos, " in ", path,
                                                " is damaged"));
      }
      pos += kHeader + record.size();
      batch.records.push_back(std::move(record));
    }
    ::close(fd);
  }
  batch.end = pos;
  return batch;
}

absl::Status Spool::Commit(uint64_t end) {
  std::lock_guard lock(mu_);
  if (end < committed_ || end > written_) {
    return absl::InvalidArgumentError(core::StrCat("Audit spool: cannot commit offset ", end));
  }
  const fs::path dir(options_.dir);
  const std::string tmp = (dir / "committed.tmp").string();
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << end << "\n";
    out.flush();
    if (!out) return Errno("cannot write", tmp);
  }
  std::error_code ec;
  fs::rename(tmp, dir / "committed", ec);
  if (ec) return absl::InternalError(core::StrCat("Audit spool: cannot replace the committed offset: ", ec.message()));
  committed_ = end;
  // Segments wholly below the committed offset, except the one written to.
  while (segments_.size() > 1 && segments_[1] <= committed_) {
    fs::remove(dir / SegmentName(segments_.front()), ec);
    segments_.erase(segments_.begin());
  }
  return absl::OkStatus();
}

uint64_t Spool::committed() const {
  std::lock_guard lock(mu_);
  return committed_;
}

uint64_t Spool::written() const {
  std::lock_guard lock(mu_);
  return written_;
}

}  // namespace medgrid::audit
