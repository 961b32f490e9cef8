# The controller's tell order (nas/controller.c): a virtual clock of epochs, the same whatever
# order the workers finish in, the ask order for equal budgets, short evaluations told before a
# long one asked earlier, replayed from the store on resume.
fednas_unit_test(test_nas_tell_order SOURCES unit/test_nas_tell_order.c LIBS fednas_nas fednas_engine fednas_common)
