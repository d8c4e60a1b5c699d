/* _pmem's open pass (Doc/pmem/design.rst): the pool's objects made this
 * process's -- types, pointers moved with the mapping and to this
 * binary's constants, what the root reaches and its counts, unreachable
 * allocations freed, hash tables rebuilt -- every step such that a crash
 * in it is finished by the next open.
 */

#include "pool.h"
#include "descrobject.h"          // PyMemberDescrObject

/* --- the open pass ------------------------------------------------------- */

static int
problem(open_state *st, const char *what)
{
    st->problem = what;
    return 1;
}

/* Flush the run of slots that the pass rewrote. */
static void
flush_run(open_state *st)
{
    if (st->run_hi != NULL) {
        pmemobj_flush(st->pool->pop, st->run_lo,
                      (size_t)(st->run_hi - st->run_lo));
        st->run_lo = st->run_hi = NULL;
    }
}

/* The pass rewrote *slot: flushed with the run of its neighbours (the
   slots of a table are rewritten one after another; a flush of each
   would evict its line before the next slot of the line is read, and on
   a file that is not persistent memory, be an msync() each). */
static inline void
rewritten(open_state *st, void **slot)
{
    char *s = (char *)slot;
    st->dirty = 1;
    if (st->run_hi != NULL && s + sizeof(*slot) + 64 >= st->run_lo
        && s <= st->run_hi + 64)
    {
        st->run_lo = Py_MIN(st->run_lo, s);
        st->run_hi = Py_MAX(st->run_hi, s + sizeof(*slot));
        return;
    }
    flush_run(st);
    st->run_lo = s;
    st->run_hi = s + sizeof(*slot);
}

/* Every pointer an object holds must land on an object or table of the
   pool, or on a static object of the interpreter (rewritten for this
   process's binary). */
static int
check_slot(void **slot, int kind, void *arg)
{
    open_state *st = (open_state *)arg;
    if (kind == _PyStorage_SLOT_EXTENT) {
        /* An object's block, or a table, holds what its header says. */
        _PyStorage_Extent *x = (_PyStorage_Extent *)slot;
        char *start = (char *)x->start;
        alloc_entry *e = _PyPmem_FindAlloc(st, start);
        char *block = ENTRY_BLOCK(st, e);
        size_t usable = !ENTRY_USED(e) ? 0 : _PyPmem_BlockSize(st->pool, block)
                                             - (size_t)(start - block);
        return x->size <= usable
               ? 0 : problem(st, "a header that its memory cannot hold "
                                 "(corrupt sizes or items)");
    }
    char *v = *slot;
    if (v == NULL) {
        return 0;
    }
    size_t size = (size_t)(st->hi - st->lo);
    for (int k = 0; k < 5 && st->old[k] != NULL; k++) {
        if (v >= st->old[k] && v < st->old[k] + size) {
            /* Mapped elsewhere last time: moved with the pool. */
            v = st->lo + (v - st->old[k]);
            *slot = v;
            rewritten(st, slot);
            break;
        }
    }
    if (v >= st->lo && v < st->hi) {
        if (kind == _PyStorage_SLOT_INTERIOR) {
            return 0;             /* the owner checks where it lands */
        }
        alloc_entry *e = _PyPmem_FindAlloc(st, v);
        if (kind == _PyStorage_SLOT_TABLE) {
            /* A table of the pool, or a set's own small table (which
               _PyStorage_VisitSlots() skips, but not when the set has
               just moved). */
            char *small = (char *)slot - offsetof(PySetObject, table)
                          + offsetof(PySetObject, smalltable);
            return (ENTRY_USED(e) && !e->object) || v == small
                   ? 0 : problem(st, "a table pointer that lands on no "
                                     "table");
        }
        return e->object
               ? 0 : problem(st, "a pointer that lands on no object");
    }
    if (kind == _PyStorage_SLOT_INTERIOR) {
        return problem(st, "a pointer outside the pool");
    }
    /* A reference (an enum member...): made to point to its object in
       this process. */
    char *ref = kind == _PyStorage_SLOT_OBJECT && st->nref_moves != 0
                ? _PyPmem_FindRef(st, v) : NULL;
    if (ref != NULL) {
        if (ref != v) {
            *slot = ref;
            rewritten(st, slot);
        }
        return 0;
    }
    /* A static object of the binary whose None is at x, seen from this
       process's binary: v + ((char *)Py_None - x). */
    char *none = (char *)Py_None;
    if (_PyStorage_IsStaticTarget(v + (none - st->target))) {
        return 0;
    }
    if (st->source != NULL
        && _PyStorage_IsStaticTarget(v + (none - st->source)))
    {
        *slot = v + (st->target - st->source);
        rewritten(st, slot);
        return 0;
    }
    return problem(st, "a pointer to neither the pool nor a constant of "
                       "the interpreter");
}

/* Mark what a reachable object holds; push objects seen the first time.
   1 when it holds a broken object. */
static int
mark_slot(void **slot, int kind, void *arg)
{
    mark_state *ms = (mark_state *)arg;
    char *v = *slot;
    if (v == NULL) {
        return 0;
    }
    if (v < ms->st->lo || v >= ms->st->hi) {
        /* A static object: immortal, no count to take.  A reference (an
           enum member...): counted, as a store into the pool counts it
           (its count, 2**30 more, never reaches 0 whatever an undo
           does: _PyStorage_KeepForever()). */
        if (kind == _PyStorage_SLOT_OBJECT
            && _PyPmem_IsRef(ms->st->pool, v))
        {
            Py_INCREF((PyObject *)v);
        }
        return 0;
    }
    if (kind == _PyStorage_SLOT_TABLE) {
        alloc_entry *e = _PyPmem_FindAlloc(ms->st, v);
        if (ENTRY_USED(e)) {
            e->mark = 1;
        }
        return 0;
    }
    alloc_entry *e = _PyPmem_EntryOfObject(ms->st, (PyObject *)v);
    if (e == NULL || e->broken != 0) {
        ms->bad = e;
        return 1;
    }
    if (e->mark) {
        _PyPmem_SetRefcnt((PyObject *)v, Py_REFCNT((PyObject *)v) + 1);
        return 0;
    }
    e->mark = 1;
    _PyPmem_Progress("reachable", ++ms->marked, ms->st->count);
    /* The last process's count, gone (whatever it was: even one that
       looks immortal). */
    ((PyObject *)v)->ob_refcnt = 0;
    _PyPmem_SetRefcnt((PyObject *)v, 1);
    return _PyPmem_IsLeaf((PyObject *)v) ? 0
           : _PyPmem_MarkPush(ms, (PyObject *)v);
}

/* The pool's type table: a list of the pool whose items are a table of
   the pool, its pointers checked (they may have to move with the pool).
   Sets *table (NULL when the pool has none) and *ntypes.  0, or -1 with
   PoolError set. */
static int
read_type_table(open_state *st, PyObject **table, Py_ssize_t *ntypes)
{
    PoolObject *p = st->pool;
    *table = NULL;
    *ntypes = 0;
    if (p->root->types == 0) {
        return 0;
    }
    PyObject *list = (PyObject *)(st->lo + p->root->types);
    alloc_entry *e = _PyPmem_EntryOfObject(st, list);
    if (e == NULL || !PyList_CheckExact(list)) {
        PyErr_Format(p->error, "pool %R is corrupt: its type table is "
                     "not a list of the pool", p->path);
        return -1;
    }
    st->source = (char *)(uintptr_t)p->root->anchor;
    st->target = (char *)Py_None;
    if (_PyStorage_CheckSlots(list, check_slot, st) != 0) {
        PyErr_Format(p->error, "pool %R is corrupt: its type table "
                     "holds %s", p->path,
                     st->problem ? st->problem : "what it cannot");
        return -1;
    }
    Py_ssize_t size = PyList_GET_SIZE(list);
    if (size != 0) {
        alloc_entry *items = _PyPmem_FindAlloc(
            st, ((PyListObject *)list)->ob_item);
        if (!ENTRY_USED(items) || items->object) {
            PyErr_Format(p->error, "pool %R is corrupt: its type table's "
                         "items are not a table of the pool", p->path);
            return -1;
        }
    }
    *table = list;
    *ntypes = size;
    return 0;
}

/* Entry index of the type table gets its class in p->classes (None
   until then) and its code in p->type_codes: the class of an earlier
   entry with the same name (a class entered again after its name was a
   placeholder's), or the one _PyPmem_ClassOfEntry() finds or makes.
   0, or -1 with an exception set. */
static int
resolve_entry(open_state *st, PyObject *table, Py_ssize_t index)
{
    PoolObject *p = st->pool;
    PyObject *name = PyList_GET_ITEM(table, index);
    alloc_entry *ne = _PyPmem_EntryOfObject(st, name);
    if (ne == NULL || !PyUnicode_CheckExact(name)) {
        PyErr_Format(p->error, "pool %R is corrupt: its type "
                     "table holds a non-str", p->path);
        return -1;
    }
    PyObject *cls = NULL;
    for (Py_ssize_t k = 0; k < index && cls == NULL; k++) {
        PyObject *other = PyList_GET_ITEM(table, k);
        if (PyList_GET_ITEM(p->classes, k) != Py_None
            && PyUnicode_Compare(other, name) == 0)
        {
            cls = Py_NewRef(PyList_GET_ITEM(p->classes, k));
        }
    }
    if (cls == NULL) {
        cls = _PyPmem_ClassOfEntry(p, name);
        if (cls == NULL) {
            return -1;
        }
    }
    PyObject *code = PyLong_FromSsize_t(POOL_INSTANCE + index);
    int r = code == NULL ? -1 : PyDict_SetItem(p->type_codes, cls, code);
    Py_XDECREF(code);
    PyList_SetItem(p->classes, index, cls);   /* steals cls */
    return r;
}

/* The instance at the start of block gets its class, which must fit in
   the block, and its entry in the allocation table.  0, or -1 with
   PoolError set. */
static int
place_instance(open_state *st, char *block, alloc_entry *e,
               PyTypeObject *type)
{
    size_t presize = PyStorage_PreHeaderSize(type);
    size_t usable = _PyPmem_BlockSize(st->pool, block);
    if (usable < presize + (size_t)type->tp_basicsize) {
        PyErr_Format(st->pool->error, "pool %R is corrupt: it holds %s "
                     "instances smaller than their layout", st->pool->path,
                     type->tp_name);
        return -1;
    }
    PyObject *op = (PyObject *)(block + presize);
    Py_SET_TYPE(op, type);
    Py_INCREF(type);          /* an instance's reference */
    _PyPmem_SetEntry(st, e, (char *)op, block, 1);
    return 0;
}

/* The volatile slots of a class (those its __pmem_volatile__ names: a
   process's caches, which the store rule does not store, and which an
   earlier build's pool may hold): up to 4 offsets in off; their number,
   or -1 with an exception set. */
#define MAX_VOLATILE_SLOTS 4
static int
volatile_slots(PyTypeObject *type, Py_ssize_t *off)
{
    PyObject *names = NULL;
    if (PyObject_GetOptionalAttrString((PyObject *)type, "__pmem_volatile__",
                                       &names) < 0)
    {
        return -1;
    }
    int n = 0;
    for (Py_ssize_t k = 0; names != NULL && PyTuple_Check(names)
                           && k < PyTuple_GET_SIZE(names)
                           && n < MAX_VOLATILE_SLOTS; k++)
    {
        PyObject *descr = _PyType_Lookup(type, PyTuple_GET_ITEM(names, k));
        if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
            if (m->type == Py_T_OBJECT_EX) {
                off[n++] = m->offset;
            }
        }
    }
    Py_XDECREF(names);
    return n;
}

/* The instances of user classes get their class from the pool's type
   table ("module:qualname layout" strs): imported, or a placeholder of
   the layout (_PyPmem_ClassOfEntry()), checked against the block it must
   fit in, and remembered for new instances.  Only the entries that some
   instance uses are resolved.  0, or -1 with PoolError (or MemoryError)
   set. */
static int
resolve_classes(open_state *st)
{
    PoolObject *p = st->pool;
    PyObject *table;
    Py_ssize_t ntypes;
    if (read_type_table(st, &table, &ntypes) < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < ntypes; i++) {
        if (PyList_Append(p->classes, Py_None) < 0) {
            return -1;
        }
    }
    /* By index: the volatile slots of its class, -1 until known. */
    struct {
        int n;
        Py_ssize_t off[MAX_VOLATILE_SLOTS];
    } *slots = PyMem_RawMalloc((size_t)(ntypes + 1) * sizeof(*slots));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < ntypes; i++) {
        slots[i].n = -1;
    }
    int r = -1;
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->object) {
            continue;             /* a builtin object's */
        }
        char *block = ENTRY_BLOCK(st, e);
        uint64_t code = _PyPmem_BlockCode(p, block);
        if (code < POOL_INSTANCE) {
            continue;
        }
        if (code - POOL_INSTANCE >= (uint64_t)ntypes) {
            /* The instance of a class that a transaction entered in the
               type table, killed before its commit: the entry was undone,
               the block (an atomic allocation) was not.  Garbage, freed
               with the rest unless something reachable points to it
               (then the pointer lands on no object: corrupt).  Its
               entry is a block's already. */
            continue;
        }
        Py_ssize_t index = (Py_ssize_t)(code - POOL_INSTANCE);
        if (PyList_GET_ITEM(p->classes, index) == Py_None
            && resolve_entry(st, table, index) < 0)
        {
            goto done;
        }
        PyTypeObject *type = (PyTypeObject *)PyList_GET_ITEM(p->classes,
                                                             index);
        if (place_instance(st, block, e, type) < 0) {
            goto done;
        }
        if (slots[index].n < 0) {
            slots[index].n = volatile_slots(type, slots[index].off);
            if (slots[index].n < 0) {
                goto done;
            }
        }
        /* Forgotten: what they held is unreachable, and freed. */
        PyObject *op = ENTRY_OBJ(st, e);
        for (int k = 0; k < slots[index].n; k++) {
            PyObject **slot = (PyObject **)((char *)op + slots[index].off[k]);
            if (*slot != NULL
                && (size_t)slots[index].off[k] < (size_t)type->tp_basicsize)
            {
                *slot = NULL;
                pmemobj_persist(p->pop, slot, sizeof(*slot));
            }
        }
    }
    r = 0;
done:
    PyMem_RawFree(slots);
    return r;
}

/* The bases the pool's pointers may be relative to, when it maps
   somewhere else than last time: the recorded one, and those of opens
   that stopped while moving them.  This mapping is recorded among the
   latter before any pointer moves, so that a crash leaves every pointer
   relative to a recorded base.  0, or -1 with PoolError set. */
static int
plan_move(open_state *st)
{
    PoolObject *p = st->pool;
    struct pool_root *root = p->root;
    uint64_t here = (uint64_t)(uintptr_t)st->lo;
    uint64_t size = (uint64_t)(st->hi - st->lo);
    int n = 0, recorded = 0;
    if (root->base != 0 && root->base != here) {
        st->old[n++] = (char *)(uintptr_t)root->base;
    }
    int free_slot = -1;
    for (int k = 0; k < 4; k++) {
        uint64_t b = root->moving[k];
        if (b == 0) {
            if (free_slot < 0) {
                free_slot = k;
            }
        }
        else if (b == here) {
            recorded = 1;
        }
        else {
            st->old[n++] = (char *)(uintptr_t)b;
        }
    }
    if (n == 0) {
        return 0;
    }
    for (int k = 0; k < n; k++) {
        uint64_t b = (uint64_t)(uintptr_t)st->old[k];
        if (b < here + size && here < b + size) {
            PyErr_Format(p->error, "pool %R maps at %p, overlapping where it "
                         "was mapped before (%p): its pointers cannot be "
                         "moved; open it in a new process", p->path,
                         st->lo, st->old[k]);
            return -1;
        }
    }
    if (!recorded) {
        if (free_slot < 0) {
            PyErr_Format(p->error, "pool %R: four opens in a row stopped "
                         "while moving its pointers; it cannot be moved "
                         "again safely", p->path);
            return -1;
        }
        root->moving[free_slot] = here;
        pmemobj_persist(p->pop, &root->moving[free_slot], sizeof(here));
    }
    return 0;
}

/* Check every pointer of every object, making the static ones right for
   the binary whose None is at target.  0, or -1 with PoolError set. */
static int
check_pointers(open_state *st, struct pool_root *root, char *target)
{
    PMEMobjpool *pop = st->pool->pop;
    root->pending = (uint64_t)(uintptr_t)target;
    pmemobj_persist(pop, &root->pending, sizeof(root->pending));
    st->source = (char *)(uintptr_t)root->anchor;
    st->target = target;
    st->dirty = 0;
    /* A bad pointer is an error only in an object that the root reaches:
       an unreachable one may be what a killed process was deallocating
       (its parts freed one by one), which the sweep frees unread. */
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        PyObject *op = ENTRY_OBJ(st, e);
        _PyPmem_Progress("pointers", i + 1, st->nentries);
        if (op != NULL && e->broken == 0
            && _PyStorage_CheckSlots(op, check_slot, st) != 0)
        {
            _PyPmem_SetBroken(st, e, st->problem != NULL
                                     ? st->problem
                                     : "what a pool cannot hold");
        }
        /* Once its pointers are this process's: what they land on. */
        if (op != NULL && e->broken == 0
            && target == (char *)Py_None && _PyStorage_CheckHeld(op) < 0)
        {
            _PyPmem_SetBroken(st, e, "counts that its table does not match, "
                                     "or a key or __dict__ of the wrong type");
        }
    }
    flush_run(st);
    if (st->dirty) {
        pmemobj_drain(pop);
    }
    root->anchor = (uint64_t)(uintptr_t)target;
    pmemobj_persist(pop, &root->anchor, sizeof(root->anchor));
    root->pending = 0;
    pmemobj_persist(pop, &root->pending, sizeof(root->pending));
    return 0;
}

/* The kept hashes of the reachable frozensets, for this process: the
   frozensets gathered on the marking's stack (empty by now).  0, or -1
   with an exception set. */
static int
rehash_frozensets(open_state *st, mark_state *ms)
{
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        PyObject *op = ENTRY_OBJ(st, e);
        if (e->mark && op != NULL
            && !_PyStorage_HasBuiltinLayout(Py_TYPE(op))
            && PyFrozenSet_Check(op) && _PyPmem_MarkPush(ms, op) < 0)
        {
            PyErr_NoMemory();
            return -1;
        }
    }
    int r = _PyStorage_RehashFrozenSets(ms->stack, ms->depth);
    ms->depth = 0;
    return r;
}

/* 1. The builtin objects' types, from their allocations' type codes,
   each made an object's entry (the table has every allocation as a
   block's: an instance gets its class from the type table,
   resolve_classes()). */
static void
set_builtin_types(open_state *st)
{
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        _PyPmem_Progress("types", i + 1, st->nentries);
        char *block = ENTRY_BLOCK(st, e);
        uint64_t code = _PyPmem_BlockCode(st->pool, block);
        if (code == POOL_TABLE || code >= POOL_INSTANCE) {
            continue;
        }
        PyTypeObject *type = _PyPmem_TypeOfCode(code);
        if (type == NULL) {
            /* A code this process does not know: kept as it is. */
            e->mark = 1;
            continue;
        }
        PyObject *op = (PyObject *)(block + PyStorage_PreHeaderSize(type));
        Py_SET_TYPE(op, type);
        if (PyType_HasFeature(type, Py_TPFLAGS_HEAPTYPE)) {
            Py_INCREF(type);      /* an object's reference (a Decimal's) */
        }
        _PyPmem_SetEntry(st, e, (char *)op, block, 1);
    }
}

/* 1b. The table of references (a bytearray of the pool that the root
   holds): its pointers checked (they may have to move with the pool),
   then each reference found by name (_PyPmem_ReadRefs()).  0, or -1 with
   an exception set. */
static int
read_refs(open_state *st)
{
    PoolObject *p = st->pool;
    if (p->root->refs == 0) {
        return 0;
    }
    PyObject *table = (PyObject *)(st->lo + p->root->refs);
    alloc_entry *e = _PyPmem_EntryOfObject(st, table);
    if (e == NULL || !PyByteArray_CheckExact(table)
        || _PyStorage_CheckSlots(table, check_slot, st) != 0)
    {
        PyErr_Format(p->error, "pool %R is corrupt: its table of "
                     "references is not a bytearray of the pool", p->path);
        return -1;
    }
    return _PyPmem_ReadRefs(st, table);
}

/* 2. Every pointer checked; static ones made this process's.  The target
   is recorded first: a pass that stops half-way leaves each pointer right
   for the source or for the target, and the next open finishes it before
   it starts its own.  0, or -1 with an exception set. */
static int
check_all_pointers(open_state *st)
{
    struct pool_root *root = st->pool->root;
    if (root->pending != 0 && root->pending != (uint64_t)(uintptr_t)Py_None
        && check_pointers(st, root, (char *)(uintptr_t)root->pending) < 0)
    {
        return -1;
    }
    return check_pointers(st, root, (char *)Py_None);
}

/* 3. What the root reaches, marked, with the references it holds.  0,
   or -1 with PoolError (a reachable object is broken) or MemoryError. */
static int
mark_from_roots(open_state *st, mark_state *ms)
{
    PoolObject *p = st->pool;
    for (int k = 0; k < POOL_NROOTS; k++) {
        PyObject *held = _PyPmem_Root(p, st->lo, k);
        PyTypeObject *type = _PyPmem_RootFields[k].type;
        if (held != NULL && ((char *)held <= st->lo
                             || (char *)held >= st->hi
                             || _PyPmem_EntryOfObject(st, held) == NULL
                             || Py_TYPE(held) != type))
        {
            PyErr_Format(p->error, "pool %R is corrupt: its root does not "
                         "hold a %s of the pool", p->path, type->tp_name);
            return -1;
        }
    }
    int err = _PyPmem_VisitRoots(p, st->lo, mark_slot, ms);
    while (ms->depth > 0 && !err) {
        PyObject *op = ms->stack[--ms->depth];
        err = _PyStorage_VisitSlots(op, mark_slot, ms);
    }
    if (err < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (err > 0 && ms->bad == NULL) {
        PyErr_Format(p->error, "pool %R is corrupt: an object holds a "
                     "pointer that lands on no object", p->path);
        return -1;
    }
    if (err > 0) {
        PyErr_Format(p->error, "pool %R is corrupt: a %s at +%zu holds "
                     "%s", p->path, Py_TYPE(ENTRY_OBJ(st, ms->bad))->tp_name,
                     (size_t)ms->bad->offset << 3,
                     _PyPmem_Broken(st, ms->bad));
        return -1;
    }
    return 0;
}

/* 3b. The volatile metadata of the objects that are kept (an unreachable
   one may be anything that a crash left: a block that an allocation had
   only zeroed), and the interpreter's empty keys that their empty dicts
   hold. */
static void
reset_kept(open_state *st)
{
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->mark && e->object) {
            _PyStorage_ResetVolatile(ENTRY_OBJ(st, e));
        }
    }
}

/* 4. The rest is what a crash left behind: freed. */
static void
free_unreachable(open_state *st)
{
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        if (ENTRY_USED(e) && !e->mark) {
            _PyPmem_BlockFree(st->pool, ENTRY_BLOCK(st, e));
        }
    }
}

/* 5. Hash tables for this process's hashes, in one transaction: first the
   frozensets' own hashes, which the tables that hold them use.  0, or -1
   with an exception set. */
static int
rehash_kept(open_state *st, mark_state *ms)
{
    PoolObject *p = st->pool;
    if (_PyPmem_Begin(&p->sm, NULL) < 0) {
        return -1;
    }
    int ok = rehash_frozensets(st, ms) == 0;
    for (size_t i = 0; i < st->nentries && ok; i++) {
        alloc_entry *e = &st->entries[i];
        _PyPmem_Progress("hash tables", i + 1, st->nentries);
        PyObject *op = ENTRY_OBJ(st, e);
        if (e->mark && op != NULL && _PyStorage_Rehash(op) < 0) {
            ok = 0;
        }
    }
    return _PyPmem_End(&p->sm, ok) < 0 || !ok ? -1 : 0;
}

/* 6. The pointers are right for this mapping. */
static void
record_mapping(PoolObject *p)
{
    PMEMobjpool *pop = p->pop;
    p->root->base = (uint64_t)(uintptr_t)pop;
    pmemobj_persist(pop, &p->root->base, sizeof(p->root->base));
    memset(p->root->moving, 0, sizeof(p->root->moving));
    pmemobj_persist(pop, p->root->moving, sizeof(p->root->moving));
}

/* Make the pool's objects this process's (Doc/pmem/design.rst): types,
   volatile metadata, pointers to static objects, reference counts,
   unreachable allocations freed, hash tables rebuilt.  Every step can
   run again from its start: a crash during the pass is repaired by the
   next open.  0, or -1 with PoolError (or MemoryError) set. */
int
_PyPmem_OpenPass(PoolObject *p)
{
    open_state st = {.pool = p, .lo = (char *)p->pop,
                     .hi = (char *)p->pop + p->size};
    if (plan_move(&st) < 0) {
        return -1;
    }
    if (_PyPmem_AllocTableBuild(&st, p) < 0) {
        return -1;
    }
    st.count = st.nentries;
    int r = -1;
    mark_state ms = {.st = &st};
    set_builtin_types(&st);
    if (resolve_classes(&st) == 0
        && read_refs(&st) == 0
        && check_all_pointers(&st) == 0
        && mark_from_roots(&st, &ms) == 0)
    {
        _PyPmem_RefsMoved(&st);
        reset_kept(&st);
        free_unreachable(&st);
        (void)_PyPmem_RunsRelease(p);
        if (rehash_kept(&st, &ms) == 0) {
            record_mapping(p);
            r = 0;
        }
    }
    PyMem_RawFree(ms.stack);
    _PyPmem_AllocTableFree(&st);
    PyMem_RawFree(st.ref_moves);
    return r;
}
