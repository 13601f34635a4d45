// Listening side and process lifecycle; see proxy_server.hpp.
#include "proxy/proxy_server.hpp"

#include <csignal>

#include <spdlog/spdlog.h>

#include "proxy/admin_http.hpp"
#include "proxy/cache_engine.hpp"
#include "proxy/client_session.hpp"
#include "proxy/logging.hpp"

namespace pgshelf::proxy {

ProxyServer::ProxyServer(Config config)
    : runtime_(std::move(config)),
      acceptor_(control_),
      admin_acceptor_(control_),
      signals_(control_, SIGTERM, SIGINT, SIGHUP) {
    unsigned count = runtime_.config().proxy.workers;
    if (count == 0) {
        count = std::max(1u, std::thread::hardware_concurrency());
    }
    for (unsigned i = 0; i < count; ++i) {
        workers_.push_back(std::make_unique<Worker>());
        work_guards_.push_back(asio::make_work_guard(workers_.back()->context));
        workers_.back()->cache = std::make_unique<CacheEngine>(workers_.back()->context.get_executor(), runtime_);
    }
    // One worker watches for lost invalidations and makes them good.
    asio::co_spawn(workers_.front()->context, workers_.front()->cache->recover_lost_invalidations(), asio::detached);
}

ProxyServer::~ProxyServer() { stop_workers(); }

int ProxyServer::run() {
    const Config& config = runtime_.config();
    error_code ec;
    tcp::resolver resolver(control_);
    auto endpoints = resolver.resolve(config.listen.host, std::to_string(config.listen.port), ec);
    if (ec || endpoints.empty()) {
        spdlog::critical("cannot resolve listen address {}: {}", config.listen.host, ec.message());
        return 1;
    }
    const tcp::endpoint endpoint = *endpoints.begin();
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) {
        acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
        acceptor_.bind(endpoint, ec);
    }
    if (!ec) {
        acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
        spdlog::critical("cannot listen on {}:{}: {}", config.listen.host, config.listen.port, ec.message());
        return 1;
    }
    if (!config.admin.listen.empty()) {
        Endpoint admin;
        parse_endpoint(config.admin.listen, admin);  // validated when the config was loaded
        auto admin_endpoints = resolver.resolve(admin.host, std::to_string(admin.port), ec);
        if (!ec && !admin_endpoints.empty()) {
            const tcp::endpoint where = *admin_endpoints.begin();
            admin_acceptor_.open(where.protocol(), ec);
            if (!ec) {
                admin_acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
                admin_acceptor_.bind(where, ec);
            }
            if (!ec) {
                admin_acceptor_.listen(asio::socket_base::max_listen_connections, ec);
            }
        }
        if (ec) {
            spdlog::critical("cannot listen on admin address {}: {}", config.admin.listen, ec.message());
            return 1;
        }
        asio::co_spawn(control_, serve_admin(admin_acceptor_, runtime_), asio::detached);
        spdlog::info("admin HTTP on {} (/metrics, /healthz, /readyz)", config.admin.listen);
    }
    for (auto& worker : workers_) {
        worker->thread = std::thread([&context = worker->context] { context.run(); });
    }
    spdlog::info("pgshelf listening on {}:{}, upstream {}:{} (sslmode {}), {} workers", config.listen.host,
                 config.listen.port, config.upstream.endpoint.host, config.upstream.endpoint.port,
                 to_string(config.upstream.sslmode), workers_.size());

    asio::co_spawn(control_, accept_loop(), asio::detached);
    asio::co_spawn(control_, handle_signals(), asio::detached);
    control_.run();
    stop_workers();
    spdlog::info("pgshelf stopped");
    return 0;
}

awaitable<void> ProxyServer::accept_loop() {
    std::size_t next_worker = 0;
    while (acceptor_.is_open()) {
        Worker& worker = *workers_[next_worker];
        next_worker = (next_worker + 1) % workers_.size();
        auto [ec, socket] = co_await acceptor_.async_accept(worker.context, use_nothrow);
        if (ec) {
            if (ec == asio::error::operation_aborted || !acceptor_.is_open()) {
                co_return;
            }
            // Out of file descriptors and the like: back off instead of spinning.
            static SharedLogRateLimiter accept_warnings;
            if (const auto suppressed = accept_warnings.allow()) {
                spdlog::warn("accept failed: {}{}", ec.message(), suppressed_note(*suppressed));
            }
            asio::steady_timer pause(control_, std::chrono::milliseconds(50));
            co_await pause.async_wait(use_nothrow);
            continue;
        }
        auto session =
            std::make_shared<ClientSession>(runtime_, worker.cache.get(), std::move(socket), next_session_id_++);
        asio::co_spawn(
            worker.context,
            [&worker, session]() -> awaitable<void> {
                worker.sessions.push_front(session);
                auto position = worker.sessions.begin();
                co_await session->run();
                worker.sessions.erase(position);
            },
            [id = next_session_id_ - 1](std::exception_ptr failure) {
                if (failure) {
                    try {
                        std::rethrow_exception(failure);
                    } catch (const std::exception& e) {
                        spdlog::error("conn {} failed: {}", id, e.what());
                    }
                }
            });
    }
}

awaitable<void> ProxyServer::handle_signals() {
    for (;;) {
        auto [ec, number] = co_await signals_.async_wait(use_nothrow);
        if (ec) {
            co_return;
        }
        if (number == SIGHUP) {
            // In-flight requests keep the rule set they started with.
            spdlog::info("SIGHUP received: reloading the rules file");
            runtime_.reload_rules();
            continue;
        }
        if (draining_) {
            spdlog::warn("second shutdown signal: exiting now");
            std::_Exit(0);
        }
        spdlog::info("{} received: draining (up to {} ms)", number == SIGTERM ? "SIGTERM" : "SIGINT",
                     runtime_.config().proxy.shutdown_timeout.count());
        asio::co_spawn(control_, drain(), asio::detached);
    }
}

awaitable<void> ProxyServer::drain() {
    draining_ = true;
    runtime_.set_draining();
    error_code ignored;
    acceptor_.close(ignored);
    // The admin port stays open until exit, so probes see /readyz fail.
    post_to_sessions(&ClientSession::begin_drain);
    const auto deadline = std::chrono::steady_clock::now() + runtime_.config().proxy.shutdown_timeout;
    asio::steady_timer tick(control_);
    while (runtime_.counters().connections_current.load() > 0 && std::chrono::steady_clock::now() < deadline) {
        tick.expires_after(std::chrono::milliseconds(50));
        co_await tick.async_wait(use_nothrow);
    }
    const auto left = runtime_.counters().connections_current.load();
    if (left > 0) {
        spdlog::warn("shutdown timeout: closing {} remaining connections", left);
        post_to_sessions(&ClientSession::end_for_shutdown);
        // Long enough for the goodbye (57P01) to reach idle clients.
        const auto grace = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
        while (runtime_.counters().connections_current.load() > 0 && std::chrono::steady_clock::now() < grace) {
            tick.expires_after(std::chrono::milliseconds(20));
            co_await tick.async_wait(use_nothrow);
        }
    }
    control_.stop();
}

void ProxyServer::post_to_sessions(void (ClientSession::*action)()) {
    for (auto& worker : workers_) {
        asio::post(worker->context, [&w = *worker, action] {
            for (auto& weak : w.sessions) {
                if (auto session = weak.lock()) {
                    (session.get()->*action)();
                }
            }
        });
    }
}

void ProxyServer::stop_workers() {
    for (auto& worker : workers_) {
        if (worker->cache) {
            asio::post(worker->context, [cache = worker->cache.get()] { cache->stop(); });
        }
    }
    work_guards_.clear();
    for (auto& worker : workers_) {
        worker->context.stop();
    }
    for (auto& worker : workers_) {
        if (worker->thread.joinable()) {
            worker->thread.join();
        }
    }
}

}  // namespace pgshelf::proxy
