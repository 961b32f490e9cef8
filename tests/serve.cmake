# `fednas serve` (cli/cmd_serve.c, cli/infer.c): HTTPS predictions with dynamic batching.
add_test(NAME integration_serve COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/serve.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_serve PROPERTIES TIMEOUT 300 ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")

# The serving benchmark (wrk: batch-1 against dynamic batching), run by `make bench`
# (tests/bench/run.sh runs every executable in build/bench; the wrk script is not one).
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/bench/serve.sh ${CMAKE_BINARY_DIR}/bench/serve
               FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ
                                WORLD_EXECUTE
               COPYONLY)
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/bench/serve.lua ${CMAKE_BINARY_DIR}/bench/serve.lua COPYONLY)
