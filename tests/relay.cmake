# The relay tier (server/relay.h): its aggregation arithmetic and refusals as a unit test, and
# multi-process runs (a server, two relays, their clients; a crash behind a relay; a refused
# secure-aggregation experiment; a federated search through relays). Partner sites with their own CSV data (csv_site.sh).
fednas_unit_test(test_relay SOURCES unit/test_relay.c LIBS fednas_relay)
fednas_unit_test(test_site_data SOURCES unit/test_site_data.c LIBS fednas_client)
foreach(name relay relay_fed_nas csv_site)
  add_test(NAME integration_${name}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/${name}.sh $<TARGET_FILE:fednas>)
  set_tests_properties(integration_${name} PROPERTIES TIMEOUT 600
    ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};FAULT_CLIENT=$<TARGET_FILE:fault_client>")
endforeach()
# A site answers each round once (a train message re-sent after a reconnect is not trained twice).
fednas_unit_test(test_trainer_round SOURCES unit/test_trainer_round.c LIBS fednas_client)
