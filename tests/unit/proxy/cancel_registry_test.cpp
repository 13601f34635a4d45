// CancelRegistry: client keys are unique, secret-checked and removable.
#include "proxy/cancel_registry.hpp"

#include <gtest/gtest.h>

#include <set>

namespace pgshelf::proxy {
namespace {

TEST(CancelRegistry, MapsClientKeyToServerKey) {
    CancelRegistry registry;
    const ClientKey key = registry.add({{"127.0.0.1", 5432}, 4242, 77});
    auto found = registry.find(key);
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->pid, 4242);
    EXPECT_EQ(found->secret, 77);
    EXPECT_GT(key.pid, 0);
}

TEST(CancelRegistry, WrongSecretFindsNothing) {
    CancelRegistry registry;
    const ClientKey key = registry.add({{"127.0.0.1", 5432}, 1, 2});
    EXPECT_FALSE(registry.find({key.pid, key.secret ^ 1}).has_value());
}

TEST(CancelRegistry, KeysAreUniqueAndRemovable) {
    CancelRegistry registry;
    std::set<std::int32_t> pids;
    std::vector<ClientKey> keys;
    for (int i = 0; i < 10000; ++i) {
        keys.push_back(registry.add({{"h", 1}, i, i}));
        pids.insert(keys.back().pid);
    }
    EXPECT_EQ(pids.size(), 10000u);
    for (const auto& key : keys) {
        registry.remove(key.pid);
    }
    EXPECT_EQ(registry.size(), 0u);
    EXPECT_FALSE(registry.find(keys.front()).has_value());
}

}  // namespace
}  // namespace pgshelf::proxy
