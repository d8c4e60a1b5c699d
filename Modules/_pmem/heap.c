/* _pmem's view of a pool's heap: every allocation, listed once and
 * found by address in a table (the open pass, the undo and pool.gc()
 * build one); the objects that the root holds, and letting go of an
 * object that is garbage (the walks that those three make); the pool's
 * allocation classes and the publication of libpmemobj's actions; and
 * the lists of the blocks that a transaction allocated and freed.
 */

#include "pool.h"

_Py_thread_local PoolObject *_PyPmem_MyTransaction POOL_TLS_MODEL;

/* Where a listing of the allocations goes: visit(block, code, arg) for
   each, and restart(arg) when the walk starts again from the first (the
   heap walk stopped on metadata that it does not know). */
typedef struct {
    PoolObject *pool;
    _PyPmem_BlockVisitor visit;
    void (*restart)(void *arg);
    void *arg;
} listing;

static int
list_block(char *block, uint64_t type_num, void *arg)
{
    listing *l = (listing *)arg;
    if (type_num == POOL_LOG) {
        return 0;                 /* the log's (log.c) */
    }
    if (type_num == POOL_RUN) {
        return _PyPmem_ListRun(l->pool, block, l->visit, l->arg);
    }
    return l->visit(block, type_num, l->arg);
}


int
_PyPmem_ForEachByLibpmemobj(PoolObject *p, _PyPmem_BlockVisitor visit,
                            void *arg)
{
    PMEMoid oid;
    char *last = NULL;
    POBJ_FOREACH(p->pop, oid) {
        /* The walk goes up the heap: anything else is a cycle in corrupt
           metadata, which would never end. */
        char *block = pmemobj_direct(oid);
        if (block <= last) {
            PyErr_Format(p->error, "pool %R is corrupt: the heap's "
                         "allocations do not follow one another", p->path);
            return -1;
        }
        last = block;
        int r = visit(block, pmemobj_type_num(oid), arg);
        if (r != 0) {
            return r;
        }
    }
    return 0;
}

/* Give each allocation of p to l, in the order of the addresses: read
   from the heap's metadata (_PyPmem_WalkHeap()), or listed by libpmemobj
   when by_libpmemobj or when the walk does not know the metadata.  0, or
   -1 with an exception set (MemoryError when a visit returned nonzero). */
static int
for_each_allocation(PoolObject *p, int by_libpmemobj, listing *l)
{
    int r = by_libpmemobj ? -1 : _PyPmem_WalkHeap(p->pop, p->size,
                                                  list_block, l);
    if (r == -1) {
        l->restart(l->arg);       /* forget what the walk listed */
        r = _PyPmem_ForEachByLibpmemobj(p, list_block, l);
    }
    if (r > 0) {
        PyErr_NoMemory();
    }
    return r != 0 ? -1 : 0;
}

typedef struct {
    alloc_item *items;
    size_t n, allocated;
} item_list;

static int
list_item(char *block, uint64_t type_num, void *arg)
{
    item_list *l = (item_list *)arg;
    if (_PyPmem_RESERVE(l->items, l->allocated, l->n + 1, 1024) < 0) {
        return 1;
    }
    l->items[l->n].block = block;
    l->items[l->n].code = type_num;
    l->n++;
    return 0;
}

static void
restart_items(void *arg)
{
    ((item_list *)arg)->n = 0;
}

/* p's allocations, with their type codes; NULL with an exception set. */
static alloc_item *
list_allocations(PoolObject *p, int by_libpmemobj, size_t *pn)
{
    item_list items = {NULL, 0, 0};
    listing l = {p, list_item, restart_items, &items};
    if (for_each_allocation(p, by_libpmemobj, &l) < 0) {
        PyMem_RawFree(items.items);
        return NULL;
    }
    *pn = items.n;
    return items.items != NULL ? items.items : PyMem_RawMalloc(1);
}

/* Every allocation of the pool, with its type code.  In the debug build,
   listed both ways, compared.  NULL with MemoryError (or PoolError, for
   a heap that libpmemobj walks in a cycle) set. */
alloc_item *
_PyPmem_ListAllocations(PoolObject *p, size_t *pn)
{
    alloc_item *items = list_allocations(p, 0, pn);
#ifdef Py_DEBUG
    if (items != NULL) {
        /* (An abort lists with its exception set: it is kept.) */
        PyObject *exc = PyErr_GetRaisedException();
        size_t n;
        alloc_item *check = list_allocations(p, 1, &n);
        if (check != NULL) {
            if (n != *pn || (n > 0 && memcmp(check, items,
                                             n * sizeof(*check)) != 0))
            {
                Py_FatalError("the heap walk lists other allocations "
                              "than pmemobj_next()");
            }
            PyMem_RawFree(check);
        }
        PyErr_Clear();
        PyErr_SetRaisedException(exc);
    }
#endif
    return items;
}

alloc_item *
_PyPmem_ListByLibpmemobj(PoolObject *p, size_t *pn)
{
    return list_allocations(p, 1, pn);
}

/* The table's entries are made as the allocations are listed (no list
   of them in between: at 10 million, one would take 160 MB more). */
static int
enter_block(char *block, uint64_t type_num, void *arg)
{
    open_state *st = (open_state *)arg;
    size_t allocated = st->nentries_allocated;
    if (_PyPmem_RESERVE(st->entries, allocated, st->nentries + 2,
                        4096) < 0)
    {
        return 1;
    }
    st->nentries_allocated = allocated;
    alloc_entry *e = &st->entries[st->nentries++];
    memset(e, 0, sizeof(*e));
    _PyPmem_SetEntry(st, e, block, block, 0);
    return 0;
}

static void
restart_entries(void *arg)
{
    ((open_state *)arg)->nentries = 0;
}

/* The table of p's allocations in st (whose lo and hi it sets): each
   entered as a block that holds no object (its key is its start), which
   the caller makes an object's where it is one (_PyPmem_SetEntry(), with
   a key in the block: the order holds; _PyPmem_BlockCode() gives the
   type code).  The index has about one bucket for two allocations over
   their span.  In the debug build, the table is compared with
   libpmemobj's listing.  0, or -1 with MemoryError (or PoolError, for a
   heap that libpmemobj walks in a cycle) set. */
int
_PyPmem_AllocTableBuild(open_state *st, PoolObject *p)
{
    st->lo = (char *)p->pop;
    st->hi = st->lo + p->size;
    if ((p->size >> 3) >> 40 != 0) {
        PyErr_Format(p->error, "pool %R is too large for this build "
                     "(8 TiB at most)", p->path);
        return -1;
    }
    listing l = {p, enter_block, restart_entries, st};
    st->nentries = st->nentries_allocated = 0;
    if (for_each_allocation(p, 0, &l) < 0) {
        _PyPmem_AllocTableFree(st);
        return -1;
    }
    size_t n = st->nentries;
    if (st->entries == NULL) {
        st->entries = PyMem_RawCalloc(1, sizeof(alloc_entry));
        if (st->entries == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    memset(&st->entries[n], 0, sizeof(alloc_entry));
#ifdef Py_DEBUG
    size_t ncheck;
    alloc_item *check = list_allocations(p, 1, &ncheck);
    if (check == NULL) {
        _PyPmem_AllocTableFree(st);
        return -1;
    }
    int same = ncheck == n;
    for (size_t i = 0; i < n && same; i++) {
        same = ENTRY_BLOCK(st, &st->entries[i]) == check[i].block
               && _PyPmem_BlockCode(p, check[i].block) == check[i].code;
    }
    PyMem_RawFree(check);
    if (!same) {
        Py_FatalError("the heap walk lists other allocations than "
                      "pmemobj_next()");
    }
#endif
    if (n == 0) {
        return 0;
    }
    char *base = ENTRY_BLOCK(st, &st->entries[0]);
    size_t span = (size_t)(ENTRY_BLOCK(st, &st->entries[n - 1]) - base) + 1;
    unsigned shift = 4;
    while ((span >> shift) > n / 2 + 1) {
        shift++;
    }
    size_t nbuckets = (span >> shift) + 1;
    st->index = PyMem_RawMalloc(nbuckets * sizeof(uint32_t));
    if (st->index == NULL || n > UINT32_MAX) {
        _PyPmem_AllocTableFree(st);
        PyErr_NoMemory();
        return -1;
    }
    size_t b = 0;
    for (size_t i = 0; i < n; i++) {
        size_t last = (size_t)(ENTRY_BLOCK(st, &st->entries[i]) - base)
                      >> shift;
        while (b <= last) {
            st->index[b++] = (uint32_t)i;
        }
    }
    while (b < nbuckets) {
        st->index[b++] = (uint32_t)n;
    }
    st->nbuckets = nbuckets;
    st->index_base = base;
    st->index_shift = shift;
    return 0;
}

/* Free st's table. */
void
_PyPmem_AllocTableFree(open_state *st)
{
    PyMem_RawFree(st->entries);
    PyMem_RawFree(st->index);
    PyMem_RawFree(st->counts);
    st->entries = NULL;
    st->index = NULL;
    st->counts = NULL;
    st->nentries = st->nentries_allocated = 0;
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

/* --- progress ------------------------------------------------------------ */

/* What python -m pmem shows of the long passes on a terminal: a callable
   (set by _pmem._set_progress()), or NULL. */
PyObject *_PyPmem_ProgressFunc = NULL;

void
_PyPmem_ReportProgress(const char *what, size_t done, size_t total)
{
    /* A display: what it raises is dropped, and it is not called again
       (the pass goes on as it would without it). */
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *r = PyObject_CallFunction(_PyPmem_ProgressFunc, "snn", what,
                                        (Py_ssize_t)done, (Py_ssize_t)total);
    if (r == NULL) {
        PyErr_Clear();
        Py_CLEAR(_PyPmem_ProgressFunc);
    }
    Py_XDECREF(r);
    PyErr_SetRaisedException(exc);
}

/* --- the objects -------------------------------------------------------- */

/* The objects that a pool's root holds, with the type each must have. */
const struct pool_root_field _PyPmem_RootFields[POOL_NROOTS] = {
    {offsetof(struct pool_root, namespace), &PyDict_Type},
    {offsetof(struct pool_root, types), &PyList_Type},
    {offsetof(struct pool_root, refs), &PyByteArray_Type},
};

/* The index-th object that p's root holds, at its place in a mapping of
   the pool at lo; NULL when the pool has none (yet). */
PyObject *
_PyPmem_Root(PoolObject *p, char *lo, int index)
{
    uint64_t offset;
    memcpy(&offset, (char *)p->root + _PyPmem_RootFields[index].offset,
           sizeof(offset));
    return offset == 0 ? NULL : (PyObject *)(lo + offset);
}

/* Call visit on each object that p's root holds, as on an object slot
   that held it: the root's reference.  The visitor's first nonzero
   result, or 0. */
int
_PyPmem_VisitRoots(PoolObject *p, char *lo, _PyStorage_SlotVisitor visit,
                   void *arg)
{
    for (int k = 0; k < POOL_NROOTS; k++) {
        PyObject *held = _PyPmem_Root(p, lo, k);
        int r = held == NULL ? 0 : visit((void **)&held,
                                         _PyStorage_SLOT_OBJECT, arg);
        if (r != 0) {
            return r;
        }
    }
    return 0;
}

/* Let go of what op, a pool object freed without its deallocator (it is
   garbage), holds in this process: the collector's tracking of it, the
   references it holds (release gives up each slot's), its class's
   reference, and the debug build's count of references.  Its block is
   the caller's to free.  The release's first nonzero result, or 0. */
int
_PyPmem_LetGo(PyObject *op, _PyStorage_SlotVisitor release, void *arg)
{
    if (PyObject_IS_GC(op) && PyObject_GC_IsTracked(op)) {
        PyObject_GC_UnTrack(op);
    }
    int r = _PyStorage_VisitSlots(op, release, arg);
    if (PyType_HasFeature(Py_TYPE(op), Py_TPFLAGS_HEAPTYPE)) {
        Py_DECREF(Py_TYPE(op));
    }
    _PyStorage_ForgetObject(op);
    return r;
}

/* --- allocation classes --------------------------------------------------

   libpmemobj's own allocation classes suit pools of many gigabytes: a
   class for every 5% of size up to 384 KiB, each making runs of up to 16
   chunks (4 MiB; a chunk is 256 KiB), and a run stays with its class
   while the pool is open, empty or not.  A container that grows by an
   eighth at each resize meets a new class at each one and leaves a run
   behind in each: a 64 MiB pool was full with 250 KB of objects.  So a
   pool registers classes of its own each time it opens (they are not
   recorded in the file, and the blocks of other classes stay readable)
   and allocates with them (objects of up to 512 bytes are slots of
   runs.c's runs, each a block of a class of its own, one a chunk; these
   classes hold the rest):

     up to 128 bytes      a class every 16 bytes
     up to 4 KiB          four classes per doubling (at most a fifth lost)
     up to ~248 KiB       one class of 4 KiB units: a block is as many
                          units as it needs, in runs of one chunk
     up to ~2.6 MiB       one class of 64 KiB units, runs of ~2.6 MiB
     larger               libpmemobj's own: whole chunks

   every class but the last with runs of one chunk.  A class left empty
   keeps a chunk at most; the 40 classes together about 10 MiB when each
   has had a block and none is empty, which are reused by their sizes. */

#define ALLOC_PAGE 4096
#define ALLOC_BIG_UNIT (64 << 10)

/* Register the class of unit bytes, units a run (about), or find it
   registered already (by an earlier open of a pool in this process, or
   among libpmemobj's own).  Its id, or -1 with PoolError set; *nunits:
   how many units its runs have. */
static int
register_class(PoolObject *p, size_t unit, unsigned units, size_t *nunits)
{
    struct pobj_alloc_class_desc desc = {
        .unit_size = unit, .alignment = 0, .units_per_block = units,
        .header_type = POBJ_HEADER_COMPACT,
    };
    if (pmemobj_ctl_set(p->pop, "heap.alloc_class.new.desc", &desc) == 0) {
        *nunits = desc.units_per_block;
        return (int)desc.class_id;
    }
    /* A class of the same unit and run size exists. */
    for (int id = 1; id < 255; id++) {
        struct pobj_alloc_class_desc known;
        char query[48];
        PyOS_snprintf(query, sizeof(query), "heap.alloc_class.%d.desc", id);
        if (pmemobj_ctl_get(p->pop, query, &known) == 0
            && known.unit_size == unit
            && known.header_type == POBJ_HEADER_COMPACT)
        {
            *nunits = known.units_per_block;
            return id;
        }
    }
    _PyPmem_SetError(p->error, p->path,
                     "cannot register an allocation class in pool");
    return -1;
}

int
_PyPmem_RegisterClasses(PoolObject *p)
{
    struct alloc_classes *ac = &p->classes_of_sizes;
    const size_t chunk = 256 << 10;
    size_t prev = 0, n;
    for (size_t unit = 16; unit <= ALLOC_SMALL_MAX; ) {
        int id = register_class(p, unit, (unsigned)((chunk - 1024) / unit),
                                &n);
        if (id < 0) {
            return -1;
        }
        for (size_t i = prev / 16 + 1; i <= unit / 16; i++) {
            ac->small[i] = (uint8_t)id;
        }
        prev = unit;
        if (unit < 128) {
            unit += 16;
        }
        else {
            /* Four steps per doubling: 160, 192, 224, 256, 320... */
            size_t pow2 = 128;
            while (pow2 * 2 <= unit) {
                pow2 *= 2;
            }
            unit += pow2 / 4;
        }
    }
    ac->small[0] = ac->small[1];
    int id = register_class(p, ALLOC_PAGE, (unsigned)((chunk - 1024)
                                                      / ALLOC_PAGE), &n);
    if (id < 0) {
        return -1;
    }
    /* A block's units are within one word of the run's bitmap. */
    ac->pages = (uint8_t)id;
    ac->pages_max = Py_MIN(n, 64) * ALLOC_PAGE;
    id = register_class(p, ALLOC_BIG_UNIT, 40, &n);
    if (id < 0) {
        return -1;
    }
    ac->chunks = (uint8_t)id;
    ac->chunks_max = Py_MIN(n, 64) * ALLOC_BIG_UNIT;
    /* runs.c's: a chunk each, less libpmemobj's run header and bitmap. */
    id = register_class(p, RUN_CHUNK - 64, 1, &n);
    if (id < 0) {
        return -1;
    }
    ac->runs = (uint8_t)id;
    return 0;
}

/* The flags of pmemobj_xalloc() for a block of size bytes in p. */
uint64_t
_PyPmem_ClassFlags(PoolObject *p, size_t size)
{
    const struct alloc_classes *ac = &p->classes_of_sizes;
    size_t need = size + ALLOC_HEADER;
    if (need <= ALLOC_SMALL_MAX) {
        return POBJ_CLASS_ID(ac->small[(need + 15) / 16]);
    }
    if (need <= ac->pages_max) {
        return POBJ_CLASS_ID(ac->pages);
    }
    if (need <= ac->chunks_max) {
        return POBJ_CLASS_ID(ac->chunks);
    }
    return 0;                     /* whole chunks */
}

/* Publish n actions of p in one redo log; when they do not fit in the
   lane's log (up to POOL_RESERVE_BATCH do), one by one, in their order,
   each fits. */
void
_PyPmem_Publish(PoolObject *p, struct pobj_action *acts, size_t n)
{
    if (n > 0 && pmemobj_publish(p->pop, acts, n) != 0) {
        for (size_t i = 0; i < n; i++) {
            (void)pmemobj_publish(p->pop, &acts[i], 1);
        }
    }
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

/* Room for one more block in the transaction's frees, so that the next
   _PyPmem_RecordFree() cannot fail.  0, or -1 when out of memory. */
int
_PyPmem_RoomForFree(PoolObject *p)
{
    return _PyPmem_Reserve(&p->txfreed, &p->txfreed_allocated,
                           p->ntxfreed + 1, sizeof(char *), 64);
}

/* Record a block that the transaction frees: it is freed by the commit
   (manager.c, commit()), and comes back if the transaction, or the
   nested block that freed it, is undone.  0, or -1 when out of
   memory. */
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


/* --- free space -------------------------------------------------------- */

#define FREE_CHUNK ((size_t)256 << 10)  /* libpmemobj's chunk */
#define FREE_MAX_EXTENTS 4096

/* The largest block of k whole chunks that can be reserved in pop, with
   k at most kmax: 0 when not even one.  The reservation stays in *act. */
static size_t
reserve_largest(PMEMobjpool *pop, size_t kmax, struct pobj_action *act)
{
    size_t lo = 0, hi = kmax;     /* lo chunks fit; more than hi do not */
    while (lo < hi) {
        size_t k = lo + (hi - lo + 1) / 2;
        if (OID_IS_NULL(pmemobj_reserve(pop, act, k * FREE_CHUNK
                                        - ALLOC_HEADER, 0))) {
            hi = k - 1;
        }
        else {
            pmemobj_cancel(pop, act, 1);
            lo = k;
        }
    }
    if (lo == 0
        || OID_IS_NULL(pmemobj_reserve(pop, act, lo * FREE_CHUNK
                                       - ALLOC_HEADER, 0)))
    {
        return 0;
    }
    return lo * FREE_CHUNK;
}

/* The space of p that any allocation can use: the free extents of whole
   chunks, found by reserving the largest that fits, then the largest
   that fits next, and so on (reservations change nothing in the file,
   and all are cancelled); the largest in *plargest.  What this does not
   count of the free space is room inside runs that hold blocks of one
   size class, for blocks of that class only.  Holding the GIL, no other
   thread of this process allocates meanwhile.  0, or -1 with
   MemoryError set. */
int
_PyPmem_FreeSpace(PoolObject *p, size_t *pfree, size_t *plargest)
{
    struct pobj_action *acts = PyMem_RawMalloc(FREE_MAX_EXTENTS
                                               * sizeof(*acts));
    if (acts == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t n = 0, total = 0, largest = 0;
    size_t kmax = p->size / FREE_CHUNK;
    while (n < FREE_MAX_EXTENTS && kmax > 0) {
        size_t got = reserve_largest(p->pop, kmax, &acts[n]);
        if (got == 0) {
            break;
        }
        n++;
        total += got;
        largest = Py_MAX(largest, got);
        kmax = got / FREE_CHUNK;
    }
    if (n > 0) {
        pmemobj_cancel(p->pop, acts, n);
    }
    PyMem_RawFree(acts);
    *pfree = total;
    *plargest = largest;
    return 0;
}
