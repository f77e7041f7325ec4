# The malloc of Sourcery's own programs (demos, servers, benchmarks, the
# tool). An actor runtime allocates many small, short-lived objects across
# threads (messages, events, strings); glibc's malloc spends a fifth of the
# CPU of the W3 saga benchmark on them, tcmalloc about half as much
# (measured: ~+35% transfers/s). Libraries do not link it: a host program
# embedding Sourcery keeps its own allocator choice. Under sanitizers the
# sanitizer owns malloc, so the system one is kept.
set(SOURCERY_ALLOCATOR "tcmalloc" CACHE STRING "malloc of Sourcery's programs: tcmalloc or system")
add_library(sourcery_allocator INTERFACE)
if(SOURCERY_ALLOCATOR STREQUAL "tcmalloc" AND SOURCERY_SANITIZERS STREQUAL "")
  find_library(SOURCERY_TCMALLOC NAMES tcmalloc_minimal libtcmalloc_minimal.so.4)
  if(SOURCERY_TCMALLOC)
    # --no-as-needed: nothing references tcmalloc by name; it replaces malloc.
    target_link_libraries(sourcery_allocator INTERFACE -Wl,--no-as-needed ${SOURCERY_TCMALLOC} -Wl,--as-needed)
    message(STATUS "Sourcery programs use tcmalloc: ${SOURCERY_TCMALLOC}")
  else()
    message(STATUS "tcmalloc not found (Debian: libtcmalloc-minimal4): Sourcery programs use the system malloc")
  endif()
endif()
