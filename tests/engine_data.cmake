# engine/ data path: safetensors model files, batch augmentation, class-balanced sampling.
fednas_unit_test(test_engine_safetensors SOURCES unit/test_engine_safetensors.c LIBS fednas_engine)
fednas_unit_test(test_engine_augment SOURCES unit/test_engine_augment.c LIBS fednas_engine)
fednas_unit_test(test_engine_sampler SOURCES unit/test_engine_sampler.c LIBS fednas_engine)
# Label mixing end to end: the soft-target loss (finite differences), soft labels in the batcher,
# the train block's "augment" object, training with MixUp and CutMix.
fednas_unit_test(test_engine_softloss SOURCES unit/test_engine_softloss.c LIBS fednas_engine)
fednas_unit_test(test_engine_mixing SOURCES unit/test_engine_mixing.c LIBS fednas_engine)
