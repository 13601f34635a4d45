// RedisClient against a real redis-server: when a lookup counts as timed out.
#include "proxy/redis_client.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <vector>

#include "redis_server.hpp"

namespace pgshelf::proxy {
namespace {

using namespace std::chrono_literals;

// Keeps Redis busy for ARGV[1] milliseconds, then answers.
constexpr const char* busy_script = R"(
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
  local now = redis.call('TIME')
until now[1] * 1000000 + now[2] - start >= tonumber(ARGV[1]) * 1000
return 1)";

class RedisClientTest : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_NE(server_.context(), nullptr) << "could not start redis-server";
        RedisEndpoint endpoint;
        endpoint.port = static_cast<std::uint16_t>(server_.port());
        client_ = std::make_shared<RedisClient>(io_.get_executor(), endpoint, RedisTimeouts{1s, command_timeout},
                                                std::vector<std::string>{});
        client_->start();
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (!client_->connected() && std::chrono::steady_clock::now() < deadline) {
            io_.run_for(10ms);
        }
        ASSERT_TRUE(client_->connected());
    }
    void TearDown() override {
        client_->stop();
        io_.run_for(100ms);
    }

    awaitable<void> busy(int ms, std::optional<bool>& answered) {
        // The padding (more than Redis reads from a client at once) makes Redis
        // take one command per event-loop turn and answer it in that turn, as
        // it answers a deep pipeline of small lookups: batch by batch.
        const std::vector<RedisCommand> command = {
            {"EVAL", busy_script, "0", std::to_string(ms), std::string(20 * 1024, 'x')}};
        auto replies = co_await client_->execute(command);
        answered = replies.has_value();
    }

    // Sends one busy command per entry of `busy_ms` at once; which of them got their reply.
    std::vector<bool> send_busy(const std::vector<int>& busy_ms) {
        std::vector<std::optional<bool>> answered(busy_ms.size());
        for (std::size_t i = 0; i < busy_ms.size(); ++i) {
            asio::co_spawn(io_, busy(busy_ms[i], answered[i]), asio::detached);
        }
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        auto all_done = [&] {
            for (const auto& a : answered) {
                if (!a) {
                    return false;
                }
            }
            return true;
        };
        while (!all_done() && std::chrono::steady_clock::now() < deadline) {
            io_.run_for(10ms);
        }
        std::vector<bool> out;
        for (const auto& a : answered) {
            EXPECT_TRUE(a.has_value()) << "a request neither answered nor timed out";
            out.push_back(a.value_or(false));
        }
        return out;
    }

    static constexpr std::chrono::milliseconds command_timeout{100};
    test_support::RedisServer server_;
    asio::io_context io_{1};
    std::shared_ptr<RedisClient> client_;
};

TEST_F(RedisClientTest, RequestsBehindABacklogWaitWhileRedisKeepsAnswering) {
    // Eight requests of 20 ms each: the last reply comes about 160 ms after
    // it was sent, past the 100 ms timeout, but Redis answers every 20 ms.
    // That is a queue, not a Redis that is gone: none of them fails over.
    const auto answered = send_busy(std::vector<int>(8, 20));
    EXPECT_EQ(answered, std::vector<bool>(8, true));
    EXPECT_EQ(client_->breaker_state(), CircuitBreaker::State::closed);
}

TEST_F(RedisClientTest, ASilentRedisStillTimesOut) {
    // One command that keeps Redis silent for four timeouts: nothing answered
    // in the meantime, so the lookup gives up after one.
    const auto answered = send_busy({400});
    EXPECT_EQ(answered, std::vector<bool>{false});
}

}  // namespace
}  // namespace pgshelf::proxy
