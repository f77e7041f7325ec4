#include "sourcery/runtime/cluster/node_registration.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>

#include "cluster_registration.hpp"
#include "node_link.hpp"
#include "sourcery/persistence/error.hpp"

namespace sourcery::cluster {

namespace {

class node_provider final : public registration_provider {
public:
  explicit node_provider(cluster_settings settings) : settings_(std::move(settings)) {}

  void configure(caf::actor_system_config& cfg) const override {
    cfg.load<caf::io::middleman>();
    if (settings_.tls.enabled()) {
      // Mutual TLS: with a certificate, key and CA, CAF's OpenSSL module
      // requires and verifies the peer's certificate (SSL_VERIFY_PEER |
      // SSL_VERIFY_FAIL_IF_NO_PEER_CERT, ciphers HIGH:!aNULL:!MD5); without
      // them it would fall back to anonymous ciphers, so it is loaded only with all three.
      cfg.load<caf::openssl::manager>();
      cfg.openssl_certificate = settings_.tls.cert;
      cfg.openssl_key = settings_.tls.key;
      cfg.openssl_cafile = settings_.tls.ca;
    }
    cfg.add_message_type<command_envelope>("sourcery.command_envelope");
    cfg.add_message_type<dispatch_result>("sourcery.dispatch_result");
    detail::add_link_message_types(cfg);
    // Peers probe each other: a silent link is closed, and its commands
    // routed again, instead of waiting on a dead TCP connection.
    cfg.set("middleman.heartbeat-interval", caf::timespan{settings_.probe_every});
    cfg.set("middleman.connection-timeout", caf::timespan{settings_.down_after});
  }

  caf::expected<std::unique_ptr<registration>> create(registration_context ctx) const override {
    if (!ctx.store_uri || ctx.store_uri->type != persistence::store_uri::kind::postgres)
      return persistence::make_error(persistence::store_errc::invalid_argument,
                                     "the nodes of a cluster share one PostgreSQL store: give store_uri postgresql://...");
    persistence::coordination_options coordination;
    coordination.conninfo = ctx.store_uri->location;
    coordination.schema = ctx.store_uri->schema;
    coordination.connect_timeout = ctx.store_uri->connect_timeout;
    // A frozen database must not hold a renewal past the point where this
    // node stops serving.
    coordination.operation_timeout = settings_.down_after / 2;
    auto created = detail::cluster_registration::create({std::move(ctx), std::move(coordination), settings_});
    if (!created)
      return created.error();
    return std::unique_ptr<registration>{std::move(*created)};
  }

private:
  cluster_settings settings_;
};

} // namespace

std::shared_ptr<const registration_provider> node_registration(cluster_settings settings) {
  return std::make_shared<const node_provider>(std::move(settings));
}

} // namespace sourcery::cluster
