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
    // Declared before control_, so destroyed after it: an accept still
    // pending on control_ at exit holds a socket of a worker's context,
    // which must outlive it.
    std::vector<std::unique_ptr<Worker>> workers_;
    asio::io_context control_{1};
    tcp::acceptor acceptor_;
    tcp::acceptor admin_acceptor_;
    // Caught from construction on, before any port listens: a SIGTERM sent
    // as soon as a port accepts must drain, not meet the default action.
    asio::signal_set signals_;
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work_guards_;
    std::uint64_t next_session_id_ = 1;
    bool draining_ = false;
};

}  // namespace pgshelf::proxy
