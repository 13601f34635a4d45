// Miss coalescing; see inflight.hpp.
#include "proxy/inflight.hpp"

namespace pgshelf::proxy {

bool Inflight::begin(const std::string& key) {
    std::lock_guard lock(mutex_);
    return fetching_.try_emplace(key).second;
}

awaitable<std::optional<std::string>> Inflight::wait(const std::string& key, std::chrono::milliseconds timeout) {
    auto executor = co_await asio::this_coro::executor;
    auto timer = std::make_shared<asio::steady_timer>(executor, timeout);
    auto result = std::make_shared<std::optional<std::string>>();
    {
        std::lock_guard lock(mutex_);
        auto it = fetching_.find(key);
        if (it == fetching_.end()) {
            co_return std::nullopt;  // the leader finished already: look up again
        }
        it->second.push_back({executor, timer, result});
    }
    co_await timer->async_wait(use_nothrow);
    // Woken early by finish() (result set), or timed out (result empty).
    co_return *result;
}

void Inflight::finish(const std::string& key, const std::optional<std::string>& payload) {
    std::vector<Waiter> waiters;
    {
        std::lock_guard lock(mutex_);
        auto it = fetching_.find(key);
        if (it == fetching_.end()) {
            return;
        }
        waiters = std::move(it->second);
        fetching_.erase(it);
    }
    for (auto& waiter : waiters) {
        // Each waiter is woken on its own thread, so its result is written there too.
        asio::post(waiter.executor, [waiter, payload] {
            *waiter.result = payload;
            waiter.timer->cancel();
        });
    }
}

}  // namespace pgshelf::proxy
