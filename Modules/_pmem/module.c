/* The _pmem module: its functions (PersistentDict() and the like,
 * storage_of(), test support) and its setup (the types, the state).
 */

#include "pool.h"

/*[clinic input]
module _pmem
[clinic start generated code]*/
/*[clinic end generated code: output=da39a3ee5e6b4b0d input=b0eea94d0c27caa2]*/

#include "clinic/module.c.h"

/* --- test support -------------------------------------------------------- */

/* Rewrite the format version of a closed pool: for the tests of the
   version check. */

/*[clinic input]
_pmem._set_format_version

    path as path_arg: object
    version: unsigned_int(bitwise=True)
    /

For tests: set the format version of the closed pool at path.

Return the version it had.
[clinic start generated code]*/

static PyObject *
_pmem__set_format_version_impl(PyObject *module, PyObject *path_arg,
                               unsigned int version)
/*[clinic end generated code: output=512a72a294068ca4 input=50d0a1f88037956c]*/
{
    PyObject *path;
    if (!PyUnicode_FSConverter(path_arg, &path)) {
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

/*[clinic input]
_pmem._pools

For tests: the pools of this process that it has not let go.
[clinic start generated code]*/

static PyObject *
_pmem__pools_impl(PyObject *module)
/*[clinic end generated code: output=f47f845d08a68424 input=016fe2881457bbce]*/
{
    return PyDict_Values(get_state(module)->pools);
}

/* The Pool that this process has open on the file at path (found by its
   real path, as the open registers it), read-only or not, or None:
   pmem.grow() must not change a pool in use here, and pmem.copy() copies
   a pool open here from the process.  A closed pool does not count (it
   holds neither the file nor its lock), nor a forked child's copy of its
   parent's pool (the parent holds the lock). */

/*[clinic input]
_pmem._open_pool_at

    path as path_arg: object
    /

The Pool that this process has open on the file at path, or None.
[clinic start generated code]*/

static PyObject *
_pmem__open_pool_at(PyObject *module, PyObject *path_arg)
/*[clinic end generated code: output=1389a69b34f9ac9c input=daeb27b0e6e7ecd3]*/
{
    PyObject *path;
    if (!PyUnicode_FSConverter(path_arg, &path)) {
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

/*[clinic input]
_pmem._check_pool

    path as path_arg: object
    /

What pmem.open() checks before its pass over the objects.

Raised as pmem.open() raises it (for pmem.grow()).
[clinic start generated code]*/

static PyObject *
_pmem__check_pool(PyObject *module, PyObject *path_arg)
/*[clinic end generated code: output=ca38fa8f6346e2a2 input=0f29090aea428883]*/
{
    PyObject *path, *path_bytes;
    if (!PyUnicode_FSDecoder(path_arg, &path)) {
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

/*[clinic input]
_pmem._set_progress

    func: object
    /

Report the progress of the long passes: func(what, done, total).

It is called as the passes of an open and of pool.gc() go on, every
65536 items; None stops (python -m pmem shows it on a terminal).
[clinic start generated code]*/

static PyObject *
_pmem__set_progress(PyObject *module, PyObject *func)
/*[clinic end generated code: output=1e5afdc1625876ce input=0a635797a7d862f8]*/
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

/*[clinic input]
_pmem._use_runs

    flag as use: bool
    /

For tests: whether small objects are allocated in runs.

Else as libpmemobj's blocks (as in a pool of format 7).  The flag it had.
[clinic start generated code]*/

static PyObject *
_pmem__use_runs_impl(PyObject *module, int use)
/*[clinic end generated code: output=407d9a62ac7dd97a input=3dae9bc36873c460]*/
{
    PyObject *old = PyBool_FromLong(_PyPmem_UseRuns);
    _PyPmem_UseRuns = use;
    return old;
}

/* For tests: the allocations of pool as the heap walk lists them, and as
   libpmemobj does: a list of (offset, type number) pairs each. */

/*[clinic input]
_pmem._heap_listings

    pool: object
    /

For tests: the pool's allocations, as (offset, type number) pairs.

Read from the heap's metadata, and listed by libpmemobj.
[clinic start generated code]*/

static PyObject *
_pmem__heap_listings(PyObject *module, PyObject *pool)
/*[clinic end generated code: output=493c1d69aa3632a0 input=6e03c1694f980d98]*/
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

/*[clinic input]
_pmem.storage_of

    obj: object
    /

The Pool or MemoryKind that obj lives in, or None (DRAM).
[clinic start generated code]*/

static PyObject *
_pmem_storage_of(PyObject *module, PyObject *obj)
/*[clinic end generated code: output=ba14f126b8d6a1bf input=a9a8a1772b2f9c58]*/
{
    PyObject *owner = PyStorage_Of(obj)->owner;
    return Py_NewRef(owner != NULL ? owner : Py_None);
}

/* --- __main__ in a pool (mainns.c) --------------------------------------- */

/*[clinic input]
_pmem._start_main

    pool: object
    module as main: object
    warning: object
    placeholder: object
    /

Module's bindings persist in pool's namespace (python -X pmem=PATH).
[clinic start generated code]*/

static PyObject *
_pmem__start_main_impl(PyObject *module, PyObject *pool, PyObject *main,
                       PyObject *warning, PyObject *placeholder)
/*[clinic end generated code: output=9657984c1ec5f48a input=656088cd9f5c1f74]*/
{
    return _PyPmem_StartMain(get_state(module), pool, main, warning,
                             placeholder);
}

/*[clinic input]
_pmem._stop_main

__main__'s bindings stop persisting (at exit).
[clinic start generated code]*/

static PyObject *
_pmem__stop_main_impl(PyObject *module)
/*[clinic end generated code: output=2cda04f141a401d6 input=d3c260d354fffefe]*/
{
    _PyPmem_StopMain();
    Py_RETURN_NONE;
}

/*[clinic input]
_pmem.current_pool

The pool that holds __main__'s variables (python -X pmem=PATH), or None.
[clinic start generated code]*/

static PyObject *
_pmem_current_pool_impl(PyObject *module)
/*[clinic end generated code: output=8236e2abdb96124d input=fccb07afc4ec4253]*/
{
    return _PyPmem_MainPool();
}

/* --- made in a pool ------------------------------------------------------ */

/* PersistentDict(pool, /, *args, **kwargs) and its kin.  Not Argument
   Clinic's, which has no **kwargs: their signatures are written out, as
   upstream's are for functools.partial() and operator.methodcaller(). */
static PyObject *
persistent(PyObject *module, const char *name, PyTypeObject *type,
           PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs < 1
        || !PyObject_TypeCheck(args[0], get_state(module)->PoolType))
    {
        PyErr_Format(PyExc_TypeError, "%s(pool, /, ...): the first "
                     "argument is the pool", name);
        return NULL;
    }
    return _PyPmem_NewIn((PoolObject *)args[0], (PyObject *)type, args + 1,
                  nargs - 1, kwnames);
}

#define PERSISTENT(NAME, TYPE, PYNAME, ARGS, WHAT) \
    PyDoc_STRVAR(NAME##__doc__, PYNAME "($module, pool, /, " ARGS ")\n--\n\n" \
                 WHAT " made in pool."); \
    static PyObject * \
    NAME(PyObject *module, PyObject *const *args, Py_ssize_t nargs, \
         PyObject *kwnames) \
    { \
        return persistent(module, PYNAME, &TYPE, args, nargs, kwnames); \
    }
PERSISTENT(persistent_dict, PyDict_Type, "PersistentDict",
           "*args, **kwargs", "dict(...)")
PERSISTENT(persistent_list, PyList_Type, "PersistentList", "*args",
           "list(...)")
PERSISTENT(persistent_set, PySet_Type, "PersistentSet", "*args", "set(...)")
PERSISTENT(persistent_bytearray, PyByteArray_Type, "PersistentByteArray",
           "*args, **kwargs", "bytearray(...)")
#undef PERSISTENT

#define PERSISTENT_METHODDEF(NAME, FUNC) \
    {NAME, _PyCFunction_CAST(FUNC), METH_FASTCALL | METH_KEYWORDS, \
     FUNC##__doc__}

static PyMethodDef module_methods[] = {
    PERSISTENT_METHODDEF("PersistentDict", persistent_dict),
    PERSISTENT_METHODDEF("PersistentList", persistent_list),
    PERSISTENT_METHODDEF("PersistentSet", persistent_set),
    PERSISTENT_METHODDEF("PersistentByteArray", persistent_bytearray),
    _PMEM_STORAGE_OF_METHODDEF
    _PMEM__SET_FORMAT_VERSION_METHODDEF
    _PMEM__START_MAIN_METHODDEF
    _PMEM__STOP_MAIN_METHODDEF
    _PMEM_CURRENT_POOL_METHODDEF
    _PMEM__POOLS_METHODDEF
    _PMEM__CHECK_POOL_METHODDEF
    _PMEM__SET_PROGRESS_METHODDEF
    _PMEM__USE_RUNS_METHODDEF
    _PMEM__HEAP_LISTINGS_METHODDEF
    _PMEM__OPEN_POOL_AT_METHODDEF
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
    state->NamespaceType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &_PyPmem_NamespaceSpec, NULL);
    if (state->NamespaceType == NULL
        || PyModule_AddType(module, state->NamespaceType) < 0)
    {
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
    Py_VISIT(state->NamespaceType);
    Py_VISIT(state->pools);
    return 0;
}

static int
pmem_clear(PyObject *module)
{
    pmem_state *state = get_state(module);
    Py_CLEAR(state->PoolError);
    Py_CLEAR(state->PoolType);
    Py_CLEAR(state->NamespaceType);
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
