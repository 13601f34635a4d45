// Owning wrapper around libpg_query's protobuf parse tree.
#include "cache_rules/parse_tree.hpp"

#include <pg_query.h>

namespace pgshelf::cache_rules {

std::unique_ptr<ParseTree> ParseTree::parse(std::string_view sql, ParseError* error) {
    const std::string text(sql);  // libpg_query wants a NUL-terminated string
    PgQueryProtobufParseResult raw = pg_query_parse_protobuf(text.c_str());
    std::unique_ptr<ParseTree> tree;
    if (raw.error != nullptr) {
        if (error != nullptr) {
            error->message = raw.error->message != nullptr ? raw.error->message : "syntax error";
            error->cursor_position = raw.error->cursorpos;
        }
    } else {
        auto* result = pg_query__parse_result__unpack(nullptr, raw.parse_tree.len,
                                                       reinterpret_cast<const uint8_t*>(raw.parse_tree.data));
        if (result != nullptr) {
            tree.reset(new ParseTree(result));
        } else if (error != nullptr) {
            error->message = "parse tree could not be decoded";
        }
    }
    pg_query_free_protobuf_parse_result(raw);
    return tree;
}

ParseTree::~ParseTree() { pg_query__parse_result__free_unpacked(result_, nullptr); }

namespace {

bool walk_message(const ProtobufCMessage* msg, const std::function<bool(const ProtobufCMessage&)>& visit) {
    if (msg == nullptr || !visit(*msg)) {
        return true;
    }
    const ProtobufCMessageDescriptor* desc = msg->descriptor;
    const auto* base = reinterpret_cast<const char*>(msg);
    for (unsigned i = 0; i < desc->n_fields; ++i) {
        const ProtobufCFieldDescriptor& field = desc->fields[i];
        if (field.type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }
        // A oneof member is only live when the case field names it.
        if ((field.flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0) {
            const auto oneof_case = *reinterpret_cast<const uint32_t*>(base + field.quantifier_offset);
            if (oneof_case != field.id) {
                continue;
            }
        }
        if (field.label == PROTOBUF_C_LABEL_REPEATED) {
            const auto count = *reinterpret_cast<const size_t*>(base + field.quantifier_offset);
            const auto* items = *reinterpret_cast<ProtobufCMessage* const* const*>(base + field.offset);
            for (size_t j = 0; j < count; ++j) {
                walk_message(items[j], visit);
            }
        } else {
            walk_message(*reinterpret_cast<ProtobufCMessage* const*>(base + field.offset), visit);
        }
    }
    return true;
}

}  // namespace

void walk(const ProtobufCMessage* root, const std::function<bool(const ProtobufCMessage&)>& visit) {
    walk_message(root, visit);
}

}  // namespace pgshelf::cache_rules
