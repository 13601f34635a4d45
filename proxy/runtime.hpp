// Process-wide services shared by all sessions and worker threads: the
// configuration, TLS contexts, the cancel-key registry, and counters.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "cache_rules/rules.hpp"
#include "proxy/redis_client.hpp"

#include "proxy/cancel_registry.hpp"
#include "proxy/inflight.hpp"
#include "proxy/config.hpp"
#include "proxy/server_link.hpp"
#include "proxy/stats.hpp"

namespace pgshelf::proxy {

struct Latencies {
    LatencyHistogram hit;    // request received → answer written, answered from the cache
    LatencyHistogram miss;   // request received → server's answer relayed, for misses that fetch
    LatencyHistogram redis;  // one pipelined Redis round trip
};

struct Counters {
    std::atomic<std::uint64_t> connections_total{0};
    std::atomic<std::int64_t> connections_current{0};
    std::atomic<std::uint64_t> connections_refused{0};
    std::atomic<std::uint64_t> protocol_errors{0};
    std::atomic<std::uint64_t> server_connect_errors{0};
    std::atomic<std::uint64_t> cancels_forwarded{0};
    std::atomic<std::uint64_t> bookkeeping_desyncs{0};
    std::atomic<std::int64_t> server_connections{0};
    // cache
    std::atomic<std::uint64_t> hits{0};
    std::atomic<std::uint64_t> misses{0};
    std::array<std::atomic<std::uint64_t>, cache_rules::bypass_reason_count> bypasses{};
    std::atomic<std::uint64_t> served_bytes{0};  // result bytes answered from the cache
    std::atomic<std::uint64_t> stores{0};
    std::atomic<std::uint64_t> stores_stale{0};
    std::atomic<std::uint64_t> stores_too_large{0};
    std::atomic<std::uint64_t> invalidations_explicit{0};
    std::atomic<std::uint64_t> invalidations_fallback{0};
    std::atomic<std::uint64_t> invalidations_failed{0};
    std::atomic<std::uint64_t> global_generation_bumps{0};
    std::atomic<std::uint64_t> redis_errors{0};
    std::atomic<std::uint64_t> coalesced{0};  // misses answered by another miss's result
    // misses that found another instance fetching the same entry and waited for it
    std::atomic<std::uint64_t> fetch_waits{0};
    std::atomic<int> redis_circuits_open{0};   // workers whose Redis circuit breaker is not closed
    // rules file reloads (SIGHUP)
    std::atomic<std::uint64_t> reloads_ok{0};
    std::atomic<std::uint64_t> reloads_failed{0};
};

class Runtime {
public:
    // Throws std::runtime_error when TLS files, the Redis URL or the rules
    // cannot be loaded (start-up is the place for fatal configuration errors).
    explicit Runtime(Config config);

    const Config& config() const { return config_; }
    // TLS towards clients; null when not configured.
    ssl::context* client_tls() { return client_tls_.get(); }
    UpstreamTls& upstream_tls() { return upstream_tls_; }
    CancelRegistry& cancels() { return cancels_; }
    Inflight& inflight() { return inflight_; }
    Counters& counters() { return counters_; }
    Latencies& latencies() { return latencies_; }
    const Latencies& latencies() const { return latencies_; }
    RuleStats& rule_stats(std::string_view rule) { return rule_stats_.get(rule); }
    const RuleStatsRegistry& rule_stats() const { return rule_stats_; }
    UncachedReadLog& uncached_reads() { return uncached_reads_; }
    ClientRegistry& clients() { return clients_; }

    // Draining (SIGTERM): not ready any more, sessions are closing.
    bool draining() const { return draining_.load(); }
    void set_draining() { draining_ = true; }
    // Last readiness probe of PostgreSQL (admin port), and the Redis state
    // readiness reports without depending on it.
    bool postgres_reachable() const { return postgres_reachable_.load(); }
    void set_postgres_reachable(bool reachable) { postgres_reachable_ = reachable; }
    std::string redis_state() const;

    // Redis, when REDIS_URL / redis.url is set.
    const std::optional<RedisEndpoint>& redis_endpoint() const { return redis_endpoint_; }
    RedisTimeouts redis_timeouts() const;

    // The rules in force; replaced whole on reload, so a session keeps the
    // set it started a request with.
    std::shared_ptr<const cache_rules::RuleSet> rules() const;
    void set_rules(std::shared_ptr<const cache_rules::RuleSet> rules);
    // Reads rules.file again. A file with errors changes nothing: the errors
    // are logged (file:line) and counted, and the rules in force stay.
    struct ReloadResult {
        bool ok = false;
        std::string message;  // what was loaded, or the errors (one per line)
    };
    ReloadResult reload_rules();

    // Fail-closed bookkeeping for invalidations that did not reach Redis:
    // hits stop until a global-generation bump taken after the last
    // failure has succeeded.
    bool invalidation_lost() const { return failures_.load() > recovered_.load(); }
    std::uint64_t invalidation_failures() const { return failures_.load(); }
    void invalidation_failed() { failures_++; }
    void invalidations_recovered(std::uint64_t up_to);

    // Table fallbacks per (cache rule, table): which [[invalidate]] rules
    // are missing. Returns true the first time a pair is seen.
    bool count_fallback(const std::string& rule, const std::string& table);
    std::map<std::pair<std::string, std::string>, std::uint64_t> fallback_counts() const;

private:
    Config config_;
    std::unique_ptr<ssl::context> client_tls_;
    UpstreamTls upstream_tls_;
    CancelRegistry cancels_;
    Inflight inflight_;
    Counters counters_;
    Latencies latencies_;
    RuleStatsRegistry rule_stats_;
    UncachedReadLog uncached_reads_;
    ClientRegistry clients_;
    std::atomic<bool> draining_{false};
    std::atomic<bool> postgres_reachable_{false};
    std::optional<RedisEndpoint> redis_endpoint_;
    mutable std::mutex rules_mutex_;
    std::shared_ptr<const cache_rules::RuleSet> rules_;
    mutable std::mutex fallback_mutex_;
    std::map<std::pair<std::string, std::string>, std::uint64_t> fallbacks_;
    std::atomic<std::uint64_t> failures_{0};
    std::atomic<std::uint64_t> recovered_{0};
};

}  // namespace pgshelf::proxy
