// Stream::read_some over loopback TCP: the reads that skip Asio's first try
// after a short read (quiet_read.hpp) must still see every byte and every
// end of stream they are meant to see.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include "proxy/stream.hpp"

namespace pgshelf::proxy {
namespace {

using namespace std::chrono_literals;
using PeerTurn = Stream::PeerTurn;
using ReadResult = std::tuple<error_code, std::size_t>;

// A connected pair on 127.0.0.1: `ours` wrapped in a Stream, `peer` raw.
struct Pair {
    asio::io_context io;
    tcp::socket peer{io};
    std::optional<Stream> ours;
    std::optional<ReadResult> result;

    Pair() {
        tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
        peer.connect(acceptor.local_endpoint());
        ours.emplace(acceptor.accept());
    }

    // Starts one read and runs it as far as it goes without waiting.
    void start_read(asio::mutable_buffer buffer, PeerTurn turn) {
        result.reset();
        asio::co_spawn(io, [this, buffer, turn]() -> awaitable<void> { result = co_await ours->read_some(buffer, turn); },
                       asio::detached);
        io.restart();
        io.poll();
    }
    // Runs the read started last to completion, bounded so that a read that
    // never ends fails the test instead of hanging it.
    std::optional<ReadResult> finish_read() {
        io.restart();
        io.run_for(10s);
        return result;
    }
    std::optional<ReadResult> read(asio::mutable_buffer buffer, PeerTurn turn) {
        start_read(buffer, turn);
        return finish_read();
    }
    // The peer's bytes are in our receive queue (loopback delivers within the send).
    void wait_arrived(std::size_t n) {
        for (int i = 0; i < 1000 && ours->socket().available() < n; ++i) {
            std::this_thread::yield();
        }
        ASSERT_GE(ours->socket().available(), n);
    }
};

// The readiness edge that woke the first read is the only one for both the
// data and the FIN behind it; the second read must find the FIN anyway.
TEST(StreamRead, EndOfStreamQueuedBehindAShortReadIsSeen) {
    Pair pair;
    char buffer[1024];
    pair.start_read(asio::buffer(buffer), PeerTurn::may_send);
    ASSERT_FALSE(pair.result);  // waiting in the reactor
    const std::string notice("N\0\0\0\x05\0", 6);
    asio::write(pair.peer, asio::buffer(notice));
    pair.peer.shutdown(tcp::socket::shutdown_send);
    pair.wait_arrived(notice.size());

    auto first = pair.finish_read();
    ASSERT_TRUE(first);
    EXPECT_FALSE(std::get<0>(*first));
    EXPECT_EQ(std::get<1>(*first), notice.size());  // short: the queue was emptied up to the FIN

    auto second = pair.read(asio::buffer(buffer), PeerTurn::may_send);
    ASSERT_TRUE(second) << "the read after a short one waited for an edge the FIN had already spent";
    EXPECT_EQ(std::get<0>(*second), asio::error::eof);
}

TEST(StreamRead, ReadAfterShortReadGetsDataThatArrivesLater) {
    Pair pair;
    char buffer[1024];
    const std::string query("Q\0\0\0\x0bSELECT", 11);
    asio::write(pair.peer, asio::buffer(query));
    pair.wait_arrived(query.size());
    auto first = pair.read(asio::buffer(buffer), PeerTurn::may_send);
    ASSERT_TRUE(first);
    EXPECT_EQ(std::get<1>(*first), query.size());

    // The peer waits for our answer: the next read starts without trying
    // first, and bytes sent after that must still complete it.
    pair.start_read(asio::buffer(buffer), PeerTurn::waits_for_us);
    EXPECT_FALSE(pair.result);
    const std::string sync("S\0\0\0\4", 5);
    asio::write(pair.peer, asio::buffer(sync));
    auto second = pair.finish_read();
    ASSERT_TRUE(second);
    EXPECT_FALSE(std::get<0>(*second));
    EXPECT_EQ(std::string(buffer, std::get<1>(*second)), sync);
}

// A read that fills the buffer says nothing about the socket being empty:
// the next one tries first even when told the peer waits, because the rest
// of what arrived has no readiness edge of its own.
TEST(StreamRead, ReadThatFillsTheBufferLeavesTheNextOneTryingFirst) {
    Pair pair;
    char buffer[1000];
    pair.start_read(asio::buffer(buffer), PeerTurn::may_send);
    ASSERT_FALSE(pair.result);
    const std::string payload(2500, 'x');
    asio::write(pair.peer, asio::buffer(payload));
    pair.wait_arrived(payload.size());
    auto result = pair.finish_read();
    std::string got;
    while (result && !std::get<0>(*result)) {
        got.append(buffer, std::get<1>(*result));
        if (got.size() >= payload.size()) {
            break;
        }
        result = pair.read(asio::buffer(buffer), PeerTurn::waits_for_us);
    }
    ASSERT_TRUE(result) << "stalled after " << got.size() << " bytes";
    EXPECT_EQ(got, payload);
}

}  // namespace
}  // namespace pgshelf::proxy
