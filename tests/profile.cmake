# The profiler (engine/profile.h) and `fednas profile`: traces that load, count the model's ops
# and add up to its FLOPs.
fednas_unit_test(test_engine_profile SOURCES unit/test_engine_profile.c LIBS fednas_engine)
add_test(NAME integration_profile_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/profile_cli.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_profile_cli PROPERTIES TIMEOUT 300 ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
