# engine/: data sets and IDX files, partitioning, the model (gradient checks, training), the
# ops (finite-difference gradients), optimizers and schedules, the dynamic graph and the data pipeline.
fednas_unit_test(test_engine_idx SOURCES unit/test_engine_idx.c LIBS fednas_engine)
fednas_unit_test(test_engine_partition SOURCES unit/test_engine_partition.c LIBS fednas_engine)
fednas_unit_test(test_engine_model SOURCES unit/test_engine_model.c LIBS fednas_engine)
fednas_unit_test(test_engine_ops SOURCES unit/test_engine_ops.c LIBS fednas_engine)
fednas_unit_test(test_engine_kernels SOURCES unit/test_engine_kernels.c LIBS fednas_engine)
fednas_unit_test(test_engine_optim SOURCES unit/test_engine_optim.c LIBS fednas_engine)
# CPU training throughput against OpenBLAS sgemm (run by hand or `make bench`, never by ctest).
fednas_bench(engine_cpu SOURCES bench/engine_cpu.c LIBS fednas_engine)
fednas_unit_test(test_engine_graph SOURCES unit/test_engine_graph.c LIBS fednas_engine)
fednas_unit_test(test_engine_conv_paths SOURCES unit/test_engine_conv_paths.c LIBS fednas_engine)
fednas_unit_test(test_engine_dense_small SOURCES unit/test_engine_dense_small.c LIBS fednas_engine)
fednas_unit_test(test_engine_pool_paths SOURCES unit/test_engine_pool_paths.c LIBS fednas_engine)
fednas_unit_test(test_engine_conv_glue SOURCES unit/test_engine_conv_glue.c LIBS fednas_engine)
fednas_unit_test(test_engine_conv_pw SOURCES unit/test_engine_conv_pw.c LIBS fednas_engine)
