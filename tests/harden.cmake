# Issue 12, the last findings: a SIGKILLed server's run reads "interrupted" everywhere
# (interrupted.sh); one model-poisoning site under FedAvg and the robust strategies (poison.sh,
# the small version of tests/bench/poison.sh).
foreach(name interrupted fed_eval_resume)
  add_test(NAME integration_${name}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/${name}.sh $<TARGET_FILE:fednas>)
  set_tests_properties(integration_${name} PROPERTIES TIMEOUT 600
    ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};HOSTILE_CLIENT=$<TARGET_FILE:hostile_client>")
endforeach()
