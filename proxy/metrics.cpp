// Builds metric families from the runtime's counters at scrape time; see metrics.hpp.
#include "proxy/metrics.hpp"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

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

MetricFamily counter(std::string name, std::string help, double value) {
    auto f = family(std::move(name), std::move(help), MetricType::Counter);
    add(f, value);
    return f;
}

}  // namespace

std::string render_metrics(const Runtime& runtime) {
    auto& c = const_cast<Runtime&>(runtime).counters();
    std::vector<MetricFamily> families;

    auto connections = family("pgshelf_client_connections", "Client connections open now", MetricType::Gauge);
    add(connections, static_cast<double>(c.connections_current.load()));
    families.push_back(std::move(connections));
    families.push_back(counter("pgshelf_client_connections_total", "Client connections accepted",
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
    families.push_back(std::move(requests));
    families.push_back(counter("pgshelf_cache_bypass_total", "Statements no cache rule applies to",
                               static_cast<double>(c.bypasses.load())));

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
