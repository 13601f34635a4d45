// Owning wrapper around libpg_query's protobuf parse tree, and a generic
// walker over it. libpg_query is PostgreSQL's own parser, so what parses
// here parses the same way on the server.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <pg_query/pg_query.pb-c.h>

namespace pgshelf::cache_rules {

struct ParseError {
    std::string message;
    int cursor_position = 0;  // 1-based offset into the SQL text, 0 if unknown
};

class ParseTree {
public:
    // Parses `sql` (any number of statements). On failure returns nullptr
    // and fills `error` when given.
    static std::unique_ptr<ParseTree> parse(std::string_view sql, ParseError* error = nullptr);

    ~ParseTree();
    ParseTree(const ParseTree&) = delete;
    ParseTree& operator=(const ParseTree&) = delete;

    std::size_t statement_count() const { return result_->n_stmts; }
    const PgQuery__Node* statement(std::size_t i) const { return result_->stmts[i]->stmt; }

private:
    explicit ParseTree(PgQuery__ParseResult* result) : result_(result) {}
    PgQuery__ParseResult* result_;
};

// Calls `visit` for `root` and every message below it, depth first.
// Returning false from `visit` skips that message's children.
void walk(const ProtobufCMessage* root, const std::function<bool(const ProtobufCMessage&)>& visit);

}  // namespace pgshelf::cache_rules
