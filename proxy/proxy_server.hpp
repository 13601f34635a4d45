// The listening side: one io_context per worker thread, an acceptor that
// hands new connections to workers in turn, and signal handling (SIGTERM /
// SIGINT drain, a second one exits at once; SIGHUP reloads the rules file).
#pragma once

#include <list>
#include <memory>
#include <thread>
#include <vector>

#include "proxy/asio.hpp"
#include "proxy/runtime.hpp"

namespace pgshelf::proxy {

class CacheEngine;
class ClientSession;

class ProxyServer {
public:
    explicit ProxyServer(Config config);
    ~ProxyServer();

    // Binds, serves until drained, and returns the process exit code.
    int run();

private:
    struct Worker {
        asio::io_context context{1};
        std::unique_ptr<CacheEngine> cache;
        std::list<std::weak_ptr<ClientSession>> sessions;  // touched only on this worker's thread
        std::thread thread;
    };

    awaitable<void> accept_loop();
    awaitable<void> handle_signals();
    awaitable<void> drain();
    void stop_workers();
    // Runs `action` on every live session, each on its own worker.
    void post_to_sessions(void (ClientSession::*action)());

    Runtime runtime_;
    asio::io_context control_{1};
    tcp::acceptor acceptor_;
    tcp::acceptor admin_acceptor_;
    std::vector<std::unique_ptr<Worker>> workers_;
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work_guards_;
    std::uint64_t next_session_id_ = 1;
    bool draining_ = false;
};

}  // namespace pgshelf::proxy
