// Cache operations for one worker; see cache_engine.hpp.
#include "proxy/cache_engine.hpp"

#include <sstream>

#include <spdlog/spdlog.h>

#include "proxy/runtime.hpp"

namespace pgshelf::proxy {

namespace {

// Versions and generations outlive entries by far; an expired one only
// costs misses (see cache_store.hpp), so a day bounds Redis memory safely.
constexpr std::uint64_t version_ttl_ms = 24ull * 3600 * 1000;
// Another instance's fetch of the same entry: how long its lock lasts, and
// how long (at most attempts × interval) a second miss waits for it.
constexpr std::uint64_t fetch_lock_ms = 2000;
constexpr int fetch_poll_attempts = 10;
constexpr std::chrono::milliseconds fetch_poll_interval{20};

}  // namespace

CacheEngine::CacheEngine(asio::any_io_executor executor, Runtime& runtime)
    : executor_(executor), runtime_(runtime), global_key_(global_generation_key(prefix_)) {
    if (runtime_.redis_endpoint()) {
        redis_ = std::make_shared<RedisClient>(std::move(executor), *runtime_.redis_endpoint(),
                                               runtime_.redis_timeouts(), cache_scripts());
        redis_->set_breaker_observer([this] { report_circuit(); });
        redis_->start();
    }
}

CacheEngine::~CacheEngine() { stop(); }

void CacheEngine::stop() {
    if (redis_) {
        redis_->stop();
    }
}

std::shared_ptr<const cache_rules::RuleSet> CacheEngine::rules() const {
    if (!redis_) {
        return nullptr;
    }
    return runtime_.rules();
}

EntryAddress CacheEngine::address(const ReadPlan& plan) const {
    return entry_address(prefix_, plan.rendered, plan.rule->name, plan.namespace_hash);
}

awaitable<std::optional<std::vector<RedisReply>>> CacheEngine::execute(RedisRequest request, bool urgent) {
    const auto started = std::chrono::steady_clock::now();
    std::optional<std::vector<RedisReply>> replies;
    if (urgent) {
        replies = co_await redis_->execute_urgent(std::move(request));
    } else {
        replies = co_await redis_->execute(std::move(request));
    }
    runtime_.latencies().redis.observe(std::chrono::steady_clock::now() - started);
    report_circuit();
    co_return replies;
}

void CacheEngine::report_circuit() {
    // The breaker belongs to this worker; the process-wide gauge counts workers.
    const bool open = redis_->breaker_state() != CircuitBreaker::State::closed;
    if (open != circuit_reported_open_) {
        circuit_reported_open_ = open;
        runtime_.counters().redis_circuits_open += open ? 1 : -1;
    }
}

awaitable<std::optional<LookupResult>> CacheEngine::read_entry(const EntryAddress& where) {
    auto replies = co_await execute(lookup_request(where, global_key_));
    std::optional<LookupResult> result;
    if (replies) {
        result = parse_lookup(std::move(*replies));
    }
    if (!result) {
        runtime_.counters().redis_errors++;
    }
    co_return result;
}

awaitable<std::optional<LookupResult>> CacheEngine::lookup(const cache_rules::RuleSet& rules, const ReadPlan& plan) {
    if (!redis_ || runtime_.invalidation_lost()) {
        co_return std::nullopt;
    }
    const EntryAddress where = address(plan);
    auto result = co_await read_entry(where);
    if (!result) {
        co_return std::nullopt;
    }
    // Generations are created on first use (entries stored before they
    // existed could never be valid); then the entry is read once more, so the
    // first fill of a rule is stamped and stampede-protected like any other.
    if (!result->rule_generation || !result->global_generation) {
        std::vector<RedisCommand> create;
        if (!result->rule_generation) {
            create.push_back(bump_command(redis_->script_shas()[script_bump],
                                          rule_generation_key(prefix_, plan.rule->name), 0, true));
        }
        if (!result->global_generation) {
            create.push_back(bump_command(redis_->script_shas()[script_bump], global_key_, 0, true));
        }
        co_await execute(std::move(create));
        auto retried = co_await read_entry(where);
        if (!retried || !retried->rule_generation || !retried->global_generation) {
            result->hit = false;
            result->rule_generation.reset();  // no store with unknown generations
            co_return result;
        }
        result = std::move(retried);
    }
    co_return result;
}

awaitable<std::optional<LookupResult>> CacheEngine::wait_for_other_instance(const ReadPlan& plan) {
    if (!redis_) {
        co_return std::nullopt;
    }
    const EntryAddress where = address(plan);
    // Stampede across instances: the first miss takes a short lock (in the
    // entry's hash slot); the others poll briefly for its result.
    std::vector<RedisCommand> take_lock;
    take_lock.push_back({"SET", where.lock_key, "1", "NX", "PX", std::to_string(fetch_lock_ms)});
    auto locked = co_await execute(std::move(take_lock));
    if (!locked || locked->front()->type != REDIS_REPLY_NIL) {
        co_return std::nullopt;  // we hold the lock (or Redis is failing): go to PostgreSQL
    }
    runtime_.counters().fetch_waits++;
    asio::steady_timer pause(co_await asio::this_coro::executor);
    for (int attempt = 0; attempt < fetch_poll_attempts; ++attempt) {
        pause.expires_after(fetch_poll_interval);
        co_await pause.async_wait(use_nothrow);
        auto next = co_await read_entry(where);
        if (!next) {
            break;
        }
        if (next->hit) {
            runtime_.counters().coalesced++;
            co_return next;
        }
    }
    co_return std::nullopt;
}

void CacheEngine::release_fetch_lock(const ReadPlan& plan) {
    if (!redis_) {
        return;
    }
    asio::co_spawn(executor_,
                   [redis = redis_, key = address(plan).lock_key]() -> awaitable<void> {
                       std::vector<RedisCommand> del;
                       del.push_back({"DEL", key});
                       co_await redis->execute(std::move(del));
                   },
                   asio::detached);
}

namespace {

std::string cancel_key_name(std::string_view prefix, std::int32_t pid) {
    return std::string(prefix) + ":cancel:" + std::to_string(pid);
}

// Sessions end long before a day; DEL removes the key at the session's end.
constexpr std::uint64_t cancel_key_ttl_ms = 24ull * 3600 * 1000;
// Retraction of a cancel key: attempts, and the pause before attempt n + 1
// (n × this; about 2 s in all while Redis stays unreachable).
constexpr int retract_attempts = 6;
constexpr std::chrono::milliseconds retract_pause{100};

// Deletes a cancel key. Urgent, like an invalidation, and retried: slow
// replies under load open the circuit breaker, which resets the connection
// and drops what was queued on it, and a lost DEL leaves the key for its
// 24 h TTL.
awaitable<void> delete_cancel_key(std::shared_ptr<RedisClient> redis, std::string key) {
    for (int attempt = 1; attempt <= retract_attempts; ++attempt) {
        std::vector<RedisCommand> del;
        del.push_back({"DEL", key});
        if (co_await redis->execute_urgent(std::move(del)) || attempt == retract_attempts) {
            co_return;
        }
        asio::steady_timer pause(co_await asio::this_coro::executor, retract_pause * attempt);
        co_await pause.async_wait(use_nothrow);
    }
}

}  // namespace

void CacheEngine::publish_cancel_key(const ClientKey& client, const ServerKey& server) {
    if (!redis_) {
        return;
    }
    // "client-secret server-pid server-secret port host"
    std::string value = std::to_string(client.secret) + " " + std::to_string(server.pid) + " " +
                        std::to_string(server.secret) + " " + std::to_string(server.server.port) + " " +
                        server.server.host;
    publishing_->emplace(client.pid, false);
    asio::co_spawn(executor_,
                   [redis = redis_, publishing = publishing_, pid = client.pid,
                    key = cancel_key_name(prefix_, client.pid), value = std::move(value)]() -> awaitable<void> {
                       std::vector<RedisCommand> set;
                       set.push_back({"SET", key, value, "NX", "PX", std::to_string(cancel_key_ttl_ms)});
                       co_await redis->execute(std::move(set));
                       const auto it = publishing->find(pid);
                       const bool retracted_meanwhile = it != publishing->end() && it->second;
                       publishing->erase(pid);
                       if (retracted_meanwhile) {
                           co_await delete_cancel_key(redis, key);
                       }
                   },
                   asio::detached);
}

void CacheEngine::retract_cancel_key(std::int32_t client_pid) {
    if (!redis_) {
        return;
    }
    if (auto it = publishing_->find(client_pid); it != publishing_->end()) {
        it->second = true;  // the publication deletes the key once its SET is done
        return;
    }
    asio::co_spawn(executor_, delete_cancel_key(redis_, cancel_key_name(prefix_, client_pid)), asio::detached);
}

awaitable<std::optional<ServerKey>> CacheEngine::find_cancel_key(const ClientKey& client) {
    if (!redis_) {
        co_return std::nullopt;
    }
    std::vector<RedisCommand> get;
    get.push_back({"GET", cancel_key_name(prefix_, client.pid)});
    auto replies = co_await execute(std::move(get));
    if (!replies || replies->front()->type != REDIS_REPLY_STRING) {
        co_return std::nullopt;
    }
    std::istringstream in(std::string(replies->front()->str, replies->front()->len));
    std::int32_t secret = 0;
    ServerKey server;
    unsigned port = 0;
    if (!(in >> secret >> server.pid >> server.secret >> port >> server.server.host) || secret != client.secret ||
        port == 0 || port > 65535) {
        co_return std::nullopt;  // a wrong secret cancels nothing, as in PostgreSQL
    }
    server.server.port = static_cast<std::uint16_t>(port);
    co_return server;
}

awaitable<bool> CacheEngine::store(const ReadPlan& plan, const LookupResult& stamps, std::string_view payload) {
    if (!redis_ || !stamps.rule_generation || !stamps.global_generation || runtime_.invalidation_lost()) {
        co_return false;
    }
    RuleStats& stats = runtime_.rule_stats(plan.rule->name);
    if (payload.size() > plan.rule->max_entry_size) {
        runtime_.counters().stores_too_large++;
        stats.stores_too_large++;
        co_return false;
    }
    const auto ttl = static_cast<std::uint64_t>(plan.rule->ttl.count());
    std::vector<RedisCommand> commands;
    commands.push_back(store_command(redis_->script_shas()[script_store], address(plan), stamps, payload, ttl));
    auto replies = co_await execute(std::move(commands));
    if (!replies || replies->front()->type != REDIS_REPLY_INTEGER) {
        runtime_.counters().redis_errors++;
        co_return false;
    }
    if (replies->front()->integer != 1) {
        runtime_.counters().stores_stale++;
        stats.stores_stale++;
        co_return false;
    }
    runtime_.counters().stores++;
    stats.stores++;
    co_return true;
}

awaitable<bool> CacheEngine::invalidate(const WritePlan& plan) {
    if (plan.empty() || !redis_) {
        co_return true;
    }
    std::vector<RedisCommand> commands;
    const bool scripts_ready = redis_->script_shas().size() > script_bump;
    if (scripts_ready) {
        const std::string& bump = redis_->script_shas()[script_bump];
        for (const std::string& key : plan.keys) {
            commands.push_back(bump_command(bump, version_key(prefix_, key), version_ttl_ms));
        }
        for (const std::string& rule : plan.fallback_rules) {
            commands.push_back(bump_command(bump, rule_generation_key(prefix_, rule), 0));
        }
    }
    // (No co_await inside a conditional expression: GCC 12 miscompiles it.)
    std::optional<std::vector<RedisReply>> replies;
    if (scripts_ready) {
        // Urgent: the commit acknowledgement waits for it, and a local
        // reconnection backoff must not lose it while other instances,
        // already reconnected, serve from the same Redis.
        replies = co_await execute(std::move(commands), true);
    }
    bool ok = replies.has_value();
    if (ok) {
        for (const auto& reply : *replies) {
            ok = ok && reply->type == REDIS_REPLY_STRING;
        }
    }
    runtime_.counters().invalidations_explicit += plan.keys.size();
    runtime_.counters().invalidations_fallback += plan.fallback_rules.size();
    for (const std::string& rule : plan.key_rules) {
        runtime_.rule_stats(rule).invalidations_key++;
    }
    for (std::size_t i = 0; i < plan.fallback_rules.size(); ++i) {
        const std::string& rule = plan.fallback_rules[i];
        runtime_.rule_stats(rule).invalidations_fallback++;
        // An empty table: an operator's INVALIDATE RULE, not a missing rule.
        if (!plan.fallback_tables[i].empty() && runtime_.count_fallback(rule, plan.fallback_tables[i])) {
            spdlog::info("a write to {} invalidated every entry of cache rule '{}': no [[invalidate]] rule covers it; "
                         "add one to keep the rule's other entries",
                         plan.fallback_tables[i], rule);
        }
    }
    if (!ok) {
        runtime_.counters().invalidations_failed++;
        if (!runtime_.invalidation_lost()) {
            spdlog::warn("cache invalidation could not reach Redis: hits stop until the global generation is bumped");
        }
        runtime_.invalidation_failed();
    }
    co_return ok;
}

awaitable<void> CacheEngine::recover_lost_invalidations() {
    if (!redis_) {
        co_return;
    }
    asio::steady_timer tick(co_await asio::this_coro::executor);
    for (;;) {
        tick.expires_after(std::chrono::milliseconds(100));
        auto [ec] = co_await tick.async_wait(use_nothrow);
        if (ec) {
            co_return;
        }
        if (!runtime_.invalidation_lost() || redis_->script_shas().size() <= script_bump) {
            continue;
        }
        const auto failures = runtime_.invalidation_failures();
        std::vector<RedisCommand> bump;
        bump.push_back(bump_command(redis_->script_shas()[script_bump], global_key_, 0));
        // Urgent: until it lands, other instances may serve entries the lost invalidations made stale.
        auto replies = co_await execute(std::move(bump), true);
        if (replies && replies->front()->type == REDIS_REPLY_STRING) {
            runtime_.invalidations_recovered(failures);
            runtime_.counters().global_generation_bumps++;
            spdlog::info("global cache generation bumped after lost invalidations; hits resume");
        }
    }
}

}  // namespace pgshelf::proxy
