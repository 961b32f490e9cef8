# Private files: the run store, its WAL and fn_write_file's temporary files (issue 12).
fednas_unit_test(test_file_modes SOURCES unit/test_file_modes.c LIBS fednas_common)
