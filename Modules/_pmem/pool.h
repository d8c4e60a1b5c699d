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
 *   begin/end            one transaction for the outermost operation;
 *                        nested operations join it, a nested `with pool:`
 *                        is a savepoint (_PyPmem_SavepointPush())
 *   modify               the pool's undo log (log.c)
 *
 * The functions are libpmemobj's failure-return ones (no setjmp, no
 * abort of the process): every failure becomes a Python exception.
 *
 * Opening runs the open pass (_PyPmem_OpenPass(); Doc/pmem/design.rst)
 * over every allocation; an abort counts references around the undo log
 * (_PyPmem_RepairPrepare(), _PyPmem_RepairFinish()); pool.gc() frees what
 * neither the root nor DRAM reaches.
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
 *
 * The parts, one concern each, share pool.h:
 *
 *   heap.c        the allocations, and the transaction's lists of blocks
 *   file.c        the pool file: create, check, fork() and close(), the
 *                 root's containers, read-only opens
 *   types.c       type codes, the classes of instances, placeholders
 *   undo.c        the reference counts around an abort
 *   log.c         the undo log: transactions' atomicity and durability
 *   manager.c     the storage manager's hooks, transactions, savepoints
 *   openpass.c    the open pass
 *   poolobject.c  the Pool type, pool.gc()
 *   namespace.c   the Namespace type (pool.ns)
 *   mainns.c      __main__'s namespace in a pool (-X pmem)
 *   module.c      the module
 *   heapcheck.c   libpmemobj's heap metadata, checked in a child
 */

#ifndef Py_PMEM_POOL_H
#define Py_PMEM_POOL_H

#ifndef Py_BUILD_CORE_BUILTIN
#  define Py_BUILD_CORE_MODULE 1
#endif
#define PY_SSIZE_T_CLEAN

#include "Python.h"
#include "pycore_modsupport.h"    // _PyArg_CheckPositional()
#include "pycore_object.h"        // _Py_RefTotal (debug builds)
#include "pycore_setobject.h"     // _PySet_Dummy
#include "pycore_storagemap.h"    // _PyStorage_VisitSlots()
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
#define POOL_FORMAT 8
/* Format 3 has no type codes for range, slice and datetime's types, and
   no class over a builtin other than object in its type table; format 4
   none for OrderedDict; format 5 no log of its own (its transactions
   were libpmemobj's, which libpmemobj's open completes); format 6 no
   journal of stores (log.c); format 7 no runs of small objects (runs.c):
   a pool of format 3 to 7 is one of format 8, which an open records (an
   older build refuses it then, as it must: it would not know the new
   codes, nor undo a transaction that the log holds, nor redo the stores
   that the journal holds, nor find the objects in the runs). */
#define POOL_FORMAT_3 3
#define POOL_FORMAT_4 4
#define POOL_FORMAT_5 5
#define POOL_FORMAT_6 6
#define POOL_FORMAT_7 7
/* The last format of the builds on CPython 3.11: its objects have 3.11's
   layouts (str, int, instances), which this interpreter cannot read. */
#define POOL_FORMAT_PY311 2
#define POOL_DEFAULT_SIZE ((Py_ssize_t)64 << 20)

/* libpmemobj 1.12's pool header (PMDK's src/common/pool_hdr.h, struct
   pool_hdr): an 8-byte signature, the major version and three feature
   words (uint32), then the pool set's UUID, from which libpmemobj derives
   the identity of an open pool (pmemobj_get_uuid_lo(), in obj.h): it
   refuses to open a second pool of an identity in one process (obj.c,
   pools_ht), which a raw copy of a pool (cp) has.  The file's own UUID
   follows it, at 40. */
#define POOL_HDR_POOLSET_UUID 24
#define POOL_HDR_UUID_SIZE 16

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
    uint64_t refs;                /* the table of references (pool_ref
                                     records in a bytearray), or 0 */
    uint64_t log;                 /* the undo log's first chunk (log.c),
                                     or 0 until the first open makes it */
    uint64_t reserved[3];
};

/* A reference (types.c): an object outside the pool that every process
   finds by name and that lives as long as the process (an enum member,
   datetime.timezone.utc), which the pool's objects point to.  Its
   record, in the bytearray of root->refs, is followed by its name in
   UTF-8, padded to 8 bytes: "module:qualname.attr". */
struct pool_ref {
    uint64_t addr;                /* where the pointers to it point */
    uint64_t moving[3];           /* where opens that stopped were making
                                     them point, or 0 */
    uint64_t name_size;
};
#define POOL_REF_SIZE(name_size) \
    (sizeof(struct pool_ref) + (((name_size) + 7) & ~(uint64_t)7))

/* The objects that the root holds (namespace, types): the field of
   struct pool_root that has each one's offset, and the type it must have
   (_PyPmem_RootFields, _PyPmem_Root(), _PyPmem_VisitRoots()). */
#define POOL_NROOTS 3
struct pool_root_field {
    size_t offset;
    PyTypeObject *type;
};

/* The type number of an allocation: what the open pass will need to give
   the object its type again.  0 is a table (dict keys, list items...). */
enum {
    POOL_TABLE = 0,
    POOL_DICT, POOL_LIST, POOL_SET, POOL_FROZENSET, POOL_BYTEARRAY,
    POOL_TUPLE, POOL_INT, POOL_FLOAT, POOL_COMPLEX, POOL_STR, POOL_BYTES,
    /* The C value types, by their kind (_PyStorage_KindOf()): range,
       slice and datetime's (format 4). */
    POOL_KIND,
    POOL_KIND_END = POOL_KIND + _PyStorage_NKINDS,
    /* The runs of small objects (runs.c): each listed as its slots. */
    POOL_RUN = 1022,
    /* The chunks of the undo log (log.c), which the listings of the
       allocations leave out. */
    POOL_LOG = 1023,
    /* A user class: POOL_INSTANCE + its index in the pool's type table. */
    POOL_INSTANCE = 1024,
};

#define POOL_TOUCH_CACHE 64
#define POOL_RESERVE_BATCH 32
#define POOL_MADE_RECENT 16
#define POOL_MADE_MIN 256

/* An entry of the undo log (log.c): the range it saved, and where. */
struct pool_logged {
    char *addr;
    size_t size;
    struct log_entry *entry;
};

/* A range that the transaction logged (log.c). */
struct pool_seen {
    const char *addr;
    uint32_t size;
    uint32_t stamp;               /* valid when the pool's seen_stamp */
};

/* The allocation classes a pool allocates with (_PyPmem_RegisterClasses()). */
struct alloc_classes {
    uint8_t small[ALLOC_SMALL_MAX / 16 + 1];  /* by (bytes + 15) / 16 */
    uint8_t pages, chunks;        /* the multi-unit classes' ids */
    uint8_t runs;                 /* the class of runs.c's runs */
    size_t pages_max, chunks_max; /* and the largest block each makes */
};

/* The small objects' runs of a pool, in DRAM (runs.c). */
#define RUN_NCLASSES 32           /* slots of 16, 32, ... 512 bytes */
typedef struct run_state run_state;
struct pool_runs {
    run_state **by_chunk;         /* the run in each chunk of the heap */
    size_t nchunks;
    const char *chunks;           /* zone 0's first chunk */
    run_state *partial[RUN_NCLASSES + 1];  /* by slot size / 16: the runs
                                     with a free slot */
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
    PyMutex writer;               /* held by the thread in a transaction */
    int held;                     /* owner holds writer outside one
                                     (_PyPmem_Hold()) */
    unsigned long owner;          /* that thread, while depth > 0 */
    PyObject *type_codes;         /* {class: its type code} */
    PyObject *classes;            /* [class or None], by type table index */
    char **txfreed;               /* blocks freed by the transaction */
    size_t ntxfreed, txfreed_allocated;
    char **txmade;                /* blocks allocated by the transaction */
    size_t ntxmade, txmade_allocated;
    struct savepoint *savepoints; /* of the nested `with pool:` blocks */
    size_t nsavepoints, savepoints_allocated;
    char *undo;                   /* what changed since the first one */
    size_t undo_len, undo_allocated;
    int doomed;                   /* a nested block could not be undone */
    PyObject *path;               /* str */
    PyObject *error;              /* pmem.PoolError */
    struct alloc_classes classes_of_sizes;  /* what pool_xalloc() uses */
    struct pool_runs runs;        /* the small objects' (runs.c) */
    size_t failed_size;           /* an allocation that did not fit */
    /* The undo log (log.c) */
    struct log_chunk *log;        /* its first chunk */
    struct log_chunk *log_chunk;  /* the one the transaction writes in */
    size_t log_pos;               /* where in it the next entry goes */
    size_t log_chunks;            /* how many are linked */
    size_t log_capacity;          /* log_chunk's (kept in DRAM: the
                                     lines flushed are evicted) */
    size_t log_first_capacity;    /* the first chunk's */
    uint64_t log_generation;      /* the first chunk's generation */
    struct pool_logged *log_index;  /* the transaction's entries */
    size_t log_entries, log_index_allocated;
    struct pool_seen *seen;       /* the ranges they saved: a set */
    size_t seen_mask, nseen;
    uint32_t seen_stamp;
    int log_msync;                /* flushes are msync()s */
    int log_batch;                /* entries drained by _PyPmem_LogDrain() */
    int log_undrained;            /* and some are not yet */
    int nosync;                   /* durability="process": no flushes */
    const char *span_lo, *span_hi;  /* log_msync: what changed */
    /* The journal of stores (log.c) */
    struct log_chunk *journal;    /* its chunk, or NULL until needed */
    size_t journal_pos;           /* where the next entry goes */
    size_t journal_synced;        /* the entries before it are flushed */
    uint64_t journal_generation;
    void *mainns;                 /* __main__'s namespace (-X pmem), or
                                     NULL (mainns.c) */
    PyObject *refs;               /* {address: name} of the references in
                                     root->refs (types.c) */
    PyObject *ref_order;          /* [(address, name)], as recorded */
    /* What the transaction changed, for an undo that costs what it
       changed (undo.c): the objects that its operations began on, and
       the ranges that it logged.  When either grows past its limit, an
       undo counts the references of the whole pool (overflow). */
    PyObject **touched;
    size_t ntouched, touched_allocated;
    size_t touch_mark;            /* ntouched where the last savepoint
                                     began (touch_cache is valid above) */
    uint32_t touch_cache[POOL_TOUCH_CACHE];  /* indexes into touched */
    _PyStorage_Range *ranges;
    size_t nranges, ranges_allocated;
    int overflow;
    /* Blocks of the transaction reserved, not yet published (manager.c) */
    struct pobj_action reserved[POOL_RESERVE_BATCH];
    size_t nreserved;
    /* The last tables (blocks of POOL_MADE_MIN bytes or more) that the
       transaction made, whose changes need no undo log (manager.c) */
    _PyStorage_Range made[POOL_MADE_RECENT];
    size_t nmade;
    unsigned char uuid[POOL_HDR_UUID_SIZE];  /* its header's pool set UUID:
                                     libpmemobj's identity of the pool */
    int readonly;                 /* opened read-only in this process */
    int lock_fd;                  /* read-only: the file, holding its lock
                                     shared until close(), or -1 */
    int memfd;                    /* read-only: the private copy of the
                                     file that libpmemobj maps, or -1 */
} PoolObject;

#define POOL(sm) ((PoolObject *)((char *)(sm) - offsetof(PoolObject, sm)))

/* Limits of PoolObject.touched and .ranges (24 MiB of DRAM together),
   and the size of the cache that keeps an object from being recorded at
   each of its operations. */
#define POOL_TOUCHED_MAX ((size_t)1 << 20)
#define POOL_RANGES_MAX ((size_t)1 << 20)

/* A nested `with pool:` block: where its changes start. */
struct savepoint {
    int depth;                    /* p->depth inside the block */
    size_t undo_len;              /* p->undo_len at its start */
    size_t ntxfreed;              /* p->ntxfreed at its start */
    size_t ntxmade;               /* p->ntxmade at its start */
    size_t main_log;              /* _PyPmem_MainLogLength() at its start */
    Py_ssize_t moves;             /* _PyStorage_MovesMark() at its start */
    size_t ntouched;              /* p->ntouched at its start */
    size_t nranges;               /* p->nranges at its start */
    size_t touch_mark;            /* p->touch_mark at its start */
};

typedef struct {
    PyObject *PoolError;
    PyTypeObject *PoolType;
    PyTypeObject *NamespaceType;
    PyObject *pools;              /* {real path: Pool}, until let go */
} pmem_state;

extern struct PyModuleDef _PyPmem_ModuleDef;

static inline pmem_state *
get_state(PyObject *module)
{
    return (pmem_state *)PyModule_GetState(module);
}

/* The state of the module of type, one of the module's types or a
   subclass of one (Argument Clinic's code of a __new__ names it). */
static inline pmem_state *
get_state_by_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &_PyPmem_ModuleDef);
    assert(module != NULL);
    return get_state(module);
}

typedef struct open_state repair_state;

/* PyThread_get_thread_ident() without its call: on pthreads (the only
   threads libpmemobj runs on) it is pthread_self(), which p->owner holds.
   The hooks of a pool transaction test it about eight times per
   transaction (begin, end and modify), ~60 instructions of the bank
   benchmark's transfer. */
#ifdef _POSIX_THREADS
#  define current_thread() ((unsigned long)(uintptr_t)pthread_self())
#else
#  define current_thread() PyThread_get_thread_ident()
#endif

/* The pool whose transaction this thread is in, or NULL: set by the
   outermost begin, cleared by its end (manager.c), and in a forked
   child (file.c). */
#if defined(__GNUC__) && defined(__linux__)
   /* One load, not a call of __tls_get_addr() (the model of a variable
      of a module that is loaded later): the hooks test it about ten
      times a transaction, and glibc keeps room for a few such words. */
#  define POOL_TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#  define POOL_TLS_MODEL
#endif
extern _Py_thread_local PoolObject *_PyPmem_MyTransaction POOL_TLS_MODEL;

/* Is this thread inside a transaction of p? */
static inline int
_PyPmem_InMyTransaction(PoolObject *p)
{
    return _PyPmem_MyTransaction == p;
}

/* Every allocation of the pool, by the address that pointers to it hold
   (an object's, past its pre-header; a table's start): an array in DRAM
   in the order of the addresses, built once per open from the heap's
   listing (which comes in that order, _PyPmem_AllocTableBuild()), and
   found by address through an index of buckets (_PyPmem_FindAlloc()).
   The passes go through it in the order of memory.  Eight bytes an
   allocation: the key is an offset; the reference counts that the undo
   and pool.gc() take are in an array beside it (alloc_counts). */
typedef struct {
    uint64_t offset : 40;         /* key less the pool's start (st->lo), in
                                     8-byte units; 0: a free slot */
    uint64_t preheader : 8;       /* key less the allocation's start */
    uint64_t object : 1;          /* key is an object (else a table, or a
                                     block of a class this process lacks) */
    uint64_t mark : 1;            /* reachable from the root */
    uint64_t dead : 2;            /* freed by the transaction: 1, to be
                                     brought back; 2, before the savepoint
                                     undone (stays freed) */
    uint64_t live : 1;            /* referenced before the undo */
    uint64_t broken : 4;          /* what is wrong with its pointers: 0,
                                     or 1 + an index into the open_state's
                                     broken_why (_PyPmem_SetBroken()) */
} alloc_entry;                    /* an open of 10 million objects makes
                                     an array of 10 million */
_Static_assert(sizeof(alloc_entry) == 8, "an allocation's entry");

/* The references to an allocation, which the undo and pool.gc() count
   (st->counts, beside st->entries: the open pass sets the objects'
   counts as it marks them). */
typedef struct {
    Py_ssize_t count;             /* references from the pool */
    Py_ssize_t dram;              /* references from DRAM */
} alloc_counts;

#define ENTRY_USED(e) ((e)->offset != 0)
/* The address that pointers to e hold. */
#define ENTRY_KEY(st, e) ((st)->lo + ((size_t)(e)->offset << 3))
/* The object in e, or NULL for a table. */
#define ENTRY_OBJ(st, e) \
    ((e)->object ? (PyObject *)ENTRY_KEY(st, e) : NULL)
/* The start of e's allocation. */
#define ENTRY_BLOCK(st, e) (ENTRY_KEY(st, e) - (e)->preheader)
/* e's reference counts (a table made by _PyPmem_RepairPrepare()). */
#define ENTRY_COUNTS(st, e) (&(st)->counts[(e) - (st)->entries])

struct open_state {
    PoolObject *pool;
    alloc_entry *entries;         /* nentries, then an empty one (what
                                     _PyPmem_FindAlloc() stops at) */
    size_t nentries, nentries_allocated;
    alloc_counts *counts;         /* by entry, or NULL (the open pass) */
    uint32_t *index;              /* by bucket of index_base: the first
                                     entry whose block starts in it or
                                     after it */
    size_t nbuckets;
    char *index_base;
    unsigned index_shift;         /* log2 of a bucket's bytes */
    alloc_entry none;             /* what no address has: left empty */
    size_t count;
    /* Static pointers are made right for the binary whose None was at
       target, from the one whose None was at source (0: none). */
    char *source, *target;
    /* Pool pointers are moved to [lo, hi) from any of these bases. */
    char *old[5];
    char *lo, *hi;                /* the pool's range */
    /* References: pointers to from are made to point to to (sorted by
       from: _PyPmem_FindRef()). */
    struct ref_move {
        char *from, *to;
    } *ref_moves;
    size_t nref_moves;
    int dirty;                    /* static pointers were rewritten */
    char *run_lo, *run_hi;        /* the slots rewritten since the last
                                     flush (a run: flushed at once) */
    int undone;                   /* count_slot() runs after the undo */
    size_t made_from;             /* the undone blocks of p->txmade */
    Py_ssize_t keys_refs;         /* debug build: keys_refs() before it */
    const char *problem;          /* what the pass found wrong */
    const char *broken_why[8];    /* the kinds of what it found, which
                                     entries' broken index */
};
typedef struct open_state open_state;

/* Record the allocation at block in e, found for key (an object in it,
   when object, or its start). */
static inline void
_PyPmem_SetEntry(open_state *st, alloc_entry *e, char *key, char *block,
                 int object)
{
    assert(key >= block && key - block <= UINT8_MAX);
    assert(key > st->lo && ((key - st->lo) & 7) == 0);
    e->offset = (uint64_t)(key - st->lo) >> 3;
    e->preheader = (uint8_t)(key - block);
    e->object = object != 0;
}

/* An allocation of the pool and its type code, as _PyPmem_ListAllocations()
   lists them (for stats(), the type table and the debug checks; the open,
   the undo and gc() enter them in their table as they are listed). */
typedef struct {
    char *block;
    uint64_t code;
} alloc_item;

/* The entry of the allocation at key, or st->none (key NULL).  An
   entry's key lies in its block, past the block's start (the index's),
   so that at most the entry before the bucket's first can have a key in
   the bucket: the block that holds its start. */
static inline alloc_entry *
_PyPmem_FindAlloc(open_state *st, const void *key)
{
    const char *k = (const char *)key;
    if (k < st->index_base || k >= st->hi || ((k - st->lo) & 7) != 0
        || st->nentries == 0)
    {
        return &st->none;
    }
    uint64_t off = (uint64_t)(k - st->lo) >> 3;
    size_t b = (size_t)(k - st->index_base) >> st->index_shift;
    size_t i = b < st->nbuckets ? st->index[b] : st->nentries;
    while (i > 0 && st->entries[i - 1].offset >= off) {
        i--;
    }
    while (i < st->nentries && st->entries[i].offset < off) {
        i++;
    }
    return i < st->nentries && st->entries[i].offset == off
           ? &st->entries[i] : &st->none;
}

static inline alloc_entry *
_PyPmem_EntryOfObject(open_state *st, PyObject *op)
{
    alloc_entry *e = _PyPmem_FindAlloc(st, op);
    return e->object ? e : NULL;
}

/* What is wrong with e, a static string (the last kinds share one). */
static inline void
_PyPmem_SetBroken(open_state *st, alloc_entry *e, const char *why)
{
    size_t n = Py_ARRAY_LENGTH(st->broken_why), i = 0;
    while (i < n - 1 && st->broken_why[i] != NULL
           && st->broken_why[i] != why)
    {
        i++;
    }
    st->broken_why[i] = why;
    e->broken = (uint8_t)(i + 1);
}

static inline const char *
_PyPmem_Broken(open_state *st, alloc_entry *e)
{
    return e->broken == 0 ? NULL : st->broken_why[e->broken - 1];
}

/* Reference counts that the pool sets (it counts references that no
   Py_INCREF() took), in the debug build's total too.  The field is
   written as it is: Py_SET_REFCNT() leaves alone an object whose count
   looks immortal, which the last process's garbage may. */
static inline void
_PyPmem_SetRefcnt(PyObject *op, Py_ssize_t refcnt)
{
#ifdef Py_REF_DEBUG
    _Py_RefTotal += refcnt - Py_REFCNT(op);
#endif
    op->ob_refcnt = refcnt;
}

/* The one way a failing libpmemobj call raises: error, "what PATH: why",
   why being libpmemobj's message for its last failure (or errno's).  what
   ends where the path goes: "cannot create pool", "cannot begin a
   transaction in pool". */
static inline void
_PyPmem_SetError(PyObject *error, PyObject *path, const char *what)
{
    const char *msg = pmemobj_errormsg();
    PyErr_Format(error, "%s %R: %s", what, path,
                 msg != NULL && msg[0] != '\0' ? msg : strerror(errno));
}

/* The growable arrays (stacks, lists, logs) of the pool's passes: room
   for at least need items of size bytes in the array at *parray, which
   has room for *pallocated; the room doubles, from first.  0, or -1 when
   out of memory (no exception set, the array as it was). */
static inline int
_PyPmem_Reserve(void *parray, size_t *pallocated, size_t need, size_t size,
                size_t first)
{
    if (need <= *pallocated) {
        return 0;
    }
    size_t n = *pallocated ? *pallocated : first;
    while (n < need) {
        if (n > PY_SSIZE_T_MAX / 2 / size) {
            return -1;
        }
        n *= 2;
    }
    void *array;
    memcpy(&array, parray, sizeof(array));
    array = PyMem_RawRealloc(array, n * size);
    if (array == NULL) {
        return -1;
    }
    memcpy(parray, &array, sizeof(array));
    *pallocated = n;
    return 0;
}

/* Room for need items in array (a pointer variable), of allocated. */
#define _PyPmem_RESERVE(array, allocated, need, first) \
    _PyPmem_Reserve(&(array), &(allocated), (need), sizeof(*(array)), \
                    (first))

/* Whether op holds no pointer that a mark follows (_PyStorage_VisitSlots()
   visits nothing): the values that most objects of a big pool are, which
   the marks do not push (a dict of a million entries would push two
   million). */
static inline int
_PyPmem_IsLeaf(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    return (tp == &PyUnicode_Type || tp == &PyLong_Type
            || tp == &PyFloat_Type || tp == &PyBytes_Type
            || tp == &PyComplex_Type);
}

typedef struct {
    open_state *st;
    alloc_entry *bad;             /* a reachable object found broken */
    size_t marked;                /* objects marked (the progress) */
    PyObject **stack;
    size_t depth, allocated;
} mark_state;

extern PoolObject *_PyPmem_OpenPools;   /* linked by next_open */
extern PyTypeObject *const _PyPmem_BuiltinTypes[POOL_BYTES + 1];
extern PyType_Spec _PyPmem_PoolSpec, _PyPmem_NamespaceSpec;
extern const struct pool_root_field _PyPmem_RootFields[POOL_NROOTS];

/* The parts, from the bottom up: each calls only those above it in this
   list (and the manager's hooks through PoolObject.sm). */

/* heap.c: the allocations, the root's objects, letting go of garbage,
   and the transaction's lists of blocks */
extern PyObject *_PyPmem_ProgressFunc;
void _PyPmem_ReportProgress(const char *what, size_t done, size_t total);

/* A long pass has done done items of total, in its step what: told to
   the progress callable, if any, every 65536 items and at the end. */
static inline void
_PyPmem_Progress(const char *what, size_t done, size_t total)
{
    if (_PyPmem_ProgressFunc != NULL
        && ((done & 0xFFFF) == 0 || done == total))
    {
        _PyPmem_ReportProgress(what, done, total);
    }
}
alloc_item *_PyPmem_ListAllocations(PoolObject *p, size_t *pn);
alloc_item *_PyPmem_ListByLibpmemobj(PoolObject *p, size_t *pn);
/* visit(block, type_num, arg) for each allocation of p, as libpmemobj
   lists them (where _PyPmem_WalkHeap() does not know the metadata): 0,
   visit's first nonzero result, or -1 with PoolError set (a cycle). */
int _PyPmem_ForEachByLibpmemobj(PoolObject *p, _PyPmem_BlockVisitor visit,
                                void *arg);
int _PyPmem_FreeSpace(PoolObject *p, size_t *pfree, size_t *plargest);
int _PyPmem_RegisterClasses(PoolObject *p);
uint64_t _PyPmem_ClassFlags(PoolObject *p, size_t size);
void _PyPmem_Publish(PoolObject *p, struct pobj_action *acts, size_t n);
int _PyPmem_AllocTableBuild(open_state *st, PoolObject *p);
void _PyPmem_AllocTableFree(open_state *st);
int _PyPmem_MarkPush(mark_state *ms, PyObject *op);
PyObject *_PyPmem_Root(PoolObject *p, char *lo, int index);
int _PyPmem_VisitRoots(PoolObject *p, char *lo, _PyStorage_SlotVisitor visit,
                       void *arg);
int _PyPmem_LetGo(PyObject *op, _PyStorage_SlotVisitor release, void *arg);
int _PyPmem_RoomForFree(PoolObject *p);
int _PyPmem_RecordFree(PoolObject *p, char *block);
int _PyPmem_RecordMade(PoolObject *p, char *block);

/* file.c: the pool file, fork() and close(), the root's containers */
void _PyPmem_RefuseChange(PoolObject *p);
int _PyPmem_CheckOpen(PoolObject *self);
int _PyPmem_MakePrivate(PoolObject *p);
int _PyPmem_WatchForks(void);
int _PyPmem_CreatePool(PyObject *error, PyObject *path, const char *cpath,
                       size_t size);
void _PyPmem_OpenError(PyObject *error, PyObject *path, int err,
                       const char *msg);
void _PyPmem_WaitForLock(const char *cpath);
int _PyPmem_CheckFile(PyObject *error, PyObject *path, const char *cpath);
int _PyPmem_ReadIdentity(const char *cpath, struct stat *st,
                         unsigned char *uuid);
int _PyPmem_SamePool(PoolObject *p, const struct stat *st,
                     const unsigned char *uuid);
int _PyPmem_CheckIdentity(PyObject *error, PyObject *path,
                          const char *cpath);
PMEMobjpool *_PyPmem_OpenFile(PyObject *error, PyObject *path,
                              const char *cpath, size_t size);
PMEMobjpool *_PyPmem_OpenSnapshot(PyObject *error, PyObject *path,
                                  const char *cpath, size_t size,
                                  int *plock_fd, int *pmemfd);
void _PyPmem_CloseFiles(PoolObject *p);
int _PyPmem_CheckRoot(PyObject *error, PyObject *path, PMEMobjpool *pop,
                      size_t size);
PyObject *_PyPmem_RootContainer(PoolObject *self, uint64_t *field,
                                PyObject *(*make)(void));

/* types.c: type codes, the classes of instances, references */
PyTypeObject *_PyPmem_TypeOfCode(uint64_t code);
PyObject *_PyPmem_ClassOfEntry(PoolObject *p, PyObject *entry);
PyTypeObject *_PyPmem_ClassOfCode(PoolObject *p, uint64_t code);
PyObject *_PyPmem_Unresolved(PoolObject *self);
PyObject *_PyPmem_Resolve(PoolObject *self);
uint64_t _PyPmem_TypeCode(PoolObject *p, PyTypeObject *type);
void _PyPmem_WatchClasses(void);
void _PyPmem_RestoreTypeTable(PoolObject *p);
int _PyPmem_Refer(PyStorageManager *sm, PyObject *obj, PyObject *name);
int _PyPmem_ReadRefs(open_state *st, PyObject *table);
void _PyPmem_RefsMoved(open_state *st);
char *_PyPmem_FindRef(open_state *st, char *from);
int _PyPmem_IsRef(PoolObject *p, const void *v);

/* undo.c: the reference counts around an abort */
typedef struct undo_state undo_state;
undo_state *_PyPmem_UndoPrepare(PoolObject *p, const struct savepoint *sp);
void _PyPmem_UndoFinish(PoolObject *p, undo_state *u);
repair_state *_PyPmem_RepairPrepare(PoolObject *p, size_t from,
                                    size_t made_from);
void _PyPmem_RepairFinish(PoolObject *p, repair_state *st);

/* runs.c: small objects, in runs of slots of one size */
struct run_state {
    char *slots;                  /* the first */
    uint16_t *codes;              /* on the media: each slot's type code
                                     + 1, or 0 for a free slot */
    uint32_t slot_size, nslots, nfree;
    uint32_t hint;                /* no free slot in free[] before it */
    run_state *next;              /* in p->runs.partial (where a run is
                                     while it has a free slot) */
    uint64_t free[];              /* bit i of word i / 64: slot i free */
};

/* A run fills one chunk of the heap (runs.c). */
#define RUN_CHUNK ((size_t)_PyPmem_CHUNK_SIZE)

/* The run that ptr of p lies in, or NULL. */
static inline run_state *
_PyPmem_RunOf(PoolObject *p, const void *ptr)
{
    size_t chunk = (size_t)((const char *)ptr - p->runs.chunks) / RUN_CHUNK;
    return chunk < p->runs.nchunks ? p->runs.by_chunk[chunk] : NULL;
}

/* The index of the slot of r at block. */
static inline uint32_t
_PyPmem_SlotOf(const run_state *r, const void *block)
{
    return (uint32_t)((size_t)((const char *)block - r->slots)
                      / r->slot_size);
}

extern int _PyPmem_UseRuns;       /* 0: libpmemobj allocates all (tests) */
int _PyPmem_RunsOpen(PoolObject *p);
void _PyPmem_RunsForget(PoolObject *p);
int _PyPmem_ListRun(PoolObject *p, char *block,
                    int (*add)(char *slot, uint64_t code, void *arg),
                    void *arg);
char *_PyPmem_RunAlloc(PoolObject *p, size_t size, uint64_t code);
void _PyPmem_RunFree(PoolObject *p, run_state *r, void *block);
/* Give p's runs that hold no object back to libpmemobj, for blocks of
   any size: how many. */
size_t _PyPmem_RunsRelease(PoolObject *p);
/* Flush the slot at block of r and its code; the code's line only when
   it is not *line, the last one flushed (0: none), which it becomes. */
void _PyPmem_FlushSlot(PoolObject *p, run_state *r, char *block,
                       uintptr_t *line);
/* The slot at block made durable with its code (unless p's durability
   is "process"). */
void _PyPmem_RunPersist(PoolObject *p, char *block);
/* The slots that p's transaction made, and their codes, made durable:
   an abort keeps those that a variable refers to. */
void _PyPmem_FlushMadeCodes(PoolObject *p);

/* The usable size of the allocation at block of p. */
static inline size_t
_PyPmem_BlockSize(PoolObject *p, const void *block)
{
    run_state *r = _PyPmem_RunOf(p, block);
    return r != NULL ? r->slot_size
                     : pmemobj_alloc_usable_size(pmemobj_oid(block));
}

/* The type code of the allocation at block of p. */
static inline uint64_t
_PyPmem_BlockCode(PoolObject *p, const void *block)
{
    run_state *r = _PyPmem_RunOf(p, block);
    return r != NULL ? (uint64_t)r->codes[_PyPmem_SlotOf(r, block)] - 1
                     : pmemobj_type_num(pmemobj_oid(block));
}

/* The bytes of the heap that the allocation at block of p takes: a
   slot's share of its run, or a block and libpmemobj's compact header. */
static inline double
_PyPmem_BlockCost(PoolObject *p, const void *block)
{
    run_state *r = _PyPmem_RunOf(p, block);
    return r != NULL ? (double)RUN_CHUNK / r->nslots
                     : (double)(pmemobj_alloc_usable_size(pmemobj_oid(block))
                                + 16);
}

/* Free the allocation at block of p now (atomically: a crash leaves it
   allocated or freed). */
static inline void
_PyPmem_BlockFree(PoolObject *p, void *block)
{
    run_state *r = _PyPmem_RunOf(p, block);
    if (r != NULL) {
        _PyPmem_RunFree(p, r, block);
    }
    else {
        PMEMoid oid = pmemobj_oid(block);
        pmemobj_free(&oid);
    }
}

/* log.c: the undo log */
int _PyPmem_LogOpen(PoolObject *p, int nosync);

/* [addr, addr + size) of p durable, unless p's durability is
   "process". */
static inline void
_PyPmem_Persist(PoolObject *p, const void *addr, size_t size)
{
    if (!p->nosync) {
        pmemobj_persist(p->pop, addr, size);
    }
}

/* Log [addr, addr + size) of p, durable before it returns; while
   p->log_batch is set, durable by the next _PyPmem_LogDrain(). */
int _PyPmem_LogAppend(PoolObject *p, const void *addr, size_t size);
void _PyPmem_LogDrain(PoolObject *p);
void _PyPmem_LogCommit(PoolObject *p, struct pobj_action *acts,
                       size_t before, size_t after);
void _PyPmem_LogUndo(PoolObject *p);
size_t _PyPmem_LogSize(PoolObject *p);
/* The most bytes of one store of the journal: an int of four digits
   with its tag. */
#define POOL_JOURNAL_MAX_STORE 24
int _PyPmem_JournalStore(PoolObject *p, void *addr, const void *data,
                         size_t size);
/* The journal's entries flushed, not drained: a store made durable
   after this is made so after them (with msync(), they are durable). */
void _PyPmem_JournalFlush(PoolObject *p);
void _PyPmem_JournalApply(PoolObject *p);

/* manager.c: the hooks of PoolObject.sm, transactions, savepoints */
int _PyPmem_Collectable(PyStorageManager *sm);
void *_PyPmem_Alloc(PyStorageManager *sm, size_t size, PyTypeObject *type);
void *_PyPmem_Realloc(PyStorageManager *sm, void *ptr, size_t size);
void _PyPmem_Free(PyStorageManager *sm, void *ptr);
size_t _PyPmem_UsableSize(PyStorageManager *sm, void *ptr);
int _PyPmem_Hold(PoolObject *p);
void _PyPmem_Release(PoolObject *p);
int _PyPmem_Begin(PyStorageManager *sm, PyObject *op);
int _PyPmem_End(PyStorageManager *sm, int ok);
int _PyPmem_SavepointPush(PoolObject *p);
void _PyPmem_SavepointPop(PoolObject *p, int ok);
int _PyPmem_Modify(PyStorageManager *sm, void *addr, size_t size);
int _PyPmem_ModifyMany(PyStorageManager *sm, size_t n, void *const *addrs,
                       const size_t *sizes);

/* mainns.c: __main__'s namespace in a pool (python -X pmem=PATH) */
size_t _PyPmem_MainLogLength(PoolObject *p);
void _PyPmem_MainUndo(PoolObject *p, size_t from);
void _PyPmem_MainEnded(PoolObject *p, int committed);
int _PyPmem_MainBindResolved(PoolObject *p);
void _PyPmem_MainFlush(PoolObject *p);
void _PyPmem_MainBegins(PoolObject *p, PyObject *op);
PyObject *_PyPmem_StartMain(pmem_state *state, PyObject *pool,
                            PyObject *module, PyObject *warning,
                            PyObject *placeholder);
void _PyPmem_StopMain(void);
PyObject *_PyPmem_MainPool(void);

/* openpass.c */
int _PyPmem_OpenPass(PoolObject *p);

/* poolobject.c: what the Namespace type and the module use */
PyObject *_PyPmem_NewIn(PoolObject *pool, PyObject *type,
                        PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames);
PyObject *_PyPmem_PoolNamespace(PoolObject *self);

#endif /* !Py_PMEM_POOL_H */
