# Differential privacy with secure aggregation (distributed discrete Gaussian noise) end to end;
# its unit tests are in tests/dp.cmake.
add_test(NAME integration_ddp
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/ddp.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_ddp PROPERTIES TIMEOUT 300
  ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
