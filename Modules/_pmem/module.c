/* The _pmem module: its functions (PersistentDict() and the like,
 * storage_of(), test support) and its setup (the types, the state).
 */

#include "pool.h"

/* --- test support -------------------------------------------------------- */

/* Rewrite the format version of a closed pool: for the tests of the
   version check. */
static PyObject *
set_format_version(PyObject *module, PyObject *args)
{
    PyObject *path;
    unsigned int version;
    if (!PyArg_ParseTuple(args, "O&I:_set_format_version",
                          PyUnicode_FSConverter, &path, &version)) {
        return NULL;
    }
    PMEMobjpool *pop = pmemobj_open(PyBytes_AS_STRING(path), POOL_LAYOUT);
    if (pop == NULL) {
        PyObject *name = PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(path));
        if (name != NULL) {
            _PyPmem_SetError(get_state(module)->PoolError, name,
                             "cannot open pool");
            Py_DECREF(name);
        }
        Py_DECREF(path);
        return NULL;
    }
    Py_DECREF(path);
    struct pool_root *root = pmemobj_direct(
        pmemobj_root(pop, sizeof(struct pool_root)));
    unsigned int was = root->format;
    root->format = version;
    pmemobj_persist(pop, &root->format, sizeof(root->format));
    pmemobj_close(pop);
    return PyLong_FromUnsignedLong(was);
}

/* The pools of this process, open or closed, that it has not let go: for
   the tests, which close those they opened. */
static PyObject *
pools(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyDict_Values(get_state(module)->pools);
}

/* The Pool that this process has open on the file at path (found by its
   real path, as the open registers it), read-only or not, or None:
   pmem.grow() must not change a pool in use here, and pmem.copy() copies
   a pool open here from the process.  A closed pool does not count (it
   holds neither the file nor its lock), nor a forked child's copy of its
   parent's pool (the parent holds the lock). */
static PyObject *
open_pool_at(PyObject *module, PyObject *arg)
{
    PyObject *path;
    if (!PyUnicode_FSConverter(arg, &path)) {
        return NULL;
    }
    char *real = realpath(PyBytes_AS_STRING(path), NULL);
    Py_DECREF(path);
    if (real == NULL) {
        Py_RETURN_NONE;           /* no such file: not open here */
    }
    PyObject *key = PyUnicode_DecodeFSDefault(real);
    free(real);
    if (key == NULL) {
        return NULL;
    }
    PyObject *pool = PyDict_GetItemWithError(get_state(module)->pools, key);
    Py_DECREF(key);
    if (pool == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PoolObject *p = (PoolObject *)pool;
    if (p->closed || (p->forked && !p->readonly)) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(pool);
}

/* What pmem.open() checks of the pool at path before its pass over the
   objects, refused with the same errors: the file (libpmemobj's check and
   ours, in a child process), libpmemobj's open (which finishes what a
   crash left in its logs) and the root.  For pmem.grow(): a pool full
   enough may have no room for what the open pass makes. */
static PyObject *
check_pool(PyObject *module, PyObject *arg)
{
    PyObject *path, *path_bytes;
    if (!PyUnicode_FSDecoder(arg, &path)) {
        return NULL;
    }
    path_bytes = PyUnicode_EncodeFSDefault(path);
    if (path_bytes == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    PyObject *error = get_state(module)->PoolError;
    const char *cpath = PyBytes_AS_STRING(path_bytes);
    PyObject *result = NULL;
    struct stat st;
    if (stat(cpath, &st) < 0) {
        PyErr_SetFromErrnoWithFilenameObject(
            errno == ENOENT ? PyExc_FileNotFoundError : PyExc_OSError, path);
        goto done;
    }
    PMEMobjpool *pop = _PyPmem_OpenFile(error, path, cpath,
                                        (size_t)st.st_size);
    if (pop != NULL) {
        pmemobj_close(pop);
        result = Py_NewRef(Py_None);
    }
done:
    Py_DECREF(path_bytes);
    Py_DECREF(path);
    return result;
}

/* _set_progress(func): call func(what, done, total) as the long passes
   (open, pool.gc()) go on, every 65536 items; None: stop. */
static PyObject *
set_progress(PyObject *module, PyObject *func)
{
    if (func != Py_None && !PyCallable_Check(func)) {
        PyErr_SetString(PyExc_TypeError, "_set_progress(func): func must "
                        "be callable or None");
        return NULL;
    }
    Py_XSETREF(_PyPmem_ProgressFunc, func == Py_None ? NULL
                                                     : Py_NewRef(func));
    Py_RETURN_NONE;
}

/* For tests: _use_runs(flag): whether this process allocates small
   objects in runs (runs.c), or as libpmemobj's blocks, as a pool of
   format 7 holds them.  The flag it had. */
static PyObject *
use_runs(PyObject *module, PyObject *flag)
{
    int use = PyObject_IsTrue(flag);
    if (use < 0) {
        return NULL;
    }
    PyObject *old = PyBool_FromLong(_PyPmem_UseRuns);
    _PyPmem_UseRuns = use;
    return old;
}

/* For tests: the allocations of pool as the heap walk lists them, and as
   libpmemobj does: a list of (offset, type number) pairs each. */
static PyObject *
heap_listings(PyObject *module, PyObject *pool)
{
    if (!PyObject_TypeCheck(pool, get_state(module)->PoolType)) {
        PyErr_SetString(PyExc_TypeError, "_heap_listings(pool)");
        return NULL;
    }
    PoolObject *p = (PoolObject *)pool;
    if (_PyPmem_CheckOpen(p) < 0) {
        return NULL;
    }
    alloc_item *items[2];
    size_t n[2];
    items[0] = _PyPmem_ListAllocations(p, &n[0]);
    items[1] = items[0] == NULL ? NULL : _PyPmem_ListByLibpmemobj(p, &n[1]);
    PyObject *result = items[1] == NULL ? NULL : PyTuple_New(2);
    for (int k = 0; result != NULL && k < 2; k++) {
        PyObject *list = PyList_New((Py_ssize_t)n[k]);
        for (size_t i = 0; list != NULL && i < n[k]; i++) {
            PyObject *item = Py_BuildValue(
                "(KK)", (unsigned long long)(items[k][i].block
                                             - (char *)p->pop),
                (unsigned long long)items[k][i].code);
            if (item == NULL) {
                Py_CLEAR(list);
                break;
            }
            PyList_SET_ITEM(list, (Py_ssize_t)i, item);
        }
        if (list == NULL) {
            Py_CLEAR(result);
            break;
        }
        PyTuple_SET_ITEM(result, k, list);
    }
    PyMem_RawFree(items[0]);
    PyMem_RawFree(items[1]);
    return result;
}

/* What stands for obj's manager in Python (a Pool, a MemoryKind), or
   None (DRAM, or a manager without one). */
static PyObject *
storage_of(PyObject *module, PyObject *obj)
{
    PyObject *owner = PyStorage_Of(obj)->owner;
    return Py_NewRef(owner != NULL ? owner : Py_None);
}

/* PersistentDict(pool, /, *args, **kwargs) and its kin. */
static PyObject *
persistent(PyObject *module, PyTypeObject *type, PyObject *const *args,
           Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs < 1
        || !PyObject_TypeCheck(args[0], get_state(module)->PoolType))
    {
        PyErr_Format(PyExc_TypeError, "Persistent%s(pool, /, ...): the "
                     "first argument is the pool", type->tp_name);
        return NULL;
    }
    return _PyPmem_NewIn((PoolObject *)args[0], (PyObject *)type, args + 1,
                  nargs - 1, kwnames);
}

#define PERSISTENT(NAME, TYPE) \
    static PyObject * \
    NAME(PyObject *module, PyObject *const *args, Py_ssize_t nargs, \
         PyObject *kwnames) \
    { \
        return persistent(module, &TYPE, args, nargs, kwnames); \
    }
PERSISTENT(persistent_dict, PyDict_Type)
PERSISTENT(persistent_list, PyList_Type)
PERSISTENT(persistent_set, PySet_Type)
PERSISTENT(persistent_bytearray, PyByteArray_Type)
#undef PERSISTENT

static PyMethodDef module_methods[] = {
    {"PersistentDict", (PyCFunction)(void(*)(void))persistent_dict,
     METH_FASTCALL | METH_KEYWORDS,
     "PersistentDict(pool, /, *args, **kwargs): dict(...) made in pool."},
    {"PersistentList", (PyCFunction)(void(*)(void))persistent_list,
     METH_FASTCALL | METH_KEYWORDS,
     "PersistentList(pool, /, *args): list(...) made in pool."},
    {"PersistentSet", (PyCFunction)(void(*)(void))persistent_set,
     METH_FASTCALL | METH_KEYWORDS,
     "PersistentSet(pool, /, *args): set(...) made in pool."},
    {"PersistentByteArray", (PyCFunction)(void(*)(void))persistent_bytearray,
     METH_FASTCALL | METH_KEYWORDS,
     "PersistentByteArray(pool, /, *args): bytearray(...) made in pool."},
    {"storage_of", storage_of, METH_O,
     "storage_of(obj): the Pool or MemoryKind that obj lives in, or None "
     "(DRAM)."},
    {"_set_format_version", set_format_version, METH_VARARGS,
     "For tests: _set_format_version(path, version) -> the version it "
     "had."},
    {"_start_main", (PyCFunction)(void(*)(void))_PyPmem_StartMain,
     METH_FASTCALL,
     "_start_main(pool, module, warning, placeholder): module's bindings "
     "persist in pool's namespace (python -X pmem=PATH)."},
    {"_stop_main", _PyPmem_StopMain, METH_NOARGS,
     "_stop_main(): __main__'s bindings stop persisting (at exit)."},
    {"current_pool", _PyPmem_MainPool, METH_NOARGS,
     "current_pool(): the pool that holds __main__'s variables (python "
     "-X pmem=PATH), or None."},
    {"_pools", pools, METH_NOARGS,
     "For tests: the pools of this process that it has not let go."},
    {"_check_pool", check_pool, METH_O,
     "_check_pool(path): what pmem.open() checks before its pass over the "
     "objects, raised as it raises it (for pmem.grow())."},
    {"_set_progress", set_progress, METH_O,
     "_set_progress(func): call func(what, done, total) as the long "
     "passes of an open and of pool.gc() go on (every 65536 items); None "
     "stops (python -m pmem shows it on a terminal)."},
    {"_use_runs", use_runs, METH_O,
     "For tests: _use_runs(flag): whether small objects are allocated in "
     "runs, or as libpmemobj's blocks (as in a pool of format 7).  The "
     "flag it had."},
    {"_heap_listings", heap_listings, METH_O,
     "For tests: _heap_listings(pool): the pool's allocations, as "
     "(offset, type number) pairs, read from the heap's metadata and "
     "listed by libpmemobj."},
    {"_open_pool_at", open_pool_at, METH_O,
     "_open_pool_at(path): the Pool that this process has open on the "
     "file at path, or None."},
    {NULL}
};

/* --- the module ---------------------------------------------------------- */

static int
pmem_exec(PyObject *module)
{
    pmem_state *state = get_state(module);
    state->PoolError = PyErr_NewExceptionWithDoc(
        "pmem.PoolError",
        "A pool file cannot be created, opened or used: foreign, "
        "corrupt, of another version, or open in another process.",
        PyExc_OSError, NULL);
    if (state->PoolError == NULL
        || PyModule_AddObjectRef(module, "PoolError", state->PoolError) < 0)
    {
        return -1;
    }
    state->pools = PyDict_New();
    if (state->pools == NULL) {
        return -1;
    }
    state->PoolType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &_PyPmem_PoolSpec, NULL);
    if (state->PoolType == NULL
        || PyModule_AddType(module, state->PoolType) < 0)
    {
        return -1;
    }
    PyTypeObject *ns_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &_PyPmem_NamespaceSpec, NULL);
    if (ns_type == NULL) {
        return -1;
    }
    int r = PyModule_AddType(module, ns_type);
    Py_DECREF(ns_type);
    if (r < 0) {
        return -1;
    }
    /* Instances that wait for a class get it when it is made. */
    _PyPmem_WatchClasses();
    /* One arena for every thread (the default is one per thread, each
       with runs of its own): a pool has one writer at a time. */
    enum pobj_arenas_assignment_type one_arena =
        POBJ_ARENAS_ASSIGNMENT_GLOBAL;
    (void)pmemobj_ctl_set(NULL, "heap.arenas_assignment_type", &one_arena);
    if (PyModule_AddIntConstant(module, "FORMAT_VERSION", POOL_FORMAT) < 0
        || PyModule_AddStringConstant(module, "LAYOUT", POOL_LAYOUT) < 0
        || PyModule_AddIntConstant(module, "DEFAULT_SIZE",
                                   (long)POOL_DEFAULT_SIZE) < 0
        || PyModule_AddIntConstant(module, "MIN_SIZE",
                                   (long)PMEMOBJ_MIN_POOL) < 0)
    {
        return -1;
    }
    return 0;
}

static int
pmem_traverse(PyObject *module, visitproc visit, void *arg)
{
    pmem_state *state = get_state(module);
    Py_VISIT(state->PoolError);
    Py_VISIT(state->PoolType);
    Py_VISIT(state->pools);
    return 0;
}

static int
pmem_clear(PyObject *module)
{
    pmem_state *state = get_state(module);
    Py_CLEAR(state->PoolError);
    Py_CLEAR(state->PoolType);
    Py_CLEAR(state->pools);
    return 0;
}

static void
pmem_free(void *module)
{
    (void)pmem_clear((PyObject *)module);
}

static PyModuleDef_Slot pmem_slots[] = {
    {Py_mod_exec, pmem_exec},
    {0, NULL}
};

struct PyModuleDef _PyPmem_ModuleDef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_pmem",
    .m_doc = "The persistent-memory storage manager (libpmemobj); "
             "see the pmem package.",
    .m_size = sizeof(pmem_state),
    .m_methods = module_methods,
    .m_slots = pmem_slots,
    .m_traverse = pmem_traverse,
    .m_clear = pmem_clear,
    .m_free = pmem_free,
};

PyMODINIT_FUNC
PyInit__pmem(void)
{
    return PyModuleDef_Init(&_PyPmem_ModuleDef);
}
