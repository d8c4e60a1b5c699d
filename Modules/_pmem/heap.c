/* _pmem's view of a pool's heap: every allocation, listed once and
 * found by address in a table (the open pass, the undo and pool.gc()
 * build one), and the lists of the blocks that a transaction allocated
 * and freed.
 */

#include "pool.h"

alloc_item *
_PyPmem_ListAllocations(PMEMobjpool *pop, size_t *pn)
{
    size_t n = 0, allocated = 1024;
    alloc_item *items = PyMem_RawMalloc(allocated * sizeof(*items));
    if (items == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    PMEMoid oid;
    char *last = NULL;
    POBJ_FOREACH(pop, oid) {
        /* The walk goes up the heap: anything else is a cycle in corrupt
           metadata, which would never end. */
        char *block = pmemobj_direct(oid);
        if (block <= last) {
            PyMem_RawFree(items);
            PyErr_SetString(PyExc_ValueError, "the heap's allocations "
                            "do not follow one another");
            return NULL;
        }
        last = block;
        if (_PyPmem_RESERVE(items, allocated, n + 1, 1024) < 0) {
            PyMem_RawFree(items);
            PyErr_NoMemory();
            return NULL;
        }
        items[n].block = pmemobj_direct(oid);
        items[n].code = pmemobj_type_num(oid);
        n++;
    }
    *pn = n;
    return items;
}

/* An empty table for n allocations in st; -1 with MemoryError set. */
int
_PyPmem_AllocTableInit(open_state *st, size_t n)
{
    size_t capacity = 64;
    while (capacity < 2 * n) {
        capacity <<= 1;
    }
    st->entries = PyMem_RawCalloc(capacity, sizeof(alloc_entry));
    if (st->entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    st->mask = capacity - 1;
    return 0;
}

/* Push op on the stack of objects whose slots are still to visit.  0, or
   -1 when out of memory. */
int
_PyPmem_MarkPush(mark_state *ms, PyObject *op)
{
    if (_PyPmem_RESERVE(ms->stack, ms->allocated, ms->depth + 1, 1024) < 0) {
        return -1;
    }
    ms->stack[ms->depth++] = op;
    return 0;
}

/* --- the transaction's blocks ------------------------------------------- */

/* Append block to a list of the transaction's blocks.  0, or -1 when
   out of memory. */
static int
block_list_append(char ***plist, size_t *pn, size_t *pallocated,
                  char *block)
{
    if (_PyPmem_Reserve(plist, pallocated, *pn + 1, sizeof(char *), 64) < 0) {
        return -1;
    }
    (*plist)[(*pn)++] = block;
    return 0;
}

/* Record a block that the transaction frees: it is freed when the
   transaction commits (the frees are part of it), and comes back if the
   transaction, or the nested block that freed it, is undone.  0, or -1
   when out of memory. */
int
_PyPmem_RecordFree(PoolObject *p, char *block)
{
    return block_list_append(&p->txfreed, &p->ntxfreed,
                             &p->txfreed_allocated, block);
}

/* Record a block that the transaction allocated: what is written into it
   without being logged (a new object is filled in) is flushed by the
   commit. */
int
_PyPmem_RecordMade(PoolObject *p, char *block)
{
    return block_list_append(&p->txmade, &p->ntxmade,
                             &p->txmade_allocated, block);
}
