# Multi-process tests: real `fednas` processes talking over 127.0.0.1.
foreach(name cli_errors federation quickstart)
  add_test(NAME integration_${name}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/${name}.sh $<TARGET_FILE:fednas>)
  set_tests_properties(integration_${name} PROPERTIES TIMEOUT 600
    ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endforeach()
