# One source of truth for compile flags and for how libraries, binaries and tests are declared.
include_guard(GLOBAL)

set(CRESCENT_WARNING_FLAGS
  -Wall -Wextra -Wpedantic -Wno-unused-parameter -Wno-sign-compare
  -Wno-missing-field-initializers)
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  list(APPEND CRESCENT_WARNING_FLAGS -Wthread-safety -Wno-gnu-zero-variadic-macro-arguments
       -Wno-c99-extensions)
endif()
if(CRESCENT_WERROR)
  list(APPEND CRESCENT_WARNING_FLAGS -Werror)
endif()

# Per-ISA flags for kernel translation units; the dispatcher picks one at run time.
set(CRESCENT_AVX2_FLAGS -mavx2 -mfma -mf16c)
set(CRESCENT_AVX512_FLAGS -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq
    -mavx512vnni)

function(_crescent_apply target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${CRESCENT_WARNING_FLAGS}>)
endfunction()

# crescent_cc_library(NAME name SRCS ... [HDRS ...] [DEPS ...] [PUBLIC_DEPS ...])
function(crescent_cc_library)
  cmake_parse_arguments(A "" "NAME" "SRCS;HDRS;DEPS" ${ARGN})
  if(A_SRCS)
    add_library(${A_NAME} STATIC ${A_SRCS} ${A_HDRS})
    target_include_directories(${A_NAME} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${A_NAME} PUBLIC ${A_DEPS})
    _crescent_apply(${A_NAME})
  else()
    add_library(${A_NAME} INTERFACE)
    target_include_directories(${A_NAME} INTERFACE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${A_NAME} INTERFACE ${A_DEPS})
  endif()
endfunction()

# crescent_cc_binary(NAME name SRCS ... DEPS ...)
function(crescent_cc_binary)
  cmake_parse_arguments(A "" "NAME;OUTPUT_NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS})
  if(A_OUTPUT_NAME)
    set_target_properties(${A_NAME} PROPERTIES OUTPUT_NAME ${A_OUTPUT_NAME})
  endif()
  set_target_properties(${A_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bin)
  _crescent_apply(${A_NAME})
endfunction()

# crescent_cc_test(NAME name SRCS ... DEPS ... [LABELS ...])
# Registers a GoogleTest binary with CTest. Label "unit" (default) runs in the ASan/UBSan build
# too (target crescent_unit_tests builds just those); "tsan" ones also in the TSan build (target
# crescent_tsan_tests builds just those);
# "e2e" tests drive real processes and run in the Release build only.
function(crescent_cc_test)
  cmake_parse_arguments(A "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gmock GTest::gtest_main)
  set_target_properties(${A_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  _crescent_apply(${A_NAME})
  if(NOT A_LABELS)
    set(A_LABELS unit)
  endif()
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  add_test(NAME ${A_NAME} COMMAND ${A_NAME})
  if("unit" IN_LIST A_LABELS)
    # The sanitizer stage of CI builds only these (and what they depend on).
    if(NOT TARGET crescent_unit_tests)
      add_custom_target(crescent_unit_tests)
    endif()
    add_dependencies(crescent_unit_tests ${A_NAME})
  endif()
  if("tsan" IN_LIST A_LABELS)
    if(NOT TARGET crescent_tsan_tests)
      add_custom_target(crescent_tsan_tests)
    endif()
    add_dependencies(crescent_tsan_tests ${A_NAME})
  endif()
  set_tests_properties(${A_NAME} PROPERTIES LABELS "${A_LABELS}" TIMEOUT ${A_TIMEOUT}
    ENVIRONMENT "CRESCENT_MODEL=${CRESCENT_MODEL};CRESCENT_SOURCE_DIR=${PROJECT_SOURCE_DIR};CRESCENT_BINARY_DIR=${PROJECT_BINARY_DIR}")
endfunction()

# Adds every immediate subdirectory of DIR that has a CMakeLists.txt, so that parallel work in
# separate folders needs no edits to a shared list.
function(crescent_add_subdirs dir)
  file(GLOB children RELATIVE ${dir} ${dir}/*)
  list(SORT children)
  foreach(child ${children})
    if(IS_DIRECTORY ${dir}/${child} AND EXISTS ${dir}/${child}/CMakeLists.txt)
      add_subdirectory(${dir}/${child})
    endif()
  endforeach()
endfunction()
