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
            if (e->key != NULL && e->obj == NULL) {
                e->count++;
            }
        }
        return 0;
    }
    if (kind != _PyStorage_SLOT_OBJECT) {
        return 0;
    }
    if (v >= st->lo && v < st->hi) {
        alloc_entry *e = _PyPmem_FindAlloc(st, v);
        if (e->key != NULL && e->obj != NULL) {
            e->count++;
        }
    }
    return 0;
}

/* Whether e is an object that the undo left with no reference, which
   was live before it (or brought back by it): what the undone changes
   made, or what only they referred to. */
static int
is_garbage(alloc_entry *e)
{
    if (e->obj == NULL || e->dead == 2 || Py_REFCNT(e->obj) != 0
        || !(e->live || e->dead == 1))
    {
        return 0;
    }
    /* A weak reference still points to it: left to the next open.  (A
       class statement's instances keep theirs in the pre-header.) */
    Py_ssize_t off = Py_TYPE(e->obj)->tp_weaklistoffset;
    return off == 0 || *(PyObject **)((char *)e->obj + off) == NULL;
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
        for (size_t i = 0; i <= st->mask; i++) {
            alloc_entry *e = &st->entries[i];
            if (e->obj == NULL || !PyDict_Check(e->obj)
                || e->dead
                || (Py_REFCNT(e->obj) == 0 && !(undone && is_garbage(e))))
            {
                continue;
            }
            char *keys = (char *)((PyDictObject *)e->obj)->ma_keys;
            alloc_entry *t = keys < st->lo || keys >= st->hi
                             ? NULL : _PyPmem_FindAlloc(st, keys);
            if (t == NULL || t->key == NULL || t->mark == !pass) {
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
    size_t n;
    alloc_item *items = _PyPmem_ListAllocations(p->pop, &n);
    repair_state *st = items == NULL ? NULL : PyMem_RawCalloc(1, sizeof(*st));
    if (st == NULL || _PyPmem_AllocTableInit(st, n) < 0) {
        /* The counts stay as they are: better than no abort. */
        PyErr_Clear();
        PyMem_RawFree(items);
        PyMem_RawFree(st);
        return NULL;
    }
    st->pool = p;
    st->made_from = made_from;
    st->lo = (char *)p->pop;
    st->hi = st->lo + p->size;
    for (size_t i = 0; i < n; i++) {
        char *block = items[i].block;
        PyTypeObject *type = _PyPmem_ClassOfCode(p, items[i].code);
        char *key = type == NULL
                    ? block : block + PyStorage_PreHeaderSize(type);
        alloc_entry *e = _PyPmem_FindAlloc(st, key);
        e->key = key;
        e->block = block;
        e->obj = type == NULL ? NULL : (PyObject *)key;
    }
    PyMem_RawFree(items);
    for (size_t i = 0; i < p->ntxfreed; i++) {
        PMEMoid freed = pmemobj_oid(p->txfreed[i]);
        PyTypeObject *type = _PyPmem_ClassOfCode(p, pmemobj_type_num(freed));
        if (type != NULL) {
            alloc_entry *e = _PyPmem_FindAlloc(
                st, p->txfreed[i] + PyStorage_PreHeaderSize(type));
            if (e->key != NULL) {
                e->dead = i < from ? 2 : 1;
            }
        }
    }
    for (size_t i = 0; i <= st->mask; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->obj != NULL && !e->dead) {
            (void)_PyStorage_VisitSlots(e->obj, count_slot, st);
        }
    }
    (void)_PyPmem_VisitRoots(p, st->lo, count_slot, st);  /* the root's */
    for (size_t i = 0; i <= st->mask; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->obj != NULL) {
            e->dram = e->dead ? 0 : Py_REFCNT(e->obj) - e->count;
            e->live = !e->dead && Py_REFCNT(e->obj) > 0;
            e->count = 0;
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
        PMEMoid oid = pmemobj_oid(block);
        pmemobj_free(&oid);
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
    if (e->key == NULL || e->dead == 2) {
        return 0;
    }
    if (kind == _PyStorage_SLOT_TABLE) {
        if (e->obj == NULL) {
            e->dead = 2;
            free_block(st->pool, e->block);
        }
        return 0;
    }
    if (e->obj != NULL && Py_REFCNT(e->obj) > 0) {
        _PyPmem_SetRefcnt(e->obj, Py_REFCNT(e->obj) - 1);
        if (is_garbage(e) && release_push(rs, e) < 0) {
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
    for (size_t i = 0; i <= st->mask && !err; i++) {
        alloc_entry *e = &st->entries[i];
        if (is_garbage(e)) {
            err = release_push(&rs, e);
        }
    }
    while (rs.depth > 0 && !err) {
        alloc_entry *e = rs.stack[--rs.depth];
        err = _PyPmem_LetGo(e->obj, release_slot, &rs) < 0;
        free_block(p, e->block);
    }
    /* Out of memory: what is left is left to the next open. */
    PyMem_RawFree(rs.stack);
}

void
_PyPmem_RepairFinish(PoolObject *p, repair_state *st)
{
    st->undone = 1;
    for (size_t i = 0; i <= st->mask; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->obj != NULL && e->dead != 2) {
            (void)_PyStorage_VisitSlots(e->obj, count_slot, st);
        }
    }
    (void)_PyPmem_VisitRoots(p, st->lo, count_slot, st);  /* the root's */
    for (size_t i = 0; i <= st->mask; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->obj == NULL || e->dead == 2) {
            continue;
        }
        Py_ssize_t refcnt = e->dram + e->count;
        if (refcnt <= 0) {
            /* Unreachable: never decref'd again, left to the next open. */
            refcnt = 0;
            if (PyObject_IS_GC(e->obj) && PyObject_GC_IsTracked(e->obj)) {
                PyObject_GC_UnTrack(e->obj);
            }
        }
        _PyPmem_SetRefcnt(e->obj, refcnt);
        if (e->dead) {
            /* What its deallocation did to it, undone; the hash caches
               that tables of this process rely on, made again. */
            if (PyType_HasFeature(Py_TYPE(e->obj), Py_TPFLAGS_HEAPTYPE)) {
                Py_INCREF(Py_TYPE(e->obj));   /* subtype_dealloc dropped it */
            }
            _PyStorage_ResetVolatile(e->obj);
            /* (Not one that nothing refers to: it may be one that the
               transaction made, and freed half-made, a tuple without all
               its items: garbage, released below.) */
            if (refcnt > 0 && !PyDict_Check(e->obj) && !PyList_Check(e->obj)
                && !PySet_Check(e->obj) && !PyByteArray_Check(e->obj)
                && PyObject_Hash(e->obj) == -1)
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
        if (e->key == p->txmade[i] && e->obj == NULL && e->count == 0
            && e->dead != 2)
        {
            e->dead = 2;
            free_block(p, e->block);
        }
    }
    PyMem_RawFree(st->entries);
    PyMem_RawFree(st);
}
