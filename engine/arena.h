/* arena: a bump allocator for one training step's tensors (as ggml_context), reset after the
 * step. It grows by chaining blocks; on reset the chain is replaced by one block as large as
 * the peak, so from the second step on a step costs no malloc at all. */
#ifndef FEDNAS_ENGINE_ARENA_H
#define FEDNAS_ENGINE_ARENA_H

#include <stddef.h>

typedef struct engine_arena_block engine_arena_block_t;
typedef struct engine_arena {
    engine_arena_block_t *head; /* current block (newest first) */
    size_t used;                /* bytes handed out since the last reset */
    size_t peak;                /* high-water mark of used over the arena's life */
    size_t reserved;            /* bytes held in blocks now */
} engine_arena_t;

#define ENGINE_ARENA_ALIGN 64

void engine_arena_init(engine_arena_t *a, size_t initial_bytes);
/* 64-byte aligned, uninitialised; NULL only when memory is exhausted. */
void *engine_arena_alloc(engine_arena_t *a, size_t bytes);
void *engine_arena_calloc(engine_arena_t *a, size_t bytes);
void engine_arena_reset(engine_arena_t *a);
void engine_arena_free(engine_arena_t *a);

#endif
