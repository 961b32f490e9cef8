# Knowledge distillation (engine_distill_loss): forward and gradient against finite differences
# of a double-precision reference; identities with the cross-entropy and the KL op; errors.
fednas_unit_test(test_engine_distill SOURCES unit/test_engine_distill.c LIBS fednas_engine)
# `fednas train --teacher` and the compress recipe's "distill" step, end to end.
add_test(NAME integration_distill
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/distill.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_distill PROPERTIES TIMEOUT 600
  ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};OPENBLAS_NUM_THREADS=1;FEDNAS_THREADS=1")
