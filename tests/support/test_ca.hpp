#pragma once

// Throwaway certificates for tests of mutual TLS, made by Debian's
// `openssl` command: a CA, and certificates it signs (EC P-256, valid 2 days).

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

namespace sourcery::testing {

class test_ca {
public:
  /// A new CA in `dir` (files `<name>-ca.pem`, `<name>-ca.key`).
  test_ca(std::string dir, std::string name) : dir_(std::move(dir)), name_(std::move(name)) {
    run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=" + name_
        + "-ca -keyout " + key() + " -out " + cert());
  }

  std::string cert() const { return dir_ + "/" + name_ + "-ca.pem"; }
  std::string key() const { return dir_ + "/" + name_ + "-ca.key"; }

  struct issued {
    std::string cert, key;
  };

  /// A certificate for `who`, signed by this CA, naming this machine
  /// (127.0.0.1, ::1, localhost) as a server's must for HTTPS clients.
  issued issue(const std::string& who) const {
    issued out{dir_ + "/" + who + ".pem", dir_ + "/" + who + ".key"};
    auto csr = dir_ + "/" + who + ".csr";
    auto ext = dir_ + "/" + who + ".ext";
    std::ofstream{ext} << "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n";
    run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=" + who + " -keyout " + out.key
        + " -out " + csr);
    run("openssl x509 -req -days 2 -in " + csr + " -CA " + cert() + " -CAkey " + key() + " -CAcreateserial -extfile "
        + ext + " -out " + out.cert);
    return out;
  }

private:
  static void run(const std::string& command) {
    if (std::system((command + " >/dev/null 2>&1").c_str()) != 0)
      throw std::runtime_error("failed: " + command);
  }

  std::string dir_, name_;
};

} // namespace sourcery::testing
