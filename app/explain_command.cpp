// `pgshelf explain --rules FILE [--param VALUE]... [--null-param]
//                  [--database NAME] [--role NAME] "SQL"`; see main.cpp's help text.
#include "app/explain_command.hpp"

#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache_rules/rules.hpp"
#include "proxy/explain.hpp"

namespace pgshelf::app {
namespace {

constexpr std::string_view usage =
    "usage: pgshelf explain --rules FILE [--param VALUE]... [--null-param] [--database NAME] [--role NAME] \"SQL\"\n";

int usage_error(std::string_view problem) {
    std::cerr << "pgshelf explain: " << problem << "\n" << usage;
    return 2;
}

}  // namespace

int explain_command(int argc, char** argv) {
    std::optional<std::string> rules_file;
    std::optional<std::string> sql;
    std::vector<std::optional<std::string>> parameters;
    std::string database = "postgres";
    std::string role = "postgres";
    for (int i = 0; i < argc; ++i) {
        const std::string_view arg = argv[i];
        // "--name VALUE" or "--name=VALUE"; nullopt when `arg` is not --name.
        auto value_of = [&](std::string_view name) -> std::optional<std::string> {
            if (arg == name && i + 1 < argc) {
                return std::string(argv[++i]);
            }
            if (arg.size() > name.size() && arg.starts_with(name) && arg[name.size()] == '=') {
                return std::string(arg.substr(name.size() + 1));
            }
            return std::nullopt;
        };
        if (auto v = value_of("--rules")) {
            rules_file = std::move(v);
        } else if (auto v = value_of("--param")) {
            parameters.push_back(std::move(v));
        } else if (arg == "--null-param") {
            parameters.push_back(std::nullopt);  // the next parameter is SQL NULL
        } else if (auto v = value_of("--database")) {
            database = std::move(*v);
        } else if (auto v = value_of("--role")) {
            role = std::move(*v);
        } else if (arg.starts_with("--")) {
            return usage_error("unknown or incomplete option '" + std::string(arg) + "'");
        } else if (sql) {
            return usage_error("give the SQL as one argument (quote it)");
        } else {
            sql = std::string(arg);
        }
    }
    if (!rules_file) {
        return usage_error("--rules FILE is required");
    }
    if (!sql) {
        return usage_error("the SQL statement is missing");
    }

    auto loaded = cache_rules::load_rules_file(*rules_file);
    if (!loaded.ok()) {
        for (const auto& error : loaded.errors) {
            std::cerr << error.to_string() << "\n";
        }
        return 2;
    }
    const auto explanation = proxy::explain(*loaded.rules, {*sql, parameters, database, role});
    if (explanation.parse_error) {
        std::cerr << "pgshelf explain: SQL does not parse: " << *explanation.parse_error << "\n";
        return 2;
    }
    std::cout << proxy::format_explanation(*loaded.rules, explanation);
    return 0;
}

}  // namespace pgshelf::app
