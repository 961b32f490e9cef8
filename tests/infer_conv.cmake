# The inference runtime's fp32 kernels (engine/infer_conv.c direct convolution, the small-batch
# linear kernel) against the engine's forward on random shapes, every conv path (issue 16, serving).
fednas_unit_test(test_infer_conv SOURCES unit/test_infer_conv.c LIBS fednas_engine)
# INT8 on AMX tiles: the product against a direct sum (plain and with a conv's block offsets),
# and quantized models giving the same logits bit for bit on AMX, VNNI and the reference.
fednas_unit_test(test_infer_qconv SOURCES unit/test_infer_qconv.c LIBS fednas_engine)
# Quantized model files read back (engine_infer_load_int8): same int8 logits bit for bit, bad
# files refused naming the tensor.
fednas_unit_test(test_infer_int8_file SOURCES unit/test_infer_int8_file.c LIBS fednas_engine)
