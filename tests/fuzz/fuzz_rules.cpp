// libFuzzer target: the rules loader (load_rules_text in
// cache_rules/rules.hpp). The input is the text of a rules file.
//
// Checked for every input: rules exactly when there are no errors; every
// error names the file, has a message and a line within the text (0 for an
// error about the whole file). For a file that loads, every rule is used
// the way the proxy uses it:
//  - each key's part_slots has one entry per template part, a statement
//    slot for {$n} and {column}, -1 for the rest;
//  - a cache rule's own query, with its parameters bound, matches a cache
//    rule of that shape and renders that rule's key for those values (the
//    same key twice); has_cache_shape knows its shape and rules_reading
//    lists it for every table it reads;
//  - an invalidate rule's own query matches and renders one key per key
//    template; each rule it covers has a key with the pattern of one of its
//    keys.
// Any violation aborts, which libFuzzer reports as a crash.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache_rules/rules.hpp"

using namespace pgshelf::cache_rules;

namespace {

using Kind = KeyTemplate::Part::Kind;

const std::string source_name = "rules.toml";
const KeyContext context{"shop", "app"};

// Statements with more parameters than this are not matched (the values
// vector would be as long as the highest $n).
constexpr int max_bound_parameters = 64;

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "rules fuzz invariant violated: %s\n", what);
    std::abort();
}

void check_bound(const BoundTemplate& bound, const StatementShape& shape) {
    if (bound.part_slots.size() != bound.key.parts.size()) {
        fail("part_slots and template parts differ in number");
    }
    for (std::size_t p = 0; p < bound.key.parts.size(); ++p) {
        const Kind kind = bound.key.parts[p].kind;
        const int slot = bound.part_slots[p];
        if (kind == Kind::parameter || kind == Kind::column) {
            if (slot < 0 || static_cast<std::size_t>(slot) >= shape.slots.size()) {
                fail("a placeholder bound to no slot of the statement");
            }
        } else if (slot != -1) {
            fail("literal text, {db} or {role} bound to a slot");
        }
    }
}

// The rule's own query as a client would send it, and its slot values.
struct Sent {
    StatementShape shape;
    SlotValues values;
};

std::optional<Sent> send(const std::string& query, const StatementShape& loaded) {
    auto shape = analyze_statement(query);
    if (!shape) {
        fail("a loaded rule's query no longer parses");
    }
    if (shape->canonical != loaded.canonical || shape->shape_hash != loaded.shape_hash) {
        fail("analysing a loaded rule's query again gives another shape");
    }
    if (shape->max_parameter > max_bound_parameters) {
        return std::nullopt;
    }
    // $0 parses (PostgreSQL refuses it later, at analysis) but no client
    // can bind it, so slot_values rightly refuses such a statement.
    for (const Slot& slot : shape->slots) {
        if (slot.kind == Slot::Kind::parameter && slot.parameter < 1) {
            return std::nullopt;
        }
    }
    std::vector<std::optional<std::string>> parameters;
    for (int n = 1; n <= shape->max_parameter; ++n) {
        parameters.emplace_back("v" + std::to_string(n));
    }
    auto values = slot_values(*shape, parameters);
    if (!values) {
        fail("slot_values refused a statement with all its parameters bound");
    }
    return Sent{std::move(*shape), std::move(*values)};
}

void check_cache_rule(const RuleSet& rules, std::size_t index) {
    const CacheRule& rule = rules.cache_rules()[index];
    if (rule.name.empty() || rule.ttl.count() <= 0 || rule.max_entry_size == 0) {
        fail("a cache rule without a name, a positive ttl or a max_entry_size");
    }
    check_bound(rule.key, rule.shape);
    if (!rules.has_cache_shape(rule.shape.shape_hash)) {
        fail("has_cache_shape does not know a cache rule's shape");
    }
    for (const TableName& table : rule.shape.tables_read) {
        const auto readers = rules.rules_reading(table);
        if (std::find(readers.begin(), readers.end(), index) == readers.end()) {
            fail("rules_reading misses a rule reading the table");
        }
    }

    const auto sent = send(rule.query, rule.shape);
    if (!sent) {
        return;
    }
    const auto match = rules.match_cache(sent->shape, sent->values, context);
    if (!match) {
        fail("a cache rule's own query matches no cache rule");
    }
    if (match->index >= rules.cache_rules().size() || match->rule != &rules.cache_rules()[match->index] ||
        match->rule->shape.canonical != sent->shape.canonical) {
        fail("match_cache returned a rule of another shape or a wrong index");
    }
    if (match->rendered != render_key(match->rule->key, sent->values, context) ||
        render_key(match->rule->key, sent->values, context) != match->rendered) {
        fail("the matched key is not the rule's key rendered with the values");
    }
}

void check_invalidate_rule(const RuleSet& rules, std::size_t index) {
    const InvalidateRule& rule = rules.invalidate_rules()[index];
    if (rule.name.empty() || rule.keys.empty()) {
        fail("an invalidate rule without a name or keys");
    }
    for (const BoundTemplate& key : rule.keys) {
        check_bound(key, rule.shape);
    }
    for (const std::size_t covered : rule.covers) {
        if (covered >= rules.cache_rules().size()) {
            fail("an invalidate rule covers a cache rule that does not exist");
        }
        const std::string pattern = rules.cache_rules()[covered].key.key.pattern();
        if (std::none_of(rule.keys.begin(), rule.keys.end(),
                         [&](const BoundTemplate& key) { return key.key.pattern() == pattern; })) {
            fail("an invalidate rule covers a cache rule none of its keys has the pattern of");
        }
    }

    const auto sent = send(rule.query, rule.shape);
    if (!sent) {
        return;
    }
    const auto match = rules.match_invalidate(sent->shape, sent->values, context);
    if (!match) {
        fail("an invalidate rule's own query matches no invalidate rule");
    }
    if (match->rule->shape.canonical != sent->shape.canonical || match->rendered.size() != match->rule->keys.size()) {
        fail("match_invalidate returned a rule of another shape or not one key per template");
    }
    for (std::size_t k = 0; k < match->rendered.size(); ++k) {
        if (match->rendered[k] != render_key(match->rule->keys[k], sent->values, context)) {
            fail("an invalidated key is not the template rendered with the values");
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const RulesResult result = load_rules_text(text, source_name);

    if (result.ok() != (result.rules != nullptr)) {
        fail("rules and errors together, or neither");
    }
    // Lines are counted from 1; an error at the very end may name the line
    // after the last newline.
    const auto line_count = static_cast<long>(std::count(text.begin(), text.end(), '\n')) + 1;
    for (const RuleError& error : result.errors) {
        if (error.file != source_name) {
            fail("an error names another file");
        }
        if (error.message.empty()) {
            fail("an error without a message");
        }
        if (error.line < 0 || error.line > line_count) {
            std::fprintf(stderr, "line %d of %ld: %s\n", error.line, line_count, error.to_string().c_str());
            fail("an error line outside the text");
        }
    }
    if (!result.rules) {
        return 0;
    }

    const RuleSet& rules = *result.rules;
    if (rules.source() != source_name) {
        fail("the rule set names another source");
    }
    for (std::size_t i = 0; i < rules.cache_rules().size(); ++i) {
        check_cache_rule(rules, i);
    }
    for (std::size_t i = 0; i < rules.invalidate_rules().size(); ++i) {
        check_invalidate_rule(rules, i);
    }
    return 0;
}
