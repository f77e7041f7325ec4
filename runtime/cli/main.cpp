// sourcery — the operator's tool for an event store. `sourcery --help` lists
// its commands; the commands live in runtime/src/tool.

#include "sourcery/runtime/tool/operator_tool.hpp"

int main(int argc, char** argv) {
  return sourcery::operator_tool{"sourcery"}.run(argc, argv);
}
