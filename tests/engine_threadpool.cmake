# engine/threadpool: the workers behind every parallel CPU kernel, and the rule that OpenBLAS runs
# single-threaded inside their loops.
fednas_unit_test(test_engine_threadpool SOURCES unit/test_engine_threadpool.c LIBS fednas_engine)
