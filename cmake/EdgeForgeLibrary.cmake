# edgeforge_add_library(NAME SOURCES... [CUDA_SOURCES...] DEPS...)
# Every domain library reuses the torch precompiled header, and is linked "whole archive" so that
# the static registrations in its object files (recipes, attention kinds, ...) survive linking.
# CUDA_SOURCES (the *.cu kernels and the .cpp files that launch them) are compiled only when
# EDGEFORGE_WITH_CUDA; the .cu files take raw pointers and never include torch, so nvcc stays fast
# and needs no precompiled header. Sources see EDGEFORGE_WITH_CUDA=1 when the kernels are built.
function(edgeforge_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;CUDA_SOURCES;DEPS" ${ARGN})
  set(_sources ${ARG_SOURCES})
  if(EDGEFORGE_WITH_CUDA AND ARG_CUDA_SOURCES)
    list(APPEND _sources ${ARG_CUDA_SOURCES})
  endif()
  add_library(${name} STATIC ${_sources})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} edgeforge::torch)
  target_precompile_headers(${name} REUSE_FROM edgeforge_pch)
  if(EDGEFORGE_WITH_CUDA AND ARG_CUDA_SOURCES)
    target_compile_definitions(${name} PUBLIC EDGEFORGE_WITH_CUDA=1)
    foreach(_src ${ARG_CUDA_SOURCES})
      if(_src MATCHES "\\.cu$")
        set_source_files_properties(${_src} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
      endif()
    endforeach()
    target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo>)
  endif()
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
