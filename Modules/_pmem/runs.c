/* runs.c: a pool's small objects, in runs of slots of one size.
 *
 * An object of up to RUN_MAX_SLOT bytes (its pre-header included) is not
 * an allocation of libpmemobj's: it is a slot of a run, a block of type
 * POOL_RUN that fills one chunk of the heap (256 KiB).  A run begins
 * with its header (struct pool_run): a magic number, the size of
 * its slots, their number and the offset of the first; then one 16-bit
 * word per slot, the type code of the object in it plus one, or 0 when
 * the slot is free; then the slots, the first on a cache line.
 *
 * Why: libpmemobj's allocator writes its heap's metadata durably at each
 * allocation and each free (a redo log, about four persist points, or a
 * publication with the commit), and puts a 16-byte header before each
 * block.  A slot costs two bytes of metadata, and allocating or freeing
 * one persists nothing of its own:
 *
 *   - a slot allocated in a transaction gets its code with a plain store;
 *     the commit flushes the code with the object (log.c,
 *     flush_changes()), before the commit point, which makes both durable
 *     with the object's first reference from the pool.  Until then
 *     nothing in the pool reaches the slot: a crash leaves it unreachable,
 *     with or without its code, and the next open frees it;
 *   - outside a transaction, the slot is zeroed and persisted with its
 *     code (an atomic allocation's contract: nothing reaches it yet);
 *   - a slot freed gets code 0 with a plain store, after the commit point
 *     of the transaction that freed it.  A crash that loses the store
 *     leaves an allocation that nothing reaches: the next open frees it.
 *
 * So the codes say "maybe allocated": the open pass lists every slot that
 * has a code (_PyPmem_ListRun()) and frees what the root does not reach,
 * as it frees libpmemobj's blocks that a crash left behind.  Which slots
 * are free is kept in DRAM (struct run_state), rebuilt from the codes at
 * each open (_PyPmem_RunsOpen()).  A run is found from an address by the
 * chunk it lies in (_PyPmem_RunOf()).  A run is made atomically, its
 * header and codes persisted, by pmemobj_xalloc(); an empty run is given
 * back to libpmemobj by pool.gc(), by the open, and when an allocation
 * does not fit (_PyPmem_RunsRelease()).
 *
 * Objects larger than RUN_MAX_SLOT, type codes of 0xFFFF and more, and
 * pools whose heap this build does not know stay libpmemobj's blocks.
 */

#include "pool.h"

int _PyPmem_UseRuns = 1;

#define RUN_MAGIC 0x6e755279u     /* "yRun" */
#define RUN_MAX_SLOT (RUN_NCLASSES * 16)
/* A run is the one unit of a libpmemobj run of the pool's class of runs
   (heap.c: units of a chunk less 64 bytes, one a run), less the unit's
   compact header: libpmemobj's run header and bitmap take the chunk's
   first 64 bytes, the block's header 16 more.  Zones are whole chunks
   apart: a run is found by its chunk's index from zone 0's first. */
#define RUN_BLOCK_OFFSET 80
#define RUN_BLOCK_SIZE (RUN_CHUNK - RUN_BLOCK_OFFSET)
_Static_assert(_PyPmem_ZONE_SIZE % RUN_CHUNK == 0, "chunks in the zones");

struct pool_run {
    uint32_t magic;
    uint32_t slot_size;
    uint32_t nslots;
    uint32_t first;               /* offset of slot 0 from the header */
    uint16_t codes[];
};

/* The number of slots of slot_size bytes in a run, and the offset of the
   first, on a cache line (a run starts RUN_BLOCK_OFFSET bytes after
   its chunk). */
static uint32_t
run_layout(uint32_t slot_size, uint32_t *pfirst)
{
    uint64_t n = (RUN_BLOCK_SIZE - sizeof(struct pool_run)) / (slot_size + 2);
    for (;; n--) {
        uint64_t end = RUN_BLOCK_OFFSET + sizeof(struct pool_run) + 2 * n;
        uint64_t first = ((end + 63) & ~(uint64_t)63) - RUN_BLOCK_OFFSET;
        if (first + n * slot_size <= RUN_BLOCK_SIZE) {
            *pfirst = (uint32_t)first;
            return (uint32_t)n;
        }
    }
}

/* Put r among the runs of its size that have a free slot. */
static void
list_partial(PoolObject *p, run_state *r)
{
    run_state **head = &p->runs.partial[r->slot_size / 16];
    r->next = *head;
    *head = r;
}

/* The run at block (a POOL_RUN allocation of p): its state made from its
   header and codes, entered by its units.  0, or -1 with an exception
   set (PoolError: a header that this build does not know). */
static int
register_run(PoolObject *p, char *block)
{
    const struct pool_run *h = (const struct pool_run *)block;
    size_t off = (size_t)(block - p->runs.chunks);
    uint32_t first;
    if (block < p->runs.chunks || off % RUN_CHUNK != RUN_BLOCK_OFFSET
        || off / RUN_CHUNK >= p->runs.nchunks
        || pmemobj_alloc_usable_size(pmemobj_oid(block)) < RUN_BLOCK_SIZE
        || h->magic != RUN_MAGIC || h->slot_size % 16 != 0
        || h->slot_size == 0 || h->slot_size > RUN_MAX_SLOT
        || h->nslots != run_layout(h->slot_size, &first)
        || h->first != first)
    {
        PyErr_Format(p->error, "pool %R is corrupt: the run of small "
                     "objects at offset %zu has a bad header", p->path,
                     (size_t)(block - (char *)p->pop));
        return -1;
    }
    run_state *r = _PyPmem_RunOf(p, block);
    if (r != NULL) {
        return 0;                 /* registered when made */
    }
    size_t nwords = (h->nslots + 63) / 64;
    r = PyMem_RawCalloc(1, sizeof(*r) + nwords * sizeof(uint64_t));
    if (r == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    r->slots = block + h->first;
    r->codes = (uint16_t *)h->codes;
    r->slot_size = h->slot_size;
    r->nslots = h->nslots;
    for (uint32_t i = 0; i < h->nslots; i++) {
        if (h->codes[i] == 0) {
            r->free[i / 64] |= (uint64_t)1 << (i % 64);
            r->nfree++;
        }
    }
    p->runs.by_chunk[off / RUN_CHUNK] = r;
    if (r->nfree > 0) {
        list_partial(p, r);
    }
    return 0;
}

static int
visit_run(char *block, uint64_t type_num, void *arg)
{
    if (type_num == POOL_RUN && register_run((PoolObject *)arg, block) < 0) {
        return 2;
    }
    return 0;
}

int
_PyPmem_RunsOpen(PoolObject *p)
{
    const char *chunks = _PyPmem_HeapChunks(p->pop, p->size);
    if (chunks == NULL) {
        return 0;                 /* a heap this build does not know:
                                     libpmemobj allocates everything */
    }
    size_t nchunks = (size_t)((char *)p->pop + p->size - chunks) / RUN_CHUNK;
    run_state **by_chunk = PyMem_RawCalloc(nchunks + 1, sizeof(*by_chunk));
    if (by_chunk == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->runs.chunks = chunks;
    p->runs.by_chunk = by_chunk;
    p->runs.nchunks = nchunks;
    int r = _PyPmem_WalkHeap(p->pop, p->size, visit_run, p);
    if (r == -1) {
        /* Metadata that the walk does not know: libpmemobj lists (the
           runs that the walk registered are found registered). */
        r = _PyPmem_ForEachByLibpmemobj(p, visit_run, p);
    }
    return r == 0 ? 0 : -1;
}

void
_PyPmem_RunsForget(PoolObject *p)
{
    for (size_t i = 0; i < p->runs.nchunks; i++) {
        PyMem_RawFree(p->runs.by_chunk[i]);
    }
    PyMem_RawFree(p->runs.by_chunk);
    memset(&p->runs, 0, sizeof(p->runs));
}

int
_PyPmem_ListRun(PoolObject *p, char *block,
                int (*add)(char *slot, uint64_t code, void *arg), void *arg)
{
    run_state *r = _PyPmem_RunOf(p, block);
    if (r == NULL) {
        /* Not a run that the open found (no heap it knows): a block of
           a type this process lacks, which is kept. */
        return add(block, POOL_RUN, arg);
    }
    for (uint32_t w = 0; w < (r->nslots + 63) / 64; w++) {
        uint64_t used = ~r->free[w];
        if (w == r->nslots / 64) {
            used &= ((uint64_t)1 << (r->nslots % 64)) - 1;
        }
        while (used != 0) {
            uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(used);
            used &= used - 1;
            int res = add(r->slots + (size_t)i * r->slot_size,
                          (uint64_t)r->codes[i] - 1, arg);
            if (res != 0) {
                return res;
            }
        }
    }
    return 0;
}

static int
construct_run(PMEMobjpool *pop, void *ptr, void *arg)
{
    struct pool_run *h = ptr;
    h->magic = RUN_MAGIC;
    h->slot_size = *(uint32_t *)arg;
    h->nslots = run_layout(h->slot_size, &h->first);
    memset(h->codes, 0, h->first - sizeof(*h));
    pmemobj_persist(pop, h, h->first);
    return 0;
}

/* A new run of p for slots of slot_size bytes, or NULL (full, or out of
   memory: no exception set). */
static run_state *
new_run(PoolObject *p, uint32_t slot_size)
{
    PMEMoid oid;
    uint64_t flags = POBJ_CLASS_ID(p->classes_of_sizes.runs);
    if (pmemobj_xalloc(p->pop, &oid, RUN_BLOCK_SIZE, POOL_RUN, flags,
                       construct_run, &slot_size) != 0
        && (_PyPmem_RunsRelease(p) == 0
            || pmemobj_xalloc(p->pop, &oid, RUN_BLOCK_SIZE, POOL_RUN, flags,
                              construct_run, &slot_size) != 0))
    {
        return NULL;
    }
    if (register_run(p, pmemobj_direct(oid)) < 0) {
        /* Out of memory, or not where a run must be (which the next
           open would refuse): the object is libpmemobj's. */
        PyErr_Clear();
        pmemobj_free(&oid);
        return NULL;
    }
    return _PyPmem_RunOf(p, pmemobj_direct(oid));
}

char *
_PyPmem_RunAlloc(PoolObject *p, size_t size, uint64_t code)
{
    size_t cls = size <= 16 ? 1 : (size + 15) / 16;
    if (cls > RUN_NCLASSES || code >= UINT16_MAX
        || p->runs.by_chunk == NULL || !_PyPmem_UseRuns)
    {
        return NULL;
    }
    run_state *r = p->runs.partial[cls];
    if (r == NULL && (r = new_run(p, (uint32_t)cls * 16)) == NULL) {
        return NULL;
    }
    uint32_t w = r->hint;
    while (r->free[w] == 0) {
        w++;
    }
    r->hint = w;
    uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(r->free[w]);
    r->free[w] &= r->free[w] - 1;
    if (--r->nfree == 0) {
        p->runs.partial[cls] = r->next;  /* the head: full now */
    }
    r->codes[i] = (uint16_t)(code + 1);
    return r->slots + (size_t)i * r->slot_size;
}

void
_PyPmem_RunFree(PoolObject *p, run_state *r, void *block)
{
    uint32_t i = _PyPmem_SlotOf(r, block);
    uint64_t bit = (uint64_t)1 << (i % 64);
    if (r->free[i / 64] & bit) {
        return;                   /* freed already */
    }
    r->codes[i] = 0;
    r->free[i / 64] |= bit;
    r->hint = Py_MIN(r->hint, i / 64);
    if (r->nfree++ == 0) {
        list_partial(p, r);       /* full until now */
    }
}

void
_PyPmem_FlushSlot(PoolObject *p, run_state *r, char *block,
                  uintptr_t *line)
{
    pmemobj_flush(p->pop, block, r->slot_size);
    uint16_t *code = &r->codes[_PyPmem_SlotOf(r, block)];
    if (((uintptr_t)code & ~(uintptr_t)63) != *line) {
        *line = (uintptr_t)code & ~(uintptr_t)63;
        pmemobj_flush(p->pop, code, sizeof(*code));
    }
}

void
_PyPmem_RunPersist(PoolObject *p, char *block)
{
    uintptr_t line = 0;
    if (!p->nosync) {
        _PyPmem_FlushSlot(p, _PyPmem_RunOf(p, block), block, &line);
        pmemobj_drain(p->pop);
    }
}

void
_PyPmem_FlushMadeCodes(PoolObject *p)
{
    uintptr_t line = 0;
    if (p->nosync) {
        return;
    }
    for (size_t i = 0; i < p->ntxmade; i++) {
        run_state *r = _PyPmem_RunOf(p, p->txmade[i]);
        if (r != NULL) {
            _PyPmem_FlushSlot(p, r, p->txmade[i], &line);
        }
    }
    if (line != 0) {
        pmemobj_drain(p->pop);
    }
}

size_t
_PyPmem_RunsRelease(PoolObject *p)
{
    size_t n = 0;
    for (size_t cls = 1; cls <= RUN_NCLASSES; cls++) {
        run_state **link = &p->runs.partial[cls];
        while (*link != NULL) {
            run_state *r = *link;
            if (r->nfree < r->nslots) {
                link = &r->next;
                continue;
            }
            /* No slot holds an object: each was freed after the commit
               point of the transaction that freed it, or never held
               one.  Freed atomically; what the media still says of its
               slots, nothing lists any more. */
            *link = r->next;
            char *block = (char *)r->codes - offsetof(struct pool_run,
                                                      codes);
            p->runs.by_chunk[(size_t)(block - p->runs.chunks)
                             / RUN_CHUNK] = NULL;
            PyMem_RawFree(r);
            PMEMoid oid = pmemobj_oid(block);
            pmemobj_free(&oid);
            n++;
        }
    }
    return n;
}
