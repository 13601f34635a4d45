// Opens the connection to PostgreSQL: resolve, connect with a deadline,
// then negotiate TLS as the configured sslmode asks (like libpq does).
#pragma once

#include <memory>
#include <string>

#include "proxy/config.hpp"
#include "proxy/stream.hpp"

namespace pgshelf::proxy {

struct UpstreamTls {
    // Built once from the config; shared by all sessions of a worker.
    explicit UpstreamTls(const UpstreamConfig& config);
    ssl::context context;
};

struct ServerConnection {
    std::unique_ptr<Stream> stream;
    std::string error;  // set when stream is null: what to tell the client
};

awaitable<ServerConnection> connect_to_server(const UpstreamConfig& config, UpstreamTls& tls);

// Whether the server accepts connections: connects and asks for TLS, which
// the postmaster answers without authentication. Returns empty when it
// answered, else what went wrong.
awaitable<std::string> probe_server(const UpstreamConfig& config);

// Sends a CancelRequest for `pid`/`secret` on a fresh connection, as
// PostgreSQL expects (no reply; the server closes the connection).
awaitable<void> send_cancel(const UpstreamConfig& config, std::int32_t pid, std::int32_t secret);

}  // namespace pgshelf::proxy
