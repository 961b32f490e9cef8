# nas/supernet (weight sharing) and nas/rank (Kendall's tau-b); the weight-sharing benchmark.
fednas_unit_test(test_nas_supernet SOURCES unit/test_nas_supernet.c LIBS fednas_nas fednas_engine fednas_common)
# The supernet against its oracle: one fixed path trains like standalone training.
fednas_unit_test(test_nas_supernet_path SOURCES unit/test_nas_supernet_path.c LIBS fednas_nas fednas_engine fednas_common)
# Weight sharing against standalone evaluation: candidates per CPU-hour and Kendall tau-b
# (`make bench`; sizes from NAS_BENCH_ARGS there, see tests/bench/run.sh).
fednas_bench(nas SOURCES bench/nas.c LIBS fednas_nas fednas_engine fednas_common)
add_test(NAME integration_nas_ws COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/nas_ws.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_nas_ws PROPERTIES TIMEOUT 300 ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
# nas/fedsuper: the federated search's supernet (per-parameter means, checkpoint block).
fednas_unit_test(test_nas_fedsuper SOURCES unit/test_nas_fedsuper.c LIBS fednas_nas fednas_engine fednas_common)
# A federated search on simulated sites (server/server_nas.c): candidates, scores, result, refusals.
add_test(NAME integration_fed_nas COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/fed_nas.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_fed_nas PROPERTIES TIMEOUT 300 ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
add_test(NAME integration_fed_nas_resume
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/fed_nas_resume.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_fed_nas_resume PROPERTIES TIMEOUT 300 ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
# Secure aggregation in a federated search: the site's scatter (client/scatter.c) and the server's
# per-parameter division of the sum (nas/fedsuper.c).
fednas_unit_test(test_fed_nas_scatter SOURCES unit/test_fed_nas_scatter.c
                 LIBS fednas_client fednas_nas fednas_engine fednas_common)
add_test(NAME integration_fed_nas_dp_resume
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/fed_nas_dp_resume.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_fed_nas_dp_resume PROPERTIES TIMEOUT 300 ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
# nas/supernet_dp: the data-parallel step's flat buffer (layout, unpack), one shard against
# nas_supernet_train, the shard checks (no MPI: tests/integration/nas_mpi_ws.sh runs the ranks).
fednas_unit_test(test_nas_supernet_dp SOURCES unit/test_nas_supernet_dp.c LIBS fednas_nas fednas_engine fednas_common)
