# ccache when present. Precompiled headers need ccache's "sloppiness" for their timestamps and
# macros, otherwise every PCH user is a cache miss; CCACHE_BASEDIR makes paths relative so that a
# fresh clone in another folder (CI) hits the cache of earlier builds.
find_program(EDGEFORGE_CCACHE ccache)
if(EDGEFORGE_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      CCACHE_BASEDIR=${PROJECT_SOURCE_DIR} ${EDGEFORGE_CCACHE})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${EDGEFORGE_CCACHE})
  message(STATUS "EdgeForge: compiling through ccache (${EDGEFORGE_CCACHE})")
endif()
