// CircuitBreaker: opens after consecutive failures, probes once, backs off.
#include "proxy/circuit_breaker.hpp"

#include <gtest/gtest.h>

namespace pgshelf::proxy {
namespace {

using namespace std::chrono_literals;
using State = CircuitBreaker::State;

TEST(CircuitBreaker, OpensAfterThresholdAndProbesAfterBackoff) {
    CircuitBreaker b(3, 100ms, 1s);
    const auto t0 = CircuitBreaker::clock::time_point{} + 1h;
    EXPECT_TRUE(b.allow(t0));
    b.failure(t0);
    b.failure(t0);
    EXPECT_EQ(b.state(), State::closed);
    b.failure(t0);
    EXPECT_EQ(b.state(), State::open);
    EXPECT_FALSE(b.allow(t0 + 50ms));
    EXPECT_TRUE(b.allow(t0 + 100ms));   // the probe
    EXPECT_FALSE(b.allow(t0 + 101ms));  // only one at a time
    b.success();
    EXPECT_EQ(b.state(), State::closed);
    EXPECT_TRUE(b.allow(t0 + 102ms));
}

TEST(CircuitBreaker, FailedProbeDoublesBackoffUpToCap) {
    CircuitBreaker b(1, 100ms, 250ms);
    auto t = CircuitBreaker::clock::time_point{} + 1h;
    b.failure(t);
    ASSERT_TRUE(b.allow(t + 100ms));
    t += 100ms;
    b.failure(t);  // backoff 200ms now
    EXPECT_FALSE(b.allow(t + 199ms));
    ASSERT_TRUE(b.allow(t + 200ms));
    t += 200ms;
    b.failure(t);  // 400ms capped to 250ms
    EXPECT_FALSE(b.allow(t + 249ms));
    EXPECT_TRUE(b.allow(t + 250ms));
}

TEST(CircuitBreaker, SuccessResetsFailureCount) {
    CircuitBreaker b(2, 100ms, 1s);
    const auto t = CircuitBreaker::clock::time_point{} + 1h;
    b.failure(t);
    b.success();
    b.failure(t);
    EXPECT_EQ(b.state(), State::closed);
}

}  // namespace
}  // namespace pgshelf::proxy
