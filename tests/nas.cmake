# nas/: search-space configs, genomes (canonical hashes, round trips, mutations that build),
# Pareto sorting and hypervolume, the strategies; and the engine's "cell" layer they decode to.
fednas_unit_test(test_engine_cell SOURCES unit/test_engine_cell.c LIBS fednas_engine)
fednas_unit_test(test_nas_genome SOURCES unit/test_nas_genome.c LIBS fednas_nas)
fednas_unit_test(test_nas_pareto SOURCES unit/test_nas_pareto.c LIBS fednas_nas)
fednas_unit_test(test_nas_strategy SOURCES unit/test_nas_strategy.c LIBS fednas_nas)
fednas_unit_test(test_nas_config SOURCES unit/test_nas_config.c LIBS fednas_nas)
