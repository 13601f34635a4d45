// The cache in Redis: key layout, entry format, and the three operations
// (lookup, store, invalidate), each one pipelined round trip.
//
// Keys (the rendered template is the Redis Cluster hash tag, so an entry
// and its version live in one slot):
//   pgshelf:{user:42:7:variables}:v                     version of the rendered key
//   pgshelf:{user:42:7:variables}:<rule>:<namespace>     an entry
//   pgshelf:gen:<rule>                                   the rule's generation (table fallback)
//   pgshelf:gen:!global                                  the global generation (lost invalidations)
//
// An entry is valid while the version and both generations it was stored
// under are still current. Invalidating a rendered key changes its version
// (every namespace and rule sharing it at once); the table fallback changes
// a rule's generation; both O(1). Versions and generations are taken from
// the Redis clock and never repeat, so a version key that expires or is
// evicted invalidates, never resurrects, what was stored under it.
//
// The populate race: a store is a compare-and-set on the version read at
// lookup time, so a miss that read PostgreSQL before a write's invalidation
// cannot store its now stale result.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/redis_client.hpp"

namespace pgshelf::proxy {

struct EntryAddress {
    std::string version_key;
    std::string entry_key;
    std::string lock_key;  // the short fetch lock of the entry (stampede across instances)
    std::string rule_generation_key;
};

// Builds the keys for one rendered key, rule and namespace hash.
EntryAddress entry_address(std::string_view prefix, std::string_view rendered, std::string_view rule,
                           std::uint64_t namespace_hash);
std::string version_key(std::string_view prefix, std::string_view rendered);
std::string rule_generation_key(std::string_view prefix, std::string_view rule);
std::string global_generation_key(std::string_view prefix);

// What a lookup found: the cached backend messages on a hit, and in any
// case the validity stamps a later store must carry.
struct LookupResult {
    bool hit = false;
    // On a hit: the backend messages to replay, inside `reply` (the entry
    // is served from Redis's reply as read, not copied first).
    std::string_view payload;
    RedisReply reply;
    // Stamps for a store after a miss; empty optional = key absent.
    std::optional<std::string> version;
    std::optional<std::string> rule_generation;
    std::optional<std::string> global_generation;
};

// Lua scripts loaded at connect time, in this order.
std::vector<std::string> cache_scripts();
enum ScriptIndex : std::size_t { script_store = 0, script_bump = 1 };

// Commands of one lookup, and their interpretation.
RedisRequest lookup_request(const EntryAddress& address, std::string_view global_key);
// Takes the replies: a hit's payload stays in the first one.
std::optional<LookupResult> parse_lookup(std::vector<RedisReply> replies);

// Command of one store: SET the entry (with the generations in its header)
// only if the version is still what the lookup saw.
RedisCommand store_command(const std::string& store_sha, const EntryAddress& address, const LookupResult& stamps,
                           std::string_view payload, std::uint64_t ttl_ms);

// Command that gives `key` a new never-seen value (a version or a
// generation); with `only_if_absent`, only creates a missing key.
RedisCommand bump_command(const std::string& bump_sha, const std::string& key, std::uint64_t ttl_ms,
                          bool only_if_absent = false);

// Entry value layout (after the "<version>:" prefix the store script adds):
//   "PGS1" | u16 len + rule generation | u16 len + global generation | payload
std::string encode_entry_body(const LookupResult& stamps, std::string_view payload);
// Checks an entry against current stamps; returns its payload if valid.
std::optional<std::string_view> valid_payload(std::string_view entry_value, const std::string& version,
                                              const std::string& rule_generation, const std::string& global_generation);

}  // namespace pgshelf::proxy
