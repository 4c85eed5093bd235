# Shared build settings for medgrid targets.

# Flags for code we own. Third-party headers come in as SYSTEM includes so
# their warnings do not fail the build.
function(medgrid_target_options target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  # GCC 12 reports false stringop-overflow/-overread warnings inside
  # libstdc++'s std::string at -O3 (GCC bug 105651).
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE -Wno-stringop-overflow -Wno-stringop-overread -Wno-restrict)
  endif()
  if(MEDGRID_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(MEDGRID_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()

# One precompiled header for Beast, Boost.JSON and the other heavy headers,
# built once and reused by every target that opts in.
add_library(medgrid_pch STATIC ${CMAKE_CURRENT_LIST_DIR}/pch.cc)
target_link_libraries(medgrid_pch PUBLIC Boost::json Boost::url absl::status absl::statusor)
target_compile_definitions(medgrid_pch PUBLIC BOOST_BEAST_USE_STD_STRING_VIEW)
target_precompile_headers(medgrid_pch PUBLIC ${CMAKE_CURRENT_LIST_DIR}/pch.h)
medgrid_target_options(medgrid_pch)

function(medgrid_use_pch target)
  target_precompile_headers(${target} REUSE_FROM medgrid_pch)
  target_link_libraries(${target} PRIVATE medgrid_pch)
endfunction()

# medgrid_library(name SOURCES ... DEPS ...): libs/<name> with public headers
# under include/medgrid/<name>/.
function(medgrid_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(medgrid_${name} STATIC ${ARG_SOURCES})
  add_library(medgrid::${name} ALIAS medgrid_${name})
  target_include_directories(medgrid_${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
                                             PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(medgrid_${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  medgrid_target_options(medgrid_${name})
  medgrid_use_pch(medgrid_${name})
endfunction()
