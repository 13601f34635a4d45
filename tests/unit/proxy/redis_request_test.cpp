// RedisRequest: the pre-formatted pipeline the hit path sends to Redis.
#include <gtest/gtest.h>

#include "proxy/redis_client.hpp"

namespace pgshelf::proxy {
namespace {

TEST(RedisRequest, AddFormatsEachCommandInRespAndCountsIt) {
    RedisRequest request;
    const std::string key = "pgs:{user:42}:v";
    request.add({"MGET", key, ""});
    request.add({"PING"});
    EXPECT_EQ(request.commands, 2u);
    EXPECT_EQ(request.resp,
              "*3\r\n$4\r\nMGET\r\n$15\r\npgs:{user:42}:v\r\n$0\r\n\r\n"
              "*1\r\n$4\r\nPING\r\n");
}

TEST(RedisRequest, BinaryArgumentsKeepEveryByte) {
    RedisRequest request;
    const std::string value("a\0b\r\nc", 6);
    request.add({"SET", "k", value});
    static constexpr char expected[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\na\0b\r\nc\r\n";
    EXPECT_EQ(request.resp, std::string(expected, sizeof expected - 1));
}

TEST(RedisRequest, FromCommandVectorsIsTheSameAsAddingThem) {
    const std::vector<RedisCommand> commands = {{"MGET", "a", "b"}, {"GET", "c"}};
    RedisRequest added;
    added.add({"MGET", "a", "b"});
    added.add({"GET", "c"});
    const RedisRequest converted = RedisRequest::of(commands);
    EXPECT_EQ(converted.resp, added.resp);
    EXPECT_EQ(converted.commands, 2u);
    EXPECT_EQ(RedisRequest::of({}).commands, 0u);
    EXPECT_TRUE(RedisRequest::of({}).resp.empty());
}

}  // namespace
}  // namespace pgshelf::proxy
