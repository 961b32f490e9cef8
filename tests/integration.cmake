# Multi-process tests: real `fednas` processes talking over 127.0.0.1.
add_executable(fault_client integration/fault_client.c)
target_link_libraries(fault_client PRIVATE fednas_client fednas_crypto fednas_common)
foreach(name cli_errors federation quickstart faults resume dp secagg compression batchnorm dp_sampling
             store_deleted run_links)
  add_test(NAME integration_${name}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/${name}.sh $<TARGET_FILE:fednas>)
  set_tests_properties(integration_${name} PROPERTIES TIMEOUT 600
    ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};FAULT_CLIENT=$<TARGET_FILE:fault_client>")
endforeach()
