#include "medgrid/bulk/object_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::bulk {
namespace {

namespace fs = std::filesystem;

absl::Status IoError(std::string_view what, const std::string& path, int err) {
  return core::Error(absl::StatusCode::kUnavailable, core::StrCat(what, " ", path, ": ", std::strerror(err))).Http(503);
}

absl::Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError("write", path, errno);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return absl::OkStatus();
}

// Buffers appends into writes of 1 MiB.
class FileWriter final : public ObjectWriter {
 public:
  FileWriter(int fd, std::string tmp, std::string path) : fd_(fd), tmp_(std::move(tmp)), path_(std::move(path)) {
    buffer_.reserve(kBuffer);
  }
  ~FileWriter() override {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(tmp_.c_str());
    }
  }
  absl::Status Append(std::string_view data) override {
    size_ += data.size();
    if (buffer_.size() + data.size() > kBuffer) {
      RETURN_IF_ERROR(WriteAll(fd_, buffer_, tmp_));
      buffer_.clear();
      if (data.size() >= kBuffer) return WriteAll(fd_, data, tmp_);
    }
    buffer_.append(data);
    return absl::OkStatus();
  }
  absl::Status Commit() override {
    RETURN_IF_ERROR(WriteAll(fd_, buffer_, tmp_));
    buffer_.clear();
    if (::fdatasync(fd_) != 0) return IoError("fdatasync", tmp_, errno);
    ::close(fd_);
    fd_ = -1;
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) return IoError("rename", tmp_, errno);
    return absl::OkStatus();
  }
  uint64_t size() const override { return size_; }

 private:
  static constexpr std::size_t kBuffer = 1 << 20;
  int fd_;
  const std::string tmp_;
  const std::string path_;
  std::string buffer_;
  uint64_t size_ = 0;
};

class FileReader final : public ObjectReader {
 public:
  FileReader(int fd, uint64_t size, std::string path) : fd_(fd), size_(size), path_(std::move(path)) {}
  ~FileReader() override { ::close(fd_); }
  uint64_t size() const override { return size_; }
  absl::StatusOr<std::string> ReadAt(uint64_t offset, std::size_t max) override {
    if (offset >= size_) return std::string();
    std::string out(static_cast<std::size_t>(std::min<uint64_t>(max, size_ - offset)), '\0');
    std::size_t got = 0;
    while (got < out.size()) {
      ssize_t n = ::pread(fd_, out.data() + got, out.size() - got, static_cast<off_t>(offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return IoError("read", path_, errno);
      if (n == 0) break;
      got += static_cast<std::size_t>(n);
    }
    out.resize(got);
    return out;
  }

 private:
  int fd_;
  uint64_t size_;
  const std::string path_;
};

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileObjectStore>> FileObjectStore::Open(const std::string& root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return core::Error(absl::StatusCode::kUnavailable, core::StrCat("Cannot create ", root, ": ", ec.message()));
  return std::unique_ptr<FileObjectStore>(new FileObjectStore(root));
}

absl::StatusOr<std::string> FileObjectStore::PathOf(const std::string& key) const {
  if (key.empty() || key.front() == '/') return absl::InvalidArgumentError("Object keys are relative");
  for (std::string_view part : core::StrSplit(key, '/')) {
    if (part.empty() || part == "." || part == "..") return absl::InvalidArgumentError("Malformed object key");
  }
  return core::StrCat(root_, "/", key);
}

absl::Status FileObjectStore::Put(const std::string& key, std::string_view data) {
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectWriter> w, OpenWriter(key));
  RETURN_IF_ERROR(w->Append(data));
  return w->Commit();
}

absl::StatusOr<std::unique_ptr<ObjectWriter>> FileObjectStore::OpenWriter(const std::string& key) {
  ASSIGN_OR_RETURN(std::string path, PathOf(key));
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) return IoError("mkdir", path, ec.value());
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return IoError("open", tmp, errno);
  return std::unique_ptr<ObjectWriter>(new FileWriter(fd, std::move(tmp), std::move(path)));
}

absl::StatusOr<std::unique_ptr<ObjectReader>> FileObjectStore::OpenReader(const std::string& key) {
  ASSIGN_OR_RETURN(std::string path, PathOf(key));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return core::Error(absl::StatusCode::kNotFound, "No such file").Http(404);
    return IoError("open", path, errno);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return IoError("stat", path, err);
  }
  return std::unique_ptr<ObjectReader>(new FileReader(fd, static_cast<uint64_t>(st.st_size), std::move(path)));
}

absl::Status FileObjectStore::Delete(const std::string& key) {
  ASSIGN_OR_RETURN(std::string path, PathOf(key));
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return IoError("unlink", path, errno);
  return absl::OkStatus();
}

absl::Status FileObjectStore::DeletePrefix(const std::string& prefix) {
  // Prefixes are whole directories ("tenant/job/") or names in one.
  std::string dir_key = prefix;
  while (!dir_key.empty() && dir_key.back() == '/') dir_key.pop_back();
  ASSIGN_OR_RETURN(std::string path, PathOf(dir_key));
  std::error_code ec;
  if (!prefix.empty() && prefix.back() == '/') {
    fs::remove_all(path, ec);
    if (ec) return IoError("remove", path, ec.value());
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::vector<ObjectInfo> all, List(prefix));
  for (const ObjectInfo& o : all) RETURN_IF_ERROR(Delete(o.key));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ObjectInfo>> FileObjectStore::List(const std::string& prefix) {
  std::vector<ObjectInfo> out;
  std::error_code ec;
  // Walk the deepest directory the prefix names.
  const std::size_t slash = prefix.rfind('/');
  const std::string dir = slash == std::string::npos ? root_ : core::StrCat(root_, "/", prefix.substr(0, slash));
  if (!fs::is_directory(dir, ec)) return out;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    std::string key = fs::relative(it->path(), root_, ec).string();
    if (ec || key.rfind(prefix, 0) != 0 || EndsWith(key, ".tmp")) continue;
    out.push_back({std::move(key), static_cast<uint64_t>(it->file_size(ec))});
  }
  std::sort(out.begin(), out.end(), [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  return out;
}

}  // namespace medgrid::bulk
