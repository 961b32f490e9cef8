# web/: the dashboard over real HTTPS on 127.0.0.1 (an OpenSSL client in the test, civetweb
# through the libssl shim): certificate, login, CSRF, rate limit, REST API (also read while a
# writer thread commits rounds), WebSocket events, admin actions (launching the real fednas
# binary with a bad config; a viewer's resume refused), assets, civetweb's thread stacks.
fednas_unit_test(test_web_api SOURCES unit/test_web_api.c LIBS fednas_web OpenSSL::SSL)
target_compile_definitions(test_web_api PRIVATE FEDNAS_BIN="$<TARGET_FILE:fednas>")
add_dependencies(test_web_api fednas)

# Browser test: playwright-core (tests/browser/package.json, installed by scripts/setup.sh with
# `npm ci`, never at test time) drives Debian's /usr/bin/chromium against real fednas
# processes. Screenshots of every page land in build/test-output/browser/. Exits 77 (skipped)
# when node_modules or chromium are missing, with the command that installs them.
find_program(NODE_EXECUTABLE node)
if(NODE_EXECUTABLE)
  add_test(NAME browser_dashboard
           COMMAND ${NODE_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/browser/dashboard.test.mjs
                   $<TARGET_FILE:fednas> ${CMAKE_BINARY_DIR}/test-output/browser)
  set_tests_properties(browser_dashboard PROPERTIES TIMEOUT 400 SKIP_RETURN_CODE 77)
endif()

# The dashboard benchmark (wrk over HTTPS against `fednas dashboard`), run by `make bench`.
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/bench/web.sh ${CMAKE_BINARY_DIR}/bench/web
               FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ
                                WORLD_EXECUTE
               COPYONLY)
