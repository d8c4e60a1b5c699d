#ifndef Py_INTERNAL_STORAGEMAP_H
#define Py_INTERNAL_STORAGEMAP_H
#ifdef __cplusplus
extern "C" {
#endif

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

/* What a persistent storage manager uses, beyond the C API of
   Include/cpython/storage.h, to record its objects' classes and to map
   its objects into a new process: the layouts it can hold, every
   pointer an object holds, the volatile metadata to forget, the hash
   tables to rebuild (Objects/storagemap.c, and the class rules of
   Objects/storagestore.c).  Upstream code never includes it: the hooks
   that it calls are in pycore_storage.h. */

#include "pycore_storage.h"

/* Can a persistent manager find tp again in another process by its
   module and qualified name (is it there in this one)? */
PyAPI_FUNC(int) _PyStorage_IsFindableClass(PyTypeObject *tp);
/* Is tp a class whose instances' layout the managers know: made by class
   statements over object or a builtin that a manager holds (int, float,
   complex, str, bytes, tuple, frozenset, dict, list, set), adding a
   dict, slots, weak references?  _PyStorage_ClassBase() gives that
   builtin (or object), NULL for another class. */
PyAPI_FUNC(int) _PyStorage_IsPlainClass(PyTypeObject *tp);
PyAPI_FUNC(PyTypeObject *) _PyStorage_ClassBase(PyTypeObject *tp);
/* The layout of such a class's instances, as a str that a manager
   records with the class's name and compares: "basicsize" then, for
   each class from object up that adds to the instances, the slots it
   adds and "__dict__" and "__weakref__" when it adds them ("16
   __dict__,__weakref__"); over a builtin, its name first ("dict 48
   __dict__,__weakref__").  NULL with an exception set. */
PyAPI_FUNC(PyObject *) _PyStorage_ClassLayout(PyTypeObject *tp);

/* The C types other than the builtins whose objects the managers hold,
   by kind: as values (copied, as an int is), range, slice, the datetime
   module's (its objects and its timezone, whose layout
   _PyStorage_TimeZone repeats: _datetimemodule.c keeps it private) and
   decimal.Decimal; and the mutable ones, moved as a dict is:
   collections.defaultdict, a dict with a default_factory,
   collections.OrderedDict, a dict with a linked list of its keys, and
   collections.deque, whose items are in a list of blocks.  The
   layouts that this header repeats are checked when a type is first
   found (Objects/storage.c). */
enum {
    _PyStorage_KIND_RANGE,
    _PyStorage_KIND_SLICE,
    _PyStorage_KIND_DATE,
    _PyStorage_KIND_TIME,
    _PyStorage_KIND_DATETIME,
    _PyStorage_KIND_TIMEDELTA,
    _PyStorage_KIND_TIMEZONE,
    _PyStorage_KIND_DECIMAL,
    _PyStorage_KIND_VALUES_END,                 /* the values end here */
    _PyStorage_KIND_DEFAULTDICT = _PyStorage_KIND_VALUES_END,
    _PyStorage_KIND_ODICT,
    _PyStorage_KIND_DEQUE,
    _PyStorage_NKINDS
};
typedef struct {
    PyObject_HEAD
    PyObject *offset;             /* a timedelta */
    PyObject *name;               /* a str, or NULL */
} _PyStorage_TimeZone;
/* A decimal.Decimal (_decimal.c's PyDecObject, around libmpdec's mpd_t,
   whose coefficient is in data, or in a block of its own when it has
   more than 4 words); checked against a known value when the type is
   first found (Objects/storage.c).  A manager's copy has its coefficient
   in the object, whatever its length: flags MPD_STATIC_DATA. */
typedef struct {
    PyObject_HEAD
    Py_hash_t hash;
    struct {
        uint8_t flags;
        int64_t exp, digits, len, alloc;
        uint64_t *data;
    } dec;
    uint64_t data[4];
} _PyStorage_Decimal;
#define _PyStorage_MPD_STATIC 16
#define _PyStorage_MPD_STATIC_DATA 32
#define _PyStorage_MPD_DATAFLAGS (32 | 64 | 128)
/* A collections.defaultdict (_collectionsmodule.c's defdictobject). */
typedef struct {
    PyDictObject dict;
    PyObject *default_factory;
} _PyStorage_DefaultDict;
/* A collections.OrderedDict (odictobject.c's PyODictObject): its keys in
   order in a doubly linked list of nodes (each a table of its manager),
   and a table of its nodes by dict entry index (fast_nodes, rebuilt
   when the dict's keys table is not the one it was made for). */
typedef struct _PyStorage_ODictNode {
    PyObject *key;
    Py_hash_t hash;
    struct _PyStorage_ODictNode *next;
    struct _PyStorage_ODictNode *prev;
} _PyStorage_ODictNode;
typedef struct {
    PyDictObject dict;
    _PyStorage_ODictNode *first;
    _PyStorage_ODictNode *last;
    _PyStorage_ODictNode **fast_nodes;
    Py_ssize_t fast_nodes_size;
    void *resize_sentinel;
    size_t state;
    PyObject *inst_dict;
    PyObject *weakreflist;
} _PyStorage_ODict;
/* A collections.deque (_collectionsmodule.c's dequeobject): its items in
   a doubly linked list of blocks (tables of its manager), from
   leftblock's data[leftindex] to rightblock's data[rightindex].  The
   outer links of the end blocks are stale: never read.  A manager's
   deque keeps no free blocks (numfreeblocks is 0). */
#define _PyStorage_DEQUE_BLOCKLEN 64
#define _PyStorage_DEQUE_FREEBLOCKS 16
typedef struct _PyStorage_DequeBlock {
    struct _PyStorage_DequeBlock *leftlink;
    PyObject *data[_PyStorage_DEQUE_BLOCKLEN];
    struct _PyStorage_DequeBlock *rightlink;
} _PyStorage_DequeBlock;
typedef struct {
    PyObject_VAR_HEAD
    _PyStorage_DequeBlock *leftblock;
    _PyStorage_DequeBlock *rightblock;
    Py_ssize_t leftindex;
    Py_ssize_t rightindex;
    size_t state;
    Py_ssize_t maxlen;
    Py_ssize_t numfreeblocks;
    _PyStorage_DequeBlock *freeblocks[_PyStorage_DEQUE_FREEBLOCKS];
    PyObject *weakreflist;
} _PyStorage_Deque;
/* The kind of tp, or -1 when it is none of them (no exception set). */
PyAPI_FUNC(int) _PyStorage_KindOf(PyTypeObject *tp);
/* The type of a kind in this process (its module imported: datetime,
   decimal, collections), or NULL with an exception set. */
PyAPI_FUNC(PyTypeObject *) _PyStorage_TypeOfKind(int kind);

/* op, which a persistent manager's objects refer to by name (see the
   refer hook of Include/cpython/storage.h), lives as long as the process:
   the manager may point to it at any time, and never counts its
   references.  (It gets 2**30 references that nothing gives back.) */
PyAPI_FUNC(void) _PyStorage_KeepForever(PyObject *op);

/* The slot of op's dict (NULL for none), read without making a dict:
   where _PyObject_GetDictPtr() makes one of an instance's inline values. */
PyAPI_FUNC(PyObject **) _PyStorage_InstanceDictPtr(PyObject *op);

/* The __slots__ members of a heap type: its items, after the type object
   (typeobject.c's _PyHeapType_GET_MEMBERS(), without the check). */
static inline PyMemberDef *
_PyStorage_HeapTypeMembers(PyTypeObject *tp)
{
    return (PyMemberDef *)((char *)tp + Py_TYPE(tp)->tp_basicsize);
}

/* The objects known by value (_PyStorage_IsStatic()), and the other
   static objects that a managed object may point to: the dicts' shared
   empty keys, the sets' dummy key. */
PyAPI_FUNC(int) _PyStorage_IsStaticTarget(const void *ptr);

/* visit(slot, kind, arg) for every pointer that op holds: kind
   _PyStorage_SLOT_TABLE for a table that op owns (visited before what it
   holds, so that the visitor may replace the pointer), _PyStorage_SLOT_OBJECT
   for an object pointer (or NULL).  Stops at the first non-zero return and
   returns it; -1 for an object of a type a manager cannot hold. */
#define _PyStorage_SLOT_OBJECT 0
#define _PyStorage_SLOT_TABLE 1
typedef int (*_PyStorage_SlotVisitor)(void **slot, int kind, void *arg);
PyAPI_FUNC(int) _PyStorage_VisitSlots(PyObject *op,
                                      _PyStorage_SlotVisitor visit,
                                      void *arg);

/* The same walk over memory that nothing has checked yet (a file being
   opened), which also tells what each part must hold before reading it:
   visit((void **)&extent, _PyStorage_SLOT_EXTENT, arg) with the bytes
   that op's block (from op) or a table (from its start) must have, for
   what op's header says; size SIZE_MAX when the header is impossible.
   Each table's pointer is visited first (and may be replaced), then its
   extent, then what it holds.  A pointer into the middle of a table (a
   bytearray's start) is visited as _PyStorage_SLOT_INTERIOR, to be moved
   with the memory. */
#define _PyStorage_SLOT_EXTENT 2
#define _PyStorage_SLOT_INTERIOR 3
typedef struct {
    const void *start;
    size_t size;
} _PyStorage_Extent;
PyAPI_FUNC(int) _PyStorage_CheckSlots(PyObject *op,
                                      _PyStorage_SlotVisitor visit,
                                      void *arg);

/* The walk of _PyStorage_VisitSlots() restricted to the object slots that
   lie in ranges (n of them, sorted by start, disjoint): what a manager
   counts again after writing back the ranges an operation changed.  Table
   slots are visited wherever they are.  The items of a list's, dict's or
   set's table are found from the ranges, without a walk of the table. */
typedef struct {
    char *start, *end;
} _PyStorage_Range;
PyAPI_FUNC(int) _PyStorage_VisitSlotsIn(PyObject *op,
                                        const _PyStorage_Range *ranges,
                                        size_t n,
                                        _PyStorage_SlotVisitor visit,
                                        void *arg);

/* Does addr lie in one of ranges (as above)? */
PyAPI_FUNC(int) _PyStorage_InRanges(const _PyStorage_Range *ranges, size_t n,
                                    const void *addr);

/* What the checking walk cannot tell while pointers may still be another
   process's, asked once every pointer that op holds has passed it and is
   this process's: a dict's or set's counts match its table (which the
   dummy key decides), a table of str keys holds only str, an instance's
   __dict__ is a dict.  0, or -1 when op cannot be used as it is. */
PyAPI_FUNC(int) _PyStorage_CheckHeld(PyObject *op);

/* _PyStorage_StoreSlow() for a binding of a module's namespace whose dict
   (a frame's locals dict) the caller counts in held: the references of
   the frames are not looked for. */
PyAPI_FUNC(int) _PyStorage_StoreBinding(PyObject *owner, PyObject **pvalue,
                                        Py_ssize_t held);

/* The moves that made this thread's references (variables, cells,
   locals dicts) refer to the moved copy (Objects/storagestore.c): a
   persistent manager marks where its savepoints begin, and at the end of
   its transaction, or of a savepoint, ends its moves from that mark on --
   kept when committed, undone otherwise (each reference that still
   refers to the copy refers to the original again).  mark 0: all. */
PyAPI_FUNC(Py_ssize_t) _PyStorage_MovesMark(void);
PyAPI_FUNC(void) _PyStorage_MovesEnd(PyStorageManager *sm, Py_ssize_t mark,
                                     int undo);

/* op's memory is freed by its manager without a deallocation (it is
   garbage that an undo or a collection found): what the interpreter
   counted of its parts, given up. */
PyAPI_FUNC(void) _PyStorage_ForgetObject(PyObject *op);

/* Forget what an earlier process (or a deallocation that an abort undid)
   left in op's volatile metadata (see PyStorage_VisitVolatile()):
   untracked, no caches.  op's type must be set; its reference count is
   the manager's to set (it counts the references). */
PyAPI_FUNC(void) _PyStorage_ResetVolatile(PyObject *op);



/* Whether tp has the layout of an int, a str, a bytes, a tuple, a list, a
   dict or a type, by its flags (a subclass's too): then it is no set
   type, nor one of the value types of _PyStorage_KindOf() -- a test of
   most objects without PyType_IsSubtype()'s walk. */
static inline int
_PyStorage_HasBuiltinLayout(PyTypeObject *tp)
{
    return PyType_HasFeature(tp, Py_TPFLAGS_LONG_SUBCLASS
                                  | Py_TPFLAGS_LIST_SUBCLASS
                                  | Py_TPFLAGS_TUPLE_SUBCLASS
                                  | Py_TPFLAGS_BYTES_SUBCLASS
                                  | Py_TPFLAGS_UNICODE_SUBCLASS
                                  | Py_TPFLAGS_DICT_SUBCLASS
                                  | Py_TPFLAGS_TYPE_SUBCLASS);
}

/* Rebuild the hash table of a dict or set (a no-op for other objects)
   for this process's hashes, inside an operation of its manager.  0, or
   -1 with an exception set. */
PyAPI_FUNC(int) _PyStorage_Rehash(PyObject *op);
/* The hashes that op's table keeps, recomputed (for the two below).  1
   when one changed, 0 when none did, -1 with an exception set. */
PyAPI_FUNC(int) _PyStorage_RehashEntries(PyObject *op);
/* The hashes that the n frozensets keep, and so their own hashes, made
   this process's, whatever the frozensets hold (frozensets at any
   depth): before the tables that hold them are rebuilt.  0, or -1 with
   an exception set. */
PyAPI_FUNC(int) _PyStorage_RehashFrozenSets(PyObject **sets, size_t n);
/* Upstream's resizes, reached from here: the dict's table rebuilt at its
   size; the set's rebuilt for minused entries. */
PyAPI_FUNC(int) _PyDict_Rehash(PyObject *op);
PyAPI_FUNC(int) _PySet_Rehash(PyObject *op, Py_ssize_t minused);

#ifdef __cplusplus
}
#endif
#endif /* !Py_INTERNAL_STORAGEMAP_H */
