# The controller's tell order (nas/controller.c): a virtual clock of epochs, the same whatever
# order the workers finish in, the ask order for equal budgets, short evaluations told before a
# long one asked earlier, replayed from the store on resume.
fednas_unit_test(test_nas_tell_order SOURCES unit/test_nas_tell_order.c LIBS fednas_nas fednas_engine fednas_common)
# Resume (nas/controller.c): a search stopped after any number of finished evaluations and resumed
# ends with the uninterrupted search's rows, tells and metrics, and evaluates nothing finished twice.
fednas_unit_test(test_nas_resume SOURCES unit/test_nas_resume.c LIBS fednas_nas fednas_engine fednas_common)
