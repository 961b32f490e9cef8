# Knowledge distillation (engine_distill_loss): forward and gradient against finite differences
# of a double-precision reference; identities with the cross-entropy and the KL op; errors.
fednas_unit_test(test_engine_distill SOURCES unit/test_engine_distill.c LIBS fednas_engine)
