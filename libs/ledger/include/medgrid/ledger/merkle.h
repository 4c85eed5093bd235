// RFC 6962 Merkle trees (Certificate Transparency, section 2.1): the hash of
// an append-only list of leaves, audit paths that prove a leaf is in a tree,
// and consistency proofs that prove one tree is a prefix of a later one.
//
//   MTH({})    = SHA-256()
//   MTH({d})   = SHA-256(0x00 || d)
//   MTH(D[n])  = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])),  k the largest power of two < n
//
// MerkleTree keeps the hash of every complete subtree (2^h leaves starting at
// a multiple of 2^h), so an append costs one leaf hash plus, amortized, one
// node hash, and the root of any earlier size, an audit path or a
// consistency proof reads O(log n) of them (the one subtree on the right edge
// that is not complete is hashed on the way, in O(log n)).
//
// The verifiers are RFC 9162's algorithms (sections 2.1.3.2 and 2.1.4.2),
// written separately from the tree so that they check it rather than mirror it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace medgrid::ledger {

using Hash = std::array<uint8_t, 32>;

Hash EmptyRoot();                                  // SHA-256 of nothing
Hash LeafHash(std::string_view data);              // SHA-256(0x00 || data)
Hash NodeHash(const Hash& left, const Hash& right);  // SHA-256(0x01 || left || right)

std::string ToHex(const Hash& h);                  // lowercase
std::string ToHex(std::string_view bytes);
// The bytes of an even-length string of hex digits (either case), or nothing.
std::optional<std::string> FromHex(std::string_view hex);
std::optional<Hash> HashFromHex(std::string_view hex);

class MerkleTree {
 public:
  // Appends a leaf whose hash (LeafHash of its data) is `leaf_hash`.
  void AppendLeafHash(const Hash& leaf_hash);
  void Append(std::string_view data) { AppendLeafHash(LeafHash(data)); }

  uint64_t size() const { return levels_.empty() ? 0 : levels_[0].size(); }
  const Hash& leaf_hash(uint64_t index) const { return levels_[0][index]; }

  // The root of the tree of the first `n` leaves; n <= size().
  Hash Root(uint64_t n) const;
  Hash Root() const { return Root(size()); }

  // PATH(index, D[n]): the audit path of leaf `index` in the tree of the first
  // `n` leaves, from the leaf up. Requires index < n <= size().
  std::vector<Hash> InclusionProof(uint64_t index, uint64_t n) const;

  // PROOF(m, D[n]): proves the tree of the first m leaves is a prefix of the
  // tree of the first n. Empty when m is 0 or m == n. Requires m <= n <= size().
  std::vector<Hash> ConsistencyProof(uint64_t m, uint64_t n) const;

 private:
  // MTH(D[begin:end]) for a range the RFC's recursion visits: begin is a
  // multiple of the largest power of two below end - begin (or of end - begin
  // itself when that is a power of two).
  Hash RangeHash(uint64_t begin, uint64_t end) const;
  void Path(uint64_t m, uint64_t begin, uint64_t end, std::vector<Hash>& out) const;
  void SubProof(uint64_t m, uint64_t begin, uint64_t end, bool whole, std::vector<Hash>& out) const;

  // levels_[h][i]: MTH of leaves [i * 2^h, (i + 1) * 2^h).
  std::vector<std::vector<Hash>> levels_;
};

// Whether `path` proves that the leaf with hash `leaf_hash` is leaf `index` of
// the tree of `size` leaves whose root is `root`.
bool VerifyInclusion(uint64_t index, uint64_t size, const Hash& leaf_hash, const std::vector<Hash>& path,
                     const Hash& root);

// Whether `proof` proves that the tree of `old_size` leaves with root
// `old_root` is a prefix of the tree of `new_size` leaves with root `new_root`.
bool VerifyConsistency(uint64_t old_size, uint64_t new_size, const Hash& old_root, const Hash& new_root,
                       const std::vector<Hash>& proof);

}  // namespace medgrid::ledger
