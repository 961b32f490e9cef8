#include "engine/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct engine_arena_block {
    engine_arena_block_t *next;
    size_t size, off;
    unsigned char *mem;
};

static engine_arena_block_t *block_new(size_t size)
{
    engine_arena_block_t *b = malloc(sizeof *b);
    if (!b)
        return NULL;
    b->mem = aligned_alloc(ENGINE_ARENA_ALIGN, (size + ENGINE_ARENA_ALIGN - 1) / ENGINE_ARENA_ALIGN * ENGINE_ARENA_ALIGN);
    if (!b->mem) {
        free(b);
        return NULL;
    }
    b->size = size;
    b->off = 0;
    b->next = NULL;
    return b;
}

void engine_arena_init(engine_arena_t *a, size_t initial_bytes)
{
    memset(a, 0, sizeof *a);
    if (initial_bytes) {
        a->head = block_new(initial_bytes);
        a->reserved = a->head ? initial_bytes : 0;
    }
}

void *engine_arena_alloc(engine_arena_t *a, size_t bytes)
{
    size_t need = (bytes + ENGINE_ARENA_ALIGN - 1) / ENGINE_ARENA_ALIGN * ENGINE_ARENA_ALIGN;
    if (need == 0)
        need = ENGINE_ARENA_ALIGN;
    engine_arena_block_t *b = a->head;
    if (!b || b->off + need > b->size) {
        size_t size = b ? 2 * b->size : (size_t)1 << 20;
        if (size < need)
            size = need;
        engine_arena_block_t *nb = block_new(size);
        if (!nb)
            return NULL;
        nb->next = b;
        a->head = b = nb;
        a->reserved += size;
    }
    void *p = b->mem + b->off;
    b->off += need;
    a->used += need;
    if (a->used > a->peak)
        a->peak = a->used;
    return p;
}

void *engine_arena_calloc(engine_arena_t *a, size_t bytes)
{
    void *p = engine_arena_alloc(a, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

static void free_chain(engine_arena_block_t *b)
{
    while (b) {
        engine_arena_block_t *n = b->next;
        free(b->mem);
        free(b);
        b = n;
    }
}

void engine_arena_reset(engine_arena_t *a)
{
    if (a->head && a->head->next) {
        /* Coalesce: one block of the peak size serves every later step without growing. */
        free_chain(a->head);
        a->head = block_new(a->peak);
        a->reserved = a->head ? a->peak : 0;
    }
    if (a->head)
        a->head->off = 0;
    a->used = 0;
}

void engine_arena_free(engine_arena_t *a)
{
    free_chain(a->head);
    memset(a, 0, sizeof *a);
}
