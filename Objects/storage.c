/* Storage managers: where an object's memory comes from, and how writes to
   it are made atomic and durable.

   Every object has a storage manager, derived from its address.  This
   file holds the registry of address ranges, the DRAM manager, the
   interpreter's static objects, the thread-local placement stack, the
   slow paths of the hooks declared in Include/internal/pycore_storage.h
   (atomic operations, modified ranges, allocation routing) and the one
   table of volatile metadata.  It is the bottom layer of three, each of
   which calls only those below it:

       Objects/storagemap.c    mapping a manager's objects into a process
       Objects/storagestore.c  the store rule, and the writers that store
       Objects/storage.c       managers, placement, operations

   The registry:

       ranges[0 .. nranges-1]   sorted by start, disjoint
       +-----------+-----------+---------+
       | start     | end       | manager |
       +-----------+-----------+---------+
       lo = ranges[0].start, hi = ranges[nranges-1].end

   A lookup first tests [lo, hi), which every DRAM address outside the
   managed span fails at once, then bisects.  Managers own a handful of
   ranges (a pool, a memkind heap, a test arena), so the table is small
   and fixed.  It only changes under the GIL, as every hook runs.

   _PyStorage_Active is the one word the DRAM fast path reads: non-zero
   while any range is registered or any placement is pushed.
*/

#include "Python.h"
#include "pycore_dict.h"          // DK_ENTRIES()
#include "pycore_initconfig.h"    // _Py_GetEnv()
#include "pycore_object.h"        // _PyType_PreHeaderSize()
#include "pycore_pyerrors.h"      // _PyErr_Occurred()
#include "pycore_pystate.h"       // _PyThreadState_GET()
#include "pycore_runtime.h"       // _Py_SINGLETON()
#include "pycore_setobject.h"     // _PySet_Update()
#include "pycore_unicodeobject.h" // _PyUnicode_InternMortal()
#include "pycore_storagemap.h"    // the hooks, the managers' API
#define _PY_DATETIME_IMPL        /* the structs, not the C API's variable */
#include "datetime.h"             // PyDateTime_CAPI

#include <stddef.h>               // offsetof()


int _PyStorage_Active = 0;
uintptr_t _PyStorage_Lo = 0;
uintptr_t _PyStorage_Span = 0;

/* A closed pool's range stays registered while its objects may be
   referenced; a process that opens many pools in turn (a test suite run
   again and again) needs room: a look-up is a binary search. */
#define MAX_RANGES 1024
#define MAX_PLACEMENT_DEPTH 32

typedef struct {
    uintptr_t start;
    uintptr_t end;
    PyStorageManager *sm;
} storage_range;

static struct {
    storage_range ranges[MAX_RANGES];
    int nranges;
    uintptr_t lo, hi;
    /* The range of the last look-up that found one (a copy; all zero when
       none): a transaction's look-ups are of one pool, and this test is a
       third of the bisection's cost.  Reset whenever the table changes. */
    storage_range last;
    /* Placements pushed, over all threads. */
    Py_ssize_t nplacements;
} registry;

static _Py_thread_local struct {
    PyStorageManager *stack[MAX_PLACEMENT_DEPTH];
    /* A placement of one object (_PyStorage_PushPlacementOf()): the type
       of the object still to be made, or ONE_MADE; NULL for a placement
       of every placeable object. */
    PyTypeObject *only[MAX_PLACEMENT_DEPTH];
    int depth;
} placement;

/* A one-object placement whose object is made: it places nothing more. */
#define ONE_MADE ((PyTypeObject *)&placement)


/* The specialized instructions that write object memory directly
   (STORE_ATTR_WITH_HINT, _STORE_ATTR_SLOT, STORE_SUBSCR_LIST_INT) test
   the registry's bounds and deopt for a managed object, and
   STORE_ATTR_INSTANCE_VALUE deopts because a managed instance's inline
   values are never valid: the first manager changes no type's version
   (3.13's static builtin types may not be modified). */
static void
update_active(void)
{
    _PyStorage_Active = (registry.nranges > 0 || registry.nplacements > 0);
}


/* --- the DRAM manager ---------------------------------------------------- */

static void *
dram_alloc(PyStorageManager *Py_UNUSED(sm), size_t size,
           PyTypeObject *Py_UNUSED(type))
{
    return PyObject_Malloc(size);
}

static void *
dram_realloc(PyStorageManager *Py_UNUSED(sm), void *ptr, size_t size)
{
    return PyObject_Realloc(ptr, size);
}

static void
dram_free(PyStorageManager *Py_UNUSED(sm), void *ptr)
{
    PyObject_Free(ptr);
}

PyStorageManager PyStorage_DRAM = {
    .name = "dram",
    .flags = 0,
    .alloc = dram_alloc,
    .realloc = dram_realloc,
    .free = dram_free,
};


/* --- the registry -------------------------------------------------------- */

PyStorageManager *
_PyStorage_Lookup(const void *ptr)
{
    uintptr_t a = (uintptr_t)ptr;
    /* The bounds first: a DRAM object outside them costs what it did. */
    if (a < registry.lo || a >= registry.hi) {
        return NULL;
    }
    if (a - registry.last.start < registry.last.end - registry.last.start) {
        return registry.last.sm;
    }
    int lo = 0, hi = registry.nranges;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        const storage_range *r = &registry.ranges[mid];
        if (a < r->start) {
            hi = mid;
        }
        else if (a >= r->end) {
            lo = mid + 1;
        }
        else {
            registry.last = *r;
            return r->sm;
        }
    }
    return NULL;
}

PyStorageManager *
PyStorage_Of(const void *ptr)
{
    PyStorageManager *sm = _PyStorage_Of(ptr);
    return sm != NULL ? sm : &PyStorage_DRAM;
}

static void
update_bounds(void)
{
    registry.last = (storage_range){0, 0, NULL};
    if (registry.nranges == 0) {
        registry.lo = registry.hi = 0;
    }
    else {
        registry.lo = registry.ranges[0].start;
        registry.hi = registry.ranges[registry.nranges - 1].end;
    }
    _PyStorage_Lo = registry.lo;
    _PyStorage_Span = registry.hi - registry.lo;
    update_active();
}

int
PyStorage_AddRange(PyStorageManager *sm, void *start, size_t size)
{
    uintptr_t s = (uintptr_t)start, e = s + size;
    if (sm == NULL || sm == &PyStorage_DRAM || size == 0 || e < s) {
        PyErr_SetString(PyExc_ValueError,
                        "PyStorage_AddRange: a manager other than DRAM "
                        "and a non-empty range are needed");
        return -1;
    }
    if (registry.nranges == MAX_RANGES) {
        PyErr_Format(PyExc_OverflowError,
                     "cannot register more than %d storage ranges: "
                     "close a pool first", MAX_RANGES);
        return -1;
    }
    int i = 0;
    while (i < registry.nranges && registry.ranges[i].start < s) {
        i++;
    }
    if ((i > 0 && registry.ranges[i - 1].end > s)
        || (i < registry.nranges && registry.ranges[i].start < e))
    {
        PyErr_Format(PyExc_ValueError,
                     "storage range %p-%p of '%s' overlaps a registered one",
                     start, (void *)e, sm->name);
        return -1;
    }
    memmove(&registry.ranges[i + 1], &registry.ranges[i],
            (registry.nranges - i) * sizeof(storage_range));
    registry.ranges[i] = (storage_range){s, e, sm};
    registry.nranges++;
    update_bounds();
    return 0;
}

int
PyStorage_RemoveRange(void *start)
{
    for (int i = 0; i < registry.nranges; i++) {
        if (registry.ranges[i].start == (uintptr_t)start) {
            memmove(&registry.ranges[i], &registry.ranges[i + 1],
                    (registry.nranges - i - 1) * sizeof(storage_range));
            registry.nranges--;
            update_bounds();
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError, "no storage range starts at %p", start);
    return -1;
}


/* --- the interpreter's static objects ------------------------------------ */

/* Whether p is the start of an element of the array of n elements, each
   size bytes, at base. */
static int
is_element(const char *p, const void *base, size_t n, size_t size)
{
    const char *b = (const char *)base;
    return (p >= b && p < b + n * size && (size_t)(p - b) % size == 0);
}

/* The interpreter's static singletons: never copied, never moved, and
   known by value, so that a manager can find them again in another
   process: None, True, False, Ellipsis, NotImplemented, the small ints,
   the empty and one-character bytes and str, the empty tuple.  Not the
   static identifier and literal strings, which are copied like any str.
   Exactly their starts: the pointer may come from a file. */
int
_PyStorage_IsStatic(const void *ptr)
{
    const char *p = (const char *)ptr;
    if (ptr == Py_None || ptr == Py_True || ptr == Py_False
        || ptr == Py_Ellipsis || ptr == Py_NotImplemented)
    {
        return 1;
    }
    /* The others are in the runtime's state: most pointers are not. */
    if ((size_t)(p - (const char *)&_PyRuntime) >= sizeof(_PyRuntime)) {
        return 0;
    }
    return (ptr == &_Py_STR(empty)
            || ptr == &_Py_SINGLETON(bytes_empty)
            || ptr == &_Py_SINGLETON(tuple_empty)
            || is_element(p, _Py_SINGLETON(small_ints),
                          Py_ARRAY_LENGTH(_Py_SINGLETON(small_ints)),
                          sizeof(_Py_SINGLETON(small_ints)[0]))
            || is_element(p, _Py_SINGLETON(bytes_characters),
                          Py_ARRAY_LENGTH(_Py_SINGLETON(bytes_characters)),
                          sizeof(_Py_SINGLETON(bytes_characters)[0]))
            || is_element(p, _Py_SINGLETON(strings).ascii,
                          Py_ARRAY_LENGTH(_Py_SINGLETON(strings).ascii),
                          sizeof(_Py_SINGLETON(strings).ascii[0]))
            || is_element(p, _Py_SINGLETON(strings).latin1,
                          Py_ARRAY_LENGTH(_Py_SINGLETON(strings).latin1),
                          sizeof(_Py_SINGLETON(strings).latin1[0])));
}


/* --- placement ----------------------------------------------------------- */

int
PyStorage_PushPlacement(PyStorageManager *sm)
{
    if (sm == NULL) {
        PyErr_BadInternalCall();
        return -1;
    }
    if (placement.depth == MAX_PLACEMENT_DEPTH) {
        PyErr_Format(PyExc_RecursionError,
                     "storage placements nested more than %d deep",
                     MAX_PLACEMENT_DEPTH);
        return -1;
    }
    /* Activate first: activation allocates, and not from sm. */
    registry.nplacements++;
    update_active();
    placement.only[placement.depth] = NULL;
    placement.stack[placement.depth++] = sm;
    return 0;
}

int
_PyStorage_PushPlacementOf(PyStorageManager *sm, PyTypeObject *tp)
{
    if (PyStorage_PushPlacement(sm) < 0) {
        return -1;
    }
    placement.only[placement.depth - 1] = tp;
    return 0;
}

int
PyStorage_PopPlacement(PyStorageManager *sm)
{
    if (placement.depth == 0 || placement.stack[placement.depth - 1] != sm) {
        PyErr_SetString(PyExc_RuntimeError,
                        "PyStorage_PopPlacement: not the innermost "
                        "placement of this thread");
        return -1;
    }
    placement.depth--;
    registry.nplacements--;
    update_active();
    return 0;
}

PyStorageManager *
PyStorage_GetPlacement(void)
{
    if (placement.depth == 0) {
        return NULL;
    }
    PyStorageManager *sm = placement.stack[placement.depth - 1];
    /* A pushed DRAM placement turns placement off for a while; a
       placement of one object places no table that has no owner. */
    return (sm == &PyStorage_DRAM || placement.only[placement.depth - 1]
            ? NULL : sm);
}

static int
is_container(PyTypeObject *tp)
{
    return (tp == &PyDict_Type || tp == &PyList_Type || tp == &PySet_Type
            || tp == &PyFrozenSet_Type || tp == &PyByteArray_Type
            || tp == &PyODict_Type);
}

/* Objects that a placement allocates: the containers (OrderedDict's too)
   and instances of classes written in Python.  Not classes (their memory
   belongs to the type system) and not exceptions (raised while a
   placement is pushed, they are no part of the data). */
static int
is_placeable(PyTypeObject *tp)
{
    if (is_container(tp)) {
        return 1;
    }
    return (PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE)
            && !PyType_HasFeature(tp, Py_TPFLAGS_TYPE_SUBCLASS
                                      | Py_TPFLAGS_BASE_EXC_SUBCLASS));
}


int
_PyStorage_IsMutablePlaceable(PyTypeObject *tp)
{
    if (is_container(tp)) {
        return 1;
    }
    PyTypeObject *base = _PyStorage_ClassBase(tp);
    return (base == &PyBaseObject_Type || base == &PyDict_Type
            || base == &PyList_Type || base == &PySet_Type);
}


/* --- allocation ---------------------------------------------------------- */

size_t
PyStorage_PreHeaderSize(PyTypeObject *type)
{
    return _PyType_PreHeaderSize(type);
}

static PyStorageManager *
table_manager(const void *owner)
{
    return owner != NULL ? _PyStorage_Lookup(owner) : PyStorage_GetPlacement();
}

void *
_PyStorage_MallocSlow(const void *owner, size_t size,
                      void *(*dram_malloc)(size_t))
{
    PyStorageManager *sm = table_manager(owner);
    if (sm == NULL) {
        return dram_malloc(size);
    }
    return sm->alloc(sm, size ? size : 1, NULL);
}

void *
_PyStorage_CallocSlow(const void *owner, size_t nelem, size_t elsize,
                      void *(*dram_calloc)(size_t, size_t))
{
    PyStorageManager *sm = table_manager(owner);
    if (sm == NULL) {
        return dram_calloc(nelem, elsize);
    }
    if (elsize != 0 && nelem > (size_t)PY_SSIZE_T_MAX / elsize) {
        return NULL;
    }
    size_t size = nelem * elsize;
    void *ptr = sm->alloc(sm, size ? size : 1, NULL);
    if (ptr != NULL) {
        memset(ptr, 0, size);
    }
    return ptr;
}

void *
_PyStorage_ReallocSlow(const void *owner, void *ptr, size_t size,
                       void *(*dram_realloc)(void *, size_t))
{
    if (ptr == NULL) {
        PyStorageManager *sm = table_manager(owner);
        if (sm != NULL) {
            return sm->alloc(sm, size ? size : 1, NULL);
        }
    }
    /* A managed ptr is routed by PyMem_Realloc() and PyObject_Realloc(). */
    return dram_realloc(ptr, size);
}

/* The manager that places a new object of type tp, or NULL; with take,
   the object is being allocated (a placement of one object is used up). */
static PyStorageManager *
placement_for(PyTypeObject *tp, int take)
{
    if (placement.depth == 0) {
        return NULL;
    }
    int top = placement.depth - 1;
    PyTypeObject *only = placement.only[top];
    if (only != NULL) {
        if (tp != only) {
            return NULL;
        }
        if (take) {
            placement.only[top] = ONE_MADE;
        }
        return placement.stack[top];
    }
    PyStorageManager *sm = PyStorage_GetPlacement();
    return sm != NULL && is_placeable(tp) ? sm : NULL;
}

void *
_PyStorage_ObjectMallocSlow(PyTypeObject *tp, size_t size)
{
    if (registry.nplacements == 0) {
        /* No thread has a placement: the objects of a process with a pool
           open (a `with pool:` block's bound __enter__ and __exit__...). */
        return PyObject_Malloc(size);
    }
    PyStorageManager *sm = placement_for(tp, 1);
    return sm == NULL ? PyObject_Malloc(size) : sm->alloc(sm, size, tp);
}

size_t
_PyStorage_InlineValuesSizeSlow(PyTypeObject *tp, size_t dram_size)
{
    /* The header (capacity 0, not valid) is the first word of
       PyDictValues, before values[]. */
    return placement_for(tp, 0) != NULL ? offsetof(PyDictValues, values)
                                     : dram_size;
}

int
_PyStorage_FreeSlow(void *ptr)
{
    PyStorageManager *sm = _PyStorage_Lookup(ptr);
    if (sm == NULL) {
        return 0;
    }
    sm->free(sm, ptr);
    return 1;
}

int
_PyStorage_RouteReallocSlow(void *ptr, size_t size, void **result)
{
    PyStorageManager *sm = _PyStorage_Lookup(ptr);
    if (sm == NULL) {
        return 0;
    }
    *result = sm->realloc(sm, ptr, size ? size : 1);
    return 1;
}


/* --- atomic operations --------------------------------------------------- */

/* A manager's hooks, of which NULL ones do nothing. */
static inline int
manager_begin(PyStorageManager *sm, PyObject *op)
{
    return sm->begin != NULL ? sm->begin(sm, op) : 0;
}

static inline int
manager_end(PyStorageManager *sm, int ok)
{
    return sm->end != NULL ? sm->end(sm, ok) : 0;
}

static int
manager_modify(PyStorageManager *sm, void *addr, size_t size)
{
    return sm->modify != NULL ? sm->modify(sm, addr, size) : 0;
}

static inline int
manager_modify_many(PyStorageManager *sm, size_t n, void *const *addrs,
                    const size_t *sizes)
{
    if (sm->modify_many != NULL) {
        return sm->modify_many(sm, n, addrs, sizes);
    }
    for (size_t i = 0; i < n; i++) {
        if (manager_modify(sm, addrs[i], sizes[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

int
_PyStorage_TxBegin(PyObject *op, PyStorageManager **psm)
{
    PyStorageManager *sm = _PyStorage_Lookup(op);
    *psm = sm;
    if (sm == NULL || manager_begin(sm, op) == 0) {
        return 0;
    }
    if (Py_REFCNT(op) == 0) {
        /* A deallocation that begins one (a deque's clears it), where
           none can begin (a closed pool, a forked child's): none is
           going on either, so there is nothing to undo, and nothing of
           the dying object to make durable.  It goes on unlogged. */
        PyErr_Clear();
        *psm = NULL;
        return 0;
    }
    return -1;
}

/* End an operation: undo it when an exception is set (keeping that
   exception, but for a MemoryError that the manager explains: it fails
   the undo with a MemoryError of its own), else commit it.  0, or -1
   with an exception set when the commit failed: then the manager has
   undone the operation, and the caller reports the error instead of its
   result. */
int
_PyStorage_TxEnd(PyStorageManager *sm)
{
    if (sm == NULL) {
        return 0;
    }
    PyThreadState *tstate = _PyThreadState_GET();
    if (_PyErr_Occurred(tstate)) {
        PyObject *exc = _PyErr_GetRaisedException(tstate);
        if (manager_end(sm, 0) < 0) {
            if (Py_IS_TYPE(exc, (PyTypeObject *)PyExc_MemoryError)
                && PyErr_ExceptionMatches(PyExc_MemoryError))
            {
                /* The manager's says why it ran out of memory. */
                Py_DECREF(exc);
            }
            else {
                _PyErr_ChainExceptions1(exc);
            }
        }
        else {
            _PyErr_SetRaisedException(tstate, exc);
        }
        return 0;
    }
    return manager_end(sm, 1);
}

int
_PyStorage_ModifySlow(void *addr, size_t size)
{
    PyStorageManager *sm = _PyStorage_Lookup(addr);
    if (sm == NULL) {
        return 0;
    }
    return manager_modify(sm, addr, size);
}


/* The fields of op after its PyObject header, up to size bytes from its
   start, are about to change. */
static int
modify_fields(PyStorageManager *sm, void *op, size_t size)
{
    return manager_modify(sm, (char *)op + sizeof(PyObject),
                      size - sizeof(PyObject));
}

int
_PyStorage_DeallocSlow(PyObject *op)
{
    PyStorageManager *sm = _PyStorage_Lookup(op);
    if (sm == NULL) {
        return 0;
    }
    PyTypeObject *tp = Py_TYPE(op);
    PyObject *exc_type, *exc, *tb;
    PyErr_Fetch(&exc_type, &exc, &tb);
    if (manager_begin(sm, op) < 0) {
        /* No operation can begin (a closed pool): none is going on
           either, so there is nothing to undo. */
        PyErr_Clear();
    }
    else if (Py_REFCNT(op) > 0) {
        /* Referenced again by the undo of a transaction that it waited
           for: there is nothing to deallocate. */
        if (manager_end(sm, 1) < 0) {
            PyErr_Clear();
        }
        PyErr_Restore(exc_type, exc, tb);
        return 1;
    }
    else {
        int r = modify_fields(sm, op, (size_t)tp->tp_basicsize);
        if (r == 0 && (tp->tp_flags & Py_TPFLAGS_PREHEADER)) {
            /* The weakref list and dict pointers, before the GC head. */
            r = manager_modify(sm, (char *)op - _PyType_PreHeaderSize(tp),
                               2 * sizeof(PyObject *));
        }
        if (manager_end(sm, r == 0) < 0 || r < 0) {
            _PyStorage_WriteUnraisable(op);
        }
    }
    PyErr_Restore(exc_type, exc, tb);
    return 0;
}

int
_PyStorage_GcHoldSlow(PyObject *op)
{
    PyStorageManager *sm = _PyStorage_Lookup(op);
    return sm != NULL && sm->collectable != NULL && !sm->collectable(sm);
}

int
_PyStorage_ModifyDictSlotSlow(PyDictObject *mp, Py_ssize_t hashpos,
                              Py_ssize_t ix)
{
    PyStorageManager *sm = _PyStorage_Lookup(mp);
    if (sm == NULL) {
        return 0;
    }
    /* The dict's fields, the keys' header, the index slot, the entry:
       announced together. */
    void *addrs[4] = {(char *)mp + sizeof(PyObject)};
    size_t sizes[4] = {sizeof(PyDictObject) - sizeof(PyObject)};
    size_t n = 1;
    PyDictKeysObject *keys = mp->ma_keys;
    if (_PyStorage_Lookup(keys) == sm) {
        /* (Not the static empty keys: replaced, never written.) */
        addrs[n] = keys;
        sizes[n++] = offsetof(PyDictKeysObject, dk_indices);
        if (hashpos >= 0) {
            size_t width = (size_t)1 << (keys->dk_log2_index_bytes
                                         - keys->dk_log2_size);
            addrs[n] = keys->dk_indices + hashpos * width;
            sizes[n++] = width;
        }
        if (ix >= 0) {
            if (DK_IS_UNICODE(keys)) {
                addrs[n] = &DK_UNICODE_ENTRIES(keys)[ix];
                sizes[n++] = sizeof(PyDictUnicodeEntry);
            }
            else {
                addrs[n] = &DK_ENTRIES(keys)[ix];
                sizes[n++] = sizeof(PyDictKeyEntry);
            }
        }
    }
    return manager_modify_many(sm, n, addrs, sizes);
}

int
_PyStorage_ModifyODictSlow(PyObject *op, void *node, void *slot)
{
    PyStorageManager *sm = _PyStorage_Lookup(op);
    if (sm == NULL) {
        return 0;
    }
    _PyStorage_ODict *od = (_PyStorage_ODict *)op;
    if (modify_fields(sm, od, sizeof(_PyStorage_ODict)) < 0) {
        return -1;
    }
    _PyStorage_ODictNode *n = (_PyStorage_ODictNode *)node;
    _PyStorage_ODictNode *links[5] = {
        od->first, od->last, n, n != NULL ? n->prev : NULL,
        n != NULL ? n->next : NULL,
    };
    for (int i = 0; i < 5; i++) {
        int seen = links[i] == NULL;
        for (int k = 0; k < i && !seen; k++) {
            seen = links[k] == links[i];
        }
        if (!seen && manager_modify(sm, links[i],
                                    sizeof(_PyStorage_ODictNode)) < 0)
        {
            return -1;
        }
    }
    return slot == NULL ? 0 : manager_modify(sm, slot, sizeof(void *));
}

/* One end of a deque, for _PyStorage_ModifyDequeSlow(): the end block
   from the k-th item from the end outwards (its unused slots and its
   links included), the blocks further in that hold items within k of
   the end, whole, and the link to them of the block after those. */
static int
modify_deque_end(PyStorageManager *sm, _PyStorage_Deque *dq, Py_ssize_t k,
                 int right)
{
    const Py_ssize_t len = _PyStorage_DEQUE_BLOCKLEN;
    _PyStorage_DequeBlock *b = right ? dq->rightblock : dq->leftblock;
    _PyStorage_DequeBlock *last = right ? dq->leftblock : dq->rightblock;
    Py_ssize_t r;
    int ok;
    if (right) {
        Py_ssize_t lo = Py_MAX(0, dq->rightindex - k + 1);
        ok = manager_modify(sm, &b->leftlink, sizeof(b->leftlink)) == 0
             && manager_modify(sm, &b->data[lo],
                               (char *)(b + 1) - (char *)&b->data[lo]) == 0;
        r = k - (dq->rightindex + 1);
    }
    else {
        Py_ssize_t hi = Py_MIN(len - 1, dq->leftindex + k - 1);
        ok = manager_modify(sm, &b->rightlink, sizeof(b->rightlink)) == 0
             && manager_modify(sm, b,
                               (char *)&b->data[hi + 1] - (char *)b) == 0;
        r = k - (len - dq->leftindex);
    }
    for (; ok && r > 0 && b != last; r -= len) {
        b = right ? b->leftlink : b->rightlink;
        ok = manager_modify(sm, b, sizeof(*b)) == 0;
    }
    if (ok && b != last) {
        b = right ? b->leftlink : b->rightlink;
        ok = manager_modify(sm, right ? (void *)&b->rightlink
                                      : (void *)&b->leftlink,
                            sizeof(void *)) == 0;
    }
    return ok ? 0 : -1;
}

int
_PyStorage_ModifyDequeSlow(PyObject *op, Py_ssize_t left, Py_ssize_t right)
{
    PyStorageManager *sm = _PyStorage_Lookup(op);
    if (sm == NULL) {
        return 0;
    }
    _PyStorage_Deque *dq = (_PyStorage_Deque *)op;
    if (manager_modify(sm, &dq->ob_base.ob_size,
                       offsetof(_PyStorage_Deque, numfreeblocks)
                       - offsetof(_PyStorage_Deque, ob_base.ob_size)) < 0)
    {
        return -1;
    }
    if (left < 0 || right < 0 || left + right >= Py_SIZE(dq)) {
        /* Every block, whole. */
        for (_PyStorage_DequeBlock *b = dq->leftblock; ; b = b->rightlink) {
            if (manager_modify(sm, b, sizeof(*b)) < 0) {
                return -1;
            }
            if (b == dq->rightblock) {
                return 0;
            }
        }
    }
    if (left > 0 && modify_deque_end(sm, dq, left, 0) < 0) {
        return -1;
    }
    if (right > 0 && modify_deque_end(sm, dq, right, 1) < 0) {
        return -1;
    }
    return 0;
}

void
_PyStorage_StoredKeySlow(PyObject *dict, Py_ssize_t ix, PyObject **pkey)
{
    PyDictKeysObject *keys = ((PyDictObject *)dict)->ma_keys;
    if (_PyStorage_Lookup(dict) == NULL || ix < 0
        || ix >= keys->dk_nentries)
    {
        return;
    }
    PyObject *stored = (DK_IS_UNICODE(keys)
                        ? DK_UNICODE_ENTRIES(keys)[ix].me_key
                        : DK_ENTRIES(keys)[ix].me_key);
    if (stored != NULL && stored != *pkey) {
        Py_SETREF(*pkey, Py_NewRef(stored));
    }
}

_Py_thread_local PyObject *_PyStorage_Reentered = NULL;
_Py_thread_local PyObject *_PyStorage_CallArgs[2] = {NULL, NULL};

int
_PyStorage_ReenterBegin(PyObject *op, PyStorageManager **psm,
                        PyObject **pouter)
{
    if (_PyStorage_TxBegin(op, psm) < 0) {
        return -1;
    }
    *pouter = _PyStorage_Reentered;
    _PyStorage_Reentered = op;
    return 0;
}

int
_PyStorage_ReenterEnd(PyStorageManager *sm, PyObject *outer)
{
    /* The mark is still set when the call failed before its hook. */
    _PyStorage_Reentered = outer;
    return _PyStorage_TxEnd(sm);
}

void
_PyStorage_WriteUnraisable(PyObject *op)
{
    PyErr_FormatUnraisable(
        "Exception ignored in a failed, undone atomic operation on a "
        "'%.100s' object at %p", Py_TYPE(op)->tp_name, (void *)op);
}

/* The slow paths of twins: the hooked twin inside an operation on op,
   one pattern for every signature.  A result that a failed commit voids
   is given up (drop). */
#define TWIN_TRAMPOLINE(type, name, params, op, call, failed, drop) \
    type \
    name params \
    { \
        PyStorageManager *sm; \
        if (_PyStorage_TxBegin(_PyObject_CAST(op), &sm) < 0) { \
            return failed; \
        } \
        type result = (call); \
        if (_PyStorage_TxEnd(sm) < 0) { \
            drop; \
            return failed; \
        } \
        return result; \
    }

TWIN_TRAMPOLINE(
    int, _PyStorage_SetDiscardEntry,
    (PySetObject *so, PyObject *key, Py_hash_t hash,
     int (*discard)(PySetObject *, PyObject *, Py_hash_t)),
    so, discard(so, key, hash), -1, (void)0)

TWIN_TRAMPOLINE(
    int, _PyStorage_CallSsize,
    (PyObject *op, Py_ssize_t n, int (*function)(PyObject *, Py_ssize_t)),
    op, function(op, n), -1, (void)0)

TWIN_TRAMPOLINE(
    int, _PyStorage_CallObjects,
    (PyObject *op, PyObject *a, PyObject *b,
     int (*function)(PyObject *, PyObject *, PyObject *)),
    op, function(op, a, b), -1, (void)0)

TWIN_TRAMPOLINE(
    PyObject *, _PyStorage_CallInt,
    (PyObject *op, int i, PyObject *(*function)(PyObject *, int)),
    op, function(op, i), NULL, Py_XDECREF(result))

TWIN_TRAMPOLINE(
    PyObject *, _PyStorage_Call,
    (PyObject *op, PyObject *(*function)(PyObject *)),
    op, function(op), NULL, Py_XDECREF(result))

#undef TWIN_TRAMPOLINE

int
_PyStorage_ModifyByteArrayFromSlow(PyByteArrayObject *ba, Py_ssize_t from)
{
    PyStorageManager *sm = _PyStorage_Lookup(ba);
    if (sm == NULL) {
        return 0;
    }
    if (modify_fields(sm, ba, sizeof(PyByteArrayObject)) < 0) {
        return -1;
    }
    if (ba->ob_bytes == NULL || _PyStorage_Lookup(ba->ob_bytes) != sm) {
        return 0;
    }
    /* The value and its NUL, within the buffer. */
    Py_ssize_t start = (ba->ob_start - ba->ob_bytes) + Py_MAX(from, 0);
    Py_ssize_t end = Py_MIN((ba->ob_start - ba->ob_bytes) + Py_SIZE(ba) + 1,
                            ba->ob_alloc);
    if (start >= end) {
        return 0;
    }
    return manager_modify(sm, ba->ob_bytes + start, (size_t)(end - start));
}

int
_PyStorage_ModifyByteArraySlow(PyByteArrayObject *ba)
{
    return _PyStorage_ModifyByteArrayFromSlow(ba, 0);
}

int
_PyStorage_ModifySetEntrySlow(PySetObject *so, setentry *entry)
{
    PyStorageManager *sm = _PyStorage_Lookup(so);
    if (sm == NULL) {
        return 0;
    }
    /* The counters, table pointer, frozenset hash and search finger. */
    if (manager_modify(sm, &so->fill,
                   (char *)&so->smalltable - (char *)&so->fill) < 0)
    {
        return -1;
    }
    return manager_modify(sm, entry, sizeof(setentry));
}

int
_PyStorage_SetSwapBodies(PyObject *a, PyObject *b)
{
    /* t = set(a); a.clear(); a.update(b); b.clear(); b.update(t) */
    PyObject *t = PySet_New(a);
    if (t == NULL) {
        return -1;
    }
    int r = -1;
    PyStorageManager *sm;
    if (_PyStorage_TxBegin(a, &sm) == 0) {
        r = (PySet_Clear(a) < 0 || _PySet_Update(a, b) < 0
             || PySet_Clear(b) < 0 || _PySet_Update(b, t) < 0) ? -1 : 0;
        if (_PyStorage_TxEnd(sm) < 0) {
            r = -1;
        }
    }
    Py_DECREF(t);
    return r;
}

int
_PyStorage_DictSetDefault(PyObject *d, PyObject *key, PyObject *defaultobj,
                          PyObject **result, int incref_result)
{
    /* Begun before the look-up: another thread's store of key cannot
       come between. */
    PyStorageManager *sm;
    PyObject *value = NULL;
    int present = -1;
    if (_PyStorage_TxBegin(d, &sm) == 0) {
        present = PyDict_GetItemRef(d, key, &value);
        if (present == 0 && (PyDict_SetItem(d, key, defaultobj) < 0
                             || PyDict_GetItemRef(d, key, &value) < 0))
        {
            present = -1;
        }
        if (_PyStorage_TxEnd(sm) < 0) {
            present = -1;
        }
    }
    if (present < 0) {
        Py_CLEAR(value);
    }
    if (result != NULL) {
        /* Borrowed: the dict holds the value. */
        *result = incref_result ? Py_XNewRef(value) : value;
    }
    Py_XDECREF(value);
    return present;
}


/* --- the standard library's C value types ------------------------------- */

/* The C types other than the builtins whose objects a manager holds as
   values (copied, as an int is): range and slice, and the datetime
   module's.  The datetime module's are found through its C API capsule,
   once an object of one of them is seen (its module is loaded then) or a
   manager asks for one by kind (an open of a pool that holds them). */
static PyTypeObject *kind_types[_PyStorage_NKINDS];

static int
load_datetime_types(void)
{
    if (kind_types[_PyStorage_KIND_DATE] != NULL) {
        return 0;
    }
    PyDateTime_CAPI *api = (PyDateTime_CAPI *)PyCapsule_Import(
        PyDateTime_CAPSULE_NAME, 0);
    if (api == NULL) {
        return -1;
    }
    PyTypeObject *tz = Py_TYPE(api->TimeZone_UTC);
    /* Their layouts are datetime.h's, and timezone's (private to
       _datetimemodule.c) is an offset and a name: checked here, once. */
    if (tz->tp_basicsize != (Py_ssize_t)sizeof(_PyStorage_TimeZone)
        || api->DeltaType->tp_basicsize
           != (Py_ssize_t)sizeof(PyDateTime_Delta)
        || api->DateType->tp_basicsize != (Py_ssize_t)sizeof(PyDateTime_Date))
    {
        PyErr_SetString(PyExc_SystemError, "the datetime module's types "
                        "do not have the layouts of datetime.h");
        return -1;
    }
    kind_types[_PyStorage_KIND_TIMEDELTA] = api->DeltaType;
    kind_types[_PyStorage_KIND_TIMEZONE] = tz;
    kind_types[_PyStorage_KIND_TIME] = api->TimeType;
    kind_types[_PyStorage_KIND_DATETIME] = api->DateTimeType;
    kind_types[_PyStorage_KIND_DATE] = api->DateType;
    return 0;
}

/* kind's type, attr of module (imported): the C implementation of the
   layout that persistent storage knows -- its name, its basic size, and
   what check() finds -- else TypeError.  0, or -1 with an exception set. */
static int
load_module_type(int kind, const char *module, const char *attr,
                 const char *tp_name, size_t size,
                 int (*check)(PyTypeObject *))
{
    if (kind_types[kind] != NULL) {
        return 0;
    }
    PyObject *m = PyImport_ImportModule(module);
    PyObject *tp = m == NULL ? NULL : PyObject_GetAttrString(m, attr);
    Py_XDECREF(m);
    if (tp == NULL) {
        return -1;
    }
    if (!PyType_Check(tp)
        || ((PyTypeObject *)tp)->tp_basicsize != (Py_ssize_t)size
        || strcmp(((PyTypeObject *)tp)->tp_name, tp_name) != 0
        || !check((PyTypeObject *)tp))
    {
        Py_DECREF(tp);
        PyErr_Format(PyExc_TypeError, "%s is not the C implementation of "
                     "the layout that persistent storage knows", tp_name);
        return -1;
    }
    /* (A module's type: the module keeps it; so does this table.) */
    kind_types[kind] = (PyTypeObject *)tp;
    return 0;
}

/* A Decimal of 100 digits (more than its inline words hold), read
   through _PyStorage_Decimal. */
static int
decimal_reads_right(PyTypeObject *tp)
{
    PyObject *probe = PyObject_CallFunction(
        (PyObject *)tp, "s", "-1234567890123456789012345678901234567890"
        "123456789012345678901234567890123456789012345678901234567890E-7");
    int ok = 0;
    if (probe != NULL && Py_TYPE(probe) == tp) {
        _PyStorage_Decimal *d = (_PyStorage_Decimal *)probe;
        ok = (d->dec.flags & 1) == 1 && d->dec.exp == -7
             && d->dec.digits == 100 && d->dec.len == 6
             && d->dec.data != NULL && d->dec.data != d->data
             && d->dec.data[0] == 2345678901234567890ULL
             && d->dec.data[5] == 12345ULL;
    }
    Py_XDECREF(probe);
    PyErr_Clear();
    return ok;
}

static int
load_decimal_type(void)
{
    return load_module_type(_PyStorage_KIND_DECIMAL, "decimal", "Decimal",
                            "decimal.Decimal", sizeof(_PyStorage_Decimal),
                            decimal_reads_right);
}

static int
is_over_dict(PyTypeObject *tp)
{
    return tp->tp_base == &PyDict_Type;
}

static int
load_defaultdict_type(void)
{
    return load_module_type(_PyStorage_KIND_DEFAULTDICT, "collections",
                            "defaultdict", "collections.defaultdict",
                            sizeof(_PyStorage_DefaultDict), is_over_dict);
}

/* An OrderedDict of two keys, read through _PyStorage_ODict: the layout
   of odictobject.c (private to it) is the one that this file repeats.
   Checked once; made in DRAM whatever this thread's placement. */
static int
odict_reads_right(void)
{
    static int known;                 /* 1 right, -1 not, 0 not checked */
    if (known != 0) {
        return known > 0;
    }
    if (PyODict_Type.tp_basicsize != (Py_ssize_t)sizeof(_PyStorage_ODict)
        || PyODict_Type.tp_dictoffset
           != (Py_ssize_t)offsetof(_PyStorage_ODict, inst_dict)
        || PyODict_Type.tp_weaklistoffset
           != (Py_ssize_t)offsetof(_PyStorage_ODict, weakreflist)
        || PyStorage_PushPlacement(&PyStorage_DRAM) < 0)
    {
        PyErr_Clear();
        known = -1;
        return 0;
    }
    PyObject *probe = PyODict_New();
    PyObject *a = PyUnicode_FromString("a");
    PyObject *b = PyLong_FromLong(1000);
    known = -1;
    if (probe != NULL && a != NULL && b != NULL
        && PyODict_SetItem(probe, a, Py_None) == 0
        && PyODict_SetItem(probe, b, Py_None) == 0)
    {
        _PyStorage_ODict *od = (_PyStorage_ODict *)probe;
        _PyStorage_ODictNode *first = od->first, *last = od->last;
        if (first != NULL && last != NULL && first != last
            && first->key == a && first->prev == NULL && first->next == last
            && last->key == b && last->prev == first && last->next == NULL
            && last->hash == 1000 && od->fast_nodes != NULL
            && od->fast_nodes_size
               == (Py_ssize_t)1 << od->dict.ma_keys->dk_log2_size
            && od->fast_nodes[0] == first && od->fast_nodes[1] == last
            && od->resize_sentinel == (void *)od->dict.ma_keys
            && od->inst_dict == NULL)
        {
            known = 1;
        }
    }
    Py_XDECREF(probe);
    Py_XDECREF(a);
    Py_XDECREF(b);
    PyErr_Clear();
    (void)PyStorage_PopPlacement(&PyStorage_DRAM);
    return known > 0;
}

/* A deque of 70 items (two blocks), read through _PyStorage_Deque. */
static int
deque_reads_right(PyTypeObject *tp)
{
    if (tp->tp_weaklistoffset
        != (Py_ssize_t)offsetof(_PyStorage_Deque, weakreflist))
    {
        return 0;
    }
    PyObject *probe = PyObject_CallNoArgs((PyObject *)tp);
    int ok = 0;
    for (long i = 0; probe != NULL && i < 70; i++) {
        PyObject *r = PyObject_CallMethod(probe, "append", "l", i);
        if (r == NULL) {
            Py_CLEAR(probe);
        }
        Py_XDECREF(r);
    }
    if (probe != NULL && Py_TYPE(probe) == tp) {
        _PyStorage_Deque *d = (_PyStorage_Deque *)probe;
        _PyStorage_DequeBlock *left = d->leftblock, *right = d->rightblock;
        ok = Py_SIZE(d) == 70 && d->maxlen == -1 && left != NULL
             && right != NULL && left->rightlink == right
             && right->leftlink == left && d->leftindex >= 0
             && d->leftindex < _PyStorage_DEQUE_BLOCKLEN
             && (d->leftindex + 69) % _PyStorage_DEQUE_BLOCKLEN
                == d->rightindex
             && PyLong_AsLong(left->data[d->leftindex]) == 0
             && PyLong_AsLong(right->data[d->rightindex]) == 69;
    }
    Py_XDECREF(probe);
    PyErr_Clear();
    return ok;
}

static int
load_deque_type(void)
{
    if (kind_types[_PyStorage_KIND_DEQUE] != NULL) {
        return 0;
    }
    /* Made in DRAM whatever this thread's placement (the probe). */
    if (PyStorage_PushPlacement(&PyStorage_DRAM) < 0) {
        return -1;
    }
    int r = load_module_type(_PyStorage_KIND_DEQUE, "collections", "deque",
                             "collections.deque", sizeof(_PyStorage_Deque),
                             deque_reads_right);
    (void)PyStorage_PopPlacement(&PyStorage_DRAM);
    return r;
}

static int
load_odict_type(void)
{
    if (!odict_reads_right()) {
        PyErr_SetString(PyExc_TypeError, "collections.OrderedDict is not "
                        "the C implementation of the layout that persistent "
                        "storage knows");
        return -1;
    }
    return 0;
}

PyTypeObject *
_PyStorage_TypeOfKind(int kind)
{
    assert(0 <= kind && kind < _PyStorage_NKINDS);
    if (kind == _PyStorage_KIND_RANGE) {
        return &PyRange_Type;
    }
    if (kind == _PyStorage_KIND_SLICE) {
        return &PySlice_Type;
    }
    if (kind == _PyStorage_KIND_DECIMAL) {
        return load_decimal_type() < 0 ? NULL : kind_types[kind];
    }
    if (kind == _PyStorage_KIND_DEFAULTDICT) {
        return load_defaultdict_type() < 0 ? NULL : kind_types[kind];
    }
    if (kind == _PyStorage_KIND_ODICT) {
        return load_odict_type() < 0 ? NULL : &PyODict_Type;
    }
    if (kind == _PyStorage_KIND_DEQUE) {
        return load_deque_type() < 0 ? NULL : kind_types[kind];
    }
    return load_datetime_types() < 0 ? NULL : kind_types[kind];
}

int
_PyStorage_KindOf(PyTypeObject *tp)
{
    if (tp == &PyRange_Type) {
        return _PyStorage_KIND_RANGE;
    }
    if (tp == &PySlice_Type) {
        return _PyStorage_KIND_SLICE;
    }
    if (tp == &PyODict_Type) {
        return odict_reads_right() ? _PyStorage_KIND_ODICT : -1;
    }
    if (PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE)) {
        /* The heap types of modules: decimal's, collections'. */
        static const struct {
            int kind;
            const char *name;
            int (*load)(void);
        } modules_types[] = {
            {_PyStorage_KIND_DECIMAL, "decimal.Decimal", load_decimal_type},
            {_PyStorage_KIND_DEFAULTDICT, "collections.defaultdict",
             load_defaultdict_type},
            {_PyStorage_KIND_DEQUE, "collections.deque", load_deque_type},
        };
        for (size_t i = 0; i < Py_ARRAY_LENGTH(modules_types); i++) {
            int kind = modules_types[i].kind;
            if (tp == kind_types[kind]) {
                return kind;
            }
            if (kind_types[kind] == NULL
                && strcmp(tp->tp_name, modules_types[i].name) == 0)
            {
                if (modules_types[i].load() < 0) {
                    PyErr_Clear();
                    return -1;
                }
                return tp == kind_types[kind] ? kind : -1;
            }
        }
        return -1;
    }
    if (_PyStorage_HasBuiltinLayout(tp) || tp == &PyFloat_Type) {
        return -1;                /* the builtins (most calls) */
    }
    if (kind_types[_PyStorage_KIND_DATE] == NULL) {
        /* Not one of datetime's before its module gave its types. */
        if (strncmp(tp->tp_name, "datetime.", 9) != 0) {
            return -1;
        }
        if (load_datetime_types() < 0) {
            PyErr_Clear();
            return -1;
        }
    }
    for (int k = _PyStorage_KIND_DATE; k <= _PyStorage_KIND_TIMEZONE; k++) {
        if (tp == kind_types[k]) {
            return k;
        }
    }
    return -1;
}


/* The references that _PyStorage_KeepForever() gives: more than a pool
   can ever drop without having counted them (its pointers of another
   process, those that an undo brings back), and below where a count
   looks immortal (2**31).  Not immortality itself: an immortal str must
   be interned (the debug build checks), and a str subclass's instance
   (an enum.StrEnum member) cannot be. */
#define KEPT_FOREVER ((Py_ssize_t)1 << 30)

void
_PyStorage_KeepForever(PyObject *op)
{
    if (!_Py_IsImmortal(op) && Py_REFCNT(op) < KEPT_FOREVER) {
        _Py_RefcntAdd(op, KEPT_FOREVER);
    }
}


/* --- volatile metadata --------------------------------------------------- */

/* The one table of the parts of an object that are volatile metadata:
   what this process alone uses.  for_each_volatile() lists each part of
   op with what it is, and the value that a new object of this process
   has there (fresh):

     VOLATILE_WRITTEN  written outside any operation: a manager never logs
                       it (PyStorage_VisitVolatile(); the checking manager
                       of the tests lets it change)
     VOLATILE_PROCESS  the last process's: made fresh when a manager maps
                       its memory in, or an undo brings an object back
                       (_PyStorage_ResetVolatile())
     VOLATILE_CACHE    made from the value: fresh in a copy as well
                       (_PyStorage_ResetCaches())
     VOLATILE_COUNT    a reference count (a reset adds the fresh count to
                       the debug build's total: the count it replaces was
                       never this process's, or its deallocation took it
                       back)

   A field that a new CPython adds to an object's bookkeeping goes here,
   and so into all three. */
enum {
    VOLATILE_WRITTEN = 1,
    VOLATILE_PROCESS = 2,
    VOLATILE_CACHE = 4,
    VOLATILE_COUNT = 8,
};

typedef int (*volatile_visitor)(void *addr, size_t size, int what,
                                intptr_t fresh, void *arg);

static int
for_each_volatile(PyObject *op, volatile_visitor visit, void *arg)
{
    PyTypeObject *tp = Py_TYPE(op);
    const int per_process = VOLATILE_WRITTEN | VOLATILE_PROCESS;
    const int str_cache = per_process | VOLATILE_CACHE;
    int r;

#define VOLATILE(field, what, fresh) \
    do { \
        r = visit((void *)&(field), sizeof(field), (what), \
                  (intptr_t)(fresh), arg); \
        if (r != 0) { \
            return r; \
        } \
    } while (0)

    /* The manager counts the references itself. */
    VOLATILE(op->ob_refcnt, VOLATILE_WRITTEN | VOLATILE_COUNT, 1);
    if (_PyType_IS_GC(tp)) {
        /* Untracked: the DRAM collector never sees the manager's objects
           from an earlier process; the manager reclaims its own. */
        VOLATILE(*_Py_AS_GC(op), per_process, 0);
    }
    if (tp->tp_weaklistoffset != 0) {
        /* In the object, or (a class statement's, MANAGED_WEAKREF) in
           its pre-header: the weak references of this process. */
        VOLATILE(*(PyObject **)((char *)op + tp->tp_weaklistoffset),
                 per_process, NULL);
    }
    if (PyDict_Check(op)) {
        PyDictObject *mp = (PyDictObject *)op;
        VOLATILE(mp->ma_version_tag, per_process, 0);
        PyDictKeysObject *keys = mp->ma_keys;
        if (_PyStorage_Lookup(keys) != NULL) {
            VOLATILE(keys->dk_version, per_process, 0);
            /* A managed dict's keys are its alone (a deallocation that
               an abort undid had given them up). */
            VOLATILE(keys->dk_refcnt, VOLATILE_PROCESS | VOLATILE_COUNT, 1);
        }
    }
    else if (PyUnicode_Check(op)) {
        PyASCIIObject *a = (PyASCIIObject *)op;
        VOLATILE(a->hash, per_process, -1);
        /* A non-ASCII str's UTF-8 form is made on demand. */
        if (!a->state.ascii) {
            PyCompactUnicodeObject *c = (PyCompactUnicodeObject *)op;
            VOLATILE(c->utf8_length, str_cache, 0);
            VOLATILE(c->utf8, str_cache, NULL);
        }
        /* Interning is this process's (the interned dict points to the
           str): the state word, with the str not interned, and not
           statically allocated (a copy of a static str is not). */
        Py_BUILD_ASSERT(sizeof(a->state) == sizeof(uint32_t));
        PyASCIIObject fresh = *a;
        fresh.state.interned = SSTATE_NOT_INTERNED;
        fresh.state.statically_allocated = 0;
        uint32_t word;
        memcpy(&word, &fresh.state, sizeof(word));
        VOLATILE(a->state, VOLATILE_PROCESS | VOLATILE_CACHE, word);
    }
    else if (PyBytes_Check(op)) {
_Py_COMP_DIAG_PUSH
_Py_COMP_DIAG_IGNORE_DEPR_DECLS
        VOLATILE(((PyBytesObject *)op)->ob_shash, per_process, -1);
_Py_COMP_DIAG_POP
    }
    else if (_PyStorage_HasBuiltinLayout(tp)) {
        /* (An int's, a tuple's...: none of those below, without the
           walks of their checks.) */
    }
    else if (PyAnySet_Check(op)) {
        /* Only a frozenset's is written: a set has no hash. */
        VOLATILE(((PySetObject *)op)->hash,
                 PyFrozenSet_Check(op) ? per_process : VOLATILE_PROCESS, -1);
    }
    else if (PyByteArray_Check(op)) {
        /* The buffers exported of it are this process's (written outside
           any operation: getbuffer, releasebuffer, bytearray.join). */
        VOLATILE(((PyByteArrayObject *)op)->ob_exports, per_process, 0);
    }
    else {
        int kind = _PyStorage_KindOf(tp);
        if (kind >= _PyStorage_KIND_DATE
            && kind <= _PyStorage_KIND_TIMEDELTA)
        {
            /* The hash of a date, time, datetime or timedelta, kept
               (datetime.h's structs all have it first). */
            VOLATILE(((PyDateTime_Delta *)op)->hashcode, str_cache, -1);
        }
        else if (kind == _PyStorage_KIND_DECIMAL) {
            VOLATILE(((_PyStorage_Decimal *)op)->hash, str_cache, -1);
        }
    }
#undef VOLATILE
    return 0;
}

typedef struct {
    PyStorage_RangeVisitor visit;
    void *arg;
} range_state;

static int
visit_written(void *addr, size_t size, int what, intptr_t fresh, void *arg)
{
    range_state *rs = (range_state *)arg;
    return (what & VOLATILE_WRITTEN) ? rs->visit(addr, size, rs->arg) : 0;
}

int
PyStorage_VisitVolatile(PyObject *op, PyStorage_RangeVisitor visit, void *arg)
{
    range_state rs = {visit, arg};
    return for_each_volatile(op, visit_written, &rs);
}

/* Make the parts of kind what (in arg) fresh. */
static int
make_fresh(void *addr, size_t size, int what, intptr_t fresh, void *arg)
{
    if (!(what & *(int *)arg)) {
        return 0;
    }
    if (size != sizeof(uint32_t) && size != sizeof(uint64_t)) {
        assert(fresh == 0);           /* the GC head */
        memset(addr, 0, size);
        return 0;
    }
    uint32_t fresh32 = (uint32_t)fresh;
    uint64_t fresh64 = (uint64_t)fresh;
    int narrow = size == sizeof(uint32_t);
#ifdef Py_REF_DEBUG
    if (what & VOLATILE_COUNT) {
        _Py_RefTotal += narrow ? (Py_ssize_t)fresh32 : (Py_ssize_t)fresh64;
    }
#endif
    memcpy(addr, narrow ? (void *)&fresh32 : (void *)&fresh64, size);
    return 0;
}

void
_PyStorage_ResetVolatile(PyObject *op)
{
    int what = VOLATILE_PROCESS;
    (void)for_each_volatile(op, make_fresh, &what);
}

void
_PyStorage_ResetCaches(PyObject *op)
{
    int what = VOLATILE_CACHE;
    (void)for_each_volatile(op, make_fresh, &what);
}

void
_PyStorage_InternCopy(PyObject **p, int immortalize)
{
    /* A str of a manager is never interned: interning writes into it,
       and the interned dict would point into the manager's memory after
       the str is gone (an undo or a collection frees it without a
       deallocation; an unmapped pool takes it away).  The interned str
       is a copy of this process (a str is never placed). */
    PyObject *copy = _PyUnicode_Copy(*p);
    if (copy == NULL) {
        PyErr_Clear();
        return;
    }
    PyInterpreterState *interp = _PyInterpreterState_GET();
    if (immortalize) {
        _PyUnicode_InternImmortal(interp, &copy);
    }
    else {
        _PyUnicode_InternMortal(interp, &copy);
    }
    Py_SETREF(*p, copy);
}


/* --- classes, __main__ --------------------------------------------------- */

_PyStorage_ClassHookFunc _PyStorage_ClassHook = NULL;

/* The path of -X pmem=PATH, else of PYTHONPMEM: a new str, NULL (no
   exception) when neither is given, or NULL with an exception set. */
static PyObject *
main_pool_path(const PyConfig *config)
{
    const wchar_t *path = NULL;
    for (Py_ssize_t i = 0; i < config->xoptions.length; i++) {
        const wchar_t *opt = config->xoptions.items[i];
        if (wcsncmp(opt, L"pmem", 4) == 0
            && (opt[4] == L'=' || opt[4] == L'\0'))
        {
            path = opt[4] == L'=' ? opt + 5 : L"";
        }
    }
    if (path != NULL) {
        if (path[0] == L'\0') {
            PyErr_SetString(PyExc_ValueError, "-X pmem needs the path of "
                            "a pool: -X pmem=PATH");
            return NULL;
        }
        return PyUnicode_FromWideChar(path, -1);
    }
    const char *env = _Py_GetEnv(config->use_environment, "PYTHONPMEM");
    return env != NULL ? PyUnicode_DecodeFSDefault(env) : NULL;
}

int
_PyStorage_RunMainInPool(const PyConfig *config)
{
    PyObject *path = main_pool_path(config);
    if (path == NULL && !PyErr_Occurred()) {
        return 0;
    }
    PyObject *result = NULL;
    if (path != NULL) {
        PyObject *pmem = PyImport_ImportModule("pmem");
        if (pmem != NULL) {
            result = PyObject_CallMethod(pmem, "_run_main_in_pool", "O",
                                         path);
            Py_DECREF(pmem);
        }
        Py_DECREF(path);
    }
    if (result != NULL) {
        Py_DECREF(result);
        return 0;
    }
    /* One line: what went wrong, and the file is as it was. */
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *text = exc == NULL ? NULL : PyObject_Str(exc);
    const char *msg = text != NULL ? PyUnicode_AsUTF8(text) : NULL;
    PyErr_Clear();
    fprintf(stderr, "%ls: %s: %s\n",
            config->program_name != NULL ? config->program_name : L"python",
            exc != NULL ? _PyType_Name(Py_TYPE(exc)) : "error",
            msg != NULL ? msg : "the pool of -X pmem cannot be used");
    fflush(stderr);
    Py_XDECREF(text);
    Py_XDECREF(exc);
    return -1;
}
