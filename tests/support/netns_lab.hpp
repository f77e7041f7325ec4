#pragma once

// Hosts of a test's own on this machine: one network namespace per node,
// joined by a bridge, so that a node's links can really be cut -- both
// ways, or only what it sends -- while it still reaches PostgreSQL over its
// unix socket (a path, not a network address). A TCP proxy cannot do that
// for CAF's links: a pair of nodes shares one connection, whichever opened
// it, so a proxy in front of one node sees only part of its traffic.
// Needs root, `ip` and `iptables`; a lab that cannot be built throws, so
// the test fails and says why -- it never skips.

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sourcery::testing {

class netns_lab {
public:
  explicit netns_lab(size_t hosts) {
    std::random_device rd;
    auto id = std::to_string(1000 + rd() % 9000);
    prefix_ = "sr" + id;
    subnet_ = "10." + std::to_string(100 + rd() % 100) + "." + std::to_string(rd() % 250);
    bridge_ = prefix_ + "br";
    try {
      build(hosts);
    } catch (...) {
      cleanup();
      throw;
    }
  }
  ~netns_lab() { cleanup(); }

private:
  void build(size_t hosts) {
    must("ip link add " + bridge_ + " type bridge");
    must("ip addr add " + subnet_ + ".1/24 dev " + bridge_);
    must("ip link set " + bridge_ + " up");
    for (size_t i = 0; i < hosts; ++i) {
      auto ns = name(i), veth = veth_of(i);
      started_ = i + 1;
      must("ip netns add " + ns);
      must("ip link add " + veth + " type veth peer name " + veth + "p");
      must("ip link set " + veth + " netns " + ns);
      must("ip link set " + veth + "p master " + bridge_);
      must("ip link set " + veth + "p up");
      must("ip netns exec " + ns + " ip addr add " + address(i) + "/24 dev " + veth);
      must("ip netns exec " + ns + " ip link set " + veth + " up");
      must("ip netns exec " + ns + " ip link set lo up");
      must("ip netns exec " + ns + " iptables -L -n");
    }
  }
  void cleanup() {
    for (size_t i = 0; i < started_; ++i) {
      run("ip netns del " + name(i));
      run("ip link del " + veth_of(i) + "p");
    }
    run("ip link del " + bridge_);
  }

public:
  netns_lab(const netns_lab&) = delete;
  netns_lab& operator=(const netns_lab&) = delete;

  /// Host i's address on the lab's network.
  std::string address(size_t i) const { return subnet_ + "." + std::to_string(10 + i); }
  /// `ip`, to run (its full path: child processes are started with execv).
  static std::string ip_program() {
    for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
      if (::access(p, X_OK) == 0)
        return p;
    throw std::runtime_error("iproute2's `ip` is not installed (scripts/setup-deps.sh installs it)");
  }
  /// The arguments of `ip` that run a program on host i (after them: the program, its arguments).
  std::vector<std::string> exec_prefix(size_t i) const { return {"netns", "exec", name(i)}; }

  /// Nothing reaches host i and nothing leaves it, over the lab's network.
  void cut(size_t i) {
    must("ip netns exec " + name(i) + " iptables -A INPUT -i " + veth_of(i) + " -j DROP");
    must("ip netns exec " + name(i) + " iptables -A OUTPUT -o " + veth_of(i) + " -j DROP");
  }
  /// Host i hears the others, but nothing it sends leaves it.
  void cut_sends(size_t i) { must("ip netns exec " + name(i) + " iptables -A OUTPUT -o " + veth_of(i) + " -j DROP"); }
  void heal(size_t i) { must("ip netns exec " + name(i) + " iptables -F"); }
  /// Packets host i's cuts dropped so far (proof that a cut cut something).
  uint64_t dropped(size_t i) const {
    auto out = run("ip netns exec " + name(i) + " iptables -L -v -x -n");
    std::istringstream lines{out};
    std::string line;
    uint64_t n = 0;
    while (std::getline(lines, line)) {
      std::istringstream f{line};
      uint64_t pkts = 0;
      std::string bytes, target;
      if (f >> pkts >> bytes >> target && target == "DROP")
        n += pkts;
    }
    return n;
  }

private:
  std::string name(size_t i) const { return prefix_ + "n" + std::to_string(i); }
  std::string veth_of(size_t i) const { return prefix_ + "v" + std::to_string(i); }

  static std::string run(const std::string& cmd, int* status = nullptr) {
    std::string out;
    if (FILE* p = ::popen((cmd + " 2>&1").c_str(), "r")) {
      char buf[512];
      while (std::fgets(buf, sizeof buf, p))
        out += buf;
      int s = ::pclose(p);
      if (status)
        *status = WIFEXITED(s) ? WEXITSTATUS(s) : -1;
    } else if (status) {
      *status = -1;
    }
    return out;
  }
  static void must(const std::string& cmd) {
    int status = 0;
    auto out = run(cmd, &status);
    if (status != 0)
      throw std::runtime_error("cannot build the test's network (root, iproute2 and iptables are needed): `" + cmd
                               + "` failed: " + out);
  }

  std::string prefix_, subnet_, bridge_;
  size_t started_ = 0; ///< hosts begun (their namespaces to remove)
};

} // namespace sourcery::testing
