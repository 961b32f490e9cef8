# Update compression (common/compress.h): 8-bit quantization, top-k, and their decoders.
fednas_unit_test(test_compress SOURCES unit/test_compress.c LIBS fednas_common)
