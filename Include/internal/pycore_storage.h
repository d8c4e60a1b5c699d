#ifndef Py_INTERNAL_STORAGE_H
#define Py_INTERNAL_STORAGE_H
#ifdef __cplusplus
extern "C" {
#endif

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

/* The hooks that core object code calls at every site that allocates,
   writes or stores a pointer into the memory of a dict, list, set,
   bytearray or instance.  The managers and the logic live in
   Objects/storage.c; Include/cpython/storage.h is their C API.

   The fast path.  _PyStorage_Active is zero until some manager other than
   DRAM owns an address range or is pushed as a placement, which no stock
   program does.  While it is zero, every hook below is one load of that
   word and one branch that is never taken, and then does what the
   unhooked code did (PyMem_Malloc, nothing at all...); only a process
   that opens a pool pays for range lookups.  The hottest functions have
   twins (see below): their DRAM twin is upstream's body, with that one
   test at its top and no other.  The word only ever changes under the
   GIL, and the hooks run with the GIL held, so a hook never sees a range
   table that changes under it.

   An object never changes managers: a DRAM object stays in DRAM while
   managers come and go.  So a hook may leave a whole operation on a DRAM
   object to its fast path even if a manager becomes active during the
   operation (a pool opened by an __eq__ method, say). */
PyAPI_DATA(int) _PyStorage_Active;

/* A thread-local word of the hooks.  Windows cannot export thread-local
   data from a DLL (MSVC's error C2492), and there the modules that read
   these words (_heapq) are built into the core's DLL; elsewhere a shared
   module reads them. */
#ifdef MS_WINDOWS
#  define _PyStorage_THREAD_DATA(type) extern _Py_thread_local type
#else
#  define _PyStorage_THREAD_DATA(type) PyAPI_DATA(_Py_thread_local type)
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define _PyStorage_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#  define _PyStorage_UNLIKELY(x) (x)
#endif

/* Is any manager active?  On x86-64 with GCC or clang the test is one
   compare of the word in memory and one conditional jump to the slow
   path, whatever the surrounding code: the compiler can neither load the
   word into a register that it must then keep, nor reuse what it learnt
   from it, both of which cost the hot path instructions. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(__cplusplus)
static inline int
_PyStorage_ActiveTest(void)
{
    __asm__ goto ("cmpl $0, %0\n\tjne %l[active]"
                  : /* no outputs */
                  : "m" (_PyStorage_Active)
                  : "cc"
                  : active);
    return 0;
active:
#  ifndef __clang__
    __attribute__((cold));
#  endif
    return 1;
}
#  define _PyStorage_ACTIVE() _PyStorage_ActiveTest()
#else
#  define _PyStorage_ACTIVE() _PyStorage_UNLIKELY(_PyStorage_Active)
#endif

/* The slow paths: the compiler keeps them out of the hot code's layout. */
#if defined(__GNUC__) || defined(__clang__)
#  define _PyStorage_COLD __attribute__((cold))
#else
#  define _PyStorage_COLD
#endif

_PyStorage_COLD
PyAPI_FUNC(PyStorageManager *) _PyStorage_Lookup(const void *ptr);

/* The registry's bounds: every managed object lies in [_PyStorage_Lo,
   _PyStorage_Lo + _PyStorage_Span), and a pointer outside them is DRAM
   (placements do not matter: they concern new objects).  An inline test
   without a call, for the specialized instructions that write objects
   directly: they run for DRAM objects while managers are registered, and
   deopt for the others. */
PyAPI_DATA(uintptr_t) _PyStorage_Lo;
PyAPI_DATA(uintptr_t) _PyStorage_Span;
#define _PyStorage_MAYBE_MANAGED(ptr) \
    ((uintptr_t)(ptr) - _PyStorage_Lo < _PyStorage_Span)
/* The guard of a hook whose slow path does nothing for a DRAM object:
   the fast path's one branch, then (managers registered) the bounds. */
#define _PyStorage_ACTIVE_FOR(ptr) \
    (_PyStorage_ACTIVE() && _PyStorage_MAYBE_MANAGED(ptr))

/* The manager of ptr; NULL for DRAM. */
static inline PyStorageManager *
_PyStorage_Of(const void *ptr)
{
    return _PyStorage_ACTIVE_FOR(ptr) ? _PyStorage_Lookup(ptr) : NULL;
}

/* Is ptr memory that must never reach a DRAM free list or cache? */
static inline int
_PyStorage_IsManaged(const void *ptr)
{
    return _PyStorage_ACTIVE_FOR(ptr) && _PyStorage_Lookup(ptr) != NULL;
}

/* A placement of one object: the first object of type tp (exactly) that
   this thread makes is allocated by sm, and nothing else is, whatever
   code runs until the pop (PyStorage_PopPlacement(sm)).  For a
   constructor that runs any code: the objects that it makes otherwise
   reach sm's objects only through the hooks' stores.  0, or -1 with an
   exception set. */
PyAPI_FUNC(int) _PyStorage_PushPlacementOf(PyStorageManager *sm,
                                           PyTypeObject *tp);
/* Is tp a type whose objects a placement of one object places for a
   persistent manager: a container, or a class over object, dict, list or
   set -- whose contents only stores change?  Not a value (a class over
   int, str, tuple...: its constructor fills it without a store), nor a
   type written in C that the managers do not know (array.array). */
PyAPI_FUNC(int) _PyStorage_IsMutablePlaceable(PyTypeObject *tp);

/* Is a placement pushed on this thread?  Then the free lists of the
   placeable types (dict, list) must not hand out DRAM objects, and
   shortcuts that copy a dict wholesale must leave it to the hooks. */
static inline int
_PyStorage_Placing(void)
{
    return _PyStorage_ACTIVE() && PyStorage_GetPlacement() != NULL;
}

/* May ptr's manager write its memory behind the interpreter's back?  A
   persistent manager's undo restores memory as it was: caches keyed by
   the version of a dict's keys (the specialized global loads) must not
   cover its tables.  A volatile manager's memory changes only through
   the interpreter's code. */
static inline int
_PyStorage_UndoesMemory(const void *ptr)
{
    PyStorageManager *sm = _PyStorage_Of(ptr);
    return sm != NULL && (sm->flags & PyStorage_PERSISTENT);
}

/* Does a table of owner come from a manager (see _PyStorage_MALLOC)?
   _PyStorage_DRAM_OWNER stands for an owner known to be in DRAM, such as
   a class, whose tables must never follow a placement. */
#define _PyStorage_DRAM_OWNER ((const void *)&_PyStorage_Active)

static inline int
_PyStorage_ManagedTable(const void *owner)
{
    return (_PyStorage_ACTIVE()
            && (owner != NULL ? _PyStorage_Lookup(owner)
                              : PyStorage_GetPlacement()) != NULL);
}


/* --- atomic operations ------------------------------------------------ */

/* An atomic operation on an object is one call of a hooked function, or
   of the hooked twin of a function (both below), between these two.  The
   end commits when no exception is set, and undoes the operation when one
   is (every failure path of CPython's object code sets one). */

/* Begin an operation on op: *psm is set to op's manager (NULL for
   DRAM).  0, or -1 with an exception set when the manager could not
   begin (then there is nothing to end). */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_TxBegin(PyObject *op, PyStorageManager **psm);
/* 0; or -1 with an exception set when the commit failed: the manager has
   undone the operation, and the caller reports the error instead of its
   result.  Nothing for sm NULL. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_TxEnd(PyStorageManager *sm);

/* [addr, addr+size) is about to be written.  0, or -1 with an exception
   set: then the caller must leave the operation without writing. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_ModifySlow(void *addr, size_t size);

static inline int
_PyStorage_Modify(void *addr, size_t size)
{
    return (_PyStorage_ACTIVE_FOR(addr)
            ? _PyStorage_ModifySlow(addr, size) : 0);
}

/* The fields of an object after its PyObject header, up to size bytes
   from its start (sizeof(PyListObject)...), are about to be written. */
static inline int
_PyStorage_ModifyFields(void *op, size_t size)
{
    return (_PyStorage_ACTIVE_FOR(op)
            ? _PyStorage_ModifySlow((char *)op + sizeof(PyObject),
                                    size - sizeof(PyObject))
            : 0);
}

/* All the items of list op are about to be written in place (heapq's
   sifts move them about). */
static inline int
_PyStorage_ModifyListItems(PyObject *op)
{
    return (_PyStorage_ACTIVE_FOR(op)
            ? _PyStorage_ModifySlow(((PyListObject *)op)->ob_item,
                                    Py_SIZE(op) * sizeof(PyObject *))
            : 0);
}

/* An instance of a heap type is being deallocated: what its deallocation
   clears (its __slots__, its dict pointers) is logged first, inside an
   operation of its manager, so that undoing the enclosing transaction
   brings the object back whole.  Errors are unraisable.  1 when op is
   alive again and must not be deallocated: while this thread waited to
   begin, another's transaction was undone, which gave back the reference
   that it had dropped. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_DeallocSlow(PyObject *op);

static inline int
_PyStorage_Dealloc(PyObject *op)
{
    return _PyStorage_ACTIVE_FOR(op) ? _PyStorage_DeallocSlow(op) : 0;
}

/* Run call, an operation on op made by op's deallocator (a deque's
   clear), keeping the exception that is set: the operation would take
   it for its own failure, and undo itself and explain it. */
#define _PyStorage_KEEP_EXCEPTION(op, call) \
    do { \
        if (_PyStorage_ACTIVE_FOR(op)) { \
            PyObject *_py_storage_exc = PyErr_GetRaisedException(); \
            call; \
            PyErr_SetRaisedException(_py_storage_exc); \
        } \
        else { \
            call; \
        } \
    } while (0)

/* The cycle collector counts this many references to op that no object
   of the collected generations holds: 1 keeps op, and what it reaches,
   alive through the collection, when its manager does not let its
   objects be collected now (see PyStorageManager.collectable). */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_GcHoldSlow(PyObject *op);

static inline int
_PyStorage_GcHold(PyObject *op)
{
    return _PyStorage_ACTIVE_FOR(op) ? _PyStorage_GcHoldSlow(op) : 0;
}

/* A slot of a dict is about to change: its index slot hashpos and its
   entry ix (each when >= 0), with the dict's and its keys' fields. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_ModifyDictSlotSlow(PyDictObject *mp,
                                              Py_ssize_t hashpos,
                                              Py_ssize_t ix);

/* Instances.  A managed instance keeps its attributes in a dict of its
   own manager (combined, never inline values or a class's shared keys),
   made by its first attribute store or its first __dict__: its inline
   values stay empty and invalid, and have room for their header only.
   _PyStorage_EnsureDict() is obj's dict, made if need be (borrowed; NULL
   with an exception set), for ensure_managed_dict() and, for an object
   with its dict pointer inside (an OrderedDict), ensure_nonmanaged_dict();
   the instance-dict stores call the second, and assignments to __dict__
   the third. */
_PyStorage_COLD
PyAPI_FUNC(PyObject *) _PyStorage_EnsureDict(PyObject *obj);
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_ObjectDictSetItem(PyObject *obj,
                                             PyObject **dictptr,
                                             PyObject *key, PyObject *value);
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_SetDictPtr(PyObject *obj, PyObject **dictptr,
                                      PyObject *value);

/* Re-entry.  A hot function whose writes a manager can be told about
   before it runs has a single hook at its top,

       if (_PyStorage_ACTIVE() && !_PyStorage_REENTERED(op))
           return _PyStorage_<Function>(op, ...);

   and no other: the slow path begins the operation, registers what the
   function will write, marks op as re-entered on this thread, calls the
   function again (which now runs its stock body) and ends the operation.
   The DRAM fast path is the one load and branch of the first line (and,
   while managers are registered, the registry's bounds). */
_PyStorage_THREAD_DATA(PyObject *) _PyStorage_Reentered;

/* The mark is taken by the first hooked entry that sees it: the one the
   slow path calls.  Operations that the call starts on op again (from
   Python code, say) take the slow path again. */
static inline int
_PyStorage_REENTERED(const void *op)
{
    if (_PyStorage_Reentered != op) {
        return 0;
    }
    _PyStorage_Reentered = NULL;
    return 1;
}

/* The generic slow path of a function whose writes to op are all
   registered by hooks in its body, or by the hooked functions it calls.
   Placed at the top of the function, before anything that its returns
   release,

       _PyStorage_REENTER(op, -1, function(op, arg, ...));

   calls the function again (the same call, the same arguments) inside an
   atomic operation on op, and returns what it returns: failed (-1, NULL)
   when the operation could not begin, or could not commit, with an
   exception set.  _PyStorage_REENTER_OBJECT() is the form for functions
   that return a new reference; _PyStorage_REENTER_STEALING() for those
   that steal a reference (drop runs when the operation cannot begin).
   _PyStorage_REENTER_VOID() is for functions that cannot report an
   error: a failure to begin or to commit is written as unraisable, and
   leaves op as it was. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_ReenterBegin(PyObject *op, PyStorageManager **psm,
                                        PyObject **pouter);
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_ReenterEnd(PyStorageManager *sm,
                                      PyObject *outer);

#define _PyStorage_REENTER_(op, type, failed, call, drop, drop_result) \
    do { \
        PyObject *_py_storage_outer; \
        PyStorageManager *_py_storage_sm; \
        if (_PyStorage_ACTIVE_FOR(op) && !_PyStorage_REENTERED(op)) { \
            if (_PyStorage_ReenterBegin(_PyObject_CAST(op), &_py_storage_sm, \
                                        &_py_storage_outer) < 0) { \
                drop; \
                return failed; \
            } \
            type _py_storage_result = (call); \
            if (_PyStorage_ReenterEnd(_py_storage_sm, \
                                      _py_storage_outer) < 0) { \
                drop_result; \
                return failed; \
            } \
            return _py_storage_result; \
        } \
    } while (0)
#define _PyStorage_REENTER(op, failed, call) \
    _PyStorage_REENTER_(op, int, failed, call, (void)0, (void)0)
#define _PyStorage_REENTER_STEALING(op, failed, call, drop) \
    _PyStorage_REENTER_(op, int, failed, call, drop, (void)0)
#define _PyStorage_REENTER_OBJECT(op, call) \
    _PyStorage_REENTER_(op, PyObject *, NULL, call, (void)0, \
                        Py_XDECREF(_py_storage_result))
#define _PyStorage_REENTER_VOID(op, call) \
    do { \
        PyObject *_py_storage_outer; \
        PyStorageManager *_py_storage_sm; \
        if (_PyStorage_ACTIVE_FOR(op) && !_PyStorage_REENTERED(op)) { \
            if (_PyStorage_ReenterBegin(_PyObject_CAST(op), &_py_storage_sm, \
                                        &_py_storage_outer) < 0 \
                || ((call), \
                    _PyStorage_ReenterEnd(_py_storage_sm, \
                                          _py_storage_outer) < 0)) \
            { \
                _PyStorage_WriteUnraisable(_PyObject_CAST(op)); \
            } \
            return; \
        } \
    } while (0)

/* The arguments of the call that a slot wrapper makes (d.__setitem__(k,
   v), o.__setattr__(name, v)), and of the call of the descriptor that
   made it (which passes them on without self, in a tuple of their own):
   while they are set, a store counts the tuples' references to the value
   as the storing path's own, when only the call holds the tuple. */
_PyStorage_THREAD_DATA(PyObject *) _PyStorage_CallArgs[2];
#define _PyStorage_WITH_CALL_ARGS(args, call) \
    do { \
        if (!_PyStorage_ACTIVE()) { \
            call; \
            break; \
        } \
        PyObject *_py_storage_args0 = _PyStorage_CallArgs[0]; \
        PyObject *_py_storage_args1 = _PyStorage_CallArgs[1]; \
        _PyStorage_CallArgs[1] = _py_storage_args0; \
        _PyStorage_CallArgs[0] = (args); \
        call; \
        _PyStorage_CallArgs[0] = _py_storage_args0; \
        _PyStorage_CallArgs[1] = _py_storage_args1; \
    } while (0)

/* The same for a function whose body is split out (a static inline,
   always inlined, function: its DRAM path stays one body, and the
   function is not recursive, which would keep a compiler from inlining
   it into its one caller, a clinic wrapper say):

       _PyStorage_ENTER(op, -1, function_body(op, arg, ...));
       return function_body(op, arg, ...);

   calls the body inside an atomic operation on op, as the first line of
   _PyStorage_REENTER() would call the function again. */
#define _PyStorage_ENTER(op, failed, call) \
    do { \
        PyStorageManager *_py_storage_sm; \
        if (_PyStorage_ACTIVE_FOR(op)) { \
            if (_PyStorage_TxBegin(_PyObject_CAST(op), \
                                   &_py_storage_sm) < 0) { \
                return failed; \
            } \
            int _py_storage_result = (call); \
            return (_PyStorage_TxEnd(_py_storage_sm) < 0 \
                    ? failed : _py_storage_result); \
        } \
    } while (0)

/* Report the failure of an operation on op that its caller cannot. */
_PyStorage_COLD
PyAPI_FUNC(void) _PyStorage_WriteUnraisable(PyObject *op);

/* Twins.  The hottest functions are compiled twice from one body: a
   DRAM twin without hooks, and a hooked twin for managed objects, which
   the DRAM twin's one hook calls through these slow paths:

       if (_PyStorage_ACTIVE())
           return _PyStorage_<Function>(op, ..., <function>_managed);
       return <function>_body(op, ..., 0);

   The slow path begins an operation on op, calls the hooked twin, and
   ends it; _PyStorage_InsertDict() and _PyStorage_SetAddEntry() also
   apply the hierarchy rule to what insertdict() and set_add_entry()
   store.  _PyStorage_Call() and its kin are the forms for other
   signatures: the slow path is a tail call, so the DRAM twin keeps
   upstream's frame. */
_PyStorage_COLD
PyAPI_FUNC(PyObject *) _PyStorage_Call(PyObject *op,
                                       PyObject *(*function)(PyObject *));
_PyStorage_COLD
PyAPI_FUNC(PyObject *) _PyStorage_CallInt(
    PyObject *op, int i, PyObject *(*function)(PyObject *, int));
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_CallSsize(
    PyObject *op, Py_ssize_t n, int (*function)(PyObject *, Py_ssize_t));
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_CallObjects(
    PyObject *op, PyObject *a, PyObject *b,
    int (*function)(PyObject *, PyObject *, PyObject *));
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_SetDiscardEntry(
    PySetObject *so, PyObject *key, Py_hash_t hash,
    int (*discard)(PySetObject *, PyObject *, Py_hash_t));
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_InsertDict(
    PyDictObject *mp, PyObject *key, Py_hash_t hash, PyObject *value,
    int (*insertdict)(PyDictObject *, PyObject *, Py_hash_t, PyObject *));
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_SetAddEntry(
    PySetObject *so, PyObject *key, Py_hash_t hash,
    int (*add)(PySetObject *, PyObject *, Py_hash_t));

/* Allocation in a twin body: from owner's manager in the hooked twin. */
#define _PyStorage_TWIN_MALLOC(managed, owner, dram_malloc, size) \
    ((managed) ? _PyStorage_MallocSlow((owner), (size), (dram_malloc)) \
               : dram_malloc(size))
#define _PyStorage_TWIN_REALLOC(managed, owner, dram_realloc, ptr, size) \
    ((managed) \
     ? _PyStorage_ReallocSlow((owner), (ptr), (size), (dram_realloc)) \
     : dram_realloc((ptr), (size)))

/* A new object of sm, made by its type's own code (make(arg)) with sm
   as this thread's placement; NULL with an exception set. */
extern PyObject *_PyStorage_NewPlaced(PyStorageManager *sm,
                                      PyObject *(*make)(PyObject *),
                                      PyObject *arg);

/* A bytearray's fields and its value (its bytes from ob_start, and the
   NUL after them) are about to change: all of it, or from byte `from`
   on (what is past the value is not, as a resize of the same buffer or
   an append finds it: an undo restores the size). */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_ModifyByteArraySlow(PyByteArrayObject *ba);
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_ModifyByteArrayFromSlow(PyByteArrayObject *ba,
                                                   Py_ssize_t from);

static inline int
_PyStorage_ModifyByteArray(PyByteArrayObject *ba)
{
    return _PyStorage_ACTIVE() ? _PyStorage_ModifyByteArraySlow(ba) : 0;
}

static inline int
_PyStorage_ModifyByteArrayFrom(PyByteArrayObject *ba, Py_ssize_t from)
{
    return (_PyStorage_ACTIVE()
            ? _PyStorage_ModifyByteArrayFromSlow(ba, from) : 0);
}

/* The buffer that bytearray op exports for a request of flags: 0, a
   writable one; 1, read-only, when op's manager registers writes (one
   through the buffer would be part of no operation, and never logged);
   -1 with BufferError set when a writable one was asked for. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_BufferReadOnlySlow(PyObject *op, int flags);

static inline int
_PyStorage_BufferReadOnly(PyObject *op, int flags)
{
    return (_PyStorage_ACTIVE_FOR(op)
            ? _PyStorage_BufferReadOnlySlow(op, flags) : 0);
}

/* A set's entry is about to change, with the set's counters. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_ModifySetEntrySlow(PySetObject *so,
                                              setentry *entry);

/* set_swap_bodies() when a or b is managed: a managed set keeps its table,
   and takes the other's contents through the hooked paths.  0, or -1
   with an exception set. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_SetSwapBodies(PyObject *a, PyObject *b);

/* dict.setdefault() on a managed dict: through PyDict_SetItem(), so
   that the default is stored by the rule (and what *result gets is what
   the dict holds: a new reference when incref_result, else borrowed).
   As dictobject.c's dict_setdefault_ref_lock_held(): 1 when key was
   there, 0 when the default was stored, -1 with an exception set. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_DictSetDefault(PyObject *d, PyObject *key,
                                          PyObject *defaultobj,
                                          PyObject **result,
                                          int incref_result);

/* *pvalue was just stored as container[key] (defaultdict's __missing__,
   which returns what it stored): when the container is managed, *pvalue
   becomes what it holds now -- the copy that the store moved in, not the
   volatile original, which no longer counts. */
_PyStorage_COLD
PyAPI_FUNC(void) _PyStorage_StoredItemSlow(PyObject *container,
                                           PyObject *key, PyObject **pvalue);
static inline void
_PyStorage_StoredItem(PyObject *container, PyObject *key, PyObject **pvalue)
{
    if (_PyStorage_IsManaged(container)) {
        _PyStorage_StoredItemSlow(container, key, pvalue);
    }
}

/* collections.OrderedDict (odictobject.c), whose list of keys is made of
   nodes that are tables of its manager: the links around node are about
   to change -- the object's fields, node and its neighbours when node is
   linked (NULL: a new node, which joins at one end), and both ends --
   and, unless slot is NULL, a slot of its fast-nodes table.  0, or -1
   with an exception set. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_ModifyODictSlow(PyObject *od, void *node,
                                           void *slot);
static inline int
_PyStorage_ModifyODict(PyObject *od, void *node, void *slot)
{
    return (_PyStorage_ACTIVE_FOR(od)
            ? _PyStorage_ModifyODictSlow(od, node, slot) : 0);
}

/* collections.deque (_collectionsmodule.c), whose items are in blocks of
   its manager: a change is about to write the object's fields and, at
   each end, what lies within left (right) items of it -- those items'
   slots, the end block's unused slots and links, the link to them of
   the next block in -- or every block, for -1.  0, or -1 with an
   exception set. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_ModifyDequeSlow(PyObject *deque, Py_ssize_t left,
                                           Py_ssize_t right);
static inline int
_PyStorage_ModifyDeque(PyObject *deque, Py_ssize_t left, Py_ssize_t right)
{
    return (_PyStorage_ACTIVE_FOR(deque)
            ? _PyStorage_ModifyDequeSlow(deque, left, right) : 0);
}

/* *pkey (a reference) was just stored by a managed dict in its entry ix:
   *pkey becomes the key that the entry holds -- the copy that the store
   made, not the volatile original -- for another part of the same object
   to hold (an OrderedDict's node). */
_PyStorage_COLD
PyAPI_FUNC(void) _PyStorage_StoredKeySlow(PyObject *dict, Py_ssize_t ix,
                                          PyObject **pkey);
static inline void
_PyStorage_StoredKey(PyObject *dict, Py_ssize_t ix, PyObject **pkey)
{
    if (_PyStorage_ACTIVE_FOR(dict)) {
        _PyStorage_StoredKeySlow(dict, ix, pkey);
    }
}

/* The slow paths of PyList_Append(), list.append(), PyDict_SetItem() and
   dict_merge(): the value is borrowed from the caller, who holds one
   reference; the rule is applied with that and the one the store takes. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_ListAppend(PyObject *list,
                                                      PyObject *item);
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_DictSetItem(PyObject *dict,
                                                       PyObject *key,
                                                       PyObject *value);
/* The same for PyODict_SetItem(), which its slow path calls again. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_ODictSetItem(PyObject *od, PyObject *key,
                                        PyObject *value);
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_DictMerge(
    PyObject *a, PyObject *b, int override,
    int (*merge)(PyObject *, PyObject *, int));

/* d.update(other) for a managed d and a dict other that the calling path
   holds held references to: other's items are stored by the rule, the
   unshared ones moved.  0, or -1 with an exception set. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_DictMergeFrom(PyObject *d, PyObject *other,
                                         Py_ssize_t held);

/* The memory-hierarchy rule.  *pvalue is a strong reference that the
   caller is about to store into owner.  For an owner whose manager is
   persistent, the reference may be replaced by one to a copy (immutable
   values) or to the moved value (a volatile mutable that the caller holds
   exclusively); a shared volatile mutable is refused: -1 with TypeError
   set, *pvalue untouched.  held counts the references to the value that
   the storing code path itself holds, *pvalue's included: a value whose
   reference count is no larger belongs to the store alone. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_StoreSlow(PyObject *owner, PyObject **pvalue,
                                     Py_ssize_t held);

/* A store of value over old, a number of sm that only the slot being
   stored into refers to (the dict's entry, the list's item): when value
   is a volatile number of old's type that fits in old's block, old's
   value is overwritten in place (one logged range, no allocation, no
   free: what a C program on the pool would do) and the slot keeps old.
   1 when done, 0 when the store must go the usual way, -1 with an
   exception set. */
PyAPI_FUNC(int) _PyStorage_StoreOver(PyStorageManager *sm, PyObject *old,
                                     PyObject *value);
/* The same overwrite, whatever else refers to old: for a caller that
   knows every reference to old (and that each one's holder wants it to
   take value's value).  1, 0 or -1 likewise. */
PyAPI_FUNC(int) _PyStorage_OverwriteNumber(PyStorageManager *sm,
                                           PyObject *old, PyObject *value);

/* A store of *pvalue into *slot, a pointer of owner: the rule applied to
   the value (as _PyStorage_Store(), held likewise), the slot logged, or
   the old value overwritten in place (_PyStorage_StoreOver()).  0: the
   caller stores *pvalue into the slot; 1: stored already (the caller
   drops its reference); -1 with an exception set. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_StoreIntoSlow(PyObject *owner, PyObject **slot,
                                         PyObject **pvalue, Py_ssize_t held);

static inline int
_PyStorage_StoreInto(PyObject *owner, PyObject **slot, PyObject **pvalue,
                     Py_ssize_t held)
{
    return (_PyStorage_ACTIVE_FOR(owner)
            ? _PyStorage_StoreIntoSlow(owner, slot, pvalue, held) : 0);
}

/* The rule for every item of *pseq, a list or tuple from
   PySequence_Fast(source) whose items are about to be stored into owner;
   *pseq is a reference the caller owns.  When an item must be copied or
   moved, *pseq is replaced by a new list of what to store.  The items
   are the store's own when *pseq is a new list, or when source's
   reference count is at most source_held. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_StoreItemsSlow(PyObject *owner, PyObject **pseq,
                                          PyObject *source,
                                          Py_ssize_t source_held);

static inline int
_PyStorage_Store(PyObject *owner, PyObject **pvalue, Py_ssize_t held)
{
    return (_PyStorage_ACTIVE_FOR(owner)
            ? _PyStorage_StoreSlow(owner, pvalue, held) : 0);
}

static inline int
_PyStorage_StoreItems(PyObject *owner, PyObject **pseq, PyObject *source,
                      Py_ssize_t source_held)
{
    return (_PyStorage_ACTIVE_FOR(owner)
            ? _PyStorage_StoreItemsSlow(owner, pseq, source, source_held)
            : 0);
}

/* A new list, just filled by copying pointers into its items rather than
   by storing them (a slice, list.copy(), a concatenation, a repetition,
   BUILD_LIST's array), each a reference that it owns.  When a placement
   made it an object of a persistent manager, the rule is applied to its
   items, in an operation on it: an item that the list alone refers to
   is its own (BUILD_LIST's may be moved in), one that the copied list
   holds too is shared.  An item that the list holds more than once is
   copied once.  Returns list (NULL stays NULL), or NULL with an
   exception set after dropping it. */
_PyStorage_COLD
PyAPI_FUNC(PyObject *) _PyStorage_FilledListSlow(PyObject *list);

static inline PyObject *
_PyStorage_FilledList(PyObject *list)
{
    return (_PyStorage_ACTIVE_FOR(list)
            ? _PyStorage_FilledListSlow(list) : list);
}


/* --- allocation ------------------------------------------------------- */

/* A table (dict keys, list items, set table, bytearray buffer) of owner,
   from owner's manager.  owner is NULL for a table made before its
   object: it then comes from this thread's placement.  dram_* is the
   allocator that the site used before it was hooked, and what the DRAM
   fast path calls.  Freeing needs no hook: PyMem_Free() and
   PyObject_Free() send a managed block to its manager. */
_PyStorage_COLD
PyAPI_FUNC(void *) _PyStorage_MallocSlow(const void *owner, size_t size,
                                         void *(*dram_malloc)(size_t));
_PyStorage_COLD
PyAPI_FUNC(void *) _PyStorage_CallocSlow(const void *owner,
                                         size_t nelem, size_t elsize,
                                         void *(*dram_calloc)(size_t, size_t));
_PyStorage_COLD
PyAPI_FUNC(void *) _PyStorage_ReallocSlow(
    const void *owner, void *ptr, size_t size,
    void *(*dram_realloc)(void *, size_t));

#define _PyStorage_MALLOC(owner, dram_malloc, size) \
    (_PyStorage_ACTIVE() \
     ? _PyStorage_MallocSlow((owner), (size), (dram_malloc)) \
     : dram_malloc(size))
#define _PyStorage_CALLOC(owner, dram_calloc, nelem, elsize) \
    (_PyStorage_ACTIVE() \
     ? _PyStorage_CallocSlow((owner), (nelem), (elsize), (dram_calloc)) \
     : dram_calloc((nelem), (elsize)))
#define _PyStorage_REALLOC(owner, dram_realloc, ptr, size) \
    (_PyStorage_ACTIVE() \
     ? _PyStorage_ReallocSlow((owner), (ptr), (size), (dram_realloc)) \
     : dram_realloc((ptr), (size)))

/* The block of a new object of type tp (size bytes, pre-header included):
   from this thread's placement when tp is placeable, else from
   PyObject_Malloc(). */
_PyStorage_COLD
PyAPI_FUNC(void *) _PyStorage_ObjectMallocSlow(PyTypeObject *tp,
                                               size_t size);

static inline void *
_PyStorage_ObjectMalloc(PyTypeObject *tp, size_t size)
{
    return (_PyStorage_ACTIVE()
            ? _PyStorage_ObjectMallocSlow(tp, size) : PyObject_Malloc(size));
}

/* The bytes of a new instance of tp for its inline values, dram_size
   (_PyInlineValuesSize()) for DRAM: an instance that this thread's
   placement takes keeps its attributes in a dict (see
   _PyStorage_EnsureDict()), and has room for the values' header only. */
_PyStorage_COLD
PyAPI_FUNC(size_t) _PyStorage_InlineValuesSizeSlow(PyTypeObject *tp,
                                                   size_t dram_size);
#define _PyStorage_INLINE_VALUES_SIZE(tp, dram_size) \
    (_PyStorage_ACTIVE() \
     ? _PyStorage_InlineValuesSizeSlow((tp), (dram_size)) : (dram_size))

/* Routing in the PyMem_ and PyObject_ free and realloc functions: a
   managed block goes to its manager.  Return 1 when routed. */
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_FreeSlow(void *ptr);
_PyStorage_COLD
PyAPI_FUNC(int) _PyStorage_RouteReallocSlow(void *ptr, size_t size,
                                            void **result);

static inline int
_PyStorage_Free(void *ptr)
{
    return _PyStorage_ACTIVE_FOR(ptr) && _PyStorage_FreeSlow(ptr);
}

static inline int
_PyStorage_RouteRealloc(void *ptr, size_t size, void **result)
{
    return (_PyStorage_ACTIVE_FOR(ptr)
            && _PyStorage_RouteReallocSlow(ptr, size, result));
}

/* --- static objects, calls, strs --------------------------------------- */

/* The objects known by value, stored as they are: None, True, False,
   Ellipsis, NotImplemented, the small ints, the empty and one-character
   bytes and str, the empty tuple.  ptr must be the start of one (it may
   be a pointer read from a file). */
PyAPI_FUNC(int) _PyStorage_IsStatic(const void *ptr);

/* The tuple of a call's *args, in *pargs, made the call's own when
   something else holds it (under _PyStorage_ACTIVE(): the store rule
   counts references).  0, or -1 with an exception set. */
PyAPI_FUNC(int) _PyStorage_OwnCallArgs(PyObject **pargs);

/* Interning of a manager's str (a reference that interning owns): *p
   becomes the interned str of this process that equals it, immortal or
   not as asked. */
PyAPI_FUNC(void) _PyStorage_InternCopy(PyObject **p, int immortalize);

/* The caches in op's volatile metadata that are made from its value (a
   str's UTF-8 and wchar_t forms, its interning) as a new object of this
   process has them: for a copy of an object into a manager. */
PyAPI_FUNC(void) _PyStorage_ResetCaches(PyObject *op);

/* --- classes, __main__ ------------------------------------------------- */

/* A class was made (the end of type.__new__): a persistent manager whose
   objects wait for a class of its name (the class was missing when the
   manager mapped them) gives them their class.  The hook is the
   manager's, NULL while none is loaded.  0, or -1 with an exception
   set. */
typedef int (*_PyStorage_ClassHookFunc)(PyTypeObject *tp);
PyAPI_DATA(_PyStorage_ClassHookFunc) _PyStorage_ClassHook;

static inline int
_PyStorage_ClassMade(PyTypeObject *tp)
{
    return _PyStorage_ClassHook != NULL ? _PyStorage_ClassHook(tp) : 0;
}

/* A manager's own bookkeeping of a dict's values (-X pmem's): the slot
   of key's value in dict, a combined table of str keys, or NULL (no
   exception) when there is none; and the value of key replaced, in the
   DRAM dict of a volatile manager, without the hooks (1; 0 when dict does
   not hold key), also in the slot that the first gave. */
PyAPI_FUNC(PyObject **) _PyStorage_DictValueSlot(PyObject *dict,
                                                 PyObject *key);
PyAPI_FUNC(int) _PyStorage_DictReplaceValue(PyObject *dict, PyObject *key,
                                            PyObject *value);
PyAPI_FUNC(void) _PyStorage_DictReplaceInSlot(PyObject *dict, PyObject *key,
                                              PyObject **slot,
                                              PyObject *value);

/* python -X pmem=PATH, or PYTHONPMEM=PATH: __main__'s bindings persist
   in the pool at PATH (pmem._run_main_in_pool()), from before the
   program's first line.  0 (done, or not asked for), or -1 when the pool
   cannot be used: then a line on stderr has said why, and the
   interpreter must exit with status 1 without running the program. */
extern int _PyStorage_RunMainInPool(const PyConfig *config);

#ifdef __cplusplus
}
#endif
#endif /* !Py_INTERNAL_STORAGE_H */
