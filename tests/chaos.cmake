# Chaos: the server SIGKILLed at 20 moments drawn from a printed seed and resumed each time
# (CHAOS_SEED=N replays a failure, CHAOS_KILLS=N raises the count); the run store's disk filling up
# or turning read-only (root and unshare -m, skipped with 77 otherwise).
foreach(name chaos chaos_store)
  add_test(NAME integration_${name}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/${name}.sh $<TARGET_FILE:fednas>)
  set_tests_properties(integration_${name} PROPERTIES TIMEOUT 900 SKIP_RETURN_CODE 77
    ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endforeach()
