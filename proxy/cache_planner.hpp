// Cache decisions for one request, as a pure function of the rules, the
// statement, its parameters and the session's facts: look it up (and
// maybe populate), invalidate for it, or bypass it with a reason.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cache_rules/rules.hpp"
#include "cache_rules/shape_cache.hpp"

namespace pgshelf::proxy {

struct SessionFacts {
    char transaction_status = 'I';
    bool transaction_wrote = false;
    bool settings_uncertain = false;
    std::string_view database;
    std::string_view role;
    std::uint64_t settings_fingerprint = 0;
    // Temporary tables this session created: they shadow permanent tables
    // of the same name, so reads of such names are never cached.
    const std::vector<std::string>* temp_tables = nullptr;
};

struct ReadPlan {
    const cache_rules::CacheRule* rule = nullptr;
    std::size_t rule_index = 0;
    std::string rendered;
    std::uint64_t namespace_hash = 0;
    bool may_populate = false;  // only outside transaction blocks: the result is committed data
};

struct WritePlan {
    std::vector<std::string> keys;            // rendered keys to invalidate
    std::vector<std::string> key_rules;       // the cache rules those keys belong to (for counters)
    // Cache rules whose generation to bump, by name: a plan can outlive the
    // rule set it was made with (a reload between a write and its COMMIT).
    std::vector<std::string> fallback_rules;
    std::vector<std::string> fallback_tables;  // the tables that caused them (for counters and logs)
    bool empty() const { return keys.empty() && fallback_rules.empty(); }
};

struct RequestPlan {
    std::optional<ReadPlan> read;
    cache_rules::BypassReason bypass = cache_rules::BypassReason::none;
    bool writes = false;
    WritePlan write;
    // A single SELECT that no rule caches: its shape, for SHOW QUERIES.
    const cache_rules::StatementShape* uncached_select = nullptr;
    std::vector<std::string> temp_tables_created;  // CREATE TEMP TABLE names, for the session to remember
};

// `parameters`: text form of bound parameters ($1 first); empty for a
// simple Query. `result_formats`: as in Bind (empty = all text).
RequestPlan plan_request(const cache_rules::RuleSet& rules, const cache_rules::StatementAnalysis& analysis,
                         const std::vector<std::optional<std::string>>& parameters,
                         std::span<const std::int16_t> result_formats, const SessionFacts& session);

}  // namespace pgshelf::proxy
