#include "medgrid/ledger/signer.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::ledger {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

}  // namespace

struct Signer::Key {
  PkeyPtr pkey;
};

std::string SignedBytes(const TreeHead& head) {
  return core::StrCat("medgrid-sth-v1\n", head.tenant, "\n", head.size, "\n", ToHex(head.root), "\n",
                      head.timestamp_us, "\n");
}

std::string KeyId(std::string_view raw_public_key) {
  Hash h;
  SHA256(reinterpret_cast<const unsigned char*>(raw_public_key.data()), raw_public_key.size(), h.data());
  return ToHex(h).substr(0, 16);
}

Signer::Signer(std::unique_ptr<Key> key) : key_(std::move(key)) {
  std::size_t len = 32;
  public_key_.resize(len);
  EVP_PKEY_get_raw_public_key(key_->pkey.get(), reinterpret_cast<unsigned char*>(public_key_.data()), &len);
  public_key_.resize(len);
  key_id_ = KeyId(public_key_);
}

Signer::~Signer() = default;

absl::StatusOr<std::unique_ptr<Signer>> Signer::Generate() {
  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!pkey) return absl::InternalError("Ed25519 key generation failed");
  auto key = std::make_unique<Key>();
  key->pkey = std::move(pkey);
  return std::unique_ptr<Signer>(new Signer(std::move(key)));
}

absl::StatusOr<std::unique_ptr<Signer>> Signer::FromPemFile(const std::string& path, bool create) {
  std::ifstream in(path);
  if (!in) {
    if (!create) return absl::NotFoundError(core::StrCat("Cannot open the ledger signing key ", path));
    ASSIGN_OR_RETURN(std::unique_ptr<Signer> signer, Generate());
    const std::string pem = signer->PrivatePem();
    FILE* f = std::fopen(path.c_str(), "wx");  // fails if another process made it meanwhile
    if (f == nullptr) return FromPemFile(path, false);
    ::fchmod(fileno(f), 0600);
    const bool written = std::fwrite(pem.data(), 1, pem.size(), f) == pem.size();
    if (std::fclose(f) != 0 || !written) {
      return absl::InternalError(core::StrCat("Cannot write the ledger signing key ", path));
    }
    return signer;
  }
  std::stringstream pem;
  pem << in.rdbuf();
  const std::string text = pem.str();
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  PkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!pkey || EVP_PKEY_get_id(pkey.get()) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError(core::StrCat(path, " does not hold an Ed25519 private key in PEM"));
  }
  auto key = std::make_unique<Key>();
  key->pkey = std::move(pkey);
  return std::unique_ptr<Signer>(new Signer(std::move(key)));
}

std::string Signer::PrivatePem() const {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key_->pkey.get(), nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

absl::Status Signer::Sign(TreeHead& head) const {
  head.key_id = key_id_;
  const std::string bytes = SignedBytes(head);
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  std::size_t len = 64;
  head.signature.resize(len);
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_->pkey.get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(head.signature.data()), &len,
                     reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()) != 1) {
    return absl::InternalError("Ed25519 signing failed");
  }
  head.signature.resize(len);
  return absl::OkStatus();
}

bool VerifySignature(const TreeHead& head, std::string_view raw_public_key) {
  PkeyPtr pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                           reinterpret_cast<const unsigned char*>(raw_public_key.data()),
                                           raw_public_key.size()));
  if (!pkey) return false;
  const std::string bytes = SignedBytes(head);
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  return ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) == 1 &&
         EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(head.signature.data()),
                          head.signature.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                          bytes.size()) == 1;
}

}  // namespace medgrid::ledger
