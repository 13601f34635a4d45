// The shape of one SQL statement, from its libpg_query parse tree: a
// canonical form with every literal and parameter abstracted into a slot,
// the values in those slots, the tables read and written, and the facts a
// cacheability verdict needs.
//
// Two statements have the same shape when their parse trees are equal up to
// the values in their slots: whitespace, keyword case, identifier quoting,
// comments, and literal-vs-parameter do not matter. Operand order does.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgshelf::cache_rules {

// A place in the statement where a value goes.
struct Slot {
    enum class Kind { literal, parameter };
    Kind kind = Kind::literal;
    int parameter = 0;     // $n, for Kind::parameter
    std::string literal;   // the literal's text (numbers as written, strings unquoted)
    bool is_null = false;  // literal NULL
    std::string column;    // the column this value is compared with or assigned to, if any
    bool operator==(const Slot&) const = default;
};

struct TableName {
    std::string schema;  // empty when unqualified: resolved by search_path
    std::string name;
    bool operator==(const TableName&) const = default;
    auto operator<=>(const TableName&) const = default;
};

enum class StatementKind { select, insert, update, del, merge, truncate, copy_from, copy_to, other };

struct StatementShape {
    StatementKind kind = StatementKind::other;
    std::uint64_t shape_hash = 0;  // hash of the canonical form
    std::string canonical;         // parse tree with slots abstracted; equal shapes ⇔ equal text
    std::vector<Slot> slots;       // in parse-tree order
    std::vector<TableName> tables_read;
    std::vector<TableName> tables_written;
    // Facts for the cacheability verdict.
    bool locking_clause = false;      // FOR UPDATE / SHARE
    bool data_modifying_cte = false;  // WITH x AS (INSERT/UPDATE/DELETE ...)
    bool select_into = false;
    bool temp_table_reference = false;  // pg_temp.x
    std::vector<std::string> functions;  // every function called, lower-case, schema-qualified if written so
    bool uses_time_value = false;        // CURRENT_DATE, CURRENT_TIMESTAMP, LOCALTIME, ...
    int max_parameter = 0;
};

struct ShapeError {
    std::string message;
    int cursor_position = 0;
};

// Analyses one statement. Texts holding several statements, and texts that
// do not parse, give nullopt (and fill `error` when given).
std::optional<StatementShape> analyze_statement(std::string_view sql, ShapeError* error = nullptr);

// Every statement of a text (a simple Query may hold several), or nullopt
// when the text does not parse.
std::optional<std::vector<StatementShape>> analyze_statements(std::string_view sql, ShapeError* error = nullptr);

std::string_view to_string(StatementKind kind);

}  // namespace pgshelf::cache_rules
