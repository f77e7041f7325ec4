# What `cmake --install` puts in a prefix: the headers, the libraries, a
# CMake package (find_package(Sourcery CONFIG): Sourcery::supervision,
# ::persistence, ::postgres, ::store_open, ::actors, ::runtime, ::cluster, versioned),
# a pkg-config file (`pkg-config --cflags --libs sourcery`) and the
# `sourcery` tool; `cpack -G DEB` packages the same with its Debian
# dependencies. Sanitized builds install nothing (they link the sanitizers).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(sourcery_libraries supervision persistence store_open actors runtime)
if(SOURCERY_WITH_POSTGRES)
  list(APPEND sourcery_libraries persistence_postgres cluster)
endif()
foreach(lib IN LISTS sourcery_libraries)
  set_target_properties(${lib} PROPERTIES
    OUTPUT_NAME sourcery_${lib}
    VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR} # 0.x: every minor release may break the ABI
    INSTALL_RPATH "$ORIGIN") # shared: each finds the others beside it
endforeach()
if(SOURCERY_WITH_POSTGRES)
  set_target_properties(persistence_postgres PROPERTIES OUTPUT_NAME sourcery_postgres EXPORT_NAME postgres)
endif()

if(NOT SOURCERY_SANITIZERS STREQUAL "")
  return()
endif()

install(TARGETS ${sourcery_libraries} EXPORT SourceryTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# Shared libraries are found next to the installed tool, wherever the prefix is.
file(RELATIVE_PATH sourcery_bin_to_lib /prefix/${CMAKE_INSTALL_BINDIR} /prefix/${CMAKE_INSTALL_LIBDIR})
set_target_properties(sourcery PROPERTIES INSTALL_RPATH "$ORIGIN/${sourcery_bin_to_lib}")
install(TARGETS sourcery RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
set(sourcery_header_dirs supervision/include persistence/include persistence/lmdb/include persistence/memory/include
    persistence/open/include actors/include runtime/include)
if(SOURCERY_WITH_POSTGRES)
  list(APPEND sourcery_header_dirs persistence/postgres/include)
endif()
foreach(dir IN LISTS sourcery_header_dirs)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.hpp")
endforeach()
install(FILES ${SOURCERY_GENERATED_INCLUDE_DIR}/sourcery/version.hpp ${SOURCERY_GENERATED_INCLUDE_DIR}/sourcery/config.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sourcery)

set(sourcery_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/Sourcery)
install(EXPORT SourceryTargets NAMESPACE Sourcery:: DESTINATION ${sourcery_cmake_dir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/SourceryConfig.cmake.in
  ${PROJECT_BINARY_DIR}/SourceryConfig.cmake INSTALL_DESTINATION ${sourcery_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/SourceryConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/SourceryConfig.cmake ${PROJECT_BINARY_DIR}/SourceryConfigVersion.cmake
  DESTINATION ${sourcery_cmake_dir})
# Relocatable: the prefix is found from where the .pc file lies.
file(RELATIVE_PATH sourcery_pc_to_prefix /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
if(SOURCERY_WITH_POSTGRES)
  set(sourcery_pc_requires "lmdb libpq libssl libcrypto nlohmann_json CLI11")
  set(sourcery_pc_libs "-lsourcery_cluster -lsourcery_runtime -lsourcery_store_open -lsourcery_postgres -lsourcery_actors -lsourcery_persistence -lsourcery_supervision -lcaf_openssl -lcaf_io -lcaf_core")
else()
  set(sourcery_pc_requires "lmdb libssl libcrypto nlohmann_json CLI11")
  set(sourcery_pc_libs "-lsourcery_runtime -lsourcery_store_open -lsourcery_actors -lsourcery_persistence -lsourcery_supervision -lcaf_core")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/sourcery.pc.in ${PROJECT_BINARY_DIR}/sourcery.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/sourcery.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# cpack -G DEB: one development package (headers, libraries, CMake and
# pkg-config files, the tool), depending on what its headers and the tool need.
set(CPACK_PACKAGE_NAME libsourcery-dev)
set(CPACK_PACKAGE_VENDOR "Sourcery")
set(CPACK_PACKAGE_CONTACT "Sourcery developers <sourcery@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Sourcery: an event-sourced actor runtime for C++ (CQRS, OTP-style supervision)")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_PACKAGE_DEPENDS
  "libcaf-dev (>= 0.17), libcaf-dev (<< 0.18), liblmdb-dev, libmsgpack-cxx-dev, nlohmann-json3-dev, libcli11-dev, libtcmalloc-minimal4, libssl-dev, pkgconf | pkg-config")
if(SOURCERY_WITH_POSTGRES)
  string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS ", libpq-dev")
endif()
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
include(CPack)
