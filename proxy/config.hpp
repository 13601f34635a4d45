// pgshelf's configuration: one TOML file, every setting overridable from
// the environment as PGSHELF_<SECTION>_<KEY>, plus the short forms
// PGSHELF_LISTEN (host:port), PGSHELF_UPSTREAM (a PostgreSQL URL) and
// REDIS_URL. With no file, defaults plus environment are enough to run.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pgshelf::proxy {

enum class SslMode { disable, prefer, require, verify_ca, verify_full };

struct Endpoint {
    std::string host;
    std::uint16_t port = 0;
};

struct UpstreamConfig {
    Endpoint endpoint{"127.0.0.1", 5432};
    SslMode sslmode = SslMode::prefer;
    std::string sslrootcert;  // CA bundle for verify-ca / verify-full
    std::chrono::milliseconds connect_timeout{5000};
};

struct Config {
    Endpoint listen{"127.0.0.1", 6432};
    UpstreamConfig upstream;
    struct {
        std::string cert_file;  // TLS to clients is on when both are set
        std::string key_file;
    } tls;
    struct {
        unsigned workers = 0;  // 0 = one per core
        // PostgreSQL's authentication_timeout and PgBouncer's client_login_timeout
        // are 60 s too: a server busy forking hundreds of backends is slow.
        std::chrono::milliseconds startup_timeout{60'000};
        std::chrono::milliseconds shutdown_timeout{30'000};
        std::uint64_t max_message_size = 1ull << 30;
        unsigned max_connections = 10'000;
        unsigned max_prepared_statements = 10'000;  // per session, named ones; 0 = no limit
    } proxy;
    struct {
        std::string level = "info";
        std::string format = "text";
    } log;
    struct {
        std::string url;  // redis://[user:password@]host:port/db; empty = caching off
        std::chrono::milliseconds connect_timeout{200};
        std::chrono::milliseconds command_timeout{50};
    } redis;
    struct {
        // host:port of the HTTP admin port; empty = off. On by default, on
        // loopback only: probes and scrapers of a sidecar run on the host.
        std::string listen = "127.0.0.1:9930";
        std::vector<std::string> console_users;  // roles allowed on the SQL console; empty = off
        std::string console_database = "pgshelf";
        std::string auth_database = "postgres";
    } admin;
    struct {
        // Rules file; empty = the [[cache]] and [[invalidate]] tables of the
        // config file itself, if any.
        std::string file;
    } rules;
};

struct ConfigError {
    std::string source;  // file path, or the environment variable's name
    int line = 0;        // 0 when not from a file
    std::string key;     // section.key
    std::string message;
    std::string to_string() const;
};

struct ConfigResult {
    Config config;
    std::vector<ConfigError> errors;
    bool ok() const { return errors.empty(); }
};

using Environment = std::map<std::string, std::string>;
Environment process_environment();

// Defaults, then `file` (if given), then `env`. Every problem is collected.
ConfigResult load_config(const std::optional<std::string>& file, const Environment& env);

// postgres://[user[:password]@]host[:port][/db][?sslmode=..&sslrootcert=..&connect_timeout=..]
// fills `out`; returns an error message or empty.
std::string parse_upstream_url(std::string_view url, UpstreamConfig& out);

// host:port or [v6]:port; returns an error message or empty.
std::string parse_endpoint(std::string_view text, Endpoint& out);

std::string_view to_string(SslMode mode);

// Decodes %XX escapes (as in URLs); other bytes are kept as they are.
std::string percent_decode(std::string_view text);

// The documented list of settings: section.key, environment variable, default.
struct SettingDoc {
    std::string key;
    std::string env;
    std::string default_value;
    std::string description;
};
std::vector<SettingDoc> setting_docs();

// Every setting with its value in `config` (secrets masked), for SHOW CONFIG.
std::vector<std::pair<std::string, std::string>> effective_settings(const Config& config);

}  // namespace pgshelf::proxy
