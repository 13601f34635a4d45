// Statistics the sessions of every worker thread update and the admin
// port and console read: latency histograms, per-rule counters, and the
// statements no rule caches (the raw material of SHOW QUERIES). Updates are
// atomic adds, or a short lock on a map lookup; reads take snapshots.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pgshelf::proxy {

// A Prometheus-style histogram with fixed bucket bounds (seconds) from
// 50 µs to 2.5 s: hits are tens of microseconds, slow queries seconds.
class LatencyHistogram {
public:
    static constexpr std::array<double, 15> bounds{0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                                   0.0025,  0.005,  0.01,    0.025,  0.05,
                                                   0.1,     0.25,   0.5,     1.0,    2.5};

    void observe(std::chrono::nanoseconds elapsed) {
        const double seconds = std::chrono::duration<double>(elapsed).count();
        std::size_t bucket = 0;
        while (bucket < bounds.size() && seconds > bounds[bucket]) {
            ++bucket;
        }
        counts_[bucket].fetch_add(1, std::memory_order_relaxed);
        sum_ns_.fetch_add(static_cast<std::uint64_t>(elapsed.count()), std::memory_order_relaxed);
    }

    struct Snapshot {
        std::array<std::uint64_t, bounds.size() + 1> counts{};  // per bucket; the last is +Inf
        std::uint64_t count = 0;
        double sum_seconds = 0;
    };
    Snapshot snapshot() const {
        Snapshot s;
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            s.counts[i] = counts_[i].load(std::memory_order_relaxed);
            s.count += s.counts[i];
        }
        s.sum_seconds = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
        return s;
    }

private:
    std::array<std::atomic<std::uint64_t>, bounds.size() + 1> counts_{};
    std::atomic<std::uint64_t> sum_ns_{0};
};

// Counters of one cache rule, by name: they survive reloads that keep the name.
struct RuleStats {
    std::atomic<std::uint64_t> hits{0};
    std::atomic<std::uint64_t> misses{0};
    std::atomic<std::uint64_t> stores{0};
    std::atomic<std::uint64_t> stores_stale{0};
    std::atomic<std::uint64_t> stores_too_large{0};
    std::atomic<std::uint64_t> invalidations_key{0};
    std::atomic<std::uint64_t> invalidations_fallback{0};
};

class RuleStatsRegistry {
public:
    // Stable reference; created on first use.
    RuleStats& get(std::string_view rule) {
        std::lock_guard lock(mutex_);
        auto it = stats_.find(rule);
        if (it == stats_.end()) {
            it = stats_.emplace(std::string(rule), std::make_unique<RuleStats>()).first;
        }
        return *it->second;
    }
    // Every rule seen so far, by name.
    std::vector<std::pair<std::string, const RuleStats*>> all() const {
        std::lock_guard lock(mutex_);
        std::vector<std::pair<std::string, const RuleStats*>> out;
        out.reserve(stats_.size());
        for (const auto& [name, stats] : stats_) {
            out.emplace_back(name, stats.get());
        }
        return out;
    }

private:
    mutable std::mutex mutex_;
    std::map<std::string, std::unique_ptr<RuleStats>, std::less<>> stats_;
};

// Reads that went to PostgreSQL because no rule caches them, grouped by
// statement shape (literals and parameters alike), with their server time.
// Bounded: once full, new shapes are only counted as dropped.
class UncachedReadLog {
public:
    struct Entry {
        std::string sql;  // the first text seen with this shape
        std::uint64_t count = 0;
        std::uint64_t timed = 0;  // executions with a measured server time
        std::uint64_t server_ns = 0;
    };

    explicit UncachedReadLog(std::size_t capacity = 5000) : capacity_(capacity) {}

    void seen(std::uint64_t shape_hash, std::string_view sql) {
        std::lock_guard lock(mutex_);
        auto it = entries_.find(shape_hash);
        if (it == entries_.end()) {
            if (entries_.size() >= capacity_) {
                ++dropped_;
                return;
            }
            it = entries_.emplace(shape_hash, Entry{std::string(sql), 0, 0, 0}).first;
        }
        ++it->second.count;
    }
    void timed(std::uint64_t shape_hash, std::chrono::nanoseconds server_time) {
        std::lock_guard lock(mutex_);
        if (auto it = entries_.find(shape_hash); it != entries_.end()) {
            ++it->second.timed;
            it->second.server_ns += static_cast<std::uint64_t>(server_time.count());
        }
    }
    // The `limit` most frequent, most frequent first.
    std::vector<std::pair<std::uint64_t, Entry>> top(std::size_t limit) const {
        std::vector<std::pair<std::uint64_t, Entry>> out;
        {
            std::lock_guard lock(mutex_);
            out.assign(entries_.begin(), entries_.end());
        }
        std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
            return a.second.count != b.second.count ? a.second.count > b.second.count : a.first < b.first;
        });
        if (out.size() > limit) {
            out.resize(limit);
        }
        return out;
    }
    void clear() {
        std::lock_guard lock(mutex_);
        entries_.clear();
        dropped_ = 0;
    }
    std::uint64_t dropped() const {
        std::lock_guard lock(mutex_);
        return dropped_;
    }

private:
    mutable std::mutex mutex_;
    std::size_t capacity_;
    std::unordered_map<std::uint64_t, Entry> entries_;
    std::uint64_t dropped_ = 0;
};

// One client connection as SHOW CLIENTS lists it. The session updates the
// atomics; the console reads them from another thread.
struct ClientInfo {
    std::uint64_t id = 0;
    std::string peer;
    std::string user;
    std::string database;
    bool tls = false;
    std::chrono::system_clock::time_point connected_at;
    std::atomic<char> transaction_status{'I'};  // from the last ReadyForQuery
    std::atomic<bool> active{false};            // the server owes it an answer
    std::atomic<std::uint64_t> server_requests{0};  // answered by PostgreSQL (ReadyForQuery count)
    std::atomic<std::uint64_t> cache_hits{0};
    std::atomic<std::int64_t> last_active_ms{0};  // unix time, milliseconds

    void touch() {
        last_active_ms.store(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count(),
                             std::memory_order_relaxed);
    }
};

class ClientRegistry {
public:
    void add(std::shared_ptr<ClientInfo> client) {
        std::lock_guard lock(mutex_);
        clients_[client->id] = std::move(client);
    }
    void remove(std::uint64_t id) {
        std::lock_guard lock(mutex_);
        clients_.erase(id);
    }
    // By connection id (oldest first).
    std::vector<std::shared_ptr<const ClientInfo>> snapshot() const {
        std::lock_guard lock(mutex_);
        std::vector<std::shared_ptr<const ClientInfo>> out;
        out.reserve(clients_.size());
        for (const auto& [id, client] : clients_) {
            out.push_back(client);
        }
        return out;
    }

private:
    mutable std::mutex mutex_;
    std::map<std::uint64_t, std::shared_ptr<ClientInfo>> clients_;
};

}  // namespace pgshelf::proxy
