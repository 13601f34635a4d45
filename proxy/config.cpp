// Configuration loading: TOML file (toml++), then environment overrides.
// Every setting is described once in `settings()`; the file loader, the
// environment loader and the docs all read that one table.
#include "proxy/config.hpp"

#include <algorithm>
#include <charconv>
#include <functional>
#include <set>

#include <toml++/toml.h>

#include "cache_rules/units.hpp"

extern char** environ;

namespace pgshelf::proxy {
namespace {

using cache_rules::parse_duration;
using cache_rules::parse_size;

// Applies a textual value; returns an error message, or empty on success.
using Apply = std::function<std::string(Config&, std::string_view)>;
using Show = std::function<std::string(const Config&)>;

struct Setting {
    std::string section;
    std::string key;
    std::string description;
    Apply apply;
    Show show;
    std::string short_env;  // an extra environment name, if any
};

std::string parse_sslmode(std::string_view text, SslMode& out) {
    static const std::pair<std::string_view, SslMode> modes[] = {
        {"disable", SslMode::disable}, {"allow", SslMode::prefer},         {"prefer", SslMode::prefer},
        {"require", SslMode::require}, {"verify-ca", SslMode::verify_ca}, {"verify-full", SslMode::verify_full},
    };
    for (const auto& [name, mode] : modes) {
        if (text == name) {
            out = mode;
            return {};
        }
    }
    return "sslmode must be one of disable, prefer, require, verify-ca, verify-full";
}

template <typename T>
std::string parse_unsigned(std::string_view text, T& out, T min, T max) {
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size() || value < min || value > max) {
        return "expected a whole number from " + std::to_string(min) + " to " + std::to_string(max);
    }
    out = static_cast<T>(value);
    return {};
}

Apply duration_into(std::function<std::chrono::milliseconds&(Config&)> field) {
    return [field](Config& c, std::string_view v) -> std::string {
        auto d = parse_duration(v);
        if (!d) {
            return "expected a duration such as 500ms, 30s, 2m or 1h";
        }
        field(c) = *d;
        return {};
    };
}

Apply string_into(std::function<std::string&(Config&)> field) {
    return [field](Config& c, std::string_view v) -> std::string {
        field(c) = std::string(v);
        return {};
    };
}

std::string show_duration(std::chrono::milliseconds d) {
    if (d.count() % 1000 == 0) {
        return std::to_string(d.count() / 1000) + "s";
    }
    return std::to_string(d.count()) + "ms";
}

const std::vector<Setting>& settings() {
    static const std::vector<Setting> table = {
        {"listen", "address", "host:port pgshelf accepts clients on",
         [](Config& c, std::string_view v) { return parse_endpoint(v, c.listen); },
         [](const Config& c) { return c.listen.host + ":" + std::to_string(c.listen.port); }, "PGSHELF_LISTEN"},
        // url comes before the single upstream keys so that those override it.
        {"upstream", "url", "PostgreSQL server as a URL (postgres://host:port?sslmode=...)",
         [](Config& c, std::string_view v) { return parse_upstream_url(v, c.upstream); },
         [](const Config& c) {
             return "postgres://" + c.upstream.endpoint.host + ":" + std::to_string(c.upstream.endpoint.port);
         },
         "PGSHELF_UPSTREAM"},
        {"upstream", "host", "PostgreSQL server host",
         string_into([](Config& c) -> std::string& { return c.upstream.endpoint.host; }),
         [](const Config& c) { return c.upstream.endpoint.host; }, ""},
        {"upstream", "port", "PostgreSQL server port",
         [](Config& c, std::string_view v) {
             return parse_unsigned<std::uint16_t>(v, c.upstream.endpoint.port, 1, 65535);
         },
         [](const Config& c) { return std::to_string(c.upstream.endpoint.port); }, ""},
        {"upstream", "sslmode", "TLS to the server: disable, prefer, require, verify-ca, verify-full",
         [](Config& c, std::string_view v) { return parse_sslmode(v, c.upstream.sslmode); },
         [](const Config& c) { return std::string(to_string(c.upstream.sslmode)); }, ""},
        {"upstream", "sslrootcert", "CA certificates to verify the server with (default: system CAs)",
         string_into([](Config& c) -> std::string& { return c.upstream.sslrootcert; }),
         [](const Config& c) { return c.upstream.sslrootcert; }, ""},
        {"upstream", "connect_timeout", "time allowed to connect to the server",
         duration_into([](Config& c) -> std::chrono::milliseconds& { return c.upstream.connect_timeout; }),
         [](const Config& c) { return show_duration(c.upstream.connect_timeout); }, ""},
        {"tls", "cert_file", "certificate chain (PEM) offered to clients; TLS to clients is on when set",
         string_into([](Config& c) -> std::string& { return c.tls.cert_file; }),
         [](const Config& c) { return c.tls.cert_file; }, ""},
        {"tls", "key_file", "private key (PEM) of tls.cert_file",
         string_into([](Config& c) -> std::string& { return c.tls.key_file; }),
         [](const Config& c) { return c.tls.key_file; }, ""},
        {"proxy", "workers", "worker threads, each with its own event loop; 0 = one per core",
         [](Config& c, std::string_view v) { return parse_unsigned<unsigned>(v, c.proxy.workers, 0, 1024); },
         [](const Config& c) { return std::to_string(c.proxy.workers); }, ""},
        {"proxy", "startup_timeout", "time a new client has to complete startup and authentication",
         duration_into([](Config& c) -> std::chrono::milliseconds& { return c.proxy.startup_timeout; }),
         [](const Config& c) { return show_duration(c.proxy.startup_timeout); }, ""},
        {"proxy", "shutdown_timeout", "on SIGTERM/SIGINT, time sessions get to finish before exit",
         duration_into([](Config& c) -> std::chrono::milliseconds& { return c.proxy.shutdown_timeout; }),
         [](const Config& c) { return show_duration(c.proxy.shutdown_timeout); }, ""},
        {"proxy", "max_message_size", "largest message accepted from a client (e.g. 64MB)",
         [](Config& c, std::string_view v) -> std::string {
             auto size = parse_size(v);
             if (!size || *size < 1024 || *size > (1ull << 30)) {
                 return "expected a size from 1kB to 1GB";
             }
             c.proxy.max_message_size = *size;
             return {};
         },
         [](const Config& c) { return std::to_string(c.proxy.max_message_size); }, ""},
        {"proxy", "max_connections", "client connections accepted at once; more are refused with 53300",
         [](Config& c, std::string_view v) {
             return parse_unsigned<unsigned>(v, c.proxy.max_connections, 1, 1'000'000);
         },
         [](const Config& c) { return std::to_string(c.proxy.max_connections); }, ""},
        {"proxy", "max_prepared_statements",
         "named prepared statements (and named portals) one session may hold; one more ends it with 53400; 0 = no limit",
         [](Config& c, std::string_view v) {
             return parse_unsigned<unsigned>(v, c.proxy.max_prepared_statements, 0, 100'000'000);
         },
         [](const Config& c) { return std::to_string(c.proxy.max_prepared_statements); }, ""},
        {"log", "level", "trace, debug, info, warn, error or off",
         [](Config& c, std::string_view v) -> std::string {
             static const std::set<std::string_view> levels{"trace", "debug", "info", "warn", "error", "off"};
             if (!levels.contains(v)) {
                 return "log level must be one of trace, debug, info, warn, error, off";
             }
             c.log.level = std::string(v);
             return {};
         },
         [](const Config& c) { return c.log.level; }, ""},
        {"log", "format", "text or json (one JSON object per line)",
         [](Config& c, std::string_view v) -> std::string {
             if (v != "text" && v != "json") {
                 return "log format must be text or json";
             }
             c.log.format = std::string(v);
             return {};
         },
         [](const Config& c) { return c.log.format; }, ""},
        {"redis", "url", "Redis for the cache: redis://[user:password@]host:port/db; empty = no caching",
         string_into([](Config& c) -> std::string& { return c.redis.url; }),
         [](const Config& c) { return c.redis.url; }, "REDIS_URL"},
        {"redis", "connect_timeout", "time allowed to connect to Redis",
         duration_into([](Config& c) -> std::chrono::milliseconds& { return c.redis.connect_timeout; }),
         [](const Config& c) { return show_duration(c.redis.connect_timeout); }, ""},
        {"redis", "command_timeout",
         "time a cache lookup waits for Redis before the query goes to PostgreSQL (up to 10x while Redis answers "
         "the lookups queued ahead)",
         duration_into([](Config& c) -> std::chrono::milliseconds& { return c.redis.command_timeout; }),
         [](const Config& c) { return show_duration(c.redis.command_timeout); }, ""},
        {"admin", "listen", "host:port of the HTTP admin port (/metrics, /healthz, /readyz); \"off\" = none",
         [](Config& c, std::string_view v) -> std::string {
             if (v.empty() || v == "off") {
                 c.admin.listen.clear();
                 return {};
             }
             Endpoint endpoint;
             if (auto message = parse_endpoint(v, endpoint); !message.empty()) {
                 return message;
             }
             if (endpoint.port == 0) {
                 return "admin.listen needs a port";
             }
             c.admin.listen = std::string(v);
             return {};
         },
         [](const Config& c) { return c.admin.listen.empty() ? std::string("off") : c.admin.listen; }, ""},
        {"admin", "console_users",
         "roles allowed to use the SQL admin console (comma-separated); empty = console off",
         [](Config& c, std::string_view v) -> std::string {
             c.admin.console_users.clear();
             while (!v.empty()) {
                 const auto comma = v.find(',');
                 std::string_view name = v.substr(0, comma);
                 v = comma == std::string_view::npos ? std::string_view{} : v.substr(comma + 1);
                 while (!name.empty() && name.front() == ' ') {
                     name.remove_prefix(1);
                 }
                 while (!name.empty() && name.back() == ' ') {
                     name.remove_suffix(1);
                 }
                 if (!name.empty()) {
                     c.admin.console_users.emplace_back(name);
                 }
             }
             return {};
         },
         [](const Config& c) {
             std::string out;
             for (const auto& user : c.admin.console_users) {
                 out += (out.empty() ? "" : ",") + user;
             }
             return out;
         },
         ""},
        {"admin", "console_database", "database name clients connect to for the admin console",
         [](Config& c, std::string_view v) -> std::string {
             if (v.empty()) {
                 return "admin.console_database cannot be empty";
             }
             c.admin.console_database = std::string(v);
             return {};
         },
         [](const Config& c) { return c.admin.console_database; }, ""},
        {"admin", "auth_database",
         "database of the PostgreSQL server that authenticates console users (their password is the server's)",
         string_into([](Config& c) -> std::string& { return c.admin.auth_database; }),
         [](const Config& c) { return c.admin.auth_database; }, ""},
        {"rules", "file", "TOML file with [[cache]] and [[invalidate]] rules (default: the config file itself)",
         string_into([](Config& c) -> std::string& { return c.rules.file; }),
         [](const Config& c) { return c.rules.file; }, "PGSHELF_RULES"},
    };
    return table;
}

std::string env_name(const Setting& s) {
    std::string name = "PGSHELF_" + s.section + "_" + s.key;
    for (char& ch : name) {
        ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    }
    return name;
}

// Renders a TOML scalar as the text an environment variable would carry.
std::optional<std::string> scalar_text(const toml::node& node) {
    if (auto s = node.as_string()) {
        return s->get();
    }
    if (auto i = node.as_integer()) {
        return std::to_string(i->get());
    }
    if (auto b = node.as_boolean()) {
        return b->get() ? "true" : "false";
    }
    if (auto a = node.as_array()) {  // a list of names, as the environment writes it
        std::string joined;
        for (const auto& element : *a) {
            auto s = element.as_string();
            if (s == nullptr) {
                return std::nullopt;
            }
            joined += (joined.empty() ? "" : ",") + s->get();
        }
        return joined;
    }
    return std::nullopt;
}

void load_file(const std::string& path, Config& config, std::vector<ConfigError>& errors) {
    bool has_rules = false;
    toml::table root;
    try {
        root = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
        errors.push_back({path, static_cast<int>(e.source().begin.line), "", std::string(e.description())});
        return;
    }
    for (const auto& [section_key, section_node] : root) {
        const std::string section(section_key.str());
        if (section == "cache" || section == "invalidate") {
            has_rules = true;  // rules, read by the rules loader
            continue;
        }
        const int section_line = static_cast<int>(section_node.source().begin.line);
        const toml::table* table = section_node.as_table();
        if (table == nullptr) {
            errors.push_back({path, section_line, section, "expected a [" + section + "] table"});
            continue;
        }
        bool known_section = false;
        for (const Setting& s : settings()) {
            known_section = known_section || s.section == section;
        }
        if (!known_section) {
            errors.push_back({path, section_line, section, "unknown section [" + section + "]"});
            continue;
        }
        for (const auto& [key_name, value_node] : *table) {
            const std::string key(key_name.str());
            const int line = static_cast<int>(value_node.source().begin.line);
            const Setting* setting = nullptr;
            for (const Setting& s : settings()) {
                if (s.section == section && s.key == key) {
                    setting = &s;
                }
            }
            const std::string full = section + "." + key;
            if (setting == nullptr) {
                errors.push_back({path, line, full, "unknown setting '" + full + "'"});
                continue;
            }
            auto text = scalar_text(value_node);
            if (!text) {
                errors.push_back({path, line, full, "expected a string, number or boolean"});
                continue;
            }
            if (auto message = setting->apply(config, *text); !message.empty()) {
                errors.push_back({path, line, full, message});
            }
        }
    }
    if (has_rules && config.rules.file.empty()) {
        config.rules.file = path;
    }
}

void load_environment(const Environment& env, Config& config, std::vector<ConfigError>& errors) {
    for (const Setting& s : settings()) {
        for (const std::string& name : {s.short_env, env_name(s)}) {
            if (name.empty()) {
                continue;
            }
            if (auto it = env.find(name); it != env.end()) {
                if (auto message = s.apply(config, it->second); !message.empty()) {
                    errors.push_back({name, 0, s.section + "." + s.key, message});
                }
            }
        }
    }
}

void validate(const Config& config, const std::string& source, std::vector<ConfigError>& errors) {
    if (config.tls.cert_file.empty() != config.tls.key_file.empty()) {
        errors.push_back({source, 0, "tls", "tls.cert_file and tls.key_file must be set together"});
    }
    if (config.upstream.endpoint.host.empty()) {
        errors.push_back({source, 0, "upstream.host", "the upstream host is empty"});
    }
}

}  // namespace

std::string parse_endpoint(std::string_view text, Endpoint& out) {
    std::string_view host;
    std::string_view port;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos) {
            return "unterminated '[' in address";
        }
        host = text.substr(1, close - 1);
        text.remove_prefix(close + 1);
        if (!text.empty() && text.front() != ':') {
            return "expected ':' after ']'";
        }
        port = text.empty() ? std::string_view{} : text.substr(1);
    } else {
        auto colon = text.rfind(':');
        host = text.substr(0, colon);
        port = colon == std::string_view::npos ? std::string_view{} : text.substr(colon + 1);
    }
    if (host.empty()) {
        return "missing host in '" + std::string(text) + "'";
    }
    out.host = std::string(host);
    if (!port.empty()) {
        unsigned value = 0;
        auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
        if (ec != std::errc{} || end != port.data() + port.size() || value == 0 || value > 65535) {
            return "bad port '" + std::string(port) + "'";
        }
        out.port = static_cast<std::uint16_t>(value);
    }
    return {};
}

std::string ConfigError::to_string() const {
    std::string out = source;
    if (line > 0) {
        out += ":" + std::to_string(line);
    }
    if (!key.empty()) {
        out += ": " + key;
    }
    return out + ": " + message;
}

Environment process_environment() {
    Environment env;
    for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
        std::string_view kv(*entry);
        auto eq = kv.find('=');
        if (eq != std::string_view::npos) {
            env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
        }
    }
    return env;
}

ConfigResult load_config(const std::optional<std::string>& file, const Environment& env) {
    ConfigResult result;
    if (file) {
        load_file(*file, result.config, result.errors);
        // toml++ iterates tables in key order; report in file order.
        std::stable_sort(result.errors.begin(), result.errors.end(),
                         [](const ConfigError& a, const ConfigError& b) { return a.line < b.line; });
    }
    load_environment(env, result.config, result.errors);
    validate(result.config, file.value_or("configuration"), result.errors);
    return result;
}

std::string parse_upstream_url(std::string_view url, UpstreamConfig& out) {
    std::string_view rest = url;
    if (rest.starts_with("postgresql://")) {
        rest.remove_prefix(13);
    } else if (rest.starts_with("postgres://")) {
        rest.remove_prefix(11);
    } else {
        return "expected a URL starting with postgres:// or postgresql://";
    }
    std::string_view query;
    if (auto q = rest.find('?'); q != std::string_view::npos) {
        query = rest.substr(q + 1);
        rest = rest.substr(0, q);
    }
    // User, password and database in the URL are ignored: clients bring their own.
    if (auto at = rest.rfind('@'); at != std::string_view::npos) {
        rest.remove_prefix(at + 1);
    }
    if (auto slash = rest.find('/'); slash != std::string_view::npos) {
        rest = rest.substr(0, slash);
    }
    if (!rest.empty()) {
        if (auto message = parse_endpoint(rest, out.endpoint); !message.empty()) {
            return message;
        }
    }
    while (!query.empty()) {
        auto amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        auto eq = pair.find('=');
        const std::string_view name = pair.substr(0, eq);
        const std::string decoded = percent_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
        const std::string_view value = decoded;
        if (name == "sslmode") {
            if (auto message = parse_sslmode(value, out.sslmode); !message.empty()) {
                return message;
            }
        } else if (name == "sslrootcert") {
            out.sslrootcert = std::string(value);
        } else if (name == "connect_timeout") {
            auto d = parse_duration(value);
            if (!d) {
                return "bad connect_timeout '" + std::string(value) + "'";
            }
            out.connect_timeout = *d;
        } else if (name == "host") {
            out.endpoint.host = std::string(value);
        } else if (name == "port") {
            if (auto message = parse_unsigned<std::uint16_t>(value, out.endpoint.port, 1, 65535); !message.empty()) {
                return message;
            }
        }
        // Other libpq parameters (application_name, ...) concern clients, not pgshelf.
    }
    return {};
}

std::string percent_decode(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '%' && i + 2 < text.size()) {
            unsigned value = 0;
            auto [end, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
            if (ec == std::errc{} && end == text.data() + i + 3) {
                out += static_cast<char>(value);
                i += 2;
                continue;
            }
        }
        out += text[i];
    }
    return out;
}

std::string_view to_string(SslMode mode) {
    switch (mode) {
        case SslMode::disable: return "disable";
        case SslMode::prefer: return "prefer";
        case SslMode::require: return "require";
        case SslMode::verify_ca: return "verify-ca";
        case SslMode::verify_full: return "verify-full";
    }
    return "prefer";
}

std::vector<std::pair<std::string, std::string>> effective_settings(const Config& config) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const Setting& s : settings()) {
        std::string value = s.show(config);
        if (s.key == "url") {
            // user:password@ → user:***@ : the console must not hand out secrets.
            if (const auto at = value.rfind('@'), scheme = value.find("://"); at != std::string::npos &&
                                                                            scheme != std::string::npos) {
                const auto colon = value.find(':', scheme + 3);
                const auto secret_from = colon != std::string::npos && colon < at ? colon + 1 : scheme + 3;
                value.replace(secret_from, at - secret_from, "***");
            }
        }
        out.emplace_back(s.section + "." + s.key, std::move(value));
    }
    return out;
}

std::vector<SettingDoc> setting_docs() {
    std::vector<SettingDoc> docs;
    const Config defaults;
    for (const Setting& s : settings()) {
        std::string env = env_name(s);
        if (!s.short_env.empty()) {
            env = s.short_env + ", " + env;
        }
        docs.push_back({s.section + "." + s.key, env, s.show(defaults), s.description});
    }
    return docs;
}

}  // namespace pgshelf::proxy
