# Quantization-aware training (engine/qat.h): fake quantization with straight-through gradients,
# weights on their grid, tracked ranges, and the int8 runtime matching the QAT forward.
fednas_unit_test(test_engine_qat SOURCES unit/test_engine_qat.c LIBS fednas_engine)
