// Configuration: TOML file, environment overrides, and errors that name
// file, line and key.
#include "proxy/config.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace pgshelf::proxy {
namespace {

class ConfigFile : public ::testing::Test {
protected:
    std::string write(const std::string& text) {
        path_ = std::filesystem::temp_directory_path() /
                ("pgshelf-config-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".toml");
        std::ofstream(path_) << text;
        return path_.string();
    }
    void TearDown() override { std::filesystem::remove(path_); }
    std::filesystem::path path_;
};

TEST(Config, DefaultsRunWithoutFileOrEnvironment) {
    auto result = load_config(std::nullopt, {});
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result.config.listen.host, "127.0.0.1");
    EXPECT_EQ(result.config.listen.port, 6432);
    EXPECT_EQ(result.config.upstream.endpoint.port, 5432);
    EXPECT_EQ(result.config.upstream.sslmode, SslMode::prefer);
}

TEST(Config, AdminPortIsOnAndLoopbackOnlyByDefault) {
    auto defaults = load_config(std::nullopt, {});
    ASSERT_TRUE(defaults.ok());
    EXPECT_EQ(defaults.config.admin.listen, "127.0.0.1:9930");
    EXPECT_TRUE(defaults.config.admin.console_users.empty());  // the console is opt-in

    auto off = load_config(std::nullopt, {{"PGSHELF_ADMIN_LISTEN", "off"}});
    ASSERT_TRUE(off.ok());
    EXPECT_TRUE(off.config.admin.listen.empty());

    auto no_port = load_config(std::nullopt, {{"PGSHELF_ADMIN_LISTEN", "127.0.0.1"}});
    EXPECT_FALSE(no_port.ok());
}

TEST(Config, ConsoleUsersAsListAndSecretsMaskedInEffectiveSettings) {
    auto result = load_config(std::nullopt, {{"PGSHELF_ADMIN_CONSOLE_USERS", "ops, postgres"},
                                             {"REDIS_URL", "redis://cache:s3cret@redis.internal:6379/0"},
                                             {"PGSHELF_UPSTREAM", "postgres://app:s3cret@db:5432"}});
    ASSERT_TRUE(result.ok()) << result.errors.front().to_string();
    EXPECT_EQ(result.config.admin.console_users, (std::vector<std::string>{"ops", "postgres"}));
    bool saw_redis = false;
    for (const auto& [name, value] : effective_settings(result.config)) {
        EXPECT_EQ(value.find("s3cret"), std::string::npos) << name;
        if (name == "redis.url") {
            saw_redis = true;
            EXPECT_EQ(value, "redis://cache:***@redis.internal:6379/0");
        }
    }
    EXPECT_TRUE(saw_redis);
}

TEST(Config, ShortEnvironmentForms) {
    auto result = load_config(std::nullopt, {{"PGSHELF_LISTEN", "0.0.0.0:7000"},
                                             {"PGSHELF_UPSTREAM", "postgres://u:p@db.internal:6543/app?sslmode=require"},
                                             {"REDIS_URL", "redis://cache:6379/2"}});
    ASSERT_TRUE(result.ok()) << result.errors.front().to_string();
    EXPECT_EQ(result.config.listen.host, "0.0.0.0");
    EXPECT_EQ(result.config.listen.port, 7000);
    EXPECT_EQ(result.config.upstream.endpoint.host, "db.internal");
    EXPECT_EQ(result.config.upstream.endpoint.port, 6543);
    EXPECT_EQ(result.config.upstream.sslmode, SslMode::require);
    EXPECT_EQ(result.config.redis.url, "redis://cache:6379/2");
}

TEST(Config, LongEnvironmentFormOverridesUrl) {
    auto result = load_config(std::nullopt, {{"PGSHELF_UPSTREAM", "postgres://db:5432?sslmode=require"},
                                             {"PGSHELF_UPSTREAM_SSLMODE", "verify-full"},
                                             {"PGSHELF_PROXY_WORKERS", "3"},
                                             {"PGSHELF_PROXY_SHUTDOWN_TIMEOUT", "1500ms"}});
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result.config.upstream.sslmode, SslMode::verify_full);
    EXPECT_EQ(result.config.proxy.workers, 3u);
    EXPECT_EQ(result.config.proxy.shutdown_timeout, std::chrono::milliseconds(1500));
}

TEST(Config, BadEnvironmentValueNamesTheVariable) {
    auto result = load_config(std::nullopt, {{"PGSHELF_PROXY_WORKERS", "many"}});
    ASSERT_EQ(result.errors.size(), 1u);
    EXPECT_EQ(result.errors[0].source, "PGSHELF_PROXY_WORKERS");
    EXPECT_EQ(result.errors[0].key, "proxy.workers");
}

TEST_F(ConfigFile, FileValuesThenEnvironment) {
    auto file = write(R"(
[listen]
address = "127.0.0.1:7432"

[upstream]
url = "postgresql://127.0.0.1:5433"
connect_timeout = "2s"

[proxy]
workers = 2
max_message_size = "64MB"
max_prepared_statements = 500
)");
    auto result = load_config(file, {{"PGSHELF_LISTEN", "127.0.0.1:8432"},
                                     {"PGSHELF_PROXY_MAX_PREPARED_STATEMENTS", "0"}});
    ASSERT_TRUE(result.ok()) << result.errors.front().to_string();
    EXPECT_EQ(result.config.listen.port, 8432);
    EXPECT_EQ(result.config.upstream.endpoint.port, 5433);
    EXPECT_EQ(result.config.upstream.connect_timeout, std::chrono::seconds(2));
    EXPECT_EQ(result.config.proxy.workers, 2u);
    EXPECT_EQ(result.config.proxy.max_message_size, 64u << 20);
    EXPECT_EQ(result.config.proxy.max_prepared_statements, 0u);  // the environment wins; 0 = no limit
}

TEST_F(ConfigFile, UnknownKeyNamesFileLineAndKey) {
    auto file = write("[proxy]\nworkers = 2\nworkrs = 3\n");
    auto result = load_config(file, {});
    ASSERT_EQ(result.errors.size(), 1u);
    EXPECT_EQ(result.errors[0].source, file);
    EXPECT_EQ(result.errors[0].line, 3);
    EXPECT_EQ(result.errors[0].key, "proxy.workrs");
    EXPECT_NE(result.errors[0].to_string().find(file + ":3: proxy.workrs"), std::string::npos);
}

TEST_F(ConfigFile, UnknownSectionAndBadValues) {
    auto file = write("[listen]\naddress = \"nohostport:99999\"\n[nope]\nx = 1\n[log]\nlevel = \"loud\"\n");
    auto result = load_config(file, {});
    ASSERT_EQ(result.errors.size(), 3u);
    EXPECT_EQ(result.errors[0].line, 2);
    EXPECT_EQ(result.errors[1].line, 3);
    EXPECT_EQ(result.errors[2].line, 6);
}

TEST_F(ConfigFile, SyntaxErrorNamesLine) {
    auto file = write("[proxy]\nworkers = = 2\n");
    auto result = load_config(file, {});
    ASSERT_EQ(result.errors.size(), 1u);
    EXPECT_EQ(result.errors[0].line, 2);
}

TEST(Config, TlsNeedsBothFiles) {
    auto result = load_config(std::nullopt, {{"PGSHELF_TLS_CERT_FILE", "/x.pem"}});
    EXPECT_FALSE(result.ok());
}

TEST(Config, UpstreamUrlForms) {
    UpstreamConfig u;
    EXPECT_EQ(parse_upstream_url("postgres://[::1]:5555/db", u), "");
    EXPECT_EQ(u.endpoint.host, "::1");
    EXPECT_EQ(u.endpoint.port, 5555);
    EXPECT_EQ(parse_upstream_url("postgres://h?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3", u), "");
    EXPECT_EQ(u.endpoint.host, "h");
    EXPECT_EQ(u.sslmode, SslMode::verify_full);
    EXPECT_EQ(u.sslrootcert, "/ca.pem");
    EXPECT_EQ(u.connect_timeout, std::chrono::seconds(3));
    EXPECT_NE(parse_upstream_url("mysql://h", u), "");
    EXPECT_NE(parse_upstream_url("postgres://h?sslmode=sometimes", u), "");
    EXPECT_NE(parse_upstream_url("postgres://h:0", u), "");
}

TEST(Config, EverySettingIsDocumented) {
    auto docs = setting_docs();
    ASSERT_FALSE(docs.empty());
    for (const auto& d : docs) {
        EXPECT_FALSE(d.description.empty()) << d.key;
        EXPECT_NE(d.env.find("PGSHELF_"), std::string::npos) << d.key;
    }
}

}  // namespace
}  // namespace pgshelf::proxy

// docs/configuration.md is the reference: every setting must appear there.
namespace pgshelf::proxy {
namespace {

TEST(Config, ConfigurationDocListsEverySetting) {
    std::ifstream doc(std::string(PGSHELF_SOURCE_DIR) + "/docs/configuration.md");
    ASSERT_TRUE(doc) << "docs/configuration.md not found";
    const std::string text((std::istreambuf_iterator<char>(doc)), std::istreambuf_iterator<char>());
    for (const auto& d : setting_docs()) {
        EXPECT_NE(text.find("`" + d.key + "`"), std::string::npos) << d.key << " is not documented";
        EXPECT_NE(text.find(d.env.substr(d.env.rfind(' ') + 1)), std::string::npos) << d.env;
    }
}

}  // namespace
}  // namespace pgshelf::proxy

namespace pgshelf::proxy {
namespace {

TEST(Config, UrlQueryValuesArePercentDecoded) {
    UpstreamConfig u;
    EXPECT_EQ(parse_upstream_url("postgres://h:1?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20file.pem", u), "");
    EXPECT_EQ(u.sslrootcert, "/tmp/ca file.pem");
    EXPECT_EQ(percent_decode("a%zzb%4"), "a%zzb%4");  // malformed escapes stay as they are
}

}  // namespace
}  // namespace pgshelf::proxy
