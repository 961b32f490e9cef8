# cli/search_cli.c, what `fednas nas` and `fednas tune` share: the experiment's name, seed and
# "data" block (errors with file, line, column and key path), the run in the store (created,
# resumed only by its own command, ended), the RUN / EXPERIMENT arguments.
fednas_unit_test(test_search_cli SOURCES unit/test_search_cli.c ${CMAKE_SOURCE_DIR}/cli/search_cli.c
                 LIBS fednas_nas fednas_engine fednas_common)
