# nas/supernet (weight sharing) and nas/rank (Kendall's tau-b); the weight-sharing benchmark.
fednas_unit_test(test_nas_supernet SOURCES unit/test_nas_supernet.c LIBS fednas_nas fednas_engine fednas_common)
