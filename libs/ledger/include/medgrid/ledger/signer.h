// Signed tree heads: Ed25519 signatures (OpenSSL) over a tenant's tree size,
// root and time.
//
// The signed bytes are the text
//   "medgrid-sth-v1\n" tenant "\n" size "\n" root-hex "\n" unix-microseconds "\n"
// A key is named by its key id: the first 16 hex digits of the SHA-256 of
// its raw 32-byte public key.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "medgrid/ledger/merkle.h"

namespace medgrid::ledger {

struct TreeHead {
  std::string tenant;
  uint64_t size = 0;
  Hash root{};
  int64_t timestamp_us = 0;  // Unix time
  std::string key_id;
  std::string signature;     // 64 bytes
};

// The bytes a tree head's signature covers.
std::string SignedBytes(const TreeHead& head);

// The key id of a raw Ed25519 public key.
std::string KeyId(std::string_view raw_public_key);

class Signer {
 public:
  // A new random key.
  static absl::StatusOr<std::unique_ptr<Signer>> Generate();
  // The key in a PEM file (PKCS#8); with `create`, a missing file is made
  // with a new key (mode 0600).
  static absl::StatusOr<std::unique_ptr<Signer>> FromPemFile(const std::string& path, bool create);
  ~Signer();

  const std::string& key_id() const { return key_id_; }
  const std::string& public_key() const { return public_key_; }  // raw, 32 bytes
  std::string PrivatePem() const;

  // Fills head.key_id and head.signature.
  absl::Status Sign(TreeHead& head) const;

 private:
  struct Key;
  explicit Signer(std::unique_ptr<Key> key);
  std::unique_ptr<Key> key_;
  std::string public_key_;
  std::string key_id_;
};

// Whether `head.signature` is a valid signature of `head` by the raw Ed25519
// public key `raw_public_key`.
bool VerifySignature(const TreeHead& head, std::string_view raw_public_key);

}  // namespace medgrid::ledger
