#pragma once

// The command line of a cluster node, for programs on CLI11
// (cli/program_options.hpp): `--cluster NAME --node HOST:PORT`, mutual TLS
// between nodes with `--tls-cert FILE --tls-key FILE --tls-ca FILE` (or
// `--insecure-links` for plain links off loopback), and where the program
// offers it `--listen HOST:PORT`. The certificate and key are the node's
// own, so a program may serve HTTPS with them too, with or without
// `--cluster` (`settings.tls.cert`/`key`); the CA is the cluster's and
// needs `--cluster`. Link with Sourcery::cluster.

#include <CLI/CLI.hpp>

#include "sourcery/runtime/application.hpp"
#include "sourcery/runtime/cluster/cluster_settings.hpp"
#include "sourcery/runtime/cluster/node_registration.hpp"

namespace sourcery::cluster {

/// Checks "host:port" as `--node` and `--listen` take it.
inline std::string check_node_address(const std::string& text) {
  auto address = split_node_address(text);
  return address ? std::string{} : "takes HOST:PORT with a port from 1 to 65535";
}

class cluster_options {
public:
  explicit cluster_options(CLI::App& app, bool listen = false) {
    auto* name = app.add_option("--cluster", settings.name, "run as a node of cluster NAME (a PostgreSQL store)")
                   ->type_name("NAME");
    auto* node = app.add_option("--node", settings.node, "this node's address, as its peers reach it")
                   ->type_name("HOST:PORT")
                   ->check(check_node_address);
    name->needs(node);
    node->needs(name);
    auto* cert = app.add_option("--tls-cert", settings.tls.cert,
                                "this server's certificate (PEM): for mutual TLS between nodes with --tls-ca, and"
                                " for HTTPS where the program serves HTTP")
                   ->type_name("FILE")
                   ->check(CLI::ExistingFile);
    auto* key = app.add_option("--tls-key", settings.tls.key, "this node's private key (PEM)")
                  ->type_name("FILE")
                  ->check(CLI::ExistingFile);
    auto* ca = app.add_option("--tls-ca", settings.tls.ca, "the cluster's CA certificate (PEM): peers must hold one it signed")
                 ->type_name("FILE")
                 ->check(CLI::ExistingFile);
    cert->needs(key);
    key->needs(cert);
    ca->needs(name);
    ca->needs(cert);
    ca->needs(key);
    app.add_flag("--insecure-links", settings.insecure_links,
                 "listen for peers on an address that is not loopback, although links between nodes are neither"
                 " encrypted nor authenticated (a network you trust)")
      ->needs(name);
    if (listen)
      app.add_option("--listen", settings.listen, "where to listen for peers, when not at --node (a proxy, NAT)")
        ->type_name("HOST:PORT")
        ->check(check_node_address)
        ->needs(name);
  }

  /// After parsing: with `--cluster`, the application joins it (its store
  /// must be PostgreSQL's: starting it says so otherwise).
  void finish(application_config& config) const {
    if (!settings.name.empty())
      config.registration = node_registration(settings);
  }

  cluster_settings settings;
};

} // namespace sourcery::cluster
