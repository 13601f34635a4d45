// Settings analysis from the libpg_query parse tree.
#include "cache_rules/statement_analysis.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

#include "cache_rules/parse_tree.hpp"

namespace pgshelf::cache_rules {
namespace {

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
// `lower_word` is lower-case ASCII. ASCII folding (not std::tolower, which
// consults the locale per byte) keeps this cheap on every statement.
bool starts_with_nocase(std::string_view text, std::size_t at, std::string_view lower_word) {
    if (text.size() - at < lower_word.size()) {
        return false;
    }
    for (std::size_t j = 0; j < lower_word.size(); ++j) {
        if ((text[at + j] | 0x20) != lower_word[j]) {
            return false;
        }
    }
    return true;
}

// "do" as a word followed by a body: DO $$…$$ or DO '…'.
bool is_do_keyword(std::string_view sql, std::size_t at) {
    if (sql.size() - at < 3 || (sql[at + 1] | 0x20) != 'o') {
        return false;
    }
    const bool word_start = at == 0 || !(std::isalnum(static_cast<unsigned char>(sql[at - 1])) || sql[at - 1] == '_');
    const char next = sql[at + 2];
    return word_start && (std::isspace(static_cast<unsigned char>(next)) || next == '$' || next == '\'');
}

}  // namespace

bool may_change_settings(std::string_view sql) {
    // One pass over the text (this runs for every statement a client sends):
    // a keyword is only compared where its first letter occurs.
    static constexpr auto candidate = [] {
        std::array<bool, 256> first{};
        for (unsigned char c : std::string_view("sSdDrRcC")) {
            first[c] = true;
        }
        return first;
    }();
    for (std::size_t i = 0; i < sql.size(); ++i) {
        if (!candidate[static_cast<unsigned char>(sql[i])]) {
            continue;
        }
        switch (sql[i] | 0x20) {
            case 's':
                if (starts_with_nocase(sql, i, "set")) {
                    return true;
                }
                break;
            case 'd':
                if (starts_with_nocase(sql, i, "discard") || is_do_keyword(sql, i)) {
                    return true;
                }
                break;
            case 'r':
                if (starts_with_nocase(sql, i, "rollback")) {
                    return true;
                }
                break;
            case 'c':
                if (starts_with_nocase(sql, i, "call")) {
                    return true;
                }
                break;
            default:
                break;
        }
    }
    return false;
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
