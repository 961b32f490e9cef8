# `fednas tune` (nas/tune.h): the tune block, recipes and the strategy; end to end on a tiny
# model and data subset (outputs, the dashboard's rows, best.json through `fednas train`, bad
# blocks, resume after SIGKILL).
fednas_unit_test(test_tune SOURCES unit/test_tune.c LIBS fednas_nas fednas_engine fednas_common)
add_test(NAME integration_tune
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/tune.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_tune PROPERTIES TIMEOUT 600
  ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};OPENBLAS_NUM_THREADS=1;FEDNAS_THREADS=1")
