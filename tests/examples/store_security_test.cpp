// PostgreSQL as a production server is set up: reached over TLS whose
// certificate the client verifies (sslmode=verify-full, sslrootcert), by
// a role that is not a superuser and logs in with a SCRAM-SHA-256
// password. A server of the test's own (scripts/pg.sh secure), with
// certificates the test makes with Debian's openssl; the programs run as a
// user would run them.

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "../support/child_process.hpp"
#include "../support/free_port.hpp"
#include "../support/http_client.hpp"
#include "../support/postgres.hpp"
#include "../support/temp_dir.hpp"
#include "../support/test_ca.hpp"

using namespace std::chrono_literals;

namespace store_security_tests {

const std::string password = "s3cret p@ss";
const std::string password_in_uri = "s3cret%20p%40ss";

std::string slurp(const std::string& path) {
  std::ifstream in{path};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The URI a user of `role` writes: TLS verified against `ca`, a password.
std::string uri(uint16_t port, const std::string& ca, const std::string& pass, const std::string& schema) {
  return "postgresql://app:" + pass + "@127.0.0.1:" + std::to_string(port)
         + "/postgres?sslmode=verify-full&sslrootcert=" + ca + "&schema=" + schema;
}

struct outcome {
  int status = 0;
  std::string out, err;
};

/// Runs `program` to its end.
outcome run_to_end(const std::string& program, const std::vector<std::string>& args, const sourcery::testing::temp_dir& dir) {
  auto err = (dir / "stderr").string();
  sourcery::testing::child_process p{program, args, err};
  outcome o;
  o.out = p.read_all();
  o.status = p.wait();
  o.err = slurp(err);
  return o;
}

int lines_of(const std::string& text) {
  int n = 0;
  for (char c : text)
    n += c == '\n';
  return n;
}

} // namespace store_security_tests

using namespace store_security_tests;

TEST(store_security, tls_with_verify_full_and_scram_passwords_work_end_to_end_and_refusals_are_one_line) {
  sourcery::testing::temp_dir dir;
  sourcery::testing::test_ca ca{dir.str(), "db"};
  auto server_files = ca.issue("postgres-server");
  auto port = sourcery::testing::free_port();
  sourcery::testing::private_server server{SOURCERY_PG_SCRIPT,
                                          sourcery::testing::private_server::secure_setup{server_files.cert, server_files.key, port}};
  // The application's role: a password (stored as a SCRAM verifier), no
  // superuser, allowed to create its schema.
  sourcery::testing::run_sql(server.uri(), "CREATE ROLE app LOGIN PASSWORD '" + password
                                             + "'; GRANT CREATE ON DATABASE postgres TO app");
  EXPECT_EQ(sourcery::testing::run_sql(server.uri(), "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'app'"),
            "SCRAM-SHA-256$");
  auto good = uri(port, ca.cert(), password_in_uri, "secure_todo");
  // The role creates its store, as an operator does before the first start.
  auto init = run_to_end(SOURCERY_CLI_PATH, {"init", "--store", good}, dir);
  ASSERT_EQ(init.status, 0) << init.err;
  EXPECT_EQ((init.out + init.err).find(password), std::string::npos);

  // A server on it: commands stored, read back, every connection of the
  // role encrypted.
  {
    sourcery::testing::child_process p{TODO_SERVER_PATH, {"--port", "0", "--store", good}};
    auto line = p.read_line();
    auto at = line.find("127.0.0.1:");
    ASSERT_NE(at, std::string::npos) << line;
    EXPECT_EQ(line.find(password), std::string::npos) << line;
    EXPECT_EQ(line.find(password_in_uri), std::string::npos) << line;
    sourcery::test::http_client client{static_cast<uint16_t>(std::stoi(line.substr(at + 10)))};
    for (int i = 0; i < 5; ++i)
      EXPECT_EQ(client.post("/todos", {{"title", "over tls " + std::to_string(i)}}).status, 201u);
    EXPECT_EQ(client.get("/todos").json().size(), 5u);
    auto sessions = sourcery::testing::run_sql(
      server.uri(), "SELECT count(*) FILTER (WHERE s.ssl) || '/' || count(*) FROM pg_stat_activity a "
                    "JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'app'");
    auto slash = sessions.find('/');
    ASSERT_NE(slash, std::string::npos) << sessions;
    EXPECT_EQ(sessions.substr(0, slash), sessions.substr(slash + 1)) << "encrypted/all: " << sessions;
    EXPECT_NE(sessions.substr(0, slash), "0");
    p.signal(SIGTERM);
    EXPECT_EQ(p.wait(), 0);
  }
  // The operator's tool over the same URI reads what was stored.
  auto read = run_to_end(SOURCERY_CLI_PATH, {"all", "--store", good}, dir);
  EXPECT_EQ(read.status, 0) << read.err;
  EXPECT_NE(read.out.find("over tls 4"), std::string::npos) << read.out.substr(0, 400);

  // Refusals: one clear line on stderr, status 1, the password in neither stream.
  sourcery::testing::test_ca other{dir.str(), "other"};
  struct refusal {
    std::string uri, says;
  };
  for (const auto& [bad, says] : std::vector<refusal>{
         {uri(port, other.cert(), password_in_uri, "secure_todo"), "certificate verify failed"},
         {uri(port, ca.cert(), "wrong%20" + password_in_uri, "secure_todo"), "password authentication failed"},
         {"postgresql://app:" + password_in_uri + "@127.0.0.1:" + std::to_string(port)
            + "/postgres?sslmode=disable&schema=secure_todo",
          "no encryption"}}) {
    auto o = run_to_end(TODO_SERVER_PATH, {"--port", "0", "--store", bad}, dir);
    EXPECT_EQ(o.status, 1) << bad << "\n" << o.err;
    EXPECT_EQ(lines_of(o.err), 1) << o.err;
    EXPECT_NE(o.err.find(says), std::string::npos) << o.err;
    for (const auto& secret : {password, password_in_uri}) {
      EXPECT_EQ(o.err.find(secret), std::string::npos) << o.err;
      EXPECT_EQ(o.out.find(secret), std::string::npos) << o.out;
    }
  }
}
