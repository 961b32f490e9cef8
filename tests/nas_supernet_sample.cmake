# nas/supernet_sample.c: the supernet's uniform and fair path draws.
fednas_unit_test(test_nas_supernet_sample SOURCES unit/test_nas_supernet_sample.c
                 LIBS fednas_nas fednas_engine fednas_common)
