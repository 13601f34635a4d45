// HTTP admin port; see admin_http.hpp.
#include "proxy/admin_http.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>

#include "proxy/metrics.hpp"
#include "proxy/runtime.hpp"
#include "proxy/server_link.hpp"

namespace pgshelf::proxy {
namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;

// Probes PostgreSQL and records the outcome for the pgshelf_ready gauge.
awaitable<std::string> probe(Runtime& runtime) {
    std::string problem = co_await probe_server(runtime.config().upstream);
    runtime.set_postgres_reachable(problem.empty());
    co_return problem;
}

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
            co_await probe(runtime);
            response.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
            response.body() = render_metrics(runtime);
        } else if (request.target() == "/healthz") {
            response.set(http::field::content_type, "text/plain");
            response.body() = "ok\n";
        } else if (request.target() == "/readyz") {
            // Ready = can serve queries: PostgreSQL answers and no drain.
            // Redis down is reported but not unready: reads then go to PostgreSQL.
            const std::string problem = co_await probe(runtime);
            response.set(http::field::content_type, "text/plain");
            if (runtime.draining()) {
                response.result(http::status::service_unavailable);
                response.body() = "not ready: draining\n";
            } else if (!problem.empty()) {
                response.result(http::status::service_unavailable);
                response.body() = "not ready: postgresql: " + problem + "\n";
            } else {
                response.body() = "ready\npostgresql: ok\n";
            }
            response.body() += "redis: " + runtime.redis_state() + "\n";
        } else {
            response.result(http::status::not_found);
            response.body() = "not found: try /metrics, /healthz or /readyz\n";
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
