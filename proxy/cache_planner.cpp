// Cache decisions per request; see cache_planner.hpp.
#include "proxy/cache_planner.hpp"

#include <algorithm>

#include "cache_rules/hasher.hpp"

namespace pgshelf::proxy {

using cache_rules::BypassReason;
using cache_rules::StatementKind;
using cache_rules::StatementShape;

namespace {

bool is_write(const StatementShape& s) {
    if (s.data_modifying_cte) {
        return true;
    }
    switch (s.kind) {
        case StatementKind::select:
        case StatementKind::copy_to: return false;
        case StatementKind::other: return !s.tables_written.empty();  // DDL; not SET, SHOW, BEGIN, ...
        default: return true;
    }
}

void plan_write(const cache_rules::RuleSet& rules, const StatementShape& shape,
                const std::vector<std::optional<std::string>>& parameters, const SessionFacts& session,
                WritePlan& out) {
    std::vector<std::size_t> covered;
    if (auto values = cache_rules::slot_values(shape, parameters)) {
        if (auto match = rules.match_invalidate(shape, *values, {session.database, session.role})) {
            for (auto& key : match->rendered) {
                if (std::find(out.keys.begin(), out.keys.end(), key) == out.keys.end()) {
                    out.keys.push_back(std::move(key));
                }
            }
            covered = match->rule->covers;
            for (std::size_t rule : covered) {
                const std::string& name = rules.cache_rules()[rule].name;
                if (std::find(out.key_rules.begin(), out.key_rules.end(), name) == out.key_rules.end()) {
                    out.key_rules.push_back(name);
                }
            }
        }
    }
    // Safe fallback: a written table that a cache rule reads, not covered
    // by the matched invalidation rule, invalidates that whole rule.
    for (const auto& table : shape.tables_written) {
        for (std::size_t rule : rules.rules_reading(table)) {
            if (std::find(covered.begin(), covered.end(), rule) != covered.end()) {
                continue;
            }
            const std::string& name = rules.cache_rules()[rule].name;
            if (std::find(out.fallback_rules.begin(), out.fallback_rules.end(), name) == out.fallback_rules.end()) {
                out.fallback_rules.push_back(name);
                out.fallback_tables.push_back(table.schema.empty() ? table.name : table.schema + "." + table.name);
            }
        }
    }
}

std::uint64_t namespace_hash(const cache_rules::CacheRule& rule, std::span<const std::int16_t> result_formats,
                             const SessionFacts& session) {
    cache_rules::Hasher hash;
    auto add = [&hash](std::string_view s) { hash.add(s); };
    // The rule's statement: a rule renamed-in-place to another query (after
    // a reload, or on an instance with an older rules file) must not read
    // rows stored for the old one.
    hash.add_bytes(&rule.shape.shape_hash, sizeof rule.shape.shape_hash);
    add(session.database);
    add(rule.share_across_roles ? std::string_view{} : session.role);
    hash.add_bytes(&session.settings_fingerprint, sizeof session.settings_fingerprint);
    // One format code applies to all columns, as do none (= text): make
    // "[]" and "[0]" the same namespace, and "[1]" differ from both.
    const bool all_text = std::all_of(result_formats.begin(), result_formats.end(), [](auto f) { return f == 0; });
    if (!all_text) {
        hash.add_bytes(result_formats.data(), result_formats.size_bytes());
    }
    return hash.digest();
}

}  // namespace

RequestPlan plan_request(const cache_rules::RuleSet& rules, const cache_rules::StatementAnalysis& analysis,
                         const std::vector<std::optional<std::string>>& parameters,
                         std::span<const std::int16_t> result_formats, const SessionFacts& session) {
    RequestPlan plan;
    if (!analysis.parsed) {
        plan.bypass = BypassReason::no_rule;  // the server will report the syntax error
        return plan;
    }
    for (const StatementShape& shape : analysis.statements) {
        if (shape.kind == StatementKind::other && shape.temp_table_reference) {
            for (const auto& table : shape.tables_written) {
                plan.temp_tables_created.push_back(table.name);
            }
        }
        if (is_write(shape)) {
            plan.writes = true;
            plan_write(rules, shape, analysis.statements.size() == 1 ? parameters : std::vector<std::optional<std::string>>{},
                       session, plan.write);
        }
    }
    if (plan.writes) {
        plan.bypass = BypassReason::not_select;
        return plan;
    }
    if (analysis.statements.size() != 1) {
        plan.bypass = analysis.statements.empty() ? BypassReason::no_rule : BypassReason::multi_statement;
        return plan;
    }
    const StatementShape& shape = analysis.statements.front();
    if (!rules.has_cache_shape(shape.shape_hash)) {
        plan.bypass = BypassReason::no_rule;
        plan.uncached_select = shape.kind == StatementKind::select ? &shape : nullptr;
        return plan;
    }
    auto values = cache_rules::slot_values(shape, parameters);
    std::optional<cache_rules::CacheMatch> match;
    if (values) {
        match = rules.match_cache(shape, *values, {session.database, session.role});
    }
    if (!match) {
        plan.bypass = BypassReason::no_rule;
        plan.uncached_select = shape.kind == StatementKind::select ? &shape : nullptr;
        return plan;
    }
    if (auto verdict = cache_rules::statement_verdict(shape, {match->rule->allow_volatile}); !verdict.cacheable()) {
        plan.bypass = verdict.reason;
        return plan;
    }
    if (session.temp_tables != nullptr) {
        for (const auto& table : shape.tables_read) {
            if (std::find(session.temp_tables->begin(), session.temp_tables->end(), table.name) !=
                session.temp_tables->end()) {
                plan.bypass = BypassReason::temp_table;
                return plan;
            }
        }
    }
    if (session.transaction_status == 'E') {
        plan.bypass = BypassReason::failed_transaction;
        return plan;
    }
    if (session.transaction_wrote) {
        plan.bypass = BypassReason::transaction_wrote;
        return plan;
    }
    if (session.settings_uncertain) {
        plan.bypass = BypassReason::settings_unknown;
        return plan;
    }
    ReadPlan read;
    read.rule = match->rule;
    read.rule_index = match->index;
    read.rendered = std::move(match->rendered);
    read.namespace_hash = namespace_hash(*match->rule, result_formats, session);
    read.may_populate = session.transaction_status == 'I';
    plan.read = std::move(read);
    return plan;
}

}  // namespace pgshelf::proxy
