// Connection to PostgreSQL; see server_link.hpp.
#include "proxy/server_link.hpp"

#include "pgwire/codec.hpp"

namespace pgshelf::proxy {

using namespace asio::experimental::awaitable_operators;

UpstreamTls::UpstreamTls(const UpstreamConfig& config) : context(ssl::context::tls_client) {
    context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                        ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    if (config.sslmode == SslMode::verify_ca || config.sslmode == SslMode::verify_full) {
        context.set_verify_mode(ssl::verify_peer);
        error_code ec;
        if (config.sslrootcert.empty()) {
            context.set_default_verify_paths(ec);
        } else {
            context.load_verify_file(config.sslrootcert, ec);
        }
        // A missing CA file shows up as a failed handshake with a clear reason.
    } else {
        context.set_verify_mode(ssl::verify_none);
    }
}

namespace {

awaitable<std::tuple<error_code, std::unique_ptr<Stream>>> open_tcp(const UpstreamConfig& config) {
    auto executor = co_await asio::this_coro::executor;
    tcp::resolver resolver(executor);
    auto [resolve_ec, endpoints] =
        co_await resolver.async_resolve(config.endpoint.host, std::to_string(config.endpoint.port), use_nothrow);
    if (resolve_ec) {
        co_return std::make_tuple(resolve_ec, nullptr);
    }
    tcp::socket socket(executor);
    // Opened here, not by the connect loop: that loop reports a socket it
    // could not open (no descriptor left) as "Operation canceled".
    error_code open_ec;
    if (!endpoints.empty()) {
        socket.open(endpoints.begin()->endpoint().protocol(), open_ec);
    }
    if (open_ec) {
        co_return std::make_tuple(open_ec, nullptr);
    }
    asio::steady_timer deadline(executor, config.connect_timeout);
    auto result = co_await (asio::async_connect(socket, endpoints, use_nothrow) || deadline.async_wait(use_nothrow));
    if (result.index() == 1) {
        co_return std::make_tuple(error_code(asio::error::timed_out), nullptr);
    }
    auto [connect_ec, endpoint] = std::get<0>(result);
    if (connect_ec) {
        co_return std::make_tuple(connect_ec, nullptr);
    }
    socket.set_option(tcp::no_delay(true));
    co_return std::make_tuple(error_code{}, std::make_unique<Stream>(std::move(socket)));
}

std::string describe(const UpstreamConfig& config) {
    return config.endpoint.host + ":" + std::to_string(config.endpoint.port);
}

}  // namespace

awaitable<ServerConnection> connect_to_server(const UpstreamConfig& config, UpstreamTls& tls) {
    auto [ec, stream] = co_await open_tcp(config);
    if (ec) {
        co_return ServerConnection{nullptr, "could not connect to server " + describe(config) + ": " + ec.message()};
    }
    if (config.sslmode == SslMode::disable) {
        co_return ServerConnection{std::move(stream), {}};
    }
    std::string request;
    pgwire::encode(pgwire::StartupPacket{pgwire::SSLRequest{}}, request);
    auto [write_ec, written] = co_await stream->write(asio::buffer(request));
    char answer = 0;
    error_code read_ec = write_ec;
    if (!write_ec) {
        std::tie(read_ec, std::ignore) = co_await asio::async_read(stream->socket(), asio::buffer(&answer, 1), use_nothrow);
    }
    if (read_ec) {
        co_return ServerConnection{nullptr, "SSL negotiation with " + describe(config) + " failed: " + read_ec.message()};
    }
    if (answer == 'S') {
        // Named locals, not temporaries, in co_await expressions: GCC 12
        // destroys such temporaries twice.
        const std::string verify_host = config.sslmode == SslMode::verify_full ? config.endpoint.host : std::string{};
        auto handshake_ec = co_await stream->handshake_as_client(tls.context, config.endpoint.host, verify_host);
        if (handshake_ec) {
            co_return ServerConnection{nullptr,
                                       "SSL handshake with " + describe(config) + " failed: " + handshake_ec.message()};
        }
        co_return ServerConnection{std::move(stream), {}};
    }
    if (answer == 'N' && config.sslmode == SslMode::prefer) {
        co_return ServerConnection{std::move(stream), {}};
    }
    if (answer == 'N') {
        co_return ServerConnection{nullptr, "server " + describe(config) +
                                                " does not support SSL, but pgshelf's upstream sslmode requires it"};
    }
    co_return ServerConnection{nullptr, "server " + describe(config) + " sent an invalid answer to SSLRequest"};
}

awaitable<std::string> probe_server(const UpstreamConfig& config) {
    auto [ec, stream] = co_await open_tcp(config);
    if (ec) {
        co_return "cannot connect to " + describe(config) + ": " + ec.message();
    }
    // An answer to SSLRequest comes from the postmaster itself: a listening
    // socket of a server that is shutting down or hung does not give one.
    std::string request;
    pgwire::encode(pgwire::StartupPacket{pgwire::SSLRequest{}}, request);
    co_await stream->write(asio::buffer(request));
    char answer = 0;
    asio::steady_timer deadline(co_await asio::this_coro::executor, config.connect_timeout);
    auto result = co_await (asio::async_read(stream->socket(), asio::buffer(&answer, 1), use_nothrow) ||
                            deadline.async_wait(use_nothrow));
    if (result.index() == 1) {
        co_return describe(config) + " did not answer in time";
    }
    if (std::get<0>(std::get<0>(result)) || (answer != 'S' && answer != 'N')) {
        co_return describe(config) + " did not answer like a PostgreSQL server";
    }
    co_return std::string{};
}

awaitable<void> send_cancel(const UpstreamConfig& config, std::int32_t pid, std::int32_t secret) {
    auto [ec, stream] = co_await open_tcp(config);
    if (ec) {
        co_return;
    }
    std::string request;
    pgwire::encode(pgwire::StartupPacket{pgwire::CancelRequest{pid, secret}}, request);
    co_await stream->write(asio::buffer(request));
    // Wait for the server to close, so the cancel is processed before the
    // client's own connection (which it may close right after) goes away.
    char sink[16];
    asio::steady_timer deadline(co_await asio::this_coro::executor, config.connect_timeout);
    co_await (stream->read_some(asio::buffer(sink)) || deadline.async_wait(use_nothrow));
}

}  // namespace pgshelf::proxy
