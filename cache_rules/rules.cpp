// Rules loading, validation and matching; see rules.hpp.
#include "cache_rules/rules.hpp"

#include <algorithm>
#include <cctype>
#include <set>

#include <toml++/toml.h>

#include "cache_rules/units.hpp"

namespace pgshelf::cache_rules {

struct RuleSetBuilder {
    std::shared_ptr<RuleSet> set = std::make_shared<RuleSet>();
    std::vector<RuleError> errors;
    std::string file;

    void start(const std::string& source) {
        file = source;
        set->source_ = source;
    }
    void error(int line, const std::string& rule, std::string message) {
        errors.push_back({file, line, rule, std::move(message)});
    }

    void load(const toml::table& root);
    void load_cache(const toml::table& table);
    void load_invalidate(const toml::table& table);
    std::optional<StatementShape> parse_query(const toml::table& table, const std::string& name, int line,
                                              std::string& query_out);
    std::optional<BoundTemplate> bind(std::string_view text, const StatementShape& shape, int line,
                                      const std::string& rule);
    void link();
};

namespace {

int line_of(const toml::node& node) { return static_cast<int>(node.source().begin.line); }

bool valid_name(std::string_view name) {
    return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
    });
}

std::string describe_slot(const Slot& slot) {
    std::string text = slot.kind == Slot::Kind::parameter ? "$" + std::to_string(slot.parameter) : "a literal";
    if (!slot.column.empty()) {
        text += " (" + slot.column + ")";
    }
    return text;
}

bool same_table(const TableName& a, const TableName& b) {
    return a.name == b.name && (a.schema.empty() || b.schema.empty() || a.schema == b.schema);
}

}  // namespace

std::string RuleError::to_string() const {
    std::string out = file;
    if (line > 0) {
        out += ":" + std::to_string(line);
    }
    if (!rule.empty()) {
        out += ": rule '" + rule + "'";
    }
    return out + ": " + message;
}

// ------------------------------------------------------------ loading

void RuleSetBuilder::load(const toml::table& root) {
    for (const auto& [key, node] : root) {
        const std::string_view section = key.str();
        if (section != "cache" && section != "invalidate") {
            continue;  // proxy settings, read by the config loader
        }
        const toml::array* array = node.as_array();
        if (array == nullptr) {
            error(line_of(node), "", "'" + std::string(section) + "' must be an array of tables: write [[" +
                                         std::string(section) + "]]");
            continue;
        }
        for (const toml::node& item : *array) {
            const toml::table* table = item.as_table();
            if (table == nullptr) {
                error(line_of(item), "", "each [[" + std::string(section) + "]] entry must be a table");
            } else if (section == "cache") {
                load_cache(*table);
            } else {
                load_invalidate(*table);
            }
        }
    }
    link();
}

std::optional<StatementShape> RuleSetBuilder::parse_query(const toml::table& table, const std::string& name, int line,
                                                          std::string& query_out) {
    const toml::node* node = table.get("query");
    if (node == nullptr || !node->is_string()) {
        error(line, name, node == nullptr ? "missing 'query'" : "'query' must be a string");
        return std::nullopt;
    }
    query_out = node->as_string()->get();
    ShapeError shape_error;
    auto shape = analyze_statement(query_out, &shape_error);
    if (!shape) {
        std::string message = "query does not parse: " + shape_error.message;
        if (shape_error.cursor_position > 0) {
            message += " at character " + std::to_string(shape_error.cursor_position);
        }
        error(line_of(*node), name, message);
    }
    return shape;
}

void RuleSetBuilder::load_cache(const toml::table& table) {
    const int line = line_of(table);
    static const std::set<std::string_view> known{"name",          "query", "key", "ttl", "max_entry_size",
                                                  "allow_volatile", "share_across_roles"};
    CacheRule rule;
    rule.line = line;
    rule.name = table["name"].value_or(std::string{});
    for (const auto& [key, node] : table) {
        if (!known.contains(key.str())) {
            error(line_of(node), rule.name, "unknown setting '" + std::string(key.str()) + "' in [[cache]]");
        }
    }
    if (!valid_name(rule.name)) {
        error(line, rule.name, "[[cache]] needs a 'name' of letters, digits, '_', '-' or '.'");
        return;
    }
    auto shape = parse_query(table, rule.name, line, rule.query);
    if (!shape) {
        return;
    }
    rule.shape = std::move(*shape);
    rule.allow_volatile = table["allow_volatile"].value_or(false);
    rule.share_across_roles = table["share_across_roles"].value_or(false);
    const int query_line = line_of(*table.get("query"));
    if (auto verdict = statement_verdict(rule.shape, {rule.allow_volatile}); !verdict.cacheable()) {
        std::string message = "query cannot be cached: " + std::string(to_string(verdict.reason));
        if (!verdict.detail.empty()) {
            message += " (" + verdict.detail + ")";
        }
        if (verdict.reason == BypassReason::volatile_function) {
            message += "; set allow_volatile = true if its result may be reused for the TTL";
        }
        error(query_line, rule.name, message);
        return;
    }

    const toml::node* ttl = table.get("ttl");
    std::optional<std::chrono::milliseconds> ttl_value;
    if (ttl != nullptr && ttl->is_string()) {
        ttl_value = parse_duration(ttl->as_string()->get());
    } else if (ttl != nullptr && ttl->is_integer()) {
        ttl_value = parse_duration(std::to_string(ttl->as_integer()->get()));
    }
    if (!ttl_value || ttl_value->count() <= 0) {
        error(ttl == nullptr ? line : line_of(*ttl), rule.name,
              ttl == nullptr ? "missing 'ttl'" : "'ttl' must be a positive duration such as 30s, 2m or 1h");
        return;
    }
    rule.ttl = *ttl_value;

    if (const toml::node* size = table.get("max_entry_size")) {
        std::optional<std::uint64_t> parsed;
        if (size->is_string()) {
            parsed = parse_size(size->as_string()->get());
        } else if (size->is_integer() && size->as_integer()->get() > 0) {
            parsed = static_cast<std::uint64_t>(size->as_integer()->get());
        }
        if (!parsed || *parsed == 0) {
            error(line_of(*size), rule.name, "'max_entry_size' must be a size such as 512kB or 4MB");
            return;
        }
        rule.max_entry_size = *parsed;
    }

    const toml::node* key = table.get("key");
    if (key == nullptr || !key->is_string()) {
        error(key == nullptr ? line : line_of(*key), rule.name,
              key == nullptr ? "missing 'key'" : "'key' must be a string");
        return;
    }
    auto bound = bind(key->as_string()->get(), rule.shape, line_of(*key), rule.name);
    if (!bound) {
        return;
    }
    // Every value the client supplies must be part of the key, or two
    // different queries would share one entry.
    for (std::size_t i = 0; i < rule.shape.slots.size(); ++i) {
        const Slot& slot = rule.shape.slots[i];
        if (slot.kind != Slot::Kind::parameter) {
            continue;
        }
        bool covered = false;
        for (std::size_t p = 0; p < bound->key.parts.size(); ++p) {
            const int s = bound->part_slots[p];
            covered = covered || (s >= 0 && rule.shape.slots[static_cast<std::size_t>(s)].kind == Slot::Kind::parameter &&
                                  rule.shape.slots[static_cast<std::size_t>(s)].parameter == slot.parameter);
        }
        if (!covered) {
            error(line_of(*key), rule.name,
                  "key does not include " + describe_slot(slot) +
                      ": different values would share one cache entry; add {$" + std::to_string(slot.parameter) +
                      "}" + (slot.column.empty() ? "" : " or {" + slot.column + "}"));
            return;
        }
    }
    rule.key = std::move(*bound);
    set->cache_.push_back(std::move(rule));
}

void RuleSetBuilder::load_invalidate(const toml::table& table) {
    const int line = line_of(table);
    static const std::set<std::string_view> known{"name", "query", "keys"};
    InvalidateRule rule;
    rule.line = line;
    rule.name = table["name"].value_or(std::string{});
    for (const auto& [key, node] : table) {
        if (!known.contains(key.str())) {
            error(line_of(node), rule.name, "unknown setting '" + std::string(key.str()) + "' in [[invalidate]]");
        }
    }
    if (!valid_name(rule.name)) {
        error(line, rule.name, "[[invalidate]] needs a 'name' of letters, digits, '_', '-' or '.'");
        return;
    }
    auto shape = parse_query(table, rule.name, line, rule.query);
    if (!shape) {
        return;
    }
    rule.shape = std::move(*shape);
    if (rule.shape.kind == StatementKind::select || rule.shape.kind == StatementKind::copy_to) {
        error(line_of(*table.get("query")), rule.name, "an [[invalidate]] query must be a write, not a read");
        return;
    }
    const toml::node* keys = table.get("keys");
    const toml::array* array = keys != nullptr ? keys->as_array() : nullptr;
    if (array == nullptr || array->empty()) {
        error(keys == nullptr ? line : line_of(*keys), rule.name, "'keys' must be a non-empty array of key templates");
        return;
    }
    for (const toml::node& item : *array) {
        if (!item.is_string()) {
            error(line_of(item), rule.name, "each entry of 'keys' must be a string");
            return;
        }
        auto bound = bind(item.as_string()->get(), rule.shape, line_of(item), rule.name);
        if (!bound) {
            return;
        }
        rule.keys.push_back(std::move(*bound));
    }
    set->invalidate_.push_back(std::move(rule));
}

std::optional<BoundTemplate> RuleSetBuilder::bind(std::string_view text, const StatementShape& shape, int line,
                                                  const std::string& rule) {
    TemplateError template_error;
    auto key = parse_key_template(text, &template_error);
    if (!key) {
        error(line, rule, "key '" + std::string(text) + "': " + template_error.message);
        return std::nullopt;
    }
    BoundTemplate bound{*key, {}};
    for (const auto& part : key->parts) {
        int slot_index = -1;
        if (part.kind == KeyTemplate::Part::Kind::parameter) {
            for (std::size_t i = 0; i < shape.slots.size() && slot_index < 0; ++i) {
                if (shape.slots[i].kind == Slot::Kind::parameter && shape.slots[i].parameter == part.parameter) {
                    slot_index = static_cast<int>(i);
                }
            }
            if (slot_index < 0) {
                error(line, rule, "key '" + std::string(text) + "' names {$" + std::to_string(part.parameter) +
                                      "}, which the query does not have");
                return std::nullopt;
            }
        } else if (part.kind == KeyTemplate::Part::Kind::column) {
            std::vector<std::size_t> candidates;
            for (std::size_t i = 0; i < shape.slots.size(); ++i) {
                if (shape.slots[i].column == part.text) {
                    candidates.push_back(i);
                }
            }
            if (candidates.empty()) {
                error(line, rule, "key '" + std::string(text) + "' names {" + part.text +
                                      "}, but the query compares no value with a column of that name");
                return std::nullopt;
            }
            // Several slots are fine only if they must hold the same value.
            const Slot& first = shape.slots[candidates.front()];
            for (std::size_t c : candidates) {
                const Slot& other = shape.slots[c];
                const bool same = first.kind == Slot::Kind::parameter ? other.kind == Slot::Kind::parameter &&
                                                                            other.parameter == first.parameter
                                                                      : other == first;
                if (!same) {
                    error(line, rule, "key '" + std::string(text) + "': {" + part.text +
                                          "} is ambiguous (the query compares several values with it); use {$n}");
                    return std::nullopt;
                }
            }
            slot_index = static_cast<int>(candidates.front());
        }
        bound.part_slots.push_back(slot_index);
    }
    return bound;
}

void RuleSetBuilder::link() {
    RuleSet& rs = *set;
    std::set<std::string> names;
    auto check_name = [&](const std::string& name, int line) {
        if (!names.insert(name).second) {
            error(line, name, "duplicate rule name");
        }
    };
    for (std::size_t i = 0; i < rs.cache_.size(); ++i) {
        const CacheRule& rule = rs.cache_[i];
        check_name(rule.name, rule.line);
        auto [begin, end] = rs.cache_by_shape_.equal_range(rule.shape.shape_hash);
        for (auto it = begin; it != end; ++it) {
            const CacheRule& other = rs.cache_[it->second];
            if (other.shape.canonical == rule.shape.canonical && other.shape.slots == rule.shape.slots) {
                error(rule.line, rule.name, "same query as rule '" + other.name + "'");
            }
        }
        rs.cache_by_shape_.emplace(rule.shape.shape_hash, i);
        for (const TableName& table : rule.shape.tables_read) {
            rs.cache_by_table_.emplace(table.name, i);
        }
    }
    for (std::size_t i = 0; i < rs.invalidate_.size(); ++i) {
        InvalidateRule& rule = rs.invalidate_[i];
        check_name(rule.name, rule.line);
        rs.invalidate_by_shape_.emplace(rule.shape.shape_hash, i);
        for (const BoundTemplate& key : rule.keys) {
            const std::string pattern = key.key.pattern();
            bool found = false;
            for (std::size_t c = 0; c < rs.cache_.size(); ++c) {
                if (rs.cache_[c].key.key.pattern() == pattern) {
                    found = true;
                    if (std::find(rule.covers.begin(), rule.covers.end(), c) == rule.covers.end()) {
                        rule.covers.push_back(c);
                    }
                }
            }
            if (!found) {
                error(rule.line, rule.name,
                      "key '" + key.key.source + "' has the shape of no [[cache]] rule's key, so it would delete nothing");
            }
        }
    }
}

namespace {

template <typename Parse>
RulesResult load_with(const std::string& source, Parse parse) {
    RuleSetBuilder builder;
    builder.start(source);
    try {
        toml::table root = parse();
        builder.load(root);
    } catch (const toml::parse_error& e) {
        builder.error(static_cast<int>(e.source().begin.line), "", std::string(e.description()));
    }
    std::stable_sort(builder.errors.begin(), builder.errors.end(),
                     [](const RuleError& a, const RuleError& b) { return a.line < b.line; });
    RulesResult result;
    result.errors = std::move(builder.errors);
    if (result.errors.empty()) {
        result.rules = std::move(builder.set);
    }
    return result;
}

}  // namespace

RulesResult load_rules_text(std::string_view toml_text, const std::string& source_name) {
    return load_with(source_name, [&] { return toml::parse(toml_text, source_name); });
}

RulesResult load_rules_file(const std::string& path) {
    return load_with(path, [&] { return toml::parse_file(path); });
}

// ------------------------------------------------------------ matching

std::optional<SlotValues> slot_values(const StatementShape& statement,
                                      const std::vector<std::optional<std::string>>& parameters) {
    SlotValues values;
    values.reserve(statement.slots.size());
    for (const Slot& slot : statement.slots) {
        if (slot.kind == Slot::Kind::literal) {
            values.push_back(slot.is_null ? std::nullopt : std::optional<std::string>(slot.literal));
        } else if (slot.parameter >= 1 && static_cast<std::size_t>(slot.parameter) <= parameters.size()) {
            values.push_back(parameters[static_cast<std::size_t>(slot.parameter) - 1]);
        } else {
            return std::nullopt;
        }
    }
    return values;
}

namespace {

// The statement's values fit the rule: literal slots hold the rule's
// literal, and slots sharing a rule parameter hold one value.
bool values_fit(const StatementShape& rule_shape, const SlotValues& values) {
    if (values.size() != rule_shape.slots.size()) {
        return false;
    }
    std::unordered_map<int, std::size_t> first_slot_of_parameter;
    for (std::size_t i = 0; i < values.size(); ++i) {
        const Slot& slot = rule_shape.slots[i];
        if (slot.kind == Slot::Kind::literal) {
            const bool fits = slot.is_null ? !values[i].has_value() : values[i] == slot.literal;
            if (!fits) {
                return false;
            }
            continue;
        }
        auto [it, inserted] = first_slot_of_parameter.emplace(slot.parameter, i);
        if (!inserted && values[it->second] != values[i]) {
            return false;
        }
    }
    return true;
}

}  // namespace

std::string render_key(const BoundTemplate& bound, const SlotValues& values, const KeyContext& context) {
    std::string out;
    for (std::size_t p = 0; p < bound.key.parts.size(); ++p) {
        const auto& part = bound.key.parts[p];
        switch (part.kind) {
            case KeyTemplate::Part::Kind::text: out += part.text; break;
            case KeyTemplate::Part::Kind::database: append_key_value(out, context.database); break;
            case KeyTemplate::Part::Kind::role: append_key_value(out, context.role); break;
            case KeyTemplate::Part::Kind::parameter:
            case KeyTemplate::Part::Kind::column: {
                const auto& value = values[static_cast<std::size_t>(bound.part_slots[p])];
                append_key_value(out, value ? std::optional<std::string_view>(*value) : std::nullopt);
                break;
            }
        }
    }
    return out;
}

std::optional<CacheMatch> RuleSet::match_cache(const StatementShape& statement, const SlotValues& values,
                                               const KeyContext& context) const {
    auto [begin, end] = cache_by_shape_.equal_range(statement.shape_hash);
    for (auto it = begin; it != end; ++it) {
        const CacheRule& rule = cache_[it->second];
        if (rule.shape.canonical == statement.canonical && values_fit(rule.shape, values)) {
            return CacheMatch{&rule, it->second, render_key(rule.key, values, context)};
        }
    }
    return std::nullopt;
}

std::optional<InvalidateMatch> RuleSet::match_invalidate(const StatementShape& statement, const SlotValues& values,
                                                         const KeyContext& context) const {
    auto [begin, end] = invalidate_by_shape_.equal_range(statement.shape_hash);
    for (auto it = begin; it != end; ++it) {
        const InvalidateRule& rule = invalidate_[it->second];
        if (rule.shape.canonical == statement.canonical && values_fit(rule.shape, values)) {
            InvalidateMatch match{&rule, {}};
            for (const BoundTemplate& key : rule.keys) {
                match.rendered.push_back(render_key(key, values, context));
            }
            return match;
        }
    }
    return std::nullopt;
}

std::vector<std::size_t> RuleSet::rules_reading(const TableName& table) const {
    std::vector<std::size_t> out;
    auto [begin, end] = cache_by_table_.equal_range(table.name);
    for (auto it = begin; it != end; ++it) {
        for (const TableName& read : cache_[it->second].shape.tables_read) {
            if (same_table(read, table) && std::find(out.begin(), out.end(), it->second) == out.end()) {
                out.push_back(it->second);
            }
        }
    }
    return out;
}

}  // namespace pgshelf::cache_rules
