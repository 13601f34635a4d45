// Builds metric families from the runtime's counters at scrape time; see metrics.hpp.
#include "proxy/metrics.hpp"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <limits>
#include <sstream>

#include "proxy/runtime.hpp"

namespace pgshelf::proxy {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily family(std::string name, std::string help, MetricType type) {
    return MetricFamily{std::move(name), std::move(help), type, {}};
}

void add(MetricFamily& f, double value, std::vector<ClientMetric::Label> labels = {}) {
    ClientMetric m;
    m.label = std::move(labels);
    if (f.type == MetricType::Gauge) {
        m.gauge.value = value;
    } else {
        m.counter.value = value;
    }
    f.metric.push_back(std::move(m));
}

MetricFamily gauge(std::string name, std::string help, double value) {
    auto f = family(std::move(name), std::move(help), MetricType::Gauge);
    add(f, value);
    return f;
}

MetricFamily histogram(std::string name, std::string help, const LatencyHistogram& source) {
    auto f = family(std::move(name), std::move(help), MetricType::Histogram);
    const auto snapshot = source.snapshot();
    ClientMetric m;
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < LatencyHistogram::bounds.size(); ++i) {
        cumulative += snapshot.counts[i];
        m.histogram.bucket.push_back({cumulative, LatencyHistogram::bounds[i]});
    }
    m.histogram.bucket.push_back({snapshot.count, std::numeric_limits<double>::infinity()});
    m.histogram.sample_count = snapshot.count;
    m.histogram.sample_sum = snapshot.sum_seconds;
    f.metric.push_back(std::move(m));
    return f;
}

MetricFamily counter(std::string name, std::string help, double value) {
    auto f = family(std::move(name), std::move(help), MetricType::Counter);
    add(f, value);
    return f;
}

}  // namespace

std::string render_metrics(const Runtime& runtime) {
    auto& c = const_cast<Runtime&>(runtime).counters();
    std::vector<MetricFamily> families;

    families.push_back(gauge("pgshelf_ready", "1 when PostgreSQL answers and pgshelf is not draining",
                             runtime.postgres_reachable() && !runtime.draining() ? 1 : 0));
    families.push_back(gauge("pgshelf_draining", "1 after SIGTERM/SIGINT, while sessions finish",
                             runtime.draining() ? 1 : 0));
    families.push_back(gauge("pgshelf_server_connections", "Connections to PostgreSQL open now",
                             static_cast<double>(c.server_connections.load())));
    auto connections = family("pgshelf_client_connections", "Client connections open now", MetricType::Gauge);
    add(connections, static_cast<double>(c.connections_current.load()));
    families.push_back(std::move(connections));
    families.push_back(counter("pgshelf_client_connections_accepted_total", "Client connections accepted",
                               static_cast<double>(c.connections_total.load())));
    families.push_back(counter("pgshelf_client_connections_refused_total",
                               "Client connections refused by proxy.max_connections",
                               static_cast<double>(c.connections_refused.load())));
    families.push_back(counter("pgshelf_protocol_errors_total", "Sessions ended for a client protocol violation",
                               static_cast<double>(c.protocol_errors.load())));
    families.push_back(counter("pgshelf_server_connect_errors_total", "Failed connections to PostgreSQL",
                               static_cast<double>(c.server_connect_errors.load())));
    families.push_back(counter("pgshelf_cancels_forwarded_total", "CancelRequests forwarded to PostgreSQL",
                               static_cast<double>(c.cancels_forwarded.load())));

    auto requests = family("pgshelf_cache_requests_total", "Cacheable-read requests by outcome", MetricType::Counter);
    add(requests, static_cast<double>(c.hits.load()), {{"outcome", "hit"}});
    add(requests, static_cast<double>(c.misses.load()), {{"outcome", "miss"}});
    add(requests, static_cast<double>(c.coalesced.load()), {{"outcome", "coalesced"}});
    add(requests, static_cast<double>(c.fetch_waits.load()), {{"outcome", "waited"}});
    families.push_back(std::move(requests));
    auto bypasses = family("pgshelf_cache_bypass_total",
                           "Statements sent to PostgreSQL without a cache lookup, by reason", MetricType::Counter);
    for (std::size_t i = 1; i < c.bypasses.size(); ++i) {
        const auto reason = cache_rules::to_string(static_cast<cache_rules::BypassReason>(i));
        add(bypasses, static_cast<double>(c.bypasses[i].load()), {{"reason", std::string(reason)}});
    }
    families.push_back(std::move(bypasses));
    families.push_back(counter("pgshelf_cache_served_bytes_total", "Result bytes answered from the cache",
                               static_cast<double>(c.served_bytes.load())));

    auto rule_requests = family("pgshelf_rule_requests_total", "Cache lookups per rule by outcome", MetricType::Counter);
    auto rule_stores = family("pgshelf_rule_stores_total", "Results offered to the cache per rule by outcome",
                              MetricType::Counter);
    auto rule_invalidations = family("pgshelf_rule_invalidations_total", "Invalidations per rule by kind",
                                     MetricType::Counter);
    for (const auto& [rule, stats] : runtime.rule_stats().all()) {
        add(rule_requests, static_cast<double>(stats->hits.load()), {{"rule", rule}, {"outcome", "hit"}});
        add(rule_requests, static_cast<double>(stats->misses.load()), {{"rule", rule}, {"outcome", "miss"}});
        add(rule_stores, static_cast<double>(stats->stores.load()), {{"rule", rule}, {"outcome", "stored"}});
        add(rule_stores, static_cast<double>(stats->stores_stale.load()), {{"rule", rule}, {"outcome", "stale"}});
        add(rule_stores, static_cast<double>(stats->stores_too_large.load()),
            {{"rule", rule}, {"outcome", "too_large"}});
        add(rule_invalidations, static_cast<double>(stats->invalidations_key.load()), {{"rule", rule}, {"kind", "key"}});
        add(rule_invalidations, static_cast<double>(stats->invalidations_fallback.load()),
            {{"rule", rule}, {"kind", "table_fallback"}});
    }
    families.push_back(std::move(rule_requests));
    families.push_back(std::move(rule_stores));
    families.push_back(std::move(rule_invalidations));

    const auto& latencies = runtime.latencies();
    families.push_back(histogram("pgshelf_cache_hit_duration_seconds",
                                 "Time from a request's arrival to its answer from the cache", latencies.hit));
    families.push_back(histogram("pgshelf_cache_miss_duration_seconds",
                                 "Time from a cacheable request's arrival to the end of PostgreSQL's answer",
                                 latencies.miss));
    families.push_back(histogram("pgshelf_redis_command_duration_seconds",
                                 "Round trip of one pipelined batch of Redis commands", latencies.redis));
    families.push_back(gauge("pgshelf_redis_circuit_open",
                             "Workers whose Redis circuit breaker is open (their reads go to PostgreSQL)",
                             c.redis_circuits_open.load()));

    auto stores = family("pgshelf_cache_stores_total", "Results offered to the cache by outcome", MetricType::Counter);
    add(stores, static_cast<double>(c.stores.load()), {{"outcome", "stored"}});
    add(stores, static_cast<double>(c.stores_stale.load()), {{"outcome", "stale"}});
    add(stores, static_cast<double>(c.stores_too_large.load()), {{"outcome", "too_large"}});
    families.push_back(std::move(stores));

    auto invalidations = family("pgshelf_cache_invalidations_total", "Invalidations by kind", MetricType::Counter);
    add(invalidations, static_cast<double>(c.invalidations_explicit.load()), {{"kind", "key"}});
    add(invalidations, static_cast<double>(c.invalidations_fallback.load()), {{"kind", "table_fallback"}});
    add(invalidations, static_cast<double>(c.invalidations_failed.load()), {{"kind", "failed"}});
    families.push_back(std::move(invalidations));

    auto fallbacks = family("pgshelf_cache_table_fallback_total",
                            "Whole-rule invalidations by a write no [[invalidate]] rule covers", MetricType::Counter);
    for (const auto& [pair, count] : runtime.fallback_counts()) {
        add(fallbacks, static_cast<double>(count), {{"rule", pair.first}, {"table", pair.second}});
    }
    families.push_back(std::move(fallbacks));

    families.push_back(counter("pgshelf_cache_global_generation_bumps_total",
                               "Global generation bumps after invalidations that could not reach Redis",
                               static_cast<double>(c.global_generation_bumps.load())));
    families.push_back(counter("pgshelf_redis_errors_total", "Redis calls that failed or timed out",
                               static_cast<double>(c.redis_errors.load())));
    auto reloads = family("pgshelf_config_reloads_total", "Rules file reloads (SIGHUP) by outcome",
                          MetricType::Counter);
    add(reloads, static_cast<double>(c.reloads_ok.load()), {{"outcome", "ok"}});
    add(reloads, static_cast<double>(c.reloads_failed.load()), {{"outcome", "failed"}});
    families.push_back(std::move(reloads));
    auto lost = family("pgshelf_cache_hits_suspended", "1 while hits wait for a lost invalidation to be made good",
                       MetricType::Gauge);
    add(lost, runtime.invalidation_lost() ? 1 : 0);
    families.push_back(std::move(lost));

    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, families);
    return out.str();
}

}  // namespace pgshelf::proxy
