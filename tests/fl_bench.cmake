# Federation benchmarks (`make bench`).
fednas_bench(fl_rounds SOURCES bench/fl_rounds.c LIBS fednas_server)
