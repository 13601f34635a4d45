// Asio names used across proxy/: one place for the aliases and the
// completion tokens, so session code reads like the protocol it speaks.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>

namespace pgshelf::proxy {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using asio::awaitable;
using error_code = boost::system::error_code;

// Completion token that returns (error_code, result...) instead of throwing:
// peers closing connections is ordinary, not exceptional.
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

}  // namespace pgshelf::proxy
