# The dashboard's NAS page: its REST routes (sort/filter validation, CSV, Pareto fronts and
# hypervolume against hand-computed values, lineage) and candidate events (test_web_nas); the
# page itself in Chromium against a real `fednas nas` search (browser_nas, skipped with 77 like
# browser_dashboard when chromium or playwright-core is missing).
fednas_unit_test(test_web_nas SOURCES unit/test_web_nas.c unit/web_test.c LIBS fednas_web OpenSSL::SSL)
target_compile_definitions(test_web_nas PRIVATE FEDNAS_BIN="$<TARGET_FILE:fednas>")
add_dependencies(test_web_nas fednas)
find_program(NODE_EXECUTABLE node)
if(NODE_EXECUTABLE)
  add_test(NAME browser_nas
           COMMAND ${NODE_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/browser/nas.test.mjs
                   $<TARGET_FILE:fednas> ${CMAKE_BINARY_DIR}/test-output/browser-nas)
  set_tests_properties(browser_nas PROPERTIES TIMEOUT 400 SKIP_RETURN_CODE 77)
endif()
