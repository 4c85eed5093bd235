// Drops events already handled, so that at-least-once delivery has an
// exactly-once effect. Both remember a bounded number of entries (the
// oldest are forgotten first): size them above what a redelivery can span,
// e.g. a consumer's uncommitted batch or a relay's resend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace medgrid::events {

// By version: accepts a version of a key only when it is higher than every
// version of that key accepted before. For events ordered per key (change
// events), this drops repeats and never an unseen version.
class VersionDeduper {
 public:
  explicit VersionDeduper(std::size_t capacity = 1 << 20) : capacity_(capacity) {}
  bool Accept(std::string_view key, int64_t version);
  // Whether Accept would accept it, without recording it.
  bool Fresh(std::string_view key, int64_t version);

 private:
  const std::size_t capacity_;
  std::mutex mu_;
  std::unordered_map<std::string, int64_t> latest_;  // guarded by mu_
  std::deque<std::string> order_;                    // guarded by mu_; keys, oldest first
};

// By event id: accepts an id the first time only.
class IdDeduper {
 public:
  explicit IdDeduper(std::size_t capacity = 1 << 20) : capacity_(capacity) {}
  bool Accept(std::string_view id);

 private:
  const std::size_t capacity_;
  std::mutex mu_;
  std::unordered_set<std::string> seen_;  // guarded by mu_
  std::deque<std::string> order_;         // guarded by mu_
};

}  // namespace medgrid::events
