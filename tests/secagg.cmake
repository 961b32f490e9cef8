# Secure aggregation (issue 5): Shamir sharing, the SecAgg / SecAgg+ protocol, the encoding.
fednas_unit_test(test_shamir SOURCES unit/test_shamir.c LIBS fednas_crypto)
fednas_unit_test(test_secagg SOURCES unit/test_secagg.c LIBS fednas_crypto)
fednas_bench(secagg SOURCES bench/secagg.c LIBS fednas_crypto)
