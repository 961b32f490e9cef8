# The NAS controller: evaluation, workers, the store's NAS tables, `fednas nas` end to end.
fednas_unit_test(test_nas_ctl SOURCES unit/test_nas_ctl.c LIBS fednas_nas fednas_engine fednas_common)
foreach(name nas_resume nas_retry nas_cli)
  add_test(NAME integration_${name}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/${name}.sh $<TARGET_FILE:fednas>)
  set_tests_properties(integration_${name} PROPERTIES TIMEOUT 300
    ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endforeach()
