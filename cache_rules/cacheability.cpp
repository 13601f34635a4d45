// Statement-level cacheability; see cacheability.hpp.
#include "cache_rules/cacheability.hpp"

#include <algorithm>

namespace pgshelf::cache_rules {
namespace {

#include "cache_rules/builtin_functions.inc"

// STABLE builtins vetted by hand: their results depend only on arguments,
// the catalog's types, and settings that are part of every key (role,
// database, search_path, TimeZone, DateStyle, ...). Time-dependent
// (now(), age(x)) and connection-dependent (inet_client_addr(),
// current_setting()) ones are deliberately absent.
constexpr std::string_view vetted_stable_builtins[] = {
    "array_to_json", "array_to_string", "concat", "concat_ws", "convert", "convert_from", "convert_to",
    "current_database", "current_schema", "current_schemas", "current_user", "date", "date_part", "date_trunc",
    "enum_first", "enum_last", "enum_range", "extract", "format", "format_type", "generate_series",
    "getpgusername", "json_agg", "json_build_array", "json_build_object", "json_object_agg",
    "json_populate_record", "json_populate_recordset", "json_to_record", "json_to_recordset", "jsonb_agg",
    "jsonb_build_array", "jsonb_build_object", "jsonb_populate_record", "jsonb_populate_recordset",
    "jsonb_to_record", "jsonb_to_recordset", "length", "make_timestamptz", "money", "numeric", "overlaps",
    "phraseto_tsquery", "plainto_tsquery", "quote_literal", "quote_nullable", "row_to_json", "session_user",
    "time", "timestamp", "timestamptz", "timetz", "timezone", "to_char", "to_date", "to_json", "to_jsonb",
    "to_number", "to_timestamp", "to_tsquery", "to_tsvector", "websearch_to_tsquery",
};

template <std::size_t N>
bool sorted_contains(const std::string_view (&list)[N], std::string_view name) {
    return std::binary_search(std::begin(list), std::end(list), name);
}

}  // namespace

std::string_view to_string(BypassReason reason) {
    switch (reason) {
        case BypassReason::none: return "none";
        case BypassReason::not_select: return "not_select";
        case BypassReason::locking_clause: return "locking_clause";
        case BypassReason::data_modifying_cte: return "data_modifying_cte";
        case BypassReason::select_into: return "select_into";
        case BypassReason::volatile_function: return "volatile_function";
        case BypassReason::temp_table: return "temp_table";
        case BypassReason::row_limit: return "row_limit";
        case BypassReason::transaction_wrote: return "transaction_wrote";
        case BypassReason::failed_transaction: return "failed_transaction";
        case BypassReason::multi_statement: return "multi_statement";
        case BypassReason::no_rule: return "no_rule";
        case BypassReason::settings_unknown: return "settings_unknown";
    }
    return "unknown";
}

bool is_cacheable_builtin(std::string_view name) {
    if (name.starts_with("pg_catalog.")) {
        name.remove_prefix(11);
    } else if (name.find('.') != std::string_view::npos) {
        return false;  // another schema: a user or extension function
    }
    if (sorted_contains(immutable_builtins, name)) {
        return true;
    }
    return std::find(std::begin(vetted_stable_builtins), std::end(vetted_stable_builtins), name) !=
               std::end(vetted_stable_builtins) &&
           sorted_contains(stable_builtins, name);
}

bool leaves_settings_alone(std::string_view name) {
    if (name.starts_with("pg_catalog.")) {
        name.remove_prefix(11);
    } else if (name.find('.') != std::string_view::npos) {
        return false;  // another schema: a user or extension function
    }
    // Volatile builtins applications call in ordinary statements; none of
    // them touches settings. (set_config() is the settings tracker's.)
    static constexpr std::string_view volatile_builtins[] = {
        "clock_timestamp", "currval", "gen_random_uuid", "lastval", "nextval", "pg_advisory_lock",
        "pg_advisory_unlock", "pg_advisory_unlock_all", "pg_advisory_xact_lock", "pg_backend_pid",
        "pg_cancel_backend", "pg_current_xact_id", "pg_notify", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
        "pg_terminate_backend", "pg_try_advisory_lock", "pg_try_advisory_xact_lock", "random", "set_config",
        "setseed", "setval", "timeofday", "txid_current",
    };
    return sorted_contains(immutable_builtins, name) || sorted_contains(stable_builtins, name) ||
           std::find(std::begin(volatile_builtins), std::end(volatile_builtins), name) != std::end(volatile_builtins);
}

Verdict statement_verdict(const StatementShape& shape, const VerdictOptions& options) {
    if (shape.kind != StatementKind::select) {
        return {BypassReason::not_select, std::string(to_string(shape.kind))};
    }
    if (shape.data_modifying_cte) {
        return {BypassReason::data_modifying_cte, {}};
    }
    if (shape.locking_clause) {
        return {BypassReason::locking_clause, {}};
    }
    if (shape.select_into) {
        return {BypassReason::select_into, {}};
    }
    if (shape.temp_table_reference) {
        return {BypassReason::temp_table, {}};
    }
    if (!options.allow_volatile) {
        if (shape.uses_time_value) {
            return {BypassReason::volatile_function, "CURRENT_DATE/CURRENT_TIMESTAMP/LOCALTIME"};
        }
        for (const std::string& function : shape.functions) {
            if (!is_cacheable_builtin(function)) {
                return {BypassReason::volatile_function, function};
            }
        }
    }
    return {};
}

}  // namespace pgshelf::cache_rules
