// A redis-server on a free loopback port, started and killed by a test binary.
#pragma once

#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

namespace pgshelf::test_support {

class RedisServer {
public:
    RedisServer() {
        dir_ = std::filesystem::temp_directory_path() / ("pgshelf-redis-" + std::to_string(::getpid()));
        std::filesystem::create_directories(dir_);
        for (int attempt = 0; attempt < 20 && context_ == nullptr; ++attempt) {
            port_ = 20000 + static_cast<int>((::getpid() * 7919 + attempt * 104729) % 40000);
            pid_ = ::fork();
            if (pid_ == 0) {
                const std::string port = std::to_string(port_);
                ::execlp("redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", dir_.c_str(), "--logfile", (dir_ / "redis.log").c_str(),
                         static_cast<char*>(nullptr));
                ::_exit(127);
            }
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
            while (std::chrono::steady_clock::now() < deadline) {
                redisContext* c = redisConnect("127.0.0.1", port_);
                if (c != nullptr && c->err == 0) {
                    context_ = c;
                    break;
                }
                redisFree(c);
                int status = 0;
                if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                    break;  // port taken: try another
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
        }
    }
    ~RedisServer() {
        redisFree(context_);
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        std::filesystem::remove_all(dir_);
    }
    redisContext* context() const { return context_; }
    int port() const { return port_; }

private:
    std::filesystem::path dir_;
    int port_ = 0;
    pid_t pid_ = -1;
    redisContext* context_ = nullptr;
};

}  // namespace pgshelf::test_support
