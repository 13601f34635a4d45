// Statement shape from the libpg_query protobuf tree; see statement_shape.hpp.
//
// The canonical form is a serialisation of the tree driven by protobuf-c's
// descriptors, so every node type PostgreSQL has is covered without a
// hand-written case per node. Only the nodes that carry values (A_Const,
// ParamRef), names (RangeVar, FuncCall) or the facts the verdict needs get
// special handling.
#include "cache_rules/statement_shape.hpp"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "cache_rules/parse_tree.hpp"

namespace pgshelf::cache_rules {
namespace {

template <typename T>
const T& field_at(const ProtobufCMessage* msg, unsigned offset) {
    return *reinterpret_cast<const T*>(reinterpret_cast<const char*>(msg) + offset);
}

// The message inside a Node (Node is a oneof wrapper), or nullptr.
const ProtobufCMessage* unwrap(const PgQuery__Node* node) {
    if (node == nullptr || node->node_case == PG_QUERY__NODE__NODE__NOT_SET) {
        return nullptr;
    }
    // Every member of the Node oneof is a message pointer at the same offset.
    return reinterpret_cast<const ProtobufCMessage*>(node->a_const);
}

std::string column_name(const PgQuery__ColumnRef& ref) {
    // The last name part (table.column → column); A_Star has no name.
    for (size_t i = ref.n_fields; i > 0; --i) {
        const PgQuery__Node* part = ref.fields[i - 1];
        if (part->node_case == PG_QUERY__NODE__NODE_STRING) {
            return part->string->sval;
        }
    }
    return {};
}

// A node that is a value: a literal, a parameter, or a cast of one.
bool is_value(const PgQuery__Node* node) {
    while (node != nullptr && node->node_case == PG_QUERY__NODE__NODE_TYPE_CAST) {
        node = node->type_cast->arg;
    }
    return node != nullptr &&
           (node->node_case == PG_QUERY__NODE__NODE_A_CONST || node->node_case == PG_QUERY__NODE__NODE_PARAM_REF);
}

class ShapeBuilder {
public:
    explicit ShapeBuilder(StatementShape& out) : out_(out) {}

    void statement(const PgQuery__Node* node) {
        switch (node->node_case) {
            case PG_QUERY__NODE__NODE_SELECT_STMT: out_.kind = StatementKind::select; break;
            case PG_QUERY__NODE__NODE_INSERT_STMT: out_.kind = StatementKind::insert; break;
            case PG_QUERY__NODE__NODE_UPDATE_STMT: out_.kind = StatementKind::update; break;
            case PG_QUERY__NODE__NODE_DELETE_STMT: out_.kind = StatementKind::del; break;
            case PG_QUERY__NODE__NODE_MERGE_STMT: out_.kind = StatementKind::merge; break;
            case PG_QUERY__NODE__NODE_TRUNCATE_STMT: out_.kind = StatementKind::truncate; break;
            case PG_QUERY__NODE__NODE_COPY_STMT:
                out_.kind = node->copy_stmt->is_from ? StatementKind::copy_from : StatementKind::copy_to;
                break;
            default: out_.kind = StatementKind::other; break;
        }
        // Tables named by DDL and other statements count as written.
        default_write_ = out_.kind == StatementKind::other || out_.kind == StatementKind::truncate ||
                         out_.kind == StatementKind::copy_from;
        visit(unwrap(node), {});
        out_.shape_hash = XXH3_64bits(out_.canonical.data(), out_.canonical.size());
    }

private:
    void visit(const ProtobufCMessage* msg, const std::string& column_hint) {
        std::string& c = out_.canonical;
        if (msg == nullptr) {
            c += '~';
            return;
        }
        const ProtobufCMessageDescriptor* d = msg->descriptor;
        if (d == &pg_query__node__descriptor) {
            visit(unwrap(reinterpret_cast<const PgQuery__Node*>(msg)), column_hint);
            return;
        }
        if (d == &pg_query__a__const__descriptor) {
            add_literal(*reinterpret_cast<const PgQuery__AConst*>(msg), column_hint);
            return;
        }
        if (d == &pg_query__param_ref__descriptor) {
            const auto& ref = *reinterpret_cast<const PgQuery__ParamRef*>(msg);
            out_.slots.push_back({Slot::Kind::parameter, ref.number, {}, false, column_hint});
            out_.max_parameter = std::max(out_.max_parameter, ref.number);
            c += '?';
            return;
        }
        note_facts(msg);

        c += d->short_name;
        c += '(';
        for (unsigned i = 0; i < d->n_fields; ++i) {
            const ProtobufCFieldDescriptor& f = d->fields[i];
            if (std::strcmp(f.name, "location") == 0) {
                continue;
            }
            if ((f.flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0 &&
                field_at<uint32_t>(msg, f.quantifier_offset) != f.id) {
                continue;
            }
            c += std::to_string(f.id);
            c += ':';
            const std::string hint = child_hint(msg, f, column_hint);
            if (f.label == PROTOBUF_C_LABEL_REPEATED) {
                const size_t count = field_at<size_t>(msg, f.quantifier_offset);
                c += '[';
                for (size_t j = 0; j < count; ++j) {
                    repeated_item(msg, f, j, hint);
                }
                c += ']';
            } else {
                scalar_or_message(msg, f, f.offset, hint);
            }
            c += ';';
        }
        c += ')';
    }

    void scalar_or_message(const ProtobufCMessage* msg, const ProtobufCFieldDescriptor& f, unsigned offset,
                           const std::string& hint) {
        std::string& c = out_.canonical;
        switch (f.type) {
            case PROTOBUF_C_TYPE_MESSAGE:
                visit(field_at<const ProtobufCMessage*>(msg, offset), hint);
                break;
            case PROTOBUF_C_TYPE_STRING: {
                const char* s = field_at<const char*>(msg, offset);
                const size_t n = s == nullptr ? 0 : std::strlen(s);
                c += std::to_string(n);
                c += '\'';
                c.append(s == nullptr ? "" : s, n);
                break;
            }
            case PROTOBUF_C_TYPE_BOOL: c += field_at<protobuf_c_boolean>(msg, offset) ? 'T' : 'F'; break;
            case PROTOBUF_C_TYPE_ENUM:
            case PROTOBUF_C_TYPE_INT32:
            case PROTOBUF_C_TYPE_SINT32:
            case PROTOBUF_C_TYPE_SFIXED32: c += std::to_string(field_at<int32_t>(msg, offset)); break;
            case PROTOBUF_C_TYPE_UINT32:
            case PROTOBUF_C_TYPE_FIXED32: c += std::to_string(field_at<uint32_t>(msg, offset)); break;
            case PROTOBUF_C_TYPE_INT64:
            case PROTOBUF_C_TYPE_SINT64:
            case PROTOBUF_C_TYPE_SFIXED64: c += std::to_string(field_at<int64_t>(msg, offset)); break;
            case PROTOBUF_C_TYPE_UINT64:
            case PROTOBUF_C_TYPE_FIXED64: c += std::to_string(field_at<uint64_t>(msg, offset)); break;
            default: c += '#'; break;  // floats and bytes do not occur in parse trees
        }
    }

    void repeated_item(const ProtobufCMessage* msg, const ProtobufCFieldDescriptor& f, size_t index,
                       const std::string& hint) {
        std::string& c = out_.canonical;
        if (f.type == PROTOBUF_C_TYPE_MESSAGE) {
            const auto* items = field_at<ProtobufCMessage* const*>(msg, f.offset);
            // INSERT ... VALUES rows: the i-th value of a row goes into the i-th column.
            std::string item_hint = hint;
            if (msg == current_values_row_) {
                item_hint = index < insert_columns_.size() ? insert_columns_[index] : std::string{};
            }
            if (is_values_lists_field(msg, f)) {
                current_values_row_ = unwrap(reinterpret_cast<const PgQuery__Node*>(items[index]));
            }
            visit(items[index], item_hint);
        } else {
            // Repeated scalars: rare in parse trees; serialise by position.
            c += '#';
        }
        c += ',';
    }

    bool is_values_lists_field(const ProtobufCMessage* msg, const ProtobufCFieldDescriptor& f) const {
        return msg->descriptor == &pg_query__select_stmt__descriptor && std::strcmp(f.name, "values_lists") == 0;
    }

    // The column a child value belongs to: `col = value`, `col IN (...)`,
    // `SET col = value`, or an INSERT column (see repeated_item).
    std::string child_hint(const ProtobufCMessage* msg, const ProtobufCFieldDescriptor& f, const std::string& hint) {
        const ProtobufCMessageDescriptor* d = msg->descriptor;
        if (d == &pg_query__type_cast__descriptor) {
            return std::strcmp(f.name, "arg") == 0 ? hint : std::string{};
        }
        if (d == &pg_query__list__descriptor) {
            return hint;
        }
        if (d == &pg_query__a__expr__descriptor) {
            const auto& e = *reinterpret_cast<const PgQuery__AExpr*>(msg);
            const bool left = std::strcmp(f.name, "lexpr") == 0;
            const bool right = std::strcmp(f.name, "rexpr") == 0;
            const PgQuery__Node* other = left ? e.rexpr : right ? e.lexpr : nullptr;
            const PgQuery__Node* self = left ? e.lexpr : right ? e.rexpr : nullptr;
            if (other != nullptr && other->node_case == PG_QUERY__NODE__NODE_COLUMN_REF &&
                (is_value(self) || (self != nullptr && self->node_case == PG_QUERY__NODE__NODE_LIST))) {
                return column_name(*other->column_ref);
            }
            return {};
        }
        if (d == &pg_query__res_target__descriptor && std::strcmp(f.name, "val") == 0 && in_update_targets_) {
            const auto& t = *reinterpret_cast<const PgQuery__ResTarget*>(msg);
            return is_value(t.val) && t.name != nullptr ? std::string(t.name) : std::string{};
        }
        return {};
    }

    void add_literal(const PgQuery__AConst& a, const std::string& column_hint) {
        Slot slot{Slot::Kind::literal, 0, {}, a.isnull != 0, column_hint};
        switch (a.val_case) {
            case PG_QUERY__A__CONST__VAL_IVAL: slot.literal = std::to_string(a.ival->ival); break;
            case PG_QUERY__A__CONST__VAL_FVAL: slot.literal = a.fval->fval; break;
            case PG_QUERY__A__CONST__VAL_BOOLVAL: slot.literal = a.boolval->boolval ? "true" : "false"; break;
            case PG_QUERY__A__CONST__VAL_SVAL: slot.literal = a.sval->sval; break;
            case PG_QUERY__A__CONST__VAL_BSVAL: slot.literal = a.bsval->bsval; break;
            default: break;
        }
        out_.slots.push_back(std::move(slot));
        out_.canonical += '?';
    }

    // Facts that do not change the canonical form.
    void note_facts(const ProtobufCMessage* msg) {
        const ProtobufCMessageDescriptor* d = msg->descriptor;
        if (d == &pg_query__range_var__descriptor) {
            const auto& rv = *reinterpret_cast<const PgQuery__RangeVar*>(msg);
            TableName table{rv.schemaname != nullptr ? rv.schemaname : "", rv.relname != nullptr ? rv.relname : ""};
            if (table.schema == "pg_temp" || (rv.relpersistence != nullptr && std::strcmp(rv.relpersistence, "t") == 0)) {
                out_.temp_table_reference = true;
            }
            const bool written = default_write_ || msg == write_target_;
            add_unique(written ? out_.tables_written : out_.tables_read, std::move(table));
        } else if (d == &pg_query__insert_stmt__descriptor) {
            const auto& s = *reinterpret_cast<const PgQuery__InsertStmt*>(msg);
            write_target_ = &s.relation->base;
            insert_columns_.clear();
            for (size_t i = 0; i < s.n_cols; ++i) {
                const PgQuery__Node* col = s.cols[i];
                insert_columns_.push_back(col->node_case == PG_QUERY__NODE__NODE_RES_TARGET && col->res_target->name
                                              ? col->res_target->name
                                              : "");
            }
        } else if (d == &pg_query__update_stmt__descriptor) {
            write_target_ = &reinterpret_cast<const PgQuery__UpdateStmt*>(msg)->relation->base;
            in_update_targets_ = true;
        } else if (d == &pg_query__delete_stmt__descriptor) {
            write_target_ = &reinterpret_cast<const PgQuery__DeleteStmt*>(msg)->relation->base;
        } else if (d == &pg_query__merge_stmt__descriptor) {
            write_target_ = &reinterpret_cast<const PgQuery__MergeStmt*>(msg)->relation->base;
        } else if (d == &pg_query__copy_stmt__descriptor) {
            const auto& s = *reinterpret_cast<const PgQuery__CopyStmt*>(msg);
            if (s.is_from && s.relation != nullptr) {
                write_target_ = &s.relation->base;
            }
        } else if (d == &pg_query__select_stmt__descriptor) {
            const auto& s = *reinterpret_cast<const PgQuery__SelectStmt*>(msg);
            out_.locking_clause = out_.locking_clause || s.n_locking_clause > 0;
            out_.select_into = out_.select_into || s.into_clause != nullptr;
            in_update_targets_ = false;
        } else if (d == &pg_query__common_table_expr__descriptor) {
            const auto& cte = *reinterpret_cast<const PgQuery__CommonTableExpr*>(msg);
            if (cte.ctequery != nullptr) {
                switch (cte.ctequery->node_case) {
                    case PG_QUERY__NODE__NODE_INSERT_STMT:
                    case PG_QUERY__NODE__NODE_UPDATE_STMT:
                    case PG_QUERY__NODE__NODE_DELETE_STMT:
                    case PG_QUERY__NODE__NODE_MERGE_STMT: out_.data_modifying_cte = true; break;
                    default: break;
                }
            }
        } else if (d == &pg_query__func_call__descriptor) {
            const auto& call = *reinterpret_cast<const PgQuery__FuncCall*>(msg);
            std::string name;
            for (size_t i = 0; i < call.n_funcname; ++i) {
                if (call.funcname[i]->node_case == PG_QUERY__NODE__NODE_STRING) {
                    if (!name.empty()) {
                        name += '.';
                    }
                    name += call.funcname[i]->string->sval;
                }
            }
            add_unique(out_.functions, std::move(name));
        } else if (d == &pg_query__sqlvalue_function__descriptor) {
            switch (reinterpret_cast<const PgQuery__SQLValueFunction*>(msg)->op) {
                case PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_DATE:
                case PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_TIME:
                case PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_TIME_N:
                case PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_TIMESTAMP:
                case PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_TIMESTAMP_N:
                case PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_LOCALTIME:
                case PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_LOCALTIME_N:
                case PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_LOCALTIMESTAMP:
                case PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_LOCALTIMESTAMP_N: out_.uses_time_value = true; break;
                default: break;
            }
        } else if (d == &pg_query__drop_stmt__descriptor) {
            // DROP TABLE a, b: names are lists of strings, not RangeVars.
            const auto& s = *reinterpret_cast<const PgQuery__DropStmt*>(msg);
            for (size_t i = 0; i < s.n_objects; ++i) {
                const PgQuery__Node* object = s.objects[i];
                if (object->node_case != PG_QUERY__NODE__NODE_LIST) {
                    continue;
                }
                TableName table;
                const PgQuery__List& parts = *object->list;
                for (size_t j = 0; j < parts.n_items; ++j) {
                    if (parts.items[j]->node_case == PG_QUERY__NODE__NODE_STRING) {
                        table.schema = std::move(table.name);
                        table.name = parts.items[j]->string->sval;
                    }
                }
                add_unique(out_.tables_written, std::move(table));
            }
        }
    }

    template <typename T>
    static void add_unique(std::vector<T>& list, T value) {
        if (std::find(list.begin(), list.end(), value) == list.end()) {
            list.push_back(std::move(value));
        }
    }

    StatementShape& out_;
    bool default_write_ = false;
    const ProtobufCMessage* write_target_ = nullptr;
    std::vector<std::string> insert_columns_;
    const ProtobufCMessage* current_values_row_ = nullptr;
    bool in_update_targets_ = false;
};

}  // namespace

std::optional<StatementShape> analyze_statement(std::string_view sql, ShapeError* error) {
    ParseError parse_error;
    auto tree = ParseTree::parse(sql, &parse_error);
    if (!tree) {
        if (error != nullptr) {
            *error = {parse_error.message, parse_error.cursor_position};
        }
        return std::nullopt;
    }
    if (tree->statement_count() != 1 || tree->statement(0) == nullptr) {
        if (error != nullptr) {
            *error = {tree->statement_count() == 0 ? "no statement" : "more than one statement", 0};
        }
        return std::nullopt;
    }
    StatementShape shape;
    ShapeBuilder(shape).statement(tree->statement(0));
    return shape;
}

std::optional<std::vector<StatementShape>> analyze_statements(std::string_view sql, ShapeError* error) {
    ParseError parse_error;
    auto tree = ParseTree::parse(sql, &parse_error);
    if (!tree) {
        if (error != nullptr) {
            *error = {parse_error.message, parse_error.cursor_position};
        }
        return std::nullopt;
    }
    std::vector<StatementShape> shapes;
    for (std::size_t i = 0; i < tree->statement_count(); ++i) {
        if (tree->statement(i) != nullptr) {
            ShapeBuilder(shapes.emplace_back()).statement(tree->statement(i));
        }
    }
    return shapes;
}

std::string_view to_string(StatementKind kind) {
    switch (kind) {
        case StatementKind::select: return "SELECT";
        case StatementKind::insert: return "INSERT";
        case StatementKind::update: return "UPDATE";
        case StatementKind::del: return "DELETE";
        case StatementKind::merge: return "MERGE";
        case StatementKind::truncate: return "TRUNCATE";
        case StatementKind::copy_from: return "COPY FROM";
        case StatementKind::copy_to: return "COPY TO";
        case StatementKind::other: return "other";
    }
    return "other";
}

}  // namespace pgshelf::cache_rules
