# Issue 12, load: many sites, each with its own CURVE connection, on one server
# (tests/integration/sites_many.sh; tests/bench/sites1000.sh and soak.sh are run by hand).
add_test(NAME integration_sites_many
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/sites_many.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_sites_many PROPERTIES TIMEOUT 300
  ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
