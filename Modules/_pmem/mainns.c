/* The __main__ module's namespace in a pool: python -X pmem=PATH.
 *
 * __main__'s dict stays an ordinary dict in DRAM, so that the
 * interpreter's global loads keep their specializations and a value that
 * cannot live in a pool (a module, a function, an open file) can still be
 * bound.  What persists is its image in the pool's namespace dict
 * (pool.ns): the bindings whose values can live in the pool.  Each
 * operation on __main__'s dict updates it, in the same transaction.
 *
 * How the operations are seen.  The dict is allocated in a region of
 * DRAM of its own, next to the pool's mapping, whose storage manager is
 * this file's: core object code calls its hooks for every operation on
 * the dict (begin/end) and for every entry that it is about to write
 * (modify), as it does for a pool's objects, and for no other dict.  begin
 * begins a transaction of the pool; modify notes the names whose entries
 * change; the outermost end brings the pool's namespace in line with
 * them (reconcile()) and ends the transaction.  For each changed name:
 *
 *   a value of the pool, or static   the pool's namespace refers to it
 *   another value                    pmem's store rule (copied, moved,
 *                                    refused); __main__'s dict then holds
 *                                    the pool's copy
 *   a module, a function, a class,   per run: the pool's binding of the
 *   a dunder name, a refused value   name is removed; a refused value
 *                                    warns (NotPersistedWarning), once per
 *                                    name
 *   unbound (del)                    removed from the pool
 *
 * ns->shadow holds the bindings as the last end left them: what a name's
 * value was before the operation, and, when an operation changed more
 * than modify tells (a resize, a clear), which names changed.
 *
 * Undo.  A transaction that is undone (a `with pmem.transaction():` block
 * that raises, a savepoint, a commit that fails) restores the pool's
 * namespace with the rest of the pool's memory; the bindings of
 * __main__'s dict that it changed are restored from ns->log, the old
 * value of each name at each change, newest first.
 *
 * Placeholders.  A persisted binding whose value is an instance of a
 * class that the open could not find (one that the program itself
 * defines) waits in ns->pending, unbound, until the class exists: the
 * pool's resolve() then gives the instance its class
 * (_PyPmem_MainClassMade()).
 */

#include "pool.h"
#include "pycore_dict.h"          // DK_ENTRIES()
#include "pycore_long.h"          // _PyLong_DigitCount()
#include "pycore_moduleobject.h"  // PyModuleObject

/* --- the region ---------------------------------------------------------

   The dict and its keys tables: blocks of a power of two bytes, each
   after a header that holds its class, from free lists by class or the
   region's unused end.  The region is reserved, not committed: its pages
   are made as they are used. */

#define REGION_SIZE ((size_t)1 << 30)
#define BLOCK_HEADER 16
#define MIN_CLASS 6
#define NCLASSES 31

typedef struct {
    PyObject *name;
    PyObject *old;                /* NULL: unbound */
} undo_record;

/* A name bound by stores of the journal (see "the journal" below). */
typedef struct {
    PyObject *name;
    PyObject *kept;               /* the number or str of the pool that they
                                     give new values, or NULL: they store
                                     the pointer of the pool namespace's
                                     slot of name */
    size_t room;                  /* the bytes of kept's block */
    /* The slots of name's value in __main__'s dict, the pool's
       namespace and the shadow (kept == NULL), while their tables are
       these. */
    PyObject **slot, **kept_slot, **shadow_slot;
    PyDictKeysObject *keys, *kept_keys, *shadow_keys;
} journaled;

typedef struct {
    PyStorageManager sm;
    PoolObject *pool;
    PyObject *dict;               /* __main__'s */
    PyObject *pool_ns;            /* the pool's namespace dict */
    PyObject *shadow;             /* {name: value} as the last end left */
    PyObject *pending;            /* {name: placeholder}, not bound yet */
    PyObject *warned;             /* the names warned about */
    PyObject *warning;            /* pmem.NotPersistedWarning */
    PyObject *placeholder;        /* pmem.Placeholder */
    int off;                      /* stopped (the interpreter exits) */
    unsigned long writing;        /* the thread that writes the dict
                                     itself: its hooks do nothing */
    /* The operation going on (inside the pool's transaction, or holding
       its writer lock: held). */
    int depth;
    int held;
    PyDictKeysObject *keys;       /* the dict's keys at its start */
    int overflow;                 /* more changed than noted below */
#define NOTED_MAX 8
    PyObject *noted[NOTED_MAX];   /* names whose entries it writes */
    int nnoted;
    Py_ssize_t fresh[NOTED_MAX];  /* empty entries that it fills */
    int nfresh;
    undo_record *log;
    size_t nlog, log_allocated;
    /* An int of the pool that nothing in the pool refers to, for the
       next one whose number of digits changes (swap_number()). */
    PyObject *spare;
    size_t spare_size;            /* the bytes that its block holds */
    char *region;
    size_t used;
    char *free_lists[NCLASSES];
    /* The names whose bindings the pool's journal of stores holds, and
       whether it holds stores of the pool namespace's slots. */
#define JOURNALED_MAX 16
    journaled journaled[JOURNALED_MAX];
    int njournaled;
    int journal_slots;
} mainns;

#define MAINNS(sm) ((mainns *)((char *)(sm) - offsetof(mainns, sm)))

/* The one of this process. */
static mainns *the_main = NULL;

static journaled *find_journaled(mainns *ns, PyObject *name);
static void flush_journal(mainns *ns);

static void *
region_alloc(PyStorageManager *sm, size_t size, PyTypeObject *Py_UNUSED(type))
{
    mainns *ns = MAINNS(sm);
    size_t c = MIN_CLASS;
    while (c < NCLASSES && ((size_t)1 << c) < size + BLOCK_HEADER) {
        c++;
    }
    if (c >= NCLASSES) {
        return NULL;
    }
    char *block = ns->free_lists[c];
    if (block != NULL) {
        memcpy(&ns->free_lists[c], block + BLOCK_HEADER, sizeof(char *));
    }
    else {
        if (((size_t)1 << c) > REGION_SIZE - ns->used) {
            return NULL;
        }
        block = ns->region + ns->used;
        ns->used += (size_t)1 << c;
        memcpy(block, &c, sizeof(c));
    }
    memset(block + BLOCK_HEADER, 0, ((size_t)1 << c) - BLOCK_HEADER);
    return block + BLOCK_HEADER;
}

static void
region_free(PyStorageManager *sm, void *ptr)
{
    mainns *ns = MAINNS(sm);
    char *block = (char *)ptr - BLOCK_HEADER;
    size_t c;
    memcpy(&c, block, sizeof(c));
    memcpy(block + BLOCK_HEADER, &ns->free_lists[c], sizeof(char *));
    ns->free_lists[c] = block;
}

static void *
region_realloc(PyStorageManager *sm, void *ptr, size_t size)
{
    if (ptr == NULL) {
        return region_alloc(sm, size, NULL);
    }
    size_t c;
    memcpy(&c, (char *)ptr - BLOCK_HEADER, sizeof(c));
    size_t have = ((size_t)1 << c) - BLOCK_HEADER;
    if (size <= have) {
        return ptr;
    }
    void *moved = region_alloc(sm, size, NULL);
    if (moved != NULL) {
        memcpy(moved, ptr, have);
        region_free(sm, ptr);
    }
    return moved;
}

/* Reserve the region, next to the pool's mapping when that address is
   free: the registry's bounds then cover the two and little else. */
static char *
map_region(PoolObject *p)
{
    char *hint = (char *)p->pop - REGION_SIZE;
    void *region = mmap(hint, REGION_SIZE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    return region;
}


/* --- the names ------------------------------------------------------- */

/* Is name one of the interpreter's (__name__, __builtins__...)? */
static int
is_dunder(PyObject *name)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    return (n >= 5
            && PyUnicode_READ_CHAR(name, 0) == '_'
            && PyUnicode_READ_CHAR(name, 1) == '_'
            && PyUnicode_READ_CHAR(name, n - 1) == '_'
            && PyUnicode_READ_CHAR(name, n - 2) == '_');
}

/* Is v code that the program makes again in each run, silently per run:
   a module, a class, a function or method? */
static int
is_code(PyObject *v)
{
    return (PyModule_Check(v) || PyType_Check(v) || PyFunction_Check(v)
            || PyCFunction_Check(v) || PyMethod_Check(v)
            || PyInstanceMethod_Check(v) || PyCode_Check(v)
            || Py_IS_TYPE(v, &PyClassMethod_Type)
            || Py_IS_TYPE(v, &PyStaticMethod_Type)
            || Py_IS_TYPE(v, &PyClassMethodDescr_Type)
            || Py_IS_TYPE(v, &PyMethodDescr_Type)
            || Py_IS_TYPE(v, &PyWrapperDescr_Type));
}

static int
is_placeholder(mainns *ns, PyObject *v)
{
    return PyObject_TypeCheck(v, (PyTypeObject *)ns->placeholder);
}

/* Write the dict itself, as the hooks' caller: value NULL unbinds. */
static int
write_binding(mainns *ns, PyObject *name, PyObject *value)
{
    unsigned long outer = ns->writing;
    ns->writing = current_thread();
    int r;
    if (value != NULL) {
        r = PyDict_SetItem(ns->dict, name, value);
    }
    else {
        r = PyDict_Pop(ns->dict, name, NULL) < 0 ? -1 : 0;
    }
    ns->writing = outer;
    return r;
}

static int
pool_unbind(mainns *ns, PyObject *name)
{
    return PyDict_Pop(ns->pool_ns, name, NULL) < 0 ? -1 : 0;
}

/* A refused value: warned about once per name.  0, or -1 when the
   warning is an error (-W error). */
static int
warn_once(mainns *ns, PyObject *name, PyObject *why)
{
    int seen = PySet_Contains(ns->warned, name);
    if (seen != 0) {
        return seen < 0 ? -1 : 0;
    }
    if (PySet_Add(ns->warned, name) < 0) {
        return -1;
    }
    return PyErr_WarnFormat(ns->warning, 1, "%R is bound for this run "
                            "only: %S", name, why);
}

/* Keep name = *pvalue in the pool, or not.  *pvalue is a reference of
   the caller, who holds held of them (this one's included); it is
   replaced by the pool's copy when the store rule makes one.  0, or -1
   with an exception set. */
static int
persist(mainns *ns, PyObject *name, PyObject **pvalue, Py_ssize_t held,
        int alone)
{
    PyObject *v = *pvalue;
    if (!PyUnicode_CheckExact(name) || is_dunder(name) || is_code(v)) {
        return pool_unbind(ns, name);
    }
    PyObject *kept = PyDict_GetItemWithError(ns->pool_ns, name);
    if (kept == NULL && PyErr_Occurred()) {
        return -1;
    }
    if (kept == v) {
        return 0;
    }
    int mine = _PyStorage_IsStatic(v) || PyStorage_Of(v) == &ns->pool->sm;
    /* In place only when the operation changes this one name: an undo
       of the operation (a later name that fails) rebinds names, and
       could not give an object its old value. */
    if (alone && !mine && kept != NULL && Py_REFCNT(kept) == 3) {
        /* A number of the pool that the pool's namespace, the shadow and
           the log of this change alone refer to (n += 1): given the new
           value in place, as a C program would (no block made, none
           freed); the variable refers to it again. */
        int r = _PyStorage_OverwriteNumber(&ns->pool->sm, kept, v);
        if (r > 0) {
            Py_SETREF(*pvalue, Py_NewRef(kept));
        }
        if (r != 0) {
            return r < 0 ? -1 : 0;
        }
    }
    if (!mine) {
        if (_PyStorage_StoreBinding(ns->pool_ns, pvalue, held) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                return -1;
            }
            PyObject *why = PyErr_GetRaisedException();
            int r = pool_unbind(ns, name);
            if (r == 0) {
                r = warn_once(ns, name, why);
            }
            Py_DECREF(why);
            return r;
        }
        v = *pvalue;
    }
    return PyDict_SetItem(ns->pool_ns, name, v);
}

static int
log_change(mainns *ns, PyObject *name, PyObject *old)
{
    if (_PyPmem_RESERVE(ns->log, ns->log_allocated, ns->nlog + 1, 16) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    ns->log[ns->nlog].name = Py_NewRef(name);
    ns->log[ns->nlog].old = Py_XNewRef(old);
    ns->nlog++;
    return 0;
}

/* Bring the pool's binding of name in line with the dict's. */
static int
reconcile_name(mainns *ns, PyObject *name, Py_ssize_t held)
{
    if (find_journaled(ns, name) != NULL) {
        /* Its object has its last value, and the journal no store of
           it, before the transaction changes them. */
        flush_journal(ns);
    }
    PyObject *old = PyDict_GetItemWithError(ns->shadow, name);
    if (old == NULL && PyErr_Occurred()) {
        return -1;
    }
    PyObject *value;
    if (PyDict_GetItemRef(ns->dict, name, &value) < 0) {
        return -1;
    }
    if (value == old) {
        Py_XDECREF(value);
        return 0;
    }
    if (log_change(ns, name, old) < 0) {
        Py_XDECREF(value);
        return -1;
    }
    if (PyDict_GET_SIZE(ns->pending) > 0
        && PyDict_Pop(ns->pending, name, NULL) < 0)
    {
        Py_XDECREF(value);
        return -1;
    }
    if (value == NULL) {
        return (PyDict_Pop(ns->shadow, name, NULL) < 0
                || pool_unbind(ns, name) < 0) ? -1 : 0;
    }
    /* (held is 2 when the operation changed this name alone.) */
    PyObject *given = value;
    int r = persist(ns, name, &value, held + 1, held == 2);
    if (r == 0 && value != given) {
        /* The variable refers to the pool's copy. */
        r = _PyStorage_DictReplaceValue(ns->dict, name, value);
        r = r == 0 ? write_binding(ns, name, value) : (r < 0 ? -1 : 0);
    }
    if (r == 0) {
        r = PyDict_SetItem(ns->shadow, name, value);
    }
    Py_DECREF(value);
    return r;
}

static void
forget_noted(mainns *ns)
{
    for (int i = 0; i < ns->nnoted; i++) {
        Py_CLEAR(ns->noted[i]);
    }
    ns->nnoted = ns->nfresh = 0;
    ns->overflow = 0;
}

/* The names that the operation changed, taken out of what modify noted
   (which is empty again): *n of them in names[], new references, from
   ns->noted when they fit (small[]), else a new list (*plist). */
static int
take_changed_names(mainns *ns, PyObject **small, PyObject ***pnames,
                   Py_ssize_t *n, PyObject **plist)
{
    PyDictKeysObject *keys = ((PyDictObject *)ns->dict)->ma_keys;
    *plist = NULL;
    if (!ns->overflow && keys == ns->keys
        && ns->nnoted + ns->nfresh <= NOTED_MAX)
    {
        int k = 0;
        for (int i = 0; i < ns->nnoted; i++) {
            small[k++] = ns->noted[i];        /* the reference moves */
        }
        for (int i = 0; i < ns->nfresh; i++) {
            PyObject *key = DK_IS_UNICODE(keys)
                            ? DK_UNICODE_ENTRIES(keys)[ns->fresh[i]].me_key
                            : DK_ENTRIES(keys)[ns->fresh[i]].me_key;
            if (key != NULL) {
                small[k++] = Py_NewRef(key);
            }
        }
        ns->nnoted = ns->nfresh = 0;
        *pnames = small;
        *n = k;
        return 0;
    }
    forget_noted(ns);
    /* The names of the journal are not changed names. */
    flush_journal(ns);
    PyObject *names = PyList_New(0);
    if (names == NULL) {
        return -1;
    }
    /* Every name whose value is not the one it had. */
    Py_ssize_t pos = 0;
    PyObject *name, *value;
    while (PyDict_Next(ns->dict, &pos, &name, &value)) {
        PyObject *old = PyDict_GetItemWithError(ns->shadow, name);
        if ((old == NULL && PyErr_Occurred())
            || (old != value && PyList_Append(names, name) < 0))
        {
            goto error;
        }
    }
    pos = 0;
    while (PyDict_Next(ns->shadow, &pos, &name, &value)) {
        int has = PyDict_Contains(ns->dict, name);
        if (has < 0 || (!has && PyList_Append(names, name) < 0)) {
            goto error;
        }
    }
    /* The list's items are the list's references. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
        Py_INCREF(PyList_GET_ITEM(names, i));
    }
    *plist = names;
    *pnames = &PyList_GET_ITEM(names, 0);
    *n = PyList_GET_SIZE(names);
    return 0;
error:
    Py_DECREF(names);
    return -1;
}

/* Give the bindings of the log's records from `from` on their old
   values, newest first, in the dict and the shadow (and in the pool's
   namespace too when pool is true: else the pool's undo did it).  What
   the dict let go of is let go of after, so that no code runs in
   between. */
static void
undo_changes(mainns *ns, size_t from, int pool)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *dropped = PyList_New(0);
    while (ns->nlog > from) {
        undo_record rec = ns->log[--ns->nlog];
        PyObject *now;
        if (PyDict_GetItemRef(ns->dict, rec.name, &now) >= 0 && now != NULL
            && dropped != NULL && PyList_Append(dropped, now) < 0)
        {
            Py_CLEAR(dropped);
        }
        Py_XDECREF(now);
        int r = write_binding(ns, rec.name, rec.old);
        if (r == 0) {
            r = rec.old != NULL
                ? PyDict_SetItem(ns->shadow, rec.name, rec.old)
                : (PyDict_Pop(ns->shadow, rec.name, NULL) < 0 ? -1 : 0);
        }
        if (r == 0 && pool) {
            r = (rec.old != NULL && (_PyStorage_IsStatic(rec.old)
                                     || PyStorage_Of(rec.old)
                                        == &ns->pool->sm))
                ? PyDict_SetItem(ns->pool_ns, rec.name, rec.old)
                : pool_unbind(ns, rec.name);
        }
        if (r == 0 && rec.old == NULL) {
            /* A placeholder of the pool's waits again. */
            PyObject *kept = PyDict_GetItemWithError(ns->pool_ns, rec.name);
            if (kept != NULL && is_placeholder(ns, kept)) {
                r = PyDict_SetItem(ns->pending, rec.name, kept);
            }
        }
        if (r < 0 || PyErr_Occurred()) {
            PyErr_FormatUnraisable("Exception ignored while undoing the "
                                   "binding of %R in __main__", rec.name);
        }
        Py_DECREF(rec.name);
        Py_XDECREF(rec.old);
    }
    Py_XDECREF(dropped);
    PyErr_SetRaisedException(exc);
}

/* Give the names their values from the shadow (an operation that failed
   before the pool's namespace followed it). */
static void
restore_names(mainns *ns, PyObject **names, Py_ssize_t n)
{
    PyObject *exc = PyErr_GetRaisedException();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = names[i];
        PyObject *old = PyDict_GetItemWithError(ns->shadow, name);
        if ((old == NULL && PyErr_Occurred())
            || write_binding(ns, name, old) < 0)
        {
            PyErr_FormatUnraisable("Exception ignored while undoing the "
                                   "binding of %R in __main__", name);
        }
    }
    PyErr_SetRaisedException(exc);
}

/* The end of an operation on the dict: the pool's namespace follows it,
   in the pool's transaction.  When the operation failed, or the pool
   cannot follow, the operation is undone here (the pool's transaction
   may go on: its changes are undone with it, or stay a nested block's,
   as for any failed operation on a pool's object).  Code that runs
   meanwhile (a warning's) may change the dict again: its changes are
   noted, and followed by another pass. */
static int
reconcile(mainns *ns, int ok)
{
    size_t mark = ns->nlog;
    int r = 0;
    do {
        PyObject *small[NOTED_MAX], **names, *list;
        Py_ssize_t n;
        if (take_changed_names(ns, small, &names, &n, &list) < 0) {
            r = -1;
            break;
        }
        /* What is noted from here on is in this table. */
        ns->keys = ((PyDictObject *)ns->dict)->ma_keys;
        ns->overflow = 0;
        if (ok) {
            /* A value that one binding stores is held by the dict's
               entry and by the code that stores it (a value of several,
               by the dict alone). */
            Py_ssize_t held = n == 1 ? 2 : 1;
            for (Py_ssize_t i = 0; r == 0 && i < n; i++) {
                r = reconcile_name(ns, names[i], held);
            }
        }
        if (!ok || r < 0) {
            undo_changes(ns, mark, 1);
            restore_names(ns, names, n);
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_DECREF(names[i]);
        }
        Py_XDECREF(list);
        /* Noted since: compared whole. */
        ns->overflow = ns->overflow || ns->nnoted > 0 || ns->nfresh > 0;
    } while (r == 0 && ok && ns->overflow);
    forget_noted(ns);
    return r;
}


/* --- one store ------------------------------------------------------

   A binding outside any transaction of the pool, whose new value one
   atomic store of a word makes durable: an 8-byte pointer of the pool's
   namespace, or a number or short str of the pool overwritten in place,
   which is what a C program on the pool would do.  A crash before the
   store leaves the old binding, after it the new one; what the store
   orphans (the old value), the next open frees. */

/* One atomic store of a word of width bytes (4 or 8) at to, made
   durable after the journal's entries. */
static void
store_word(PoolObject *p, void *to, uint64_t word, size_t width)
{
    _PyPmem_JournalFlush(p);
    if (width == sizeof(uint32_t)) {
        __atomic_store_n((uint32_t *)to, (uint32_t)word, __ATOMIC_RELEASE);
    }
    else {
        __atomic_store_n((uint64_t *)to, word, __ATOMIC_RELEASE);
    }
    _PyPmem_Persist(p, to, width);
}

/* Overwrite old, a number or str of p that nothing but the pool's
   namespace and the shadow refers to, with the value of v, when one
   aligned store of at most 8 bytes does it.  1 when done, else 0. */
static int
overwrite_word(PoolObject *p, PyObject *old, PyObject *v)
{
    if (Py_TYPE(old) != Py_TYPE(v)) {
        return 0;
    }
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        uint64_t bits;
        memcpy(&bits, &d, sizeof(bits));
        store_word(p, &((PyFloatObject *)old)->ob_fval, bits, sizeof(bits));
        return 1;
    }
    if (PyLong_CheckExact(v)) {
        /* (v may be a small int: old then keeps its value, an int of
           the pool like any other, and the next number reuses it.) */
        PyLongObject *o = (PyLongObject *)old, *n = (PyLongObject *)v;
        if (o->long_value.lv_tag != n->long_value.lv_tag) {
            return 0;
        }
        /* The same sign and number of digits: the digits change. */
        Py_ssize_t ndigits = _PyLong_DigitCount(n);
        digit *to = o->long_value.ob_digit;
        if (ndigits <= 1) {
            store_word(p, to, n->long_value.ob_digit[0], sizeof(digit));
            return 1;
        }
        if (ndigits == 2 && ((uintptr_t)to & 7) == 0) {
            uint64_t word;
            memcpy(&word, n->long_value.ob_digit, sizeof(word));
            store_word(p, to, word, sizeof(word));
            return 1;
        }
        return 0;
    }
    if (PyUnicode_CheckExact(v)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(v);
        if (!PyUnicode_IS_COMPACT_ASCII(v) || !PyUnicode_IS_COMPACT_ASCII(old)
            || PyUnicode_GET_LENGTH(old) != n || n + 1 > 8
            || PyUnicode_CHECK_INTERNED(old))
        {
            return 0;
        }
        /* The characters and their NUL, in the word where they start (a
           block's size is a multiple of 16 bytes, past the header). */
        uint64_t *to = (uint64_t *)PyUnicode_DATA(old);
        if (((uintptr_t)to & 7) != 0) {
            return 0;
        }
        uint64_t word = 0;
        memcpy(&word, PyUnicode_DATA(v), (size_t)n + 1);
        store_word(p, to, word, sizeof(word));
        /* Volatile: the hash of this process. */
        _PyASCIIObject_CAST(old)->hash = _PyASCIIObject_CAST(v)->hash;
        return 1;
    }
    return 0;
}

/* The new value of old, an int of the pool that nothing but the pool's
   namespace's *slot and the process's variables refer to, when its
   number of digits changes (n crossing 2**30): two words change, which
   no one store makes durable together.  So the value is written into a
   spare int of the pool, which nothing in the pool reaches, and made
   durable; then one store points the slot to it.  A crash before that
   store leaves the old binding, after it the new one; the block that is
   let go (the old int) is the next spare, freed at exit, and after a
   crash by the next open, as nothing reaches it.  The references of the
   two slots (the pool's namespace's, the shadow's) are moved to the
   spare; the caller moves the variable's.  The spare, or NULL when there
   is none big enough (a transaction must do it). */
static PyObject *
swap_number(mainns *ns, PyObject **slot, PyObject **shadow_slot,
            PyObject *old, PyObject *v)
{
    if (!PyLong_CheckExact(old) || !PyLong_CheckExact(v)
        || _Py_IsImmortal(v))
    {
        return NULL;
    }
    size_t start = offsetof(PyLongObject, long_value);
    size_t size = offsetof(PyLongObject, long_value.ob_digit)
        + (size_t)Py_MAX(_PyLong_DigitCount((PyLongObject *)v), 1)
          * sizeof(digit);
    PyObject *spare = ns->spare;
    if (spare == NULL) {
        /* The first: a block of the pool, allocated atomically, that
           nothing reaches until the slot does. */
        size_t room = Py_MAX(size, offsetof(PyLongObject, long_value.ob_digit)
                                   + 2 * sizeof(digit));
        spare = _PyPmem_Alloc(&ns->pool->sm, room, &PyLong_Type);
        if (spare == NULL) {
            PyErr_Clear();        /* the transaction will say it */
            return NULL;
        }
        (void)PyObject_Init(spare, &PyLong_Type);
        _PyLong_SetSignAndDigitCount((PyLongObject *)spare, 0, 0);
        ns->spare = spare;
        ns->spare_size = _PyPmem_UsableSize(&ns->pool->sm, spare);
    }
    if (size > ns->spare_size) {
        return NULL;
    }
    memcpy((char *)spare + start, (char *)v + start, size - start);
    _PyPmem_SetRefcnt(spare, 2);
    _PyPmem_Persist(ns->pool, spare, size);
    store_word(ns->pool, slot, (uintptr_t)spare, sizeof(*slot));
    *shadow_slot = spare;
    /* The two references go, the spare's comes. */
    _PyPmem_SetRefcnt(old, Py_REFCNT(old) - 1);
    ns->spare = old;
    ns->spare_size = _PyPmem_UsableSize(&ns->pool->sm, old);
    return spare;
}

/* The pool's namespace's slot refers to v in place of what it held: one
   atomic, durable store; the old value is let go. */
static void
store_pointer(mainns *ns, PyObject **slot, PyObject *v)
{
    PyObject *old = *slot;
    store_word(ns->pool, slot, (uintptr_t)Py_NewRef(v), sizeof(*slot));
    Py_DECREF(old);
}

/* The binding of name, changed by an operation outside any transaction
   of the pool (whose writer lock this thread holds), made durable by one
   atomic store, when one does it.  1 when done, 0 when a transaction
   must, -1 with an exception set. */
static int
store_atomically(mainns *ns, PyObject *name)
{
    if (!PyUnicode_CheckExact(name) || PyDict_GET_SIZE(ns->pending) > 0) {
        return 0;
    }
    if (find_journaled(ns, name) != NULL) {
        flush_journal(ns);
    }
    PyObject *old = PyDict_GetItemWithError(ns->shadow, name);
    if (old == NULL && PyErr_Occurred()) {
        return -1;
    }
    PyObject *v = PyDict_GetItemWithError(ns->dict, name);
    if (v == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (v == old) {
        return 1;
    }
    PyObject **slot = _PyStorage_DictValueSlot(ns->pool_ns, name);
    PyObject *kept = slot != NULL ? *slot : NULL;
    if (is_dunder(name) || is_code(v)) {
        /* Per run, and not in the pool already. */
        if (kept != NULL) {
            return 0;
        }
        return PyDict_SetItem(ns->shadow, name, v) < 0 ? -1 : 1;
    }
    if (kept == NULL) {
        return 0;
    }
    int pools = PyStorage_Of(v) == &ns->pool->sm;
    if (!pools && old == kept && Py_REFCNT(kept) == 2) {
        /* The variable refers to the pool's object again (for a small
           int too: an int of the pool that has its value). */
        if (overwrite_word(ns->pool, kept, v)) {
            return _PyStorage_DictReplaceValue(ns->dict, name, kept) < 0
                   ? -1 : 1;
        }
        PyObject **shadow_slot = _PyStorage_DictValueSlot(ns->shadow, name);
        PyObject *to;
        if (shadow_slot != NULL && *shadow_slot == kept
            && (to = swap_number(ns, slot, shadow_slot, kept, v)) != NULL)
        {
            return _PyStorage_DictReplaceValue(ns->dict, name, to) < 0
                   ? -1 : 1;
        }
    }
    if (pools || _PyStorage_IsStatic(v)) {
        store_pointer(ns, slot, v);
        return PyDict_SetItem(ns->shadow, name, v) < 0 ? -1 : 1;
    }
    return 0;
}

/* reconcile() for an operation that began outside any transaction of the
   pool, holding its writer lock: one changed name that one store makes
   durable is stored so; anything else, in a transaction of its own. */
static int
reconcile_held(mainns *ns, int ok)
{
    PyDictKeysObject *keys = ((PyDictObject *)ns->dict)->ma_keys;
    if (ok && !ns->overflow && keys == ns->keys
        && ns->nnoted + ns->nfresh == 1)
    {
        PyObject *name = ns->nnoted == 1 ? Py_NewRef(ns->noted[0])
            : Py_XNewRef(DK_IS_UNICODE(keys)
                         ? DK_UNICODE_ENTRIES(keys)[ns->fresh[0]].me_key
                         : DK_ENTRIES(keys)[ns->fresh[0]].me_key);
        if (name == NULL) {
            forget_noted(ns);
            return 0;
        }
        forget_noted(ns);
        int r = store_atomically(ns, name);
        if (r != 1) {
            /* Followed (or undone) the usual way. */
            ns->noted[ns->nnoted++] = Py_NewRef(name);
            ok = r == 0;
        }
        Py_DECREF(name);
        if (r == 1 && !ns->overflow && ns->nnoted == 0 && ns->nfresh == 0) {
            return 0;
        }
        if (r < 0) {
            (void)reconcile(ns, 0);
            return -1;
        }
    }
    if (_PyPmem_Begin(&ns->pool->sm, NULL) < 0) {
        (void)reconcile(ns, 0);
        return -1;
    }
    int r = reconcile(ns, ok);
    if (_PyPmem_End(&ns->pool->sm, ok && r == 0) < 0) {
        r = -1;
    }
    return r;
}


/* --- the hooks -------------------------------------------------------- */

static inline int
passive(mainns *ns)
{
    return (ns->off || ns->pool->forked || ns->pool->closed
            || (ns->writing != 0 && ns->writing == current_thread()));
}

/* Whether the pool's namespace and the shadow both refer to kept, the
   dict's value of key: their slots in *pkept_slot, *pshadow_slot. */
static int
held_by_the_three(mainns *ns, PyObject *key, PyObject *kept,
                  PyObject ***pkept_slot, PyObject ***pshadow_slot)
{
    *pkept_slot = _PyStorage_DictValueSlot(ns->pool_ns, key);
    *pshadow_slot = _PyStorage_DictValueSlot(ns->shadow, key);
    return (*pkept_slot != NULL && **pkept_slot == kept
            && *pshadow_slot != NULL && **pshadow_slot == kept);
}

/* --- the journal ------------------------------------------------------

   A binding outside any transaction that one store into the pool would
   make durable (a number or short str of the pool given the new value in
   place, the pointer of the pool namespace's slot to a static object:
   n += 1, a loop's variable) is not stored in place: its store goes into
   the pool's journal of stores (log.c), which needs no drain, and
   __main__'s dict refers to the value itself.  The name is journaled
   (ns->journaled); its object in the pool keeps its old value, and the
   pool's namespace and the shadow still refer to it.  A statement costs
   no persist point, yet the pool keeps the bindings of a prefix of the
   statements after a power loss, and all of them after a kill (log.c
   says why).

   flush_journal() applies the journal: its stores are written in place,
   and the names refer to their objects of the pool again.  It runs
   before anything reads or changes what the journal stores to: an
   operation on the dict that changes a journaled name (reconcile_name(),
   store_atomically(), take_changed_names()), an operation on the pool's
   namespace while the journal holds stores of its slots
   (_PyPmem_MainBegins()), a read of the pool's namespace
   (_PyPmem_MainFlush()), a binding that the journal cannot hold, and the
   exit.  Every other store that the pool makes durable is made so after
   the journal's entries (store_word(), and the first entry of the undo
   log). */

static journaled *
find_journaled(mainns *ns, PyObject *name)
{
    if (ns->njournaled == 0) {
        return NULL;
    }
    for (int i = 0; i < ns->njournaled; i++) {
        if (ns->journaled[i].name == name) {
            return &ns->journaled[i];
        }
    }
    /* An equal str that is another object (a name made at run time). */
    if (!PyUnicode_CheckExact(name)) {
        return NULL;
    }
    Py_hash_t hash = PyObject_Hash(name);     /* a str's: never fails */
    for (int i = 0; i < ns->njournaled; i++) {
        PyObject *other = ns->journaled[i].name;
        if (PyObject_Hash(other) == hash
            && PyUnicode_Compare(other, name) == 0)
        {
            return &ns->journaled[i];
        }
    }
    return NULL;
}

/* Are a and b, numbers or strs, the same value (bit for bit, for
   floats)? */
static int
same_value(PyObject *a, PyObject *b)
{
    if (Py_TYPE(a) != Py_TYPE(b)) {
        return 0;
    }
    if (PyFloat_CheckExact(a)) {
        double x = PyFloat_AS_DOUBLE(a), y = PyFloat_AS_DOUBLE(b);
        return memcmp(&x, &y, sizeof(x)) == 0;
    }
    int r = PyObject_RichCompareBool(a, b, Py_EQ);
    if (r < 0) {
        PyErr_Clear();
        return 0;
    }
    return r;
}

static void
flush_journal(mainns *ns)
{
    if (ns->njournaled == 0) {
        return;
    }
    _PyPmem_JournalApply(ns->pool);
    PyObject *exc = PyErr_GetRaisedException();
    int n = ns->njournaled;
    ns->njournaled = 0;
    ns->journal_slots = 0;
    for (int i = 0; i < n; i++) {
        journaled *j = &ns->journaled[i];
        PyObject *kept = j->kept;
        if (kept != NULL) {
            if (PyUnicode_CheckExact(kept)) {
                _PyASCIIObject_CAST(kept)->hash = -1;
            }
            /* The variable refers to the pool's object again, when it
               still has the value that the journal gave the object. */
            PyObject **slot = _PyStorage_DictValueSlot(ns->dict, j->name);
            if (slot != NULL && *slot != kept && same_value(*slot, kept)) {
                (void)_PyStorage_DictReplaceValue(ns->dict, j->name, kept);
            }
            Py_DECREF(kept);
        }
        Py_DECREF(j->name);
    }
    PyErr_SetRaisedException(exc);
}

/* The bytes that give kept, a number or str of the pool in a block of
   room bytes, the value of v: *size of them in buf, to store at *off
   from kept's start.  1 when there are such bytes (v has kept's type,
   and fits in kept's block; a str, kept's length), else 0. */
static int
number_image(PyObject *kept, size_t room, PyObject *v, size_t *off,
             size_t *size, uint64_t *buf)
{
    if (Py_TYPE(kept) != Py_TYPE(v)) {
        return 0;
    }
    memset(buf, 0, POOL_JOURNAL_MAX_STORE);
    if (PyFloat_CheckExact(v)) {
        *off = offsetof(PyFloatObject, ob_fval);
        *size = sizeof(double);
        memcpy(buf, &((PyFloatObject *)v)->ob_fval, sizeof(double));
        return 1;
    }
    if (PyLong_CheckExact(v)) {
        /* The tag (sign and number of digits) and the digits. */
        PyLongObject *n = (PyLongObject *)v;
        size_t ndigits = Py_MAX(_PyLong_DigitCount(n), 1);
        *off = offsetof(PyLongObject, long_value);
        *size = sizeof(n->long_value.lv_tag) + ndigits * sizeof(digit);
        if (*size > POOL_JOURNAL_MAX_STORE || *off + *size > room) {
            return 0;
        }
        memcpy(buf, &n->long_value, *size);
        return 1;
    }
    if (PyUnicode_CheckExact(v)) {
        size_t n = (size_t)PyUnicode_GET_LENGTH(v);
        if (!PyUnicode_IS_COMPACT_ASCII(v) || !PyUnicode_IS_COMPACT_ASCII(kept)
            || (size_t)PyUnicode_GET_LENGTH(kept) != n
            || n + 1 > POOL_JOURNAL_MAX_STORE
            || PyUnicode_CHECK_INTERNED(kept))
        {
            return 0;
        }
        /* The characters and their NUL. */
        *off = (size_t)((char *)PyUnicode_DATA(kept) - (char *)kept);
        *size = n + 1;
        memcpy(buf, PyUnicode_DATA(v), n + 1);
        return 1;
    }
    return 0;
}

/* The slot of key's value in dict (NULL when it has none), from *pslot
   while the dict's table is *pkeys. */
static inline PyObject **
cached_slot(PyObject *dict, PyObject *key, PyObject ***pslot,
            PyDictKeysObject **pkeys)
{
    PyDictKeysObject *keys = ((PyDictObject *)dict)->ma_keys;
    if (*pkeys != keys || *pslot == NULL) {
        *pslot = _PyStorage_DictValueSlot(dict, key);
        *pkeys = keys;
    }
    return *pslot;
}

/* dict[key] = value as a store of the journal, when it can be one.  1
   when done, 0 when not (the journal applied when it held key), -1 with
   an exception set.  *pslot: dict's slot of key, or NULL. */
static int
journal_binding(mainns *ns, PyObject *dict, PyObject *key, PyObject *value,
                PyObject ***pslot)
{
    PoolObject *p = ns->pool;
    journaled *j = find_journaled(ns, key);
    PyObject **slot = j != NULL ? cached_slot(dict, key, &j->slot, &j->keys)
                                : _PyStorage_DictValueSlot(dict, key);
    *pslot = slot;
    if (slot == NULL || PyStorage_Of(value) == &p->sm || is_dunder(key)) {
        goto not_journaled;
    }
    if (*slot == value) {
        return j != NULL ? 1 : 0;
    }
    PyObject *kept, **kept_slot = NULL, **shadow_slot = NULL;
    size_t room = 0;
    if (j != NULL) {
        kept = j->kept;
        room = j->room;
    }
    else {
        /* A number of the pool that only the three dicts refer to, or a
           static object. */
        kept = *slot;
        int mine = PyStorage_Of(kept) == &p->sm;
        if ((mine && Py_REFCNT(kept) != 3)
            || (!mine && !_PyStorage_IsStatic(kept))
            || !held_by_the_three(ns, key, kept, &kept_slot, &shadow_slot))
        {
            return 0;
        }
        if (mine) {
            room = _PyPmem_UsableSize(&p->sm, kept);
        }
        else {
            kept = NULL;
        }
    }
    uint64_t buf[POOL_JOURNAL_MAX_STORE / 8];
    char *to;
    size_t size;
    if (kept != NULL) {
        size_t off;
        if (!number_image(kept, room, value, &off, &size, buf)) {
            goto not_journaled;
        }
        to = (char *)kept + off;
    }
    else {
        /* The pointer of the pool namespace's slot. */
        if (!_PyStorage_IsStatic(value)) {
            goto not_journaled;
        }
        if (j != NULL) {
            kept_slot = cached_slot(ns->pool_ns, key, &j->kept_slot,
                                    &j->kept_keys);
            shadow_slot = cached_slot(ns->shadow, key, &j->shadow_slot,
                                      &j->shadow_keys);
            if (kept_slot == NULL || shadow_slot == NULL) {
                goto not_journaled;
            }
        }
        memcpy(buf, &value, sizeof(value));
        size = sizeof(value);
        to = (char *)kept_slot;
    }
    if (j == NULL && ns->njournaled == JOURNALED_MAX) {
        flush_journal(ns);
    }
    int r = _PyPmem_JournalStore(p, to, buf, size);
    if (r < 0) {
        return -1;
    }
    if (r > 0) {
        /* The journal is full, or cannot be made: the usual way. */
        flush_journal(ns);
        return 0;
    }
    if (j == NULL) {
        j = &ns->journaled[ns->njournaled++];
        *j = (journaled){
            .name = Py_NewRef(key),
            .kept = Py_XNewRef(kept),
            .room = room,
            .slot = slot,
            .keys = ((PyDictObject *)dict)->ma_keys,
            .kept_slot = kept_slot,
            .kept_keys = ((PyDictObject *)ns->pool_ns)->ma_keys,
            .shadow_slot = shadow_slot,
            .shadow_keys = ((PyDictObject *)ns->shadow)->ma_keys,
        };
    }
    if (kept == NULL) {
        ns->journal_slots = 1;
        Py_SETREF(*shadow_slot, Py_NewRef(value));
    }
    _PyStorage_DictReplaceInSlot(dict, key, slot, value);
    return 1;

not_journaled:
    if (j != NULL) {
        flush_journal(ns);
    }
    return 0;
}

/* Before an operation on the pool's namespace, while p's transaction or
   writer lock is held. */
void
_PyPmem_MainBegins(PoolObject *p, PyObject *op)
{
    mainns *ns = (mainns *)p->mainns;
    if (ns->journal_slots && op == ns->pool_ns && !passive(ns)) {
        flush_journal(ns);
    }
}

/* The journal applied (the pool's namespace is read), holding the
   writer lock: also inside a transaction of another pool, which this
   does not join. */
void
_PyPmem_MainFlush(PoolObject *p)
{
    mainns *ns = (mainns *)p->mainns;
    if (ns == NULL || ns->njournaled == 0 || passive(ns)) {
        return;
    }
    int mine = p->owner == current_thread();
    if (!mine) {
        PyMutex_Lock(&p->writer);
    }
    flush_journal(ns);
    if (!mine) {
        PyMutex_Unlock(&p->writer);
    }
}

/* dict[key] = value, the dict's commonest operation (STORE_NAME,
   STORE_GLOBAL): when the name's value is a number or short str of the
   pool that only the dict, the pool's namespace and the shadow refer to
   (n += 1 at module level, the loop variable), and one atomic store gives
   it value's value, that is the whole binding: the dict, the pool's
   namespace and the shadow keep their object. */
static int
main_set_item(PyStorageManager *sm, PyObject *dict, PyObject *key,
              PyObject *value)
{
    mainns *ns = MAINNS(sm);
    PoolObject *p = ns->pool;
    if (ns->depth > 0 || p->depth > 0 || passive(ns)
        || !(PyLong_CheckExact(value) || PyFloat_CheckExact(value)
             || PyUnicode_CheckExact(value))
        || (((PyDictObject *)dict)->ma_version_tag & DICT_WATCHER_MASK))
    {
        return 0;
    }
    if (_PyPmem_Hold(p) < 0) {
        return -1;
    }
    /* Asked holding the lock (taking it may have let other threads
       run). */
    PyObject **slot;
    int r = journal_binding(ns, dict, key, value, &slot);
    if (r != 0) {
        _PyPmem_Release(p);
        return r;
    }
    PyObject *kept = slot != NULL ? *slot : NULL;
    if (kept == NULL || kept == value || PyStorage_Of(value) == &p->sm) {
        _PyPmem_Release(p);
        return 0;                 /* the usual way */
    }
    /* A number of the pool that only the three dicts refer to. */
    int mine = Py_REFCNT(kept) == 3 && PyStorage_Of(kept) == &p->sm;
    int is_static = _PyStorage_IsStatic(value) && !is_dunder(key);
    PyObject **kept_slot, **shadow_slot, *to;
    if (mine && overwrite_word(p, kept, value)) {
        r = 1;
    }
    else if (!(mine || is_static)
             || !held_by_the_three(ns, key, kept, &kept_slot, &shadow_slot))
    {
        /* the usual way */
    }
    else if (is_static) {
        /* A small int, None...: the three dicts' pointers, the pool's
           first (the one store that makes the binding durable). */
        store_pointer(ns, kept_slot, value);
        Py_SETREF(*shadow_slot, Py_NewRef(value));
        r = _PyStorage_DictReplaceValue(dict, key, value);
    }
    else if (mine
             && (to = swap_number(ns, kept_slot, shadow_slot, kept,
                                  value)) != NULL)
    {
        r = _PyStorage_DictReplaceValue(dict, key, to);
    }
    _PyPmem_Release(p);
    return r;
}



static int
main_begin(PyStorageManager *sm, PyObject *op)
{
    mainns *ns = MAINNS(sm);
    if (passive(ns)) {
        return 0;
    }
    /* The pool's writer lock first: the state below is its holder's.
       Outside any transaction of the pool, an operation holds the lock
       only, and begins one when it must (reconcile_held()). */
    if (ns->depth == 0 && !_PyPmem_InMyTransaction(ns->pool)) {
        if (_PyPmem_Hold(ns->pool) < 0) {
            return -1;
        }
        ns->held = 1;
    }
    else if (_PyPmem_Begin(&ns->pool->sm, op) < 0) {
        return -1;
    }
    if (ns->depth++ == 0) {
        ns->keys = ((PyDictObject *)ns->dict)->ma_keys;
        forget_noted(ns);
    }
    return 0;
}

static int
main_end(PyStorageManager *sm, int ok)
{
    mainns *ns = MAINNS(sm);
    if (passive(ns)) {
        return 0;
    }
    int r = 0;
    if (ns->depth == 1) {
        /* Operations that start meanwhile are nested in this one. */
        r = ns->held ? reconcile_held(ns, ok) : reconcile(ns, ok);
    }
    if (--ns->depth == 0 && ns->held) {
        ns->held = 0;
        _PyPmem_Release(ns->pool);
        return r;
    }
    if (_PyPmem_End(&ns->pool->sm, ok && r == 0) < 0) {
        r = -1;
    }
    return r;
}

/* Note the name of the entry at addr, if it is one. */
static int
main_modify(PyStorageManager *sm, void *addr, size_t Py_UNUSED(size))
{
    mainns *ns = MAINNS(sm);
    if (passive(ns) || ns->depth == 0 || ns->overflow) {
        return 0;
    }
    PyDictKeysObject *keys = ((PyDictObject *)ns->dict)->ma_keys;
    if (keys != ns->keys) {
        ns->overflow = 1;
        return 0;
    }
    int unicode = DK_IS_UNICODE(keys);
    char *start = unicode ? (char *)DK_UNICODE_ENTRIES(keys)
                          : (char *)DK_ENTRIES(keys);
    size_t size = unicode ? sizeof(PyDictUnicodeEntry)
                          : sizeof(PyDictKeyEntry);
    char *a = (char *)addr;
    if (a < start
        || a >= start + (size_t)(keys->dk_usable + keys->dk_nentries) * size)
    {
        return 0;
    }
    Py_ssize_t ix = (a - start) / (Py_ssize_t)size;
    PyObject *key = unicode ? DK_UNICODE_ENTRIES(keys)[ix].me_key
                            : DK_ENTRIES(keys)[ix].me_key;
    if (key != NULL) {
        if (ns->nnoted == NOTED_MAX) {
            ns->overflow = 1;
        }
        else {
            ns->noted[ns->nnoted++] = Py_NewRef(key);
        }
    }
    else if (ns->nfresh == NOTED_MAX) {
        ns->overflow = 1;
    }
    else {
        ns->fresh[ns->nfresh++] = ix;
    }
    return 0;
}


/* --- the pool's transactions ------------------------------------------ */

size_t
_PyPmem_MainLogLength(PoolObject *p)
{
    return p->mainns != NULL ? ((mainns *)p->mainns)->nlog : 0;
}

/* A savepoint was undone: so are the changes of bindings since from. */
void
_PyPmem_MainUndo(PoolObject *p, size_t from)
{
    if (p->mainns != NULL) {
        undo_changes((mainns *)p->mainns, from, 0);
    }
}

/* The outermost transaction ended: committed, or undone. */
void
_PyPmem_MainEnded(PoolObject *p, int committed)
{
    mainns *ns = (mainns *)p->mainns;
    if (ns == NULL || ns->nlog == 0) {
        return;
    }
    if (!committed) {
        undo_changes(ns, 0, 0);
        return;
    }
    /* What the log let go of may run code that changes the dict: the
       records are taken out first. */
    PyObject *exc = PyErr_GetRaisedException();
    undo_record *log = ns->log;
    size_t n = ns->nlog;
    if (n > 1) {
        ns->log = NULL;
        ns->log_allocated = 0;
    }
    ns->nlog = 0;
    undo_record one = log[0];
    for (size_t i = 0; i < n; i++) {
        undo_record rec = n > 1 ? log[i] : one;
        Py_DECREF(rec.name);
        Py_XDECREF(rec.old);
    }
    if (n > 1) {
        PyMem_RawFree(log);
    }
    PyErr_SetRaisedException(exc);
}


/* --- placeholders ----------------------------------------------------- */

/* Bind the pending names whose values have their class now. */
static int
bind_resolved(mainns *ns)
{
    PyObject *names = PyDict_Keys(ns->pending);
    if (names == NULL) {
        return -1;
    }
    int r = 0;
    for (Py_ssize_t i = 0; r == 0 && i < PyList_GET_SIZE(names); i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        PyObject *value = PyDict_GetItemWithError(ns->pending, name);
        if (value == NULL || is_placeholder(ns, value)) {
            r = PyErr_Occurred() ? -1 : 0;
            continue;
        }
        Py_INCREF(value);
        r = PyDict_Pop(ns->pending, name, NULL) < 0 ? -1 : 0;
        if (r == 0) {
            r = write_binding(ns, name, value);
        }
        if (r == 0) {
            r = PyDict_SetItem(ns->shadow, name, value);
        }
        Py_DECREF(value);
    }
    Py_DECREF(names);
    return r;
}

int
_PyPmem_MainBindResolved(PoolObject *p)
{
    mainns *ns = (mainns *)p->mainns;
    return ns == NULL || PyDict_GET_SIZE(ns->pending) == 0
           ? 0 : bind_resolved(ns);
}


/* --- start and stop --------------------------------------------------- */

/* _pmem._start_main(pool, module, warning, placeholder): module's dict
   is replaced by one whose bindings persist in pool's namespace, with
   those that the namespace holds already. */
PyObject *
_PyPmem_StartMain(pmem_state *state, PyObject *pool, PyObject *module,
                  PyObject *warning, PyObject *placeholder)
{
    if (!PyObject_TypeCheck(pool, state->PoolType) || !PyModule_Check(module)
        || !PyType_Check(placeholder))
    {
        PyErr_SetString(PyExc_TypeError,
                        "_start_main(pool, module, warning, placeholder)");
        return NULL;
    }
    if (the_main != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "__main__ is in a pool already");
        return NULL;
    }
    PoolObject *p = (PoolObject *)pool;
    if (_PyPmem_CheckOpen(p) < 0) {
        return NULL;
    }
    mainns *ns = PyMem_RawCalloc(1, sizeof(mainns));
    if (ns == NULL) {
        return PyErr_NoMemory();
    }
    ns->sm = (PyStorageManager){
        .name = "__main__",
        .alloc = region_alloc,
        .realloc = region_realloc,
        .free = region_free,
        .begin = main_begin,
        .end = main_end,
        .modify = main_modify,
        .set_item = main_set_item,
    };
    ns->region = map_region(p);
    if (ns->region == NULL) {
        PyMem_RawFree(ns);
        return NULL;
    }
    if (PyStorage_AddRange(&ns->sm, ns->region, REGION_SIZE) < 0) {
        munmap(ns->region, REGION_SIZE);
        PyMem_RawFree(ns);
        return NULL;
    }
    /* From here on, the manager stays registered while the process
       lives (a dict of its region may outlive anything). */
    ns->writing = current_thread();
    ns->pool = (PoolObject *)Py_NewRef(p);
    ns->warning = Py_NewRef(warning);
    ns->placeholder = Py_NewRef(placeholder);
    ns->pool_ns = _PyPmem_PoolNamespace(p);
    ns->shadow = PyDict_New();
    ns->pending = PyDict_New();
    ns->warned = PySet_New(NULL);
    if (ns->pool_ns == NULL || ns->shadow == NULL || ns->pending == NULL
        || ns->warned == NULL || PyStorage_PushPlacement(&ns->sm) < 0)
    {
        goto error;
    }
    ns->dict = PyDict_New();
    (void)PyStorage_PopPlacement(&ns->sm);
    PyModuleObject *m = (PyModuleObject *)module;
    if (ns->dict == NULL || PyDict_Update(ns->dict, m->md_dict) < 0) {
        goto error;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *value;
    while (PyDict_Next(ns->pool_ns, &pos, &name, &value)) {
        if (!PyUnicode_CheckExact(name) || is_dunder(name)) {
            continue;
        }
        /* The dict's key is this process's str, interned as the code's
           names are. */
        PyObject *key = _PyUnicode_Copy(name);
        if (key == NULL) {
            goto error;
        }
        PyUnicode_InternInPlace(&key);
        int r = PyDict_SetItem(is_placeholder(ns, value)
                               ? ns->pending : ns->dict, key, value);
        Py_DECREF(key);
        if (r < 0) {
            goto error;
        }
    }
    if (PyDict_Update(ns->shadow, ns->dict) < 0) {
        goto error;
    }
    Py_SETREF(m->md_dict, Py_NewRef(ns->dict));
    ns->writing = 0;
    p->mainns = ns;
    the_main = ns;
    Py_RETURN_NONE;
error:
    /* The manager stays (its range cannot be taken back while the dict
       may live), passive. */
    ns->off = 1;
    ns->writing = 0;
    Py_CLEAR(ns->dict);
    return NULL;
}

/* _pmem._stop_main(): the bindings stop persisting (the interpreter
   exits: its clearing of modules must not reach the pool). */
void
_PyPmem_StopMain(void)
{
    if (the_main != NULL) {
        _PyPmem_MainFlush(the_main->pool);
        the_main->off = 1;
        Py_CLEAR(the_main->spare);
    }
}

/* pmem.current_pool(): the pool of __main__'s namespace, or None. */
PyObject *
_PyPmem_MainPool(void)
{
    if (the_main == NULL || the_main->off) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(the_main->pool);
}
