# Secure aggregation (issue 5): Shamir sharing, the SecAgg / SecAgg+ protocol (test_secagg: whole
# rounds, refusals, tampering), its pieces (test_secagg_parts: mask uniformity, graph, parameters,
# kernel, encoding); both drive rounds through unit/secagg_sim.c.
fednas_unit_test(test_shamir SOURCES unit/test_shamir.c LIBS fednas_crypto)
fednas_unit_test(test_secagg SOURCES unit/test_secagg.c unit/secagg_sim.c LIBS fednas_crypto)
fednas_unit_test(test_secagg_parts SOURCES unit/test_secagg_parts.c unit/secagg_sim.c LIBS fednas_crypto)
fednas_bench(secagg SOURCES bench/secagg.c LIBS fednas_crypto)
# The secure-aggregation drivers (server/secagg_round, client/secagg_site) in memory, which the
# secagg integration test runs over ZeroMQ.
fednas_unit_test(test_secagg_round SOURCES unit/test_secagg_round.c LIBS fednas_server fednas_client)
# Issue 12: SecAgg+ k and t_nb from the dropout and corruption rates, their bounds, abort rates.
fednas_unit_test(test_secagg_plan SOURCES unit/test_secagg_plan.c unit/secagg_sim.c LIBS fednas_crypto)
# Issue 12: a site garbling its share ciphertexts is accused and left out; the run goes on.
add_test(NAME integration_secagg_garble
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/secagg_garble.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_secagg_garble PROPERTIES TIMEOUT 600
  ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};FAULT_CLIENT=$<TARGET_FILE:fault_client>")
