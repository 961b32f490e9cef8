# The inference runtime's fp32 kernels (engine/infer_conv.c direct convolution, the small-batch
# linear kernel) against the engine's forward on random shapes, every conv path (issue 16, serving).
fednas_unit_test(test_infer_conv SOURCES unit/test_infer_conv.c LIBS fednas_engine)
