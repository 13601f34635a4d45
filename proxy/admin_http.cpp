// HTTP admin port; see admin_http.hpp.
#include "proxy/admin_http.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>

#include "proxy/metrics.hpp"
#include "proxy/runtime.hpp"

namespace pgshelf::proxy {
namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;

awaitable<void> admin_connection(tcp::socket socket, Runtime& runtime) {
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    for (;;) {
        // A scraper that stalls must not hold a connection forever.
        stream.expires_after(std::chrono::seconds(10));
        http::request<http::string_body> request;
        auto [read_ec, n] = co_await http::async_read(stream, buffer, request, use_nothrow);
        if (read_ec) {
            co_return;
        }
        http::response<http::string_body> response{http::status::ok, request.version()};
        response.set(http::field::server, "pgshelf");
        if (request.method() != http::verb::get && request.method() != http::verb::head) {
            response.result(http::status::method_not_allowed);
            response.body() = "only GET\n";
        } else if (request.target() == "/metrics") {
            response.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
            response.body() = render_metrics(runtime);
        } else if (request.target() == "/healthz") {
            response.set(http::field::content_type, "text/plain");
            response.body() = "ok\n";
        } else {
            response.result(http::status::not_found);
            response.body() = "not found: try /metrics or /healthz\n";
        }
        response.keep_alive(request.keep_alive());
        response.prepare_payload();
        auto [write_ec, written] = co_await http::async_write(stream, response, use_nothrow);
        if (write_ec || !request.keep_alive()) {
            co_return;
        }
    }
}

}  // namespace

awaitable<void> serve_admin(tcp::acceptor& acceptor, Runtime& runtime) {
    while (acceptor.is_open()) {
        auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
        if (ec) {
            if (!acceptor.is_open() || ec == asio::error::operation_aborted) {
                co_return;
            }
            continue;
        }
        asio::co_spawn(acceptor.get_executor(), admin_connection(std::move(socket), runtime), asio::detached);
    }
}

}  // namespace pgshelf::proxy
