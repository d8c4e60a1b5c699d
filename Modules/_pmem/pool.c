/* _pmem: the persistent-memory storage manager (PMDK libpmemobj).
 *
 * This module is the only code that links libpmemobj.  A _pmem.Pool owns
 * one libpmemobj pool file, mapped into the process, and is the storage
 * manager (Include/cpython/storage.h) of the mapping's address range:
 *
 *   alloc/realloc/free   atomic pmemobj allocations (a variable may keep
 *                        an object that an undo does not free); inside a
 *                        transaction, new blocks are flushed by its commit
 *                        and frees are deferred to it; the allocation's
 *                        type number records the object's type
 *                        (_PyPmem_TypeCode()), for the open pass
 *   begin/end            one libpmemobj transaction for the outermost
 *                        operation; nested operations join it, a nested
 *                        `with pool:` is a savepoint (_PyPmem_SavepointPush())
 *   modify               pmemobj_tx_xadd_range_direct(): the undo log
 *
 * The functions are libpmemobj's failure-return ones (no setjmp, no
 * abort of the process): every failure becomes a Python exception.
 *
 * Opening runs the open pass (_PyPmem_OpenPass(), DESIGN section 4) over every
 * allocation; an abort counts references around the undo log
 * (_PyPmem_RepairPrepare(), _PyPmem_RepairFinish()); pool.gc() frees what neither the
 * root nor DRAM reaches.
 *
 * The pool file.  Its layout name is POOL_LAYOUT; its root object is a
 * pool_root that starts with POOL_MAGIC and the format version.  A pool
 * is created under a temporary name and renamed into place, so that a
 * crash during creation never leaves a half-made pool under the real
 * name.  Opening checks the layout, the root and the version and turns
 * every refusal of libpmemobj (a foreign, truncated or corrupt file, a
 * pool open in another process) into pmem.PoolError with a message that
 * says what is wrong.
 *
 * Lifetime.  Python objects of a pool can outlive any call: a DRAM
 * variable may hold one after the pool's Pool object is gone.  So a pool
 * stays mapped, and registered as the manager of its range, until the
 * process exits; the module keeps every Pool it opened.  close() ends the
 * pool's use: operations on its objects then raise PoolError, frees are
 * left to the next open's collection of unreachable objects, and reads
 * find a private copy of the pool mapped in its place, which lets the
 * file and its lock go (_PyPmem_MakePrivate()).  The process's exit unmaps the
 * pool and releases its lock; libpmemobj keeps it consistent without a
 * close.  A forked child gets the same private copy (see "fork()").
 */

#ifndef Py_BUILD_CORE_BUILTIN
#  define Py_BUILD_CORE_MODULE 1
#endif
#define PY_SSIZE_T_CLEAN

#include "Python.h"
#include "pycore_storage.h"       // _PyStorage_VisitSlots()
#include "structmember.h"         // PyMemberDef

#include "heapcheck.h"            // _PyPmem_CheckHeap()

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <signal.h>
#include <time.h>                 // nanosleep()
#include <sys/file.h>             // flock()
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#  include <sys/prctl.h>          // PR_SET_PDEATHSIG
#endif

#include <pthread.h>              // pthread_atfork()

#include <libpmemobj.h>

#define POOL_LAYOUT "pmem-python"
#define POOL_MAGIC "PyPMEM\r\n"
#define POOL_FORMAT 2
#define POOL_DEFAULT_SIZE ((Py_ssize_t)64 << 20)

/* Blocks of up to this many bytes (header included) come from classes of
   one size each; larger ones from classes whose blocks are made of
   units (see _PyPmem_RegisterClasses()). */
#define ALLOC_SMALL_MAX 4096
#define ALLOC_HEADER 16           /* libpmemobj's compact header */

/* The root object.  Offsets are from the pool's base, so that they stay
   right when the pool maps elsewhere. */
struct pool_root {
    char magic[8];                /* POOL_MAGIC */
    uint32_t format;              /* POOL_FORMAT */
    uint32_t root_size;           /* sizeof(struct pool_root) */
    uint64_t namespace;           /* the namespace dict, or 0 */
    uint64_t types;               /* the table of user classes, or 0 */
    uint64_t base;                /* where the objects' pointers are right */
    uint64_t anchor;              /* &_Py_NoneStruct of the process that
                                     made their static pointers right */
    uint64_t pending;             /* the one they are being made right
                                     for, while that is under way */
    uint64_t moving[4];           /* bases that opens which stopped half-way
                                     were moving the pointers to, or 0 */
    uint64_t reserved[5];
};

/* The type number of an allocation: what the open pass will need to give
   the object its type again.  0 is a table (dict keys, list items...). */
enum {
    POOL_TABLE = 0,
    POOL_DICT, POOL_LIST, POOL_SET, POOL_FROZENSET, POOL_BYTEARRAY,
    POOL_TUPLE, POOL_INT, POOL_FLOAT, POOL_COMPLEX, POOL_STR, POOL_BYTES,
    /* A user class: POOL_INSTANCE + its index in the pool's type table. */
    POOL_INSTANCE = 1024,
};

/* The allocation classes a pool allocates with (_PyPmem_RegisterClasses()). */
struct alloc_classes {
    uint8_t small[ALLOC_SMALL_MAX / 16 + 1];  /* by (bytes + 15) / 16 */
    uint8_t pages, chunks;        /* the multi-unit classes' ids */
    size_t pages_max, chunks_max; /* and the largest block each makes */
};

typedef struct PoolObject {
    PyObject_HEAD
    PyStorageManager sm;          /* sm.name points into name */
    char name[64];
    PMEMobjpool *pop;             /* mapped until the process exits */
    struct pool_root *root;
    size_t size;                  /* of the mapping */
    int closed;                   /* close() was called */
    int forked;                   /* this process is a forked child of
                                     the one that opened the pool */
    pid_t opener;                 /* the process that opened it */
    char *cpath;                  /* its file's real path */
    dev_t dev;                    /* and identity */
    ino_t ino;
    struct PoolObject *next_open; /* the pools this process opened */
    int depth;                    /* nesting of begin/end, in owner */
    PyThread_type_lock writer;    /* held by the thread in a transaction */
    unsigned long owner;          /* that thread, while depth > 0 */
    PyObject *type_codes;         /* {class: its type code} */
    PyObject *classes;            /* [class or None], by type table index */
    PyObject *unresolved;         /* {"module:qualname": why a placeholder} */
    char **txfreed;               /* blocks freed by the transaction */
    size_t ntxfreed, txfreed_allocated;
    char **txmade;                /* blocks allocated by the transaction */
    size_t ntxmade, txmade_allocated;
    struct savepoint *savepoints; /* of the nested `with pool:` blocks */
    int nsavepoints, savepoints_allocated;
    char *undo;                   /* what changed since the first one */
    size_t undo_len, undo_allocated;
    int doomed;                   /* a nested block could not be undone */
    PyObject *path;               /* str */
    PyObject *error;              /* pmem.PoolError */
    struct alloc_classes classes_of_sizes;  /* what pool_xalloc() uses */
    size_t failed_size;           /* an allocation that did not fit */
} PoolObject;

#define POOL(sm) ((PoolObject *)((char *)(sm) - offsetof(PoolObject, sm)))

/* A nested `with pool:` block: where its changes start. */
struct savepoint {
    int depth;                    /* p->depth inside the block */
    size_t undo_len;              /* p->undo_len at its start */
    size_t ntxfreed;              /* p->ntxfreed at its start */
    size_t ntxmade;               /* p->ntxmade at its start */
};

/* A record of p->undo: the bytes of a range as they were before a change
   (rounded up to 8), then this trailer, so that it is read backwards. */
typedef struct {
    char *addr;
    size_t size;
} undo_trailer;

#define UNDO_ROUND(n) (((n) + 7) & ~(size_t)7)

typedef struct {
    PyObject *PoolError;
    PyTypeObject *PoolType;
    PyObject *pools;              /* {real path: Pool}, never emptied */
} pmem_state;

static struct PyModuleDef _PyPmem_ModuleDef;

static inline pmem_state *
get_state(PyObject *module)
{
    return (pmem_state *)PyModule_GetState(module);
}


/* --- type codes -------------------------------------------------------- */

/* The builtin types by type code, both ways. */
static PyTypeObject *const _PyPmem_BuiltinTypes[] = {
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
    return POOL_INSTANCE;         /* not a builtin */
}


/* --- the storage manager ------------------------------------------------ */

typedef struct open_state repair_state;
static uint64_t _PyPmem_TypeCode(PoolObject *p, PyTypeObject *type);
static int _PyPmem_RecordMade(PoolObject *p, char *block);
static void _PyPmem_RestoreTypeTable(PoolObject *p);
static repair_state *_PyPmem_RepairPrepare(PoolObject *p, int undo, size_t from,
                                    size_t made_from);
static void _PyPmem_RepairFinish(PoolObject *p, repair_state *st);

/* Is this thread inside a transaction of p? */
static inline int
_PyPmem_InMyTransaction(PoolObject *p)
{
    return p->depth > 0 && p->owner == PyThread_get_thread_ident();
}

/* Raise PoolError: p can be read, not changed, in this process. */
void
_PyPmem_RefuseChange(PoolObject *p)
{
    if (p->forked) {
        PyErr_Format(p->error, "pool %R belongs to process %d, which "
                     "opened it: a forked child sees the pool as it was at "
                     "the fork and can read it, not change it (return what "
                     "to store to the parent, or open the pool in a new "
                     "process once the parent has closed it)", p->path,
                     (int)p->opener);
    }
    else {
        PyErr_Format(p->error, "pool %R is closed: its objects can be "
                     "read, not changed", p->path);
    }
}

/* May the cycle collector clear p's objects now?  Not inside one of its
   transactions (what tp_clear and finalizers write, and what is freed,
   could not be undone with it), nor when p cannot be changed. */
int
_PyPmem_Collectable(PyStorageManager *sm)
{
    PoolObject *p = POOL(sm);
    return p->depth == 0 && !p->closed && !p->forked;
}

/* Raise PoolError with libpmemobj's reason. */
static void
pool_error(PoolObject *p, const char *what)
{
    const char *msg = pmemobj_errormsg();
    PyErr_Format(p->error, "%s in pool %R: %s", what, p->path,
                 msg != NULL && msg[0] != '\0' ? msg : strerror(errno));
}

/* --- allocation classes --------------------------------------------------

   libpmemobj's own allocation classes suit pools of many gigabytes: a
   class for every 5% of size up to 384 KiB, each making runs of up to 16
   chunks (4 MiB; a chunk is 256 KiB), and a run stays with its class
   while the pool is open, empty or not.  A container that grows by an
   eighth at each resize meets a new class at each one and leaves a run
   behind in each: a 64 MiB pool was full with 250 KB of objects.  So a
   pool registers classes of its own each time it opens (they are not
   recorded in the file, and the blocks of other classes stay readable)
   and allocates with them:

     up to 128 bytes      a class every 16 bytes
     up to 4 KiB          four classes per doubling (at most a fifth lost)
     up to ~248 KiB       one class of 4 KiB units: a block is as many
                          units as it needs, in runs of one chunk
     up to ~2.6 MiB       one class of 64 KiB units, runs of ~2.6 MiB
     larger               libpmemobj's own: whole chunks

   every class but the last with runs of one chunk.  A class left empty
   keeps a chunk at most; the 40 classes together about 10 MiB when each
   has had a block and none is empty, which are reused by their sizes. */

#define ALLOC_PAGE 4096
#define ALLOC_BIG_UNIT (64 << 10)

/* Register the class of unit bytes, units a run (about), or find it
   registered already (by an earlier open of a pool in this process, or
   among libpmemobj's own).  Its id, or -1 with PoolError set; *nunits:
   how many units its runs have. */
static int
register_class(PoolObject *p, size_t unit, unsigned units, size_t *nunits)
{
    struct pobj_alloc_class_desc desc = {
        .unit_size = unit, .alignment = 0, .units_per_block = units,
        .header_type = POBJ_HEADER_COMPACT,
    };
    if (pmemobj_ctl_set(p->pop, "heap.alloc_class.new.desc", &desc) == 0) {
        *nunits = desc.units_per_block;
        return (int)desc.class_id;
    }
    /* A class of the same unit and run size exists. */
    for (int id = 1; id < 255; id++) {
        struct pobj_alloc_class_desc known;
        char query[48];
        PyOS_snprintf(query, sizeof(query), "heap.alloc_class.%d.desc", id);
        if (pmemobj_ctl_get(p->pop, query, &known) == 0
            && known.unit_size == unit
            && known.header_type == POBJ_HEADER_COMPACT)
        {
            *nunits = known.units_per_block;
            return id;
        }
    }
    pool_error(p, "cannot register an allocation class");
    return -1;
}

int
_PyPmem_RegisterClasses(PoolObject *p)
{
    struct alloc_classes *ac = &p->classes_of_sizes;
    const size_t chunk = 256 << 10;
    size_t prev = 0, n;
    for (size_t unit = 16; unit <= ALLOC_SMALL_MAX; ) {
        int id = register_class(p, unit, (unsigned)((chunk - 1024) / unit),
                                &n);
        if (id < 0) {
            return -1;
        }
        for (size_t i = prev / 16 + 1; i <= unit / 16; i++) {
            ac->small[i] = (uint8_t)id;
        }
        prev = unit;
        if (unit < 128) {
            unit += 16;
        }
        else {
            /* Four steps per doubling: 160, 192, 224, 256, 320... */
            size_t pow2 = 128;
            while (pow2 * 2 <= unit) {
                pow2 *= 2;
            }
            unit += pow2 / 4;
        }
    }
    ac->small[0] = ac->small[1];
    int id = register_class(p, ALLOC_PAGE, (unsigned)((chunk - 1024)
                                                      / ALLOC_PAGE), &n);
    if (id < 0) {
        return -1;
    }
    /* A block's units are within one word of the run's bitmap. */
    ac->pages = (uint8_t)id;
    ac->pages_max = Py_MIN(n, 64) * ALLOC_PAGE;
    id = register_class(p, ALLOC_BIG_UNIT, 40, &n);
    if (id < 0) {
        return -1;
    }
    ac->chunks = (uint8_t)id;
    ac->chunks_max = Py_MIN(n, 64) * ALLOC_BIG_UNIT;
    return 0;
}

/* The flags of pmemobj_xalloc() for a block of size bytes in p. */
static inline uint64_t
class_flags(PoolObject *p, size_t size)
{
    const struct alloc_classes *ac = &p->classes_of_sizes;
    size_t need = size + ALLOC_HEADER;
    if (need <= ALLOC_SMALL_MAX) {
        return POBJ_CLASS_ID(ac->small[(need + 15) / 16]);
    }
    if (need <= ac->pages_max) {
        return POBJ_CLASS_ID(ac->pages);
    }
    if (need <= ac->chunks_max) {
        return POBJ_CLASS_ID(ac->chunks);
    }
    return 0;                     /* whole chunks */
}

/* pmemobj_xalloc() of a block of size bytes in its class; what did not
   fit is remembered for the message of MemoryError (full_error()). */
static int
pool_xalloc(PoolObject *p, PMEMoid *oid, size_t size, uint64_t code,
            uint64_t flags, pmemobj_constr constructor, void *arg)
{
    if (pmemobj_xalloc(p->pop, oid, size, code, flags | class_flags(p, size),
                       constructor, arg) != 0)
    {
        p->failed_size = size;
        return -1;
    }
    return 0;
}

void *
_PyPmem_Alloc(PyStorageManager *sm, size_t size, PyTypeObject *type)
{
    PoolObject *p = POOL(sm);
    PMEMoid oid;
    if (p->closed || p->forked) {
        return NULL;
    }
    uint64_t code = _PyPmem_TypeCode(p, type);
    if (code == UINT64_MAX) {
        return NULL;
    }
    /* Atomic, inside a transaction too: an abort must not free an object
       that a variable may still refer to.  Such an object goes back to
       the state of its first logged change (a new container: empty), and
       _PyPmem_End() counts its references again.  Until it is stored,
       nothing in the pool reaches it: if the process dies first, or the
       transaction that stores it aborts and nothing keeps it, the next
       open (or pool.gc()) frees it. */
    if (pool_xalloc(p, &oid, size, code, POBJ_XALLOC_ZERO, NULL, NULL) < 0) {
        return NULL;
    }
    char *block = pmemobj_direct(oid);
    if (_PyPmem_InMyTransaction(p) && _PyPmem_RecordMade(p, block) < 0) {
        pmemobj_free(&oid);
        return NULL;
    }
    return block;
}

/* Append block to a list of the transaction's blocks.  0, or -1 when
   out of memory. */
static int
block_list_append(char ***plist, size_t *pn, size_t *pallocated,
                  char *block)
{
    if (*pn == *pallocated) {
        size_t n = *pn ? 2 * *pn : 64;
        char **list = PyMem_RawRealloc(*plist, n * sizeof(char *));
        if (list == NULL) {
            return -1;
        }
        *plist = list;
        *pallocated = n;
    }
    (*plist)[(*pn)++] = block;
    return 0;
}

/* Record a block that the transaction frees: it is freed when the
   transaction commits (the frees are part of it), and comes back if the
   transaction, or the nested block that freed it, is undone.  0, or -1
   when out of memory. */
int
_PyPmem_RecordFree(PoolObject *p, char *block)
{
    return block_list_append(&p->txfreed, &p->ntxfreed,
                             &p->txfreed_allocated, block);
}

/* Record a block that the transaction allocated: what is written into it
   without being logged (a new object is filled in) is flushed by the
   commit. */
int
_PyPmem_RecordMade(PoolObject *p, char *block)
{
    return block_list_append(&p->txmade, &p->ntxmade,
                             &p->txmade_allocated, block);
}

typedef struct {
    const void *from;
    size_t size;                  /* to copy; the rest is zeroed */
} copy_arg;

static int
copy_constructor(PMEMobjpool *pop, void *ptr, void *arg)
{
    copy_arg *a = (copy_arg *)arg;
    size_t usable = pmemobj_alloc_usable_size(pmemobj_oid(ptr));
    pmemobj_memcpy_persist(pop, ptr, a->from, a->size);
    if (usable > a->size) {
        pmemobj_memset_persist(pop, (char *)ptr + a->size, 0,
                               usable - a->size);
    }
    return 0;
}

/* A block that grows past this gets room for half as much again: a
   resize holds the old and the new block at once, and the fewer of them
   a growing container makes, the larger it can grow in a pool that has
   no other room for it (the room is not lost: the next resizes use it,
   and a block that shrinks to half of it is made anew). */
#define ALLOC_ROOM_FROM ((size_t)1 << 20)

void *
_PyPmem_Realloc(PyStorageManager *sm, void *ptr, size_t size)
{
    PoolObject *p = POOL(sm);
    if (p->closed || p->forked) {
        return NULL;
    }
    PMEMoid oid = pmemobj_oid(ptr);
    uint64_t code = pmemobj_type_num(oid);
    size_t old = pmemobj_alloc_usable_size(oid);
    if (size <= old && size >= old / 2) {
        return ptr;
    }
    /* A new block, made atomically with the old contents, and the old
       one freed: by the transaction, inside one, so that a savepoint's
       undo can bring it back (pmemobj_tx_realloc() would free it for
       good); else at once (what no longer points to it after a crash in
       between, the next open frees). */
    if (_PyPmem_InMyTransaction(p) && pmemobj_tx_stage() != TX_STAGE_WORK) {
        return NULL;
    }
    copy_arg arg = {ptr, old < size ? old : size};
    PMEMoid moved;
    size_t room = size > old && size > ALLOC_ROOM_FROM ? size / 2 : 0;
    if ((room == 0 || pool_xalloc(p, &moved, size + room, code, 0,
                                  copy_constructor, &arg) < 0)
        && pool_xalloc(p, &moved, size, code, 0, copy_constructor, &arg) < 0)
    {
        return NULL;
    }
    char *block = pmemobj_direct(moved);
    if (_PyPmem_InMyTransaction(p)) {
        if (_PyPmem_RecordMade(p, block) < 0) {
            pmemobj_free(&moved);
            return NULL;
        }
        if (_PyPmem_RecordFree(p, ptr) < 0) {
            p->ntxmade--;
            pmemobj_free(&moved);
            return NULL;
        }
    }
    else {
        pmemobj_free(&oid);
    }
    return block;
}

void
_PyPmem_Free(PyStorageManager *sm, void *ptr)
{
    PoolObject *p = POOL(sm);
    if (p->closed || p->forked) {
        /* Left to the next open, which frees what nothing reaches (a
           forked child's memory of the pool is its own copy). */
        return;
    }
    if (p->depth > 0) {
        /* Freed by the transaction; by another thread's, when this one
           deallocates an object while that transaction is going on: the
           object may be one whose last reference from the pool that
           transaction dropped, and which its undo brings back.  Out of
           memory for the record: the block is left to the next open
           (freeing it now could not be undone). */
        (void)_PyPmem_RecordFree(p, ptr);
        return;
    }
    PMEMoid oid = pmemobj_oid(ptr);
    pmemobj_free(&oid);
}

int
_PyPmem_Begin(PyStorageManager *sm)
{
    PoolObject *p = POOL(sm);
    unsigned long me = PyThread_get_thread_ident();
    if (p->depth > 0 && p->owner == me) {
        p->depth++;
        return 0;
    }
    if (p->closed || p->forked) {
        _PyPmem_RefuseChange(p);
        return -1;
    }
    if (pmemobj_tx_stage() != TX_STAGE_NONE) {
        PyErr_Format(p->error, "an atomic operation on pool %R cannot "
                     "begin inside one on another pool: an operation "
                     "spans one pool", p->path);
        return -1;
    }
    /* One writer at a time: another thread's transaction is waited for,
       without the GIL (readers do not lock). */
    if (!PyThread_acquire_lock(p->writer, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(p->writer, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    if (pmemobj_tx_begin(p->pop, NULL, TX_PARAM_NONE) != 0) {
        pool_error(p, "cannot begin a transaction");
        (void)pmemobj_tx_end();
        PyThread_release_lock(p->writer);
        return -1;
    }
    pmemobj_tx_set_failure_behavior(POBJ_TX_FAILURE_RETURN);
    p->owner = me;
    p->depth = 1;
    return 0;
}

/* A MemoryError that says that p is full, how full, and what to do, in
   place of the bare one that the core raised when an allocation of p
   failed.  It replaces the exception that is set, when that is a bare
   MemoryError; when none is set (_PyStorage_TxEnd() holds the
   operation's exception while the manager ends the operation), it is
   set, and 1 returned: end() fails with it, and the core gives it in
   place of its own MemoryError. */
static int
full_error(PoolObject *p)
{
    size_t need = p->failed_size;
    p->failed_size = 0;
    int explained = 1;
    if (PyErr_Occurred()) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (type != PyExc_MemoryError || value == NULL
            || PyTuple_GET_SIZE(((PyBaseExceptionObject *)value)->args) != 0)
        {
            PyErr_Restore(type, value, tb);
            return 0;
        }
        Py_DECREF(type);
        Py_DECREF(value);
        Py_XDECREF(tb);
        explained = 0;
    }
    size_t used = 0;
    PMEMoid oid;
    POBJ_FOREACH(p->pop, oid) {
        used += pmemobj_alloc_usable_size(oid);
    }
    /* need is 0 for the log of the frees, at the commit. */
    PyObject *what = need == 0
        ? PyUnicode_FromString("the transaction's log does not fit")
        : PyUnicode_FromFormat("%zu more bytes do not fit", need);
    if (what == NULL) {
        return explained;
    }
    PyErr_Format(PyExc_MemoryError, "pool %R is full: %U (%zu of its %zu "
                 "bytes are in use by objects; the rest is libpmemobj's "
                 "metadata, and free space in pieces too small); the "
                 "transaction is rolled back.  Delete what is no longer "
                 "needed, or copy the data into a larger pool "
                 "(pmem.open(path, size=...))", p->path, what, used,
                 p->size);
    Py_DECREF(what);
    return explained;
}

int
_PyPmem_End(PyStorageManager *sm, int ok)
{
    PoolObject *p = POOL(sm);
    if (p->depth <= 0 || p->owner != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_SystemError,
                        "pool end() without this thread's begin()");
        return -1;
    }
    int explained = !ok && p->failed_size != 0 && full_error(p);
    if (--p->depth > 0) {
        /* A nested operation joins the outermost one. */
        return explained ? -1 : 0;
    }
    p->failed_size = 0;
    /* A failed transactional call has aborted the transaction already. */
    int committing = ok && !p->doomed && pmemobj_tx_stage() == TX_STAGE_WORK;
    int full = 0;
    repair_state *repair = NULL;
    /* The frees are the transaction's last changes. */
    for (size_t i = 0; committing && i < p->ntxfreed; i++) {
        if (pmemobj_tx_xfree(pmemobj_oid(p->txfreed[i]),
                             POBJ_XFREE_NO_ABORT) != 0)
        {
            committing = 0;
            full = 1;
        }
    }
    if (committing) {
        /* The commit drains these flushes before it commits. */
        for (size_t i = 0; i < p->ntxmade; i++) {
            PMEMoid made = pmemobj_oid(p->txmade[i]);
            pmemobj_flush(p->pop, p->txmade[i],
                          pmemobj_alloc_usable_size(made));
        }
        pmemobj_tx_commit();
    }
    else {
        /* The undo log restores the objects' memory; their reference
           counts are counted again around it. */
        repair = _PyPmem_RepairPrepare(p, 1, 0, 0);
        if (pmemobj_tx_stage() == TX_STAGE_WORK) {
            pmemobj_tx_abort(ECANCELED);
        }
    }
    int err = pmemobj_tx_end();
    p->ntxfreed = 0;
    p->nsavepoints = 0;
    p->undo_len = 0;
    if (repair != NULL) {
        _PyPmem_RepairFinish(p, repair);   /* frees what the undo left alone */
    }
    p->ntxmade = 0;
    int doomed = p->doomed;
    p->doomed = 0;
    p->owner = 0;
    PyThread_release_lock(p->writer);
    if (!committing) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        _PyPmem_RestoreTypeTable(p);
        PyErr_Restore(type, value, tb);
    }
    if (explained) {
        return -1;
    }
    if (ok && full) {
        PyErr_NoMemory();
        full_error(p);
        return -1;
    }
    if (ok && doomed) {
        PyErr_Format(p->error, "the transaction on pool %R was rolled "
                     "back: a nested block that raised could not be "
                     "undone alone", p->path);
        return -1;
    }
    if (ok && (!committing || err != 0)) {
        errno = err;
        pool_error(p, "the transaction was aborted");
        return -1;
    }
    return 0;
}

/* --- savepoints ----------------------------------------------------------

   libpmemobj's transactions do not nest: an abort undoes the outermost
   one.  A nested `with pool:` block is a savepoint of our own.  While one
   is open, every range registered by modify() is also copied, as it was,
   into p->undo (in DRAM: a crash undoes the whole transaction anyway).
   A block that raises writes those copies back, newest first, down to
   its start -- into ranges of the transaction, so the writes are logged
   and flushed like any change -- and counts references again around it,
   as an abort does; the blocks it freed are not freed.  When that cannot
   be done (out of memory, or a failure aborted the whole transaction),
   the outermost transaction refuses to commit. */

/* Copy [addr, addr + size) into p->undo.  0, or -1 with MemoryError. */
static int
save_undo(PoolObject *p, void *addr, size_t size)
{
    size_t need = UNDO_ROUND(size) + sizeof(undo_trailer);
    if (p->undo_allocated - p->undo_len < need) {
        size_t n = p->undo_allocated ? p->undo_allocated : 4096;
        while (n - p->undo_len < need) {
            n *= 2;
        }
        char *undo = PyMem_RawRealloc(p->undo, n);
        if (undo == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        p->undo = undo;
        p->undo_allocated = n;
    }
    char *rec = p->undo + p->undo_len;
    memcpy(rec, addr, size);
    undo_trailer t = {addr, size};
    memcpy(rec + UNDO_ROUND(size), &t, sizeof(t));
    p->undo_len += need;
    return 0;
}

/* A nested block begins.  0, or -1 with MemoryError. */
int
_PyPmem_SavepointPush(PoolObject *p)
{
    if (p->nsavepoints == p->savepoints_allocated) {
        int n = p->savepoints_allocated ? 2 * p->savepoints_allocated : 8;
        struct savepoint *list = PyMem_RawRealloc(
            p->savepoints, (size_t)n * sizeof(*list));
        if (list == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        p->savepoints = list;
        p->savepoints_allocated = n;
    }
    struct savepoint *sp = &p->savepoints[p->nsavepoints++];
    sp->depth = p->depth + 1;
    sp->undo_len = p->undo_len;
    sp->ntxfreed = p->ntxfreed;
    sp->ntxmade = p->ntxmade;
    return 0;
}

/* The nested block at the top ends; undo its changes if it raised. */
void
_PyPmem_SavepointPop(PoolObject *p, int ok)
{
    struct savepoint sp = p->savepoints[--p->nsavepoints];
    if (!ok && !p->doomed) {
        repair_state *repair = pmemobj_tx_stage() == TX_STAGE_WORK
                               ? _PyPmem_RepairPrepare(p, 1, sp.ntxfreed, sp.ntxmade)
                               : NULL;
        if (repair == NULL) {
            p->doomed = 1;
        }
        else {
            char *end = p->undo + p->undo_len;
            while (end > p->undo + sp.undo_len) {
                undo_trailer t;
                memcpy(&t, end - sizeof(t), sizeof(t));
                end -= sizeof(t) + UNDO_ROUND(t.size);
                memcpy(t.addr, end, t.size);
            }
            p->ntxfreed = sp.ntxfreed;
            _PyPmem_RepairFinish(p, repair);
            _PyPmem_RestoreTypeTable(p);
        }
    }
    if (p->nsavepoints == 0) {
        p->undo_len = 0;
    }
    else if (!ok) {
        p->undo_len = sp.undo_len;
    }
}

int
_PyPmem_Modify(PyStorageManager *sm, void *addr, size_t size)
{
    PoolObject *p = POOL(sm);
    if (!_PyPmem_InMyTransaction(p)) {
        PyErr_Format(PyExc_SystemError, "a write to pool %R outside any "
                     "atomic operation", p->path);
        return -1;
    }
    if (pmemobj_tx_stage() != TX_STAGE_WORK) {
        PyErr_Format(p->error, "the transaction on pool %R was aborted by "
                     "an earlier failure", p->path);
        return -1;
    }
    if (pmemobj_tx_xadd_range_direct(addr, size, POBJ_XADD_NO_ABORT) != 0) {
        if (errno == ENOMEM) {
            /* The undo log cannot grow: the pool is full. */
            p->failed_size = size;
            PyErr_NoMemory();
        }
        else {
            pool_error(p, "cannot log a change");
        }
        return -1;
    }
    if (p->nsavepoints > 0 && save_undo(p, addr, size) < 0) {
        return -1;
    }
    return 0;
}


/* --- fork() and close() --------------------------------------------------

   A pool is mapped shared, and the mapping holds the file open, and with
   it the pool's lock.  A forked child inherits the mapping: every write
   of the child (reference counts included) would reach the parent's
   objects and the file behind the parent's back, and the child would
   keep the pool locked after the parent is gone.  So the child gets each
   pool as it was at the fork, as a private copy at the same addresses,
   and the pool is marked forked there: its objects can be read, and any
   change raises PoolError (_PyPmem_RefuseChange()).  The parent waits for the
   copies to be made, so that none of its later writes reaches them.
   close() replaces the mapping the same way, which releases the lock
   while the objects stay readable.

   The copy takes the pages of the file that hold data; its holes stay
   zero pages, which are not allocated until written. */

static PoolObject *_PyPmem_OpenPools = NULL;   /* linked by next_open */
static int checker_forking = 0;         /* check_metadata()'s fork */
static int fork_pipe[2] = {-1, -1};     /* the parent waits for its EOF */

/* Copy the data of the file behind [base, base + size) into copy.  fd is
   the file, opened again, or -1 (then everything is copied). */
static void
copy_data(char *copy, const char *base, size_t size, int fd)
{
    size_t pos = 0;
    while (fd >= 0 && pos < size) {
        off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) {
                return;           /* a hole up to the end */
            }
            break;                /* no SEEK_DATA here: copy the rest */
        }
        if ((size_t)data >= size) {
            return;
        }
        off_t hole = lseek(fd, data, SEEK_HOLE);
        size_t end = hole < 0 || (size_t)hole > size ? size : (size_t)hole;
        memcpy(copy + data, base + data, end - (size_t)data);
        pos = end;
    }
    if (pos < size) {
        memcpy(copy + pos, base + pos, size - pos);
    }
}

/* Replace p's shared mapping by a private copy at the same addresses,
   which holds neither the file nor its lock.  Only async-signal-safe
   calls: this runs in a forked child.  0; or -1 when there is no memory
   for the copy: then the mapping is a private mapping of the file, which
   the parent's later writes can still reach, or, failing that, left
   unreadable. */
int
_PyPmem_MakePrivate(PoolObject *p)
{
    char *base = (char *)p->pop;
    size_t size = p->size;
    int fd = open(p->cpath, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) < 0 || st.st_dev != p->dev
                    || st.st_ino != p->ino))
    {
        close(fd);                /* another file has the name now */
        fd = -1;
    }
    int r = -1;
    char *copy = mmap(NULL, size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (copy != MAP_FAILED) {
        copy_data(copy, base, size, fd);
        if (mremap(copy, size, size, MREMAP_MAYMOVE | MREMAP_FIXED,
                   base) != MAP_FAILED)
        {
            r = 0;
        }
        else {
            (void)munmap(copy, size);
        }
    }
    if (r < 0 && (fd < 0 || mmap(base, size, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_FIXED, fd,
                                 0) == MAP_FAILED))
    {
        (void)mmap(base, size, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    }
    if (fd >= 0) {
        close(fd);
    }
    return r;
}

static void
before_fork(void)
{
    if (checker_forking) {
        return;
    }
    for (PoolObject *p = _PyPmem_OpenPools; p != NULL; p = p->next_open) {
        if (!p->forked && !p->closed) {
            if (pipe2(fork_pipe, O_CLOEXEC) < 0) {
                fork_pipe[0] = fork_pipe[1] = -1;
            }
            return;
        }
    }
}

static void
after_fork_in_parent(void)
{
    if (fork_pipe[1] < 0) {
        return;
    }
    close(fork_pipe[1]);
    char c;
    while (read(fork_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    close(fork_pipe[0]);
    fork_pipe[0] = fork_pipe[1] = -1;
}

static void
after_fork_in_child(void)
{
    if (checker_forking) {
        return;                   /* the checker maps nothing of ours */
    }
    for (PoolObject *p = _PyPmem_OpenPools; p != NULL; p = p->next_open) {
        if (!p->forked && !p->closed) {
            (void)_PyPmem_MakePrivate(p);
        }
        /* The parent's transaction, if one was going on, stays the
           parent's: nothing of it is the child's to end. */
        p->forked = 1;
        p->depth = 0;
        p->owner = 0;
        p->nsavepoints = 0;
        p->ntxfreed = 0;
        p->ntxmade = 0;
        p->undo_len = 0;
        p->doomed = 0;
    }
    if (fork_pipe[1] >= 0) {
        close(fork_pipe[0]);
        close(fork_pipe[1]);      /* the parent goes on */
        fork_pipe[0] = fork_pipe[1] = -1;
    }
}

/* The fork handlers, installed with the first pool.  0, or -1 with an
   exception set. */
int
_PyPmem_WatchForks(void)
{
    static int installed = 0;
    if (!installed) {
        int err = pthread_atfork(before_fork, after_fork_in_parent,
                                 after_fork_in_child);
        if (err != 0) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        installed = 1;
    }
    return 0;
}


/* --- creating and opening ------------------------------------------------ */

/* Create a pool at path: under a temporary name, renamed into place
   once complete.  0, or -1 with an exception set. */
int
_PyPmem_CreatePool(PyObject *error, PyObject *path, const char *cpath, size_t size)
{
    PyObject *tmp = PyUnicode_FromFormat("%U.creating", path);
    if (tmp == NULL) {
        return -1;
    }
    PyObject *tmp_bytes = PyUnicode_EncodeFSDefault(tmp);
    Py_DECREF(tmp);
    if (tmp_bytes == NULL) {
        return -1;
    }
    const char *ctmp = PyBytes_AS_STRING(tmp_bytes);
    int r = -1;
    /* What a crash during an earlier creation left. */
    (void)unlink(ctmp);
    PMEMobjpool *pop = pmemobj_create(ctmp, POOL_LAYOUT, size, 0600);
    if (pop == NULL) {
        PyErr_Format(error, "cannot create pool %R: %s", path,
                     pmemobj_errormsg());
        goto done;
    }
    PMEMoid root_oid = pmemobj_root(pop, sizeof(struct pool_root));
    if (OID_IS_NULL(root_oid)) {
        PyErr_Format(error, "cannot create pool %R: %s", path,
                     pmemobj_errormsg());
        pmemobj_close(pop);
        (void)unlink(ctmp);
        goto done;
    }
    struct pool_root *root = pmemobj_direct(root_oid);
    memcpy(root->magic, POOL_MAGIC, sizeof(root->magic));
    root->format = POOL_FORMAT;
    root->root_size = sizeof(struct pool_root);
    pmemobj_persist(pop, root, sizeof(*root));
    pmemobj_close(pop);
    if (rename(ctmp, cpath) < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        (void)unlink(ctmp);
        goto done;
    }
    /* The rename itself must reach the disk before the pool is used. */
    PyObject *dir = NULL;
    const char *slash = strrchr(cpath, '/');
    dir = slash == NULL ? PyBytes_FromString(".")
                        : PyBytes_FromStringAndSize(cpath, slash - cpath + 1);
    if (dir == NULL) {
        goto done;
    }
    int fd = open(PyBytes_AS_STRING(dir), O_RDONLY | O_DIRECTORY);
    Py_DECREF(dir);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    r = 0;
done:
    Py_DECREF(tmp_bytes);
    return r;
}

/* Why libpmemobj refused to open path, as a PoolError. */
void
_PyPmem_OpenError(PyObject *error, PyObject *path, int err, const char *msg)
{
    if (err == EAGAIN || err == EWOULDBLOCK) {
        PyErr_Format(error, "pool %R is open in another process; a pool "
                     "has one process at a time", path);
    }
    else if (err == ENOENT) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_FileNotFoundError, path);
    }
    else if (msg != NULL && strstr(msg, "layout") != NULL) {
        PyErr_Format(error, "%R is a libpmemobj pool of another program "
                     "(another layout), not a pmem-python pool: %s",
                     path, msg);
    }
    else {
        PyErr_Format(error, "%R is not a valid pmem-python pool (foreign, "
                     "truncated or corrupt file): %s", path,
                     msg != NULL && msg[0] != '\0' ? msg : strerror(err));
    }
}

/* libpmemobj's check of a pool's metadata, in a child process: on some
   corrupt heaps pmemobj_check() itself crashes, and that must not kill
   the interpreter.  The child reports pmemobj_check()'s result in its
   exit status (0 consistent, 1 inconsistent, 2 an error), or 3 when
   _PyPmem_CheckHeap() finds what the check leaves out inconsistent, and
   errno and a message (libpmemobj's or that check's) through a pipe.
   0, or -1 with an exception set. */
/* The time the check of a pool of size bytes may take: 5 seconds, and 1
   more per 16 MiB (here it checks 64 MiB in a tenth of a second). */
#define CHECK_SECONDS(size) (5u + (unsigned int)((size) >> 24))

static int
check_metadata(PyObject *error, PyObject *path, const char *cpath,
               size_t size)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    pid_t parent = getpid();
    checker_forking = 1;
    pid_t pid = fork();
    checker_forking = 0;
    if (pid == 0) {
        /* The check holds the pool's lock: it must not outlive the
           process that asked for it (killed while opening, that one
           would leave the pool locked until the check ends). */
#ifdef __linux__
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
        if (getppid() != parent) {
            _exit(2);             /* the parent died before the prctl() */
        }
        /* A crash is an answer here, not for faulthandler to report. */
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        signal(SIGABRT, SIG_DFL);
        signal(SIGFPE, SIG_DFL);
        /* Nor is a check that never ends (a cycle in corrupt metadata):
           a generous time for the pool's size. */
        signal(SIGALRM, SIG_DFL);
        alarm(CHECK_SECONDS(size));
        close(fds[0]);
        int ok = pmemobj_check(cpath, POOL_LAYOUT);
        int err = errno;
        const char *msg = ok < 0 ? pmemobj_errormsg() : "";
        int status = ok == 1 ? 0 : ok == 0 ? 1 : 2;
        char why[256];
        if (ok == 1) {
            /* The open will walk every allocation, and the first commit
               will read chunk headers that the check leaves out: corrupt
               ones can make libpmemobj loop or crash, so first here.  A
               failure to open is for the parent to report. */
            PMEMobjpool *pop = pmemobj_open(cpath, POOL_LAYOUT);
            if (pop != NULL) {
                if (_PyPmem_CheckHeap(pop, size, why, sizeof(why)) < 0) {
                    msg = why;
                    status = 3;
                }
                else {
                    PMEMoid oid;
                    POBJ_FOREACH(pop, oid) {
                        (void)pmemobj_alloc_usable_size(oid);
                    }
                }
                pmemobj_close(pop);
            }
        }
        (void)!write(fds[1], &err, sizeof(err));
        (void)!write(fds[1], msg, strlen(msg));
        _exit(status);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    char buf[512];
    int err = 0;
    size_t got = 0;
    ssize_t n;
    while (got < sizeof(buf) - 1
           && (n = read(fds[0], buf + got, sizeof(buf) - 1 - got)) != 0)
    {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        got += (size_t)n;
    }
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
        PyErr_Format(error, "pool %R is corrupt: checking its metadata "
                     "did not end in %u seconds", path, CHECK_SECONDS(size));
        return -1;
    }
    if (WIFSIGNALED(status)) {
        PyErr_Format(error, "pool %R is corrupt: checking its metadata "
                     "crashed libpmemobj (signal %d)", path,
                     WTERMSIG(status));
        return -1;
    }
    if (got >= sizeof(err)) {
        memcpy(&err, buf, sizeof(err));
    }
    buf[got] = '\0';
    const char *msg = got > sizeof(err) ? buf + sizeof(err) : "";
    switch (WEXITSTATUS(status)) {
    case 0:
        return 0;
    case 1:
        PyErr_Format(error, "pool %R is corrupt: libpmemobj found its "
                     "metadata inconsistent", path);
        return -1;
    case 3:
        PyErr_Format(error, "pool %R is corrupt: its heap metadata is "
                     "inconsistent (%s)", path, msg);
        return -1;
    default:
        _PyPmem_OpenError(error, path, err, msg);
        return -1;
    }
}

/* A process that held the pool's lock and was killed (or whose open's
   checker was killed with it) lets it go as it exits, which can take a
   moment after its parent sees it dead: the open waits up to LOCK_WAIT
   milliseconds for the lock, as libpmemobj takes it (flock()), before it
   tries; a pool that stays locked is open in another process. */
#define LOCK_WAIT 1000

void
_PyPmem_WaitForLock(const char *cpath)
{
    int fd = open(cpath, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;                   /* for the open to report */
    }
    Py_BEGIN_ALLOW_THREADS
    for (int waited = 0; ; waited += 10) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            (void)flock(fd, LOCK_UN);
            break;
        }
        if ((errno != EWOULDBLOCK && errno != EINTR) || waited >= LOCK_WAIT) {
            break;
        }
        struct timespec ten_ms = {0, 10 * 1000 * 1000};
        (void)nanosleep(&ten_ms, NULL);
    }
    Py_END_ALLOW_THREADS
    close(fd);
}

/* Before libpmemobj maps a file, which it does not expect to be foreign:
   the file must be as large as a pool and start with a pool header's
   signature, and libpmemobj's own check of its metadata must pass.
   0, or -1 with an exception set. */
int
_PyPmem_CheckFile(PyObject *error, PyObject *path, const char *cpath)
{
    static const char signature[8] = "PMEMOBJ";   /* with its NUL */
    char head[sizeof(signature)];
    int fd = open(cpath, O_RDONLY);
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(
            errno == ENOENT ? PyExc_FileNotFoundError : PyExc_OSError, path);
        return -1;
    }
    struct stat st;
    ssize_t n = fstat(fd, &st) == 0 ? read(fd, head, sizeof(head)) : -1;
    close(fd);
    if (n < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        return -1;
    }
    if (n < (ssize_t)sizeof(head)
        || memcmp(head, signature, sizeof(signature)) != 0)
    {
        PyErr_Format(error, "%R is not a pmem-python pool: it does not "
                     "start with a libpmemobj pool header", path);
        return -1;
    }
    if ((size_t)st.st_size < PMEMOBJ_MIN_POOL) {
        PyErr_Format(error, "pool %R is truncated: %lld bytes, a pool has "
                     "%zu at least", path, (long long)st.st_size,
                     (size_t)PMEMOBJ_MIN_POOL);
        return -1;
    }
    return check_metadata(error, path, cpath, (size_t)st.st_size);
}

/* Check the root of an open pool: 0, or -1 with PoolError set. */
int
_PyPmem_CheckRoot(PyObject *error, PyObject *path, PMEMobjpool *pop, size_t size)
{
    size_t root_size = pmemobj_root_size(pop);
    if (root_size < offsetof(struct pool_root, namespace)) {
        PyErr_Format(error, "%R is not a pmem-python pool: it has no root "
                     "(a crash while it was created, or another program)",
                     path);
        return -1;
    }
    struct pool_root *root = pmemobj_direct(pmemobj_root(pop, root_size));
    /* The root's place is not under the header's checksum. */
    if ((char *)root < (char *)pop || root_size > size
        || (size_t)((char *)root - (char *)pop) > size - root_size)
    {
        PyErr_Format(error, "pool %R is corrupt: its root lies outside it",
                     path);
        return -1;
    }
    if (memcmp(root->magic, POOL_MAGIC, sizeof(root->magic)) != 0) {
        PyErr_Format(error, "%R is not a pmem-python pool: bad magic in "
                     "its root", path);
        return -1;
    }
    if (root->format != POOL_FORMAT) {
        PyErr_Format(error, "pool %R has format version %u; this "
                     "interpreter reads version %d only", path,
                     (unsigned int)root->format, POOL_FORMAT);
        return -1;
    }
    if (root->root_size != root_size || root_size != sizeof(*root)) {
        PyErr_Format(error, "pool %R is corrupt: its root has %zu bytes, "
                     "format %d has %zu", path, root_size, POOL_FORMAT,
                     sizeof(*root));
        return -1;
    }
    return 0;
}

/* --- the open pass ------------------------------------------------------- */

/* Every allocation of the pool, by the address that pointers to it hold
   (an object's, past its pre-header; a table's start): an open-addressing
   table in DRAM, built once per open. */
typedef struct {
    char *key;                    /* NULL: a free slot */
    char *block;                  /* the allocation's start */
    PyObject *obj;                /* the object in it, NULL for a table */
    char mark;                    /* reachable from the root */
    char dead;                    /* freed by the transaction: 1, to be
                                     brought back; 2, before the savepoint
                                     undone (stays freed) */
    char live;                    /* referenced before the undo */
    const char *broken;           /* what is wrong with its pointers */
    Py_ssize_t count;             /* references from the pool */
    Py_ssize_t dram;              /* references from DRAM */
} alloc_entry;

struct open_state {
    PoolObject *pool;
    alloc_entry *entries;
    size_t mask;
    size_t count;
    /* Static pointers are made right for the binary whose None was at
       target, from the one whose None was at source (0: none). */
    char *source, *target;
    /* Pool pointers are moved to [lo, hi) from any of these bases. */
    char *old[5];
    char *lo, *hi;                /* the pool's range */
    int dirty;                    /* static pointers were rewritten */
    Py_ssize_t empty_keys;        /* references to the empty keys, gained */
    int undo;                     /* the counts bracket an undo: the static
                                     objects' references are given back
                                     before it and taken again after */
    int undone;                   /* count_slot() runs after the undo */
    size_t made_from;             /* the undone blocks of p->txmade */
    const char *problem;          /* what the pass found wrong */
};
typedef struct open_state open_state;

/* Every allocation of the pool, with its type code: one walk of
   libpmemobj's heap (pmemobj_next() is most of an open's time).  NULL
   with MemoryError set. */
typedef struct {
    char *block;
    uint64_t code;
} alloc_item;

alloc_item *
_PyPmem_ListAllocations(PMEMobjpool *pop, size_t *pn)
{
    size_t n = 0, allocated = 1024;
    alloc_item *items = PyMem_RawMalloc(allocated * sizeof(*items));
    if (items == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    PMEMoid oid;
    char *last = NULL;
    POBJ_FOREACH(pop, oid) {
        /* The walk goes up the heap: anything else is a cycle in corrupt
           metadata, which would never end. */
        char *block = pmemobj_direct(oid);
        if (block <= last) {
            PyMem_RawFree(items);
            PyErr_SetString(PyExc_ValueError, "the heap's allocations "
                            "do not follow one another");
            return NULL;
        }
        last = block;
        if (n == allocated) {
            allocated *= 2;
            alloc_item *more = PyMem_RawRealloc(items,
                                                allocated * sizeof(*items));
            if (more == NULL) {
                PyMem_RawFree(items);
                PyErr_NoMemory();
                return NULL;
            }
            items = more;
        }
        items[n].block = pmemobj_direct(oid);
        items[n].code = pmemobj_type_num(oid);
        n++;
    }
    *pn = n;
    return items;
}

/* An empty table for n allocations in st; -1 with MemoryError set. */
int
_PyPmem_AllocTableInit(open_state *st, size_t n)
{
    size_t capacity = 64;
    while (capacity < 2 * n) {
        capacity <<= 1;
    }
    st->entries = PyMem_RawCalloc(capacity, sizeof(alloc_entry));
    if (st->entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    st->mask = capacity - 1;
    return 0;
}

alloc_entry *
_PyPmem_FindAlloc(open_state *st, const void *key)
{
    size_t h = ((uintptr_t)key >> 4) * 0x9E3779B97F4A7C15ULL;
    for (size_t i = h & st->mask; ; i = (i + 1) & st->mask) {
        alloc_entry *e = &st->entries[i];
        if (e->key == key || e->key == NULL) {
            return e;
        }
    }
}

/* Reference counts that the pool sets (it counts references that no
   Py_INCREF() took), in the debug build's total too. */
static inline void
_PyPmem_SetRefcnt(PyObject *op, Py_ssize_t refcnt)
{
#ifdef Py_REF_DEBUG
    _Py_RefTotal += refcnt - Py_REFCNT(op);
#endif
    Py_SET_REFCNT(op, refcnt);
}

/* The interpreter's static objects (None, True, small ints...) are
   reference counted, and the pool's objects hold references to them that
   no process took: each open takes them (the reachable objects'), and an
   undo gives back those of the memory it replaces and takes those of the
   memory it restores.  The set dummy is not counted by the set code. */
static inline void
_PyPmem_AddStaticRef(PyObject *v, int n)
{
    if (v != _PySet_Dummy) {
        _PyPmem_SetRefcnt(v, Py_REFCNT(v) + n);
    }
}

PyTypeObject *
_PyPmem_TypeOfCode(uint64_t code)
{
    /* NULL for a table and for codes this interpreter does not know. */
    return code < Py_ARRAY_LENGTH(_PyPmem_BuiltinTypes) ? _PyPmem_BuiltinTypes[code] : NULL;
}

static int
problem(open_state *st, const char *what)
{
    st->problem = what;
    return 1;
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
        size_t usable = e->key == NULL ? 0 : pmemobj_alloc_usable_size(
            pmemobj_oid(e->block)) - (size_t)(start - e->block);
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
            pmemobj_flush(st->pool->pop, slot, sizeof(*slot));
            st->dirty = 1;
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
            return (e->key != NULL && e->obj == NULL) || v == small
                   ? 0 : problem(st, "a table pointer that lands on no "
                                     "table");
        }
        return e->key != NULL && e->obj != NULL
               ? 0 : problem(st, "a pointer that lands on no object");
    }
    if (kind == _PyStorage_SLOT_INTERIOR) {
        return problem(st, "a pointer outside the pool");
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
        pmemobj_flush(st->pool->pop, slot, sizeof(*slot));
        st->dirty = 1;
        return 0;
    }
    return problem(st, "a pointer to neither the pool nor a constant of "
                       "the interpreter");
}

alloc_entry *
_PyPmem_EntryOfObject(open_state *st, PyObject *op)
{
    alloc_entry *e = _PyPmem_FindAlloc(st, op);
    return e->key != NULL && e->obj == op ? e : NULL;
}

typedef struct {
    open_state *st;
    alloc_entry *bad;             /* a reachable object found broken */
    PyObject **stack;
    size_t depth, allocated;
} mark_state;

/* Push op on the stack of objects whose slots are still to visit.  0, or
   -1 when out of memory. */
int
_PyPmem_MarkPush(mark_state *ms, PyObject *op)
{
    if (ms->depth == ms->allocated) {
        size_t n = ms->allocated ? ms->allocated * 2 : 1024;
        PyObject **s = PyMem_RawRealloc(ms->stack, n * sizeof(*s));
        if (s == NULL) {
            return -1;
        }
        ms->stack = s;
        ms->allocated = n;
    }
    ms->stack[ms->depth++] = op;
    return 0;
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
        if (kind == _PyStorage_SLOT_OBJECT) {
            _PyPmem_AddStaticRef((PyObject *)v, 1);
        }
        return 0;
    }
    if (kind == _PyStorage_SLOT_TABLE) {
        alloc_entry *e = _PyPmem_FindAlloc(ms->st, v);
        if (e->key != NULL) {
            e->mark = 1;
        }
        return 0;
    }
    alloc_entry *e = _PyPmem_EntryOfObject(ms->st, (PyObject *)v);
    if (e == NULL || e->broken != NULL) {
        ms->bad = e;
        return 1;
    }
    if (e->mark) {
        _PyPmem_SetRefcnt((PyObject *)v, Py_REFCNT((PyObject *)v) + 1);
        return 0;
    }
    e->mark = 1;
    /* The last process's count, gone. */
    Py_SET_REFCNT((PyObject *)v, 0);
    _PyPmem_SetRefcnt((PyObject *)v, 1);
    return _PyPmem_MarkPush(ms, (PyObject *)v);
}

/* The class named "module:qualname", imported (pkgutil.resolve_name(),
   the resolver of that notation); NULL with an exception set. */
static PyObject *
find_class(PyObject *name)
{
    PyObject *pkgutil = PyImport_ImportModule("pkgutil");
    if (pkgutil == NULL) {
        return NULL;
    }
    PyObject *obj = PyObject_CallMethod(pkgutil, "resolve_name", "O", name);
    Py_DECREF(pkgutil);
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
class_with_layout(PyObject *name, PyObject *layout, PyObject **reason)
{
    *reason = NULL;
    PyObject *cls = find_class(name);
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
   of pmem.Placeholder, made by pmem._placeholder()), with the reason in
   p->unresolved.  NULL with PoolError set when the entry is not one that
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
    cls = class_with_layout(name, layout, &reason);
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
    if (!same || PyDict_SetItem(p->unresolved, name, reason) < 0) {
        Py_CLEAR(cls);
        if (!same) {
            PyErr_Format(p->error, "pool %R is corrupt: its type table "
                         "holds %R, a layout that no class has", p->path,
                         entry);
        }
    }
done:
    Py_XDECREF(name);
    Py_XDECREF(layout);
    Py_XDECREF(reason);
    return cls;
}

/* The instances of user classes get their class from the pool's type
   table ("module:qualname layout" strs): imported, or a placeholder of
   the layout (_PyPmem_ClassOfEntry()), checked against the block it must fit
   in, and remembered for new instances.  0, or -1 with PoolError (or
   MemoryError) set. */
static int
resolve_classes(open_state *st, alloc_item *items, size_t n)
{
    PoolObject *p = st->pool;
    PyObject *table = NULL;
    Py_ssize_t ntypes = 0;
    if (p->root->types != 0) {
        table = (PyObject *)(st->lo + p->root->types);
        alloc_entry *e = _PyPmem_EntryOfObject(st, table);
        if (e == NULL || !PyList_CheckExact(table)) {
            PyErr_Format(p->error, "pool %R is corrupt: its type table is "
                         "not a list of the pool", p->path);
            return -1;
        }
        /* Its pointers first (they may have to move with the pool). */
        st->source = (char *)(uintptr_t)p->root->anchor;
        st->target = (char *)Py_None;
        if (_PyStorage_CheckSlots(table, check_slot, st) != 0) {
            PyErr_Format(p->error, "pool %R is corrupt: its type table "
                         "holds %s", p->path,
                         st->problem ? st->problem : "what it cannot");
            return -1;
        }
        ntypes = PyList_GET_SIZE(table);
        alloc_entry *items_table = ntypes == 0 ? NULL : _PyPmem_FindAlloc(
            st, ((PyListObject *)table)->ob_item);
        if (ntypes != 0 && (items_table->key == NULL
                            || items_table->obj != NULL))
        {
            PyErr_Format(p->error, "pool %R is corrupt: its type table's "
                         "items are not a table of the pool", p->path);
            return -1;
        }
    }
    /* p->classes: the class of each entry, None until resolved. */
    for (Py_ssize_t i = 0; i < ntypes; i++) {
        if (PyList_Append(p->classes, Py_None) < 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t code = items[i].code;
        if (code < POOL_INSTANCE) {
            continue;
        }
        Py_ssize_t index = (Py_ssize_t)(code - POOL_INSTANCE);
        if (code - POOL_INSTANCE >= (uint64_t)ntypes) {
            PyErr_Format(p->error, "pool %R is corrupt: an object of type "
                         "code %llu, which no class has", p->path,
                         (unsigned long long)code);
            return -1;
        }
        if (PyList_GET_ITEM(p->classes, index) == Py_None) {
            PyObject *name = PyList_GET_ITEM(table, index);
            alloc_entry *ne = _PyPmem_EntryOfObject(st, name);
            if (ne == NULL || !PyUnicode_CheckExact(name)) {
                PyErr_Format(p->error, "pool %R is corrupt: its type "
                             "table holds a non-str", p->path);
                return -1;
            }
            /* An entry that an earlier one repeats (a class entered
               again after its name was a placeholder's) gets its class. */
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
            }
            if (cls == NULL) {
                return -1;
            }
            PyObject *value = PyLong_FromUnsignedLongLong(code);
            int r = value == NULL ? -1
                    : PyDict_SetItem(p->type_codes, cls, value);
            Py_XDECREF(value);
            PyList_SetItem(p->classes, index, cls);   /* steals cls */
            if (r < 0) {
                return -1;
            }
        }
        PyTypeObject *type = (PyTypeObject *)PyList_GET_ITEM(p->classes,
                                                             index);
        size_t presize = PyStorage_PreHeaderSize(type);
        size_t usable = pmemobj_alloc_usable_size(pmemobj_oid(items[i].block));
        if (usable < presize + (size_t)type->tp_basicsize) {
            PyErr_Format(p->error, "pool %R is corrupt: it holds %s "
                         "instances smaller than their layout", p->path,
                         type->tp_name);
            return -1;
        }
        PyObject *op = (PyObject *)(items[i].block + presize);
        Py_SET_TYPE(op, type);
        Py_INCREF(type);          /* an instance's reference */
        alloc_entry *e = _PyPmem_FindAlloc(st, op);
        e->key = (char *)op;
        e->block = items[i].block;
        e->obj = op;
    }
    return 0;
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
    for (size_t i = 0; i <= st->mask; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->obj != NULL && e->broken == NULL
            && _PyStorage_CheckSlots(e->obj, check_slot, st) != 0)
        {
            e->broken = st->problem != NULL ? st->problem
                                            : "what a pool cannot hold";
        }
        /* Once its pointers are this process's: what they land on. */
        if (e->obj != NULL && e->broken == NULL
            && target == (char *)Py_None && _PyStorage_CheckHeld(e->obj) < 0)
        {
            e->broken = "counts that its table does not match, or a key or "
                        "__dict__ of the wrong type";
        }
    }
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
    for (size_t i = 0; i <= st->mask; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->mark && e->obj != NULL && PyFrozenSet_CheckExact(e->obj)
            && _PyPmem_MarkPush(ms, e->obj) < 0)
        {
            PyErr_NoMemory();
            return -1;
        }
    }
    int r = _PyStorage_RehashFrozenSets(ms->stack, ms->depth);
    ms->depth = 0;
    return r;
}

/* Make the pool's objects this process's (DESIGN section 4): types,
   volatile metadata, pointers to static objects, reference counts,
   unreachable allocations freed, hash tables rebuilt.  Every step can
   run again from its start: a crash during the pass is repaired by the
   next open.  0, or -1 with PoolError (or MemoryError) set. */
int
_PyPmem_OpenPass(PoolObject *p)
{
    PMEMobjpool *pop = p->pop;
    struct pool_root *root = p->root;
    open_state st = {.pool = p, .lo = (char *)pop,
                     .hi = (char *)pop + p->size};
    if (plan_move(&st) < 0) {
        return -1;
    }
    size_t n;
    alloc_item *items = _PyPmem_ListAllocations(pop, &n);
    if (items == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Format(p->error, "pool %R is corrupt: the heap's "
                         "allocations do not follow one another", p->path);
        }
        return -1;
    }
    if (_PyPmem_AllocTableInit(&st, n) < 0) {
        PyMem_RawFree(items);
        return -1;
    }
    int r = -1;
    mark_state ms = {.st = &st};

    /* 1. Types and volatile metadata, from the allocations' type codes. */
    for (size_t i = 0; i < n; i++) {
        char *block = items[i].block;
        uint64_t code = items[i].code;
        if (code == POOL_TABLE) {
            alloc_entry *e = _PyPmem_FindAlloc(&st, block);
            e->key = e->block = block;
            continue;
        }
        PyTypeObject *type = _PyPmem_TypeOfCode(code);
        if (type == NULL) {
            /* An instance: its class comes from the type table, below. */
            continue;
        }
        PyObject *op = (PyObject *)(block + PyStorage_PreHeaderSize(type));
        Py_SET_TYPE(op, type);
        alloc_entry *e = _PyPmem_FindAlloc(&st, op);
        e->key = (char *)op;
        e->block = block;
        e->obj = op;
    }

    /* 1b. The classes of the instances, from the type table. */
    if (resolve_classes(&st, items, n) < 0) {
        goto done;
    }

    /* 2. Every pointer checked; static ones made this process's.  The
       target is recorded first: a pass that stops half-way leaves each
       pointer right for the source or for the target, and the next open
       finishes it before it starts its own. */
    if (root->pending != 0 && root->pending != (uint64_t)(uintptr_t)Py_None
        && check_pointers(&st, root, (char *)(uintptr_t)root->pending) < 0)
    {
        goto done;
    }
    if (check_pointers(&st, root, (char *)Py_None) < 0) {
        goto done;
    }

    /* 3. What the root reaches, with the references it holds. */
    ms.stack = PyMem_RawMalloc(1024 * sizeof(PyObject *));
    if (ms.stack == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    ms.allocated = 1024;
    uint64_t roots[] = {root->namespace, root->types};
    PyTypeObject *root_types[] = {&PyDict_Type, &PyList_Type};
    for (int k = 0; k < 2; k++) {
        if (roots[k] == 0) {
            continue;
        }
        PyObject *held = (PyObject *)(st.lo + roots[k]);
        alloc_entry *e = (char *)held > st.lo && (char *)held < st.hi
                         ? _PyPmem_EntryOfObject(&st, held) : NULL;
        if (e == NULL || Py_TYPE(held) != root_types[k]) {
            PyErr_Format(p->error, "pool %R is corrupt: its root does not "
                         "hold a %s of the pool", p->path,
                         root_types[k]->tp_name);
            goto done;
        }
        int err = e->broken != NULL;
        ms.bad = e;
        e->mark = 1;
        Py_SET_REFCNT(held, 0);
        _PyPmem_SetRefcnt(held, 1);      /* the root's */
        ms.stack[ms.depth++] = held;
        while (ms.depth > 0 && !err) {
            PyObject *op = ms.stack[--ms.depth];
            err = _PyStorage_VisitSlots(op, mark_slot, &ms);
        }
        if (err < 0) {
            PyErr_NoMemory();
            goto done;
        }
        if (err > 0 && ms.bad == NULL) {
            PyErr_Format(p->error, "pool %R is corrupt: an object holds a "
                         "pointer that lands on no object", p->path);
            goto done;
        }
        if (err > 0) {
            PyErr_Format(p->error, "pool %R is corrupt: a %s at +%zu holds "
                         "%s", p->path, Py_TYPE(ms.bad->obj)->tp_name,
                         (size_t)(ms.bad->key - st.lo), ms.bad->broken);
            goto done;
        }
    }

    /* 3b. Volatile metadata, of the objects that are kept: an unreachable
       one may be anything that a crash left (a block that an allocation
       had only zeroed). */
    for (size_t i = 0; i <= st.mask; i++) {
        alloc_entry *e = &st.entries[i];
        if (e->mark && e->obj != NULL) {
            _PyStorage_ResetVolatile(e->obj);
        }
    }

    /* The interpreter's empty keys, held by the pool's empty dicts. */
    for (size_t i = 0; i <= st.mask; i++) {
        alloc_entry *e = &st.entries[i];
        if (e->mark && e->obj != NULL && _PyStorage_SharesEmptyKeys(e->obj)) {
            _PyStorage_AddEmptyKeysRefs(1);
        }
    }

    /* 4. The rest is what a crash left behind: freed. */
    for (size_t i = 0; i <= st.mask; i++) {
        alloc_entry *e = &st.entries[i];
        if (e->block != NULL && !e->mark) {
            PMEMoid dead = pmemobj_oid(e->block);
            pmemobj_free(&dead);
        }
    }

    /* 5. Hash tables for this process's hashes: one transaction.  First
       the frozensets' own hashes, which the tables that hold them use. */
    if (_PyPmem_Begin(&p->sm) < 0) {
        goto done;
    }
    int ok = rehash_frozensets(&st, &ms) == 0;
    for (size_t i = 0; i <= st.mask && ok; i++) {
        alloc_entry *e = &st.entries[i];
        if (e->mark && e->obj != NULL && _PyStorage_Rehash(e->obj) < 0) {
            ok = 0;
        }
    }
    if (_PyPmem_End(&p->sm, ok) < 0 || !ok) {
        goto done;
    }

    /* 6. The pointers are right for this mapping. */
    root->base = (uint64_t)(uintptr_t)pop;
    pmemobj_persist(pop, &root->base, sizeof(root->base));
    memset(root->moving, 0, sizeof(root->moving));
    pmemobj_persist(pop, root->moving, sizeof(root->moving));
    r = 0;
done:
    PyMem_RawFree(items);
    PyMem_RawFree(ms.stack);
    PyMem_RawFree(st.entries);
    return r;
}

/* --- after an abort ------------------------------------------------------ */

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
    else if (st->undo) {
        _PyPmem_AddStaticRef((PyObject *)v, st->undone ? 1 : -1);
    }
    return 0;
}

/* The references of the pool's root (each object it holds has one). */
static void
count_roots(PoolObject *p, repair_state *st)
{
    uint64_t roots[] = {p->root->namespace, p->root->types};
    for (int k = 0; k < 2; k++) {
        alloc_entry *e = roots[k] == 0
                         ? NULL : _PyPmem_FindAlloc(st, st->lo + roots[k]);
        if (e != NULL && e->key != NULL && e->obj != NULL) {
            e->count++;
        }
    }
}

/* The table of the pool's allocations, for the counts (undo: around an
   undo, with the blocks that it frees and makes from the from-th and
   made_from-th of the transaction's); NULL when it cannot be made (then
   the counts are left as they are). */
repair_state *
_PyPmem_RepairPrepare(PoolObject *p, int undo, size_t from, size_t made_from)
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
    st->undo = undo;
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
    count_roots(p, st);
    for (size_t i = 0; i <= st->mask; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->obj != NULL) {
            e->dram = e->dead ? 0 : Py_REFCNT(e->obj) - e->count;
            e->live = !e->dead && Py_REFCNT(e->obj) > 0;
            e->count = 0;
            if (!e->dead && _PyStorage_SharesEmptyKeys(e->obj)) {
                st->empty_keys--;     /* counted again after the undo */
            }
        }
    }
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
    Py_ssize_t off = Py_TYPE(e->obj)->tp_weaklistoffset;
    /* A weak reference still points to it: left to the next open. */
    return off <= 0 || *(PyObject **)((char *)e->obj + off) == NULL;
}

static int
release_push(release_state *rs, alloc_entry *e)
{
    if (rs->depth == rs->allocated) {
        size_t n = rs->allocated ? 2 * rs->allocated : 64;
        alloc_entry **s = PyMem_RawRealloc(rs->stack, n * sizeof(*s));
        if (s == NULL) {
            return -1;
        }
        rs->stack = s;
        rs->allocated = n;
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
        if (kind == _PyStorage_SLOT_OBJECT) {
            _PyPmem_AddStaticRef((PyObject *)v, -1);
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
        if (PyObject_IS_GC(e->obj) && PyObject_GC_IsTracked(e->obj)) {
            PyObject_GC_UnTrack(e->obj);
        }
        err = _PyStorage_VisitSlots(e->obj, release_slot, &rs) < 0;
        if (PyType_HasFeature(Py_TYPE(e->obj), Py_TPFLAGS_HEAPTYPE)) {
            Py_DECREF(Py_TYPE(e->obj));
        }
        _PyStorage_ForgetObject(e->obj);
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
    count_roots(p, st);
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
            if (!PyDict_CheckExact(e->obj) && !PyList_CheckExact(e->obj)
                && !PySet_CheckExact(e->obj)
                && !PyByteArray_CheckExact(e->obj)
                && PyObject_Hash(e->obj) == -1)
            {
                PyErr_Clear();
            }
        }
    }
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
    for (size_t i = 0; i <= st->mask; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->obj != NULL && e->dead != 2
            && _PyStorage_SharesEmptyKeys(e->obj))
        {
            st->empty_keys++;
        }
    }
    _PyStorage_AddEmptyKeysRefs(st->empty_keys);
    PyMem_RawFree(st->entries);
    PyMem_RawFree(st);
}

/* An open pass failed: nothing outside the pool holds its objects, so
   the pool is let go (unregistered, unmapped, its file unlocked), and the
   path can be opened again once the cause is fixed.  What the pass gave
   the interpreter stays given: references to the constants that the
   objects hold, and to the classes of the instances. */
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
    self->pop = NULL;
    self->root = NULL;
    self->closed = 1;
    Py_DECREF(self);              /* the range's reference */
}

static PyObject *
pool_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "create", "size", NULL};
    PyObject *path;
    int create = 1;
    Py_ssize_t size = POOL_DEFAULT_SIZE;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|$pn:Pool", kwlist,
                                     PyUnicode_FSDecoder, &path, &create,
                                     &size)) {
        return NULL;
    }
    PoolObject *self = NULL;
    PyObject *key = NULL;
    PyObject *path_bytes = PyUnicode_EncodeFSDefault(path);
    if (path_bytes == NULL) {
        goto error;
    }
    PyObject *module = PyType_GetModuleByDef(type, &_PyPmem_ModuleDef);
    if (module == NULL) {
        goto error;
    }
    pmem_state *state = get_state(module);
    PyObject *error = Py_NewRef(state->PoolError);
    const char *cpath = PyBytes_AS_STRING(path_bytes);
    struct stat st;
    if (stat(cpath, &st) < 0) {
        if (errno != ENOENT || !create) {
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
            Py_DECREF(error);
            goto error;
        }
        if (size < (Py_ssize_t)PMEMOBJ_MIN_POOL) {
            PyErr_Format(PyExc_ValueError, "a pool has %zu bytes at least",
                         (size_t)PMEMOBJ_MIN_POOL);
            Py_DECREF(error);
            goto error;
        }
        if (_PyPmem_CreatePool(error, path, cpath, (size_t)size) < 0
            || stat(cpath, &st) < 0)
        {
            if (!PyErr_Occurred()) {
                PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
            }
            Py_DECREF(error);
            goto error;
        }
    }
    /* A pool this process has opened already: the same Pool. */
    char *real = realpath(cpath, NULL);
    if (real == NULL) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        Py_DECREF(error);
        goto error;
    }
    key = PyUnicode_DecodeFSDefault(real);
    free(real);
    if (key == NULL) {
        Py_DECREF(error);
        goto error;
    }
    PyObject *known = PyDict_GetItemWithError(state->pools, key);
    if (known != NULL || PyErr_Occurred()) {
        if (known != NULL && ((PoolObject *)known)->closed) {
            PyErr_Format(error, "pool %R was closed in this process; open "
                         "it again in a new process", path);
            known = NULL;
        }
        Py_DECREF(error);
        Py_XDECREF(path);
        Py_DECREF(path_bytes);
        Py_DECREF(key);
        return Py_XNewRef(known);
    }
    _PyPmem_WaitForLock(cpath);
    if (_PyPmem_CheckFile(error, path, cpath) < 0) {
        Py_DECREF(error);
        goto error;
    }
    PMEMobjpool *pop = pmemobj_open(cpath, POOL_LAYOUT);
    if (pop == NULL) {
        _PyPmem_OpenError(error, path, errno, pmemobj_errormsg());
        Py_DECREF(error);
        goto error;
    }
    if (_PyPmem_CheckRoot(error, path, pop, (size_t)st.st_size) < 0) {
        pmemobj_close(pop);
        Py_DECREF(error);
        goto error;
    }
    self = (PoolObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        pmemobj_close(pop);
        Py_DECREF(error);
        goto error;
    }
    self->pop = pop;
    self->type_codes = PyDict_New();
    self->classes = PyList_New(0);
    self->unresolved = PyDict_New();
    self->writer = PyThread_allocate_lock();
    if (self->type_codes == NULL || self->classes == NULL
        || self->unresolved == NULL || self->writer == NULL)
    {
        pmemobj_close(pop);
        self->pop = NULL;
        goto error;
    }
    self->root = pmemobj_direct(pmemobj_root(pop, sizeof(struct pool_root)));
    self->size = (size_t)st.st_size;
    self->error = Py_NewRef(error);
    self->path = Py_NewRef(path);
    if (_PyPmem_RegisterClasses(self) < 0) {
        pmemobj_close(pop);
        self->pop = NULL;
        Py_DECREF(error);
        goto error;
    }
    Py_CLEAR(self->path);
    Py_CLEAR(self->error);
    self->opener = getpid();
    self->dev = st.st_dev;
    self->ino = st.st_ino;
    self->path = path;
    self->error = error;
    path = NULL;
    PyOS_snprintf(self->name, sizeof(self->name), "pool %s",
                  PyUnicode_AsUTF8(self->path));
    self->sm = (PyStorageManager){
        .name = self->name,
        .flags = PyStorage_PERSISTENT,
        .alloc = _PyPmem_Alloc,
        .realloc = _PyPmem_Realloc,
        .free = _PyPmem_Free,
        .begin = _PyPmem_Begin,
        .end = _PyPmem_End,
        .modify = _PyPmem_Modify,
        .collectable = _PyPmem_Collectable,
    };
    if (PyDict_SetItem(state->pools, key, (PyObject *)self) < 0) {
        goto error;
    }
    /* The fork handlers copy it: its path, as a C string that stays. */
    PyObject *real_bytes = PyUnicode_EncodeFSDefault(key);
    self->cpath = real_bytes == NULL
                  ? NULL : _PyMem_RawStrdup(PyBytes_AS_STRING(real_bytes));
    Py_XDECREF(real_bytes);
    if (self->cpath == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        self->closed = 1;
        goto error;
    }
    if (_PyPmem_WatchForks() < 0) {
        self->closed = 1;
        goto error;
    }
    self->next_open = _PyPmem_OpenPools;
    _PyPmem_OpenPools = self;
    if (PyStorage_AddRange(&self->sm, pop, self->size) < 0) {
        /* Mapped, known, and never used. */
        self->closed = 1;
        goto error;
    }
    /* The range's reference, never given back: the manager (self->sm)
       must outlive every object of the pool, even those that the
       interpreter's finalization frees after this module is gone. */
    Py_INCREF(self);
    if (_PyPmem_OpenPass(self) < 0) {
        forget_pool(self, state->pools, key);
        goto error;
    }
    Py_DECREF(key);
    Py_DECREF(path_bytes);
    return (PyObject *)self;

error:
    Py_XDECREF(key);
    Py_XDECREF(path);
    Py_XDECREF(path_bytes);
    Py_XDECREF(self);
    return NULL;
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
    PyMem_RawFree(self->cpath);
    Py_XDECREF(self->path);
    Py_XDECREF(self->error);
    Py_XDECREF(self->type_codes);
    Py_XDECREF(self->classes);
    Py_XDECREF(self->unresolved);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

int
_PyPmem_CheckOpen(PoolObject *self)
{
    if (self->closed) {
        PyErr_Format(self->error, "pool %R is closed", self->path);
        return -1;
    }
    return 0;
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
    if (e->key == NULL || e->mark) {
        return 0;
    }
    e->mark = 1;
    if (kind == _PyStorage_SLOT_TABLE) {
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
        if (e->key != NULL && e->mark) {
            _PyPmem_SetRefcnt((PyObject *)v, Py_REFCNT((PyObject *)v) - 1);
        }
    }
    else {
        _PyPmem_AddStaticRef((PyObject *)v, -1);
    }
    return 0;
}

/* The objects of p (its tables are not counted); -1 with an exception
   set. */
static Py_ssize_t
count_objects(PoolObject *p)
{
    size_t n;
    alloc_item *items = _PyPmem_ListAllocations(p->pop, &n);
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

PyObject *
_PyPmem_Collect(PoolObject *self, PyObject *Py_UNUSED(ignored))
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
    repair_state *st = _PyPmem_RepairPrepare(self, 0, 0, 0);   /* the counts */
    if (st == NULL) {
        return PyErr_NoMemory();
    }
    mark_state ms = {.st = st};
    Py_ssize_t freed = -1;
    Py_ssize_t left = 0;          /* what the interpreter's collector left */
    for (size_t i = 0; i <= st->mask; i++) {
        left += st->entries[i].obj != NULL;
    }
    for (size_t i = 0; i <= st->mask; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->obj != NULL && e->dram > 0
            && gc_mark_slot((void **)&e->obj, _PyStorage_SLOT_OBJECT,
                            &ms) < 0)
        {
            goto done;
        }
    }
    uint64_t roots[] = {self->root->namespace, self->root->types};
    for (int k = 0; k < 2; k++) {
        PyObject *held = roots[k] ? (PyObject *)(st->lo + roots[k]) : NULL;
        if (held != NULL
            && gc_mark_slot((void **)&held, _PyStorage_SLOT_OBJECT, &ms) < 0)
        {
            goto done;
        }
    }
    while (ms.depth > 0) {
        if (_PyStorage_VisitSlots(ms.stack[--ms.depth], gc_mark_slot,
                                  &ms) < 0)
        {
            goto done;
        }
    }
    freed = 0;
    for (size_t i = 0; i <= st->mask; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->obj != NULL && !e->mark) {
            (void)_PyStorage_VisitSlots(e->obj, gc_release_slot, st);
            if (PyObject_IS_GC(e->obj) && PyObject_GC_IsTracked(e->obj)) {
                PyObject_GC_UnTrack(e->obj);
            }
            if (PyType_HasFeature(Py_TYPE(e->obj), Py_TPFLAGS_HEAPTYPE)) {
                Py_DECREF(Py_TYPE(e->obj));
            }
            if (_PyStorage_SharesEmptyKeys(e->obj)) {
                _PyStorage_AddEmptyKeysRefs(-1);
            }
            _PyStorage_ForgetObject(e->obj);
            freed++;
        }
    }
    for (size_t i = 0; i <= st->mask; i++) {
        alloc_entry *e = &st->entries[i];
        if (e->key != NULL && !e->mark) {
            PMEMoid dead = pmemobj_oid(e->block);
            pmemobj_free(&dead);
        }
    }
done:
    PyMem_RawFree(ms.stack);
    PyMem_RawFree(st->entries);
    PyMem_RawFree(st);
    return (freed < 0 ? PyErr_NoMemory()
            : PyLong_FromSsize_t(Py_MAX(before - left, 0) + freed));
}

/* --- methods ------------------------------------------------------------- */

static PyObject *
pool_unresolved(PoolObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyDict_Copy(self->unresolved);
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
    alloc_item *items = _PyPmem_ListAllocations(p->pop, &n);
    PyObject **sets = items == NULL
                      ? NULL : PyMem_RawMalloc((n + 1) * sizeof(*sets));
    if (sets == NULL) {
        PyMem_RawFree(items);
        return -1;
    }
    size_t nsets = 0;
    for (size_t i = 0; i < n; i++) {
        PyTypeObject *type = _PyPmem_TypeOfCode(items[i].code);
        items[i].block = type == NULL
                         ? NULL : items[i].block + PyStorage_PreHeaderSize(type);
        if (type == &PyFrozenSet_Type) {
            sets[nsets++] = (PyObject *)items[i].block;
        }
    }
    int ok = _PyPmem_Begin(&p->sm) == 0;
    if (ok) {
        ok = _PyStorage_RehashFrozenSets(sets, nsets) == 0;
        for (size_t i = 0; i < n && ok; i++) {
            uint64_t code = items[i].code;
            if ((code == POOL_DICT || code == POOL_SET
                 || code == POOL_FROZENSET)
                && _PyStorage_Rehash((PyObject *)items[i].block) < 0)
            {
                ok = 0;
            }
        }
        ok = _PyPmem_End(&p->sm, ok) == 0 && ok;
    }
    PyMem_RawFree(sets);
    PyMem_RawFree(items);
    return ok ? 0 : -1;
}

PyObject *
_PyPmem_Resolve(PoolObject *self, PyObject *Py_UNUSED(ignored))
{
    if (PyDict_GET_SIZE(self->unresolved) == 0) {
        return PyList_New(0);
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
    PyObject *pmem = PyImport_ImportModule("pmem");
    PyObject *base = pmem == NULL
                     ? NULL : PyObject_GetAttrString(pmem, "Placeholder");
    Py_XDECREF(pmem);
    PyObject *found = PyList_New(0);
    PyObject *names = PyDict_New();      /* {name: class} resolved */
    if (base == NULL || found == NULL || names == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < ntypes; i++) {
        PyObject *now = PyList_GET_ITEM(self->classes, i);
        if (now == Py_None || !PyType_Check(now) || !PyType_Check(base)
            || !PyType_IsSubtype((PyTypeObject *)now, (PyTypeObject *)base))
        {
            continue;             /* unused, or a class */
        }
        PyObject *entry = PyList_GET_ITEM(table, i);
        Py_ssize_t length = PyUnicode_GET_LENGTH(entry);
        Py_ssize_t space = PyUnicode_FindChar(entry, ' ', 0, length, 1);
        if (space < 0) {
            continue;             /* no layout: a class, or unused */
        }
        PyObject *name = PyUnicode_Substring(entry, 0, space);
        if (name == NULL) {
            goto error;
        }
        int waits = PyDict_Contains(self->unresolved, name);
        PyObject *cls = NULL;
        if (waits == 1) {
            /* Still missing: the reason it had at the open stays. */
            PyObject *layout = PyUnicode_Substring(entry, space + 1, length);
            PyObject *reason = NULL;
            cls = layout == NULL
                  ? NULL : class_with_layout(name, layout, &reason);
            Py_XDECREF(layout);
            Py_XDECREF(reason);
        }
        PyObject *pair = cls == NULL ? NULL : Py_BuildValue("nO", i, cls);
        int r = (waits < 0 || PyErr_Occurred() || (cls != NULL && (
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
                        ? NULL : _PyPmem_ListAllocations(self->pop, &n);
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
    for (Py_ssize_t i = 0; result != NULL && i < PyList_GET_SIZE(result);
         i++)
    {
        if (PyDict_DelItem(self->unresolved,
                           PyList_GET_ITEM(result, i)) < 0)
        {
            Py_CLEAR(result);
        }
    }
    /* The tables that hold them as keys, for their new hashes. */
    if (result != NULL && rehash && rehash_tables(self) < 0) {
        Py_CLEAR(result);
    }
    if (result != NULL && PyList_Sort(result) < 0) {
        Py_CLEAR(result);
    }
    Py_DECREF(base);
    Py_DECREF(found);
    Py_DECREF(names);
    return result;
error:
    Py_XDECREF(base);
    Py_XDECREF(found);
    Py_XDECREF(names);
    return NULL;
}

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
    if (_PyPmem_Begin(&self->sm) < 0) {
        if (nested) {
            self->nsavepoints--;
        }
        return -1;
    }
    return 0;
}

static PyObject *
pool_begin_meth(PoolObject *self, PyObject *Py_UNUSED(ignored))
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
    if (self->nsavepoints > 0 && _PyPmem_InMyTransaction(self)
        && self->savepoints[self->nsavepoints - 1].depth == self->depth)
    {
        _PyPmem_SavepointPop(self, commit);
        commit = 1;               /* what is left joins the outer block */
    }
    return _PyPmem_End(&self->sm, commit);
}

static PyObject *
pool_end_meth(PoolObject *self, PyObject *ok)
{
    int commit = PyObject_IsTrue(ok);
    if (commit < 0 || pool_end_block(self, commit) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* `with pool:` -- a transaction, or a savepoint inside one. */
static PyObject *
pool_enter(PoolObject *self, PyObject *Py_UNUSED(ignored))
{
    return pool_begin_block(self) < 0 ? NULL : Py_NewRef(self);
}

static PyObject *
pool_exit(PoolObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!_PyArg_CheckPositional("__exit__", nargs, 3, 3)) {
        return NULL;
    }
    /* Committed when the block did not raise; never suppresses. */
    if (pool_end_block(self, args[0] == Py_None) < 0) {
        return NULL;
    }
    Py_RETURN_FALSE;
}

static PyObject *
pool_close(PoolObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->depth > 0) {
        PyErr_Format(self->error, "pool %R cannot close inside one of its "
                     "transactions", self->path);
        return NULL;
    }
    if (!self->closed && !self->forked) {
        /* The objects stay readable; the file and its lock are let go. */
        (void)_PyPmem_MakePrivate(self);
    }
    self->closed = 1;
    Py_RETURN_NONE;
}

/* type(*args, **kwargs) made in pool.  In C, with the vectorcall's own
   argument array: a value passed here is held by the caller and by the
   call's tuple only, as the store rule expects of a call (a Python
   wrapper would hold it once more, and an unshared list in
   PersistentDict(pool, {"a": []}) would look shared). */
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
    if (PyStorage_PushPlacement(&pool->sm) < 0) {
        return NULL;
    }
    PyObject *obj = PyObject_Vectorcall(type, args, nargs, kwnames);
    (void)PyStorage_PopPlacement(&pool->sm);
    return obj;
}

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

/* A container that the root holds (the namespace, the type table), made
   on first use.  A new reference, or NULL with an exception set. */
PyObject *
_PyPmem_RootContainer(PoolObject *self, uint64_t *field, PyObject *(*make)(void))
{
    if (_PyPmem_CheckOpen(self) < 0) {
        return NULL;
    }
    char *base = (char *)self->pop;
    if (*field != 0) {
        return Py_NewRef((PyObject *)(base + *field));
    }
    if (_PyPmem_Begin(&self->sm) < 0) {
        return NULL;
    }
    PyObject *obj = NULL;
    if (PyStorage_PushPlacement(&self->sm) == 0) {
        obj = make();
        (void)PyStorage_PopPlacement(&self->sm);
    }
    if (obj != NULL && _PyPmem_Modify(&self->sm, field, sizeof(*field)) == 0) {
        /* The root's reference: it lives as long as the pool. */
        *field = (uint64_t)((char *)obj - base);
        Py_INCREF(obj);
    }
    else {
        Py_CLEAR(obj);
    }
    if (_PyPmem_End(&self->sm, obj != NULL) < 0) {
        Py_CLEAR(obj);
    }
    return obj;
}

static PyObject *
new_list(void)
{
    return PyList_New(0);
}

/* The pool's namespace dict, made on first use. */
PyObject *
_PyPmem_PoolNamespace(PoolObject *self, PyObject *Py_UNUSED(ignored))
{
    return _PyPmem_RootContainer(self, &self->root->namespace, PyDict_New);
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
    if (name == NULL || _PyPmem_Begin(&p->sm) < 0) {
        Py_XDECREF(name);
        return -1;
    }
    PyObject *types = _PyPmem_RootContainer(p, &p->root->types, new_list);
    int r = types == NULL ? -1 : PyList_Append(types, name);
    Py_XDECREF(types);
    Py_DECREF(name);
    return _PyPmem_End(&p->sm, r == 0) < 0 ? -1 : r;
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
   codes that this process gives their instances stay right. */
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
    restoring = 0;
}

static PyObject *
pool_stats(PoolObject *self, PyObject *Py_UNUSED(ignored))
{
    if (_PyPmem_CheckOpen(self) < 0) {
        return NULL;
    }
    size_t n;
    alloc_item *items = _PyPmem_ListAllocations(self->pop, &n);
    if (items == NULL) {
        return NULL;
    }
    /* Counts and bytes by type code: the builtins', then one per class
       (POOL_INSTANCE + i), then what no class of this process has. */
    size_t nbuiltin = Py_ARRAY_LENGTH(_PyPmem_BuiltinTypes);
    size_t nrows = nbuiltin + (size_t)PyList_GET_SIZE(self->classes) + 1;
    Py_ssize_t (*rows)[2] = PyMem_RawCalloc(nrows, sizeof(*rows));
    if (rows == NULL) {
        PyMem_RawFree(items);
        return PyErr_NoMemory();
    }
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        size_t size = pmemobj_alloc_usable_size(pmemobj_oid(items[i].block));
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
        const char *name = row == POOL_TABLE ? "(tables)"
            : row < nbuiltin ? _PyPmem_BuiltinTypes[row]->tp_name
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
    /* Free: what the allocations leave of the file (libpmemobj's own
       metadata is not counted: an upper bound). */
    return Py_BuildValue("{sn sn sn sn sn sN}", "objects", objects,
                         "tables", tables, "bytes_used", (Py_ssize_t)used,
                         "bytes_free", (Py_ssize_t)(self->size - used),
                         "pool_size", (Py_ssize_t)self->size,
                         "by_type", by_type);
}

static PyObject *
pool_get_closed(PoolObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
pool_get_depth(PoolObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->depth);
}

static PyMethodDef pool_methods[] = {
    {"begin", (PyCFunction)pool_begin_meth, METH_NOARGS,
     "Begin an atomic operation (a transaction); they nest."},
    {"end", (PyCFunction)pool_end_meth, METH_O,
     "end(ok): end the innermost begin(); the outermost commits when ok "
     "is true and aborts otherwise."},
    {"__enter__", (PyCFunction)pool_enter, METH_NOARGS,
     "Begin a transaction (`with pool:`); nested, a savepoint."},
    {"__exit__", (PyCFunction)(void(*)(void))pool_exit, METH_FASTCALL,
     "Commit the block, or undo it when it raised."},
    {"close", (PyCFunction)pool_close, METH_NOARGS,
     "End the pool's use in this process: its objects can be read, "
     "not changed, and another process can open the pool."},
    {"new", (PyCFunction)(void(*)(void))pool_new_object,
     METH_FASTCALL | METH_KEYWORDS,
     "new(type, /, *args, **kwargs): type(*args, **kwargs), made in the "
     "pool."},
    {"namespace", (PyCFunction)_PyPmem_PoolNamespace, METH_NOARGS,
     "The pool's root namespace, a dict in the pool."},
    {"gc", (PyCFunction)_PyPmem_Collect, METH_NOARGS,
     "Free the objects that neither the pool's root nor this process "
     "reaches (after a collection of the interpreter's garbage, unless "
     "gc.disable() stopped it); return how many of the pool's objects "
     "were freed."},
    {"unresolved", (PyCFunction)pool_unresolved, METH_NOARGS,
     "{'module:qualname': reason} of the classes whose instances are "
     "placeholders (pmem.Placeholder) in this process: not found, not a "
     "class a pool can hold, or of another layout."},
    {"resolve", (PyCFunction)_PyPmem_Resolve, METH_NOARGS,
     "Look again for the classes of unresolved(): the instances of each "
     "one found with the layout that the pool recorded become its "
     "instances.  The names resolved, sorted."},
    {"stats", (PyCFunction)pool_stats, METH_NOARGS,
     "Allocations and bytes in use."},
    {NULL}
};

static PyMemberDef pool_members[] = {
    {"path", T_OBJECT, offsetof(PoolObject, path), READONLY, NULL},
    {"size", T_PYSSIZET, offsetof(PoolObject, size), READONLY, NULL},
    {NULL}
};

static PyObject *
pool_get_base(PoolObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromVoidPtr(self->pop);
}

static PyGetSetDef pool_getset[] = {
    {"base", (getter)pool_get_base, NULL,
     "The address the pool is mapped at.", NULL},
    {"closed", (getter)pool_get_closed, NULL, NULL, NULL},
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
    {Py_tp_doc, "Pool(path, *, create=True, size=64 MiB): a libpmemobj "
                "pool, mapped, and the storage manager of its memory."},
    {0, NULL}
};

static PyType_Spec _PyPmem_PoolSpec = {
    .name = "_pmem.Pool",
    .basicsize = sizeof(PoolObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE
              | Py_TPFLAGS_IMMUTABLETYPE),
    .slots = pool_slots,
};


/* --- the namespace ------------------------------------------------------- */

/* pool.ns: attribute access to the namespace dict.  In C, so that a
   store reaches the dict's hook holding only the caller's reference to
   the value: pool.ns.accounts = dict() moves the new dict in. */
typedef struct {
    PyObject_HEAD
    PoolObject *pool;
} NamespaceObject;

static PyObject *
namespace_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *pool;
    if (!_PyArg_NoKeywords("Namespace", kwds)
        || !PyArg_UnpackTuple(args, "Namespace", 1, 1, &pool))
    {
        return NULL;
    }
    PyObject *module = PyType_GetModuleByDef(type, &_PyPmem_ModuleDef);
    if (module == NULL) {
        return NULL;
    }
    if (!PyObject_TypeCheck(pool, get_state(module)->PoolType)) {
        PyErr_SetString(PyExc_TypeError, "Namespace(pool): a Pool");
        return NULL;
    }
    NamespaceObject *self = (NamespaceObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->pool = (PoolObject *)Py_NewRef(pool);
    }
    return (PyObject *)self;
}

static void
namespace_dealloc(NamespaceObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_XDECREF(self->pool);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
namespace_getattro(NamespaceObject *self, PyObject *name)
{
    PyObject *ns = _PyPmem_PoolNamespace(self->pool, NULL);
    if (ns == NULL) {
        return NULL;
    }
    PyObject *value;
    if (PyUnicode_Check(name)
        && PyUnicode_CompareWithASCIIString(name, "__dict__") == 0)
    {
        return ns;
    }
    value = Py_XNewRef(PyDict_GetItemWithError(ns, name));
    Py_DECREF(ns);
    if (value != NULL || PyErr_Occurred()) {
        return value;
    }
    /* __class__, __dir__ and the other attributes of every object. */
    return PyObject_GenericGetAttr((PyObject *)self, name);
}

static int
namespace_setattro(NamespaceObject *self, PyObject *name, PyObject *value)
{
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "attribute name must be string, "
                     "not '%.200s'", Py_TYPE(name)->tp_name);
        return -1;
    }
    PyObject *ns = _PyPmem_PoolNamespace(self->pool, NULL);
    if (ns == NULL) {
        return -1;
    }
    int r;
    if (value != NULL) {
        r = PyDict_SetItem(ns, name, value);
    }
    else {
        r = PyDict_DelItem(ns, name);
        if (r < 0 && PyErr_ExceptionMatches(PyExc_KeyError)) {
            PyErr_Format(PyExc_AttributeError, "pool namespace has no "
                         "attribute '%U'", name);
        }
    }
    Py_DECREF(ns);
    return r;
}

static PyObject *
namespace_dir(NamespaceObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *ns = _PyPmem_PoolNamespace(self->pool, NULL);
    if (ns == NULL) {
        return NULL;
    }
    PyObject *keys = PyDict_Keys(ns);
    Py_DECREF(ns);
    if (keys != NULL && PyList_Sort(keys) < 0) {
        Py_CLEAR(keys);
    }
    return keys;
}

static PyObject *
namespace_repr(NamespaceObject *self)
{
    return PyUnicode_FromFormat("<pmem namespace of %R>", self->pool->path);
}

static PyMethodDef namespace_methods[] = {
    {"__dir__", (PyCFunction)namespace_dir, METH_NOARGS, NULL},
    {NULL}
};

static PyType_Slot namespace_slots[] = {
    {Py_tp_new, namespace_new},
    {Py_tp_dealloc, namespace_dealloc},
    {Py_tp_getattro, namespace_getattro},
    {Py_tp_setattro, namespace_setattro},
    {Py_tp_methods, namespace_methods},
    {Py_tp_repr, namespace_repr},
    {Py_tp_doc, "Namespace(pool): the pool's named objects, as "
                "attributes."},
    {0, NULL}
};

static PyType_Spec _PyPmem_NamespaceSpec = {
    .name = "_pmem.Namespace",
    .basicsize = sizeof(NamespaceObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = namespace_slots,
};


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
    Py_DECREF(path);
    if (pop == NULL) {
        PyErr_SetString(get_state(module)->PoolError, pmemobj_errormsg());
        return NULL;
    }
    struct pool_root *root = pmemobj_direct(
        pmemobj_root(pop, sizeof(struct pool_root)));
    root->format = version;
    pmemobj_persist(pop, &root->format, sizeof(root->format));
    pmemobj_close(pop);
    Py_RETURN_NONE;
}

/* The Pool that obj lives in, or None. */
static PyObject *
storage_of(PyObject *module, PyObject *obj)
{
    PyStorageManager *sm = PyStorage_Of(obj);
    if (sm->alloc == _PyPmem_Alloc) {
        return Py_NewRef((PyObject *)POOL(sm));
    }
    Py_RETURN_NONE;
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
     "storage_of(obj): the Pool that obj lives in, or None (DRAM)."},
    {"_set_format_version", set_format_version, METH_VARARGS,
     "For tests: _set_format_version(path, version)."},
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

static struct PyModuleDef _PyPmem_ModuleDef = {
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
