// Process-wide services; see runtime.hpp.
#include "proxy/runtime.hpp"

#include <stdexcept>

namespace pgshelf::proxy {

namespace {

std::unique_ptr<ssl::context> make_client_tls(const Config& config) {
    if (config.tls.cert_file.empty()) {
        return nullptr;
    }
    auto context = std::make_unique<ssl::context>(ssl::context::tls_server);
    context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                         ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
    error_code ec;
    context->use_certificate_chain_file(config.tls.cert_file, ec);
    if (ec) {
        throw std::runtime_error("cannot load tls.cert_file " + config.tls.cert_file + ": " + ec.message());
    }
    context->use_private_key_file(config.tls.key_file, ssl::context::pem, ec);
    if (ec) {
        throw std::runtime_error("cannot load tls.key_file " + config.tls.key_file + ": " + ec.message());
    }
    return context;
}

}  // namespace

Runtime::Runtime(Config config)
    : config_(std::move(config)), client_tls_(make_client_tls(config_)), upstream_tls_(config_.upstream) {}

}  // namespace pgshelf::proxy
