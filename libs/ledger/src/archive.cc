#include "medgrid/ledger/archive.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>
#include <zlib.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::ledger {
namespace {

namespace json = boost::json;

constexpr std::size_t kChunk = 64 * 1024;
constexpr std::size_t kMaxProblems = 10;

std::string Base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(bytes.data()),
                  static_cast<int>(bytes.size()));
  return out;
}

// Only the canonical encoding (what Base64 writes) decodes.
std::optional<std::string> FromBase64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out(3 * text.size() / 4, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  // EVP_DecodeBlock counts the padding as zero bytes.
  std::size_t padding = 0;
  while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') ++padding;
  out.resize(static_cast<std::size_t>(n) - padding);
  if (Base64(out) != text) return std::nullopt;
  return out;
}

json::array HexArray(const std::vector<Hash>& hashes) {
  json::array out;
  for (const Hash& h : hashes) out.emplace_back(ToHex(h));
  return out;
}

// The decoders throw (boost::json's accessors, or std::invalid_argument
// here); ArchiveReader turns that into DataLoss.
Hash HashField(const json::object& o, std::string_view key) {
  std::optional<Hash> h = HashFromHex(std::string_view(o.at(key).as_string()));
  if (!h) throw std::invalid_argument(core::StrCat(key, " is not 64 hex digits"));
  return *h;
}

std::string HexField(const json::object& o, std::string_view key) {
  std::optional<std::string> bytes = FromHex(std::string_view(o.at(key).as_string()));
  if (!bytes) throw std::invalid_argument(core::StrCat(key, " is not hex"));
  return *bytes;
}

std::string HeaderLine(const ArchiveHeader& h) {
  json::object head{
      {"size", h.head.size},     {"root", ToHex(h.head.root)},           {"signed_at_us", h.head.timestamp_us},
      {"key_id", h.head.key_id}, {"signature", ToHex(h.head.signature)}, {"public_key", ToHex(h.public_key)}};
  json::object o{
      {"format", kArchiveFormat}, {"tenant", h.tenant}, {"first", h.first}, {"end", h.end}, {"head", std::move(head)}};
  return core::StrCat(json::serialize(o), "\n");
}

ArchiveHeader ParseHeader(std::string_view line) {
  const json::object o = json::parse(line).as_object();
  if (o.at("format").as_string() != kArchiveFormat) throw std::invalid_argument("not a medgrid ledger archive");
  const json::object& head = o.at("head").as_object();
  ArchiveHeader h;
  h.tenant = std::string(std::string_view(o.at("tenant").as_string()));
  h.first = o.at("first").to_number<uint64_t>();
  h.end = o.at("end").to_number<uint64_t>();
  h.head.tenant = h.tenant;
  h.head.size = head.at("size").to_number<uint64_t>();
  h.head.root = HashField(head, "root");
  h.head.timestamp_us = head.at("signed_at_us").to_number<int64_t>();
  h.head.key_id = std::string(std::string_view(head.at("key_id").as_string()));
  h.head.signature = HexField(head, "signature");
  h.public_key = HexField(head, "public_key");
  if (h.first > h.end) throw std::invalid_argument("first is past end");
  return h;
}

std::string EntryLine(const ArchiveEntry& e) {
  json::object o{{"seq", e.seq},
                 {"recorded_us", e.recorded_us},
                 {"event_id", e.event_id ? json::value(*e.event_id) : json::value(nullptr)},
                 {"entry", Base64(e.entry)},
                 {"leaf_hash", ToHex(e.leaf_hash)},
                 {"proof", HexArray(e.proof)}};
  return core::StrCat(json::serialize(o), "\n");
}

ArchiveEntry ParseEntry(std::string_view line) {
  const json::object o = json::parse(line).as_object();
  ArchiveEntry e;
  e.seq = o.at("seq").to_number<uint64_t>();
  e.recorded_us = o.at("recorded_us").to_number<int64_t>();
  if (const json::value& id = o.at("event_id"); !id.is_null()) {
    e.event_id = std::string(std::string_view(id.as_string()));
  }
  std::optional<std::string> entry = FromBase64(std::string_view(o.at("entry").as_string()));
  if (!entry) throw std::invalid_argument("entry is not base64");
  e.entry = std::move(*entry);
  e.leaf_hash = HashField(o, "leaf_hash");
  for (const json::value& p : o.at("proof").as_array()) {
    std::optional<Hash> h = HashFromHex(std::string_view(p.as_string()));
    if (!h) throw std::invalid_argument("a proof hash is not 64 hex digits");
    e.proof.push_back(*h);
  }
  return e;
}

std::string Errno(std::string_view what, const std::string& path) {
  return core::StrCat(what, " ", path, ": ", std::strerror(errno));
}

class FileSink final : public ArchiveSink {
 public:
  FileSink(std::string dir, const std::string& name, int fd)
      : dir_(std::move(dir)), path_(core::StrCat(dir_, "/", name)), tmp_(TempPath(dir_, name)), fd_(fd) {}
  ~FileSink() override {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  static std::string TempPath(const std::string& dir, const std::string& name) {
    return core::StrCat(dir, "/.", name, ".tmp");
  }

  absl::Status Write(std::string_view bytes) override {
    while (!bytes.empty()) {
      const ssize_t n = ::write(fd_, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::UnavailableError(Errno("Cannot write", tmp_));
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    if (::fsync(fd_) != 0) return absl::UnavailableError(Errno("Cannot fsync", tmp_));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return absl::UnavailableError(Errno("Cannot close", tmp_));
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) return absl::UnavailableError(Errno("Cannot rename to", path_));
    committed_ = true;
    // The rename is durable once the directory is.
    const int dir_fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    absl::Status synced = absl::OkStatus();
    if (dir_fd < 0 || ::fsync(dir_fd) != 0) synced = absl::UnavailableError(Errno("Cannot fsync the directory", dir_));
    if (dir_fd >= 0) ::close(dir_fd);
    return synced;
  }

 private:
  std::string dir_;
  std::string path_;
  std::string tmp_;
  int fd_;
  bool committed_ = false;
};

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

}  // namespace

ArchiveSinkFactory DirectorySinks(std::string dir) {
  return [dir = std::move(dir)](const std::string& name) -> absl::StatusOr<std::unique_ptr<ArchiveSink>> {
    if (name.empty() || name.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(core::StrCat("'", name, "' is not a file name"));
    }
    const std::string tmp = FileSink::TempPath(dir, name);
    // A temporary file left by a crash is overwritten.
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return absl::UnavailableError(Errno("Cannot create", tmp));
    return std::make_unique<FileSink>(dir, name, fd);
  };
}

// ---- Writing ----

struct ArchiveWriter::Impl {
  std::unique_ptr<ArchiveSink> sink;
  z_stream z{};
  bool z_open = false;
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> sha{EVP_MD_CTX_new()};
  std::string out = std::string(kChunk, '\0');

  ~Impl() {
    if (z_open) deflateEnd(&z);
  }

  // Compresses `bytes` (with `flush`, Z_NO_FLUSH or Z_FINISH) into the sink,
  // hashing what goes there.
  absl::Status Deflate(std::string_view bytes, int flush) {
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
    z.avail_in = static_cast<uInt>(bytes.size());
    for (;;) {
      z.next_out = reinterpret_cast<Bytef*>(out.data());
      z.avail_out = static_cast<uInt>(out.size());
      const int rc = deflate(&z, flush);
      if (rc == Z_STREAM_ERROR) return absl::InternalError("gzip compression failed");
      const std::string_view produced(out.data(), out.size() - z.avail_out);
      EVP_DigestUpdate(sha.get(), produced.data(), produced.size());
      RETURN_IF_ERROR(sink->Write(produced));
      if (flush == Z_FINISH ? rc == Z_STREAM_END : z.avail_out != 0) return absl::OkStatus();
    }
  }
};

ArchiveWriter::ArchiveWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ArchiveWriter::~ArchiveWriter() = default;

absl::StatusOr<std::unique_ptr<ArchiveWriter>> ArchiveWriter::Create(std::unique_ptr<ArchiveSink> sink,
                                                                     const ArchiveHeader& header) {
  auto impl = std::make_unique<Impl>();
  impl->sink = std::move(sink);
  // windowBits 15 + 16: a gzip wrapper, so that gunzip and zcat read the file.
  impl->z_open = deflateInit2(&impl->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK;
  if (!impl->z_open || !impl->sha || EVP_DigestInit_ex(impl->sha.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("Cannot start an archive's compression or hash");
  }
  RETURN_IF_ERROR(impl->Deflate(HeaderLine(header), Z_NO_FLUSH));
  return std::unique_ptr<ArchiveWriter>(new ArchiveWriter(std::move(impl)));
}

absl::Status ArchiveWriter::Add(const ArchiveEntry& entry) { return impl_->Deflate(EntryLine(entry), Z_NO_FLUSH); }

absl::StatusOr<Hash> ArchiveWriter::Finish() {
  RETURN_IF_ERROR(impl_->Deflate("", Z_FINISH));
  RETURN_IF_ERROR(impl_->sink->Commit());
  Hash h{};
  EVP_DigestFinal_ex(impl_->sha.get(), h.data(), nullptr);
  return h;
}

// ---- Reading ----

struct ArchiveReader::Impl {
  std::string path;
  gzFile file = nullptr;
  std::string buffer;
  std::size_t pos = 0;  // buffer[pos, end) is read but not yet returned
  bool eof = false;
  ArchiveHeader header;
  uint64_t next_seq = 0;

  ~Impl() {
    if (file != nullptr) gzclose(file);
  }

  // The next line without its "\n"; nothing at the end of the file.
  absl::StatusOr<std::optional<std::string>> Line() {
    for (;;) {
      if (std::size_t nl = buffer.find('\n', pos); nl != std::string::npos) {
        std::string line = buffer.substr(pos, nl - pos);
        pos = nl + 1;
        return std::optional<std::string>(std::move(line));
      }
      buffer.erase(0, pos);
      pos = 0;
      if (eof) {
        if (buffer.empty()) return std::optional<std::string>();
        return std::optional<std::string>(std::exchange(buffer, ""));
      }
      const std::size_t old = buffer.size();
      buffer.resize(old + kChunk);
      const int n = gzread(file, buffer.data() + old, static_cast<unsigned>(kChunk));
      if (n < 0) {
        int code = 0;
        return absl::DataLossError(core::StrCat(path, " is damaged: ", gzerror(file, &code)));
      }
      buffer.resize(old + static_cast<std::size_t>(n));
      eof = n == 0;
    }
  }
};

ArchiveReader::ArchiveReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ArchiveReader::~ArchiveReader() = default;

absl::StatusOr<std::unique_ptr<ArchiveReader>> ArchiveReader::Open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->file = gzopen(path.c_str(), "rb");
  if (impl->file == nullptr) return absl::NotFoundError(Errno("Cannot open", path));
  ASSIGN_OR_RETURN(std::optional<std::string> line, impl->Line());
  if (gzdirect(impl->file) != 0) return absl::DataLossError(core::StrCat(path, " is not gzip-compressed"));
  if (!line) return absl::DataLossError(core::StrCat(path, " is empty"));
  try {
    impl->header = ParseHeader(*line);
  } catch (const std::exception& e) {
    return absl::DataLossError(core::StrCat(path, " does not start with a ", kArchiveFormat, " header: ", e.what()));
  }
  impl->next_seq = impl->header.first;
  return std::unique_ptr<ArchiveReader>(new ArchiveReader(std::move(impl)));
}

const ArchiveHeader& ArchiveReader::header() const { return impl_->header; }
const std::string& ArchiveReader::path() const { return impl_->path; }
uint64_t ArchiveReader::next_seq() const { return impl_->next_seq; }

absl::StatusOr<std::optional<ArchiveEntry>> ArchiveReader::Next() {
  const uint64_t seq = impl_->next_seq;
  ASSIGN_OR_RETURN(std::optional<std::string> line, impl_->Line());
  if (seq == impl_->header.end) {
    if (!line) return std::optional<ArchiveEntry>();
    return absl::DataLossError(core::StrCat("the file goes on past entry ", seq - 1));
  }
  if (!line) return absl::DataLossError(core::StrCat("the file ends before entry ", seq));
  ArchiveEntry entry;
  try {
    entry = ParseEntry(*line);
  } catch (const std::exception& e) {
    return absl::DataLossError(core::StrCat("the line of entry ", seq, " does not decode: ", e.what()));
  }
  if (entry.seq != seq) {
    return absl::DataLossError(core::StrCat("entry ", entry.seq, " is where entry ", seq, " should be"));
  }
  ++impl_->next_seq;
  return std::optional<ArchiveEntry>(std::move(entry));
}

// ---- Checking ----

std::optional<std::string> CheckArchiveHead(const ArchiveHeader& header,
                                            const std::map<std::string, std::string>* trusted_keys) {
  const TreeHead& head = header.head;
  if (head.size < header.end) {
    return core::StrCat("the head (size ", head.size, ") does not cover the entries (up to ", header.end, ")");
  }
  std::string_view key = header.public_key;
  if (trusted_keys != nullptr) {
    auto it = trusted_keys->find(head.key_id);
    if (it == trusted_keys->end()) {
      return core::StrCat("the head is signed by key ", head.key_id, ", which is not trusted");
    }
    key = it->second;
  } else if (KeyId(key) != head.key_id) {
    return core::StrCat("the file's public key is not key ", head.key_id, ", which signed the head");
  }
  if (!VerifySignature(head, key))
    return core::StrCat("the head at size ", head.size, " has a signature that does not verify");
  return std::nullopt;
}

std::optional<std::string> CheckArchiveEntry(const ArchiveHeader& header, const ArchiveEntry& entry) {
  if (LeafHash(entry.entry) != entry.leaf_hash) {
    return core::StrCat("entry ", entry.seq, " does not hash to its leaf hash");
  }
  if (!VerifyInclusion(entry.seq, header.head.size, entry.leaf_hash, entry.proof, header.head.root)) {
    return core::StrCat("the proof of entry ", entry.seq, " does not lead to the head's root");
  }
  return std::nullopt;
}

ArchiveReport VerifyArchive(ArchiveReader& reader, const std::map<std::string, std::string>* trusted_keys) {
  ArchiveReport report;
  report.key_from_file = trusted_keys == nullptr;
  auto problem = [&](std::optional<uint64_t> seq, std::string text) {
    report.ok = false;
    if (seq && !report.first_bad) report.first_bad = seq;
    if (report.problems.size() < kMaxProblems) {
      report.problems.push_back(std::move(text));
    } else {
      ++report.more_problems;
    }
  };
  if (std::optional<std::string> bad = CheckArchiveHead(reader.header(), trusted_keys)) problem(std::nullopt, *bad);
  for (;;) {
    absl::StatusOr<std::optional<ArchiveEntry>> entry = reader.Next();
    if (!entry.ok()) {
      problem(reader.next_seq(), std::string(entry.status().message()));
      break;
    }
    if (!*entry) break;
    ++report.entries;
    if (std::optional<std::string> bad = CheckArchiveEntry(reader.header(), **entry)) problem((*entry)->seq, *bad);
  }
  return report;
}

}  // namespace medgrid::ledger
