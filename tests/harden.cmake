# Issue 12, the last findings: a SIGKILLed server's run reads "interrupted" everywhere
# (interrupted.sh); a round committed without its federated evaluation gets it on resume
# (fed_eval_resume.sh); a refused peer in a loop does not flood the log (refusal_log.sh); one
# model-poisoning site under FedAvg and the robust strategies
# (poison.sh, the small version of tests/bench/poison.sh).
foreach(name interrupted fed_eval_resume poison refusal_log)
  add_test(NAME integration_${name}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/${name}.sh $<TARGET_FILE:fednas>)
  set_tests_properties(integration_${name} PROPERTIES TIMEOUT 600
    ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};HOSTILE_CLIENT=$<TARGET_FILE:hostile_client>")
endforeach()

# The poisoning benchmark (all four strategies, two attacks at two strengths, the clean runs and
# the distance between final models), run by `make bench` from build/bench with the binaries
# beside it.
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/bench/poison.sh ${CMAKE_BINARY_DIR}/bench/poison
               FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ
                                WORLD_EXECUTE
               COPYONLY)
