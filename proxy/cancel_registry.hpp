// Maps the BackendKeyData pgshelf gives each client to the server's own
// key, so a CancelRequest arriving on any connection (any worker thread)
// reaches the right server backend.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "proxy/config.hpp"

namespace pgshelf::proxy {

struct ServerKey {
    Endpoint server;
    std::int32_t pid = 0;
    std::int32_t secret = 0;
};

struct ClientKey {
    std::int32_t pid = 0;
    std::int32_t secret = 0;
};

class CancelRegistry {
public:
    // Issues a fresh client key (random, unique among live sessions) for `server`.
    ClientKey add(const ServerKey& server);
    void remove(std::int32_t client_pid);
    // The server key, only if both pid and secret match.
    std::optional<ServerKey> find(const ClientKey& key) const;
    std::size_t size() const;

private:
    struct Entry {
        std::int32_t secret;
        ServerKey server;
    };
    mutable std::mutex mutex_;
    std::unordered_map<std::int32_t, Entry> entries_;
};

}  // namespace pgshelf::proxy
