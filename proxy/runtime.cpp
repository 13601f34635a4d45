// Process-wide services; see runtime.hpp.
#include "proxy/runtime.hpp"

#include <stdexcept>

#include <spdlog/spdlog.h>

namespace pgshelf::proxy {

namespace {

std::unique_ptr<ssl::context> make_client_tls(const Config& config) {
    if (config.tls.cert_file.empty()) {
        return nullptr;
    }
    auto context = std::make_unique<ssl::context>(ssl::context::tls_server);
    context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                         ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
    error_code ec;
    context->use_certificate_chain_file(config.tls.cert_file, ec);
    if (ec) {
        throw std::runtime_error("cannot load tls.cert_file " + config.tls.cert_file + ": " + ec.message());
    }
    context->use_private_key_file(config.tls.key_file, ssl::context::pem, ec);
    if (ec) {
        throw std::runtime_error("cannot load tls.key_file " + config.tls.key_file + ": " + ec.message());
    }
    return context;
}

}  // namespace

Runtime::Runtime(Config config)
    : config_(std::move(config)), client_tls_(make_client_tls(config_)), upstream_tls_(config_.upstream) {
    if (!config_.redis.url.empty()) {
        RedisEndpoint endpoint;
        if (auto message = parse_redis_url(config_.redis.url, endpoint); !message.empty()) {
            throw std::runtime_error("redis.url: " + message);
        }
        redis_endpoint_ = endpoint;
    }
    if (!config_.rules.file.empty()) {
        auto loaded = cache_rules::load_rules_file(config_.rules.file);
        if (!loaded.ok()) {
            std::string message = "invalid rules:";
            for (const auto& error : loaded.errors) {
                message += "\n  " + error.to_string();
            }
            throw std::runtime_error(message);
        }
        set_rules(std::move(loaded.rules));
    }
}

RedisTimeouts Runtime::redis_timeouts() const {
    return {config_.redis.connect_timeout, config_.redis.command_timeout};
}

std::shared_ptr<const cache_rules::RuleSet> Runtime::rules() const {
    std::lock_guard lock(rules_mutex_);
    return rules_;
}

void Runtime::set_rules(std::shared_ptr<const cache_rules::RuleSet> rules) {
    // Every rule's series exist from the start, at 0: an alert on a rule's
    // hit ratio must not see "no data" until its first request.
    if (rules) {
        for (const auto& rule : rules->cache_rules()) {
            rule_stats_.get(rule.name);
        }
    }
    std::lock_guard lock(rules_mutex_);
    rules_ = std::move(rules);
}

Runtime::ReloadResult Runtime::reload_rules() {
    if (config_.rules.file.empty()) {
        spdlog::warn("reload: no rules file is configured (rules.file); nothing to reload");
        counters_.reloads_failed++;
        return {false, "no rules file is configured (rules.file)"};
    }
    auto loaded = cache_rules::load_rules_file(config_.rules.file);
    if (!loaded.ok()) {
        std::string errors;
        for (const auto& error : loaded.errors) {
            spdlog::error("reload: {}", error.to_string());
            errors += (errors.empty() ? "" : "\n") + error.to_string();
        }
        spdlog::error("reload: {} has errors; the rules in force are unchanged", config_.rules.file);
        counters_.reloads_failed++;
        return {false, errors};
    }
    const auto cache_count = loaded.rules->cache_rules().size();
    const auto invalidate_count = loaded.rules->invalidate_rules().size();
    set_rules(std::move(loaded.rules));
    counters_.reloads_ok++;
    spdlog::info("reload: {} loaded ({} cache rules, {} invalidate rules)", config_.rules.file, cache_count,
                 invalidate_count);
    return {true, fmt::format("{}: {} cache rules, {} invalidate rules", config_.rules.file, cache_count,
                              invalidate_count)};
}

std::string Runtime::redis_state() const {
    if (!redis_endpoint_) {
        return "not configured (caching off)";
    }
    if (const int open = counters_.redis_circuits_open.load(); open > 0) {
        return "unavailable (circuit open on " + std::to_string(open) + " workers; reads go to PostgreSQL)";
    }
    if (invalidation_lost()) {
        return "degraded (hits suspended until a lost invalidation is made good)";
    }
    return "ok";
}

bool Runtime::count_fallback(const std::string& rule, const std::string& table) {
    std::lock_guard lock(fallback_mutex_);
    return ++fallbacks_[{rule, table}] == 1;
}

std::map<std::pair<std::string, std::string>, std::uint64_t> Runtime::fallback_counts() const {
    std::lock_guard lock(fallback_mutex_);
    return fallbacks_;
}

void Runtime::invalidations_recovered(std::uint64_t up_to) {
    auto current = recovered_.load();
    while (current < up_to && !recovered_.compare_exchange_weak(current, up_to)) {
    }
}

}  // namespace pgshelf::proxy
