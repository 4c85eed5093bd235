// SingleFlight: request coalescing. Concurrent callers of Do() with one key
// share a single run of `fn`; a caller arriving after that run finished starts
// a new one (nothing is cached here: pair it with L1Cache for that).
//
//   cache::SingleFlight<absl::StatusOr<std::shared_ptr<const std::string>>> reads;
//   auto body = reads.Do(key, [&] { return store.Read(tenant, type, id); });
//
// T is what every caller receives, copied: use absl::StatusOr<T> or a
// shared_ptr so the copy is cheap and errors reach all the waiters.
#pragma once

#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "medgrid/cache/string_map.h"

namespace medgrid::cache {

// Thread-safe. `fn` must not throw and must not call Do() with the same key
// (it would wait for itself).
template <typename T>
class SingleFlight {
 public:
  // Runs `fn` unless a run for `key` is in flight, in which case it waits for
  // that run and returns a copy of its result.
  template <typename Fn>
  T Do(std::string_view key, Fn&& fn) {
    std::shared_ptr<Call> call;
    bool leader = false;
    {
      std::lock_guard lock(mu_);
      auto [it, inserted] = calls_.try_emplace(std::string(key));
      if (inserted) {
        it->second = std::make_shared<Call>();
        leader = true;
      }
      call = it->second;
      ++call->callers;
    }
    if (!leader) {
      call->done.wait();
      return *call->result;
    }
    call->result.emplace(std::forward<Fn>(fn)());
    {
      // Unpublished before notifying, so a caller arriving from now on runs fn
      // anew instead of reading a finished result.
      std::lock_guard lock(mu_);
      calls_.erase(key);
    }
    call->done.count_down();
    return *call->result;
  }

  // Callers that joined the run for `key` in flight now, leader included; 0
  // when none is in flight. For metrics and tests.
  int Callers(std::string_view key) const {
    std::lock_guard lock(mu_);
    auto it = calls_.find(key);
    return it == calls_.end() ? 0 : it->second->callers;
  }

 private:
  struct Call {
    std::latch done{1};
    std::optional<T> result;  // written by the leader before `done`
    int callers = 0;          // guarded by SingleFlight::mu_
  };

  mutable std::mutex mu_;
  StringMap<std::string, std::shared_ptr<Call>> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace medgrid::cache
