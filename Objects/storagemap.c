/* Mapping a persistent manager's objects into a new process.

   A persistent manager keeps real objects.  When a process maps them in,
   what the last process left in them must be made this process's: their
   types, their pointers to the interpreter's static objects (None, the
   small ints... which move with the binary), their volatile metadata
   (reference counts, GC heads, hash caches), the hash tables of dicts and
   sets (string hashes are randomized per process).  The manager knows its
   memory; this file knows the objects' layouts:

     _PyStorage_VisitSlots()     every pointer an object holds, and the
                                 tables it owns, for the manager to check,
                                 relocate and count
     _PyStorage_IsStaticTarget() the static objects a managed object may
                                 point to
     _PyStorage_Rehash()         rebuild a dict's or set's hash table

   The types a persistent manager can hold are the ones the store rule
   admits (Objects/storagestore.c): dict, list, set, frozenset, tuple,
   bytearray, int, bool, float, complex, str, bytes. */

#include "Python.h"
#include "pycore_dict.h"          // DK_ENTRIES()
#include "pycore_long.h"          // _PyLong_DigitCount()
#include "pycore_object.h"        // _PyObject_IS_GC()
#include "pycore_setobject.h"     // _PySet_Dummy
#include "pycore_storagemap.h"    // the hooks, the managers' API
#include "structmember.h"         // T_OBJECT_EX
#define _PY_DATETIME_IMPL        /* the structs, not the C API's variable */
#include "datetime.h"             // PyDateTime_DateTime


static PyDictKeysObject *
empty_keys(void)
{
    /* A new empty dict shares the interpreter's static empty keys. */
    static PyDictKeysObject *keys;
    if (keys == NULL) {
        PyObject *d = PyDict_New();
        if (d != NULL) {
            keys = ((PyDictObject *)d)->ma_keys;
            Py_DECREF(d);
        }
    }
    return keys;
}

void
_PyStorage_ForgetObject(PyObject *op)
{
#ifdef Py_REF_DEBUG
    if (PyDict_Check(op)) {
        PyDictKeysObject *keys = ((PyDictObject *)op)->ma_keys;
        if (keys != empty_keys()) {
            _Py_RefTotal -= keys->dk_refcnt;
        }
    }
#endif
}

PyObject **
_PyStorage_InstanceDictPtr(PyObject *op)
{
    if (Py_TYPE(op)->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
        return (PyObject **)&_PyObject_ManagedDictPointer(op)->dict;
    }
    return _PyObject_ComputedDictPointer(op);
}

int
_PyStorage_IsStaticTarget(const void *ptr)
{
    return (_PyStorage_IsStatic(ptr) || ptr == _PySet_Dummy
            || ptr == (const void *)empty_keys());
}

#define VISIT(slot, kind) \
    do { \
        int _r = visit((void **)(slot), (kind), arg); \
        if (_r != 0) { \
            return _r; \
        } \
    } while (0)

/* What a part must hold, when the walk checks extents. */
#define EXTENT(ptr, nbytes) \
    do { \
        if (check) { \
            _PyStorage_Extent _x = {(ptr), (nbytes)}; \
            int _r = visit((void **)&_x, _PyStorage_SLOT_EXTENT, arg); \
            if (_r != 0) { \
                return _r; \
            } \
        } \
    } while (0)

/* n items of size each after a header of base bytes; SIZE_MAX when n is
   impossible. */
static size_t
var_size(size_t base, Py_ssize_t n, size_t size)
{
    if (n < 0 || (size_t)n > (PY_SSIZE_T_MAX - base) / size) {
        return SIZE_MAX;
    }
    return base + (size_t)n * size;
}

/* The bytes a str's header says it has; SIZE_MAX for an impossible one. */
static size_t
str_size(PyObject *op)
{
    PyASCIIObject *a = (PyASCIIObject *)op;
    unsigned int kind = a->state.kind;
    if (!a->state.compact || a->state.statically_allocated
        || (kind != 1 && kind != 2 && kind != 4)
        || (a->state.ascii && kind != 1))
    {
        return SIZE_MAX;
    }
    size_t base = a->state.ascii ? sizeof(PyASCIIObject)
                                 : sizeof(PyCompactUnicodeObject);
    size_t n = var_size(base, a->length, kind);
    return n == SIZE_MAX ? n : n + kind;        /* the terminator */
}

/* The bytes of a dict's keys table past its header; SIZE_MAX when the
   header is impossible. */
static size_t
keys_size(PyDictKeysObject *keys)
{
    unsigned int log2 = keys->dk_log2_size;
    unsigned int index = log2 < 8 ? 0 : log2 < 16 ? 1 : log2 < 32 ? 2 : 3;
    if (log2 < 3 || log2 > 40                 /* PyDict_LOG_MINSIZE */
        || keys->dk_log2_index_bytes != log2 + index
        || (keys->dk_kind != DICT_KEYS_GENERAL
            && keys->dk_kind != DICT_KEYS_UNICODE)
        || keys->dk_nentries < 0 || keys->dk_usable < 0)
    {
        return SIZE_MAX;
    }
    size_t usable = ((size_t)2 << log2) / 3;   /* USABLE_FRACTION() */
    /* An insertion takes one of dk_usable; a deletion gives none back;
       popitem() takes the last entry back from dk_nentries only. */
    if ((size_t)keys->dk_nentries > usable
        || (size_t)keys->dk_usable > usable - (size_t)keys->dk_nentries)
    {
        return SIZE_MAX;
    }
    size_t entry = keys->dk_kind == DICT_KEYS_UNICODE
                   ? sizeof(PyDictUnicodeEntry) : sizeof(PyDictKeyEntry);
    return sizeof(PyDictKeysObject) + ((size_t)1 << keys->dk_log2_index_bytes)
           + (size_t)keys->dk_nentries * entry;
}

/* --- a walk restricted to ranges ------------------------------------------

   _PyStorage_VisitSlotsIn() walks with filter_visit() in place of the
   caller's visitor: the visitors of the parts pass every table slot on
   and each object slot that lies in a range.  The visitors of the large
   tables (a list's items, a dict's entries, a set's table) see the filter
   and visit only the items that the ranges cover (visit_items_in()). */

typedef struct {
    const _PyStorage_Range *ranges;
    size_t n;
    _PyStorage_SlotVisitor visit;
    void *arg;
} filter_state;

/* The index of the first range that ends after addr (n: none). */
static size_t
first_range_after(const _PyStorage_Range *ranges, size_t n, const char *addr)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ranges[mid].end <= addr) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
}

int
_PyStorage_InRanges(const _PyStorage_Range *ranges, size_t n,
                    const void *addr)
{
    size_t i = first_range_after(ranges, n, (const char *)addr);
    return i < n && ranges[i].start <= (const char *)addr;
}

static int
filter_visit(void **slot, int kind, void *arg)
{
    filter_state *fs = (filter_state *)arg;
    if (kind == _PyStorage_SLOT_OBJECT
        && !_PyStorage_InRanges(fs->ranges, fs->n, slot))
    {
        return 0;
    }
    return fs->visit(slot, kind, fs->arg);
}

/* In a restricted walk (visit is filter_visit()), visit the object slots
   at offsets off[0..noff) of the items [0, nitems) of size bytes from
   base that lie in the ranges. */
static int
visit_items_in(filter_state *fs, char *base, Py_ssize_t nitems, size_t size,
               const size_t *off, int noff)
{
    if (nitems <= 0) {
        return 0;
    }
    char *end = base + (size_t)nitems * size;
    for (size_t r = first_range_after(fs->ranges, fs->n, base);
         r < fs->n && fs->ranges[r].start < end; r++)
    {
        char *from = Py_MAX(fs->ranges[r].start, base);
        char *to = Py_MIN(fs->ranges[r].end, end);
        size_t i = (size_t)(from - base) / size;
        size_t last = (size_t)(to - base - 1) / size;
        for (; i <= last; i++) {
            for (int k = 0; k < noff; k++) {
                char *slot = base + i * size + off[k];
                if (slot >= from && slot < to) {
                    int res = fs->visit((void **)slot,
                                        _PyStorage_SLOT_OBJECT, fs->arg);
                    if (res != 0) {
                        return res;
                    }
                }
            }
        }
    }
    return 0;
}

/* A dict: its keys table and every key and value of it. */
static int
visit_dict(PyObject *op, _PyStorage_SlotVisitor visit, void *arg,
           const int check)
{
    PyDictObject *mp = (PyDictObject *)op;
    if (mp->ma_values != NULL) {
        /* A managed dict is always combined. */
        return -1;
    }
    VISIT(&mp->ma_keys, _PyStorage_SLOT_TABLE);
    PyDictKeysObject *keys = mp->ma_keys;
    if (keys == empty_keys() || PyStorage_Of(keys) == &PyStorage_DRAM) {
        /* The empty keys (of this binary, or, half-way through an
           open that rewrites static pointers, of another one). */
        return 0;
    }
    EXTENT(keys, sizeof(PyDictKeysObject));
    EXTENT(keys, keys_size(keys));
    /* Both entry layouts end with me_key, me_value. */
    Py_BUILD_ASSERT(offsetof(PyDictKeyEntry, me_value)
                    == offsetof(PyDictKeyEntry, me_key)
                       + sizeof(PyObject *));
    Py_BUILD_ASSERT(offsetof(PyDictUnicodeEntry, me_value)
                    == offsetof(PyDictUnicodeEntry, me_key)
                       + sizeof(PyObject *));
    char *entry;
    size_t size;
    if (DK_IS_UNICODE(keys)) {
        entry = (char *)&DK_UNICODE_ENTRIES(keys)->me_key;
        size = sizeof(PyDictUnicodeEntry);
    }
    else {
        entry = (char *)&DK_ENTRIES(keys)->me_key;
        size = sizeof(PyDictKeyEntry);
    }
    if (visit == filter_visit) {
        static const size_t kv[2] = {0, sizeof(PyObject *)};
        return visit_items_in((filter_state *)arg, entry, keys->dk_nentries,
                              size, kv, 2);
    }
    for (Py_ssize_t i = 0; i < keys->dk_nentries; i++, entry += size) {
        PyObject **kv = (PyObject **)entry;
        if (check && (kv[0] == NULL) != (kv[1] == NULL)) {
            EXTENT(op, SIZE_MAX);         /* half an entry */
        }
        VISIT(&kv[0], _PyStorage_SLOT_OBJECT);
        VISIT(&kv[1], _PyStorage_SLOT_OBJECT);
    }
    return 0;
}

/* A list: its items table and every item. */
static int
visit_list(PyObject *op, _PyStorage_SlotVisitor visit, void *arg,
           const int check)
{
    PyListObject *l = (PyListObject *)op;
    if (check && (Py_SIZE(l) < 0 || Py_SIZE(l) > l->allocated
                  || (l->ob_item == NULL && Py_SIZE(l) != 0)))
    {
        EXTENT(op, SIZE_MAX);
    }
    VISIT(&l->ob_item, _PyStorage_SLOT_TABLE);
    if (l->ob_item != NULL) {
        EXTENT(l->ob_item, var_size(0, l->allocated, sizeof(PyObject *)));
    }
    if (visit == filter_visit) {
        static const size_t item[1] = {0};
        return visit_items_in((filter_state *)arg, (char *)l->ob_item,
                              l->ob_item == NULL ? 0 : Py_SIZE(l),
                              sizeof(PyObject *), item, 1);
    }
    for (Py_ssize_t i = 0; i < Py_SIZE(l); i++) {
        if (check && l->ob_item[i] == NULL) {
            EXTENT(op, SIZE_MAX);
        }
        VISIT(&l->ob_item[i], _PyStorage_SLOT_OBJECT);
    }
    return 0;
}

/* A tuple: its items. */
static int
visit_tuple(PyObject *op, _PyStorage_SlotVisitor visit, void *arg,
            const int check)
{
    EXTENT(op, var_size((size_t)Py_TYPE(op)->tp_basicsize, Py_SIZE(op),
                        sizeof(PyObject *)));
    for (Py_ssize_t i = 0; i < Py_SIZE(op); i++) {
        if (check && ((PyTupleObject *)op)->ob_item[i] == NULL) {
            EXTENT(op, SIZE_MAX);
        }
        VISIT(&((PyTupleObject *)op)->ob_item[i], _PyStorage_SLOT_OBJECT);
    }
    return 0;
}

/* A set or frozenset: its table (unless the small one) and every key. */
static int
visit_set(PyObject *op, _PyStorage_SlotVisitor visit, void *arg,
          const int check)
{
    PySetObject *so = (PySetObject *)op;
    size_t slots = (size_t)so->mask + 1;
    if (check && (so->mask < PySet_MINSIZE - 1 || (slots & so->mask)
                  || so->fill > so->mask || so->used > so->fill
                  || so->used < 0))
    {
        EXTENT(op, SIZE_MAX);
    }
    if (so->table != so->smalltable) {
        VISIT(&so->table, _PyStorage_SLOT_TABLE);
    }
    /* The small table, exactly when the set is smallest. */
    if (check && (so->mask == PySet_MINSIZE - 1)
                 != (so->table == so->smalltable))
    {
        EXTENT(op, SIZE_MAX);
    }
    if (so->table != so->smalltable) {
        EXTENT(so->table, var_size(0, so->mask + 1, sizeof(setentry)));
    }
    if (visit == filter_visit) {
        static const size_t key[1] = {offsetof(setentry, key)};
        return visit_items_in((filter_state *)arg, (char *)so->table,
                              so->mask + 1, sizeof(setentry), key, 1);
    }
    for (Py_ssize_t i = 0; i <= so->mask; i++) {
        VISIT(&so->table[i].key, _PyStorage_SLOT_OBJECT);
    }
    return 0;
}

/* A bytearray: its buffer, and the pointer into it. */
static int
visit_bytearray(PyObject *op, _PyStorage_SlotVisitor visit, void *arg,
                const int check)
{
    PyByteArrayObject *b = (PyByteArrayObject *)op;
    if (b->ob_bytes != NULL) {
        /* ob_start points into the buffer: moved on its own (a move
           may stop between the two pointers), then checked. */
        if (check) {
            VISIT(&b->ob_start, _PyStorage_SLOT_INTERIOR);
        }
        VISIT(&b->ob_bytes, _PyStorage_SLOT_TABLE);
        Py_ssize_t start = b->ob_start - b->ob_bytes;
        if (check && (start < 0 || Py_SIZE(b) < 0
                      || Py_SIZE(b) >= b->ob_alloc
                      || start > b->ob_alloc - 1 - Py_SIZE(b)))
        {
            EXTENT(op, SIZE_MAX);
        }
        EXTENT(b->ob_bytes, var_size(0, b->ob_alloc, 1));
    }
    else if (check && (Py_SIZE(b) != 0 || b->ob_alloc != 0)) {
        EXTENT(op, SIZE_MAX);
    }
    return 0;
}

/* An instance: its dict, and its __slots__ of every class.  A
   managed one keeps its attributes in its dict, never in values
   (which _PyObject_GetDictPtr() would make a dict of: the slot is read
   without making one). */
static int
visit_instance(PyObject *op, _PyStorage_SlotVisitor visit, void *arg,
               const int check)
{
    PyTypeObject *tp = Py_TYPE(op);
    if (check && PyType_HasFeature(tp, Py_TPFLAGS_INLINE_VALUES)
        && _PyObject_InlineValues(op)->valid)
    {
        EXTENT(op, SIZE_MAX);
    }
    PyObject **dictptr = _PyStorage_InstanceDictPtr(op);
    if (dictptr != NULL) {
        VISIT(dictptr, _PyStorage_SLOT_OBJECT);
    }
    for (; tp != NULL && PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE);
         tp = tp->tp_base)
    {
        PyMemberDef *mp = _PyStorage_HeapTypeMembers(tp);
        for (Py_ssize_t i = 0; i < Py_SIZE(tp); i++, mp++) {
            if (mp->type == T_OBJECT_EX) {
                VISIT((char *)op + mp->offset, _PyStorage_SLOT_OBJECT);
            }
        }
    }
    return 0;
}

/* A str of a class statement's class (unicode_subtype_new()): its
   characters in a table, which an ASCII str's UTF-8 form shares (another
   str's is made on demand: volatile). */
static int
visit_str_subclass(PyObject *op, _PyStorage_SlotVisitor visit, void *arg,
                   const int check)
{
    PyASCIIObject *a = (PyASCIIObject *)op;
    PyCompactUnicodeObject *c = (PyCompactUnicodeObject *)op;
    PyUnicodeObject *u = (PyUnicodeObject *)op;
    unsigned int kind = a->state.kind;
    if (check && (a->state.compact || a->state.statically_allocated
                  || (kind != 1 && kind != 2 && kind != 4)
                  || (a->state.ascii && kind != 1)
                  || u->data.any == NULL))
    {
        EXTENT(op, SIZE_MAX);
    }
    if (check && a->state.ascii) {
        VISIT(&c->utf8, _PyStorage_SLOT_INTERIOR);
    }
    VISIT(&u->data.any, _PyStorage_SLOT_TABLE);
    EXTENT(u->data.any, var_size(kind, a->length, kind));
    if (check && a->state.ascii
        && (c->utf8 != u->data.any || c->utf8_length != a->length))
    {
        EXTENT(op, SIZE_MAX);
    }
    return 0;
}

/* An OrderedDict: a dict; its __dict__; its fast-nodes table, whose
   pointers into the nodes are never read in another process (the open
   pass has the table made again: _PyStorage_Rehash()); and its list of
   nodes, each a table that holds a key, whose back links the checking
   walk moves and checks, with the number of nodes (a cycle would make
   more than the dict's keys). */
static int
visit_odict(PyObject *op, _PyStorage_SlotVisitor visit, void *arg,
            const int check)
{
    _PyStorage_ODict *od = (_PyStorage_ODict *)op;
    int r = visit_dict(op, visit, arg, check);
    if (r != 0) {
        return r;
    }
    VISIT(&od->inst_dict, _PyStorage_SLOT_OBJECT);
    if (od->fast_nodes != NULL) {
        VISIT(&od->fast_nodes, _PyStorage_SLOT_TABLE);
        EXTENT(od->fast_nodes, od->fast_nodes_size < 0 ? SIZE_MAX
               : var_size(0, od->fast_nodes_size, sizeof(void *)));
    }
    Py_ssize_t n = 0;
    _PyStorage_ODictNode *prev = NULL;
    _PyStorage_ODictNode **link = &od->first;
    while (*link != NULL) {
        if (check && n++ >= od->dict.ma_used) {
            EXTENT(op, SIZE_MAX);
        }
        VISIT(link, _PyStorage_SLOT_TABLE);
        _PyStorage_ODictNode *node = *link;
        EXTENT(node, sizeof(_PyStorage_ODictNode));
        if (check) {
            VISIT(&node->prev, _PyStorage_SLOT_INTERIOR);
            if (node->prev != prev || node->key == NULL) {
                EXTENT(op, SIZE_MAX);
            }
        }
        VISIT(&node->key, _PyStorage_SLOT_OBJECT);
        prev = node;
        link = &node->next;
    }
    if (check) {
        VISIT(&od->last, _PyStorage_SLOT_INTERIOR);
        if (od->last != prev || n != od->dict.ma_used) {
            EXTENT(op, SIZE_MAX);
        }
    }
    return 0;
}

/* A deque: its blocks, from the left one, and the items in them.  The
   checking walk moves and checks the back links and the right block,
   requires the indexes that the length implies, and finds a cycle of
   blocks (a corrupt length would otherwise follow it for ever). */
static int
visit_deque(PyObject *op, _PyStorage_SlotVisitor visit, void *arg,
            const int check)
{
    const Py_ssize_t len = _PyStorage_DEQUE_BLOCKLEN;
    _PyStorage_Deque *dq = (_PyStorage_Deque *)op;
    Py_ssize_t n = Py_SIZE(dq);
    if (check && (n < 0 || n > PY_SSIZE_T_MAX / 2 || dq->leftindex < 0
                  || dq->leftindex >= len || dq->maxlen < -1
                  || (dq->maxlen >= 0 && n > dq->maxlen)
                  || dq->numfreeblocks != 0 || dq->leftblock == NULL))
    {
        EXTENT(op, SIZE_MAX);
    }
    Py_ssize_t last = dq->leftindex + n - 1;
    Py_ssize_t blocks = last < 0 ? 1 : last / len + 1;
    if (check && dq->rightindex != last - (blocks - 1) * len) {
        EXTENT(op, SIZE_MAX);
    }
    VISIT(&dq->leftblock, _PyStorage_SLOT_TABLE);
    _PyStorage_DequeBlock *b = dq->leftblock, *slow = b;
    EXTENT(b, sizeof(_PyStorage_DequeBlock));
    for (Py_ssize_t k = 0, lo = dq->leftindex; ; k++, lo = 0) {
        Py_ssize_t hi = k == blocks - 1 ? dq->rightindex : len - 1;
        for (Py_ssize_t i = lo; i <= hi; i++) {
            if (check && b->data[i] == NULL) {
                EXTENT(op, SIZE_MAX);
            }
            VISIT(&b->data[i], _PyStorage_SLOT_OBJECT);
        }
        if (k == blocks - 1) {
            break;
        }
        VISIT(&b->rightlink, _PyStorage_SLOT_TABLE);
        _PyStorage_DequeBlock *next = b->rightlink;
        EXTENT(next, sizeof(_PyStorage_DequeBlock));
        if (check) {
            VISIT(&next->leftlink, _PyStorage_SLOT_INTERIOR);
            if (k % 2) {
                slow = slow->rightlink;
            }
            if (next->leftlink != b || next == slow) {
                EXTENT(op, SIZE_MAX);
            }
        }
        b = next;
    }
    if (check) {
        VISIT(&dq->rightblock, _PyStorage_SLOT_INTERIOR);
        if (dq->rightblock != b) {
            EXTENT(op, SIZE_MAX);
        }
    }
    return 0;
}

/* The layout of a range (rangeobject.c's rangeobject): four ints. */
typedef struct {
    PyObject_HEAD
    PyObject *start, *stop, *step, *length;
} range_layout;

/* An object of the C types known by kind (_PyStorage_KindOf()): the
   objects it holds; -1 for a type of no kind. */
static int
visit_kind(PyObject *op, _PyStorage_SlotVisitor visit, void *arg,
           const int check)
{
    int kind = _PyStorage_KindOf(Py_TYPE(op));
    switch (kind) {
    case _PyStorage_KIND_RANGE: {
        Py_BUILD_ASSERT(sizeof(range_layout)
                        == sizeof(PyObject) + 4 * sizeof(PyObject *));
        range_layout *r = (range_layout *)op;
        VISIT(&r->start, _PyStorage_SLOT_OBJECT);
        VISIT(&r->stop, _PyStorage_SLOT_OBJECT);
        VISIT(&r->step, _PyStorage_SLOT_OBJECT);
        VISIT(&r->length, _PyStorage_SLOT_OBJECT);
        return 0;
    }
    case _PyStorage_KIND_SLICE: {
        PySliceObject *s = (PySliceObject *)op;
        VISIT(&s->start, _PyStorage_SLOT_OBJECT);
        VISIT(&s->stop, _PyStorage_SLOT_OBJECT);
        VISIT(&s->step, _PyStorage_SLOT_OBJECT);
        return 0;
    }
    case _PyStorage_KIND_TIME:
    case _PyStorage_KIND_DATETIME: {
        /* The tzinfo pointer exists when hastzinfo says so (a manager
           allocates it always: the type's basic size). */
        char has = ((_PyDateTime_BaseTZInfo *)op)->hastzinfo;
        if (check && has != 0 && has != 1) {
            EXTENT(op, SIZE_MAX);
        }
        if (has) {
            VISIT(kind == _PyStorage_KIND_TIME
                  ? &((PyDateTime_Time *)op)->tzinfo
                  : &((PyDateTime_DateTime *)op)->tzinfo,
                  _PyStorage_SLOT_OBJECT);
        }
        return 0;
    }
    case _PyStorage_KIND_TIMEZONE:
        VISIT(&((_PyStorage_TimeZone *)op)->offset, _PyStorage_SLOT_OBJECT);
        VISIT(&((_PyStorage_TimeZone *)op)->name, _PyStorage_SLOT_OBJECT);
        return 0;
    case _PyStorage_KIND_DECIMAL: {
        /* A manager's copy: its coefficient in the object (an interior
           pointer, moved with the object). */
        _PyStorage_Decimal *d = (_PyStorage_Decimal *)op;
        if (check) {
            VISIT(&d->dec.data, _PyStorage_SLOT_INTERIOR);
            if (!(d->dec.flags & _PyStorage_MPD_STATIC_DATA)
                || d->dec.data != d->data || d->dec.len < 0
                || d->dec.alloc < Py_MAX(d->dec.len, 4))
            {
                EXTENT(op, SIZE_MAX);
            }
            EXTENT(op, var_size(offsetof(_PyStorage_Decimal, data),
                                d->dec.alloc, sizeof(uint64_t)));
        }
        return 0;
    }
    case _PyStorage_KIND_DEFAULTDICT: {
        /* A dict, and its factory (a member, not a slot). */
        int r = visit_dict(op, visit, arg, check);
        if (r == 0) {
            VISIT(&((_PyStorage_DefaultDict *)op)->default_factory,
                  _PyStorage_SLOT_OBJECT);
        }
        return r;
    }
    case _PyStorage_KIND_ODICT:
        return visit_odict(op, visit, arg, check);
    case _PyStorage_KIND_DEQUE:
        return visit_deque(op, visit, arg, check);
    case _PyStorage_KIND_DATE:
    case _PyStorage_KIND_TIMEDELTA:
        return 0;
    default:
        return -1;
    }
}

/* Every slot of op, and with check, the extent of each of its parts: the
   visitor's first nonzero result, or -1 for a type that a manager cannot
   hold.  An instance of a class statement's class over a builtin has the
   builtin's parts, then its class's (visit_instance()). */
static int
visit_slots(PyObject *op, _PyStorage_SlotVisitor visit, void *arg,
            const int check)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyTypeObject *base = tp;
    while (PyType_HasFeature(base, Py_TPFLAGS_HEAPTYPE)) {
        base = base->tp_base;
    }
    if (base != tp && _PyStorage_KindOf(tp) >= 0) {
        /* A module's heap type of a known kind (Decimal, defaultdict) is
           not a class statement's: its own layout. */
        EXTENT(op, (size_t)tp->tp_basicsize);
        return visit_kind(op, visit, arg, check);
    }
    /* A compact str is smaller than a str's basic size (str_size()). */
    EXTENT(op, tp == &PyUnicode_Type ? sizeof(PyASCIIObject)
                                     : (size_t)tp->tp_basicsize);
    int r = 0;
    if (base == &PyDict_Type) {
        r = visit_dict(op, visit, arg, check);
    }
    else if (base == &PyList_Type) {
        r = visit_list(op, visit, arg, check);
    }
    else if (base == &PyTuple_Type) {
        r = visit_tuple(op, visit, arg, check);
    }
    else if (base == &PySet_Type || base == &PyFrozenSet_Type) {
        r = visit_set(op, visit, arg, check);
    }
    else if (base == &PyByteArray_Type && base == tp) {
        r = visit_bytearray(op, visit, arg, check);
    }
    else if (base == &PyLong_Type || base == &PyBool_Type) {
        EXTENT(op, var_size(offsetof(PyLongObject, long_value.ob_digit),
                            Py_MAX(_PyLong_DigitCount((PyLongObject *)op), 1),
                            sizeof(digit)));
    }
    else if (base == &PyBytes_Type) {
        EXTENT(op, var_size(offsetof(PyBytesObject, ob_sval) + 1, Py_SIZE(op),
                            1));
    }
    else if (base == &PyUnicode_Type) {
        if (base == tp) {
            EXTENT(op, str_size(op));
        }
        else {
            r = visit_str_subclass(op, visit, arg, check);
        }
    }
    else if (base != &PyFloat_Type && base != &PyComplex_Type
             && base != &PyBaseObject_Type)
    {
        return visit_kind(op, visit, arg, check);
    }
    if (r == 0 && base != tp) {
        r = visit_instance(op, visit, arg, check);
    }
    return r;
}

#undef VISIT
#undef EXTENT

int
_PyStorage_CheckHeld(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    if (PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE)) {
        PyObject **dictptr = _PyStorage_InstanceDictPtr(op);
        if (dictptr != NULL && *dictptr != NULL
            && !PyDict_CheckExact(*dictptr))
        {
            return -1;
        }
    }
    if (PyDict_Check(op)) {
        PyDictObject *mp = (PyDictObject *)op;
        PyDictKeysObject *keys = mp->ma_keys;
        if (keys == empty_keys()) {
            return mp->ma_used == 0 ? 0 : -1;
        }
        if (PyStorage_Of(keys) == &PyStorage_DRAM) {
            /* None (a block that an allocation had only zeroed), or a
               static table other than the empty keys. */
            return -1;
        }
        Py_ssize_t live = 0;
        for (Py_ssize_t i = 0; i < keys->dk_nentries; i++) {
            PyObject *key;
            if (DK_IS_UNICODE(keys)) {
                /* Its lookups take every key for a str. */
                key = DK_UNICODE_ENTRIES(keys)[i].me_key;
                if (key != NULL && !PyUnicode_CheckExact(key)) {
                    return -1;
                }
            }
            else {
                key = DK_ENTRIES(keys)[i].me_key;
            }
            live += key != NULL;
        }
        /* The table is rebuilt for ma_used entries. */
        return live == mp->ma_used ? 0 : -1;
    }
    switch (_PyStorage_KindOf(tp)) {
    case _PyStorage_KIND_RANGE: {
        /* rangeobject.c reads them as ints. */
        range_layout *r = (range_layout *)op;
        PyObject *parts[] = {r->start, r->stop, r->step, r->length};
        for (size_t i = 0; i < Py_ARRAY_LENGTH(parts); i++) {
            if (parts[i] == NULL || !PyLong_CheckExact(parts[i])) {
                return -1;
            }
        }
        return 0;
    }
    case _PyStorage_KIND_TIMEZONE: {
        _PyStorage_TimeZone *z = (_PyStorage_TimeZone *)op;
        PyTypeObject *delta = _PyStorage_TypeOfKind(_PyStorage_KIND_TIMEDELTA);
        PyErr_Clear();
        return (delta != NULL && z->offset != NULL
                && Py_IS_TYPE(z->offset, delta)
                && (z->name == NULL || PyUnicode_CheckExact(z->name))
                ? 0 : -1);
    }
    default:
        break;
    }
    if (!_PyStorage_HasBuiltinLayout(Py_TYPE(op)) && PyAnySet_Check(op)) {
        /* The table is rebuilt for so->used entries, and a lookup ends
           only at an empty slot that so->fill leaves. */
        PySetObject *so = (PySetObject *)op;
        Py_ssize_t fill = 0, used = 0;
        for (Py_ssize_t i = 0; i <= so->mask; i++) {
            PyObject *key = so->table[i].key;
            fill += key != NULL;
            used += key != NULL && key != _PySet_Dummy;
        }
        return fill == so->fill && used == so->used ? 0 : -1;
    }
    return 0;
}

int
_PyStorage_VisitSlots(PyObject *op, _PyStorage_SlotVisitor visit, void *arg)
{
    return visit_slots(op, visit, arg, 0);
}

int
_PyStorage_VisitSlotsIn(PyObject *op, const _PyStorage_Range *ranges,
                        size_t n, _PyStorage_SlotVisitor visit, void *arg)
{
    filter_state fs = {ranges, n, visit, arg};
    return visit_slots(op, filter_visit, &fs, 0);
}

int
_PyStorage_CheckSlots(PyObject *op, _PyStorage_SlotVisitor visit, void *arg)
{
    return visit_slots(op, visit, arg, 1);
}

int
_PyStorage_RehashEntries(PyObject *op)
{
    /* The hashes the table keeps: recomputed, and cached in the keys.
       Idempotent, so a crash in the middle needs no undo. */
    int changed = 0;
    if (PyDict_Check(op)) {
        PyDictKeysObject *keys = ((PyDictObject *)op)->ma_keys;
        for (Py_ssize_t i = 0; i < keys->dk_nentries; i++) {
            if (DK_IS_UNICODE(keys)) {
                PyObject *key = DK_UNICODE_ENTRIES(keys)[i].me_key;
                if (key != NULL && PyObject_Hash(key) == -1) {
                    return -1;
                }
            }
            else {
                PyDictKeyEntry *ep = &DK_ENTRIES(keys)[i];
                if (ep->me_key != NULL) {
                    Py_hash_t hash = PyObject_Hash(ep->me_key);
                    if (hash == -1) {
                        return -1;
                    }
                    changed |= ep->me_hash != hash;
                    ep->me_hash = hash;
                }
            }
        }
    }
    else if (PyAnySet_Check(op)) {
        PySetObject *so = (PySetObject *)op;
        for (Py_ssize_t i = 0; i <= so->mask; i++) {
            setentry *entry = &so->table[i];
            if (entry->key != NULL && entry->key != _PySet_Dummy) {
                Py_hash_t hash = PyObject_Hash(entry->key);
                if (hash == -1) {
                    return -1;
                }
                changed |= entry->hash != hash;
                entry->hash = hash;
            }
        }
    }
    return changed;
}

int
_PyStorage_RehashFrozenSets(PyObject **sets, size_t n)
{
    /* A frozenset's hash is made of the hashes it keeps of its elements
       (frozenset_hash()), and an element may be, or hold, a frozenset:
       the kept hashes are recomputed, with every frozenset's own hash
       forgotten first, until a round changes none.  A round makes right
       the frozensets one level further out, so this ends after as many
       rounds as frozensets nest, plus one; a __hash__ that changes from
       call to call could make it go on, hence the bound. */
    for (size_t round = 0; round <= n; round++) {
        int changed = 0;
        for (size_t i = 0; i < n; i++) {
            ((PySetObject *)sets[i])->hash = -1;
        }
        for (size_t i = 0; i < n; i++) {
            int r = _PyStorage_RehashEntries(sets[i]);
            if (r < 0) {
                return -1;
            }
            changed |= r;
        }
        if (!changed) {
            return 0;
        }
    }
    PyErr_SetString(PyExc_RuntimeError, "the hashes of frozensets do not "
                    "settle: an element's __hash__() changes from call to "
                    "call");
    return -1;
}

/* The index table of a combined dict, rebuilt where it is from the
   hashes of its entries (this process's, _PyStorage_RehashEntries()), as
   the dict's lookups probe it: no block is allocated, so that a pool too
   full for a new table still opens, and nothing is logged -- the open
   pass rebuilds every table, so a crash in the middle of one is repaired
   by the next open.  Deleted entries are not indexed: holes, until the
   next resize compacts them. */
static void
rebuild_indices(PyDictKeysObject *keys)
{
    int log2size = DK_LOG_SIZE(keys);
    size_t mask = ((size_t)1 << log2size) - 1;
    /* DKIX_EMPTY is -1 at every width. */
    memset(keys->dk_indices, 0xff, (size_t)1 << keys->dk_log2_index_bytes);
    keys->dk_version = 0;
    for (Py_ssize_t ix = 0; ix < keys->dk_nentries; ix++) {
        Py_hash_t hash;
        if (DK_IS_UNICODE(keys)) {
            PyObject *key = DK_UNICODE_ENTRIES(keys)[ix].me_key;
            if (key == NULL) {
                continue;
            }
            hash = _PyASCIIObject_CAST(key)->hash;
        }
        else {
            PyDictKeyEntry *ep = &DK_ENTRIES(keys)[ix];
            if (ep->me_key == NULL) {
                continue;
            }
            hash = ep->me_hash;
        }
        size_t i = (size_t)hash & mask;
        for (size_t perturb = (size_t)hash; ; ) {
            int64_t at = log2size < 8 ? ((int8_t *)keys->dk_indices)[i]
                : log2size < 16 ? ((int16_t *)keys->dk_indices)[i]
                : log2size < 32 ? ((int32_t *)keys->dk_indices)[i]
                : ((int64_t *)keys->dk_indices)[i];
            if (at == DKIX_EMPTY) {
                break;
            }
            perturb >>= 5;            /* dictobject.c's PERTURB_SHIFT */
            i = mask & (i * 5 + perturb + 1);
        }
        if (log2size < 8) {
            ((int8_t *)keys->dk_indices)[i] = (int8_t)ix;
        }
        else if (log2size < 16) {
            ((int16_t *)keys->dk_indices)[i] = (int16_t)ix;
        }
        else if (log2size < 32) {
            ((int32_t *)keys->dk_indices)[i] = (int32_t)ix;
        }
        else {
            ((int64_t *)keys->dk_indices)[i] = ix;
        }
    }
}

/* An OrderedDict's nodes keep their keys' hashes: this process's.  Its
   fast-nodes table is made again when next used (by the dict entry
   indexes, which do not change, but its pointers were not moved). */
static int
rehash_odict(PyObject *op)
{
    _PyStorage_ODict *od = (_PyStorage_ODict *)op;
    for (_PyStorage_ODictNode *node = od->first; node != NULL;
         node = node->next)
    {
        Py_hash_t hash = PyObject_Hash(node->key);
        if (hash == -1) {
            return -1;
        }
        node->hash = hash;
    }
    od->resize_sentinel = NULL;
    return 0;
}

int
_PyStorage_Rehash(PyObject *op)
{
    int kind = _PyStorage_KindOf(Py_TYPE(op));
    if (kind == _PyStorage_KIND_ODICT && rehash_odict(op) < 0) {
        return -1;
    }
    if (kind == _PyStorage_KIND_DEQUE) {
        /* The outer links of its end blocks, which another process left
           stale, as a debug build wants them. */
        _PyStorage_Deque *dq = (_PyStorage_Deque *)op;
        dq->leftblock->leftlink = NULL;
        dq->rightblock->rightlink = NULL;
        return 0;
    }
    if (PyDict_Check(op)) {
        PyDictObject *mp = (PyDictObject *)op;
        if (mp->ma_keys == empty_keys()) {
            return 0;
        }
        if (_PyStorage_RehashEntries(op) < 0) {
            return -1;
        }
        if (mp->ma_values != NULL) {
            return _PyDict_Rehash(op);
        }
        rebuild_indices(mp->ma_keys);
        return 0;
    }
    if (!_PyStorage_HasBuiltinLayout(Py_TYPE(op)) && PyAnySet_Check(op)) {
        Py_ssize_t used = ((PySetObject *)op)->used;
        if (used == 0) {
            return 0;
        }
        /* Always a new table (set_table_resize() leaves a small table
           without dummies as it is), sized as set_add_entry() would. */
        return (_PyStorage_RehashEntries(op) < 0 ? -1 : _PySet_Rehash(
            op, used > 50000 ? used * 2 : Py_MAX(used * 4, PySet_MINSIZE)));
    }
    return 0;
}
