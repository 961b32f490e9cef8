# Model compression (engine/infer.h, engine/qgemm.h): int8 GEMM kernels against the reference,
# quantization error bounds, calibrators, batch-norm folding against the engine's forward.
fednas_unit_test(test_compress_model SOURCES unit/test_compress_model.c LIBS fednas_engine)
