// The cache's Redis protocol against a real redis-server: the populate race
// (a reader that looked up before a writer's invalidation must not store),
// version and generation semantics, and eviction safety. Reader and writer
// are interleaved step by step, deterministically: no threads, no sleeps.
#include "proxy/cache_store.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <memory>
#include <set>

#include "redis_server.hpp"

namespace pgshelf::proxy {
namespace {

using test_support::RedisServer;

class CacheStore : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        server_ = new RedisServer();
        ASSERT_NE(server_->context(), nullptr) << "could not start redis-server";
        for (const auto& script : cache_scripts()) {
            auto reply = run({"SCRIPT", "LOAD", script});
            ASSERT_EQ(reply->type, REDIS_REPLY_STRING);
            shas_.emplace_back(reply->str, reply->len);
        }
    }
    static void TearDownTestSuite() { delete server_; }
    void SetUp() override { run({"FLUSHALL"}); }

    static RedisReply run(const RedisCommand& command) {
        std::vector<const char*> argv;
        std::vector<size_t> lengths;
        for (const auto& a : command) {
            argv.push_back(a.data());
            lengths.push_back(a.size());
        }
        return RedisReply(static_cast<redisReply*>(
            redisCommandArgv(server_->context(), static_cast<int>(argv.size()), argv.data(), lengths.data())));
    }
    // A pipelined request as the engine sends it: the bytes, then one reply per command.
    static std::vector<RedisReply> run_all(const RedisRequest& request) {
        EXPECT_EQ(redisAppendFormattedCommand(server_->context(), request.resp.data(), request.resp.size()), REDIS_OK);
        std::vector<RedisReply> replies;
        for (std::size_t i = 0; i < request.commands; ++i) {
            void* reply = nullptr;
            EXPECT_EQ(redisGetReply(server_->context(), &reply), REDIS_OK);
            replies.emplace_back(static_cast<redisReply*>(reply));
        }
        return replies;
    }

    LookupResult lookup() {
        auto result = parse_lookup(run_all(lookup_request(address_, global_generation_key("pgshelf"))));
        EXPECT_TRUE(result.has_value());
        return result ? std::move(*result) : LookupResult{};
    }
    // Creates missing generations, as the engine does on first use.
    void ensure_generations() {
        run(bump_command(shas_[script_bump], address_.rule_generation_key, 0, true));
        run(bump_command(shas_[script_bump], global_generation_key("pgshelf"), 0, true));
    }
    long long store(const LookupResult& stamps, std::string_view payload) {
        auto reply = run(store_command(shas_[script_store], address_, stamps, payload, 60'000));
        EXPECT_EQ(reply->type, REDIS_REPLY_INTEGER);
        return reply->integer;
    }
    void invalidate_key() { run(bump_command(shas_[script_bump], address_.version_key, 86'400'000)); }
    void bump_rule() { run(bump_command(shas_[script_bump], address_.rule_generation_key, 0)); }

    static inline RedisServer* server_ = nullptr;
    static inline std::vector<std::string> shas_;
    EntryAddress address_ = entry_address("pgshelf", "user:42:7:variables", "user_variables", 0xabcdef);
};

TEST_F(CacheStore, KeysShareOneHashTag) {
    EXPECT_EQ(address_.version_key, "pgshelf:{user:42:7:variables}:v");
    EXPECT_EQ(address_.entry_key, "pgshelf:{user:42:7:variables}:user_variables:0000000000abcdef");
    EXPECT_EQ(address_.rule_generation_key, "pgshelf:gen:user_variables");
}

TEST_F(CacheStore, StoreReleasesTheFetchLock) {
    ensure_generations();
    auto stamps = lookup();
    run({"SET", address_.lock_key, "1", "NX", "PX", "2000"});
    EXPECT_EQ(store(stamps, "ROWS"), 1);
    EXPECT_EQ(run({"EXISTS", address_.lock_key})->integer, 0);
    // A store that loses the race releases it too: the fetch is over.
    run({"SET", address_.lock_key, "1", "NX", "PX", "2000"});
    invalidate_key();
    EXPECT_EQ(store(stamps, "STALE"), 0);
    EXPECT_EQ(run({"EXISTS", address_.lock_key})->integer, 0);
}

TEST_F(CacheStore, MissStoreThenHit) {
    ensure_generations();
    auto miss = lookup();
    EXPECT_FALSE(miss.hit);
    EXPECT_EQ(store(miss, "ROWS-v1"), 1);
    auto hit = lookup();
    ASSERT_TRUE(hit.hit);
    EXPECT_EQ(hit.payload, "ROWS-v1");
}

TEST_F(CacheStore, PopulateRaceReaderLookedUpBeforeWriterInvalidated) {
    ensure_generations();
    // Reader A misses and goes to PostgreSQL ...
    auto reader_stamps = lookup();
    ASSERT_FALSE(reader_stamps.hit);
    // ... writer B commits and invalidates ...
    invalidate_key();
    // ... then A's (stale) result arrives: its store must fail.
    EXPECT_EQ(store(reader_stamps, "STALE"), 0);
    EXPECT_FALSE(lookup().hit);
}

TEST_F(CacheStore, PopulateRaceWhenVersionAlreadyExisted) {
    ensure_generations();
    invalidate_key();  // an earlier write: the version key exists
    auto reader_stamps = lookup();
    ASSERT_TRUE(reader_stamps.version.has_value());
    invalidate_key();
    EXPECT_EQ(store(reader_stamps, "STALE"), 0);
    EXPECT_FALSE(lookup().hit);
}

TEST_F(CacheStore, StoreBeforeInvalidationIsInvalidatedByIt) {
    ensure_generations();
    auto stamps = lookup();
    EXPECT_EQ(store(stamps, "OLD"), 1);
    invalidate_key();
    EXPECT_FALSE(lookup().hit);
}

TEST_F(CacheStore, RuleGenerationBumpInvalidatesEveryEntryOfTheRule) {
    ensure_generations();
    EntryAddress other = entry_address("pgshelf", "user:1:1:variables", "user_variables", 1);
    auto a = lookup();
    EXPECT_EQ(store(a, "A"), 1);
    auto b = parse_lookup(run_all(lookup_request(other, global_generation_key("pgshelf")))).value();
    EXPECT_EQ(run(store_command(shas_[script_store], other, b, "B", 60'000))->integer, 1);
    bump_rule();
    EXPECT_FALSE(lookup().hit);
    EXPECT_FALSE(parse_lookup(run_all(lookup_request(other, global_generation_key("pgshelf"))))->hit);
}

TEST_F(CacheStore, ReaderThatSawOldRuleGenerationStoresADeadEntry) {
    ensure_generations();
    auto stamps = lookup();
    bump_rule();  // table fallback between lookup and store
    store(stamps, "STALE");
    EXPECT_FALSE(lookup().hit);
}

TEST_F(CacheStore, GlobalGenerationBumpInvalidatesEverything) {
    ensure_generations();
    EXPECT_EQ(store(lookup(), "A"), 1);
    run(bump_command(shas_[script_bump], global_generation_key("pgshelf"), 0));
    EXPECT_FALSE(lookup().hit);
}

TEST_F(CacheStore, EvictedVersionKeyNeverResurrectsOldEntries) {
    ensure_generations();
    EXPECT_EQ(store(lookup(), "V1"), 1);  // creates the version key with a fresh value
    run({"DEL", address_.version_key});   // as eviction or expiry would
    EXPECT_FALSE(lookup().hit);
    // A reader that saw the key absent stores under a new, different version.
    auto stamps = lookup();
    EXPECT_EQ(store(stamps, "V2"), 1);
    auto hit = lookup();
    ASSERT_TRUE(hit.hit);
    EXPECT_EQ(hit.payload, "V2");
}

TEST_F(CacheStore, MissingGenerationsPreventHits) {
    EXPECT_EQ(store(lookup(), "X"), 1);  // stamps without generations
    EXPECT_FALSE(lookup().hit);
    ensure_generations();
    EXPECT_FALSE(lookup().hit);  // stored with empty generations: never valid
}

TEST_F(CacheStore, VersionsNeverRepeat) {
    std::set<std::string> seen;
    for (int i = 0; i < 1000; ++i) {
        auto reply = run(bump_command(shas_[script_bump], address_.version_key, 0));
        ASSERT_EQ(reply->type, REDIS_REPLY_STRING);
        EXPECT_TRUE(seen.emplace(reply->str, reply->len).second);
    }
}

TEST(CacheEntry, ValidPayloadChecksEveryStamp) {
    LookupResult stamps;
    stamps.rule_generation = "10";
    stamps.global_generation = "20";
    const std::string value = "5:" + encode_entry_body(stamps, "PAYLOAD");
    EXPECT_EQ(valid_payload(value, "5", "10", "20").value_or(""), "PAYLOAD");
    EXPECT_FALSE(valid_payload(value, "6", "10", "20"));
    EXPECT_FALSE(valid_payload(value, "5", "11", "20"));
    EXPECT_FALSE(valid_payload(value, "5", "10", "21"));
    EXPECT_FALSE(valid_payload("garbage", "5", "10", "20"));
}

}  // namespace
}  // namespace pgshelf::proxy
