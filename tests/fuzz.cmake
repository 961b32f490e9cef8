# The fuzz targets' committed seeds and regression inputs (tests/fuzz/corpus), replayed through
# each target's LLVMFuzzerTestOneInput by a plain driver (tests/fuzz/replay.c): no clang or
# libFuzzer needed, so every `make test` checks them. Fuzzing itself is `make fuzz`.
foreach(t wire config compress safetensors idx secagg http_params http_request)
  set(lib fednas_common)
  if(t STREQUAL "safetensors" OR t STREQUAL "idx")
    set(lib fednas_engine)
  elseif(t STREQUAL "secagg")
    set(lib fednas_crypto)
  elseif(t MATCHES "^http_")
    set(lib fednas_web)
  endif()
  add_executable(replay_fuzz_${t} fuzz/fuzz_${t}.c fuzz/replay.c)
  target_link_libraries(replay_fuzz_${t} PRIVATE ${lib})
  add_test(NAME fuzz_replay_${t} COMMAND replay_fuzz_${t} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/fuzz_${t})
  set_tests_properties(fuzz_replay_${t} PROPERTIES TIMEOUT 120)
endforeach()
