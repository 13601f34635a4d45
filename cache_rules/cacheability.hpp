// Whether a statement may be cached at all, whatever a rule says, with a
// reason for every "no". Session-dependent reasons (transaction state, row
// limits) are decided by the proxy's cache state machine with the same
// reason codes.
#pragma once

#include <string>
#include <string_view>

#include "cache_rules/statement_shape.hpp"

namespace pgshelf::cache_rules {

enum class BypassReason {
    none,
    not_select,          // INSERT/UPDATE/..., DDL, utility statements
    locking_clause,      // FOR UPDATE / FOR SHARE
    data_modifying_cte,  // WITH x AS (UPDATE ...)
    select_into,         // SELECT INTO creates a table
    volatile_function,   // now(), random(), nextval(), user-defined functions
    temp_table,          // results of temp tables are per session
    row_limit,           // Execute with a row limit: a partial fetch
    transaction_wrote,   // the transaction has written: its reads see its own writes
    failed_transaction,  // state E: the server rejects every statement anyway
    multi_statement,     // several statements in one Query
    no_rule,             // no rule matches
    settings_unknown,    // session settings could not be established
};

inline constexpr std::size_t bypass_reason_count = static_cast<std::size_t>(BypassReason::settings_unknown) + 1;

std::string_view to_string(BypassReason reason);

struct Verdict {
    BypassReason reason = BypassReason::none;
    std::string detail;  // e.g. the function's name
    bool cacheable() const { return reason == BypassReason::none; }
};

struct VerdictOptions {
    bool allow_volatile = false;  // a rule's explicit opt-in
};

Verdict statement_verdict(const StatementShape& shape, const VerdictOptions& options = {});

// True for pg_catalog functions whose result depends only on their
// arguments and on settings that are part of every cache key.
bool is_cacheable_builtin(std::string_view function_name);

// True for functions known not to change session settings: pg_catalog's
// immutable and stable ones and a list of common volatile ones (random(),
// nextval(), pg_advisory_lock(), ...). A function outside pg_catalog may
// call set_config() (a "set tenant" helper for row-level security), which
// the settings tracker cannot see.
bool leaves_settings_alone(std::string_view function_name);

}  // namespace pgshelf::cache_rules
