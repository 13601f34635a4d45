// Memo of statement analyses by SQL text, so a statement sent again (a
// prepared statement, a driver's repeated query) is parsed once. Bounded
// (least recently used entries go first); one per worker thread, no locks.
#pragma once

#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cache_rules/cacheability.hpp"
#include "cache_rules/statement_shape.hpp"

namespace pgshelf::cache_rules {

struct StatementAnalysis {
    bool parsed = false;
    std::vector<StatementShape> statements;
    // The first function called that may change session settings (one
    // outside pg_catalog could call set_config()); empty when none.
    std::string settings_changing_call;
};

inline std::string first_settings_changing_call(const std::vector<StatementShape>& statements) {
    for (const auto& statement : statements) {
        for (const auto& function : statement.functions) {
            if (!leaves_settings_alone(function)) {
                return function;
            }
        }
    }
    return {};
}

class ShapeCache {
public:
    explicit ShapeCache(std::size_t capacity) : capacity_(capacity) {}

    std::shared_ptr<const StatementAnalysis> get(std::string_view sql) {
        if (auto it = index_.find(sql); it != index_.end()) {
            order_.splice(order_.begin(), order_, it->second);
            ++hits_;
            return it->second->analysis;
        }
        auto analysis = std::make_shared<StatementAnalysis>();
        if (auto shapes = analyze_statements(sql)) {
            analysis->parsed = true;
            analysis->statements = std::move(*shapes);
            analysis->settings_changing_call = first_settings_changing_call(analysis->statements);
        }
        order_.push_front(Item{std::string(sql), analysis});
        index_.emplace(order_.front().sql, order_.begin());
        if (order_.size() > capacity_) {
            index_.erase(order_.back().sql);
            order_.pop_back();
        }
        return analysis;
    }
    std::size_t size() const { return order_.size(); }
    std::uint64_t hits() const { return hits_; }

private:
    struct Item {
        std::string sql;
        std::shared_ptr<const StatementAnalysis> analysis;
    };
    std::size_t capacity_;
    std::list<Item> order_;
    // Keys view the strings owned by the list items.
    std::unordered_map<std::string_view, std::list<Item>::iterator> index_;
    std::uint64_t hits_ = 0;
};

}  // namespace pgshelf::cache_rules
