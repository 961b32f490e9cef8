# Differential privacy: the accountant, the noise samplers, clipping, and `fednas privacy`.
fednas_unit_test(test_dp_accountant SOURCES unit/test_dp_accountant.c LIBS fednas_crypto)
fednas_unit_test(test_dp_noise SOURCES unit/test_dp_noise.c LIBS fednas_crypto)
fednas_unit_test(test_dp_clip SOURCES unit/test_dp_clip.c LIBS fednas_crypto)
add_test(NAME integration_privacy_cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/privacy_cli.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_privacy_cli PROPERTIES TIMEOUT 300
  ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
# Distributed discrete Gaussian noise with secure aggregation (DDGauss): the plan, the summed
# noise, conditional rounding, exact decoding; then whole rounds in memory through the drivers.
fednas_unit_test(test_dp_ddp SOURCES unit/test_dp_ddp.c LIBS fednas_crypto)
fednas_unit_test(test_ddp_round SOURCES unit/test_ddp_round.c LIBS fednas_server fednas_client)
