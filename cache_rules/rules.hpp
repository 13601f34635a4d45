// The rules file: [[cache]] rules (a read statement, a key template, a TTL)
// and [[invalidate]] rules (a write statement and the keys it makes stale).
// Loading validates everything a mistake could break: problems are reported
// with file, line, rule and what is wrong, and a file with any error yields
// no rules at all (so a bad reload keeps the old ones).
//
//   [[cache]]
//   name  = "user_variables"
//   query = "SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2"
//   key   = "user:{user_id}:{project_id}:variables"
//   ttl   = "120s"
//
//   [[invalidate]]
//   name  = "variables_changed"
//   query = "UPDATE user_variables SET value = $1 WHERE user_id = $2 AND project_id = $3 AND key = $4"
//   keys  = ["user:{user_id}:{project_id}:variables"]
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cache_rules/cacheability.hpp"
#include "cache_rules/key_template.hpp"
#include "cache_rules/statement_shape.hpp"

namespace pgshelf::cache_rules {

// A key template bound to a statement: where each placeholder's value comes from.
struct BoundTemplate {
    KeyTemplate key;
    // Per template part: the statement slot that supplies its value, or -1
    // (literal text, {db}, {role}).
    std::vector<int> part_slots;
};

struct CacheRule {
    std::string name;
    std::string query;
    int line = 0;
    StatementShape shape;
    BoundTemplate key;
    std::chrono::milliseconds ttl{0};
    std::uint64_t max_entry_size = 1u << 20;
    bool allow_volatile = false;
    bool share_across_roles = false;
};

struct InvalidateRule {
    std::string name;
    std::string query;
    int line = 0;
    StatementShape shape;
    std::vector<BoundTemplate> keys;
    // Indexes of the cache rules whose key pattern one of `keys` has.
    std::vector<std::size_t> covers;
};

struct RuleError {
    std::string file;
    int line = 0;
    std::string rule;  // rule name, when known
    std::string message;
    std::string to_string() const;
};

// Values of a statement's slots as text; nullopt = SQL NULL.
using SlotValues = std::vector<std::optional<std::string>>;

// Session facts a key can depend on.
struct KeyContext {
    std::string_view database;
    std::string_view role;
};

struct CacheMatch {
    const CacheRule* rule = nullptr;
    std::size_t index = 0;
    std::string rendered;  // the readable key, e.g. "user:42:7:variables"
};

struct InvalidateMatch {
    const InvalidateRule* rule = nullptr;
    std::vector<std::string> rendered;  // one per key template
};

class RuleSet {
public:
    const std::vector<CacheRule>& cache_rules() const { return cache_; }
    const std::vector<InvalidateRule>& invalidate_rules() const { return invalidate_; }
    const std::string& source() const { return source_; }

    // The cache rule with the same shape as `statement` whose literal slots
    // equal the statement's values, with its key rendered. Cost does not
    // depend on the number of rules (one hash lookup by shape).
    std::optional<CacheMatch> match_cache(const StatementShape& statement, const SlotValues& values,
                                          const KeyContext& context) const;
    std::optional<InvalidateMatch> match_invalidate(const StatementShape& statement, const SlotValues& values,
                                                    const KeyContext& context) const;
    // Whether any cache rule has this shape: a cheap test before matching.
    bool has_cache_shape(std::uint64_t shape_hash) const { return cache_by_shape_.count(shape_hash) != 0; }
    // Cache rules reading `table`. An unqualified name on either side
    // matches any schema: over-invalidating is safe, missing one is not.
    std::vector<std::size_t> rules_reading(const TableName& table) const;

private:
    friend struct RuleSetBuilder;
    std::string source_;
    std::vector<CacheRule> cache_;
    std::vector<InvalidateRule> invalidate_;
    std::unordered_multimap<std::uint64_t, std::size_t> cache_by_shape_;
    std::unordered_multimap<std::uint64_t, std::size_t> invalidate_by_shape_;
    std::unordered_multimap<std::string, std::size_t> cache_by_table_;  // by table name (no schema)
};

struct RulesResult {
    std::shared_ptr<const RuleSet> rules;  // null when there are errors
    std::vector<RuleError> errors;
    bool ok() const { return errors.empty(); }
};

// Reads [[cache]] and [[invalidate]] from a TOML file. Other top-level
// tables (proxy settings in the same file) are left to the config loader.
RulesResult load_rules_file(const std::string& path);
RulesResult load_rules_text(std::string_view toml_text, const std::string& source_name);

// Slot values of a statement given its bound parameters (text form,
// index 0 = $1). A parameter that was not bound (or could not be rendered
// as text) makes the values unusable: returns nullopt.
std::optional<SlotValues> slot_values(const StatementShape& statement,
                                      const std::vector<std::optional<std::string>>& parameters);

// Renders a bound template with a statement's slot values.
std::string render_key(const BoundTemplate& bound, const SlotValues& values, const KeyContext& context);

}  // namespace pgshelf::cache_rules
