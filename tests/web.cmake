# web/: the dashboard over real HTTPS on 127.0.0.1 (an OpenSSL client in the tests, civetweb
# through the libssl shim), one program per concern sharing unit/web_test.c (the client and the
# served fixture): the REST API and assets (test_web_api), live updates, WebSocket events and
# reads while a writer commits rounds (test_web_live), login, CSRF, rate limit and certificates
# (test_web_auth), options, ports and civetweb's thread stacks (test_web_server), admin actions
# launching the real fednas binary with a bad config and a stand-in for launch/stop/resume
# (test_web_actions).
foreach(t test_web_api test_web_live test_web_auth test_web_server test_web_actions)
  fednas_unit_test(${t} SOURCES unit/${t}.c unit/web_test.c LIBS fednas_web OpenSSL::SSL)
  target_compile_definitions(${t} PRIVATE FEDNAS_BIN="$<TARGET_FILE:fednas>")
  add_dependencies(${t} fednas)
endforeach()

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
