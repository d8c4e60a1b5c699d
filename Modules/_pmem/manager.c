/* _pmem's storage manager: the hooks that core object code calls for a
 * pool's memory (Include/cpython/storage.h).  Allocations come from the
 * pool's own allocation classes; the outermost operation is one
 * transaction of the pool's undo log (log.c), which blocks made and
 * freed join; a nested `with pool:` block is a savepoint, undone from a
 * log of its own.
 */

#include "pool.h"

/* A record of p->undo: the bytes of a range as they were before a change
   (rounded up to 8), then this trailer, so that it is read backwards. */
typedef struct {
    char *addr;
    size_t size;
} undo_trailer;

#define UNDO_ROUND(n) (((n) + 7) & ~(size_t)7)


/* --- the storage manager ------------------------------------------------ */

/* What an undo must count again (undo.c): op, an object whose operation
   begins in p's transaction, unless recorded since the last savepoint
   began.  Past the limit, or out of memory, every undo of the
   transaction counts the whole pool. */
static void
touch(PoolObject *p, PyObject *op)
{
    if (op == NULL || p->overflow || (char *)op < (char *)p->pop
        || (char *)op >= (char *)p->pop + p->size)
    {
        return;
    }
    size_t h = ((uintptr_t)op >> 4) % POOL_TOUCH_CACHE;
    size_t i = p->touch_cache[h];
    if (i >= p->touch_mark && i < p->ntouched && p->touched[i] == op) {
        return;
    }
    if (p->ntouched >= POOL_TOUCHED_MAX
        || _PyPmem_RESERVE(p->touched, p->touched_allocated,
                           p->ntouched + 1, 256) < 0)
    {
        p->overflow = 1;
        return;
    }
    p->touch_cache[h] = (uint32_t)p->ntouched;
    p->touched[p->ntouched++] = op;
}

/* The same for a range that the transaction logs. */
static inline void
note_range(PoolObject *p, void *addr, size_t size)
{
    if (p->overflow || size == 0) {
        return;
    }
    _PyStorage_Range r = {(char *)addr, (char *)addr + size};
    if (p->nranges > 0 && p->ranges[p->nranges - 1].start == r.start
        && p->ranges[p->nranges - 1].end == r.end)
    {
        return;
    }
    if (p->nranges >= POOL_RANGES_MAX
        || _PyPmem_RESERVE(p->ranges, p->ranges_allocated, p->nranges + 1,
                           256) < 0)
    {
        p->overflow = 1;
        return;
    }
    p->ranges[p->nranges++] = r;
}

/* May the cycle collector clear p's objects now?  Not inside one of its
   transactions (what tp_clear and finalizers write, and what is freed,
   could not be undone with it), nor when p cannot be changed. */
int
_PyPmem_Collectable(PyStorageManager *sm)
{
    PoolObject *p = POOL(sm);
    return p->depth == 0 && !p->closed && !p->forked;
}

/* pmemobj_xalloc() of a block of size bytes in its class; what did not
   fit is remembered for the message of MemoryError (full_error()). */
static int
pool_xalloc(PoolObject *p, PMEMoid *oid, size_t size, uint64_t code,
            uint64_t flags, pmemobj_constr constructor, void *arg)
{
    flags |= _PyPmem_ClassFlags(p, size);
    if (pmemobj_xalloc(p->pop, oid, size, code, flags, constructor,
                       arg) != 0
        && (_PyPmem_RunsRelease(p) == 0
            || pmemobj_xalloc(p->pop, oid, size, code, flags, constructor,
                              arg) != 0))
    {
        p->failed_size = size;
        return -1;
    }
    return 0;
}

/* --- reservations ---------------------------------------------------------

   A block made inside a transaction is reserved (pmemobj_xreserve(): the
   heap's metadata on the media is not written), and published with the
   batch of POOL_RESERVE_BATCH that it completes, or the last batch just
   before the commit (pmemobj_publish(): one redo log for the batch).  An
   atomic allocation made a redo log of its own for each block, about
   four persist points.  A block published is what an atomic allocation
   made: nothing in the pool reaches it until the commit, and the next
   open frees it if the process dies first; a block still reserved when
   the process dies was never allocated.  An undo publishes the
   reservations first: a variable may still refer to a block of the
   transaction (see _PyPmem_Alloc()), and the undo counts and frees what
   the transaction made as blocks of the pool.  A block reserved and
   freed by the same transaction is cancelled after the commit
   (freed_reservations()). */

/* Publish p's reservations. */
static void
publish_reserved(PoolObject *p)
{
    _PyPmem_Publish(p, p->reserved, p->nreserved);
    p->nreserved = 0;
}

/* A block of size bytes of type code reserved in p, or NULL (its size
   remembered, as pool_xalloc() does). */
static char *
pool_reserve(PoolObject *p, size_t size, uint64_t code, uint64_t flags)
{
    if (p->nreserved == POOL_RESERVE_BATCH) {
        publish_reserved(p);
    }
    flags |= _PyPmem_ClassFlags(p, size);
    struct pobj_action *act = &p->reserved[p->nreserved];
    PMEMoid oid = pmemobj_xreserve(p->pop, act, size, code, flags);
    if (OID_IS_NULL(oid) && _PyPmem_RunsRelease(p) > 0) {
        oid = pmemobj_xreserve(p->pop, act, size, code, flags);
    }
    if (OID_IS_NULL(oid)) {
        p->failed_size = size;
        return NULL;
    }
    p->nreserved++;
    return pmemobj_direct(oid);
}

/* Blocks made by the transaction need no undo log: nothing in the pool
   reaches them but through pointers that the log restores, so that a
   crash leaves them unreachable (the next open frees them), and an undo
   leaves them as they are, with their references counted again (a
   variable may refer to one).  A savepoint's undo still restores what
   its block changed in them (save_undo()).  The large ones (tables, where
   a bulk load writes) are remembered, the last POOL_MADE_RECENT of them;
   small ones are written once, when made, without a log. */
static void
note_made(PoolObject *p, char *block, size_t size)
{
    if (size >= POOL_MADE_MIN) {
        p->made[p->nmade++ % POOL_MADE_RECENT] =
            (_PyStorage_Range){block, block + size};
    }
}

static inline int
in_made(PoolObject *p, const char *addr, size_t size)
{
    size_t n = Py_MIN(p->nmade, POOL_MADE_RECENT);
    for (size_t i = 0; i < n; i++) {
        if (addr >= p->made[i].start && addr + size <= p->made[i].end) {
            return 1;
        }
    }
    return 0;
}

/* The block of p's i-th reservation. */
static inline char *
reserved_block(PoolObject *p, size_t i)
{
    return (char *)p->pop + p->reserved[i].heap.offset;
}

/* A block made in p's transaction, of size bytes (and room more, when
   that fits), type code code: reserved, holding the first copy bytes at
   from and zeros after them (written here, not by libpmemobj, which
   would persist them: the commit flushes every block the transaction
   made, and the next open frees unread one that nothing reaches),
   recorded.  NULL when it does not fit (the size remembered) or out of
   memory. */
static char *
made_block(PoolObject *p, size_t size, size_t room, uint64_t code,
           const void *from, size_t copy)
{
    char *block = room == 0 ? _PyPmem_RunAlloc(p, size, code) : NULL;
    if (block != NULL) {
        if (_PyPmem_RecordMade(p, block) < 0) {
            _PyPmem_BlockFree(p, block);
            return NULL;
        }
    }
    else {
        block = room == 0 ? NULL : pool_reserve(p, size + room, code, 0);
        if (block == NULL
            && (block = pool_reserve(p, size, code, 0)) == NULL)
        {
            return NULL;
        }
        if (_PyPmem_RecordMade(p, block) < 0) {
            pmemobj_cancel(p->pop, &p->reserved[--p->nreserved], 1);
            return NULL;
        }
    }
    size_t usable = _PyPmem_BlockSize(p, block);
    if (copy > 0) {
        memcpy(block, from, copy);
    }
    memset(block + copy, 0, usable - copy);
    note_made(p, block, usable);
    return block;
}

/* Is block one of p's reservations from the from-th on? */
static int
is_cancelled(PoolObject *p, const char *block, size_t from)
{
    for (size_t i = from; i < p->nreserved; i++) {
        if (reserved_block(p, i) == block) {
            return 1;
        }
    }
    return 0;
}

/* Move the reservations of blocks that the transaction freed to the end
   of p->reserved: their number.  They are cancelled after the commit,
   the others published before it. */
static size_t
freed_reservations(PoolObject *p)
{
    size_t n = 0;
    for (size_t i = 0; i < p->ntxfreed && n < p->nreserved; i++) {
        char *block = p->txfreed[i];
        for (size_t j = 0; j < p->nreserved - n; j++) {
            if (reserved_block(p, j) == block) {
                struct pobj_action act = p->reserved[j];
                size_t last = p->nreserved - n - 1;
                p->reserved[j] = p->reserved[last];
                p->reserved[last] = act;
                n++;
                break;
            }
        }
    }
    return n;
}

void *
_PyPmem_Alloc(PyStorageManager *sm, size_t size, PyTypeObject *type)
{
    PoolObject *p = POOL(sm);
    PMEMoid oid;
    if (p->closed || p->forked) {
        return NULL;
    }
    uint64_t code = _PyPmem_TypeCode(p, type);
    if (code == UINT64_MAX) {
        return NULL;
    }
    /* Atomic, inside a transaction too: an abort must not free an object
       that a variable may still refer to.  Such an object goes back to
       the state of its first logged change (a new container: empty), and
       _PyPmem_End() counts its references again.  Until it is stored,
       nothing in the pool reaches it: if the process dies first, or the
       transaction that stores it aborts and nothing keeps it, the next
       open (or pool.gc()) frees it.  Inside a transaction, reserved: the
       same, made durable with the commit (or a batch). */
    if (_PyPmem_InMyTransaction(p)) {
        return made_block(p, size, 0, code, NULL, 0);
    }
    char *slot = _PyPmem_RunAlloc(p, size, code);
    if (slot != NULL) {
        memset(slot, 0, _PyPmem_BlockSize(p, slot));
        _PyPmem_RunPersist(p, slot);
        return slot;
    }
    if (pool_xalloc(p, &oid, size, code, POBJ_XALLOC_ZERO, NULL, NULL) < 0) {
        return NULL;
    }
    return pmemobj_direct(oid);
}

size_t
_PyPmem_UsableSize(PyStorageManager *sm, void *ptr)
{
    return _PyPmem_BlockSize(POOL(sm), ptr);
}

typedef struct {
    const void *from;
    size_t size;                  /* to copy; the rest is zeroed */
} copy_arg;

static int
copy_constructor(PMEMobjpool *pop, void *ptr, void *arg)
{
    copy_arg *a = (copy_arg *)arg;
    size_t usable = pmemobj_alloc_usable_size(pmemobj_oid(ptr));
    pmemobj_memcpy_persist(pop, ptr, a->from, a->size);
    if (usable > a->size) {
        pmemobj_memset_persist(pop, (char *)ptr + a->size, 0,
                               usable - a->size);
    }
    return 0;
}

/* A block that grows past this gets room for half as much again: a
   resize holds the old and the new block at once, and the fewer of them
   a growing container makes, the larger it can grow in a pool that has
   no other room for it (the room is not lost: the next resizes use it,
   and a block that shrinks to half of it is made anew). */
#define ALLOC_ROOM_FROM ((size_t)1 << 20)

void *
_PyPmem_Realloc(PyStorageManager *sm, void *ptr, size_t size)
{
    PoolObject *p = POOL(sm);
    if (p->closed || p->forked) {
        return NULL;
    }
    uint64_t code = _PyPmem_BlockCode(p, ptr);
    size_t old = _PyPmem_BlockSize(p, ptr);
    if (size <= old && size >= old / 2) {
        return ptr;
    }
    /* A new block, made atomically with the old contents, and the old
       one freed: by the transaction, inside one, so that a savepoint's
       undo can bring it back; else at once (what no longer points to it
       after a crash in between, the next open frees). */
    size_t copy = old < size ? old : size;
    size_t room = size > old && size > ALLOC_ROOM_FROM ? size / 2 : 0;
    if (_PyPmem_InMyTransaction(p)) {
        if (_PyPmem_RoomForFree(p) < 0) {
            return NULL;
        }
        char *block = made_block(p, size, room, code, ptr, copy);
        if (block != NULL) {
            (void)_PyPmem_RecordFree(p, ptr);     /* has room */
        }
        return block;
    }
    char *slot = room == 0 ? _PyPmem_RunAlloc(p, size, code) : NULL;
    if (slot != NULL) {
        memcpy(slot, ptr, copy);
        memset(slot + copy, 0, _PyPmem_BlockSize(p, slot) - copy);
        _PyPmem_RunPersist(p, slot);
        _PyPmem_BlockFree(p, ptr);
        return slot;
    }
    copy_arg arg = {ptr, copy};
    PMEMoid moved;
    if ((room == 0 || pool_xalloc(p, &moved, size + room, code, 0,
                                  copy_constructor, &arg) < 0)
        && pool_xalloc(p, &moved, size, code, 0, copy_constructor, &arg) < 0)
    {
        return NULL;
    }
    _PyPmem_BlockFree(p, ptr);
    return pmemobj_direct(moved);
}

void
_PyPmem_Free(PyStorageManager *sm, void *ptr)
{
    PoolObject *p = POOL(sm);
    if (p->closed || p->forked) {
        /* Left to the next open, which frees what nothing reaches (a
           forked child's memory of the pool is its own copy). */
        return;
    }
    if (p->depth > 0) {
        /* Freed by the transaction; by another thread's, when this one
           deallocates an object while that transaction is going on: the
           object may be one whose last reference from the pool that
           transaction dropped, and which its undo brings back.  Out of
           memory for the record: the block is left to the next open
           (freeing it now could not be undone). */
        (void)_PyPmem_RecordFree(p, ptr);
        return;
    }
    _PyPmem_BlockFree(p, ptr);
}

/* May this thread take p's writer lock?  0, or -1 with PoolError. */
static int
check_writer(PoolObject *p)
{
    if (p->closed || p->forked) {
        _PyPmem_RefuseChange(p);
        return -1;
    }
    /* A transaction spans one pool: its commit would not be another's,
       nor would a crash undo the two together. */
    if (_PyPmem_MyTransaction != NULL) {
        PyErr_Format(p->error, "an atomic operation on pool %R cannot "
                     "begin inside one on another pool: an operation "
                     "spans one pool", p->path);
        return -1;
    }
    return 0;
}

/* Hold p's writer lock without a transaction, for changes that one
   atomic store makes durable (-X pmem's bindings).  A begin() of the
   holder starts a transaction without locking again, and its end()
   leaves the lock held.  0, or -1 with an exception set. */
int
_PyPmem_Hold(PoolObject *p)
{
    if (check_writer(p) < 0) {
        return -1;
    }
    PyMutex_Lock(&p->writer);
    p->owner = current_thread();
    p->held = 1;
    return 0;
}

void
_PyPmem_Release(PoolObject *p)
{
    p->held = 0;
    p->owner = 0;
    PyMutex_Unlock(&p->writer);
}

int
_PyPmem_Begin(PyStorageManager *sm, PyObject *op)
{
    PoolObject *p = POOL(sm);
    if (_PyPmem_InMyTransaction(p)) {
        p->depth++;
        touch(p, op);
        if (p->mainns != NULL) {
            _PyPmem_MainBegins(p, op);
        }
        return 0;
    }
    unsigned long me = current_thread();
    int held = p->held && p->owner == me;
    if (!held && check_writer(p) < 0) {
        return -1;
    }
    /* One writer at a time: another thread's transaction is waited for,
       without the GIL, which PyMutex_Lock() lets go while it waits
       (readers do not lock). */
    if (!held) {
        PyMutex_Lock(&p->writer);
    }
    _PyPmem_MyTransaction = p;
    p->owner = me;
    p->depth = 1;
    touch(p, op);
    if (p->mainns != NULL) {
        _PyPmem_MainBegins(p, op);
    }
    return 0;
}

/* A MemoryError that says that p is full, how full, and what to do, in
   place of the bare one that the core raised when an allocation of p
   failed.  It replaces the exception that is set, when that is a bare
   MemoryError; when none is set (_PyStorage_TxEnd() holds the
   operation's exception while the manager ends the operation), it is
   set, and 1 returned: end() fails with it, and the core gives it in
   place of its own MemoryError. */
static int
full_error(PoolObject *p)
{
    size_t need = p->failed_size;
    p->failed_size = 0;
    int explained = 1;
    if (PyErr_Occurred()) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (type != PyExc_MemoryError || value == NULL
            || PyTuple_GET_SIZE(((PyBaseExceptionObject *)value)->args) != 0)
        {
            PyErr_Restore(type, value, tb);
            return 0;
        }
        Py_DECREF(type);
        Py_DECREF(value);
        Py_XDECREF(tb);
        explained = 0;
    }
    size_t used = 0, n;
    alloc_item *items = _PyPmem_ListAllocations(p, &n);
    if (items == NULL) {
        PyErr_Clear();
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        used += _PyPmem_BlockSize(p, items[i].block);
    }
    PyMem_RawFree(items);
    PyObject *what = PyUnicode_FromFormat("%zu more bytes do not fit",
                                          need);
    if (what == NULL) {
        return explained;
    }
    size_t free = 0, largest = 0;
    if (_PyPmem_FreeSpace(p, &free, &largest) < 0) {
        PyErr_Clear();
    }
    PyErr_Format(PyExc_MemoryError, "pool %R is full: %U (%zu of its %zu "
                 "bytes are in use by objects, %zu are free for blocks of "
                 "any size, at most %zu in one; the rest is libpmemobj's "
                 "metadata, and room for small objects only); the "
                 "transaction is rolled back.  %s, or make the pool "
                 "bigger: close it, then run pmem.grow(path, size), or "
                 "python -m pmem grow PATH SIZE",
                 p->path, what, used, p->size, free, largest,
                 "Delete what is no longer needed");
    Py_DECREF(what);
    return explained;
}

/* Up to max frees of the transaction's, from the *pi-th on, as actions
   in acts (pmemobj_defer_free()), the blocks of reservations from the
   from-th on left out (cancelled); *pi is where the next ones start.
   Their number. */
static size_t
defer_frees(PoolObject *p, size_t *pi, size_t from, struct pobj_action *acts,
            size_t max)
{
    size_t k = 0;
    for (; *pi < p->ntxfreed && k < max; ++*pi) {
        char *block = p->txfreed[*pi];
        if (_PyPmem_RunOf(p, block) == NULL
            && !is_cancelled(p, block, from))
        {
            pmemobj_defer_free(p->pop, pmemobj_oid(block), &acts[k++]);
        }
    }
    return k;
}

/* Commit p's transaction.  The blocks it made become the pool's, its
   changes are made durable, then the commit point, then the blocks it
   freed are freed, but those of its reservations, which are cancelled.
   The blocks made and freed go in the redo log of the commit point
   (_PyPmem_LogCommit()), as many as fit in it; the others are published
   in batches before it, and freed in batches after it: a block that the
   process leaves made or unfreed when it dies, nothing reaches, and the
   next open frees it. */
static void
commit(PoolObject *p)
{
    size_t cancel = p->nreserved > 0 ? freed_reservations(p) : 0;
    size_t publish = p->nreserved - cancel;
    struct pobj_action acts[POOL_RESERVE_BATCH];
    size_t before = 0, after;
    if (publish < POOL_RESERVE_BATCH) {
        memcpy(acts, p->reserved, publish * sizeof(acts[0]));
        before = publish;
    }
    else {
        _PyPmem_Publish(p, p->reserved, publish);
    }
    size_t i = 0;
    after = defer_frees(p, &i, publish, acts + before + 1,
                        POOL_RESERVE_BATCH - before - 1);
    _PyPmem_LogCommit(p, acts, before, after);
    /* The rest, in batches, each one redo log: a block left when the
       process dies is garbage, which the next open frees. */
    size_t k;
    while ((k = defer_frees(p, &i, publish, acts, POOL_RESERVE_BATCH)) > 0) {
        _PyPmem_Publish(p, acts, k);
    }
    if (cancel > 0) {
        pmemobj_cancel(p->pop, p->reserved + publish, cancel);
    }
    /* The slots it freed: after the commit point too. */
    for (i = 0; i < p->ntxfreed; i++) {
        run_state *r = _PyPmem_RunOf(p, p->txfreed[i]);
        if (r != NULL) {
            _PyPmem_RunFree(p, r, p->txfreed[i]);
        }
    }
}

int
_PyPmem_End(PyStorageManager *sm, int ok)
{
    PoolObject *p = POOL(sm);
    if (!_PyPmem_InMyTransaction(p)) {
        PyErr_SetString(PyExc_SystemError,
                        "pool end() without this thread's begin()");
        return -1;
    }
    int explained = !ok && p->failed_size != 0 && full_error(p);
    if (--p->depth > 0) {
        /* A nested operation joins the outermost one. */
        return explained ? -1 : 0;
    }
    _PyPmem_MyTransaction = NULL;
    p->failed_size = 0;
    int committing = ok && !p->doomed;
    undo_state *repair = NULL;
    if (committing) {
        commit(p);
    }
    else {
        /* The undo log restores the objects' memory; their reference
           counts are counted again around it. */
        publish_reserved(p);
        _PyPmem_FlushMadeCodes(p);
        repair = _PyPmem_UndoPrepare(p, NULL);
        _PyPmem_LogUndo(p);
    }
    p->nreserved = 0;
    p->ntxfreed = 0;
    p->nsavepoints = 0;
    p->undo_len = 0;
    if (repair != NULL) {
        _PyPmem_UndoFinish(p, repair);     /* frees what the undo left alone */
    }
    p->ntxmade = 0;
    p->ntouched = 0;
    p->touch_mark = 0;
    p->nranges = 0;
    p->overflow = 0;
    p->nmade = 0;
    int doomed = p->doomed;
    p->doomed = 0;
    if (!p->held) {
        p->owner = 0;
        PyMutex_Unlock(&p->writer);
    }
    if (p->mainns != NULL) {
        /* __main__'s bindings follow the pool's namespace. */
        _PyPmem_MainEnded(p, committing);
    }
    /* So do the variables that moves made refer to copies. */
    _PyStorage_MovesEnd(&p->sm, 0, !committing);
    if (!committing) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        _PyPmem_RestoreTypeTable(p);
        PyErr_Restore(type, value, tb);
    }
    if (explained) {
        return -1;
    }
    if (ok && doomed) {
        PyErr_Format(p->error, "the transaction on pool %R was rolled "
                     "back: a nested block that raised could not be "
                     "undone alone", p->path);
        return -1;
    }
    return 0;
}

/* --- savepoints ----------------------------------------------------------

   The pool's log undoes a whole transaction.  A nested `with pool:`
   block is a savepoint.  While one is open, every range registered by
   modify() is also copied, as it was, into p->undo (in DRAM: a crash
   undoes the whole transaction anyway).
   A block that raises writes those copies back, newest first, down to
   its start -- into ranges of the transaction, so the writes are logged
   and flushed like any change -- and counts references again around it,
   as an abort does; the blocks it freed are not freed.  When that cannot
   be done (out of memory), the outermost transaction refuses to
   commit. */

/* Copy [addr, addr + size) into p->undo.  0, or -1 with MemoryError. */
static int
save_undo(PoolObject *p, void *addr, size_t size)
{
    size_t need = UNDO_ROUND(size) + sizeof(undo_trailer);
    if (_PyPmem_RESERVE(p->undo, p->undo_allocated, p->undo_len + need,
                        4096) < 0)
    {
        PyErr_NoMemory();
        return -1;
    }
    char *rec = p->undo + p->undo_len;
    memcpy(rec, addr, size);
    undo_trailer t = {addr, size};
    memcpy(rec + UNDO_ROUND(size), &t, sizeof(t));
    p->undo_len += need;
    return 0;
}

/* A nested block begins.  0, or -1 with MemoryError. */
int
_PyPmem_SavepointPush(PoolObject *p)
{
    if (_PyPmem_RESERVE(p->savepoints, p->savepoints_allocated,
                        p->nsavepoints + 1, 8) < 0)
    {
        PyErr_NoMemory();
        return -1;
    }
    struct savepoint *sp = &p->savepoints[p->nsavepoints++];
    sp->depth = p->depth + 1;
    sp->undo_len = p->undo_len;
    sp->ntxfreed = p->ntxfreed;
    sp->ntxmade = p->ntxmade;
    sp->main_log = _PyPmem_MainLogLength(p);
    sp->moves = _PyStorage_MovesMark();
    sp->ntouched = p->ntouched;
    sp->nranges = p->nranges;
    sp->touch_mark = p->touch_mark;
    p->touch_mark = p->ntouched;
    return 0;
}

/* The nested block at the top ends; undo its changes if it raised. */
void
_PyPmem_SavepointPop(PoolObject *p, int ok)
{
    struct savepoint sp = p->savepoints[--p->nsavepoints];
    p->touch_mark = sp.touch_mark;
    if (!ok && !p->doomed) {
        publish_reserved(p);
        undo_state *repair = _PyPmem_UndoPrepare(p, &sp);
        if (repair == NULL) {
            p->doomed = 1;
        }
        else {
            char *end = p->undo + p->undo_len;
            while (end > p->undo + sp.undo_len) {
                undo_trailer t;
                memcpy(&t, end - sizeof(t), sizeof(t));
                end -= sizeof(t) + UNDO_ROUND(t.size);
                memcpy(t.addr, end, t.size);
            }
            p->ntxfreed = sp.ntxfreed;
            _PyPmem_UndoFinish(p, repair);
            _PyPmem_RestoreTypeTable(p);
            _PyPmem_MainUndo(p, sp.main_log);
            _PyStorage_MovesEnd(&p->sm, sp.moves, 1);
        }
    }
    if (p->nsavepoints == 0) {
        p->undo_len = 0;
    }
    else if (!ok) {
        p->undo_len = sp.undo_len;
    }
}

int
_PyPmem_Modify(PyStorageManager *sm, void *addr, size_t size)
{
    PoolObject *p = POOL(sm);
    if (p->closed || p->forked) {
        /* No operation can begin: a write that no operation brackets is
           a deallocation's, of memory that nothing sees again
           (_PyStorage_TxBegin()). */
        return 0;
    }
    if (!_PyPmem_InMyTransaction(p)) {
        PyErr_Format(PyExc_SystemError, "a write to pool %R outside any "
                     "atomic operation", p->path);
        return -1;
    }
    note_range(p, addr, size);
    if (in_made(p, addr, size)) {
        return p->nsavepoints > 0 ? save_undo(p, addr, size) : 0;
    }
    if (_PyPmem_LogAppend(p, addr, size) < 0) {
        return -1;
    }
    if (p->nsavepoints > 0 && save_undo(p, addr, size) < 0) {
        return -1;
    }
    return 0;
}

/* The entries of the ranges' logs are written, then made durable at once:
   none of the ranges changes before they all are logged (the valid
   entries of a crash's log stay a prefix of what it wrote, or are entries
   of ranges that did not change). */
int
_PyPmem_ModifyMany(PyStorageManager *sm, size_t n, void *const *addrs,
                   const size_t *sizes)
{
    PoolObject *p = POOL(sm);
    int r = 0;
    p->log_batch = 1;
    for (size_t i = 0; i < n && r == 0; i++) {
        r = _PyPmem_Modify(sm, addrs[i], sizes[i]);
    }
    p->log_batch = 0;
    _PyPmem_LogDrain(p);
    return r;
}
