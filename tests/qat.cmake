# Quantization-aware training (engine/qat.h): fake quantization with straight-through gradients,
# weights on their grid, tracked ranges, and the int8 runtime matching the QAT forward.
fednas_unit_test(test_engine_qat SOURCES unit/test_engine_qat.c LIBS fednas_engine)
# The compress recipe's "qat" step, end to end.
add_test(NAME integration_qat COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/qat.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_qat PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77
  ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};OPENBLAS_NUM_THREADS=1;FEDNAS_THREADS=1")
# An experiment's "compress" block run by `fednas train`.
add_test(NAME integration_train_compress
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/train_compress.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_train_compress PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77
  ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};OPENBLAS_NUM_THREADS=1;FEDNAS_THREADS=1")
# The same block run by `fednas run` on the final global model (cli/compress_block.c).
add_test(NAME integration_run_compress
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/run_compress.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_run_compress PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77
  ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};OPENBLAS_NUM_THREADS=1;FEDNAS_THREADS=1")
