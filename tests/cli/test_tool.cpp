// An application's own operator tool, as the tests' stand-in: the generic
// commands plus one registered projection, "test.totals" (the sum of the
// `amount` of each stream's deposits).

#include <string>
#include <variant>

#include <msgpack.hpp>

#include "sourcery/runtime/tool/operator_tool.hpp"

namespace {

struct deposited {
  static constexpr const char* type_name = "bank.deposited";
  int64_t amount = 0;
  MSGPACK_DEFINE_MAP(amount);
};

struct totals {
  static constexpr const char* projection_name = "test.totals";
  using event = std::variant<deposited>;

  caf::error project(const deposited& e, const sourcery::event_context& ctx,
                     sourcery::persistence::projection_store::writer& w) {
    auto old = w.get("totals", ctx.stream_id);
    w.put("totals", ctx.stream_id, std::to_string(std::stoll(old.value_or("0")) + e.amount));
    return {};
  }
};

} // namespace

int main(int argc, char** argv) {
  sourcery::operator_tool tool{"test-tool"};
  tool.add_projection<totals>("deposits per stream");
  return tool.run(argc, argv);
}
