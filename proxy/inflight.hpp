// Request coalescing for concurrent misses on one cache entry within this
// process (any worker thread): the first miss goes to PostgreSQL, the
// others wait briefly for its result instead of all querying the server.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "proxy/asio.hpp"

namespace pgshelf::proxy {

class Inflight {
public:
    // True when the caller leads (nobody else is fetching `key`); it must
    // then call finish(), which the Lead guard does at the latest.
    bool begin(const std::string& key);
    // Waits up to `timeout` for the leader's payload; nullopt when it
    // failed, was not cacheable, or took too long.
    awaitable<std::optional<std::string>> wait(const std::string& key, std::chrono::milliseconds timeout);
    void finish(const std::string& key, const std::optional<std::string>& payload);

    // Finishes with no payload unless finished explicitly.
    class Lead {
    public:
        Lead() = default;
        Lead(Inflight* owner, std::string key) : owner_(owner), key_(std::move(key)) {}
        Lead(Lead&& other) noexcept : owner_(std::exchange(other.owner_, nullptr)), key_(std::move(other.key_)) {}
        Lead& operator=(Lead&& other) noexcept {
            release(std::nullopt);
            owner_ = std::exchange(other.owner_, nullptr);
            key_ = std::move(other.key_);
            return *this;
        }
        ~Lead() { release(std::nullopt); }
        void release(const std::optional<std::string>& payload) {
            if (owner_ != nullptr) {
                owner_->finish(key_, payload);
                owner_ = nullptr;
            }
        }

    private:
        Inflight* owner_ = nullptr;
        std::string key_;
    };

private:
    struct Waiter {
        asio::any_io_executor executor;
        std::shared_ptr<asio::steady_timer> timer;
        std::shared_ptr<std::optional<std::string>> result;
    };
    std::mutex mutex_;
    std::unordered_map<std::string, std::vector<Waiter>> fetching_;
};

}  // namespace pgshelf::proxy
