# Precompiled third-party headers. CAF, msgpack and nlohmann/json take about
# 8 s to parse in every translation unit, -O0 or -O2 alike; a unity source
# of runtime_tests compiled in 18.7 s with them precompiled against 25.7 s
# without (one precompiled header: 19.5 s, once). Two hosts build them, one
# per set of flags a header can be reused under (GCC refuses a header built
# at another -O level; -Winvalid-pch with -Werror says so at build time):
#   sourcery_pch       the libraries' and programs' flags;
#   sourcery_test_pch  the tests' (-O0, sourcery_test_build), with GoogleTest.
# sourcery_precompiled_headers(TARGET...) and
# sourcery_test_precompiled_headers(TARGET...) make targets reuse them.
# Only targets that link msgpack reuse them (supervision does not: GCC
# refuses a header built with a definition the unit lacks).
# SOURCERY_PRECOMPILED_HEADERS=OFF compiles every header in every unit.
option(SOURCERY_PRECOMPILED_HEADERS "Reuse precompiled CAF, msgpack and JSON headers" ON)

set(sourcery_pch_headers <caf/all.hpp> <caf/io/all.hpp> <msgpack.hpp> <nlohmann/json.hpp>)

# Makes each target in ARGN reuse `host`, made the first time: an object
# library precompiling the headers (and `extra`) under the flags its links
# give -- every definition its consumers have (MSGPACK_DEFAULT_API_VERSION
# from msgpackc-cxx), their warnings, and `libs`.
function(sourcery_reuse_pch host libs extra)
  if(NOT SOURCERY_PRECOMPILED_HEADERS)
    return()
  endif()
  if(NOT TARGET ${host})
    add_library(${host} OBJECT ${PROJECT_SOURCE_DIR}/cmake/pch_host.cpp)
    target_link_libraries(${host} PRIVATE CAF::io msgpackc-cxx nlohmann_json::nlohmann_json sourcery_warnings ${libs})
    target_precompile_headers(${host} PRIVATE ${sourcery_pch_headers} ${extra})
  endif()
  foreach(target IN LISTS ARGN)
    target_precompile_headers(${target} REUSE_FROM ${host})
  endforeach()
endfunction()

function(sourcery_precompiled_headers)
  sourcery_reuse_pch(sourcery_pch "" "" ${ARGN})
endfunction()

function(sourcery_test_precompiled_headers)
  sourcery_reuse_pch(sourcery_test_pch "GTest::gtest;sourcery_test_build" "<gtest/gtest.h>" ${ARGN})
endfunction()
