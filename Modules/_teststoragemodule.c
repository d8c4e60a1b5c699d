/* _teststorage: a checking storage manager, to prove hook coverage.
 *
 * An Arena is a storage manager that owns an mmapped region.  It hands
 * out the memory of objects placed in it and of their tables, and checks
 * that core object code tells it about every write:
 *
 *   - at the outermost begin, the arena must equal the snapshot taken at
 *     the last outermost end: anything else was written outside any
 *     atomic operation;
 *   - at the outermost end, every byte that differs from the begin
 *     snapshot must lie in a range registered with modify, in a block
 *     allocated during the operation, or in an object's volatile
 *     metadata (PyStorage_VisitVolatile(), the list a pool manager
 *     uses too).
 *
 * Each failure is appended to arena.violations as a readable string;
 * tests assert that the list stays empty.  The arena never undoes
 * anything: it is a coverage checker, not a transaction manager.
 *
 * Failures to inject: arena.fail_begins and arena.fail_commits count the
 * outermost begins and the committing outermost ends still to go before
 * one fails (0: none fails), with RuntimeError.
 *
 * Memory layout: the region is cut into 16-byte granules; per granule,
 * out of the region so that the checker's own bookkeeping never shows up
 * as a difference:
 *
 *   state[g]   FREE, START of a block, or CONT(inuation)
 *   born[g]    at START: the block was allocated during the current
 *              operation (or since the last snapshot)
 *   pre[g]     at START: 0 for a table, else 1 + the object's pre-header
 *              size in granules
 */

#ifndef Py_BUILD_CORE_BUILTIN
#  define Py_BUILD_CORE_MODULE 1
#endif
#define PY_SSIZE_T_CLEAN

#include "Python.h"
#include "pycore_object.h"        // _PyType_PreHeaderSize()
#include "pycore_storagemap.h"    // _PyStorage_MovesEnd()
#include "structmember.h"         // PyMemberDef

#include <sys/mman.h>

#define GRANULE 16
#define G_FREE 0
#define G_START 1
#define G_CONT 2

typedef struct {
    char *addr;
    size_t size;
} mod_range;

typedef struct {
    PyObject_HEAD
    PyStorageManager sm;          /* sm.name points into name */
    char name[32];
    char *mem;
    size_t size;
    size_t ngranules;
    uint8_t *state, *born, *pre;
    size_t rover;                 /* next granule to try */
    size_t high;                  /* granules in use at most, ever */
    char *snapshot;               /* copy of mem[0 .. high*GRANULE) */
    uint8_t *snapstate;
    int depth;
    mod_range *ranges;
    Py_ssize_t nranges, ranges_allocated;
    Py_ssize_t live_blocks;
    Py_ssize_t operations;
    PyObject *violations;         /* list of str */
    int fail_begins, fail_commits;  /* see the header comment */
} ArenaObject;

#define ARENA(sm) \
    ((ArenaObject *)((char *)(sm) - offsetof(ArenaObject, sm)))


/* --- allocation ------------------------------------------------------- */

static void *
arena_alloc(PyStorageManager *sm, size_t size, PyTypeObject *type)
{
    ArenaObject *a = ARENA(sm);
    size_t n = (size + GRANULE - 1) / GRANULE;
    if (n == 0) {
        n = 1;
    }
    for (int pass = 0; pass < 2; pass++) {
        size_t g = pass == 0 ? a->rover : 0;
        size_t limit = pass == 0 ? a->ngranules : a->rover;
        while (g + n <= limit) {
            size_t run = 0;
            while (run < n && a->state[g + run] == G_FREE) {
                run++;
            }
            if (run == n) {
                a->state[g] = G_START;
                memset(a->state + g + 1, G_CONT, n - 1);
                a->born[g] = 1;
                a->pre[g] = type == NULL ? 0
                    : (uint8_t)(1 + _PyType_PreHeaderSize(type) / GRANULE);
                a->rover = g + n;
                if (a->rover > a->high) {
                    a->high = a->rover;
                }
                a->live_blocks++;
                return a->mem + g * GRANULE;
            }
            g += run + 1;
        }
    }
    return NULL;
}

static size_t
block_granules(ArenaObject *a, size_t g)
{
    size_t n = 1;
    while (g + n < a->ngranules && a->state[g + n] == G_CONT) {
        n++;
    }
    return n;
}

static size_t
granule_of(ArenaObject *a, void *ptr)
{
    return (size_t)((char *)ptr - a->mem) / GRANULE;
}

static void
arena_free(PyStorageManager *sm, void *ptr)
{
    ArenaObject *a = ARENA(sm);
    size_t g = granule_of(a, ptr);
    if ((char *)ptr != a->mem + g * GRANULE || a->state[g] != G_START) {
        Py_FatalError("_teststorage: free of a pointer that is not an "
                      "arena block");
    }
    memset(a->state + g, G_FREE, block_granules(a, g));
    a->born[g] = 0;
    a->live_blocks--;
}

static void *
arena_realloc(PyStorageManager *sm, void *ptr, size_t size)
{
    ArenaObject *a = ARENA(sm);
    size_t g = granule_of(a, ptr);
    size_t old = block_granules(a, g) * GRANULE;
    /* Always a new block, as a pool's realloc in a transaction makes one:
       what a resize writes is then new memory, never unregistered. */
    void *new = arena_alloc(sm, size, NULL);
    if (new == NULL) {
        return NULL;
    }
    memcpy(new, ptr, Py_MIN(old, size));
    arena_free(sm, ptr);
    return new;
}


/* --- checking ---------------------------------------------------------- */

static void
violation(ArenaObject *a, const char *fmt, ...)
{
    va_list vargs;
    va_start(vargs, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, vargs);
    va_end(vargs);
    if (msg == NULL || PyList_Append(a->violations, msg) < 0) {
        PyErr_WriteUnraisable((PyObject *)a);
    }
    Py_XDECREF(msg);
}

static void
take_snapshot(ArenaObject *a)
{
    memcpy(a->snapshot, a->mem, a->high * GRANULE);
    memcpy(a->snapstate, a->state, a->high);
    memset(a->born, 0, a->high);
}

/* The start granule of the block holding granule g. */
static size_t
block_start(ArenaObject *a, size_t g)
{
    while (g > 0 && a->state[g] == G_CONT) {
        g--;
    }
    return g;
}

static PyObject *
block_object(ArenaObject *a, size_t start)
{
    if (a->pre[start] == 0) {
        return NULL;
    }
    return (PyObject *)(a->mem + start * GRANULE
                        + (a->pre[start] - 1) * GRANULE);
}

typedef struct {
    char *lo, *hi;                /* the changed byte range */
    int covered;
} cover_state;

static int
cover_visit(void *addr, size_t size, void *arg)
{
    cover_state *st = (cover_state *)arg;
    if ((char *)addr <= st->lo && st->hi <= (char *)addr + size) {
        st->covered = 1;
        return 1;
    }
    return 0;
}

/* Is [lo, hi) volatile metadata of a live object of the arena?  First the
   object whose block holds it, then (for tables: a dict's keys hold a
   volatile version tag) every object. */
static int
is_volatile(ArenaObject *a, char *lo, char *hi)
{
    cover_state st = {lo, hi, 0};
    size_t own = block_start(a, granule_of(a, lo));
    PyObject *op = block_object(a, own);
    if (op != NULL) {
        return PyStorage_VisitVolatile(op, cover_visit, &st) != 0;
    }
    for (size_t g = 0; g < a->high; g++) {
        if (a->state[g] != G_START) {
            continue;
        }
        op = block_object(a, g);
        if (op != NULL && PyStorage_VisitVolatile(op, cover_visit, &st)) {
            return 1;
        }
    }
    return 0;
}

static int
is_registered(ArenaObject *a, char *lo, char *hi)
{
    for (Py_ssize_t i = 0; i < a->nranges; i++) {
        mod_range *r = &a->ranges[i];
        if (r->addr <= lo && hi <= r->addr + r->size) {
            return 1;
        }
    }
    return 0;
}

static void
describe(ArenaObject *a, char *lo, char *hi, const char *why)
{
    size_t start = block_start(a, granule_of(a, lo));
    char *block = a->mem + start * GRANULE;
    PyObject *op = block_object(a, start);
    if (op != NULL && (char *)op <= lo) {
        violation(a, "%zd byte(s) at offset %zd of a %s object (arena "
                  "+%zd) %s", (Py_ssize_t)(hi - lo),
                  (Py_ssize_t)(lo - (char *)op), Py_TYPE(op)->tp_name,
                  (Py_ssize_t)((char *)op - a->mem), why);
    }
    else {
        violation(a, "%zd byte(s) at offset %zd of a %s (arena +%zd) %s",
                  (Py_ssize_t)(hi - lo), (Py_ssize_t)(lo - block),
                  op != NULL ? "pre-header" : "table",
                  (Py_ssize_t)(block - a->mem), why);
    }
}

/* Compare the arena with the snapshot; with registered ranges when
   inside is set (the end of an operation). */
static void
compare(ArenaObject *a, int inside)
{
    const char *why = inside
        ? "changed without a modify() registration"
        : "changed outside any atomic operation";
    size_t nbytes = a->high * GRANULE;
    size_t i = 0;
    while (i < nbytes) {
        if (a->mem[i] == a->snapshot[i]) {
            i++;
            continue;
        }
        size_t g = i / GRANULE;
        size_t start = block_start(a, g);
        /* Compare only what was the same live block at both times. */
        if (a->state[start] != G_START || a->snapstate[start] != G_START
            || a->born[start] || a->state[g] != a->snapstate[g])
        {
            i = (g + 1) * GRANULE;
            continue;
        }
        size_t j = i + 1;
        while (j < nbytes && j < (g + 1) * GRANULE
               && a->mem[j] != a->snapshot[j])
        {
            j++;
        }
        /* Byte by byte against the exemptions (a run of changes may
           straddle a registered range and a volatile field); report each
           run of unexplained bytes once. */
        size_t bad = j;           /* start of the current unexplained run */
        for (size_t k = i; k <= j; k++) {
            int exempt = 1;
            if (k < j) {
                char *p = a->mem + k;
                exempt = ((inside && is_registered(a, p, p + 1))
                          || is_volatile(a, p, p + 1));
            }
            if (!exempt && bad == j) {
                bad = k;
            }
            else if (exempt && bad != j) {
                describe(a, a->mem + bad, a->mem + k, why);
                bad = j;
            }
        }
        i = j;
    }
}

static int
arena_begin(PyStorageManager *sm, PyObject *Py_UNUSED(op))
{
    ArenaObject *a = ARENA(sm);
    if (a->depth == 0 && a->fail_begins > 0 && --a->fail_begins == 0) {
        PyErr_SetString(PyExc_RuntimeError, "arena: injected begin failure");
        return -1;
    }
    if (a->depth++ == 0) {
        compare(a, 0);
        take_snapshot(a);
        a->nranges = 0;
    }
    return 0;
}

static int
arena_end(PyStorageManager *sm, int ok)
{
    ArenaObject *a = ARENA(sm);
    if (a->depth <= 0) {
        violation(a, "end() without begin()");
        return 0;
    }
    if (--a->depth == 0) {
        compare(a, 1);
        take_snapshot(a);
        a->nranges = 0;
        a->operations++;
        /* (It never undoes: its moves are kept.) */
        _PyStorage_MovesEnd(sm, 0, 0);
        if (ok && a->fail_commits > 0 && --a->fail_commits == 0) {
            PyErr_SetString(PyExc_RuntimeError,
                            "arena: injected commit failure");
            return -1;
        }
    }
    return 0;
}

static int
arena_modify(PyStorageManager *sm, void *addr, size_t size)
{
    ArenaObject *a = ARENA(sm);
    if (a->depth == 0) {
        violation(a, "modify() of %zd byte(s) at arena +%zd outside any "
                  "atomic operation", (Py_ssize_t)size,
                  (Py_ssize_t)((char *)addr - a->mem));
        return 0;
    }
    if ((char *)addr < a->mem || (char *)addr + size > a->mem + a->size) {
        violation(a, "modify() of a range outside the arena");
        return 0;
    }
    if (a->nranges == a->ranges_allocated) {
        Py_ssize_t n = a->ranges_allocated * 2 + 16;
        mod_range *r = PyMem_RawRealloc(a->ranges, n * sizeof(mod_range));
        if (r == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        a->ranges = r;
        a->ranges_allocated = n;
    }
    a->ranges[a->nranges++] = (mod_range){(char *)addr, size};
    return 0;
}


/* --- the Arena type ------------------------------------------------------ */

static PyObject *
arena_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"size", "persistent", "name", NULL};
    Py_ssize_t size = 1 << 22;
    int persistent = 0;
    const char *name = "arena";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n$ps:Arena", kwlist,
                                     &size, &persistent, &name)) {
        return NULL;
    }
    if (size <= 0) {
        PyErr_SetString(PyExc_ValueError, "size must be positive");
        return NULL;
    }
    ArenaObject *a = (ArenaObject *)type->tp_alloc(type, 0);
    if (a == NULL) {
        return NULL;
    }
    size = (size + GRANULE - 1) / GRANULE * GRANULE;
    strncpy(a->name, name, sizeof(a->name) - 1);
    a->sm = (PyStorageManager){
        .name = a->name,
        .flags = persistent ? PyStorage_PERSISTENT : 0,
        .alloc = arena_alloc,
        .realloc = arena_realloc,
        .free = arena_free,
        .begin = arena_begin,
        .end = arena_end,
        .modify = arena_modify,
    };
    a->size = size;
    a->ngranules = size / GRANULE;
    a->mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a->mem == MAP_FAILED) {
        a->mem = NULL;
        Py_DECREF(a);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    a->snapshot = PyMem_RawMalloc(size);
    a->state = PyMem_RawCalloc(a->ngranules, 1);
    a->snapstate = PyMem_RawCalloc(a->ngranules, 1);
    a->born = PyMem_RawCalloc(a->ngranules, 1);
    a->pre = PyMem_RawCalloc(a->ngranules, 1);
    a->violations = PyList_New(0);
    if (a->snapshot == NULL || a->state == NULL || a->snapstate == NULL
        || a->born == NULL || a->pre == NULL || a->violations == NULL)
    {
        Py_DECREF(a);
        return PyErr_NoMemory();
    }
    if (PyStorage_AddRange(&a->sm, a->mem, size) < 0) {
        Py_DECREF(a);
        return NULL;
    }
    return (PyObject *)a;
}

static void
arena_dealloc(ArenaObject *a)
{
    /* Objects of the arena may outlive it only if it is never unmapped:
       an arena with live blocks is leaked on purpose (see close()). */
    if (a->mem != NULL && a->live_blocks == 0) {
        PyStorage_RemoveRange(a->mem);
        munmap(a->mem, a->size);
        PyMem_RawFree(a->snapshot);
        PyMem_RawFree(a->state);
        PyMem_RawFree(a->snapstate);
        PyMem_RawFree(a->born);
        PyMem_RawFree(a->pre);
        PyMem_RawFree(a->ranges);
    }
    else if (a->mem == NULL) {
        PyMem_RawFree(a->snapshot);
        PyMem_RawFree(a->state);
        PyMem_RawFree(a->snapstate);
        PyMem_RawFree(a->born);
        PyMem_RawFree(a->pre);
    }
    else {
        /* Keep the manager alive with its objects. */
        Py_INCREF(a);
        return;
    }
    Py_XDECREF(a->violations);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

static PyObject *
arena_check(ArenaObject *a, PyObject *Py_UNUSED(ignored))
{
    if (a->depth == 0) {
        compare(a, 0);
        take_snapshot(a);
    }
    return Py_NewRef(a->violations);
}

static PyObject *
arena_contains_obj(ArenaObject *a, PyObject *obj)
{
    return PyBool_FromLong(_PyStorage_Lookup(obj) == &a->sm);
}

static PyObject *
arena_push(ArenaObject *a, PyObject *Py_UNUSED(ignored))
{
    if (PyStorage_PushPlacement(&a->sm) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
arena_pop(ArenaObject *a, PyObject *Py_UNUSED(ignored))
{
    if (PyStorage_PopPlacement(&a->sm) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
arena_begin_meth(ArenaObject *a, PyObject *Py_UNUSED(ignored))
{
    if (arena_begin(&a->sm, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
arena_end_meth(ArenaObject *a, PyObject *Py_UNUSED(ignored))
{
    if (arena_end(&a->sm, 1) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
arena_stats(ArenaObject *a, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{sn sn sn si}",
                         "live_blocks", a->live_blocks,
                         "operations", a->operations,
                         "high_water", (Py_ssize_t)(a->high * GRANULE),
                         "depth", a->depth);
}

static PyMethodDef arena_methods[] = {
    {"check", (PyCFunction)arena_check, METH_NOARGS,
     "Compare with the last snapshot now; return the violations list."},
    {"contains", (PyCFunction)arena_contains_obj, METH_O,
     "Does obj live in this arena?"},
    {"push_placement", (PyCFunction)arena_push, METH_NOARGS,
     "Place new containers and instances in this arena."},
    {"pop_placement", (PyCFunction)arena_pop, METH_NOARGS,
     "Undo push_placement()."},
    {"begin", (PyCFunction)arena_begin_meth, METH_NOARGS,
     "Begin an atomic operation, as a hook would."},
    {"end", (PyCFunction)arena_end_meth, METH_NOARGS,
     "End it."},
    {"stats", (PyCFunction)arena_stats, METH_NOARGS,
     "Counters: live blocks, operations, high-water mark, depth."},
    {NULL, NULL}
};

static PyMemberDef arena_members[] = {
    {"violations", T_OBJECT, offsetof(ArenaObject, violations), READONLY,
     "What the checker found, one string each."},
    {"fail_begins", T_INT, offsetof(ArenaObject, fail_begins), 0,
     "Fail the n-th outermost begin from now (0: never)."},
    {"fail_commits", T_INT, offsetof(ArenaObject, fail_commits), 0,
     "Fail the n-th committing outermost end from now (0: never)."},
    {NULL}
};

static PyTypeObject Arena_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_teststorage.Arena",
    .tp_basicsize = sizeof(ArenaObject),
    .tp_dealloc = (destructor)arena_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Arena(size=4 MiB, *, persistent=False, name='arena')\n"
              "A checking storage manager over an mmapped region.",
    .tp_methods = arena_methods,
    .tp_members = arena_members,
    .tp_new = arena_new,
};


/* --- module -------------------------------------------------------------- */

static PyObject *
storage_of(PyObject *Py_UNUSED(module), PyObject *obj)
{
    return PyUnicode_FromString(PyStorage_Of(obj)->name);
}

static PyObject *
active(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(_PyStorage_Active);
}

static PyMethodDef module_methods[] = {
    {"storage_of", storage_of, METH_O,
     "The name of the storage manager of obj's memory."},
    {"active", active, METH_NOARGS,
     "Is any storage manager other than DRAM registered?"},
    {NULL, NULL}
};

static int
module_exec(PyObject *module)
{
    if (PyType_Ready(&Arena_Type) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "Arena", (PyObject *)&Arena_Type);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_teststorage",
    .m_doc = "A checking storage manager, to prove hook coverage.",
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC
PyInit__teststorage(void)
{
    return PyModuleDef_Init(&module_def);
}
