// Compiled with nothing but `pkg-config --cflags --libs sourcery`.
#include <cstdio>

#include "sourcery/runtime/application.hpp"
#include "sourcery/version.hpp"

int main() {
  sourcery::application_config config;
  std::printf("sourcery %s, data_dir '%s'\n", sourcery::version, config.data_dir.c_str());
  return 0;
}
