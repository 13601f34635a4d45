// Client-key to server-key map for CancelRequest; see cancel_registry.hpp.
#include "proxy/cancel_registry.hpp"

#include <openssl/rand.h>

#include <random>

namespace pgshelf::proxy {
namespace {

std::int32_t random_int32() {
    std::int32_t value = 0;
    // The secret is what stops one client cancelling another's queries:
    // take it from the CSPRNG, like PostgreSQL does.
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&value), sizeof value) != 1) {
        static thread_local std::random_device device;
        value = static_cast<std::int32_t>(device());
    }
    return value;
}

}  // namespace

ClientKey CancelRegistry::add(const ServerKey& server) {
    std::lock_guard lock(mutex_);
    ClientKey key;
    do {
        // Positive like real pids: some clients print or compare them.
        key.pid = random_int32() & 0x7fffffff;
    } while (key.pid == 0 || entries_.contains(key.pid));
    key.secret = random_int32();
    entries_.emplace(key.pid, Entry{key.secret, server});
    return key;
}

void CancelRegistry::remove(std::int32_t client_pid) {
    std::lock_guard lock(mutex_);
    entries_.erase(client_pid);
}

std::optional<ServerKey> CancelRegistry::find(const ClientKey& key) const {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(key.pid);
    if (it == entries_.end() || it->second.secret != key.secret) {
        return std::nullopt;
    }
    return it->second.server;
}

std::size_t CancelRegistry::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

}  // namespace pgshelf::proxy
