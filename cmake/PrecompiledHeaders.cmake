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

if(SOURCERY_PRECOMPILED_HEADERS)
  add_library(sourcery_pch OBJECT ${CMAKE_CURRENT_LIST_DIR}/pch_host.cpp)
  # The definitions of every consumer's interface (MSGPACK_DEFAULT_API_VERSION
  # from msgpackc-cxx) and its warning flags.
  target_link_libraries(sourcery_pch PRIVATE CAF::io msgpackc-cxx nlohmann_json::nlohmann_json sourcery_warnings)
  target_precompile_headers(sourcery_pch PRIVATE ${sourcery_pch_headers})
endif()

function(sourcery_precompiled_headers)
  if(SOURCERY_PRECOMPILED_HEADERS)
    foreach(target IN LISTS ARGN)
      target_precompile_headers(${target} REUSE_FROM sourcery_pch)
    endforeach()
  endif()
endfunction()

function(sourcery_test_precompiled_headers)
  if(NOT SOURCERY_PRECOMPILED_HEADERS)
    return()
  endif()
  if(NOT TARGET sourcery_test_pch)
    add_library(sourcery_test_pch OBJECT ${PROJECT_SOURCE_DIR}/cmake/pch_host.cpp)
    target_link_libraries(sourcery_test_pch PRIVATE CAF::io msgpackc-cxx nlohmann_json::nlohmann_json GTest::gtest
                                                    sourcery_warnings sourcery_test_build)
    target_precompile_headers(sourcery_test_pch PRIVATE ${sourcery_pch_headers} <gtest/gtest.h>)
  endif()
  foreach(target IN LISTS ARGN)
    target_precompile_headers(${target} REUSE_FROM sourcery_test_pch)
  endforeach()
endfunction()
