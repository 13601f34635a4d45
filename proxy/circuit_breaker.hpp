// Circuit breaker for Redis, as a pure state machine over a clock value:
// after `threshold` consecutive failures it opens and refuses calls for a
// backoff period, then lets one probe through (half-open); success closes
// it, failure reopens it with a doubled backoff (capped).
#pragma once

#include <algorithm>
#include <chrono>

namespace pgshelf::proxy {

class CircuitBreaker {
public:
    using clock = std::chrono::steady_clock;
    enum class State { closed, open, half_open };

    CircuitBreaker(int threshold, std::chrono::milliseconds backoff, std::chrono::milliseconds max_backoff)
        : threshold_(threshold), base_backoff_(backoff), max_backoff_(max_backoff), backoff_(backoff) {}

    // Whether a call may go ahead now. In half-open state only one probe
    // is let through until its outcome is reported.
    bool allow(clock::time_point now) {
        if (state_ == State::closed) {
            return true;
        }
        if (state_ == State::open && now >= open_until_) {
            state_ = State::half_open;
            probe_in_flight_ = false;
        }
        if (state_ == State::half_open && !probe_in_flight_) {
            probe_in_flight_ = true;
            return true;
        }
        return false;
    }

    void success() {
        state_ = State::closed;
        failures_ = 0;
        backoff_ = base_backoff_;
        probe_in_flight_ = false;
    }

    void failure(clock::time_point now) {
        ++failures_;
        if (state_ == State::half_open) {
            backoff_ = std::min(backoff_ * 2, max_backoff_);
            open(now);
        } else if (state_ == State::closed && failures_ >= threshold_) {
            open(now);
        }
    }

    State state() const { return state_; }

private:
    void open(clock::time_point now) {
        state_ = State::open;
        open_until_ = now + backoff_;
        probe_in_flight_ = false;
    }

    int threshold_;
    std::chrono::milliseconds base_backoff_;
    std::chrono::milliseconds max_backoff_;
    std::chrono::milliseconds backoff_;
    State state_ = State::closed;
    int failures_ = 0;
    bool probe_in_flight_ = false;
    clock::time_point open_until_{};
};

}  // namespace pgshelf::proxy
