#include "tls_files.hpp"

#include <memory>
#include <string>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "sourcery/persistence/error.hpp"

namespace sourcery::cluster::detail {

namespace {

/// OpenSSL's reason for the last failure, and clears its queue.
std::string openssl_reason() {
  std::string out;
  while (auto code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    out = buf; // the last one is the most specific
  }
  return out.empty() ? "unknown error" : out;
}

caf::error refuse(std::string what) {
  return persistence::make_error(persistence::store_errc::invalid_argument, std::move(what));
}

} // namespace

caf::error check_tls_files(const tls_settings& tls) {
  if (!tls.any())
    return {};
  if (!tls.enabled())
    return refuse("TLS between nodes needs all three of --tls-cert, --tls-key and --tls-ca");
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx{SSL_CTX_new(TLS_method()), &SSL_CTX_free};
  if (!ctx)
    return refuse("cannot create an OpenSSL context: " + openssl_reason());
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.cert.c_str()) != 1)
    return refuse("cannot load the node's certificate " + tls.cert + ": " + openssl_reason());
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), tls.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return refuse("cannot load the node's private key " + tls.key + " (PEM, unencrypted, the certificate's own): "
                  + openssl_reason());
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return refuse("the private key " + tls.key + " does not match the certificate " + tls.cert);
  if (SSL_CTX_load_verify_locations(ctx.get(), tls.ca.c_str(), nullptr) != 1)
    return refuse("cannot load the cluster's CA " + tls.ca + ": " + openssl_reason());
  // The node's own certificate must be one its peers accept.
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> verify{X509_STORE_CTX_new(), &X509_STORE_CTX_free};
  if (!verify
      || X509_STORE_CTX_init(verify.get(), SSL_CTX_get_cert_store(ctx.get()), SSL_CTX_get0_certificate(ctx.get()),
                             nullptr)
           != 1)
    return refuse("cannot check the node's certificate: " + openssl_reason());
  if (X509_verify_cert(verify.get()) != 1)
    return refuse("the node's certificate " + tls.cert + " is not signed by the cluster's CA " + tls.ca + ": "
                  + X509_verify_cert_error_string(X509_STORE_CTX_get_error(verify.get())));
  return {};
}

} // namespace sourcery::cluster::detail
