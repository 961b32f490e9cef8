# fednas under mpirun (nas/mpi.h): the search and the federated run's integration tests, which
# skip (77) when fednas is built without MPI, and the candidates-per-hour benchmark that
# `make bench` runs (build/bench/nas_mpi).
if(FEDNAS_HAVE_MPI)
  set(FEDNAS_TEST_MPIEXEC ${MPIEXEC_EXECUTABLE})
else()
  set(FEDNAS_TEST_MPIEXEC "")
endif()
foreach(name nas_mpi run_mpi)
  add_test(NAME integration_${name}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/${name}.sh $<TARGET_FILE:fednas>)
  set_tests_properties(integration_${name} PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
    ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};FEDNAS_MPIEXEC=${FEDNAS_TEST_MPIEXEC}")
endforeach()
# Weight sharing under mpirun: the supernet trained data-parallel (nas/supernet_dp.h). The script
# runs mpi_supernet_dp (K ranks against the one-process oracle) and a weight-sharing search.
add_executable(mpi_supernet_dp integration/mpi_supernet_dp.c)
target_link_libraries(mpi_supernet_dp PRIVATE fednas_nas fednas_engine fednas_common)
add_test(NAME integration_nas_mpi_ws
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/nas_mpi_ws.sh $<TARGET_FILE:fednas>)
set_tests_properties(integration_nas_mpi_ws PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
  ENVIRONMENT "FEDNAS_SOURCE_DIR=${CMAKE_SOURCE_DIR};FEDNAS_MPIEXEC=${FEDNAS_TEST_MPIEXEC};FEDNAS_MPI_SUPERNET_DP=$<TARGET_FILE:mpi_supernet_dp>")
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/bench/nas_mpi.sh ${CMAKE_BINARY_DIR}/bench/nas_mpi
               FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ
                                WORLD_EXECUTE
               COPYONLY)
