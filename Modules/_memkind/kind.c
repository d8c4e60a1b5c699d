/* _memkind: the memkind storage manager (libmemkind).
 *
 * A _memkind.Kind is a volatile memory class (Doc/pmem/design.rst): the
 * objects placed in it (`with kind:`) live in memory of a memkind kind --
 * high-bandwidth memory (MEMKIND_HBW...), persistent memory used as
 * volatile memory (MEMKIND_DAX_KMEM..., or a file), or ordinary memory
 * (MEMKIND_REGULAR, MEMKIND_DEFAULT) -- and behave as DRAM objects do: no
 * transaction, no store rule (a volatile object may point anywhere).  Of
 * the manager's hooks, alloc, realloc and free do the work; begin and
 * modify are NULL (nothing to do), and end only explains a full region.
 *
 * Every object's manager is found from its address, so the objects of a
 * Kind must lie in one address range.  A Kind takes one region of `size`
 * bytes from its memkind kind (memkind_posix_memalign(): memkind binds
 * the region's pages to the kind's NUMA nodes, and they are faulted in
 * only when used) or maps a file of that size, suballocates it with a
 * fixed kind (memkind_create_fixed()), and registers the region as its
 * manager's range, the Kind as the manager's owner (what
 * pmem.storage_of() gives).  A full region raises a MemoryError that says
 * so, how much is in use, and what to do (full_error()).
 *
 * Lifetime.  A Kind's objects can outlive every reference to the Kind
 * (their manager is found from their address, not through a reference):
 * a Kind that goes while it has objects, or while a placement of it is
 * pushed, stays until they are gone, and then gives its region back, as
 * an empty Kind does when it goes.
 */

#ifndef Py_BUILD_CORE_BUILTIN
#  define Py_BUILD_CORE_MODULE 1
#endif
#define PY_SSIZE_T_CLEAN

#include "Python.h"
#include "structmember.h"         // PyMemberDef

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memkind.h>

#define KIND_DEFAULT_SIZE ((Py_ssize_t)1 << 30)
#define KIND_MIN_SIZE ((Py_ssize_t)16 << 20)
#define REGION_ALIGNMENT ((size_t)2 << 20)

/* The kinds a Kind can draw its region from, by name; "file" maps a file
   instead. */
static const struct {
    const char *name;
    memkind_t *kind;
} kinds[] = {
    {"default", &MEMKIND_DEFAULT},
    {"regular", &MEMKIND_REGULAR},
    {"hugetlb", &MEMKIND_HUGETLB},
    {"interleave", &MEMKIND_INTERLEAVE},
    {"hbw", &MEMKIND_HBW},
    {"hbw_all", &MEMKIND_HBW_ALL},
    {"hbw_preferred", &MEMKIND_HBW_PREFERRED},
    {"hbw_interleave", &MEMKIND_HBW_INTERLEAVE},
    {"dax_kmem", &MEMKIND_DAX_KMEM},
    {"dax_kmem_all", &MEMKIND_DAX_KMEM_ALL},
    {"dax_kmem_preferred", &MEMKIND_DAX_KMEM_PREFERRED},
    {"dax_kmem_interleave", &MEMKIND_DAX_KMEM_INTERLEAVE},
    {"highest_capacity", &MEMKIND_HIGHEST_CAPACITY},
    {"lowest_latency_local", &MEMKIND_LOWEST_LATENCY_LOCAL},
    {"highest_bandwidth_local", &MEMKIND_HIGHEST_BANDWIDTH_LOCAL},
};
#define FILE_KIND "file"

typedef struct _KindObject {
    PyObject_HEAD
    PyStorageManager sm;
    PyObject *name;               /* the kind's name (str) */
    PyObject *dir;                /* "file": the directory, or None */
    memkind_t source;             /* the region's kind; NULL for "file" */
    memkind_t fixed;              /* the suballocator of the region */
    char *region;
    size_t size;
    int registered;               /* the region is the manager's range */
    int fd;                       /* "file": the file, or -1 */
    struct _KindObject *next_file;    /* the list of file_kinds */
    Py_ssize_t blocks;            /* blocks allocated and not freed */
    size_t used;                  /* their usable bytes */
    size_t failed_size;           /* an allocation that did not fit, not
                                     yet explained (full_error()) */
    int placements;               /* pushes not popped, on any thread */
    int orphaned;                 /* no reference left: kept for its
                                     objects (see kind_dealloc()) */
    char cname[32];
} KindObject;

#define KIND(sm) \
    ((KindObject *)((char *)(sm) - offsetof(KindObject, sm)))

typedef struct {
    PyTypeObject *KindType;
} memkind_state;

static inline memkind_state *
get_state(PyObject *module)
{
    return (memkind_state *)PyModule_GetState(module);
}

static struct PyModuleDef memkind_module;
#define get_state_by_type(type) \
    (get_state(PyType_GetModuleByDef(type, &memkind_module)))

/*[clinic input]
module _memkind
class _memkind.Kind "KindObject *" "get_state_by_type(type)->KindType"
[clinic start generated code]*/
/*[clinic end generated code: output=da39a3ee5e6b4b0d input=e3db6f2288240096]*/

#include "clinic/kind.c.h"


/* --- the storage manager ------------------------------------------------ */

/* An allocation of size bytes failed: the region is full (a fixed kind
   takes nothing from elsewhere).  It is remembered for the MemoryError's
   message. */
static void *
no_room(KindObject *k, size_t size)
{
    k->failed_size = size;
    return NULL;
}

static void *
kind_alloc(PyStorageManager *sm, size_t size, PyTypeObject *type)
{
    KindObject *k = KIND(sm);
    size = size == 0 ? 1 : size;
    void *block = memkind_malloc(k->fixed, size);
    if (block == NULL) {
        return no_room(k, size);
    }
    k->blocks++;
    k->used += memkind_malloc_usable_size(k->fixed, block);
    return block;
}

static void *
kind_realloc(PyStorageManager *sm, void *ptr, size_t size)
{
    KindObject *k = KIND(sm);
    if (ptr == NULL) {
        return kind_alloc(sm, size, NULL);
    }
    size = size == 0 ? 1 : size;
    size_t old = memkind_malloc_usable_size(k->fixed, ptr);
    void *block = memkind_realloc(k->fixed, ptr, size);
    if (block == NULL) {
        return no_room(k, size);
    }
    k->used += memkind_malloc_usable_size(k->fixed, block) - old;
    return block;
}

static void
kind_free(PyStorageManager *sm, void *ptr)
{
    KindObject *k = KIND(sm);
    if (ptr != NULL) {
        k->used -= memkind_malloc_usable_size(k->fixed, ptr);
        memkind_free(k->fixed, ptr);
        k->blocks--;
        if (k->orphaned && k->blocks == 0 && k->placements == 0) {
            /* The last object of a Kind that nothing refers to. */
            k->orphaned = 0;
            Py_DECREF(k);
        }
    }
}

/* A MemoryError that says that k is full, how full, and what to do, in
   place of the bare one that the core raised when an allocation of k
   failed. */
static void
full_error(KindObject *k)
{
    size_t need = k->failed_size;
    k->failed_size = 0;
    PyErr_Format(PyExc_MemoryError, "memory kind %R is full: %zu more "
                 "bytes do not fit (%zu of its %zu bytes are in use by "
                 "objects; the rest is the allocator's, and free space in "
                 "pieces too small).  Delete what is no longer needed, or "
                 "make a larger one (MemoryKind(name, size=...))", k->name,
                 need, k->used, k->size);
}

/* Volatile memory: an operation is as atomic as in DRAM, and needs no
   bracket and no log (no begin, no modify).  Only its end does
   something: an operation that failed because the region is full fails
   with the explanation (_PyStorage_TxEnd() gives it in place of its bare
   MemoryError). */
static int
kind_end(PyStorageManager *sm, int ok)
{
    KindObject *k = KIND(sm);
    if (!ok && k->failed_size != 0) {
        full_error(k);
        return -1;
    }
    return 0;
}


/* --- making a Kind ------------------------------------------------------- */

/* Empty regions of memkind kinds, each with its fixed kind, kept for
   reuse (release_region()). */
typedef struct spare {
    memkind_t source;
    size_t size;
    char *region;
    memkind_t fixed;
    struct spare *next;
} spare;

static spare *spares = NULL;

/* The "file" Kinds that have a region.  Their mappings are shared: after
   fork(), the child would write into the parent's objects with an
   allocator state of its own.  The child maps each region again at the
   same address, privately (copy-on-write, as the rest of its memory). */
static KindObject *file_kinds = NULL;

static void
remap_file_kinds_in_child(void)
{
    for (KindObject *k = file_kinds; k != NULL; k = k->next_file) {
        if (mmap(k->region, k->size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_FIXED, k->fd, 0) == MAP_FAILED) {
            /* Better no region than a shared one. */
            (void)mmap(k->region, k->size, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        }
    }
}

/* An empty region of source of size bytes, with its fixed kind, from
   the spares: 1, or 0 when there is none. */
static int
take_spare(KindObject *k)
{
    for (spare **link = &spares; *link != NULL; link = &(*link)->next) {
        spare *sp = *link;
        if (sp->source == k->source && sp->size == k->size) {
            k->region = sp->region;
            k->fixed = sp->fixed;
            *link = sp->next;
            PyMem_RawFree(sp);
            return 1;
        }
    }
    return 0;
}

static void
memkind_error(int err, const char *what, PyObject *name)
{
    char msg[MEMKIND_ERROR_MESSAGE_SIZE];
    memkind_error_message(err, msg, sizeof(msg));
    PyErr_Format(PyExc_OSError, "%s memkind kind %R: %s", what, name, msg);
}

/* An unnamed file in dir, open for reading and writing; -1 with errno
   set on failure. */
static int
unnamed_file(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR)) {
        return fd;
    }
    /* A file system without O_TMPFILE: a named file, unlinked at once. */
    PyObject *path = PyBytes_FromFormat("%s/pmem-memkind.XXXXXX", dir);
    if (path == NULL) {
        PyErr_Clear();
        errno = ENOMEM;
        return -1;
    }
    fd = mkstemp(PyBytes_AS_STRING(path));
    if (fd >= 0) {
        (void)unlink(PyBytes_AS_STRING(path));
    }
    Py_DECREF(path);
    return fd;
}

/* The region of a "file" Kind: an unnamed file of size bytes in dir,
   mapped shared (so that its pages are the file system's, persistent
   memory on a DAX file system).  Its blocks are allocated now: in a
   sparse file, a full file system would be a SIGBUS at the first touch of
   a page, not a MemoryError.  0, or -1 with an exception set. */
static int
map_file(KindObject *k, PyObject *dir)
{
    PyObject *dir_bytes;
    if (!PyUnicode_FSConverter(dir, &dir_bytes)) {
        return -1;
    }
    int fd = unnamed_file(PyBytes_AS_STRING(dir_bytes));
    Py_DECREF(dir_bytes);
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, dir);
        return -1;
    }
    int err = posix_fallocate(fd, 0, (off_t)k->size);
    if (err != 0) {
        close(fd);
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, dir);
        return -1;
    }
    void *region = mmap(NULL, k->size, PROT_READ | PROT_WRITE, MAP_SHARED,
                        fd, 0);
    if (region == MAP_FAILED) {
        int saved_errno = errno;
        close(fd);
        errno = saved_errno;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, dir);
        return -1;
    }
    static int atfork_done = 0;
    if (!atfork_done) {
        if (pthread_atfork(NULL, NULL, remap_file_kinds_in_child) != 0) {
            munmap(region, k->size);
            close(fd);
            PyErr_NoMemory();
            return -1;
        }
        atfork_done = 1;
    }
    k->region = region;
    k->fd = fd;                   /* kept for the child's remapping */
    k->next_file = file_kinds;
    file_kinds = k;
    return 0;
}

/* The names a Kind can be made of: "file", then the memkind kinds. */

/*[clinic input]
_memkind.kind_names

The names a Kind can be made of.
[clinic start generated code]*/

static PyObject *
_memkind_kind_names_impl(PyObject *module)
/*[clinic end generated code: output=1f3120bc031acf92 input=9e2593d95ff9f573]*/
{
    PyObject *names = Py_BuildValue("[s]", FILE_KIND);
    for (size_t i = 0; names != NULL && i < Py_ARRAY_LENGTH(kinds); i++) {
        PyObject *name = PyUnicode_FromString(kinds[i].name);
        if (name == NULL || PyList_Append(names, name) < 0) {
            Py_CLEAR(names);
        }
        Py_XDECREF(name);
    }
    return names;
}

/* The memkind kind named cname, checked against dir (the "file" kind
   needs one; the others take none): 0 with *source set (NULL for
   "file"), or -1 with an exception set. */
static int
find_source(PyObject *name, const char *cname, PyObject *dir,
            memkind_t **source)
{
    *source = NULL;
    if (strcmp(cname, FILE_KIND) == 0) {
        if (dir == Py_None) {
            PyErr_Format(PyExc_TypeError, "the '%s' kind needs dir=, the "
                         "directory of its file", FILE_KIND);
            return -1;
        }
        return 0;
    }
    for (size_t i = 0; i < Py_ARRAY_LENGTH(kinds); i++) {
        if (strcmp(cname, kinds[i].name) == 0) {
            *source = kinds[i].kind;
            break;
        }
    }
    if (*source == NULL) {
        PyObject *names = _memkind_kind_names_impl(NULL);
        PyObject *sep = PyUnicode_FromString(", ");
        PyObject *text = names == NULL || sep == NULL
                         ? NULL : PyUnicode_Join(sep, names);
        if (text != NULL) {
            PyErr_Format(PyExc_ValueError, "unknown memkind kind %R; "
                         "the kinds are: %U", name, text);
        }
        Py_XDECREF(names);
        Py_XDECREF(sep);
        Py_XDECREF(text);
        return -1;
    }
    if (dir != Py_None) {
        PyErr_Format(PyExc_TypeError, "dir= is for the '%s' kind only",
                     FILE_KIND);
        return -1;
    }
    return 0;
}

/* The region of a Kind of a memkind kind: a spare one, or k->size bytes
   of the kind.  0, or -1 with an exception set. */
static int
take_region(KindObject *k, memkind_t source)
{
    k->source = source;
    int err = memkind_check_available(source);
    if (err != 0) {
        memkind_error(err, "this machine has no memory of", k->name);
        return -1;
    }
    if (take_spare(k)) {
        return 0;
    }
    void *region = NULL;
    err = memkind_posix_memalign(source, &region, REGION_ALIGNMENT,
                                 k->size);
    if (err != 0 || region == NULL) {
        PyErr_Format(PyExc_MemoryError, "cannot take %zu bytes of memkind "
                     "kind %R", k->size, k->name);
        return -1;
    }
    k->region = region;
    return 0;
}

/* The region suballocated (a spare one already is) and registered as
   the manager's range.  0, or -1 with an exception set. */
static int
manage_region(KindObject *k)
{
    if (k->fixed == NULL) {
        int err = memkind_create_fixed(k->region, k->size, &k->fixed);
        if (err != 0) {
            memkind_error(err, "cannot make a region of", k->name);
            return -1;
        }
    }
    if (PyStorage_AddRange(&k->sm, k->region, k->size) < 0) {
        return -1;
    }
    k->registered = 1;
    return 0;
}

/*[clinic input]
@classmethod
_memkind.Kind.__new__ as kind_new

    name: unicode(c_default="NULL") = 'regular'
    *
    size: Py_ssize_t(c_default="KIND_DEFAULT_SIZE") = 1073741824
    dir: object = None

A region of memory of a memkind kind, for volatile objects.

Inside `with kind:`, the new dicts, lists, sets, bytearrays and instances
of classes that this thread makes live there.  They are ordinary objects
of their types.  name is a memkind kind ('regular', 'hbw', 'dax_kmem'...),
or 'file': a file in dir, unnamed and gone at exit.  size is in bytes
(1 GiB by default).  A full region raises MemoryError; an absent kind,
OSError.
[clinic start generated code]*/

static PyObject *
kind_new_impl(PyTypeObject *type, PyObject *name, Py_ssize_t size,
              PyObject *dir)
/*[clinic end generated code: output=a4c80a1785865b12 input=fb244a0f8f14fae7]*/
{
    const char *cname = name == NULL ? "regular" : PyUnicode_AsUTF8(name);
    memkind_t *source;
    if (cname == NULL || find_source(name, cname, dir, &source) < 0) {
        return NULL;
    }
    if (size < KIND_MIN_SIZE) {
        PyErr_Format(PyExc_ValueError, "a memkind region is %zd bytes at "
                     "least, not %zd", KIND_MIN_SIZE, size);
        return NULL;
    }

    KindObject *k = (KindObject *)type->tp_alloc(type, 0);
    if (k == NULL) {
        return NULL;
    }
    k->fd = -1;
    k->name = PyUnicode_FromString(cname);
    k->dir = Py_NewRef(dir);
    if (k->name == NULL) {
        goto error;
    }
    PyOS_snprintf(k->cname, sizeof(k->cname), "memkind:%s", cname);
    k->sm = (PyStorageManager){
        .name = k->cname,
        .flags = 0,
        .owner = (PyObject *)k,
        .alloc = kind_alloc,
        .realloc = kind_realloc,
        .free = kind_free,
        .end = kind_end,
    };
    k->size = ((size_t)size + REGION_ALIGNMENT - 1) & ~(REGION_ALIGNMENT - 1);
    if ((source == NULL ? map_file(k, dir) : take_region(k, *source)) < 0
        || manage_region(k) < 0)
    {
        goto error;
    }
    return (PyObject *)k;

error:
    Py_DECREF(k);                 /* gives the region back */
    return NULL;
}

/* Give the region back: nothing lives in it any more.  A file's region
   is unmapped.  A region of a memkind kind cannot go back to that kind
   once a fixed kind has managed it (destroying the fixed kind takes the
   allocator's record of the region's pages with it), so it is kept, empty,
   for the next Kind of the same kind and size (take_spare()). */
static void
release_region(KindObject *k)
{
    if (k->registered) {
        (void)PyStorage_RemoveRange(k->region);
        k->registered = 0;
    }
    if (k->region == NULL) {
        return;
    }
    if (k->source != NULL) {
        if (k->fixed == NULL) {
            memkind_free(k->source, k->region);
        }
        else {
            spare *sp = PyMem_RawMalloc(sizeof(spare));
            if (sp != NULL) {
                *sp = (spare){k->source, k->size, k->region, k->fixed,
                              spares};
                spares = sp;
            }
            /* else: out of memory, the region is left behind */
        }
    }
    else {
        if (k->fixed != NULL) {
            memkind_destroy_kind(k->fixed);
        }
        munmap(k->region, k->size);
        for (KindObject **link = &file_kinds; *link != NULL;
             link = &(*link)->next_file) {
            if (*link == k) {
                *link = k->next_file;
                break;
            }
        }
        if (k->fd >= 0) {
            close(k->fd);
            k->fd = -1;
        }
    }
    k->fixed = NULL;
    k->region = NULL;
}

static void
kind_dealloc(KindObject *k)
{
    if (k->blocks > 0 || k->placements > 0) {
        /* Objects of the region live on, or a placement still names the
           manager: keep it (resurrected, without a reference) until the
           last of its objects is freed (kind_free()). */
        k->orphaned = 1;
        _Py_NewReference((PyObject *)k);
        return;
    }
    release_region(k);
    PyTypeObject *tp = Py_TYPE(k);
    Py_XDECREF(k->name);
    Py_XDECREF(k->dir);
    tp->tp_free((PyObject *)k);
    Py_DECREF(tp);
}

/*[clinic input]
_memkind.Kind.__enter__ as kind_enter

    k: self(type="KindObject *")

Place the new containers and instances of this thread here.
[clinic start generated code]*/

static PyObject *
kind_enter_impl(KindObject *k)
/*[clinic end generated code: output=1d21914de70693d2 input=3d5f22ace73766a7]*/
{
    if (PyStorage_PushPlacement(&k->sm) < 0) {
        return NULL;
    }
    k->placements++;
    return Py_NewRef(k);
}

/* End the placement; never suppresses.  A block that raised a bare
   MemoryError because the region is full raises the explanation. */

/*[clinic input]
_memkind.Kind.__exit__ as kind_exit

    k: self(type="KindObject *")
    type: object
    value: object
    traceback: object
    /

End the placement that __enter__ began.
[clinic start generated code]*/

static PyObject *
kind_exit_impl(KindObject *k, PyObject *type, PyObject *value,
               PyObject *traceback)
/*[clinic end generated code: output=6030388c61c4897e input=7a56b28a030ff691]*/
{
    if (PyStorage_PopPlacement(&k->sm) < 0) {
        return NULL;
    }
    k->placements--;
    int explain = (k->failed_size != 0 && type == PyExc_MemoryError
                   && PyObject_TypeCheck(value, (PyTypeObject *)type)
                   && PyTuple_GET_SIZE(
                          ((PyBaseExceptionObject *)value)->args) == 0);
    if (explain) {
        full_error(k);
    }
    if (k->orphaned && k->blocks == 0 && k->placements == 0) {
        /* The last placement of a Kind whose objects are gone (the call
           holds its own reference). */
        k->orphaned = 0;
        Py_DECREF(k);
    }
    if (explain) {
        return NULL;
    }
    Py_RETURN_FALSE;
}

/*[clinic input]
_memkind.Kind.stats as kind_stats

    k: self(type="KindObject *")

The blocks allocated, their bytes, and the region's bytes.

{'blocks': allocated blocks, 'used': their bytes, 'size': region bytes}
[clinic start generated code]*/

static PyObject *
kind_stats_impl(KindObject *k)
/*[clinic end generated code: output=4af81640e9d20842 input=2014e7d72049c124]*/
{
    return Py_BuildValue("{sn sn sn}", "blocks", k->blocks,
                         "used", (Py_ssize_t)k->used,
                         "size", (Py_ssize_t)k->size);
}

static PyObject *
kind_repr(KindObject *k)
{
    if (k->dir != Py_None) {
        return PyUnicode_FromFormat("<pmem.MemoryKind %R in %R, %zu bytes>",
                                    k->name, k->dir, k->size);
    }
    return PyUnicode_FromFormat("<pmem.MemoryKind %R, %zu bytes>", k->name,
                                k->size);
}

static PyMethodDef kind_methods[] = {
    KIND_ENTER_METHODDEF
    KIND_EXIT_METHODDEF
    KIND_STATS_METHODDEF
    {NULL}
};

static PyMemberDef kind_members[] = {
    {"name", T_OBJECT, offsetof(KindObject, name), READONLY,
     "The memkind kind's name."},
    {"dir", T_OBJECT, offsetof(KindObject, dir), READONLY,
     "The directory of a 'file' kind's file, or None."},
    {"size", T_PYSSIZET, offsetof(KindObject, size), READONLY,
     "The region's size in bytes."},
    {NULL}
};

static int
kind_sq_contains(KindObject *k, PyObject *obj)
{
    return PyStorage_Of(obj) == &k->sm;
}

static PyType_Slot kind_slots[] = {
    {Py_tp_new, kind_new},
    {Py_tp_dealloc, kind_dealloc},
    {Py_tp_repr, kind_repr},
    {Py_tp_methods, kind_methods},
    {Py_tp_members, kind_members},
    {Py_sq_contains, kind_sq_contains},
    {Py_tp_doc, (void *)kind_new__doc__},
    {0, NULL}
};

static PyType_Spec kind_spec = {
    .name = "_memkind.Kind",
    .basicsize = sizeof(KindObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = kind_slots,
};


/* --- the module ---------------------------------------------------------- */

static PyMethodDef memkind_methods[] = {
    _MEMKIND_KIND_NAMES_METHODDEF
    {NULL}
};

static int
memkind_exec(PyObject *module)
{
    memkind_state *state = get_state(module);
    state->KindType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &kind_spec, NULL);
    if (state->KindType == NULL
        || PyModule_AddType(module, state->KindType) < 0)
    {
        return -1;
    }
    return 0;
}

static int
memkind_traverse(PyObject *module, visitproc visit, void *arg)
{
    memkind_state *state = get_state(module);
    Py_VISIT(state->KindType);
    return 0;
}

static int
memkind_clear(PyObject *module)
{
    memkind_state *state = get_state(module);
    Py_CLEAR(state->KindType);
    return 0;
}

static PyModuleDef_Slot memkind_slots[] = {
    {Py_mod_exec, memkind_exec},
    {0, NULL}
};

static struct PyModuleDef memkind_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_memkind",
    .m_doc = "The memkind storage manager: volatile objects in memory of "
             "a memkind kind.",
    .m_size = sizeof(memkind_state),
    .m_methods = memkind_methods,
    .m_slots = memkind_slots,
    .m_traverse = memkind_traverse,
    .m_clear = memkind_clear,
};

PyMODINIT_FUNC
PyInit__memkind(void)
{
    return PyModuleDef_Init(&memkind_module);
}
