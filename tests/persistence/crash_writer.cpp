// sourcery-crash-writer STORE THREADS [TAG]
//
// Appends to a store (an LMDB directory, or a store URI such as
// postgresql://...) from several threads until killed; TAG names its
// streams, so that several writers can share one store. After each
// acknowledged append it prints one line to stdout:
//   ACK <stream> <first_version> <count> <first_position> <batch_id>
// The crash test kills this process with SIGKILL at random moments and checks
// that every acknowledged append survived.

#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <msgpack.hpp>

#include "sourcery/persistence/lmdb_store.hpp"
#include "sourcery/persistence/store_uri.hpp"
#include "sourcery/runtime/cli/program_options.hpp"

using namespace sourcery::persistence;

namespace {

bytes batch_event(const std::string& batch, size_t count, size_t index) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{buf};
  pk.pack_map(3);
  pk.pack(std::string{"batch"});
  pk.pack(batch);
  pk.pack(std::string{"count"});
  pk.pack(count);
  pk.pack(std::string{"index"});
  pk.pack(index);
  return {reinterpret_cast<const uint8_t*>(buf.data()), reinterpret_cast<const uint8_t*>(buf.data()) + buf.size()};
}

std::mutex out_mtx;

void say(const std::string& line) {
  std::lock_guard guard{out_mtx};
  // One write per line: a kill never leaves half of an earlier line unwritten.
  size_t off = 0;
  while (off < line.size()) {
    auto n = ::write(1, line.data() + off, line.size() - off);
    if (n <= 0)
      std::_Exit(3);
    off += static_cast<size_t>(n);
  }
}

} // namespace

int main(int argc, char** argv) {
  std::string where, tag;
  int threads = 1;
  CLI::App cli{"Appends from THREADS threads until killed, printing each acknowledged event id.",
               "sourcery-crash-writer"};
  cli.add_option("STORE", where, "lmdb:DIR, a directory, or postgresql://...")->required();
  cli.add_option("THREADS", threads, "writer threads")->required()->check(CLI::Range(1, 64));
  cli.add_option("TAG", tag, "prefix of the stream ids");
  if (auto code = sourcery::cli::parse(cli, argc, argv))
    return *code;
  auto uri = where.find(':') != std::string::npos ? store_uri::parse(where) : store_uri::lmdb(where);
  if (!uri) {
    std::fprintf(stderr, "store: %s\n", describe(uri.error()).c_str());
    return 1;
  }
  if (!tag.empty())
    tag += "-";
  auto store = open_store(*uri);
  if (!store) {
    std::fprintf(stderr, "open: %s\n", describe(store.error()).c_str());
    return 1;
  }
  std::vector<std::thread> workers;
  for (int w = 0; w < threads; ++w)
    workers.emplace_back([&, w] {
      std::mt19937_64 rng{std::random_device{}()};
      constexpr int streams = 4;
      std::vector<uint64_t> versions(streams);
      for (int k = 0; k < streams; ++k) {
        auto info = (*store)->stream_info("crash-" + tag + std::to_string(w) + "-" + std::to_string(k));
        if (!info)
          std::_Exit(4);
        versions[static_cast<size_t>(k)] = info->version;
      }
      for (;;) {
        size_t k = rng() % streams;
        auto stream = "crash-" + tag + std::to_string(w) + "-" + std::to_string(k);
        size_t count = 1 + rng() % 4;
        auto batch = std::to_string(rng());
        std::vector<event_data> events(count);
        for (size_t i = 0; i < count; ++i) {
          events[i].type = "crash.appended";
          events[i].data = batch_event(batch, count, i);
        }
        auto r = (*store)->append(stream, expected_version::exact(versions[k]), std::move(events));
        if (!r) {
          std::fprintf(stderr, "append: %s\n", describe(r.error()).c_str());
          std::_Exit(5);
        }
        say("ACK " + stream + " " + std::to_string(versions[k] + 1) + " " + std::to_string(count) + " "
            + std::to_string(r->first_position) + " " + batch + "\n");
        versions[k] = r->stream_version;
      }
    });
  for (auto& t : workers)
    t.join();
}
