# Warnings (as errors) and sanitizers for our own code only: linked PRIVATE.
# Warnings are errors in our development and CI (scripts/build.sh turns the
# option on); a user's build with another compiler, whose new warnings we
# have not seen, should not fail on them, so it is off by default elsewhere.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 12
   AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  set(sourcery_werror_default ON)
else()
  set(sourcery_werror_default OFF)
endif()
option(SOURCERY_WERROR "Treat warnings as errors (on with g++ 12, the compiler we develop with)" ${sourcery_werror_default})
add_library(sourcery_warnings INTERFACE)
target_compile_options(sourcery_warnings INTERFACE -Wall -Wextra)
if(SOURCERY_WERROR)
  target_compile_options(sourcery_warnings INTERFACE -Werror)
endif()
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  # GCC 12 at -O3 reports -Wrestrict on `"literal" + std::string` inside
  # libstdc++ (GCC bug 105651, fixed in 13): a false positive that would
  # make Release fail. Other compilers keep the warning.
  target_compile_options(sourcery_warnings INTERFACE -Wno-restrict)
endif()
if(CMAKE_UNITY_BUILD)
  # A unity build (CI's extra builds, to compile faster) puts several
  # sources in one translation unit: a header's type then "uses" another
  # source's anonymous-namespace type, which GCC reports (-Wsubobject-linkage)
  # although every source is well-formed on its own (the plain build checks that).
  target_compile_options(sourcery_warnings INTERFACE -Wno-subobject-linkage)
endif()
if(SOURCERY_SANITIZERS STREQUAL "address")
  # Under -fsanitize=address GCC 12's -Wmaybe-uninitialized reports false
  # positives inside Boost.Beast's parser (boost::optional members).
  target_compile_options(sourcery_warnings INTERFACE -Wno-maybe-uninitialized)
elseif(SOURCERY_SANITIZERS STREQUAL "thread")
  # Boost.Asio's fenced blocks use std::atomic_thread_fence, which GCC 12
  # warns ThreadSanitizer does not model (-Wtsan): a third-party header.
  target_compile_options(sourcery_warnings INTERFACE -Wno-tsan)
endif()

add_library(sourcery_sanitizers INTERFACE)
if(SOURCERY_SANITIZERS STREQUAL "address")
  # -fno-sanitize=null: CAF 0.17's init_fun_factory.hpp binds a reference to a
  # null shared_ptr whenever a function-based actor is spawned without extra
  # arguments (harmless, never read, but UB that UBSan reports in our
  # translation units). A real null dereference still faults under ASan.
  # -fno-sanitize=alignment,object-size,pointer-overflow: the three checks
  # that instrument every member access and pointer step made a translation
  # unit 1.5 times slower to compile (56 s against 36 s for one of
  # runtime_tests'), a third of CI's sanitized build. ASan finds the
  # out-of-bounds accesses object-size and pointer-overflow would, and
  # x86-64 loads unaligned data; signed overflow, shifts, enums, bools,
  # unreachable code and vptr (type confusion) stay checked.
  target_compile_options(sourcery_sanitizers INTERFACE
    -fsanitize=address,undefined -fno-sanitize=null,alignment,object-size,pointer-overflow -fno-omit-frame-pointer
    -fno-sanitize-recover=undefined)
  target_link_options(sourcery_sanitizers INTERFACE -fsanitize=address,undefined)
elseif(SOURCERY_SANITIZERS STREQUAL "thread")
  target_compile_options(sourcery_sanitizers INTERFACE -fsanitize=thread -fno-omit-frame-pointer)
  target_link_options(sourcery_sanitizers INTERFACE -fsanitize=thread)
elseif(NOT SOURCERY_SANITIZERS STREQUAL "")
  message(FATAL_ERROR "SOURCERY_SANITIZERS must be empty, 'address' or 'thread'")
endif()
# Sanitizers apply to every target in the tree, so instrumented and plain code never mix.
if(NOT SOURCERY_SANITIZERS STREQUAL "")
  link_libraries(sourcery_sanitizers)
endif()
