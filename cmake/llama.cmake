# llama.cmake: provide the `llama` and `ggml` targets.
#
# Order: an installed llama.cpp (find_package(llama)) unless LLAMA_CPP_DIR is
# set; LLAMA_CPP_DIR; otherwise the pinned source fetched from npm into the
# build tree (scripts/fetch-llama.sh, cached outside the clone). Only the
# libraries corral links are built (EXCLUDE_FROM_ALL): llama-server is defined
# for the benchmarks but built only on request.

set(CORRAL_LLAMA_SOURCE_DIR "")
if(NOT LLAMA_CPP_DIR)
  find_package(llama QUIET CONFIG)
endif()

if(llama_FOUND AND NOT LLAMA_CPP_DIR)
  message(STATUS "corral: using installed llama.cpp (${llama_DIR})")
  if(NOT TARGET ggml)
    find_package(ggml REQUIRED CONFIG)
    add_library(ggml ALIAS ggml::ggml)
  endif()
  set(CORRAL_LLAMA_SOURCE_DIR "${LLAMA_VOCAB_DIR}")
else()
  if(NOT LLAMA_CPP_DIR)
    set(LLAMA_CPP_DIR "${CMAKE_BINARY_DIR}/_deps/llama.cpp")
    if(NOT EXISTS "${LLAMA_CPP_DIR}/include/llama.h")
      message(STATUS "corral: fetching llama.cpp source (node-llama-cpp bundle)")
      execute_process(COMMAND bash "${CMAKE_CURRENT_SOURCE_DIR}/scripts/fetch-llama.sh" "${LLAMA_CPP_DIR}"
                      RESULT_VARIABLE _fetch_rc)
      if(NOT _fetch_rc EQUAL 0)
        message(FATAL_ERROR "corral: could not fetch llama.cpp (scripts/fetch-llama.sh failed)")
      endif()
    endif()
  endif()
  message(STATUS "corral: building llama.cpp from ${LLAMA_CPP_DIR}")
  set(CORRAL_LLAMA_SOURCE_DIR "${LLAMA_CPP_DIR}")

  set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_TESTS OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_APP OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_UI OFF CACHE BOOL "" FORCE)
  set(LLAMA_USE_PREBUILT_UI OFF CACHE BOOL "" FORCE)
  set(LLAMA_CURL OFF CACHE BOOL "" FORCE)
  set(LLAMA_OPENSSL OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_COMMON ON CACHE BOOL "" FORCE)    # chat templates (src/engine/chat_bridge.cpp)
  set(LLAMA_BUILD_TOOLS ${CORRAL_BUILD_LLAMA_SERVER} CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_SERVER ${CORRAL_BUILD_LLAMA_SERVER} CACHE BOOL "" FORCE)
  set(GGML_CCACHE OFF CACHE BOOL "" FORCE)   # corral sets the launcher itself
  if(CORRAL_CUDA)
    set(GGML_CUDA ON CACHE BOOL "" FORCE)
  endif()
  # These CPUs advertise AMX but its tile instructions fault inside the VMs
  # we run on; quantized matmuls would die in ggml_backend_amx_mul_mat.
  include(CheckCCompilerFlag)
  check_c_compiler_flag(-mno-amx-tile CORRAL_HAVE_NO_AMX)
  if(CORRAL_HAVE_NO_AMX)
    set(_noamx "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
    string(FIND "${CMAKE_C_FLAGS}" "-mno-amx-tile" _has)
    if(_has EQUAL -1)
      set(CMAKE_C_FLAGS "${CMAKE_C_FLAGS} ${_noamx}")
      set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${_noamx}")
    endif()
  endif()
  add_subdirectory("${LLAMA_CPP_DIR}" "${CMAKE_BINARY_DIR}/llama.cpp" EXCLUDE_FROM_ALL SYSTEM)
endif()
