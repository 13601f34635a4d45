// A connection that is plain TCP or TLS over TCP, chosen at run time
// (SSLRequest answered 'S' towards clients, sslmode towards the server).
#pragma once

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "proxy/asio.hpp"

namespace pgshelf::proxy {

// Sends what `socket` takes now, without waiting: returns how much that was;
// `ec` is would_block when the socket was full, another error on a failure.
// A socket that cannot be made non-blocking sends nothing (ec clear).
template <typename ConstBufferSequence>
std::size_t send_now(tcp::socket& socket, const ConstBufferSequence& buffers, error_code& ec) {
    if (!socket.non_blocking()) {
        socket.non_blocking(true, ec);
        if (ec) {
            ec = {};
            return 0;
        }
    }
    return socket.write_some(buffers, ec);
}

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

    // Whose turn it is after the bytes read so far. `waits_for_us` when they
    // end with a message the peer must have answered before it sends more (a
    // client's Sync or Query; the server's ReadyForQuery): a read after one
    // that emptied the socket then waits for readiness without trying first.
    // Every other read tries first, so an end of stream queued behind the
    // last message (a backend's 57P02 notice, then FIN) is seen at once.
    // A peer that closes right after such a message is seen when pgshelf
    // next writes to it (its kernel answers with a reset): a client after
    // the response to its query, as PostgreSQL itself notices by default;
    // a backend killed just after its ReadyForQuery at the client's next
    // request.
    enum class PeerTurn { may_send, waits_for_us };

    awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer buffer,
                                                            PeerTurn turn = PeerTurn::may_send);
    template <typename ConstBufferSequence>
    awaitable<std::tuple<error_code, std::size_t>> write(const ConstBufferSequence& buffers) {
        error_code ec;
        const std::size_t sent = write_now(buffers, ec);
        if (ec || sent == asio::buffer_size(buffers)) {
            co_return std::tuple{ec, sent};
        }
        co_return co_await write_rest(buffers, sent);
    }

    // The first half of write(), without suspending: sends what the socket
    // takes now (plain TCP; nothing with TLS) and returns how much that was;
    // `ec` is set on a failure, not when the socket is full. Almost every
    // write fits in the socket's send buffer, so the relay loops call this
    // directly and finish without a coroutine frame or a completion posted
    // through the scheduler.
    template <typename ConstBufferSequence>
    std::size_t write_now(const ConstBufferSequence& buffers, error_code& ec) {
        ec = {};
        if (tls_) {
            return 0;
        }
        const std::size_t sent = send_now(socket_, buffers, ec);
        if (ec == asio::error::would_block) {
            ec = {};
        }
        return sent;
    }

    // The second half: sends `buffers` from byte `skip` on, waiting for room.
    template <typename ConstBufferSequence>
    awaitable<std::tuple<error_code, std::size_t>> write_rest(const ConstBufferSequence& buffers, std::size_t skip) {
        if (tls_) {
            co_return co_await asio::async_write(*tls_, buffers, use_nothrow);  // write_now sent nothing
        }
        auto rest = remaining(buffers, skip);
        auto [ec, sent] = co_await asio::async_write(socket_, rest, use_nothrow);
        co_return std::tuple{ec, skip + sent};
    }

    // Closes the socket; pending operations complete with an error.
    void close();

private:
    template <typename ConstBufferSequence>
    static std::vector<asio::const_buffer> remaining(const ConstBufferSequence& buffers, std::size_t skip) {
        std::vector<asio::const_buffer> rest;
        for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers); ++it) {
            asio::const_buffer piece(*it);
            if (skip >= piece.size()) {
                skip -= piece.size();
                continue;
            }
            rest.push_back(piece + skip);
            skip = 0;
        }
        return rest;
    }

    awaitable<std::tuple<error_code, std::size_t>> try_then_wait(asio::mutable_buffer buffer);

    tcp::socket socket_;
    std::unique_ptr<ssl::stream<tcp::socket&>> tls_;
    bool emptied_ = false;  // the last plain read came up short: see quiet_read.hpp
};

}  // namespace pgshelf::proxy
