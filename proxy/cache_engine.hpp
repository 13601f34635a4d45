// The cache as the sessions of one worker thread use it: their Redis
// connection, the statement memo, and the three operations with their
// failure handling. Decisions are the planner's; this carries them out.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "cache_rules/shape_cache.hpp"
#include "proxy/cache_planner.hpp"
#include "proxy/cache_store.hpp"
#include "proxy/cancel_registry.hpp"
#include "proxy/redis_client.hpp"

namespace pgshelf::proxy {

class Runtime;

class CacheEngine {
public:
    CacheEngine(asio::any_io_executor executor, Runtime& runtime);
    ~CacheEngine();

    // The rules in force, or null when caching is off (no Redis or no rules).
    std::shared_ptr<const cache_rules::RuleSet> rules() const;
    cache_rules::ShapeCache& shapes() { return shapes_; }
    // The Redis key of the entry a read plan addresses.
    std::string entry_key(const ReadPlan& plan) const { return address(plan).entry_key; }

    // nullopt = Redis unavailable (the caller goes to PostgreSQL) or hits
    // suspended until a lost invalidation has been made good.
    awaitable<std::optional<LookupResult>> lookup(const cache_rules::RuleSet& rules, const ReadPlan& plan);
    // For the one session of this instance that is to fetch a missed entry:
    // takes the entry's short lock in Redis; when another pgshelf instance
    // holds it (and is fetching), waits briefly for that instance's result
    // and returns it (a hit). nullopt: go to PostgreSQL.
    awaitable<std::optional<LookupResult>> wait_for_other_instance(const ReadPlan& plan);
    // Stores a complete result; false when the entry went stale meanwhile,
    // was too large, or Redis failed.
    awaitable<bool> store(const ReadPlan& plan, const LookupResult& stamps, std::string_view payload);
    // A miss that will not store after all lets other instances stop waiting.
    void release_fetch_lock(const ReadPlan& plan);
    // Applies a write's invalidations. A failure is remembered
    // process-wide: no hits anywhere until the global generation is bumped.
    awaitable<bool> invalidate(const WritePlan& plan);

    // Runs on one worker: while an invalidation is lost, keeps trying to
    // bump the global generation, and clears the flag once it succeeded.
    awaitable<void> recover_lost_invalidations();

    // Cancel keys shared through Redis, so a CancelRequest that reaches
    // another pgshelf instance (behind a load balancer) finds its target.
    void publish_cancel_key(const ClientKey& client, const ServerKey& server);
    void retract_cancel_key(std::int32_t client_pid);
    awaitable<std::optional<ServerKey>> find_cancel_key(const ClientKey& client);

    void stop();

private:
    EntryAddress address(const ReadPlan& plan) const;
    // redis_->execute, timed, with the circuit breaker's state reported.
    awaitable<std::optional<std::vector<RedisReply>>> execute(RedisRequest request, bool urgent = false);
    awaitable<std::optional<std::vector<RedisReply>>> execute(const std::vector<RedisCommand>& commands,
                                                              bool urgent = false) {
        return execute(RedisRequest::of(commands), urgent);
    }
    // One GET of the entry with its version and generations; nullopt (and
    // counted as a Redis error) when Redis fails or answers nonsense.
    awaitable<std::optional<LookupResult>> read_entry(const EntryAddress& where);

    asio::any_io_executor executor_;
    Runtime& runtime_;
    std::shared_ptr<RedisClient> redis_;
    cache_rules::ShapeCache shapes_{10'000};
    std::string prefix_ = "pgshelf";
    std::string global_key_;
    // Client pids whose cancel key is still being published, and whether the
    // session has ended meanwhile: then the publication deletes the key after
    // its SET. Sent apart, both may wait for a reconnection and resume in
    // either order, and a SET after its DEL would outlive the session.
    std::shared_ptr<std::unordered_map<std::int32_t, bool>> publishing_ =
        std::make_shared<std::unordered_map<std::int32_t, bool>>();
    void report_circuit();
    bool circuit_reported_open_ = false;
};

}  // namespace pgshelf::proxy
