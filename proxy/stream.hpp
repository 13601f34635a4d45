// A connection that is plain TCP or TLS over TCP, chosen at run time
// (SSLRequest answered 'S' towards clients, sslmode towards the server).
#pragma once

#include <memory>
#include <string>
#include <tuple>

#include "proxy/asio.hpp"

namespace pgshelf::proxy {

class Stream {
public:
    explicit Stream(tcp::socket socket) : socket_(std::move(socket)) {}
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;

    tcp::socket& socket() { return socket_; }
    bool is_tls() const { return tls_ != nullptr; }

    // TLS server side (towards a client). Precondition: no TLS yet.
    awaitable<error_code> handshake_as_server(ssl::context& context);
    // TLS client side (towards PostgreSQL). `verify_host` empty = no name check.
    awaitable<error_code> handshake_as_client(ssl::context& context, const std::string& sni,
                                              const std::string& verify_host);

    awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer buffer);
    template <typename ConstBufferSequence>
    awaitable<std::tuple<error_code, std::size_t>> write(const ConstBufferSequence& buffers) {
        if (tls_) {
            co_return co_await asio::async_write(*tls_, buffers, use_nothrow);
        }
        co_return co_await asio::async_write(socket_, buffers, use_nothrow);
    }

    // Closes the socket; pending operations complete with an error.
    void close();

private:
    tcp::socket socket_;
    std::unique_ptr<ssl::stream<tcp::socket&>> tls_;
};

}  // namespace pgshelf::proxy
