# Issue 12, sites that attack the server (tests/integration/hostile_client.c). No peer may block
# the round thread: a site floods "hello" without reading, against the server and a relay, while
# honest sites must finish the run on time. A site's claimed sample count may not outweigh what
# it registered with.
add_executable(hostile_client integration/hostile_client.c)
target_link_libraries(hostile_client PRIVATE fednas_crypto fednas_common)
foreach(name hello_flood overclaim hostile)
  add_test(NAME integration_${name}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/${name}.sh $<TARGET_FILE:fednas>)
  set_tests_properties(integration_${name} PROPERTIES TIMEOUT 600
    ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};HOSTILE_CLIENT=$<TARGET_FILE:hostile_client>")
endforeach()
