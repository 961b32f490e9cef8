# Multi-process tests: real `fednas` processes talking over 127.0.0.1.
add_executable(fault_client integration/fault_client.c)
target_link_libraries(fault_client PRIVATE fednas_client fednas_crypto fednas_common)
foreach(name cli_errors federation quickstart faults resume dp secagg compression batchnorm dp_sampling
             store_deleted run_links)
  add_test(NAME integration_${name}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/${name}.sh $<TARGET_FILE:fednas>)
  set_tests_properties(integration_${name} PROPERTIES TIMEOUT 600
    ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};FAULT_CLIENT=$<TARGET_FILE:fault_client>")
endforeach()

# A new user's first minutes in a browser: `fednas run` at a terminal (script(1)), as `make demo`
# runs it; the last link it printed must open the finished run's page with coloured charts (see
# tests/browser/demo_link.test.mjs). Beside browser_dashboard (tests/web.cmake): same npm set-up,
# same skip status when node_modules or chromium are missing.
find_program(NODE_EXECUTABLE node)
if(NODE_EXECUTABLE)
  add_test(NAME browser_demo_link
           COMMAND ${NODE_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/browser/demo_link.test.mjs
                   $<TARGET_FILE:fednas> ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}/test-output/browser)
  set_tests_properties(browser_demo_link PROPERTIES TIMEOUT 400 SKIP_RETURN_CODE 77)
endif()
