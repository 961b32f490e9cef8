/* engine_poison.h: a test graph whose arena hands out NaN-filled memory, shared by the engine's
 * op tests: a kernel that reads a buffer it was given uninitialised (a gradient it should
 * store, not add to) then poisons its result and fails the comparison. */
#ifndef FEDNAS_TESTS_ENGINE_POISON_H
#define FEDNAS_TESTS_ENGINE_POISON_H

#include <math.h>

#include "engine/arena.h"
#include "engine/graph.h"

static inline engine_graph_t *poisoned_graph(void)
{
    engine_graph_t *g = engine_graph_create(0, 1);
    const size_t n = (size_t)4 << 20;
    float *p = engine_arena_alloc(engine_graph_arena(g), n * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    engine_graph_reset(g); /* one block: kept, and handed out again from its start */
    return g;
}

#endif
