# Issue 12: no peer may block the round thread. A site floods "hello" without reading, against
# the server and against a relay, while honest sites must finish the run on time.
add_executable(flood_client integration/flood_client.c)
target_link_libraries(flood_client PRIVATE fednas_crypto fednas_common)
add_test(NAME integration_hello_flood
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/hello_flood.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_hello_flood PROPERTIES TIMEOUT 600
  ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};FLOOD_CLIENT=$<TARGET_FILE:flood_client>")
