/* Storage managers: the C API of an extension that provides memory.
 *
 * Every object has a storage manager, derived from its address: the
 * default, DRAM, is ordinary memory and all its hooks are no-ops.  An
 * extension (the libpmemobj pool manager, the memkind manager, a test
 * manager) defines a PyStorageManager and gives it address ranges with
 * PyStorage_AddRange(); from then on, core object code calls the
 * manager's hooks for every object inside those ranges:
 *
 *   alloc/realloc/free   the memory of objects placed in the manager and
 *                        of their internal tables (dict keys, list items,
 *                        set tables, bytearray buffers)
 *   begin/end            bracket one operation a Python user thinks of as
 *                        atomic (list.append, d[k] = v, set.update...);
 *                        they nest, and only the outermost end commits
 *   modify               a range of an object's memory is about to be
 *                        written inside begin/end
 *
 * and, for a manager flagged PyStorage_PERSISTENT, applies the memory
 * hierarchy rule to every pointer stored into one of its objects:
 * immutable values are copied in, an unshared volatile mutable is moved
 * in, a shared one is refused with TypeError.
 *
 * All hooks are called with the GIL held.  See Objects/storage.c.
 */

#ifndef Py_STORAGE_H
#define Py_STORAGE_H
#ifndef Py_LIMITED_API
#ifdef __cplusplus
extern "C" {
#endif

typedef struct _PyStorageManager PyStorageManager;

/* The manager's objects outlive the process: stores into them follow the
   memory hierarchy rule. */
#define PyStorage_PERSISTENT (1UL << 0)

struct _PyStorageManager {
    /* Short name, for messages. */
    const char *name;
    /* PyStorage_* flags. */
    unsigned long flags;
    /* The object that stands for the manager in Python (a pmem.Pool, a
       pmem.MemoryKind), which pmem.storage_of() gives for its objects;
       borrowed: the owner keeps the manager, and outlives its ranges.
       NULL for none. */
    PyObject *owner;

    /* Allocate size bytes.  type is NULL for a table; otherwise the block
       is an object of that type, preceded by its pre-header (the GC head
       and managed-dict pointers: PyStorage_PreHeaderSize(type) bytes).
       Return NULL, without setting an exception, when out of memory. */
    void *(*alloc)(PyStorageManager *sm, size_t size, PyTypeObject *type);
    /* The bytes that the block at ptr (an allocation's start) can hold,
       which may be more than were asked for; NULL: just those. */
    size_t (*usable_size)(PyStorageManager *sm, void *ptr);
    /* Resize a table; NULL (exception not set) when out of memory, and
       then ptr is unchanged. */
    void *(*realloc)(PyStorageManager *sm, void *ptr, size_t size);
    void (*free)(PyStorageManager *sm, void *ptr);

    /* The hooks below may be NULL: a hook that does nothing (volatile
       memory needs no bracket and no log). */

    /* Begin an atomic operation on op, the object whose method or slot
       it is (what it changes is op's memory, or memory that other
       operations, which begin on their objects, change inside it); NULL
       for a block of operations (pool.begin(), `with pool:`).  0, or -1
       with an exception set. */
    int (*begin)(PyStorageManager *sm, PyObject *op);
    /* End it: commit when ok and outermost, else undo.  0, or -1 with an
       exception set when the operation could not be made durable. */
    int (*end)(PyStorageManager *sm, int ok);
    /* [addr, addr+size) is about to change; 0, or -1 with an exception
       set (the caller then abandons the operation). */
    int (*modify)(PyStorageManager *sm, void *addr, size_t size);

    /* May the cycle collector clear and free the manager's objects now?
       0 keeps all of them through this collection (while a transaction
       is going on, what tp_clear, finalizers and deallocations would do
       could not be undone with it); NULL is always. */
    int (*collectable)(PyStorageManager *sm);

    /* dict[key] = value is about to be done by PyDict_SetItem() on a
       dict of the manager: 1 when the manager has done it itself (a
       faster way to the same result), 0 to let it go the usual way, -1
       with an exception set.  NULL is always the usual way. */
    int (*set_item)(PyStorageManager *sm, PyObject *dict, PyObject *key,
                    PyObject *value);
    /* The manager's objects are about to point to obj, an object that
       every process finds by name and that lives as long as the process
       (name "module:qualname.attr": an enum member, datetime.timezone.utc):
       the manager records it, so that another process's pointers can be
       made to point to its obj.  0, or -1 with an exception set (the
       store is refused).  NULL: such objects are refused. */
    int (*refer)(PyStorageManager *sm, PyObject *obj, PyObject *name);
    /* [addrs[i], addrs[i] + sizes[i]) for each i < n are about to change,
       none before all are announced: as n calls of modify(), which the
       manager may make cheaper together (a pool makes its log's entries
       durable at once).  0, or -1 with an exception set.  NULL: modify()
       each. */
    int (*modify_many)(PyStorageManager *sm, size_t n, void *const *addrs,
                       const size_t *sizes);
};

/* The DRAM manager: what PyStorage_Of() returns for ordinary memory. */
PyAPI_DATA(PyStorageManager) PyStorage_DRAM;

/* Give [start, start+size) to sm, or take it back.  0, or -1 with an
   exception set (overlapping ranges, too many ranges). */
PyAPI_FUNC(int) PyStorage_AddRange(PyStorageManager *sm,
                                   void *start, size_t size);
PyAPI_FUNC(int) PyStorage_RemoveRange(void *start);

/* The manager of the memory at ptr: &PyStorage_DRAM when no range has it. */
PyAPI_FUNC(PyStorageManager *) PyStorage_Of(const void *ptr);

/* Placement: while sm is pushed on this thread, new dicts, lists, sets,
   bytearrays and instances of heap types (not classes, not exceptions)
   are allocated by sm.  Pushes nest; pop what you pushed.  0, or -1 with
   an exception set. */
PyAPI_FUNC(int) PyStorage_PushPlacement(PyStorageManager *sm);
PyAPI_FUNC(int) PyStorage_PopPlacement(PyStorageManager *sm);
/* The manager of this thread's placement, or NULL. */
PyAPI_FUNC(PyStorageManager *) PyStorage_GetPlacement(void);

/* Bytes before an object of this type in its block. */
PyAPI_FUNC(size_t) PyStorage_PreHeaderSize(PyTypeObject *type);

/* Volatile metadata: the parts of op's memory that the interpreter writes
   as process-local bookkeeping or caches, outside any begin/end: the
   reference count, the GC head, hash caches, lazily made string buffers,
   weak-reference lists, dict version tags.  A manager never logs them,
   and resets them when it maps its memory in a new process.  Calls
   visit(addr, size, arg) for each range, stops at the first non-zero
   return and returns it. */
typedef int (*PyStorage_RangeVisitor)(void *addr, size_t size, void *arg);
PyAPI_FUNC(int) PyStorage_VisitVolatile(PyObject *op,
                                        PyStorage_RangeVisitor visit,
                                        void *arg);

#ifdef __cplusplus
}
#endif
#endif /* !Py_LIMITED_API */
#endif /* !Py_STORAGE_H */
