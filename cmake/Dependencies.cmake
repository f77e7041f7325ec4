# Third-party dependencies, all from Debian packages (see scripts/setup-deps.sh).
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
find_package(msgpack 4 CONFIG REQUIRED)  # Debian's libmsgpack-cxx-dev: target msgpackc-cxx
find_package(nlohmann_json 3 CONFIG REQUIRED)
find_package(Boost 1.74 REQUIRED)              # header-only: Asio and Beast (libboost-dev)
pkg_check_modules(LMDB REQUIRED IMPORTED_TARGET lmdb)
find_package(OpenSSL 1.1 REQUIRED)             # libssl-dev: libcrypto seals personal data; libssl, HTTPS and the cluster's TLS
if(SOURCERY_WITH_POSTGRES)
  pkg_check_modules(LIBPQ REQUIRED IMPORTED_TARGET libpq)  # libpq-dev: the PostgreSQL store only
endif()
find_package(CLI11 2 CONFIG REQUIRED)          # libcli11-dev: every program's command line (header-only)

# Debian's CAF 0.17 ships no CMake package config: wrap it once here.
find_path(CAF_INCLUDE_DIR caf/all.hpp REQUIRED)
find_library(CAF_CORE_LIBRARY caf_core REQUIRED)
find_library(CAF_IO_LIBRARY caf_io REQUIRED)
if(NOT TARGET CAF::core)
  add_library(CAF::core UNKNOWN IMPORTED)
  set_target_properties(CAF::core PROPERTIES
    IMPORTED_LOCATION ${CAF_CORE_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${CAF_INCLUDE_DIR}
    INTERFACE_LINK_LIBRARIES Threads::Threads)
  add_library(CAF::io UNKNOWN IMPORTED)
  set_target_properties(CAF::io PROPERTIES
    IMPORTED_LOCATION ${CAF_IO_LIBRARY}
    INTERFACE_LINK_LIBRARIES CAF::core)
endif()
if(SOURCERY_WITH_POSTGRES)
  # The cluster's links: CAF's OpenSSL module (mutual TLS between nodes),
  # and libssl to check a node's certificate, key and CA before it starts.
  find_library(CAF_OPENSSL_LIBRARY caf_openssl REQUIRED)  # libcaf-openssl0.17 (libcaf-dev depends on it)
  if(NOT TARGET CAF::openssl)
    add_library(CAF::openssl UNKNOWN IMPORTED)
    set_target_properties(CAF::openssl PROPERTIES
      IMPORTED_LOCATION ${CAF_OPENSSL_LIBRARY}
      INTERFACE_LINK_LIBRARIES "CAF::io;OpenSSL::SSL")
  endif()
endif()
