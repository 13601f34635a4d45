// Plain-or-TLS stream; see stream.hpp.
#include "proxy/stream.hpp"

#include <openssl/ssl.h>

#include "proxy/quiet_read.hpp"

namespace pgshelf::proxy {

awaitable<error_code> Stream::handshake_as_server(ssl::context& context) {
    tls_ = std::make_unique<ssl::stream<tcp::socket&>>(socket_, context);
    auto [ec] = co_await tls_->async_handshake(ssl::stream_base::server, use_nothrow);
    co_return ec;
}

awaitable<error_code> Stream::handshake_as_client(ssl::context& context, const std::string& sni,
                                                  const std::string& verify_host) {
    tls_ = std::make_unique<ssl::stream<tcp::socket&>>(socket_, context);
    if (!sni.empty()) {
        SSL_set_tlsext_host_name(tls_->native_handle(), sni.c_str());
    }
    if (!verify_host.empty()) {
        tls_->set_verify_callback(ssl::host_name_verification(verify_host));
    }
    auto [ec] = co_await tls_->async_handshake(ssl::stream_base::client, use_nothrow);
    co_return ec;
}

// Not a coroutine: it hands out the read's own awaitable, one coroutine
// frame less per read on the relay path.
awaitable<std::tuple<error_code, std::size_t>> Stream::read_some(asio::mutable_buffer buffer, PeerTurn turn) {
    if (tls_) {
        return tls_->async_read_some(buffer, use_nothrow);
    }
    if (emptied_ && turn == PeerTurn::may_send) {
        return try_then_wait(buffer);
    }
    return socket_.async_receive(ShortReadEmpties{buffer, &emptied_}, use_nothrow);
}

// The first try the reactor now skips, made here: it returns an end of
// stream that arrived with the last data (no readiness edge is left for it).
awaitable<std::tuple<error_code, std::size_t>> Stream::try_then_wait(asio::mutable_buffer buffer) {
    error_code ec;
    if (!socket_.non_blocking()) {
        socket_.non_blocking(true, ec);
    }
    std::size_t n = 0;
    if (!ec) {
        n = socket_.receive(buffer, 0, ec);
    }
    if (ec != asio::error::would_block) {
        emptied_ = !ec && n < buffer.size();
        co_return std::tuple{ec, n};
    }
    co_return co_await socket_.async_receive(ShortReadEmpties{buffer, &emptied_}, use_nothrow);
}

void Stream::close() {
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
}

}  // namespace pgshelf::proxy
