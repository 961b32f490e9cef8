# engine/: data sets and IDX files, partitioning, the model (gradient checks, training).
fednas_unit_test(test_engine_idx SOURCES unit/test_engine_idx.c LIBS fednas_engine)
fednas_unit_test(test_engine_partition SOURCES unit/test_engine_partition.c LIBS fednas_engine)
fednas_unit_test(test_engine_model SOURCES unit/test_engine_model.c LIBS fednas_engine)
