# Which features may be combined (common/features.h): each rule, compatible sets, the loader.
fednas_unit_test(test_features SOURCES unit/test_features.c LIBS fednas_common)
