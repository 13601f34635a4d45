// pgshelf: a transparent caching proxy for PostgreSQL.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "app/explain_command.hpp"
#include "cache_rules/rules.hpp"
#include "proxy/config.hpp"
#include "proxy/logging.hpp"
#include "proxy/proxy_server.hpp"

#ifndef PGSHELF_VERSION
#define PGSHELF_VERSION "0.0.0"
#endif

namespace {

constexpr std::string_view usage_text = R"(NAME
    pgshelf - transparent caching proxy for PostgreSQL

SYNOPSIS
    pgshelf [--config FILE]
    pgshelf check FILE
    pgshelf explain --rules FILE [--param VALUE]... [--null-param]
                    [--database NAME] [--role NAME] SQL
    pgshelf --version
    pgshelf --help

DESCRIPTION
    pgshelf speaks the PostgreSQL wire protocol to clients and to the server.
    Point an application's DATABASE_URL at pgshelf instead of PostgreSQL;
    authentication, users and databases are the server's own.

COMMANDS
    check FILE      Validate a config or rules file: settings, and every
                    [[cache]] and [[invalidate]] rule. Prints each problem
                    as FILE:LINE: message and exits 2 if there is any.

    explain --rules FILE [options] SQL
                    Show what pgshelf would do with one statement under the
                    rules in FILE, without connecting anywhere: the statement
                    with its literals as $n, its kind, the tables it reads and
                    writes, whether it can be cached (and why not), the
                    [[cache]] rule it hits with file, line, TTL and the key it
                    renders (or why no rule matches, and a rule to paste), the
                    [[invalidate]] rules and table fallback that drop that
                    entry; for a write, the [[invalidate]] rule it matches, the
                    keys it invalidates and the rules it invalidates whole.
                    Exits 2 when FILE has errors (printed as FILE:LINE:
                    message), when the SQL does not parse, or on bad usage.
        --param VALUE   The value of the next parameter ($1 first), as text.
        --null-param    The next parameter is NULL.
        --database NAME, --role NAME
                        Session database and role, for {db} and {role} in
                        keys (default postgres).

OPTIONS
    --config FILE   Read settings from a TOML file. Without one, defaults and
                    environment variables are enough to run.
    --version       Print the version and exit.
    --help          Print this text and exit.

ENVIRONMENT
    Every setting can be given as PGSHELF_<SECTION>_<KEY>, for example
    PGSHELF_PROXY_WORKERS=4. Short forms:
    PGSHELF_LISTEN      host:port to accept clients on (default 127.0.0.1:6432)
    PGSHELF_UPSTREAM    PostgreSQL URL, e.g. postgres://db:5432?sslmode=require
    REDIS_URL           redis://[user:password@]host:port/db
    PGSHELF_RULES       the rules file ([[cache]] and [[invalidate]] rules)
    PGSHELF_ADMIN_LISTEN
                        host:port of the HTTP admin port (default
                        127.0.0.1:9930; "off" for none)
    See docs/configuration.md for every setting.

ADMINISTRATION
    HTTP admin port: /metrics (Prometheus text format), /healthz (the
    process is alive), /readyz (503 while PostgreSQL does not answer or
    during a drain; Redis trouble is reported but keeps pgshelf ready).

    SQL console: connect to the virtual database "pgshelf" through the
    normal port, as a role listed in admin.console_users
    (PGSHELF_ADMIN_CONSOLE_USERS), with that role's PostgreSQL password:
        psql "postgresql://postgres@127.0.0.1:6432/pgshelf" -c "SHOW HELP"
    Commands: SHOW RULES, SHOW STATS, SHOW CLIENTS, SHOW CONFIG,
    SHOW QUERIES (frequent reads no rule caches, with a rule to paste),
    INVALIDATE RULE name, INVALIDATE KEY 'key', RELOAD.
    See docs/operations.md.

SIGNALS
    SIGTERM, SIGINT     Drain: stop accepting, /readyz answers 503, open
                        sessions go on until their clients leave (at most
                        proxy.shutdown_timeout), then exit 0. A second signal
                        exits at once.
    SIGHUP              Reload the rules file; statements already running
                        finish with the old rules, a bad file keeps them.

EXIT STATUS
    0 after a clean shutdown, 1 when the listen or admin address cannot be
    used, 2 for configuration errors.
)";

// `pgshelf check FILE`: the same validation start-up does, without starting.
int check(const std::string& file) {
    auto loaded = pgshelf::proxy::load_config(file, {});
    int problems = 0;
    for (const auto& error : loaded.errors) {
        std::cerr << error.to_string() << "\n";
        ++problems;
    }
    const std::string rules_file = loaded.config.rules.file.empty() ? file : loaded.config.rules.file;
    auto rules = pgshelf::cache_rules::load_rules_file(rules_file);
    for (const auto& error : rules.errors) {
        // A file that cannot be read or parsed fails both loaders alike.
        const std::string message = error.to_string();
        const bool said = std::any_of(loaded.errors.begin(), loaded.errors.end(),
                                      [&](const auto& e) { return e.to_string() == message; });
        if (!said) {
            std::cerr << message << "\n";
            ++problems;
        }
    }
    if (problems > 0) {
        return 2;
    }
    std::cout << rules_file << ": ok, " << rules.rules->cache_rules().size() << " cache rules, "
              << rules.rules->invalidate_rules().size() << " invalidation rules\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 3 && std::string_view(argv[1]) == "check") {
        return check(argv[2]);
    }
    if (argc >= 2 && std::string_view(argv[1]) == "explain") {
        return pgshelf::app::explain_command(argc - 2, argv + 2);
    }
    std::optional<std::string> config_file;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            std::cout << usage_text;
            return 0;
        }
        if (arg == "--version" || arg == "-V") {
            std::cout << "pgshelf " << PGSHELF_VERSION << "\n";
            return 0;
        }
        if (arg == "--config" && i + 1 < argc) {
            config_file = argv[++i];
            continue;
        }
        if (arg.starts_with("--config=")) {
            config_file = std::string(arg.substr(9));
            continue;
        }
        std::cerr << "pgshelf: unknown argument '" << arg << "' (see pgshelf --help)\n";
        return 2;
    }

    auto loaded = pgshelf::proxy::load_config(config_file, pgshelf::proxy::process_environment());
    if (!loaded.ok()) {
        for (const auto& error : loaded.errors) {
            std::cerr << "pgshelf: " << error.to_string() << "\n";
        }
        return 2;
    }
    pgshelf::proxy::configure_logging(loaded.config.log.level, loaded.config.log.format);
    // Writes to a vanished TLS peer must fail with EPIPE, not kill the process.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        pgshelf::proxy::ProxyServer server(std::move(loaded.config));
        return server.run();
    } catch (const std::exception& e) {
        std::cerr << "pgshelf: " << e.what() << "\n";
        return 2;
    }
}
