/* _pmem's type table: the type codes that allocations carry, the classes
 * of instances recorded by "module:qualname layout", the placeholders of
 * classes that this process cannot use, and resolve().
 */

#include "pool.h"

/* --- type codes -------------------------------------------------------- */

/* The builtin types by type code, both ways. */
PyTypeObject *const _PyPmem_BuiltinTypes[POOL_BYTES + 1] = {
    [POOL_DICT] = &PyDict_Type, [POOL_LIST] = &PyList_Type,
    [POOL_SET] = &PySet_Type, [POOL_FROZENSET] = &PyFrozenSet_Type,
    [POOL_BYTEARRAY] = &PyByteArray_Type, [POOL_TUPLE] = &PyTuple_Type,
    [POOL_INT] = &PyLong_Type, [POOL_FLOAT] = &PyFloat_Type,
    [POOL_COMPLEX] = &PyComplex_Type, [POOL_STR] = &PyUnicode_Type,
    [POOL_BYTES] = &PyBytes_Type,
};

static uint64_t
builtin_type_code(PyTypeObject *type)
{
    if (type == NULL) {
        return POOL_TABLE;
    }
    for (size_t i = 1; i < Py_ARRAY_LENGTH(_PyPmem_BuiltinTypes); i++) {
        if (_PyPmem_BuiltinTypes[i] == type) {
            return i;
        }
    }
    int kind = _PyStorage_KindOf(type);
    if (kind >= 0) {
        return POOL_KIND + (uint64_t)kind;
    }
    return POOL_INSTANCE;         /* not a builtin */
}

PyTypeObject *
_PyPmem_TypeOfCode(uint64_t code)
{
    /* NULL for a table and for codes this interpreter does not know. */
    if (code < Py_ARRAY_LENGTH(_PyPmem_BuiltinTypes)) {
        return _PyPmem_BuiltinTypes[code];
    }
    if (code >= POOL_KIND && code < POOL_KIND_END) {
        /* (The datetime module imported, when it is one of its.) */
        PyTypeObject *type = _PyStorage_TypeOfKind((int)(code - POOL_KIND));
        if (type == NULL) {
            PyErr_Clear();
        }
        return type;
    }
    return NULL;
}

/* module.function(arg...), module imported: a new reference, or NULL
   with an exception set. */
static PyObject *
call_in(const char *module, const char *function, const char *format,
        PyObject *arg, PyObject *arg2)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL) {
        return NULL;
    }
    PyObject *obj = PyObject_CallMethod(m, function, format, arg, arg2);
    Py_DECREF(m);
    return obj;
}

/* The class named "module:qualname", imported (pkgutil.resolve_name(),
   the resolver of that notation); NULL with an exception set. */
static PyObject *
find_class(PyObject *name)
{
    PyObject *obj = call_in("pkgutil", "resolve_name", "O", name, NULL);
    if (obj != NULL && !PyType_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%R is not a class", name);
        Py_CLEAR(obj);
    }
    else if (obj != NULL && !_PyStorage_IsPlainClass((PyTypeObject *)obj)) {
        PyErr_Format(PyExc_TypeError, "%R is %R, not a class written in "
                     "Python whose instances a pool can hold", name, obj);
        Py_CLEAR(obj);
    }
    return obj;
}

/* The class that name ("module:qualname") has in this process when it is
   one that a pool can hold and has that layout.  Else NULL, and *reason
   says why; or NULL with an exception set (and no reason) when this
   process fails (MemoryError, KeyboardInterrupt), which stops the open. */
static PyObject *
class_with_layout(PyObject *name, PyObject *made, PyObject *layout,
                  PyObject **reason)
{
    *reason = NULL;
    PyObject *cls = made != NULL ? Py_NewRef(made) : find_class(name);
    if (cls == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)
            || PyErr_ExceptionMatches(PyExc_MemoryError))
        {
            return NULL;
        }
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        *reason = exc == NULL ? NULL : PyObject_Str(exc);
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        return NULL;
    }
    PyObject *has = _PyStorage_ClassLayout((PyTypeObject *)cls);
    if (has == NULL) {
        Py_DECREF(cls);
        return NULL;
    }
    if (PyUnicode_Compare(has, layout) != 0) {
        *reason = PyUnicode_FromFormat(
            "the layout of its instances changed: %R in the pool, %R in "
            "the class", layout, has);
        Py_CLEAR(cls);
    }
    Py_DECREF(has);
    return cls;
}

/* The class for a type table entry, "module:qualname layout" (see
   _PyStorage_ClassLayout()): the class of that name when this process
   finds it with that layout, else a placeholder of the layout (a subclass
   of pmem.Placeholder, made by pmem._placeholder(), which keeps the name
   and the reason).  NULL with PoolError set when the entry is not one that
   a pool writes, with another exception when this process fails
   (MemoryError, KeyboardInterrupt). */
PyObject *
_PyPmem_ClassOfEntry(PoolObject *p, PyObject *entry)
{
    Py_ssize_t length = PyUnicode_GET_LENGTH(entry);
    Py_ssize_t space = PyUnicode_FindChar(entry, ' ', 0, length, 1);
    if (space == -2) {
        return NULL;
    }
    if (space < 0) {
        PyErr_Format(p->error, "pool %R is corrupt: its type table holds "
                     "%R, a class without a layout", p->path, entry);
        return NULL;
    }
    PyObject *name = PyUnicode_Substring(entry, 0, space);
    PyObject *layout = PyUnicode_Substring(entry, space + 1, length);
    PyObject *cls = NULL, *reason = NULL;
    if (name == NULL || layout == NULL) {
        goto done;
    }
    cls = class_with_layout(name, NULL, layout, &reason);
    if (cls != NULL || reason == NULL) {
        goto done;
    }
    PyObject *pmem = PyImport_ImportModule("pmem");
    cls = pmem == NULL ? NULL : PyObject_CallMethod(
        pmem, "_placeholder", "OOO", name, layout, reason);
    Py_XDECREF(pmem);
    if (cls == NULL && !PyErr_ExceptionMatches(PyExc_Exception)) {
        goto done;
    }
    PyObject *has = NULL;
    if (cls != NULL && PyType_Check(cls)
        && _PyStorage_IsPlainClass((PyTypeObject *)cls))
    {
        has = _PyStorage_ClassLayout((PyTypeObject *)cls);
    }
    PyErr_Clear();
    int same = has != NULL && PyUnicode_Compare(has, layout) == 0;
    Py_XDECREF(has);
    if (!same) {
        Py_CLEAR(cls);
        PyErr_Format(p->error, "pool %R is corrupt: its type table holds "
                     "%R, a layout that no class has", p->path, entry);
    }
done:
    Py_XDECREF(name);
    Py_XDECREF(layout);
    Py_XDECREF(reason);
    return cls;
}

/* The type of an allocation's object in this process; NULL for a table. */
PyTypeObject *
_PyPmem_ClassOfCode(PoolObject *p, uint64_t code)
{
    if (code < POOL_INSTANCE) {
        return _PyPmem_TypeOfCode(code);
    }
    Py_ssize_t index = (Py_ssize_t)(code - POOL_INSTANCE);
    if (index >= PyList_GET_SIZE(p->classes)) {
        return NULL;
    }
    PyObject *cls = PyList_GET_ITEM(p->classes, index);
    return cls == Py_None ? NULL : (PyTypeObject *)cls;
}

/* Every hash table of p rebuilt for the hashes that its keys have now
   (instances that resolve() gave a class with a __hash__ of its own had
   a placeholder's, by identity): the frozensets' kept hashes first, then
   the tables, in one transaction, as the open pass does.  0, or -1 with
   an exception set. */
static int
rehash_tables(PoolObject *p)
{
    size_t n;
    alloc_item *items = _PyPmem_ListAllocations(p, &n);
    PyObject **sets = items == NULL
                      ? NULL : PyMem_RawMalloc((n + 1) * sizeof(*sets));
    if (sets == NULL) {
        PyMem_RawFree(items);
        return -1;
    }
    size_t nsets = 0;
    for (size_t i = 0; i < n; i++) {
        PyTypeObject *type = _PyPmem_ClassOfCode(p, items[i].code);
        items[i].block = (type == NULL ? NULL : items[i].block
                          + PyStorage_PreHeaderSize(type));
        if (type != NULL && PyType_IsSubtype(type, &PyFrozenSet_Type)) {
            sets[nsets++] = (PyObject *)items[i].block;
        }
    }
    int ok = p->sm.begin(&p->sm, NULL) == 0;
    if (ok) {
        ok = _PyStorage_RehashFrozenSets(sets, nsets) == 0;
        for (size_t i = 0; i < n && ok; i++) {
            /* (A no-op for what is not a dict or a set.) */
            if (items[i].block != NULL
                && _PyStorage_Rehash((PyObject *)items[i].block) < 0)
            {
                ok = 0;
            }
        }
        ok = p->sm.end(&p->sm, ok) == 0 && ok;
    }
    PyMem_RawFree(sets);
    PyMem_RawFree(items);
    return ok ? 0 : -1;
}

/* The "module:qualname" that cls waits for when it is a placeholder (a new
   reference); NULL otherwise, with an exception set only when this
   process fails. */
static PyObject *
placeholder_name(PyObject *cls)
{
    if (cls == Py_None) {
        return NULL;
    }
    PyObject *name = PyObject_GetAttrString(cls, "__pmem_class__");
    if (name == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();            /* a class */
    }
    if (name != NULL && !PyUnicode_Check(name)) {
        Py_CLEAR(name);           /* pmem.Placeholder's own None */
    }
    return name;
}

PyObject *
_PyPmem_Unresolved(PoolObject *self)
{
    PyObject *unresolved = PyDict_New();
    for (Py_ssize_t i = 0;
         unresolved != NULL && i < PyList_GET_SIZE(self->classes); i++)
    {
        PyObject *cls = PyList_GET_ITEM(self->classes, i);
        PyObject *name = placeholder_name(cls);
        PyObject *reason = name == NULL ? NULL : PyObject_GetAttrString(
            cls, "__pmem_reason__");
        if (PyErr_Occurred()
            || (reason != NULL
                && PyDict_SetItem(unresolved, name, reason) < 0))
        {
            Py_CLEAR(unresolved);
        }
        Py_XDECREF(name);
        Py_XDECREF(reason);
    }
    /* The references that this process could not find by name
       (pmem.MissingReference stands for each). */
    for (Py_ssize_t i = 0;
         unresolved != NULL && i < PyList_GET_SIZE(self->ref_order); i++)
    {
        PyObject *pair = PyList_GET_ITEM(self->ref_order, i);
        PyObject *obj = PyLong_AsVoidPtr(PyTuple_GET_ITEM(pair, 0));
        PyObject *reason = NULL;
        if (obj != NULL && PyObject_GetOptionalAttrString(
                obj, "__pmem_reason__", &reason) < 0)
        {
            Py_CLEAR(unresolved);
        }
        if (reason != NULL && PyDict_SetItem(
                unresolved, PyTuple_GET_ITEM(pair, 1), reason) < 0)
        {
            Py_CLEAR(unresolved);
        }
        Py_XDECREF(reason);
    }
    return unresolved;
}

/* resolve(), for every placeholder, or (name not NULL) for the one of
   name, with made, a class just made that has that name (it may not be
   bound to its name yet). */
static PyObject *
resolve(PoolObject *self, PyObject *only, PyObject *made)
{
    if (_PyPmem_CheckOpen(self) < 0) {
        return NULL;
    }
    if (self->depth > 0) {
        PyErr_Format(self->error, "pool %R cannot resolve classes inside "
                     "one of its transactions", self->path);
        return NULL;
    }
    /* First the classes (finding one may run any code), by table entry:
       [(index, class)], for the entries whose class is a placeholder. */
    PyObject *table = (PyObject *)((char *)self->pop + self->root->types);
    Py_ssize_t ntypes = Py_MIN(PyList_GET_SIZE(table),
                               PyList_GET_SIZE(self->classes));
    PyObject *found = PyList_New(0);
    PyObject *names = PyDict_New();      /* {name: class} resolved */
    if (found == NULL || names == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < ntypes; i++) {
        PyObject *name = placeholder_name(PyList_GET_ITEM(self->classes, i));
        if (name == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            continue;             /* unused, or a class */
        }
        if (only != NULL) {
            int same = PyUnicode_Compare(name, only);
            if (same != 0) {
                Py_DECREF(name);
                if (same == -1 && PyErr_Occurred()) {
                    goto error;
                }
                continue;
            }
        }
        /* Still missing: the reason it had at the open stays. */
        PyObject *entry = PyList_GET_ITEM(table, i);
        Py_ssize_t length = PyUnicode_GET_LENGTH(entry);
        Py_ssize_t space = PyUnicode_FindChar(entry, ' ', 0, length, 1);
        PyObject *layout = space < 0
                           ? NULL : PyUnicode_Substring(entry, space + 1,
                                                        length);
        PyObject *reason = NULL;
        PyObject *cls = layout == NULL
                        ? NULL : class_with_layout(name, made, layout,
                                                   &reason);
        Py_XDECREF(layout);
        Py_XDECREF(reason);
        PyObject *pair = cls == NULL ? NULL : Py_BuildValue("nO", i, cls);
        int r = (PyErr_Occurred() || (cls != NULL && (
                 pair == NULL || PyList_Append(found, pair) < 0
                 || PyDict_SetItem(names, name, cls) < 0))) ? -1 : 0;
        Py_XDECREF(pair);
        Py_XDECREF(cls);
        Py_DECREF(name);
        if (r < 0) {
            goto error;
        }
    }
    /* Then the instances, which have the layout of their new class: given
       it, with nothing else between (no Python code runs). */
    int rehash = 0;
    size_t n = 0;
    alloc_item *items = PyList_GET_SIZE(found) == 0
                        ? NULL : _PyPmem_ListAllocations(self, &n);
    if (items == NULL && PyErr_Occurred()) {
        goto error;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(found); k++) {
        PyObject *pair = PyList_GET_ITEM(found, k);
        Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0));
        PyObject *cls = PyTuple_GET_ITEM(pair, 1);
        PyObject *placeholder = PyList_GET_ITEM(self->classes, index);
        uint64_t code = POOL_INSTANCE + (uint64_t)index;
        rehash |= ((PyTypeObject *)cls)->tp_hash != PyBaseObject_Type.tp_hash;
        size_t presize = PyStorage_PreHeaderSize((PyTypeObject *)cls);
        for (size_t i = 0; i < n; i++) {
            if (items[i].code == code) {
                PyObject *op = (PyObject *)(items[i].block + presize);
                assert(Py_TYPE(op) == (PyTypeObject *)placeholder);
                Py_SET_TYPE(op, (PyTypeObject *)Py_NewRef(cls));
                Py_DECREF(placeholder);
            }
        }
        PyObject *value = PyDict_GetItemWithError(self->type_codes,
                                                  placeholder);
        if (value != NULL && PyDict_GetItemWithError(self->type_codes,
                                                     cls) == NULL
            && !PyErr_Occurred())
        {
            (void)PyDict_SetItem(self->type_codes, cls, value);
        }
        if (value != NULL) {
            (void)PyDict_DelItem(self->type_codes, placeholder);
        }
        PyErr_Clear();            /* the codes stay right without them */
        PyList_SetItem(self->classes, index, Py_NewRef(cls));
    }
    PyMem_RawFree(items);
    /* The names, for the caller. */
    PyObject *result = PyDict_Keys(names);
    /* The tables that hold them as keys, for their new hashes. */
    if (result != NULL && rehash && rehash_tables(self) < 0) {
        Py_CLEAR(result);
    }
    if (result != NULL && PyList_Sort(result) < 0) {
        Py_CLEAR(result);
    }
    Py_DECREF(found);
    Py_DECREF(names);
    return result;
error:
    Py_XDECREF(found);
    Py_XDECREF(names);
    return NULL;
}

PyObject *
_PyPmem_Resolve(PoolObject *self)
{
    PyObject *names = resolve(self, NULL, NULL);
    if (names != NULL && _PyPmem_MainBindResolved(self) < 0) {
        Py_CLEAR(names);
    }
    return names;
}

/* A class was made (the core's _PyStorage_ClassHook): the instances of
   each open pool that wait for a class of its module and qualified name
   are given it, when it has their layout.  Not inside a transaction of
   the pool (resolve() refuses to): the next class made, or resolve(),
   gives them their class then. */
static int
class_made(PyTypeObject *tp)
{
    PyObject *name = NULL;
    for (PoolObject *p = _PyPmem_OpenPools; p != NULL; p = p->next_open) {
        if (p->closed || p->forked || p->depth > 0) {
            continue;
        }
        int waiting = 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(p->classes); i++) {
            PyObject *cls = PyList_GET_ITEM(p->classes, i);
            if (cls != Py_None && PyType_Check(cls)
                && strcmp(((PyTypeObject *)cls)->tp_name, tp->tp_name) == 0
                && PyObject_HasAttrString(cls, "__pmem_class__"))
            {
                waiting = 1;
                break;
            }
        }
        /* (_PyStorage_IsPlainClass() may make a class of its own: asked
           last.) */
        if (!waiting || !_PyStorage_IsPlainClass(tp)) {
            continue;
        }
        if (name == NULL) {
            PyObject *module = PyObject_GetAttrString((PyObject *)tp,
                                                      "__module__");
            name = module == NULL || !PyUnicode_Check(module) ? NULL
                   : PyUnicode_FromFormat("%U:%U", module,
                                          ((PyHeapTypeObject *)tp)
                                          ->ht_qualname);
            Py_XDECREF(module);
            if (name == NULL) {
                return PyErr_ExceptionMatches(PyExc_AttributeError)
                       ? (PyErr_Clear(), 0) : -1;
            }
        }
        PyObject *done = resolve(p, name, (PyObject *)tp);
        if (done == NULL || _PyPmem_MainBindResolved(p) < 0) {
            Py_XDECREF(done);
            Py_DECREF(name);
            return -1;
        }
        Py_DECREF(done);
    }
    Py_XDECREF(name);
    return 0;
}

void
_PyPmem_WatchClasses(void)
{
    _PyStorage_ClassHook = class_made;
}

static PyObject *
new_list(void)
{
    return PyList_New(0);
}

/* The type code of a new object of type (NULL: a table): a builtin's, or
   POOL_INSTANCE + the index of "module:qualname" in the pool's type table,
   which the class enters on first use.  UINT64_MAX with an exception set
   when the class cannot be found again that way. */
/* Append "module:qualname layout" of type to the pool's type table (made when
   missing), in an operation of the pool.  0, or -1 with an exception. */
static int
append_class_name(PoolObject *p, PyTypeObject *type)
{
    PyObject *module = PyObject_GetAttrString((PyObject *)type, "__module__");
    PyObject *layout = module == NULL ? NULL : _PyStorage_ClassLayout(type);
    PyObject *name = layout == NULL
                     ? NULL : PyUnicode_FromFormat(
                         "%S:%U %U", module,
                         ((PyHeapTypeObject *)type)->ht_qualname, layout);
    Py_XDECREF(module);
    Py_XDECREF(layout);
    if (name == NULL || p->sm.begin(&p->sm, NULL) < 0) {
        Py_XDECREF(name);
        return -1;
    }
    PyObject *types = _PyPmem_RootContainer(p, &p->root->types, new_list);
    int r = types == NULL ? -1 : PyList_Append(types, name);
    Py_XDECREF(types);
    Py_DECREF(name);
    return p->sm.end(&p->sm, r == 0) < 0 ? -1 : r;
}

uint64_t
_PyPmem_TypeCode(PoolObject *p, PyTypeObject *type)
{
    uint64_t code = builtin_type_code(type);
    if (code != POOL_INSTANCE) {
        return code;
    }
    PyObject *known = PyDict_GetItemWithError(p->type_codes,
                                              (PyObject *)type);
    if (known != NULL) {
        return PyLong_AsUnsignedLongLong(known);
    }
    if (PyErr_Occurred()) {
        return UINT64_MAX;
    }
    if (!_PyStorage_IsFindableClass(type)) {
        PyErr_Format(PyExc_TypeError, "cannot store a '%.100s' object in "
                     "pool %R: its class must be found again by module and "
                     "qualified name", type->tp_name, p->path);
        return UINT64_MAX;
    }
    code = POOL_INSTANCE + (uint64_t)PyList_GET_SIZE(p->classes);
    PyObject *value = PyLong_FromUnsignedLongLong(code);
    int r = (value == NULL || append_class_name(p, type) < 0
             || PyDict_SetItem(p->type_codes, (PyObject *)type, value) < 0
             || PyList_Append(p->classes, (PyObject *)type) < 0);
    Py_XDECREF(value);
    return r ? UINT64_MAX : code;
}

/* The classes that an undo took out of the type table (their entries
   were made by the undone changes) go back in, in the same places: the
   codes that this process gives their instances stay right.  So do the
   records of references (restore_refs()). */
static void restore_refs(PoolObject *p);

void
_PyPmem_RestoreTypeTable(PoolObject *p)
{
    static int restoring;         /* under the GIL */
    if (restoring || p->closed) {
        return;
    }
    restoring = 1;
    Py_ssize_t n = p->root->types == 0 ? 0 : PyList_GET_SIZE(
        (PyObject *)((char *)p->pop + p->root->types));
    for (Py_ssize_t i = n; i < PyList_GET_SIZE(p->classes); i++) {
        PyObject *cls = PyList_GET_ITEM(p->classes, i);
        if (append_class_name(p, (PyTypeObject *)cls) < 0) {
            PyErr_WriteUnraisable(cls);
            break;
        }
    }
    restore_refs(p);
    restoring = 0;
}


/* --- references ---------------------------------------------------------- */

/* An object outside the pool that every process finds by name and that
   lives as long as the process -- an enum member, datetime.timezone.utc
   (the store rule of Objects/storagestore.c decides which) -- is stored
   by pointer, as the interpreter's static objects are.  The pool records
   each one's name, and where the pointers point, in a bytearray of
   struct pool_ref records that its root holds; an open finds each by
   name again and makes the pointers point to it in this process, as it
   moves them with the mapping: a record keeps the addresses of opens
   that stopped half-way, so that the next one recognizes them all. */

static PyObject *
new_bytearray(void)
{
    return PyByteArray_FromStringAndSize(NULL, 0);
}

/* Append the record of name at address addr to p's table, in an
   operation of the pool.  0, or -1 with an exception set. */
static int
append_ref(PoolObject *p, PyObject *name, PyObject *address)
{
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(name, &size);
    void *addr = PyLong_AsVoidPtr(address);
    if (utf8 == NULL || (addr == NULL && PyErr_Occurred())) {
        return -1;
    }
    size_t total = POOL_REF_SIZE((uint64_t)size);
    PyObject *record = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (record == NULL) {
        return -1;
    }
    char *raw = PyBytes_AS_STRING(record);
    memset(raw, 0, total);
    struct pool_ref ref = {.addr = (uint64_t)(uintptr_t)addr,
                           .name_size = (uint64_t)size};
    memcpy(raw, &ref, sizeof(ref));
    memcpy(raw + sizeof(ref), utf8, (size_t)size);
    if (p->sm.begin(&p->sm, NULL) < 0) {
        Py_DECREF(record);
        return -1;
    }
    PyObject *table = _PyPmem_RootContainer(p, &p->root->refs,
                                            new_bytearray);
    PyObject *r = table == NULL ? NULL
                  : PySequence_InPlaceConcat(table, record);
    Py_XDECREF(r);
    Py_XDECREF(table);
    Py_DECREF(record);
    return p->sm.end(&p->sm, r != NULL) < 0 || r == NULL ? -1 : 0;
}

int
_PyPmem_Refer(PyStorageManager *sm, PyObject *obj, PyObject *name)
{
    PoolObject *p = POOL(sm);
    PyObject *address = PyLong_FromVoidPtr(obj);
    if (address == NULL) {
        return -1;
    }
    int known = PyDict_Contains(p->refs, address);
    if (known != 0) {
        Py_DECREF(address);
        return known < 0 ? -1 : 0;
    }
    PyObject *pair = PyTuple_Pack(2, address, name);
    int r = (pair == NULL || append_ref(p, name, address) < 0
             || PyDict_SetItem(p->refs, address, name) < 0
             || PyList_Append(p->ref_order, pair) < 0) ? -1 : 0;
    Py_XDECREF(pair);
    Py_DECREF(address);
    return r;
}

/* The records of the table at the start of raw, of size bytes, one by
   one: the next record after *at (0 first), which fits, or NULL at the
   end; *bad is set when the table is corrupt. */
static struct pool_ref *
next_ref(char *raw, size_t size, size_t *at, int *bad)
{
    if (*at == size) {
        return NULL;
    }
    struct pool_ref *ref = (struct pool_ref *)(raw + *at);
    if (size - *at < sizeof(*ref) || ref->name_size > size
        || POOL_REF_SIZE(ref->name_size) > size - *at)
    {
        *bad = 1;
        return NULL;
    }
    *at += POOL_REF_SIZE(ref->name_size);
    return ref;
}

/* The records that an undo took out of the table (their references were
   made by the undone changes) go back in: the pointers that this process
   stores stay recorded. */
static void
restore_refs(PoolObject *p)
{
    size_t n = 0, at = 0;
    int bad = 0;
    if (p->root->refs != 0) {
        PyObject *table = (PyObject *)((char *)p->pop + p->root->refs);
        while (next_ref(PyByteArray_AS_STRING(table),
                        (size_t)PyByteArray_GET_SIZE(table), &at, &bad)) {
            n++;
        }
    }
    for (Py_ssize_t i = (Py_ssize_t)n; i < PyList_GET_SIZE(p->ref_order);
         i++)
    {
        PyObject *pair = PyList_GET_ITEM(p->ref_order, i);
        if (append_ref(p, PyTuple_GET_ITEM(pair, 1),
                       PyTuple_GET_ITEM(pair, 0)) < 0)
        {
            PyErr_WriteUnraisable(PyTuple_GET_ITEM(pair, 1));
            break;
        }
    }
}

/* The object that name ("module:qualname.attr", "module:qualname(6)")
   gives in this process (pmem._find_reference()), kept for ever
   (_PyStorage_KeepForever()): the pool may point to it at any time.
   When it cannot be found, a stand-in that says so
   (pmem.MissingReference), which the next open replaces if the name is
   found then.  A new reference, or NULL with an exception set when this
   process fails. */
static PyObject *
find_ref(PyObject *name)
{
    PyObject *obj = call_in("pmem", "_find_reference", "O", name, NULL);
    if (obj == NULL && PyErr_ExceptionMatches(PyExc_Exception)
        && !PyErr_ExceptionMatches(PyExc_MemoryError))
    {
        PyObject *exc = PyErr_GetRaisedException();
        PyObject *reason = PyObject_Str(exc);
        Py_DECREF(exc);
        obj = reason == NULL ? NULL : call_in("pmem", "MissingReference",
                                              "OO", name, reason);
        Py_XDECREF(reason);
    }
    if (obj != NULL) {
        _PyStorage_KeepForever(obj);
    }
    return obj;
}

static int
compare_moves(const void *a, const void *b)
{
    const struct ref_move *x = a, *y = b;
    return x->from < y->from ? -1 : x->from > y->from;
}

/* The table of references (a bytearray of the pool whose pointers the
   caller has checked), read before the pointers are: each name found
   again, its address here added to the addresses that its record keeps
   (so that an open stopped after this recognizes it), and st->ref_moves
   made, for _PyPmem_FindRef().  0, or -1 with an exception set
   (PoolError for a corrupt table). */
int
_PyPmem_ReadRefs(open_state *st, PyObject *table)
{
    PoolObject *p = st->pool;
    char *raw = PyByteArray_AS_STRING(table);
    size_t size = (size_t)PyByteArray_GET_SIZE(table), at = 0, n = 0;
    int bad = 0;
    struct pool_ref *ref;
    while ((ref = next_ref(raw, size, &at, &bad)) != NULL) {
        n++;
    }
    st->ref_moves = bad ? NULL : PyMem_RawMalloc(
        (4 * n + 1) * sizeof(*st->ref_moves));
    if (st->ref_moves == NULL) {
        if (bad) {
            PyErr_Format(p->error, "pool %R is corrupt: its table of "
                         "references has a record that does not fit",
                         p->path);
        }
        else {
            PyErr_NoMemory();
        }
        return -1;
    }
    at = 0;
    while ((ref = next_ref(raw, size, &at, &bad)) != NULL) {
        PyObject *name = PyUnicode_DecodeUTF8(
            (char *)(ref + 1), (Py_ssize_t)ref->name_size, NULL);
        PyObject *obj = name == NULL ? NULL : find_ref(name);
        PyObject *address = obj == NULL ? NULL : PyLong_FromVoidPtr(obj);
        PyObject *pair = address == NULL ? NULL
                         : PyTuple_Pack(2, address, name);
        int r = (pair == NULL || PyDict_SetItem(p->refs, address, name) < 0
                 || PyList_Append(p->ref_order, pair) < 0) ? -1 : 0;
        Py_XDECREF(pair);
        Py_XDECREF(address);
        Py_XDECREF(name);
        Py_XDECREF(obj);      /* kept for ever */
        if (r < 0) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Format(p->error, "pool %R is corrupt: its table of "
                             "references holds a name that is not UTF-8",
                             p->path);
            }
            return -1;
        }
        uint64_t here = (uint64_t)(uintptr_t)obj;
        int recorded = ref->addr == here, free_slot = -1;
        for (int k = 0; k < 3; k++) {
            if (ref->moving[k] == here) {
                recorded = 1;
            }
            else if (ref->moving[k] == 0 && free_slot < 0) {
                free_slot = k;
            }
        }
        if (!recorded) {
            if (free_slot < 0) {
                PyErr_Format(p->error, "pool %R: four opens in a row "
                             "stopped while moving its pointers; its "
                             "references cannot be moved again safely",
                             p->path);
                return -1;
            }
            ref->moving[free_slot] = here;
            pmemobj_persist(p->pop, &ref->moving[free_slot], sizeof(here));
        }
        uint64_t froms[4] = {ref->addr, ref->moving[0], ref->moving[1],
                             ref->moving[2]};
        for (int k = 0; k < 4; k++) {
            if (froms[k] != 0) {
                st->ref_moves[st->nref_moves++] = (struct ref_move){
                    (char *)(uintptr_t)froms[k], (char *)obj};
            }
        }
    }
    qsort(st->ref_moves, st->nref_moves, sizeof(*st->ref_moves),
          compare_moves);
    return 0;
}

int
_PyPmem_IsRef(PoolObject *p, const void *v)
{
    /* (Most pointers outside the pool are to static objects: None, the
       small ints.) */
    if (PyDict_GET_SIZE(p->refs) == 0 || _PyStorage_IsStaticTarget(v)) {
        return 0;
    }
    PyObject *address = PyLong_FromVoidPtr((void *)v);
    int r = address == NULL ? -1 : PyDict_Contains(p->refs, address);
    Py_XDECREF(address);
    if (r < 0) {
        PyErr_Clear();            /* (out of memory: not counted) */
        return 0;
    }
    return r;
}

char *
_PyPmem_FindRef(open_state *st, char *from)
{
    size_t lo = 0, hi = st->nref_moves;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        char *at = st->ref_moves[mid].from;
        if (at == from) {
            return st->ref_moves[mid].to;
        }
        if (at < from) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return NULL;
}

/* Every pointer to a reference is this process's now: the records say
   so, and forget the addresses of the opens that stopped. */
void
_PyPmem_RefsMoved(open_state *st)
{
    PoolObject *p = st->pool;
    if (p->root->refs == 0) {
        return;
    }
    PyObject *table = (PyObject *)(st->lo + p->root->refs);
    char *raw = PyByteArray_AS_STRING(table);
    size_t size = (size_t)PyByteArray_GET_SIZE(table), at = 0;
    int bad = 0;
    struct pool_ref *ref;
    for (Py_ssize_t i = 0;
         (ref = next_ref(raw, size, &at, &bad)) != NULL
         && i < PyList_GET_SIZE(p->ref_order); i++)
    {
        PyObject *pair = PyList_GET_ITEM(p->ref_order, i);
        ref->addr = (uint64_t)(uintptr_t)PyLong_AsVoidPtr(
            PyTuple_GET_ITEM(pair, 0));
        pmemobj_persist(p->pop, &ref->addr, sizeof(ref->addr));
        memset(ref->moving, 0, sizeof(ref->moving));
        pmemobj_persist(p->pop, ref->moving, sizeof(ref->moving));
    }
}
