# Third-party dependencies. LibTorch comes from the PyPI torch wheel of the project's virtual
# environment (scripts/setup.sh); everything else from Debian's packages, or from the prefix that
# scripts/bundle-deps.sh makes for machines without a package registry (EDGEFORGE_DEPS_PREFIX).

set(EDGEFORGE_VENV "$ENV{HOME}/.cache/edgeforge/venv" CACHE PATH "Virtual environment holding the torch wheel")
set(EDGEFORGE_DEPS_PREFIX "" CACHE PATH "Prefix made by scripts/bundle-deps.sh (machines without a registry)")
if(EDGEFORGE_DEPS_PREFIX)
  list(PREPEND CMAKE_PREFIX_PATH ${EDGEFORGE_DEPS_PREFIX})
  set(Protobuf_PROTOC_EXECUTABLE ${EDGEFORGE_DEPS_PREFIX}/bin/protoc CACHE FILEPATH "protoc from the bundle")
  # Debian keeps some configuration headers (jconfig.h, ...) in a multiarch folder; the bundle's
  # copies must win over the host's, whose library versions differ.
  include_directories(BEFORE SYSTEM ${EDGEFORGE_DEPS_PREFIX}/include/x86_64-linux-gnu)
endif()

# --- LibTorch ------------------------------------------------------------------------------------
if(NOT Torch_DIR)
  find_program(EDGEFORGE_PYTHON NAMES python3 python HINTS ${EDGEFORGE_VENV}/bin NO_DEFAULT_PATH)
  if(NOT EDGEFORGE_PYTHON)
    find_program(EDGEFORGE_PYTHON NAMES python3 python)
  endif()
  execute_process(COMMAND ${EDGEFORGE_PYTHON} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                  OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _torch_rc)
  if(NOT _torch_rc EQUAL 0)
    message(FATAL_ERROR "EdgeForge: cannot import torch with ${EDGEFORGE_PYTHON}. Run scripts/setup.sh "
                        "(or pass -DTorch_DIR=... / -DEDGEFORGE_VENV=...).")
  endif()
  list(APPEND CMAKE_PREFIX_PATH ${_torch_prefix})
endif()
# Torch's config looks for the CUDA toolkit when the wheel is a CUDA build; only let it when we
# compile CUDA ourselves, so that a CPU-only build never depends on nvcc.
if(EDGEFORGE_CUDA STREQUAL "OFF")
  set(USE_CUDA OFF)
  set(CAFFE2_USE_CUDNN OFF)
endif()
# Torch's CMake adds nvcc -gencode flags for TORCH_CUDA_ARCH_LIST; without one it detects the GPU,
# and on a machine without a GPU falls back to a list that CUDA 13 no longer supports (sm_50).
# Default: Ampere and Hopper data-centre GPUs; set TORCH_CUDA_ARCH_LIST for others.
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT TORCH_CUDA_ARCH_LIST)
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0" CACHE STRING "CUDA architectures of EdgeForge's kernels")
endif()
find_package(Torch REQUIRED)
find_package(fmt REQUIRED)
# The torch wheel ships its own, newer {fmt} headers in its include folder, which would shadow the
# {fmt} that spdlog was built against. A folder holding only a link to spdlog's fmt/ is put on the
# include path before torch's, so every translation unit sees the one {fmt} that it links.
get_target_property(_fmt_includes fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
find_path(EDGEFORGE_FMT_INCLUDE fmt/core.h HINTS ${_fmt_includes} NO_DEFAULT_PATH)
if(NOT EDGEFORGE_FMT_INCLUDE)
  find_path(EDGEFORGE_FMT_INCLUDE fmt/core.h)
endif()
set(_fmt_shim ${PROJECT_BINARY_DIR}/fmt-shim)
file(MAKE_DIRECTORY ${_fmt_shim})
file(CREATE_LINK ${EDGEFORGE_FMT_INCLUDE}/fmt ${_fmt_shim}/fmt SYMBOLIC)
add_library(edgeforge::torch INTERFACE IMPORTED GLOBAL)
target_link_libraries(edgeforge::torch INTERFACE ${TORCH_LIBRARIES} fmt::fmt)
target_include_directories(edgeforge::torch SYSTEM INTERFACE ${_fmt_shim} ${TORCH_INCLUDE_DIRS})
# A CUDA wheel's libtorch_cuda needs the NCCL/cuDNN/... of the wheel's nvidia-* packages, found at
# run time through its own RUNPATH; at link time the linker must be pointed at them too, or it
# picks up an older system copy (e.g. the CUDA toolkit's NCCL) and reports missing symbols.
file(GLOB _nvidia_wheel_libs "${TORCH_INSTALL_PREFIX}/../nvidia/*/lib" "${TORCH_INSTALL_PREFIX}/../nvidia/cu*/lib")
foreach(_dir ${_nvidia_wheel_libs})
  target_link_options(edgeforge::torch INTERFACE "LINKER:-rpath-link,${_dir}")
endforeach()
# Some torch wheels export their own copies of libstdc++ functions (std::filesystem::remove_all
# among them), built against another libstdc++; symbol lookup follows the order of the needed
# libraries, so libstdc++ is put first and every std:: call binds to the C++ runtime itself.
target_link_options(edgeforge::torch INTERFACE "LINKER:--push-state,--no-as-needed,-lstdc++,--pop-state")
string(REPLACE " " ";" _torch_flags "${TORCH_CXX_FLAGS}")
target_compile_options(edgeforge::torch INTERFACE ${_torch_flags})
message(STATUS "EdgeForge: LibTorch ${Torch_VERSION} from ${TORCH_INSTALL_PREFIX}")

# --- small libraries -----------------------------------------------------------------------------
find_package(nlohmann_json 3.10 REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)
if(EDGEFORGE_DEPS_PREFIX)
  # Debian keeps the serial HDF5 in hdf5/serial/ subfolders, which FindHDF5 only learns from h5cc.
  find_path(EDGEFORGE_HDF5_INCLUDE hdf5.h PATHS ${EDGEFORGE_DEPS_PREFIX}/include/hdf5/serial ${EDGEFORGE_DEPS_PREFIX}/include NO_DEFAULT_PATH)
  find_library(EDGEFORGE_HDF5_LIBRARY NAMES hdf5_serial hdf5
               PATHS ${EDGEFORGE_DEPS_PREFIX}/lib/x86_64-linux-gnu/hdf5/serial ${EDGEFORGE_DEPS_PREFIX}/lib NO_DEFAULT_PATH)
  if(NOT EDGEFORGE_HDF5_INCLUDE OR NOT EDGEFORGE_HDF5_LIBRARY)
    message(FATAL_ERROR "EdgeForge: HDF5 not found in ${EDGEFORGE_DEPS_PREFIX} (made by scripts/bundle-deps.sh?)")
  endif()
  set(HDF5_INCLUDE_DIRS ${EDGEFORGE_HDF5_INCLUDE})
  set(HDF5_C_LIBRARIES ${EDGEFORGE_HDF5_LIBRARY})
else()
  find_package(HDF5 REQUIRED COMPONENTS C)
endif()
find_package(PNG REQUIRED)
find_package(JPEG REQUIRED)
find_package(Protobuf REQUIRED)
find_package(Threads REQUIRED)
if(EDGEFORGE_TESTS)
  find_package(Catch2 2 REQUIRED)
endif()

# Torch's CMake package defines an empty protobuf::libprotobuf of its own (its protobuf is built in),
# so the system library is linked by path through a target of ours.
find_library(EDGEFORGE_PROTOBUF_LIBRARY NAMES protobuf HINTS ${EDGEFORGE_DEPS_PREFIX}/lib REQUIRED)
add_library(edgeforge::protobuf INTERFACE IMPORTED GLOBAL)
target_link_libraries(edgeforge::protobuf INTERFACE ${EDGEFORGE_PROTOBUF_LIBRARY} Threads::Threads)
target_include_directories(edgeforge::protobuf SYSTEM INTERFACE ${Protobuf_INCLUDE_DIRS})

add_library(edgeforge::hdf5 INTERFACE IMPORTED GLOBAL)
target_include_directories(edgeforge::hdf5 SYSTEM INTERFACE ${HDF5_INCLUDE_DIRS})
target_link_libraries(edgeforge::hdf5 INTERFACE ${HDF5_C_LIBRARIES})
target_compile_definitions(edgeforge::hdf5 INTERFACE ${HDF5_DEFINITIONS})
