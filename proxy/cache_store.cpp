// Cache key layout, entry format and Redis commands; see cache_store.hpp.
#include "proxy/cache_store.hpp"

#include <cstdio>

namespace pgshelf::proxy {
namespace {

// KEYS[1] version key, KEYS[2] entry key, KEYS[3] fetch lock (released
// whatever the outcome: the fetch is over); ARGV[1] version seen at lookup
// ("" = absent), ARGV[2] entry body, ARGV[3] entry TTL ms.
// When the version key is absent and still absent, it is created with a
// fresh value, so every stored entry carries a concrete version.
constexpr const char* store_script = R"lua(
redis.call('DEL', KEYS[3])
local v = redis.call('GET', KEYS[1])
if v == false then
  if ARGV[1] ~= '' then return 0 end
  local t = redis.call('TIME')
  v = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', KEYS[1], v)
elseif v ~= ARGV[1] then
  return 0
end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[2], v .. ':' .. ARGV[2], 'PX', ttl)
-- the version must outlive every entry stored under it
local left = redis.call('PTTL', KEYS[1])
if left >= 0 and left < ttl * 2 then redis.call('PEXPIRE', KEYS[1], ttl * 2) end
return 1
)lua";

// KEYS[1] version or generation key; ARGV[1] TTL ms (0 = none); ARGV[2]
// "nx" to only create a missing key. The new value is the Redis clock in
// microseconds, or old + 1 if that is not larger: never a value seen before.
constexpr const char* bump_script = R"lua(
if ARGV[2] == 'nx' then
  local existing = redis.call('GET', KEYS[1])
  if existing then return existing end
end
local t = redis.call('TIME')
local new = tonumber(t[1]) * 1000000 + tonumber(t[2])
local old = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if old >= new then new = old + 1 end
local value = string.format('%.0f', new)
if tonumber(ARGV[1]) > 0 then
  redis.call('SET', KEYS[1], value, 'PX', ARGV[1])
else
  redis.call('SET', KEYS[1], value)
end
return value
)lua";

void append_u16_string(std::string& out, std::string_view s) {
    out += static_cast<char>((s.size() >> 8) & 0xff);
    out += static_cast<char>(s.size() & 0xff);
    out += s;
}

std::optional<std::string_view> read_u16_string(std::string_view& in) {
    if (in.size() < 2) {
        return std::nullopt;
    }
    const std::size_t n = (static_cast<unsigned char>(in[0]) << 8) | static_cast<unsigned char>(in[1]);
    if (in.size() < 2 + n) {
        return std::nullopt;
    }
    auto s = in.substr(2, n);
    in.remove_prefix(2 + n);
    return s;
}

std::optional<std::string> string_reply(const redisReply* r) {
    if (r != nullptr && r->type == REDIS_REPLY_STRING) {
        return std::string(r->str, r->len);
    }
    return std::nullopt;
}

std::optional<std::string_view> string_view_reply(const redisReply* r) {
    if (r != nullptr && r->type == REDIS_REPLY_STRING) {
        return std::string_view(r->str, r->len);
    }
    return std::nullopt;
}

}  // namespace

std::string version_key(std::string_view prefix, std::string_view rendered) {
    std::string key;
    key.reserve(prefix.size() + rendered.size() + 8);
    key.append(prefix).append(":{").append(rendered).append("}:v");
    return key;
}

std::string rule_generation_key(std::string_view prefix, std::string_view rule) {
    return std::string(prefix) + ":gen:" + std::string(rule);
}

std::string global_generation_key(std::string_view prefix) { return std::string(prefix) + ":gen:!global"; }

EntryAddress entry_address(std::string_view prefix, std::string_view rendered, std::string_view rule,
                           std::uint64_t namespace_hash) {
    char ns[17];
    std::snprintf(ns, sizeof ns, "%016llx", static_cast<unsigned long long>(namespace_hash));
    EntryAddress a;
    a.version_key = version_key(prefix, rendered);
    a.entry_key.reserve(prefix.size() + rendered.size() + rule.size() + 24);
    a.entry_key.append(prefix).append(":{").append(rendered).append("}:").append(rule).append(":").append(ns);
    a.lock_key = a.entry_key + ":lock";
    a.rule_generation_key = rule_generation_key(prefix, rule);
    return a;
}

std::vector<std::string> cache_scripts() { return {store_script, bump_script}; }

RedisRequest lookup_request(const EntryAddress& address, std::string_view global_key) {
    // Two commands, pipelined: one per hash slot (entry+version share one).
    RedisRequest request;
    request.resp.reserve(96 + address.version_key.size() + address.entry_key.size() +
                         address.rule_generation_key.size() + global_key.size());
    request.add({"MGET", address.version_key, address.entry_key});
    request.add({"MGET", address.rule_generation_key, global_key});
    return request;
}

std::optional<LookupResult> parse_lookup(std::vector<RedisReply> replies) {
    if (replies.size() != 2) {
        return std::nullopt;
    }
    const redisReply* local = replies[0].get();
    const redisReply* gens = replies[1].get();
    if (local->type != REDIS_REPLY_ARRAY || local->elements != 2 || gens->type != REDIS_REPLY_ARRAY ||
        gens->elements != 2) {
        return std::nullopt;
    }
    LookupResult result;
    result.version = string_reply(local->element[0]);
    result.rule_generation = string_reply(gens->element[0]);
    result.global_generation = string_reply(gens->element[1]);
    const auto entry = string_view_reply(local->element[1]);  // a view into replies[0]
    if (entry && result.version && result.rule_generation && result.global_generation) {
        if (auto payload = valid_payload(*entry, *result.version, *result.rule_generation, *result.global_generation)) {
            result.hit = true;
            result.payload = *payload;
            result.reply = std::move(replies[0]);  // owns the bytes `payload` views
        }
    }
    return result;
}

std::string encode_entry_body(const LookupResult& stamps, std::string_view payload) {
    std::string body;
    body.reserve(payload.size() + 64);
    body += "PGS1";
    append_u16_string(body, stamps.rule_generation.value_or(""));
    append_u16_string(body, stamps.global_generation.value_or(""));
    body += payload;
    return body;
}

std::optional<std::string_view> valid_payload(std::string_view entry_value, const std::string& version,
                                              const std::string& rule_generation,
                                              const std::string& global_generation) {
    const auto colon = entry_value.find(':');
    if (colon == std::string_view::npos || entry_value.substr(0, colon) != version) {
        return std::nullopt;
    }
    std::string_view rest = entry_value.substr(colon + 1);
    if (!rest.starts_with("PGS1")) {
        return std::nullopt;
    }
    rest.remove_prefix(4);
    auto rule = read_u16_string(rest);
    auto global = read_u16_string(rest);
    if (!rule || !global || *rule != rule_generation || *global != global_generation) {
        return std::nullopt;
    }
    return rest;
}

RedisCommand store_command(const std::string& store_sha, const EntryAddress& address, const LookupResult& stamps,
                           std::string_view payload, std::uint64_t ttl_ms) {
    return {"EVALSHA", store_sha, "3", address.version_key, address.entry_key, address.lock_key, stamps.version.value_or(""),
            encode_entry_body(stamps, payload), std::to_string(ttl_ms)};
}

RedisCommand bump_command(const std::string& bump_sha, const std::string& key, std::uint64_t ttl_ms,
                          bool only_if_absent) {
    return {"EVALSHA", bump_sha, "1", key, std::to_string(ttl_ms), only_if_absent ? "nx" : "always"};
}

}  // namespace pgshelf::proxy
