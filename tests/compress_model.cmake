# Model compression (engine/infer.h, engine/qgemm.h): int8 GEMM kernels against the reference,
# quantization error bounds, calibrators, batch-norm folding against the engine's forward.
fednas_unit_test(test_compress_model SOURCES unit/test_compress_model.c LIBS fednas_engine)
add_test(NAME integration_compress_model
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/compress_model.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_compress_model PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77
  ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};OPENBLAS_NUM_THREADS=1;FEDNAS_THREADS=1")
# The compression benchmark (fold, int8, prune against issue 16's targets), run by `make bench`.
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/bench/compress.sh ${CMAKE_BINARY_DIR}/bench/compress
               FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ
                                WORLD_EXECUTE
               COPYONLY)
