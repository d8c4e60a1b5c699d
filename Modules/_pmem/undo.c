/* _pmem's undo of a transaction: the reference counts of the pool's
 * objects around libpmemobj's undo log (which does not restore them), the
 * objects that the transaction freed brought back, and what it made that
 * nothing holds freed.
 */

#include "pool.h"
#include "pycore_dict.h"          // PyDictKeysObject (debug builds)

/* --- after an abort ------------------------------------------------------ */

/* Reference counts are volatile metadata: an abort's undo log does not
   restore them.  So an abort is bracketed by two counts.  Before it, the
   references that the live objects of the pool hold tell, for each
   object, how many of its references are DRAM's (its count minus those).
   After it, with the memory as it was, the pool's references are counted
   again: an object's count is DRAM's plus the pool's.  Objects that the
   transaction freed are alive again (their blocks' frees were part of
   it), with no DRAM reference; objects that it made and nothing refers to
   any more are left for the next open to free. */

static int
count_slot(void **slot, int kind, void *arg)
{
    open_state *st = (open_state *)arg;
    char *v = *slot;
    if (v == NULL) {
        return 0;
    }
    if (kind == _PyStorage_SLOT_TABLE) {
        /* After the undo: a table that an object holds. */
        if (st->undone && v >= st->lo && v < st->hi) {
            alloc_entry *e = _PyPmem_FindAlloc(st, v);
            if (ENTRY_USED(e) && !e->object) {
                ENTRY_COUNTS(st, e)->count++;
            }
        }
        return 0;
    }
    if (kind != _PyStorage_SLOT_OBJECT) {
        return 0;
    }
    if (v >= st->lo && v < st->hi) {
        alloc_entry *e = _PyPmem_FindAlloc(st, v);
        if (e->object) {
            ENTRY_COUNTS(st, e)->count++;
        }
    }
    return 0;
}

/* Whether e is an object that the undo left with no reference, which
   was live before it (or brought back by it): what the undone changes
   made, or what only they referred to. */
static int
is_garbage(repair_state *st, alloc_entry *e)
{
    PyObject *op = ENTRY_OBJ(st, e);
    if (op == NULL || e->dead == 2 || Py_REFCNT(op) != 0
        || !(e->live || e->dead == 1))
    {
        return 0;
    }
    /* A weak reference still points to it: left to the next open.  (A
       class statement's instances keep theirs in the pre-header.) */
    Py_ssize_t off = Py_TYPE(op)->tp_weaklistoffset;
    return off == 0 || *(PyObject **)((char *)op + off) == NULL;
}

#ifdef Py_REF_DEBUG
/* The debug build counts a dict's keys table's references (dk_refcnt)
   among all references.  An undo changes which tables the dicts hold,
   and their counts, behind the counter's back: this sum of the counts of
   the tables that the live dicts of the pool hold is taken before it and
   after, and the counter given the difference.  After it, the dicts
   still to be let go (garbage) are counted, as letting one go takes its
   table's count back; those that the undo brought back are not, as
   resetting their tables gave the counter their count. */
static Py_ssize_t
keys_refs(repair_state *st, int undone)
{
    Py_ssize_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < st->nentries; i++) {
            alloc_entry *e = &st->entries[i];
            PyObject *op = ENTRY_OBJ(st, e);
            if (op == NULL || !PyDict_Check(op) || e->dead
                || (Py_REFCNT(op) == 0 && !(undone && is_garbage(st, e))))
            {
                continue;
            }
            char *keys = (char *)((PyDictObject *)op)->ma_keys;
            alloc_entry *t = keys < st->lo || keys >= st->hi
                             ? NULL : _PyPmem_FindAlloc(st, keys);
            if (t == NULL || !ENTRY_USED(t) || t->mark == !pass) {
                continue;
            }
            t->mark = !pass;      /* each table once; then cleared */
            if (pass == 0) {
                total += ((PyDictKeysObject *)keys)->dk_refcnt;
            }
        }
    }
    return total;
}
#endif

/* The table of the pool's allocations, for the counts (undo: around an
   undo, with the blocks that it frees and makes from the from-th and
   made_from-th of the transaction's); NULL when it cannot be made (then
   the counts are left as they are). */
repair_state *
_PyPmem_RepairPrepare(PoolObject *p, size_t from, size_t made_from)
{
    repair_state *st = PyMem_RawCalloc(1, sizeof(*st));
    if (st == NULL || _PyPmem_AllocTableBuild(st, p) < 0
        || (st->counts = PyMem_RawCalloc(st->nentries + 1,
                                         sizeof(alloc_counts))) == NULL)
    {
        /* The counts stay as they are: better than no abort. */
        PyErr_Clear();
        if (st != NULL) {
            _PyPmem_AllocTableFree(st);
        }
        PyMem_RawFree(st);
        return NULL;
    }
    st->pool = p;
    st->made_from = made_from;
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        char *block = ENTRY_BLOCK(st, e);
        PyTypeObject *type = _PyPmem_ClassOfCode(
            p, _PyPmem_BlockCode(p, block));
        if (type != NULL) {
            _PyPmem_SetEntry(st, e, block + PyStorage_PreHeaderSize(type),
                             block, 1);
        }
    }
    for (size_t i = 0; i < p->ntxfreed; i++) {
        PyTypeObject *type = _PyPmem_ClassOfCode(
            p, _PyPmem_BlockCode(p, p->txfreed[i]));
        if (type != NULL) {
            alloc_entry *e = _PyPmem_FindAlloc(
                st, p->txfreed[i] + PyStorage_PreHeaderSize(type));
            if (ENTRY_USED(e)) {
                e->dead = i < from ? 2 : 1;
            }
        }
    }
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        _PyPmem_Progress("references", i + 1, st->nentries);
        if (e->object && !e->dead) {
            (void)_PyStorage_VisitSlots(ENTRY_OBJ(st, e), count_slot, st);
        }
    }
    (void)_PyPmem_VisitRoots(p, st->lo, count_slot, st);  /* the root's */
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->object) {
            alloc_counts *c = ENTRY_COUNTS(st, e);
            c->dram = e->dead ? 0 : Py_REFCNT(ENTRY_OBJ(st, e)) - c->count;
            e->live = !e->dead && Py_REFCNT(ENTRY_OBJ(st, e)) > 0;
            c->count = 0;
        }
    }
#ifdef Py_REF_DEBUG
    st->keys_refs = keys_refs(st, 0);
#endif
    return st;
}

/* A block that an undo left unreferenced, freed: by the transaction
   that is still going on (a savepoint's undo), else now. */
static void
free_block(PoolObject *p, char *block)
{
    if (_PyPmem_InMyTransaction(p)) {
        (void)_PyPmem_RecordFree(p, block);   /* else left to the next open */
    }
    else {
        _PyPmem_BlockFree(p, block);
    }
}

typedef struct {
    repair_state *st;
    alloc_entry **stack;
    size_t depth, allocated;
} release_state;

static int
release_push(release_state *rs, alloc_entry *e)
{
    if (_PyPmem_RESERVE(rs->stack, rs->allocated, rs->depth + 1, 64) < 0) {
        return -1;
    }
    e->dead = 2;                  /* freed below, and counted no more */
    rs->stack[rs->depth++] = e;
    return 0;
}

static int
release_slot(void **slot, int kind, void *arg)
{
    release_state *rs = (release_state *)arg;
    repair_state *st = rs->st;
    char *v = *slot;
    if (v == NULL) {
        return 0;
    }
    if (v < st->lo || v >= st->hi) {
        /* A static object: immortal; a reference (an enum member...):
           the count that the store took, given back.  (What an undo
           left in a block made by the transaction may be anything.) */
        if (kind == _PyStorage_SLOT_OBJECT && _PyPmem_IsRef(st->pool, v)) {
            Py_DECREF((PyObject *)v);
        }
        return 0;
    }
    alloc_entry *e = _PyPmem_FindAlloc(st, v);
    if (!ENTRY_USED(e) || e->dead == 2) {
        return 0;
    }
    if (kind == _PyStorage_SLOT_TABLE) {
        if (!e->object) {
            e->dead = 2;
            free_block(st->pool, ENTRY_BLOCK(st, e));
        }
        return 0;
    }
    PyObject *op = ENTRY_OBJ(st, e);
    if (op != NULL && Py_REFCNT(op) > 0) {
        _PyPmem_SetRefcnt(op, Py_REFCNT(op) - 1);
        if (is_garbage(st, e) && release_push(rs, e) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Free the objects that the undo left unreferenced, and what only they
   referenced, so that an undone transaction leaves nothing behind. */
static void
release_garbage(PoolObject *p, repair_state *st)
{
    release_state rs = {.st = st};
    int err = 0;
    for (size_t i = 0; i < st->nentries && !err; i++) {
        alloc_entry *e = &st->entries[i];
        if (is_garbage(st, e)) {
            err = release_push(&rs, e);
        }
    }
    while (rs.depth > 0 && !err) {
        alloc_entry *e = rs.stack[--rs.depth];
        err = _PyPmem_LetGo(ENTRY_OBJ(st, e), release_slot, &rs) < 0;
        free_block(p, ENTRY_BLOCK(st, e));
    }
    /* Out of memory: what is left is left to the next open. */
    PyMem_RawFree(rs.stack);
}

void
_PyPmem_RepairFinish(PoolObject *p, repair_state *st)
{
    st->undone = 1;
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->object && e->dead != 2) {
            (void)_PyStorage_VisitSlots(ENTRY_OBJ(st, e), count_slot, st);
        }
    }
    (void)_PyPmem_VisitRoots(p, st->lo, count_slot, st);  /* the root's */
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        PyObject *op = ENTRY_OBJ(st, e);
        if (op == NULL || e->dead == 2) {
            continue;
        }
        Py_ssize_t refcnt = (ENTRY_COUNTS(st, e)->dram
                             + ENTRY_COUNTS(st, e)->count);
        if (refcnt <= 0) {
            /* Unreachable: never decref'd again, left to the next open. */
            refcnt = 0;
            if (PyObject_IS_GC(op) && PyObject_GC_IsTracked(op)) {
                PyObject_GC_UnTrack(op);
            }
        }
        _PyPmem_SetRefcnt(op, refcnt);
        if (e->dead) {
            /* What its deallocation did to it, undone; the hash caches
               that tables of this process rely on, made again. */
            if (PyType_HasFeature(Py_TYPE(op), Py_TPFLAGS_HEAPTYPE)) {
                Py_INCREF(Py_TYPE(op));   /* subtype_dealloc dropped it */
            }
            _PyStorage_ResetVolatile(op);
            /* (Not one that nothing refers to: it may be one that the
               transaction made, and freed half-made, a tuple without all
               its items: garbage, released below.) */
            if (refcnt > 0 && !PyDict_Check(op) && !PyList_Check(op)
                && !PySet_Check(op) && !PyByteArray_Check(op)
                && PyObject_Hash(op) == -1)
            {
                PyErr_Clear();
            }
        }
    }
#ifdef Py_REF_DEBUG
    _Py_RefTotal += keys_refs(st, 1) - st->keys_refs;
#endif
    release_garbage(p, st);
    /* The tables that the undone changes made (a dict's new keys...) and
       that no object holds any more. */
    for (size_t i = st->made_from; i < p->ntxmade; i++) {
        alloc_entry *e = _PyPmem_FindAlloc(st, p->txmade[i]);
        if (ENTRY_USED(e) && ENTRY_KEY(st, e) == p->txmade[i]
            && !e->object && ENTRY_COUNTS(st, e)->count == 0
            && e->dead != 2)
        {
            e->dead = 2;
            free_block(p, ENTRY_BLOCK(st, e));
        }
    }
    _PyPmem_AllocTableFree(st);
    PyMem_RawFree(st);
}


/* --- an undo that costs what the transaction changed ---------------------

   The counts above walk every object of the pool, twice: a second for a
   one-line transaction in a pool of a million objects.  Yet only the
   pointers that the undo writes back, and those of the objects that it
   brings back or leaves unreferenced, change the counts.  So a
   transaction records the objects whose operations it ran (touch() in
   manager.c) and the ranges it logged, and an undo counts, before it and
   after, the references that these hold: a W object ("written"), one
   the transaction (or the savepoint's block) touched, made or freed.

     - A touched list, dict or set that keeps its table (its table
       pointer was not logged, or points to a table from before the
       transaction: add_w()) is counted in part: its items in the logged
       ranges (_PyStorage_VisitSlotsIn()), and the items that a change
       of a list's size alone made live or not (count_list_tail()),
       whose memory the undo leaves as it is.  Every other W object is
       counted whole: they are small, or were made or freed by the
       transaction, which wrote them whole.
     - What the transaction wrote into the large blocks it made is not
       logged (manager.c, in_made()) and stays after the undo; the counts
       read each block as it is, before and after, either way.
     - An object's count afterwards is its count before, minus the
       references that W held before the undo, plus those it holds after
       (the references of every other object are the same memory before
       and after).  One that the transaction freed had no count: it gets
       what W holds after.

   This is right when every range the transaction logged lies in a W
   object, its tables, a block it made or freed, or the root.  The undo
   checks that, before it writes anything back, and counts the whole pool
   the old way when it does not hold (or when the transaction outgrew its
   records, or memory ran out).  With PYTHONPMEMCHECKUNDO=1 in the
   environment, every undo also counts the whole pool, and compares: a
   difference is a fatal error (for the tests and the fuzzers). */

/* What the undo knows of an address: a W object, an object that a W
   object points to, a table, a block of the transaction. */
enum {
    U_OBJECT = 1,                 /* an object (else a table) */
    U_DEAD = 2,                   /* freed by the undone part: brought back */
    U_GONE = 4,                   /* freed before it (stays freed), or by
                                     the release of the garbage */
    U_MADE = 8,                   /* a block made by the undone part */
    U_HELD = 16,                  /* a table that a W object holds after */
    U_W = 32,                     /* in u->w */
    U_LIVE = 64,                  /* referenced before the undo */
    U_KEYS = 128,                 /* debug build: a table keys_delta()
                                     counted */
};

typedef struct {
    char *key;                    /* NULL: a free entry */
    Py_ssize_t delta;             /* references after less before */
    unsigned char flags;
} undo_entry;

/* A W object, and how it is counted. */
typedef struct {
    PyObject *obj;
    char whole;                   /* every slot (else those in ranges) */
    char dead;                    /* freed by the undone part */
    void **table;                 /* counted in ranges: its table pointer */
    void *table_before;           /* and the table before the undo */
    Py_ssize_t size;              /* a list's size before the undo */
} undo_w;

struct undo_state {
    PoolObject *pool;
    char *lo, *hi;
    undo_entry *entries;
    size_t mask, used;
    undo_w *w;
    size_t nw, w_allocated;
    _PyStorage_Range *ranges;     /* logged by the undone part, merged */
    size_t nranges;
    _PyStorage_Range *extents;    /* W's blocks and tables, the root */
    size_t nextents, extents_allocated;
    size_t made_from;
    int after;                    /* counting after the undo */
    int failed;                   /* out of memory */
    repair_state *full;           /* the whole pool's counts, or NULL */
    Py_ssize_t keys_refs;         /* debug build: W's tables' dk_refcnt */
};

static int check_undo = -1;       /* PYTHONPMEMCHECKUNDO is set */

static undo_entry *
undo_find(undo_state *u, const void *key)
{
    size_t h = ((uintptr_t)key >> 4) * 0x9E3779B97F4A7C15ULL;
    for (size_t i = h & u->mask; ; i = (i + 1) & u->mask) {
        undo_entry *e = &u->entries[i];
        if (e->key == key || e->key == NULL) {
            return e;
        }
    }
}

/* The entry of key, made if need be; NULL when out of memory. */
static undo_entry *
undo_entry_of(undo_state *u, char *key)
{
    if (2 * (u->used + 1) > u->mask + 1) {
        size_t mask = 2 * u->mask + 1;
        undo_entry *entries = PyMem_RawCalloc(mask + 1, sizeof(undo_entry));
        if (entries == NULL) {
            u->failed = 1;
            return NULL;
        }
        undo_entry *old = u->entries;
        size_t old_mask = u->mask;
        u->entries = entries;
        u->mask = mask;
        for (size_t i = 0; i <= old_mask; i++) {
            if (old[i].key != NULL) {
                *undo_find(u, old[i].key) = old[i];
            }
        }
        PyMem_RawFree(old);
    }
    undo_entry *e = undo_find(u, key);
    if (e->key == NULL) {
        e->key = key;
        u->used++;
    }
    return e;
}

static void
add_extent(undo_state *u, char *start, size_t size)
{
    if (_PyPmem_RESERVE(u->extents, u->extents_allocated, u->nextents + 1,
                        64) < 0)
    {
        u->failed = 1;
        return;
    }
    u->extents[u->nextents++] = (_PyStorage_Range){start, start + size};
}

static void
add_block_extent(undo_state *u, char *block)
{
    add_extent(u, block, _PyPmem_BlockSize(u->pool, block));
}

/* The object in block, of type code code, or NULL for a table (or an
   instance of a class that this process does not have). */
static PyObject *
object_in(PoolObject *p, char *block, uint64_t code)
{
    PyTypeObject *type = _PyPmem_ClassOfCode(p, code);
    return type == NULL
           ? NULL : (PyObject *)(block + PyStorage_PreHeaderSize(type));
}

static void
add_w(undo_state *u, PyObject *op)
{
    undo_entry *e = undo_entry_of(u, (char *)op);
    if (e == NULL || (e->flags & (U_W | U_GONE))) {
        return;
    }
    int dead = (e->flags & U_DEAD) != 0;
    if (_PyPmem_RESERVE(u->w, u->w_allocated, u->nw + 1, 64) < 0) {
        u->failed = 1;
        return;
    }
    e->flags |= U_OBJECT | U_W | (dead ? U_DEAD : 0);
    undo_w *w = &u->w[u->nw++];
    memset(w, 0, sizeof(*w));
    w->obj = op;
    w->dead = (char)dead;
    /* A list, dict or set of the undone part's making is counted whole,
       and so is one whose table pointer it logged. */
    PyTypeObject *base = Py_TYPE(op);
    while (PyType_HasFeature(base, Py_TPFLAGS_HEAPTYPE)) {
        base = base->tp_base;
    }
    void **table = NULL;
    void *inside = NULL;          /* a table in the object itself */
    if (base == &PyList_Type) {
        table = (void **)&((PyListObject *)op)->ob_item;
    }
    else if (base == &PyDict_Type) {
        table = (void **)&((PyDictObject *)op)->ma_keys;
    }
    else if (base == &PySet_Type || base == &PyFrozenSet_Type) {
        table = (void **)&((PySetObject *)op)->table;
        inside = ((PySetObject *)op)->smalltable;
    }
    w->whole = dead || (e->flags & U_MADE) || table == NULL;
    if (!w->whole && _PyStorage_InRanges(u->ranges, u->nranges, table)) {
        /* Its table pointer was logged (with the fields around it, most
           often): the table changes back when it is none, none of the
           pool's, the set's small table, or one that the undone part
           made.  A table of the pool from before the undone part is the
           one the undo writes back (no operation takes another object's
           table: they make one). */
        char *t = *table;
        undo_entry *te = t == NULL || t < u->lo || t >= u->hi
                         ? NULL : undo_find(u, t);
        w->whole = te == NULL || t == inside
                   || (te->key == t && (te->flags & U_MADE));
    }
    if (!w->whole) {
        w->table = table;
        w->table_before = *table;
        w->size = Py_SIZE(op);
    }
    char *block = (char *)op - PyStorage_PreHeaderSize(Py_TYPE(op));
    add_block_extent(u, block);
}

/* A reference that a W object (or the root) holds: -1 before the undo,
   +1 after; a table that one holds: an extent, and held. */
static int
undo_count_slot(void **slot, int kind, void *arg)
{
    undo_state *u = (undo_state *)arg;
    char *v = *slot;
    if (v == NULL || v < u->lo || v >= u->hi) {
        return 0;
    }
    if (kind == _PyStorage_SLOT_TABLE) {
        if (!u->after) {
            add_block_extent(u, v);
        }
        else {
            undo_entry *e = undo_entry_of(u, v);
            if (e != NULL) {
                e->flags |= U_HELD;
            }
        }
        return 0;
    }
    if (kind != _PyStorage_SLOT_OBJECT) {
        return 0;
    }
    undo_entry *e = undo_entry_of(u, v);
    if (e != NULL) {
        e->flags |= U_OBJECT;
        e->delta += u->after ? 1 : -1;
    }
    return 0;
}

static void
count_w(undo_state *u, undo_w *w)
{
    if (w->whole) {
        (void)_PyStorage_VisitSlots(w->obj, undo_count_slot, u);
    }
    else {
        (void)_PyStorage_VisitSlotsIn(w->obj, u->ranges, u->nranges,
                                      undo_count_slot, u);
    }
}

static int
count_outside(void **slot, int kind, void *arg)
{
    undo_state *u = (undo_state *)arg;
    if (kind == _PyStorage_SLOT_OBJECT
        && _PyStorage_InRanges(u->ranges, u->nranges, slot))
    {
        return 0;
    }
    return undo_count_slot(slot, kind, arg);
}

/* After the undo: the items of a list counted in ranges that its size
   alone made live or not (the undo wrote back its size, not them). */
static void
count_list_tail(undo_state *u, undo_w *w)
{
    PyListObject *l = (PyListObject *)w->obj;
    Py_ssize_t before = w->size, after = Py_SIZE(l);
    for (Py_ssize_t i = Py_MIN(before, after); i < Py_MAX(before, after);
         i++)
    {
        PyObject **slot = &l->ob_item[i];
        if (!_PyStorage_InRanges(u->ranges, u->nranges, slot)) {
            /* Counted live on one side only: after, +1; before, -1. */
            u->after = i < after;
            (void)undo_count_slot((void **)slot, _PyStorage_SLOT_OBJECT, u);
        }
    }
    u->after = 1;
}

static int
compare_ranges(const void *a, const void *b)
{
    const char *x = ((const _PyStorage_Range *)a)->start;
    const char *y = ((const _PyStorage_Range *)b)->start;
    return x < y ? -1 : x > y;
}

/* Sort ranges[0:n] and merge those that overlap or touch: the count. */
static size_t
merge_ranges(_PyStorage_Range *ranges, size_t n)
{
    if (n == 0) {
        return 0;
    }
    qsort(ranges, n, sizeof(*ranges), compare_ranges);
    size_t k = 0;
    for (size_t i = 1; i < n; i++) {
        if (ranges[i].start <= ranges[k].end) {
            ranges[k].end = Py_MAX(ranges[k].end, ranges[i].end);
        }
        else {
            ranges[++k] = ranges[i];
        }
    }
    return k + 1;
}

/* Does every range lie in an extent?  The extents are sorted (and those
   that overlap merged) first. */
static int
ranges_covered(undo_state *u)
{
    u->nextents = merge_ranges(u->extents, u->nextents);
    size_t j = 0;
    for (size_t i = 0; i < u->nranges; i++) {
        while (j < u->nextents && u->extents[j].end <= u->ranges[i].start) {
            j++;
        }
        if (j == u->nextents || u->extents[j].start > u->ranges[i].start
            || u->extents[j].end < u->ranges[i].end)
        {
            if (check_undo) {
                fprintf(stderr, "pmem undo: the logged range %p+%zu is in "
                        "no object the transaction touched: the whole "
                        "pool is counted\n", (void *)u->ranges[i].start,
                        (size_t)(u->ranges[i].end - u->ranges[i].start));
            }
            return 0;
        }
    }
    return 1;
}

static int undo_garbage(undo_entry *e);

#ifdef Py_REF_DEBUG
/* The sum of dk_refcnt of the tables that W's live dicts hold (after
   the undo, with those still to be let go, as keys_refs() does). */
static Py_ssize_t
keys_delta(undo_state *u)
{
    Py_ssize_t total = 0;
    for (size_t i = 0; i < u->nw; i++) {
        PyObject *op = u->w[i].obj;
        undo_entry *e = undo_find(u, op);
        if (!PyDict_Check(op) || (e->flags & U_GONE)
            || (!u->after && (e->flags & U_DEAD))
            || (Py_REFCNT(op) == 0 && !(u->after && undo_garbage(e))))
        {
            continue;
        }
        char *keys = (char *)((PyDictObject *)op)->ma_keys;
        if (keys < u->lo || keys >= u->hi) {
            continue;
        }
        undo_entry *t = undo_entry_of(u, keys);
        if (t == NULL || (t->flags & U_KEYS)) {
            continue;
        }
        t->flags |= U_KEYS;
        total += ((PyDictKeysObject *)keys)->dk_refcnt;
    }
    for (size_t i = 0; i <= u->mask; i++) {
        u->entries[i].flags &= ~U_KEYS;
    }
    return total;
}
#endif

static void
undo_state_free(undo_state *u)
{
    PyMem_RawFree(u->entries);
    PyMem_RawFree(u->w);
    PyMem_RawFree(u->ranges);
    PyMem_RawFree(u->extents);
    PyMem_RawFree(u);
}

/* Before the undo of p's transaction (sp NULL) or of the savepoint sp:
   what the counts need.  NULL when they cannot be had (then they are
   left as they are). */
undo_state *
_PyPmem_UndoPrepare(PoolObject *p, const struct savepoint *sp)
{
    if (check_undo < 0) {
        const char *env = getenv("PYTHONPMEMCHECKUNDO");
        check_undo = env != NULL && env[0] != '\0' && strcmp(env, "0") != 0;
    }
    size_t freed_from = sp == NULL ? 0 : sp->ntxfreed;
    size_t made_from = sp == NULL ? 0 : sp->ntxmade;
    undo_state *u = PyMem_RawCalloc(1, sizeof(*u));
    if (u == NULL) {
        return NULL;
    }
    u->pool = p;
    u->lo = (char *)p->pop;
    u->hi = u->lo + p->size;
    u->made_from = made_from;
    size_t ranges_from = sp == NULL ? 0 : sp->nranges;
    size_t touched_from = sp == NULL ? 0 : sp->ntouched;
    u->mask = 1023;
    u->entries = PyMem_RawCalloc(u->mask + 1, sizeof(undo_entry));
    size_t nranges = p->nranges - ranges_from;
    u->ranges = PyMem_RawMalloc(Py_MAX(nranges, 1) * sizeof(*u->ranges));
    if (p->overflow || u->entries == NULL || u->ranges == NULL) {
        goto whole_pool;
    }
    memcpy(u->ranges, p->ranges + ranges_from, nranges * sizeof(*u->ranges));
    u->nranges = merge_ranges(u->ranges, nranges);

    /* The blocks of the transaction: freed before the savepoint (they
       stay so), freed by the undone part, made by it. */
    for (size_t i = 0; i < p->ntxfreed && !u->failed; i++) {
        char *block = p->txfreed[i];
        PyObject *op = object_in(p, block,
                                 _PyPmem_BlockCode(p, block));
        undo_entry *e = undo_entry_of(u, op != NULL ? (char *)op : block);
        if (e != NULL) {
            e->flags |= (op != NULL ? U_OBJECT : 0)
                        | (i < freed_from ? U_GONE : U_DEAD);
        }
        if (i >= freed_from) {
            add_block_extent(u, block);
        }
    }
    for (size_t i = made_from; i < p->ntxmade && !u->failed; i++) {
        char *block = p->txmade[i];
        PyObject *op = object_in(p, block,
                                 _PyPmem_BlockCode(p, block));
        undo_entry *e = undo_entry_of(u, op != NULL ? (char *)op : block);
        if (e != NULL) {
            e->flags |= U_MADE | (op != NULL ? U_OBJECT : 0);
        }
        add_block_extent(u, block);
    }
    /* W: those objects, and the objects the undone part touched. */
    for (size_t i = freed_from; i < p->ntxfreed && !u->failed; i++) {
        char *block = p->txfreed[i];
        PyObject *op = object_in(p, block,
                                 _PyPmem_BlockCode(p, block));
        if (op != NULL) {
            add_w(u, op);
        }
    }
    for (size_t i = made_from; i < p->ntxmade && !u->failed; i++) {
        char *block = p->txmade[i];
        PyObject *op = object_in(p, block,
                                 _PyPmem_BlockCode(p, block));
        if (op != NULL) {
            add_w(u, op);
        }
    }
    for (size_t i = touched_from; i < p->ntouched && !u->failed; i++) {
        add_w(u, p->touched[i]);
    }
    /* And the root's objects, which the pool's own code changes in
       operations of no object (the type table, the references). */
    for (int k = 0; k < POOL_NROOTS && !u->failed; k++) {
        PyObject *held = _PyPmem_Root(p, u->lo, k);
        if (held != NULL) {
            add_w(u, held);
        }
    }
    add_extent(u, (char *)p->root, sizeof(struct pool_root));

    /* Before the undo: W's references, less. */
    for (size_t i = 0; i < u->nw && !u->failed; i++) {
        if (!u->w[i].dead) {
            count_w(u, &u->w[i]);
        }
    }
    (void)_PyPmem_VisitRoots(p, u->lo, undo_count_slot, u);
    if (u->failed || !ranges_covered(u)) {
        goto whole_pool;
    }
    for (size_t i = 0; i <= u->mask; i++) {
        undo_entry *e = &u->entries[i];
        if (e->key != NULL && (e->flags & U_OBJECT)
            && !(e->flags & (U_DEAD | U_GONE))
            && Py_REFCNT((PyObject *)e->key) > 0)
        {
            e->flags |= U_LIVE;
        }
    }
#ifdef Py_REF_DEBUG
    u->keys_refs = keys_delta(u);
#endif
    if (check_undo) {
        u->full = _PyPmem_RepairPrepare(p, freed_from, made_from);
    }
    return u;

whole_pool:
    PyMem_RawFree(u->entries);
    PyMem_RawFree(u->w);
    PyMem_RawFree(u->ranges);
    PyMem_RawFree(u->extents);
    memset(u, 0, sizeof(*u));
    u->pool = p;
    u->full = _PyPmem_RepairPrepare(p, freed_from, made_from);
    if (u->full == NULL) {
        PyMem_RawFree(u);
        return NULL;
    }
    return u;
}

/* Compare the counts that the whole pool's walk finds after the undo with
   those that u set: the debugging check of PYTHONPMEMCHECKUNDO. */
static void
check_counts(PoolObject *p, repair_state *st)
{
    st->undone = 1;
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->object && e->dead != 2) {
            (void)_PyStorage_VisitSlots(ENTRY_OBJ(st, e), count_slot, st);
        }
    }
    (void)_PyPmem_VisitRoots(p, st->lo, count_slot, st);
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        PyObject *op = ENTRY_OBJ(st, e);
        if (op == NULL || e->dead == 2) {
            continue;
        }
        alloc_counts *c = ENTRY_COUNTS(st, e);
        Py_ssize_t expected = Py_MAX(c->dram + c->count, 0);
        if (Py_REFCNT(op) != expected) {
            fprintf(stderr, "pmem undo: a %s object at %p has %zd "
                    "references after the undo; the whole pool counts %zd "
                    "(%zd from DRAM)%s\n", Py_TYPE(op)->tp_name, (void *)op,
                    Py_REFCNT(op), expected, c->dram,
                    e->dead ? ", brought back" : "");
            Py_FatalError("PYTHONPMEMCHECKUNDO: the undo's counts differ "
                          "from the whole pool's");
        }
    }
    _PyPmem_AllocTableFree(st);
    PyMem_RawFree(st);
}

/* Is e's object garbage: left with no reference by the undo, which was
   live before it or brought back by it, and no weak reference waits? */
static int
undo_garbage(undo_entry *e)
{
    PyObject *op = (PyObject *)e->key;
    if (!(e->flags & U_OBJECT) || (e->flags & U_GONE)
        || !(e->flags & (U_LIVE | U_DEAD)) || Py_REFCNT(op) != 0)
    {
        return 0;
    }
    Py_ssize_t off = Py_TYPE(op)->tp_weaklistoffset;
    return off == 0 || *(PyObject **)((char *)op + off) == NULL;
}

typedef struct {
    undo_state *u;
    PyObject **stack;
    size_t depth, allocated;
} undo_release;

static int
undo_release_push(undo_release *rs, undo_entry *e)
{
    if (_PyPmem_RESERVE(rs->stack, rs->allocated, rs->depth + 1, 64) < 0) {
        return -1;
    }
    e->flags |= U_GONE;           /* freed below, and counted no more */
    rs->stack[rs->depth++] = (PyObject *)e->key;
    return 0;
}

static int
undo_release_slot(void **slot, int kind, void *arg)
{
    undo_release *rs = (undo_release *)arg;
    undo_state *u = rs->u;
    char *v = *slot;
    if (v == NULL) {
        return 0;
    }
    if (v < u->lo || v >= u->hi) {
        /* See release_slot(). */
        if (kind == _PyStorage_SLOT_OBJECT && _PyPmem_IsRef(u->pool, v)) {
            Py_DECREF((PyObject *)v);
        }
        return 0;
    }
    undo_entry *e = undo_entry_of(u, v);
    if (e == NULL) {
        return -1;
    }
    if (e->flags & U_GONE) {
        return 0;
    }
    if (kind == _PyStorage_SLOT_TABLE) {
        e->flags |= U_GONE;
        free_block(u->pool, v);
        return 0;
    }
    if (kind != _PyStorage_SLOT_OBJECT) {
        return 0;
    }
    PyObject *op = (PyObject *)v;
    if (!(e->flags & U_OBJECT)) {
        /* An object that nothing of the undo concerned: live. */
        e->flags |= U_OBJECT | U_LIVE;
    }
    if (Py_REFCNT(op) > 0) {
        _PyPmem_SetRefcnt(op, Py_REFCNT(op) - 1);
        if (undo_garbage(e) && undo_release_push(rs, e) < 0) {
            return -1;
        }
    }
    return 0;
}

/* After the undo: W's references, more; the counts set; the garbage
   freed. */
void
_PyPmem_UndoFinish(PoolObject *p, undo_state *u)
{
    if (u->entries == NULL) {
        /* The whole pool, counted. */
        _PyPmem_RepairFinish(p, u->full);
        PyMem_RawFree(u);
        return;
    }
    u->after = 1;
    for (size_t i = 0; i < u->nw; i++) {
        undo_w *w = &u->w[i];
        count_w(u, w);
        if (w->table == NULL) {
            continue;
        }
        if (*w->table != w->table_before) {
            /* Not what add_w() expects: the references of the table
               written back are all counted (those of the table before it
               outside the ranges are not taken off: they stay alive). */
            if (check_undo) {
                fprintf(stderr, "pmem undo: the table of a %s object "
                        "changed back to one from before the transaction\n",
                        Py_TYPE(w->obj)->tp_name);
                Py_FatalError("PYTHONPMEMCHECKUNDO: a table changed");
            }
            (void)_PyStorage_VisitSlots(w->obj, count_outside, u);
        }
        else if (PyList_Check(w->obj)) {
            count_list_tail(u, w);
        }
    }
    (void)_PyPmem_VisitRoots(p, u->lo, undo_count_slot, u);
    /* (Out of memory in the walks: counts short of some references, which
       only keeps objects alive, as a refused free does.) */
    for (size_t i = 0; i <= u->mask; i++) {
        undo_entry *e = &u->entries[i];
        if (e->key == NULL || !(e->flags & U_OBJECT)
            || (e->flags & U_GONE))
        {
            continue;
        }
        PyObject *op = (PyObject *)e->key;
        int dead = (e->flags & U_DEAD) != 0;
        if (e->delta == 0 && !dead) {
            continue;
        }
        Py_ssize_t refcnt = (dead ? 0 : Py_REFCNT(op)) + e->delta;
        if (refcnt <= 0) {
            /* Unreachable: never decref'd again, left to the next open. */
            refcnt = 0;
            if (PyObject_IS_GC(op) && PyObject_GC_IsTracked(op)) {
                PyObject_GC_UnTrack(op);
            }
        }
        _PyPmem_SetRefcnt(op, refcnt);
        if (dead) {
            /* As _PyPmem_RepairFinish() does. */
            if (PyType_HasFeature(Py_TYPE(op), Py_TPFLAGS_HEAPTYPE)) {
                Py_INCREF(Py_TYPE(op));
            }
            _PyStorage_ResetVolatile(op);
            if (refcnt > 0 && !PyDict_Check(op) && !PyList_Check(op)
                && !PySet_Check(op) && !PyByteArray_Check(op)
                && PyObject_Hash(op) == -1)
            {
                PyErr_Clear();
            }
        }
    }
#ifdef Py_REF_DEBUG
    _Py_RefTotal += keys_delta(u) - u->keys_refs;
#endif
    if (u->full != NULL) {
        check_counts(p, u->full);
    }
    /* The garbage, and what only it held. */
    undo_release rs = {.u = u};
    int err = 0;
    for (size_t i = 0; i <= u->mask && !err; i++) {
        undo_entry *e = &u->entries[i];
        if (e->key != NULL && undo_garbage(e)) {
            err = undo_release_push(&rs, e);
        }
    }
    while (rs.depth > 0 && !err) {
        PyObject *op = rs.stack[--rs.depth];
        char *block = (char *)op - PyStorage_PreHeaderSize(Py_TYPE(op));
        err = _PyPmem_LetGo(op, undo_release_slot, &rs) < 0;
        free_block(p, block);
    }
    PyMem_RawFree(rs.stack);
    /* The tables that the undone changes made and that no object holds
       any more. */
    for (size_t i = u->made_from; i < p->ntxmade; i++) {
        undo_entry *e = undo_find(u, p->txmade[i]);
        if (e->key == p->txmade[i] && !(e->flags & (U_OBJECT | U_HELD
                                                    | U_GONE)))
        {
            e->flags |= U_GONE;
            free_block(p, p->txmade[i]);
        }
    }
    undo_state_free(u);
}
