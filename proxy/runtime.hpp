// Process-wide services shared by all sessions and worker threads: the
// configuration, TLS contexts, the cancel-key registry, and counters.
#pragma once

#include <atomic>
#include <memory>

#include "proxy/cancel_registry.hpp"
#include "proxy/config.hpp"
#include "proxy/server_link.hpp"

namespace pgshelf::proxy {

struct Counters {
    std::atomic<std::uint64_t> connections_total{0};
    std::atomic<std::int64_t> connections_current{0};
    std::atomic<std::uint64_t> connections_refused{0};
    std::atomic<std::uint64_t> protocol_errors{0};
    std::atomic<std::uint64_t> server_connect_errors{0};
    std::atomic<std::uint64_t> cancels_forwarded{0};
    std::atomic<std::uint64_t> bookkeeping_desyncs{0};
};

class Runtime {
public:
    // Throws std::runtime_error when TLS files cannot be loaded (start-up is
    // the place for fatal configuration errors).
    explicit Runtime(Config config);

    const Config& config() const { return config_; }
    // TLS towards clients; null when not configured.
    ssl::context* client_tls() { return client_tls_.get(); }
    UpstreamTls& upstream_tls() { return upstream_tls_; }
    CancelRegistry& cancels() { return cancels_; }
    Counters& counters() { return counters_; }

private:
    Config config_;
    std::unique_ptr<ssl::context> client_tls_;
    UpstreamTls upstream_tls_;
    CancelRegistry cancels_;
    Counters counters_;
};

}  // namespace pgshelf::proxy
