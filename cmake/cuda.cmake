# The CUDA backend (src/backend/cuda): a static library keel_cuda, built when KEEL_CUDA is ON, or
# AUTO and a CUDA compiler is found. Defines KEEL_HAS_CUDA for every target linking keel_core.
# Compiled for sm_90a (Hopper machine code) plus compute_90 PTX.
set(KEEL_WITH_CUDA OFF)
if(NOT KEEL_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(KEEL_WITH_CUDA ON)
  elseif(KEEL_CUDA STREQUAL "ON")
    message(FATAL_ERROR "KEEL_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER or CUDACXX)")
  else()
    message(STATUS "keel: no CUDA compiler found, building without the CUDA backend")
  endif()
endif()

if(KEEL_WITH_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES OFF)  # the -gencode flags below name the targets
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  file(GLOB KEEL_CUDA_SOURCES CONFIGURE_DEPENDS src/backend/cuda/*.cu src/backend/cuda/*.cpp)
  add_library(keel_cuda STATIC ${KEEL_CUDA_SOURCES})
  target_include_directories(keel_cuda PUBLIC include src)
  # CMake 3.25 knows no C++20 dialect flag for nvcc: device code is C++17 (host .cpp files C++20).
  set_target_properties(keel_cuda PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  target_compile_options(keel_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90 --expt-relaxed-constexpr -Xcompiler=-Wall>)
  # The CUDA runtime linked statically and cuBLAS opened at run time (matmul.cu): a keel built
  # with CUDA maps no CUDA library until a CUDA session starts.
  target_link_libraries(keel_cuda PUBLIC CUDA::cudart_static ${CMAKE_DL_LIBS})
  target_link_libraries(keel_cuda PUBLIC keel_core)
  target_compile_definitions(keel_core PUBLIC KEEL_HAS_CUDA=1)
  # keel_core's backend factory and device profiles call into keel_cuda, whose kernels use
  # keel_core's quant tables: a cycle of two static libraries, which CMake links as such.
  target_link_libraries(keel_core PUBLIC keel_cuda)
  message(STATUS "keel: building the CUDA backend with ${CMAKE_CUDA_COMPILER} (${CMAKE_CUDA_COMPILER_VERSION})")
endif()
