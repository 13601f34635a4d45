// The HTTP admin port (Boost.Beast): /metrics in Prometheus text format,
// /healthz (the process serves HTTP) and /readyz (PostgreSQL answers and
// pgshelf is not draining). Off unless admin.listen is set; meant for 127.0.0.1.
#pragma once

#include "proxy/asio.hpp"

namespace pgshelf::proxy {

class Runtime;

// Accepts and serves until the acceptor is closed.
awaitable<void> serve_admin(tcp::acceptor& acceptor, Runtime& runtime);

}  // namespace pgshelf::proxy
