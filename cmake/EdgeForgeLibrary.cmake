# edgeforge_add_library(NAME SOURCES... DEPS...)
# Every domain library reuses the torch precompiled header, and is linked "whole archive" so that
# the static registrations in its object files (recipes, attention kinds, ...) survive linking.
function(edgeforge_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} edgeforge::torch)
  target_precompile_headers(${name} REUSE_FROM edgeforge_pch)
  add_library(edgeforge::${name} INTERFACE IMPORTED GLOBAL)
  set_target_properties(edgeforge::${name} PROPERTIES
    INTERFACE_LINK_LIBRARIES "$<LINK_LIBRARY:WHOLE_ARCHIVE,${name}>")
endfunction()

# Executables (cli, tests, bench) share the same precompiled header.
function(edgeforge_add_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  # The shared PCH is compiled -fPIC (it lives in a library); executables must match it, not -fPIE.
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
  target_compile_options(${name} PRIVATE -fPIC)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} edgeforge::torch)
  target_precompile_headers(${name} REUSE_FROM edgeforge_pch)
endfunction()
