# Helpers shared by every module: one static library per folder, warnings per target.

set(RAMPART_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wimplicit-fallthrough)

# rampart_module(<name> SOURCES ... [DEPS ...] [PRIVATE_DEPS ...])
# Declares the static library rampart_<name>, rooted at the repository top so that
# other modules include "<name>/header.hpp".
function(rampart_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(rampart_${name} STATIC ${ARG_SOURCES})
  target_include_directories(rampart_${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(rampart_${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  rampart_target_options(rampart_${name})
endfunction()

function(rampart_target_options target)
  target_compile_options(${target} PRIVATE ${RAMPART_WARNINGS})
  if(RAMPART_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  set_target_properties(${target} PROPERTIES CXX_EXTENSIONS OFF)
endfunction()

# rampart_add_unit_test(<name> SOURCES ... DEPS ...)
# A Catch2 executable whose every TEST_CASE becomes its own ctest entry, label "unit".
function(rampart_add_unit_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} Catch2::Catch2WithMain)
  rampart_target_options(${name})
  # A case that needs a missing tool prints "SKIP: ..." and exits 77.
  catch_discover_tests(${name} PROPERTIES LABELS unit SKIP_RETURN_CODE 77
    ENVIRONMENT "RAMPART_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
endfunction()

# rampart_add_fuzzer(<name> SOURCES ... [DEPS ...])
# A libFuzzer executable (RAMPART_FUZZ builds only); scripts/fuzz.sh runs it.
function(rampart_add_fuzzer name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  rampart_target_options(${name})
endfunction()

# rampart_embed(<target> <output.cpp> <namespace> <name>=<file> ...)
# Embeds files into <target> as std::string_views (cmake/embed.cmake),
# regenerated when a file changes. Files are relative to the current
# source directory.
function(rampart_embed target output namespace)
  set(assets "")
  set(files "")
  foreach(asset IN LISTS ARGN)
    string(FIND "${asset}" "=" eq)
    string(SUBSTRING "${asset}" 0 ${eq} name)
    math(EXPR from "${eq} + 1")
    string(SUBSTRING "${asset}" ${from} -1 file)
    set(file "${CMAKE_CURRENT_SOURCE_DIR}/${file}")
    list(APPEND assets "${name}=${file}")
    list(APPEND files "${file}")
  endforeach()
  set(out "${CMAKE_CURRENT_BINARY_DIR}/${output}")
  add_custom_command(OUTPUT "${out}"
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${out} -DNAMESPACE=${namespace} "-DASSETS=${assets}"
            -P ${PROJECT_SOURCE_DIR}/cmake/embed.cmake
    DEPENDS ${files} ${PROJECT_SOURCE_DIR}/cmake/embed.cmake
    COMMENT "Embedding ${output}"
    VERBATIM)
  target_sources(${target} PRIVATE "${out}")
endfunction()
