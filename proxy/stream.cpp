// Plain-or-TLS stream; see stream.hpp.
#include "proxy/stream.hpp"

#include <openssl/ssl.h>

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
awaitable<std::tuple<error_code, std::size_t>> Stream::read_some(asio::mutable_buffer buffer) {
    if (tls_) {
        return tls_->async_read_some(buffer, use_nothrow);
    }
    return socket_.async_read_some(buffer, use_nothrow);
}

void Stream::close() {
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
}

}  // namespace pgshelf::proxy
