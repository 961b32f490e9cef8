# Issue 12: a secure-aggregation sum is bounded by what clipping allows (server_secagg.c).
fednas_unit_test(test_sa_bound SOURCES unit/test_sa_bound.c LIBS fednas_server)
