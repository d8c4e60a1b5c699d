/* _pmem.Pool: opening a pool (one Pool per file and process), its
 * transactions as `with pool:` blocks, pool.gc(), and its other methods.
 */

#include "pool.h"

/*[clinic input]
module _pmem
class _pmem.Pool "PoolObject *" "get_state_by_type(type)->PoolType"
[clinic start generated code]*/
/*[clinic end generated code: output=da39a3ee5e6b4b0d input=9b98b98ae01de3fd]*/

#include "clinic/poolobject.c.h"

/* Let a pool go that nothing outside holds: its open pass failed, or it
   was closed and its objects are no longer held (release_pool(), which
   first takes back what this process gave them).  It is unregistered,
   unmapped and its file unlocked, and the path can be opened again. */
static void
forget_pool(PoolObject *self, PyObject *pools, PyObject *key)
{
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    if (PyStorage_RemoveRange(self->pop) < 0
        || PyDict_DelItem(pools, key) < 0)
    {
        PyErr_Clear();            /* neither can fail: both were made */
    }
    PyErr_Restore(type, exc, tb);
    pmemobj_close(self->pop);
    _PyPmem_CloseFiles(self);
    _PyPmem_RunsForget(self);
    self->pop = NULL;
    self->root = NULL;
    self->closed = 1;
    Py_DECREF(self);              /* the range's reference */
}

/* An object that died in the closed pool (deallocated, its block kept)
   holds nothing: what its slots still point to was counted as held by
   it, and is taken back. */
static int
uncount_slot(void **slot, int kind, void *arg)
{
    repair_state *st = (repair_state *)arg;
    char *v = *slot;
    if (kind == _PyStorage_SLOT_OBJECT && v >= st->lo && v < st->hi) {
        alloc_entry *e = _PyPmem_FindAlloc(st, v);
        if (e->object) {
            ENTRY_COUNTS(st, e)->dram++;
        }
    }
    return 0;
}

/* Whether this process holds an object of p from outside the pool: by a
   reference that neither the pool's live objects nor its root account
   for, or by a weak reference. */
static int
held_from_outside(repair_state *st)
{
    for (size_t i = 0; i < st->nentries; i++) {
        PyObject *op = ENTRY_OBJ(st, &st->entries[i]);
        if (op != NULL && Py_REFCNT(op) == 0) {
            (void)_PyStorage_VisitSlots(op, uncount_slot, st);
        }
    }
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        PyObject *op = ENTRY_OBJ(st, e);
        if (op == NULL || Py_REFCNT(op) == 0) {
            continue;
        }
        if (ENTRY_COUNTS(st, e)->dram != 0
            || (_PyType_SUPPORTS_WEAKREFS(Py_TYPE(op))
                && *_PyObject_GET_WEAKREFS_LISTPTR_FROM_OFFSET(op)))
        {
            return 1;
        }
    }
    return 0;
}

/* A reference that a pool object gives back when it goes without a
   deallocation (the pool let go, its garbage collected): to an object
   outside the pool that is not static (an enum member...), which the
   open or the store counted. */
static int
release_ref(PoolObject *p, void **slot, int kind)
{
    char *v = *slot;
    if (kind == _PyStorage_SLOT_OBJECT && v != NULL && _PyPmem_IsRef(p, v)) {
        Py_DECREF((PyObject *)v);
    }
    return 0;
}

static int
release_ref_slot(void **slot, int kind, void *arg)
{
    return release_ref((PoolObject *)arg, slot, kind);
}

/* Let go of a closed pool that nothing outside it holds any more: what
   this process gave its objects (the collector's tracking, the classes'
   references, the debug build's counts), its range, its mapping and
   lock, and its place among the module's pools, so that the path can be
   opened again.  1 when it was let go, 0 when one of its objects is
   still held (it stays mapped, readable), -1 with an exception set. */
static int
release_pool(PoolObject *self)
{
    /* What unregistering needs, first: past the counts, nothing fails. */
    PyObject *module = PyType_GetModuleByDef(Py_TYPE(self),
                                             &_PyPmem_ModuleDef);
    PyObject *key = module == NULL
                    ? NULL : PyUnicode_DecodeFSDefault(self->cpath);
    if (key == NULL) {
        return -1;
    }
    repair_state *st = _PyPmem_RepairPrepare(self, 0, 0);   /* the counts */
    int held = st == NULL || held_from_outside(st);
    for (size_t i = 0; !held && i < st->nentries; i++) {
        PyObject *op = ENTRY_OBJ(st, &st->entries[i]);
        if (op != NULL && Py_REFCNT(op) > 0) {
            (void)_PyPmem_LetGo(op, release_ref_slot, self);
#ifdef Py_REF_DEBUG
            _Py_RefTotal -= Py_REFCNT(op);
#endif
        }
    }
    if (st != NULL) {
        _PyPmem_AllocTableFree(st);
        PyMem_RawFree(st);
    }
    if (!held) {
        Py_INCREF(self);
        forget_pool(self, get_state(module)->pools, key);
        Py_DECREF(self);
    }
    Py_DECREF(key);
    return !held;
}

/* --- opening ------------------------------------------------------------ */

/* Let go of the closed pools of this process that the file at cpath is
   (another name of the file, or a raw copy: libpmemobj opens one pool of
   an identity per process) and that nothing holds any more, so that the
   file can be opened.  0, or -1 with an exception set. */
static int
let_go_of_twins(const char *cpath)
{
    struct stat st;
    unsigned char uuid[POOL_HDR_UUID_SIZE];
    if (!_PyPmem_ReadIdentity(cpath, &st, uuid)) {
        return 0;
    }
    PoolObject *next;
    for (PoolObject *p = _PyPmem_OpenPools; p != NULL; p = next) {
        /* release_pool() may deallocate p, which unlinks it. */
        next = p->next_open;
        if (p->closed && (!p->forked || p->readonly)
            && _PyPmem_SamePool(p, &st, uuid))
        {
            Py_INCREF(p);
            int r = release_pool(p);
            Py_DECREF(p);
            if (r < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* The file at cpath, created when it is missing and create is true:
   size bytes, or the default size when size is -1 (not given); its
   status in *st.  A pool that exists already must have the size given,
   when one is.  0, or -1 with an exception set. */
static int
ensure_file(PyObject *error, PyObject *path, const char *cpath, int create,
            Py_ssize_t size, struct stat *st)
{
    if (stat(cpath, st) == 0) {
        if (size >= 0 && S_ISREG(st->st_mode) && st->st_size != size) {
            PyErr_Format(error, "pool %R has %lld bytes, not %zd: size= is "
                         "the size of a new pool.  %s", path,
                         (long long)st->st_size, size,
                         size > st->st_size
                         ? "To make this one bigger, close it and run "
                           "pmem.grow(path, size), or python -m pmem grow "
                           "PATH SIZE"
                         : "A pool does not shrink; open it without size=");
            return -1;
        }
        return 0;
    }
    if (size < 0) {
        size = POOL_DEFAULT_SIZE;
    }
    if (errno != ENOENT || !create) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        return -1;
    }
    if (size < (Py_ssize_t)PMEMOBJ_MIN_POOL) {
        PyErr_Format(PyExc_ValueError, "a pool has %zu bytes at least",
                     (size_t)PMEMOBJ_MIN_POOL);
        return -1;
    }
    if (_PyPmem_CreatePool(error, path, cpath, (size_t)size) < 0
        || stat(cpath, st) < 0)
    {
        if (!PyErr_Occurred()) {
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        }
        return -1;
    }
    return 0;
}

/* The file's key among the module's pools: its real path.  NULL with an
   exception set. */
static PyObject *
pool_key(PyObject *path, const char *cpath)
{
    char *real = realpath(cpath, NULL);
    if (real == NULL) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        return NULL;
    }
    PyObject *key = PyUnicode_DecodeFSDefault(real);
    free(real);
    return key;
}

/* A new Pool of the file: mapped (once another process has let it go,
   and the file and its root checked), with its manager's hooks, not
   registered yet.  NULL with an exception set. */
static PoolObject *
map_pool(PyTypeObject *type, PyObject *error, PyObject *path,
         const char *cpath, const struct stat *st, int readonly)
{
    int lock_fd = -1, memfd = -1;
    PMEMobjpool *pop = readonly
        ? _PyPmem_OpenSnapshot(error, path, cpath, (size_t)st->st_size,
                               &lock_fd, &memfd)
        : _PyPmem_OpenFile(error, path, cpath, (size_t)st->st_size);
    if (pop == NULL) {
        return NULL;
    }
    PoolObject *self = (PoolObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        pmemobj_close(pop);
        if (readonly) {
            close(lock_fd);
            close(memfd);
        }
        return NULL;
    }
    self->lock_fd = lock_fd;
    self->memfd = memfd;
    self->pop = pop;
    memcpy(self->uuid, (char *)pop + POOL_HDR_POOLSET_UUID,
           POOL_HDR_UUID_SIZE);
    self->root = pmemobj_direct(pmemobj_root(pop, sizeof(struct pool_root)));
    self->size = (size_t)st->st_size;
    self->opener = getpid();
    self->dev = st->st_dev;
    self->ino = st->st_ino;
    self->path = Py_NewRef(path);
    self->error = Py_NewRef(error);
    self->type_codes = PyDict_New();
    self->classes = PyList_New(0);
    self->refs = PyDict_New();
    self->ref_order = PyList_New(0);
    if (self->type_codes == NULL || self->classes == NULL
        || self->refs == NULL || self->ref_order == NULL
        || _PyPmem_RegisterClasses(self) < 0)
    {
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        pmemobj_close(pop);
        self->pop = NULL;
        Py_DECREF(self);
        return NULL;
    }
    PyOS_snprintf(self->name, sizeof(self->name), "pool %s",
                  PyUnicode_AsUTF8(self->path));
    self->sm = (PyStorageManager){
        .name = self->name,
        .flags = PyStorage_PERSISTENT,
        .owner = (PyObject *)self,
        .alloc = _PyPmem_Alloc,
        .realloc = _PyPmem_Realloc,
        .free = _PyPmem_Free,
        .usable_size = _PyPmem_UsableSize,
        .begin = _PyPmem_Begin,
        .end = _PyPmem_End,
        .modify = _PyPmem_Modify,
        .modify_many = _PyPmem_ModifyMany,
        .collectable = _PyPmem_Collectable,
        .refer = _PyPmem_Refer,
    };
    return self;
}

/* self made known: to the module (under key), to the fork handlers, and
   as the manager of its range, which holds a reference to it that is
   never given back (the manager must outlive every object of the pool,
   even those that the interpreter's finalization frees after this module
   is gone).  0, or -1 with an exception set. */
static int
register_pool(PoolObject *self, PyObject *pools, PyObject *key)
{
    if (PyDict_SetItem(pools, key, (PyObject *)self) < 0) {
        return -1;
    }
    /* Past this point a failure leaves the pool mapped, known, and never
       used. */
    self->closed = 1;
    /* The fork handlers copy it: its path, as a C string that stays. */
    PyObject *real_bytes = PyUnicode_EncodeFSDefault(key);
    self->cpath = real_bytes == NULL
                  ? NULL : strdup(PyBytes_AS_STRING(real_bytes));
    Py_XDECREF(real_bytes);
    if (self->cpath == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        return -1;
    }
    if (_PyPmem_WatchForks() < 0) {
        return -1;
    }
    self->next_open = _PyPmem_OpenPools;
    _PyPmem_OpenPools = self;
    if (PyStorage_AddRange(&self->sm, self->pop, self->size) < 0) {
        return -1;
    }
    Py_INCREF(self);
    self->closed = 0;
    return 0;
}

/* The Pool of a file: the one that this process opened already, or a new
   one, made this process's by the open pass. */

/*[clinic input]
@classmethod
_pmem.Pool.__new__ as pool_new

    path as path_arg: object
    *
    create: bool = True
    size as size_arg: object = None
    readonly: bool = False
    durability: str = "power"

A libpmemobj pool, mapped, and the storage manager of its memory.

A new pool has size bytes (None: DEFAULT_SIZE, 64 MiB); pmem.open()
says more.
[clinic start generated code]*/

static PyObject *
pool_new_impl(PyTypeObject *type, PyObject *path_arg, int create,
              PyObject *size_arg, int readonly, const char *durability)
/*[clinic end generated code: output=a3d45eb57625bcb4 input=b4518a3a28b53fb5]*/
{
    PyObject *path;
    if (!PyUnicode_FSDecoder(path_arg, &path)) {
        return NULL;
    }
    int process = strcmp(durability, "process") == 0;
    if (!process && strcmp(durability, "power") != 0) {
        PyErr_Format(PyExc_ValueError, "durability is 'power' or "
                     "'process', not '%s'", durability);
        Py_DECREF(path);
        return NULL;
    }
    if (readonly) {
        create = 0;               /* a pool to read exists */
    }
    /* -1: not given (a new pool has the default size). */
    Py_ssize_t size = -1;
    if (size_arg != Py_None) {
        size = PyNumber_AsSsize_t(size_arg, PyExc_OverflowError);
        if (size == -1 && PyErr_Occurred()) {
            Py_DECREF(path);
            return NULL;
        }
        if (size < 0) {
            Py_DECREF(path);
            PyErr_SetString(PyExc_ValueError, "a pool's size is positive");
            return NULL;
        }
    }
    PyObject *key = NULL, *result = NULL;
    PyObject *path_bytes = PyUnicode_EncodeFSDefault(path);
    PyObject *module = (path_bytes == NULL ? NULL
                        : PyType_GetModuleByDef(type, &_PyPmem_ModuleDef));
    if (module == NULL) {
        goto done;
    }
    pmem_state *state = get_state(module);
    PyObject *error = state->PoolError;   /* the module holds it */
    const char *cpath = PyBytes_AS_STRING(path_bytes);
    struct stat st;
    if (ensure_file(error, path, cpath, create, size, &st) < 0
        || (key = pool_key(path, cpath)) == NULL)
    {
        goto done;
    }
    PyObject *known = PyDict_GetItemWithError(state->pools, key);
    if (known != NULL && ((PoolObject *)known)->closed) {
        if (((PoolObject *)known)->forked
            && !((PoolObject *)known)->readonly)
        {
            PyErr_Format(error, "pool %R was closed in this process, a "
                         "forked child of the one that opened it; open it "
                         "in a new process", path);
            goto done;
        }
        int released = release_pool((PoolObject *)known);
        if (released < 0) {
            goto done;
        }
        if (!released) {
            PyErr_Format(error, "pool %R was closed in this process, "
                         "which still holds some of its objects; drop "
                         "them to open it again, or open it in a new "
                         "process", path);
            goto done;
        }
        known = NULL;
    }
    if (known != NULL && ((PoolObject *)known)->readonly != readonly
        && (!((PoolObject *)known)->forked
            || ((PoolObject *)known)->readonly))
    {
        PyErr_Format(error, readonly
                     ? "pool %R is open for writing in this process: read "
                       "it through that pool (a process has a pool open "
                       "one way at a time)"
                     : "pool %R is open read-only in this process: close "
                       "it (pool.close()) and open it again to change it",
                     path);
        goto done;
    }
    if (known != NULL && !readonly
        && ((PoolObject *)known)->nosync != process)
    {
        PyErr_Format(error, "pool %R is open with durability='%s' in this "
                     "process: a pool has one durability while it is open",
                     path, process ? "power" : "process");
        goto done;
    }
    if (known != NULL || PyErr_Occurred()) {
        result = Py_XNewRef(known);
        goto done;
    }
    if (let_go_of_twins(cpath) < 0) {
        goto done;
    }
    PoolObject *self = map_pool(type, error, path, cpath, &st, readonly);
    if (self == NULL) {
        goto done;
    }
    if (register_pool(self, state->pools, key) < 0) {
        Py_DECREF(self);
        goto done;
    }
    /* The log first: it undoes what a crash left half-done, before the
       open pass reads the objects. */
    if (_PyPmem_LogOpen(self, readonly || process) < 0
        || _PyPmem_RunsOpen(self) < 0
        || _PyPmem_OpenPass(self) < 0)
    {
        forget_pool(self, state->pools, key);
        Py_DECREF(self);
        goto done;
    }
    if (readonly) {
        /* The namespace, made in the copy if the pool has none yet, so
           that reading it finds no name rather than a refusal. */
        PyObject *ns = _PyPmem_PoolNamespace(self);
        if (ns == NULL) {
            forget_pool(self, state->pools, key);
            Py_DECREF(self);
            goto done;
        }
        Py_DECREF(ns);
        /* From now on every change is refused. */
        self->readonly = 1;
        self->forked = 1;
    }
    result = (PyObject *)self;
done:
    Py_XDECREF(key);
    Py_DECREF(path);
    Py_XDECREF(path_bytes);
    return result;
}

static void
pool_dealloc(PoolObject *self)
{
    /* Only at the interpreter's exit (the module keeps its pools): the
       mapping stays for objects that the exit has not freed yet. */
    for (PoolObject **link = &_PyPmem_OpenPools; *link != NULL;
         link = &(*link)->next_open)
    {
        if (*link == self) {
            *link = self->next_open;
            break;
        }
    }
    _PyPmem_CloseFiles(self);
    free(self->cpath);
    Py_XDECREF(self->path);
    Py_XDECREF(self->error);
    Py_XDECREF(self->type_codes);
    Py_XDECREF(self->classes);
    Py_XDECREF(self->refs);
    Py_XDECREF(self->ref_order);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* pool.gc(): free the objects that neither the root nor DRAM reaches
   (cycles that reference counting cannot free: those of earlier
   processes are not tracked by the DRAM collector).  An object is held
   from DRAM when its reference count exceeds the references the pool's
   objects hold to it. */
static int
gc_mark_slot(void **slot, int kind, void *arg)
{
    mark_state *ms = (mark_state *)arg;
    char *v = *slot;
    if (v == NULL || v < ms->st->lo || v >= ms->st->hi) {
        return 0;
    }
    alloc_entry *e = _PyPmem_FindAlloc(ms->st, v);
    if (!ENTRY_USED(e) || e->mark) {
        return 0;
    }
    e->mark = 1;
    if (kind != _PyStorage_SLOT_TABLE) {
        _PyPmem_Progress("reachable", ++ms->marked, ms->st->count);
    }
    if (kind == _PyStorage_SLOT_TABLE || _PyPmem_IsLeaf((PyObject *)v)) {
        return 0;
    }
    return _PyPmem_MarkPush(ms, (PyObject *)v);
}

static int
gc_release_slot(void **slot, int kind, void *arg)
{
    /* A garbage object's reference to a live one, given up. */
    open_state *st = (open_state *)arg;
    char *v = *slot;
    if (kind != _PyStorage_SLOT_OBJECT || v == NULL) {
        return 0;
    }
    if (v >= st->lo && v < st->hi) {
        alloc_entry *e = _PyPmem_FindAlloc(st, v);
        if (ENTRY_USED(e) && e->mark) {
            _PyPmem_SetRefcnt((PyObject *)v, Py_REFCNT((PyObject *)v) - 1);
        }
        return 0;
    }
    return release_ref(st->pool, slot, kind);
}

/* The objects of p (its tables are not counted); -1 with an exception
   set. */
static Py_ssize_t
count_objects(PoolObject *p)
{
    size_t n;
    alloc_item *items = _PyPmem_ListAllocations(p, &n);
    if (items == NULL) {
        return -1;
    }
    Py_ssize_t objects = 0;
    for (size_t i = 0; i < n; i++) {
        objects += items[i].code != POOL_TABLE;
    }
    PyMem_RawFree(items);
    return objects;
}

/*[clinic input]
_pmem.Pool.gc

Free the objects that neither the pool's root nor this process reaches.

After a collection of the interpreter's garbage, unless gc.disable()
stopped it.  Return how many of the pool's objects were freed.
[clinic start generated code]*/

static PyObject *
_pmem_Pool_gc_impl(PoolObject *self)
/*[clinic end generated code: output=7902dd33b1b61ed4 input=cc000b2e2c503957]*/
{
    if (_PyPmem_CheckOpen(self) < 0) {
        return NULL;
    }
    /* DRAM garbage first (the interpreter's collector, unless disabled):
       what only it holds is unreachable too.  Its finalizers may run
       any code, so the checks below come after it. */
    Py_ssize_t before = count_objects(self);
    if (before < 0) {
        return NULL;
    }
    (void)PyGC_Collect();
    if (_PyPmem_CheckOpen(self) < 0) {
        return NULL;
    }
    if (self->forked) {
        _PyPmem_RefuseChange(self);
        return NULL;
    }
    if (self->depth > 0) {
        PyErr_Format(self->error, "pool %R cannot collect inside one of "
                     "its transactions", self->path);
        return NULL;
    }
    repair_state *st = _PyPmem_RepairPrepare(self, 0, 0);   /* the counts */
    if (st == NULL) {
        return PyErr_NoMemory();
    }
    mark_state ms = {.st = st};
    Py_ssize_t freed = -1;
    Py_ssize_t left = 0;          /* what the interpreter's collector left */
    for (size_t i = 0; i < st->nentries; i++) {
        left += st->entries[i].object;
    }
    st->count = (size_t)left;     /* the progress's total */
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        PyObject *op = ENTRY_OBJ(st, e);
        if (op != NULL && ENTRY_COUNTS(st, e)->dram > 0
            && gc_mark_slot((void **)&op, _PyStorage_SLOT_OBJECT, &ms) < 0)
        {
            goto done;
        }
    }
    if (_PyPmem_VisitRoots(self, st->lo, gc_mark_slot, &ms) < 0) {
        goto done;
    }
    while (ms.depth > 0) {
        if (_PyStorage_VisitSlots(ms.stack[--ms.depth], gc_mark_slot,
                                  &ms) < 0)
        {
            goto done;
        }
    }
    freed = 0;
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->object && !e->mark) {
            (void)_PyPmem_LetGo(ENTRY_OBJ(st, e), gc_release_slot, st);
            freed++;
        }
    }
    for (size_t i = 0; i < st->nentries; i++) {
        alloc_entry *e = &st->entries[i];
        if (ENTRY_USED(e) && !e->mark) {
            _PyPmem_BlockFree(self, ENTRY_BLOCK(st, e));
        }
    }
    (void)_PyPmem_RunsRelease(self);
done:
    PyMem_RawFree(ms.stack);
    _PyPmem_AllocTableFree(st);
    PyMem_RawFree(st);
    return (freed < 0 ? PyErr_NoMemory()
            : PyLong_FromSsize_t(Py_MAX(before - left, 0) + freed));
}

/* --- methods ------------------------------------------------------------- */


/* An explicit begin: a transaction, or, nested in one of this thread, a
   savepoint.  0, or -1 with an exception set. */
static int
pool_begin_block(PoolObject *self)
{
    if (_PyPmem_CheckOpen(self) < 0) {
        return -1;
    }
    int nested = _PyPmem_InMyTransaction(self);
    if (nested && _PyPmem_SavepointPush(self) < 0) {
        return -1;
    }
    if (_PyPmem_Begin(&self->sm, NULL) < 0) {
        if (nested) {
            self->nsavepoints--;
        }
        return -1;
    }
    return 0;
}

/*[clinic input]
_pmem.Pool.begin

Begin an atomic operation (a transaction); they nest.
[clinic start generated code]*/

static PyObject *
_pmem_Pool_begin_impl(PoolObject *self)
/*[clinic end generated code: output=c8e3cbe15c20514e input=85388c3cfd3e268e]*/
{
    if (pool_begin_block(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
pool_end_block(PoolObject *self, int commit)
{
    if (self->forked) {
        /* The parent's block, forked inside it: the parent ends it. */
        return 0;
    }
    if (_PyPmem_CheckOpen(self) < 0) {
        return -1;
    }
    if (!_PyPmem_InMyTransaction(self)) {
        PyErr_Format(PyExc_RuntimeError, "pool %R: end() without a block "
                     "that this thread began (pool.begin(), or `with pool:`)",
                     self->path);
        return -1;
    }
    if (self->nsavepoints > 0 && _PyPmem_InMyTransaction(self)
        && self->savepoints[self->nsavepoints - 1].depth == self->depth)
    {
        _PyPmem_SavepointPop(self, commit);
        commit = 1;               /* what is left joins the outer block */
    }
    return _PyPmem_End(&self->sm, commit);
}

/*[clinic input]
_pmem.Pool.end

    ok as commit: bool
    /

End the innermost begin().

The outermost commits when ok is true and aborts otherwise.
[clinic start generated code]*/

static PyObject *
_pmem_Pool_end_impl(PoolObject *self, int commit)
/*[clinic end generated code: output=910e609c21338265 input=6b737a6a06988914]*/
{
    if (pool_end_block(self, commit) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* `with pool:` -- a transaction, or a savepoint inside one. */

/*[clinic input]
_pmem.Pool.__enter__

Begin a transaction (`with pool:`); nested, a savepoint.
[clinic start generated code]*/

static PyObject *
_pmem_Pool___enter___impl(PoolObject *self)
/*[clinic end generated code: output=6ac51835656de5c2 input=f3e34b9836747826]*/
{
    return pool_begin_block(self) < 0 ? NULL : Py_NewRef(self);
}

/*[clinic input]
_pmem.Pool.__exit__

    type: object
    value: object
    traceback: object
    /

Commit the block, or undo it when it raised.
[clinic start generated code]*/

static PyObject *
_pmem_Pool___exit___impl(PoolObject *self, PyObject *type, PyObject *value,
                         PyObject *traceback)
/*[clinic end generated code: output=aa56f2a30a5e6758 input=9b9a58d802de0abf]*/
{
    /* Committed when the block did not raise; never suppresses. */
    if (pool_end_block(self, type == Py_None) < 0) {
        return NULL;
    }
    Py_RETURN_FALSE;
}

/* pool.close(): the pool is let go at once when nothing in this process
   holds its objects; else its objects stay readable in a private copy,
   and the file and its lock are let go.  A later close() or open of the
   path lets it go once they are no longer held. */

/*[clinic input]
_pmem.Pool.close

End the pool's use in this process.

Another process can open the pool; the objects still held here can be
read, not changed; once none is held, the path can be opened here again.
[clinic start generated code]*/

static PyObject *
_pmem_Pool_close_impl(PoolObject *self)
/*[clinic end generated code: output=2f9f888fc0d2823f input=923cf44e607d31a4]*/
{
    if (self->depth > 0) {
        PyErr_Format(self->error, "pool %R cannot close inside one of its "
                     "transactions", self->path);
        return NULL;
    }
    if (self->mainns != NULL) {
        PyErr_Format(self->error, "pool %R holds __main__'s namespace "
                     "(python -X pmem): it closes when the interpreter "
                     "exits", self->path);
        return NULL;
    }
    if (self->readonly && self->pop != NULL) {
        /* The file's lock goes at once; the copy that the objects live
           in, once they are no longer held. */
        if (self->lock_fd >= 0) {
            close(self->lock_fd);
            self->lock_fd = -1;
        }
        self->closed = 1;
        if (release_pool(self) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (self->pop == NULL || self->forked) {
        self->closed = 1;
        Py_RETURN_NONE;
    }
    int released = release_pool(self);
    if (released < 0) {
        return NULL;
    }
    if (!released && !self->closed) {
        (void)_PyPmem_MakePrivate(self);
    }
    self->closed = 1;
    Py_RETURN_NONE;
}

/* pool._copy_into(fd): write the pool's bytes, as they are between two
   transactions, into the file open as fd, from its start: what
   pmem.copy() copies of a pool that this process has open.  Every write
   of the process to the pool is made holding the GIL (pool objects
   export read-only buffers), and a transaction holds the writer lock
   from its begin to its end: holding both, the copy is of the file as a
   commit left it, and no write of the process can reach the pool until
   it is made.  The writer lock is waited for, without the GIL, when
   another thread's transaction holds it.  Other threads stop meanwhile
   (about a second per gigabyte). */

/*[clinic input]
_pmem.Pool._copy_into

    fd: fildes
    /

Write the pool's bytes, between two transactions, into the file open as fd.

For pmem.copy(); the number written.
[clinic start generated code]*/

static PyObject *
_pmem_Pool__copy_into_impl(PoolObject *self, int fd)
/*[clinic end generated code: output=1173026c9c5965e2 input=b60ec8087efa3c21]*/
{
    if (_PyPmem_CheckOpen(self) < 0) {
        return NULL;
    }
    if (self->readonly) {
        PyErr_Format(self->error, "pool %R is open read-only: copy its "
                     "file (pmem.copy(path, dst))", self->path);
        return NULL;
    }
    if (self->forked) {
        PyErr_Format(self->error, "pool %R is a forked child's copy of its "
                     "parent's pool: copy the pool from the parent, or its "
                     "file once the parent has closed it", self->path);
        return NULL;
    }
    if (_PyPmem_InMyTransaction(self)) {
        PyErr_Format(self->error, "pool %R cannot be copied inside one of "
                     "its transactions (the copy would hold it half done): "
                     "copy it after the block", self->path);
        return NULL;
    }
    /* A holder of the lock outside a transaction (-X pmem's bindings) is
       between two transactions. */
    int lock = !(self->held && self->owner == current_thread());
    if (lock) {
        PyMutex_Lock(&self->writer);
    }
    PyObject *result = NULL;
    if (self->closed) {
        /* close() ran while the lock was waited for. */
        (void)_PyPmem_CheckOpen(self);
        goto done;
    }
    const char *base = (const char *)self->pop;
    size_t done = 0;
    while (done < self->size) {
        size_t chunk = Py_MIN(self->size - done, (size_t)1 << 30);
        ssize_t n = pwrite(fd, base + done, chunk, (off_t)done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            if (n == 0) {
                errno = EIO;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        done += (size_t)n;
    }
    result = PyLong_FromSize_t(done);
done:
    if (lock) {
        PyMutex_Unlock(&self->writer);
    }
    return result;
}

/* type(*args, **kwargs) made in pool.  In C, with the vectorcall's own
   argument array: a value passed here is held by the caller and by the
   call's tuple only, as the store rule expects of a call (a Python
   wrapper would hold it once more, and an unshared list in
   PersistentDict(pool, {"a": []}) would look shared).

   Only the object itself is placed (_PyStorage_PushPlacementOf()):
   whatever else its constructor makes is volatile, and reaches the pool
   by the hooks' stores, under the rule.  (A placement of everything
   would place the lists that C code fills with PyList_SET_ITEM(), which
   no hook sees -- str.split()'s in an __init__ -- and leave pool lists
   holding pointers to DRAM: a pool that no open accepts.)  What is not
   placed, or what __new__ returns from elsewhere, is stored by the rule:
   copied, moved or refused. */
PyObject *
_PyPmem_NewIn(PoolObject *pool, PyObject *type, PyObject *const *args,
       Py_ssize_t nargs, PyObject *kwnames)
{
    if (_PyPmem_CheckOpen(pool) < 0) {
        return NULL;
    }
    if (pool->forked) {
        _PyPmem_RefuseChange(pool);
        return NULL;
    }
    int placed = (PyType_Check(type)
                  && _PyStorage_IsMutablePlaceable((PyTypeObject *)type));
    if (placed && _PyStorage_PushPlacementOf(&pool->sm,
                                             (PyTypeObject *)type) < 0)
    {
        return NULL;
    }
    PyObject *obj = PyObject_Vectorcall(type, args, nargs, kwnames);
    if (placed) {
        (void)PyStorage_PopPlacement(&pool->sm);
    }
    if (obj != NULL && _PyStorage_Lookup(obj) != &pool->sm) {
        /* The rule as a store into the pool's namespace applies it. */
        PyObject *ns = _PyPmem_PoolNamespace(pool);
        if (ns == NULL || _PyStorage_StoreSlow(ns, &obj, 1) < 0) {
            Py_CLEAR(obj);
        }
        Py_XDECREF(ns);
    }
    return obj;
}

/* Not Argument Clinic's, which has no **kwargs: the signature is written
   out, as upstream's is for functools.partial(). */
PyDoc_STRVAR(pool_new_object__doc__,
"new($self, type, /, *args, **kwargs)\n"
"--\n"
"\n"
"type(*args, **kwargs), made in the pool.");

static PyObject *
pool_new_object(PoolObject *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "new(type, /, *args, **kwargs) "
                        "needs the type");
        return NULL;
    }
    return _PyPmem_NewIn(self, args[0], args + 1, nargs - 1, kwnames);
}

/* The pool's namespace dict, made on first use (with the stores of
   -X pmem's journal in it). */
PyObject *
_PyPmem_PoolNamespace(PoolObject *self)
{
    if (self->mainns != NULL) {
        _PyPmem_MainFlush(self);
    }
    return _PyPmem_RootContainer(self, &self->root->namespace, PyDict_New);
}

/*[clinic input]
_pmem.Pool.namespace

The pool's root namespace, a dict in the pool.
[clinic start generated code]*/

static PyObject *
_pmem_Pool_namespace_impl(PoolObject *self)
/*[clinic end generated code: output=e5b40377d6d56f66 input=abef473db54ee568]*/
{
    return _PyPmem_PoolNamespace(self);
}

/*[clinic input]
_pmem.Pool.unresolved

{'module:qualname': reason} of the classes of the placeholders.

The placeholders (pmem.Placeholder) are the instances whose class this
process has not found, or found not a class a pool can hold, or of
another layout.
[clinic start generated code]*/

static PyObject *
_pmem_Pool_unresolved_impl(PoolObject *self)
/*[clinic end generated code: output=586838b8d7d2d2c5 input=1b63dd6fdad4ac87]*/
{
    return _PyPmem_Unresolved(self);
}

/*[clinic input]
_pmem.Pool.resolve

Look again for the classes of unresolved().

The instances of each one found with the layout that the pool recorded
become its instances.  The names resolved, sorted.
[clinic start generated code]*/

static PyObject *
_pmem_Pool_resolve_impl(PoolObject *self)
/*[clinic end generated code: output=c6098df7361b48f0 input=d59ba90406301331]*/
{
    return _PyPmem_Resolve(self);
}

/*[clinic input]
_pmem.Pool.stats

The objects and bytes in use, and the pool's free space.

{objects, records, tables, bytes_used, bytes_heap, bytes_log,
bytes_free, largest_free, pool_size, by_type}: the objects and bytes in
use (by type name: [count, bytes]); bytes_heap is what they take of the
heap, with their headers, and each small object its share of its run;
records, of the objects, are the pool's records of classes and
references; bytes_log is what the undo log and the journal of stores
take; bytes_free is what blocks of any size can use, at most
largest_free in one; the rest of pool_size is libpmemobj's metadata and
room for small objects only.
[clinic start generated code]*/

static PyObject *
_pmem_Pool_stats_impl(PoolObject *self)
/*[clinic end generated code: output=362d2631738ebf58 input=2e7217bdc5f80416]*/
{
    if (_PyPmem_CheckOpen(self) < 0) {
        return NULL;
    }
    size_t n;
    alloc_item *items = _PyPmem_ListAllocations(self, &n);
    if (items == NULL) {
        return NULL;
    }
    /* Counts and bytes by type code: the builtins' and the value types',
       then one per class (POOL_INSTANCE + i), then what no class of this
       process has. */
    size_t nbuiltin = POOL_KIND_END;
    size_t nrows = nbuiltin + (size_t)PyList_GET_SIZE(self->classes) + 1;
    Py_ssize_t (*rows)[2] = PyMem_RawCalloc(nrows, sizeof(*rows));
    if (rows == NULL) {
        PyMem_RawFree(items);
        return PyErr_NoMemory();
    }
    size_t used = 0;
    double heap = 0;
    for (size_t i = 0; i < n; i++) {
        size_t size = _PyPmem_BlockSize(self, items[i].block);
        heap += _PyPmem_BlockCost(self, items[i].block);
        uint64_t code = items[i].code;
        size_t row = code < nbuiltin ? code
                     : code - POOL_INSTANCE < nrows - nbuiltin - 1
                       ? nbuiltin + (code - POOL_INSTANCE) : nrows - 1;
        rows[row][0]++;
        rows[row][1] += (Py_ssize_t)size;
        used += size;
    }
    PyMem_RawFree(items);
    PyObject *by_type = PyDict_New();
    Py_ssize_t objects = 0;
    for (size_t row = 0; by_type != NULL && row < nrows; row++) {
        if (rows[row][0] == 0) {
            continue;
        }
        PyTypeObject *type = row < nbuiltin ? _PyPmem_TypeOfCode(row) : NULL;
        const char *name = row == POOL_TABLE ? "(tables)"
            : row < nbuiltin ? (type != NULL ? type->tp_name : "(unknown)")
            : row == nrows - 1 ? "(instances)"
            : ((PyTypeObject *)PyList_GET_ITEM(self->classes,
                                               row - nbuiltin))->tp_name;
        objects += row == POOL_TABLE ? 0 : rows[row][0];
        PyObject *value = Py_BuildValue("[nn]", rows[row][0], rows[row][1]);
        if (value == NULL || PyDict_SetItemString(by_type, name, value) < 0) {
            Py_CLEAR(by_type);
        }
        Py_XDECREF(value);
    }
    Py_ssize_t tables = rows[POOL_TABLE][0];
    PyMem_RawFree(rows);
    if (by_type == NULL) {
        return NULL;
    }
    /* Free: what any allocation can use (whole chunks); the rest of the
       file is libpmemobj's metadata, and room in runs for blocks of
       their size class only. */
    size_t free, largest;
    if (_PyPmem_FreeSpace(self, &free, &largest) < 0) {
        Py_DECREF(by_type);
        return NULL;
    }
    /* The pool's own records, among the objects: the type table and its
       names, the table of references.  They only grow (an undo puts
       back what it took out of them; PyDict_SetItem() copies a value in
       by one transaction and inserts it by the next): a crash may leave
       a name or a record that no object uses. */
    Py_ssize_t records = 0;
    if (self->root->types != 0) {
        records += 1 + PyList_GET_SIZE(
            (PyObject *)((char *)self->pop + self->root->types));
    }
    records += self->root->refs != 0;
    return Py_BuildValue("{sn sn sn sn sn sn sn sn sn sN}", "objects", objects,
                         "records", records,
                         "tables", tables, "bytes_used", (Py_ssize_t)used,
                         "bytes_heap", (Py_ssize_t)(heap + 0.5),
                         "bytes_log", (Py_ssize_t)_PyPmem_LogSize(self),
                         "bytes_free", (Py_ssize_t)free,
                         "largest_free", (Py_ssize_t)largest,
                         "pool_size", (Py_ssize_t)self->size,
                         "by_type", by_type);
}

static PyObject *
pool_get_closed(PoolObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
pool_get_readonly(PoolObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->readonly);
}

static PyObject *
pool_get_depth(PoolObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->depth);
}

static PyMethodDef pool_methods[] = {
    _PMEM_POOL_BEGIN_METHODDEF
    _PMEM_POOL_END_METHODDEF
    _PMEM_POOL___ENTER___METHODDEF
    _PMEM_POOL___EXIT___METHODDEF
    _PMEM_POOL_CLOSE_METHODDEF
    _PMEM_POOL__COPY_INTO_METHODDEF
    {"new", _PyCFunction_CAST(pool_new_object),
     METH_FASTCALL | METH_KEYWORDS, pool_new_object__doc__},
    _PMEM_POOL_NAMESPACE_METHODDEF
    _PMEM_POOL_GC_METHODDEF
    _PMEM_POOL_UNRESOLVED_METHODDEF
    _PMEM_POOL_RESOLVE_METHODDEF
    _PMEM_POOL_STATS_METHODDEF
    {NULL}
};

static PyMemberDef pool_members[] = {
    {"path", T_OBJECT, offsetof(PoolObject, path), READONLY, NULL},
    {"size", T_PYSSIZET, offsetof(PoolObject, size), READONLY, NULL},
    {NULL}
};

static PyObject *
pool_get_durability(PoolObject *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(self->nosync && !self->readonly ? "process"
                                                                : "power");
}

static PyObject *
pool_get_base(PoolObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromVoidPtr(self->pop);
}

static PyGetSetDef pool_getset[] = {
    {"base", (getter)pool_get_base, NULL,
     "The address the pool is mapped at.", NULL},
    {"closed", (getter)pool_get_closed, NULL, NULL, NULL},
    {"readonly", (getter)pool_get_readonly, NULL,
     "Opened read-only (pmem.open(path, readonly=True)).", NULL},
    {"durability", (getter)pool_get_durability, NULL,
     "What a commit survives: 'power' (a power loss or a crash of the "
     "system) or 'process' (the process being killed).", NULL},
    {"depth", (getter)pool_get_depth, NULL,
     "How deep in begin() calls the pool is.", NULL},
    {NULL}
};

static PyType_Slot pool_slots[] = {
    {Py_tp_new, pool_new},
    {Py_tp_dealloc, pool_dealloc},
    {Py_tp_methods, pool_methods},
    {Py_tp_members, pool_members},
    {Py_tp_getset, pool_getset},
    {Py_tp_doc, (void *)pool_new__doc__},
    {0, NULL}
};

PyType_Spec _PyPmem_PoolSpec = {
    .name = "_pmem.Pool",
    .basicsize = sizeof(PoolObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE
              | Py_TPFLAGS_IMMUTABLETYPE),
    .slots = pool_slots,
};
