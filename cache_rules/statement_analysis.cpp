// Settings analysis from the libpg_query parse tree.
#include "cache_rules/statement_analysis.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "cache_rules/parse_tree.hpp"

namespace pgshelf::cache_rules {
namespace {

// `needle` is lower-case ASCII. ASCII folding (not std::tolower, which
// consults the locale per byte) keeps this cheap on every statement.
bool contains_nocase(std::string_view haystack, std::string_view needle) {
    if (needle.size() > haystack.size()) {
        return false;
    }
    const char first = needle.front();
    for (std::size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
        if ((haystack[i] | 0x20) != first) {
            continue;
        }
        std::size_t j = 1;
        while (j < needle.size() && (haystack[i + j] | 0x20) == needle[j]) {
            ++j;
        }
        if (j == needle.size()) {
            return true;
        }
    }
    return false;
}

std::string render_const(const PgQuery__Node* node) {
    if (node == nullptr) {
        return {};
    }
    if (node->node_case == PG_QUERY__NODE__NODE_TYPE_CAST && node->type_cast != nullptr) {
        return render_const(node->type_cast->arg);
    }
    if (node->node_case != PG_QUERY__NODE__NODE_A_CONST || node->a_const == nullptr) {
        return {};
    }
    const PgQuery__AConst* c = node->a_const;
    switch (c->val_case) {
        case PG_QUERY__A__CONST__VAL_SVAL: return c->sval->sval;
        case PG_QUERY__A__CONST__VAL_IVAL: return std::to_string(c->ival->ival);
        case PG_QUERY__A__CONST__VAL_FVAL: return c->fval->fval;
        case PG_QUERY__A__CONST__VAL_BOOLVAL: return c->boolval->boolval ? "on" : "off";
        case PG_QUERY__A__CONST__VAL_BSVAL: return c->bsval->bsval;
        default: return {};
    }
}

void analyze_variable_set(const PgQuery__VariableSetStmt& stmt, SettingsEffect& out) {
    SettingChange change;
    change.name = stmt.name;
    change.local = stmt.is_local;
    switch (stmt.kind) {
        case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE:
            change.kind = SettingChange::Kind::set;
            for (size_t i = 0; i < stmt.n_args; ++i) {
                if (i > 0) {
                    change.value += ", ";
                }
                change.value += render_const(stmt.args[i]);
            }
            break;
        case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_DEFAULT:
        case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET:
            change.kind = SettingChange::Kind::reset;
            break;
        case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET_ALL:
            change.kind = SettingChange::Kind::reset_all;
            change.name.clear();
            break;
        default:
            // SET ... FROM CURRENT and SET TRANSACTION forms: value unknown here.
            if (change.name.rfind("TRANSACTION", 0) == 0 || change.name.rfind("transaction", 0) == 0) {
                return;
            }
            out.opaque = true;
            return;
    }
    // SET ROLE NONE means RESET ROLE.
    if (change.kind == SettingChange::Kind::set && change.name == "role" && change.value == "none") {
        change.kind = SettingChange::Kind::reset;
        change.value.clear();
    }
    out.changes.push_back(std::move(change));
}

// "DO" as a word followed by a body ('$$' or a quoted string), not inside
// identifiers such as "order" or "undo".
bool contains_do_keyword(std::string_view sql) {
    for (std::size_t i = 0; i + 2 < sql.size(); ++i) {
        if ((sql[i] | 0x20) != 'd' || (sql[i + 1] | 0x20) != 'o') {
            continue;
        }
        const bool word_start = i == 0 || !(std::isalnum(static_cast<unsigned char>(sql[i - 1])) || sql[i - 1] == '_');
        const char next = sql[i + 2];
        if (word_start && (std::isspace(static_cast<unsigned char>(next)) || next == '$' || next == '\'')) {
            return true;
        }
    }
    return false;
}

}  // namespace

bool may_change_settings(std::string_view sql) {
    return contains_nocase(sql, "set") || contains_nocase(sql, "discard") || contains_nocase(sql, "rollback") ||
           contains_nocase(sql, "call") || contains_do_keyword(sql);
}

SettingsEffect analyze_settings(std::string_view sql) {
    SettingsEffect out;
    auto tree = ParseTree::parse(sql);
    if (!tree) {
        return out;
    }
    for (std::size_t i = 0; i < tree->statement_count(); ++i) {
        const PgQuery__Node* stmt = tree->statement(i);
        if (stmt == nullptr) {
            continue;
        }
        switch (stmt->node_case) {
            case PG_QUERY__NODE__NODE_VARIABLE_SET_STMT:
                analyze_variable_set(*stmt->variable_set_stmt, out);
                continue;
            case PG_QUERY__NODE__NODE_DISCARD_STMT:
                if (stmt->discard_stmt->target == PG_QUERY__DISCARD_MODE__DISCARD_ALL) {
                    out.changes.push_back({SettingChange::Kind::reset_all, {}, {}, false});
                }
                continue;
            case PG_QUERY__NODE__NODE_TRANSACTION_STMT:
                if (stmt->transaction_stmt->kind == PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_TO) {
                    out.opaque = true;
                }
                continue;
            case PG_QUERY__NODE__NODE_DO_STMT:
            case PG_QUERY__NODE__NODE_CALL_STMT:
                out.opaque = true;
                continue;
            default:
                break;
        }
        walk(&stmt->base, [&out](const ProtobufCMessage& msg) {
            if (msg.descriptor != &pg_query__func_call__descriptor) {
                return true;
            }
            const auto& call = reinterpret_cast<const PgQuery__FuncCall&>(msg);
            for (size_t j = 0; j < call.n_funcname; ++j) {
                const PgQuery__Node* part = call.funcname[j];
                if (part->node_case == PG_QUERY__NODE__NODE_STRING &&
                    std::strcmp(part->string->sval, "set_config") == 0) {
                    out.opaque = true;
                }
            }
            return true;
        });
    }
    return out;
}

}  // namespace pgshelf::cache_rules
