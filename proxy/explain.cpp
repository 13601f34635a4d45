// Explaining a statement; see explain.hpp.
#include "proxy/explain.hpp"

#include <algorithm>
#include <cctype>
#include <unordered_map>

#include "cache_rules/advice.hpp"

namespace pgshelf::proxy {

using cache_rules::BypassReason;
using cache_rules::Slot;
using cache_rules::SlotValues;
using cache_rules::StatementShape;
using cache_rules::TableName;

namespace {

std::string table_text(const TableName& table) {
    return table.schema.empty() ? table.name : table.schema + "." + table.name;
}

std::string quoted(const std::optional<std::string>& value) {
    return value ? "'" + *value + "'" : "NULL";
}

// Why a rule with the statement's shape does not take its values, or
// empty when it does.
std::string values_mismatch(const StatementShape& rule_shape, const SlotValues& values) {
    std::unordered_map<int, std::size_t> first_slot_of_parameter;
    for (std::size_t i = 0; i < rule_shape.slots.size() && i < values.size(); ++i) {
        const Slot& slot = rule_shape.slots[i];
        if (slot.kind == Slot::Kind::literal) {
            const std::optional<std::string> literal =
                slot.is_null ? std::nullopt : std::optional<std::string>(slot.literal);
            if (literal != values[i]) {
                return "the rule has " + quoted(literal) + (slot.column.empty() ? "" : " for " + slot.column) +
                       ", the statement " + quoted(values[i]);
            }
            continue;
        }
        auto [it, inserted] = first_slot_of_parameter.emplace(slot.parameter, i);
        if (!inserted && values[it->second] != values[i]) {
            return "the rule uses $" + std::to_string(slot.parameter) + " twice, the statement has " +
                   quoted(values[it->second]) + " and " + quoted(values[i]) + " there";
        }
    }
    return {};
}

// The reason no rule among `candidates` (rules with the statement's shape) matched.
template <typename Rule>
std::string no_match_reason(const std::vector<Rule>& rules, const StatementShape& shape,
                            const std::optional<SlotValues>& values, std::size_t parameter_count) {
    std::vector<const Rule*> candidates;
    for (const Rule& rule : rules) {
        if (rule.shape.canonical == shape.canonical) {
            candidates.push_back(&rule);
        }
    }
    if (candidates.empty()) {
        return "no rule has this statement's shape";
    }
    if (!values) {
        return "rule '" + candidates.front()->name + "' has this shape, but parameters are missing: the statement uses $" +
               std::to_string(shape.max_parameter) + " and " + std::to_string(parameter_count) +
               " values were given (--param)";
    }
    std::string out;
    for (const Rule* rule : candidates) {
        out += (out.empty() ? "" : "; ") + std::string("rule '") + rule->name +
               "' has this shape, but literals differ: " + values_mismatch(rule->shape, *values);
    }
    return out;
}

// A [[cache]] rule for `sql` that can be pasted into the file `rules` came
// from: its name, if taken, gets a suffix (_2, _3, ...), since the loader
// rejects duplicate names. A rule with the statement's shape but other
// literals would overlap the suggested one (which has parameters there), so
// the suggestion then starts with a TOML comment saying so.
std::optional<std::string> suggest_rule(const cache_rules::RuleSet& rules, std::string_view sql,
                                        const StatementShape& shape) {
    auto taken = [&rules](const std::string& name) {
        auto named = [&name](const auto& rule) { return rule.name == name; };
        return std::any_of(rules.cache_rules().begin(), rules.cache_rules().end(), named) ||
               std::any_of(rules.invalidate_rules().begin(), rules.invalidate_rules().end(), named);
    };
    auto suggestion = cache_rules::suggest_cache_rule(sql);
    const std::string base = suggestion.name;
    for (int n = 2; suggestion.toml && taken(suggestion.name); ++n) {
        suggestion = cache_rules::suggest_cache_rule(sql, base + "_" + std::to_string(n));
    }
    if (!suggestion.toml) {
        return std::nullopt;
    }
    std::string notes;
    for (const auto& rule : rules.cache_rules()) {
        if (rule.shape.canonical == shape.canonical) {
            notes += "# Overlaps rule '" + rule.name + "' (" + rules.source() + ":" + std::to_string(rule.line) +
                     "), which has this shape too:\n"
                     "# a statement both match may be served by either; write literals where it does.\n";
        }
    }
    return notes + *suggestion.toml;
}

std::string format_duration(std::chrono::milliseconds ttl) {
    const auto ms = ttl.count();
    return ms % 1000 == 0 ? std::to_string(ms / 1000) + "s" : std::to_string(ms) + "ms";
}

}  // namespace

Explanation explain(const cache_rules::RuleSet& rules, const ExplainInput& input) {
    Explanation out;
    cache_rules::ShapeError shape_error;
    auto shapes = cache_rules::analyze_statements(input.sql, &shape_error);
    if (!shapes) {
        out.parse_error = shape_error.message;
        if (shape_error.cursor_position > 0) {
            *out.parse_error += " at character " + std::to_string(shape_error.cursor_position);
        }
        return out;
    }
    out.normalized = cache_rules::normalize_statement(input.sql).value_or(std::string(input.sql));
    while (!out.normalized.empty() && std::isspace(static_cast<unsigned char>(out.normalized.back()))) {
        out.normalized.pop_back();
    }
    out.normalized.erase(0, out.normalized.find_first_not_of(" \t\r\n"));
    for (const StatementShape& shape : *shapes) {
        out.statements.push_back({shape.kind, shape.tables_read, shape.tables_written});
    }

    cache_rules::StatementAnalysis analysis{true, *shapes, cache_rules::first_settings_changing_call(*shapes)};
    const SessionFacts session{'I', false, false, input.database, input.role, 0, nullptr};
    out.plan = plan_request(rules, analysis, input.parameters, {}, session);

    if (shapes->size() != 1) {
        out.verdict = {shapes->empty() ? BypassReason::no_rule : BypassReason::multi_statement,
                       std::to_string(shapes->size()) + " statements"};
    }
    const cache_rules::KeyContext context{input.database, input.role};
    if (out.plan.writes) {
        out.invalidated_keys = out.plan.write.keys;
        for (std::size_t i = 0; i < out.plan.write.fallback_rules.size(); ++i) {
            out.fallbacks.push_back({out.plan.write.fallback_rules[i], out.plan.write.fallback_tables[i]});
        }
        if (shapes->size() == 1) {
            const StatementShape& shape = shapes->front();
            out.verdict = cache_rules::statement_verdict(shape);
            auto values = cache_rules::slot_values(shape, input.parameters);
            if (auto match = values ? rules.match_invalidate(shape, *values, context) : std::nullopt) {
                out.invalidate_rule = match->rule;
            } else {
                out.no_invalidate_reason =
                    no_match_reason(rules.invalidate_rules(), shape, values, input.parameters.size());
            }
        }
        return out;
    }
    if (shapes->size() != 1) {
        return out;
    }

    const StatementShape& shape = shapes->front();
    auto values = cache_rules::slot_values(shape, input.parameters);
    std::optional<cache_rules::CacheMatch> match;
    if (values) {
        match = rules.match_cache(shape, *values, context);
    }
    out.verdict = cache_rules::statement_verdict(shape, {match && match->rule->allow_volatile});
    if (!match) {
        if (shape.kind == cache_rules::StatementKind::select) {
            out.no_rule_reason = no_match_reason(rules.cache_rules(), shape, values, input.parameters.size());
            // Missing parameters are the caller's mistake, not a missing rule.
            if (values) {
                out.suggestion = suggest_rule(rules, input.sql, shape);
            }
        }
        return out;
    }
    out.cache_rule = match->rule;
    out.key = match->rendered;
    for (const auto& rule : rules.invalidate_rules()) {
        if (std::find(rule.covers.begin(), rule.covers.end(), match->index) != rule.covers.end()) {
            out.invalidated_by.push_back(&rule);
        }
    }
    out.fallback_tables = match->rule->shape.tables_read;
    return out;
}

std::string format_explanation(const cache_rules::RuleSet& rules, const Explanation& e) {
    std::string out;
    auto line = [&out](std::string_view label, const std::string& value) {
        std::string padded(label);
        padded += ':';
        padded.resize(std::max<std::size_t>(padded.size() + 1, 13), ' ');
        out += padded + value + "\n";
    };
    auto more = [&out](const std::string& value) { out += std::string(13, ' ') + value + "\n"; };
    auto where = [&rules](int rule_line) { return rules.source() + ":" + std::to_string(rule_line); };
    auto tables = [](const std::vector<TableName>& list) {
        std::string text;
        for (const TableName& table : list) {
            text += (text.empty() ? "" : ", ") + table_text(table);
        }
        return text.empty() ? std::string("-") : text;
    };
    if (e.parse_error) {
        line("error", *e.parse_error);
        return out;
    }

    // A statement written over several lines keeps them, indented.
    std::string_view statement = e.normalized;
    for (bool first = true; first || !statement.empty(); first = false) {
        const auto end = statement.find('\n');
        const std::string text(statement.substr(0, end));
        first ? line("statement", text) : more(text);
        statement.remove_prefix(end == std::string_view::npos ? statement.size() : end + 1);
    }
    if (e.statements.size() == 1) {
        line("kind", std::string(cache_rules::to_string(e.statements.front().kind)));
        line("reads", tables(e.statements.front().tables_read));
        line("writes", tables(e.statements.front().tables_written));
    } else {
        for (std::size_t i = 0; i < e.statements.size(); ++i) {
            const auto& s = e.statements[i];
            const std::string text = std::to_string(i + 1) + ". " + std::string(cache_rules::to_string(s.kind)) +
                                                 ", reads " + tables(s.tables_read) + ", writes " +
                                                 tables(s.tables_written);
            i == 0 ? line("statements", text) : more(text);
        }
    }
    std::string verdict = e.verdict.cacheable() ? "cacheable" : std::string(cache_rules::to_string(e.verdict.reason));
    if (!e.verdict.detail.empty()) {
        verdict += " (" + e.verdict.detail + ")";
    }
    line("verdict", verdict);

    if (e.cache_rule != nullptr) {
        line("rule", e.cache_rule->name + " (" + where(e.cache_rule->line) + ", ttl " + format_duration(e.cache_rule->ttl) +
                         ")");
        line("key", e.key);
        if (e.invalidated_by.empty()) {
            line("invalidated", "by no [[invalidate]] rule");
        }
        for (std::size_t i = 0; i < e.invalidated_by.size(); ++i) {
            const auto* rule = e.invalidated_by[i];
            const std::string text = rule->name + " (" + where(rule->line) + ")";
            i == 0 ? line("invalidated", text) : more(text);
        }
        line("fallback", "writes to " + tables(e.fallback_tables) + " that no rule above covers drop every " +
                             e.cache_rule->name + " entry");
    } else if (!e.no_rule_reason.empty()) {
        line("rule", "none: " + e.no_rule_reason);
    }

    if (e.plan.writes) {
        if (e.invalidate_rule != nullptr) {
            line("invalidate", e.invalidate_rule->name + " (" + where(e.invalidate_rule->line) + ")");
        } else if (!e.no_invalidate_reason.empty()) {
            line("invalidate", "none: " + e.no_invalidate_reason);
        }
        if (e.invalidated_keys.empty()) {
            line("keys", "-");
        }
        for (std::size_t i = 0; i < e.invalidated_keys.size(); ++i) {
            i == 0 ? line("keys", e.invalidated_keys[i]) : more(e.invalidated_keys[i]);
        }
        if (e.fallbacks.empty()) {
            line("fallback", "-");
        }
        for (std::size_t i = 0; i < e.fallbacks.size(); ++i) {
            const std::string text = e.fallbacks[i].rule + " (whole rule: writes " + e.fallbacks[i].table + ")";
            i == 0 ? line("fallback", text) : more(text);
        }
    }

    std::string action;
    if (e.plan.read) {
        action = "look up " + e.plan.read->rendered + " in Redis; on a miss, query PostgreSQL and store the result";
    } else if (e.plan.writes) {
        action = "forward to PostgreSQL; when it completes, invalidate " + std::to_string(e.plan.write.keys.size()) +
                 " key(s) and " + std::to_string(e.plan.write.fallback_rules.size()) + " whole rule(s)";
    } else {
        action = "forward to PostgreSQL (" + std::string(cache_rules::to_string(e.plan.bypass)) + ")";
    }
    line("action", action);

    if (e.suggestion) {
        line("suggestion", "(paste into the rules file, then reload with SIGHUP)");
        std::string_view text = *e.suggestion;
        while (!text.empty()) {
            const auto end = text.find('\n');
            more(std::string(text.substr(0, end)));
            text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
        }
    }
    return out;
}

}  // namespace pgshelf::proxy
