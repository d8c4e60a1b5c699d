/* The memory-hierarchy rule: what storing a pointer into an object of a
   persistent storage manager does with the value.

   An object of a higher memory class (persistent) never points to a
   mutable object of a lower one (volatile): after the process is gone the
   pointer would dangle, and a change to the volatile object would never
   be durable.  So a store of value v into a persistent container does:

     v is a static singleton (None, True, False, Ellipsis, NotImplemented,
       the small ints and other objects of the runtime's static data):
       stored as it is; a manager remaps them when it opens its memory
     v already lives in the container's manager: stored as it is
     v is immutable, deeply (int, float, complex, str, bytes, and tuples
       and frozensets of such): a copy is made in the manager
     v is a volatile mutable (dict, list, set, bytearray, instance of a
       class written in Python) that the storing code holds exclusively,
       and so, recursively, is each mutable it contains: it is moved, that
       is copied into the manager; the volatile original is unreachable
       once the store is done, and dies with the store's references
     anything else (a shared mutable, an object of another persistent
       manager that is mutable, an object of a type a manager cannot hold):
       refused with TypeError, and nothing changes.

   "Exclusively" is proved by reference counts: the caller says how many
   references the storing code path itself holds (the evaluation stack's,
   a call argument's, one it took for the store); a value whose count is
   no larger is reachable from nowhere else.  A mutable inside it is
   reachable only through it when its count is 1.

   The rule is applied in two passes, so that it is all or nothing: the
   first walks the value and refuses without allocating; the second
   copies, in an atomic operation of the manager (begun and ended as
   every operation is, in Objects/storage.c).  The slow paths of the
   hooked writers that store a value (a dict's insertion, a set's add, an
   instance's dict...) follow, at the end of the file.
*/

#include "Python.h"
#include "pycore_dict.h"          // DK_ENTRIES()
#include "pycore_frame.h"         // _PyInterpreterFrame
#include "pycore_hashtable.h"     // _Py_hashtable_new()
#include "pycore_list.h"          // _PyList_AppendTakeRef()
#include "pycore_long.h"          // _PyLong_DigitCount()
#include "pycore_object.h"        // _PyObject_GC_TRACK()
#include "pycore_setobject.h"     // _PySet_NextEntry()
#include "pycore_tuple.h"         // _PyTuple_FromArray()
#include "pycore_storagemap.h"    // the hooks, the managers' API
#include "opcode.h"               // CALL_KW
#include "structmember.h"         // PyMemberDef, T_OBJECT_EX
#define _PY_DATETIME_IMPL        /* the structs, not the C API's variable */
#include "datetime.h"             // _PyDateTime_BaseTZInfo

#define PyBytesObject_SIZE (offsetof(PyBytesObject, ob_sval) + 1)


/* The tp_dealloc of every class that a class statement makes
   (subtype_dealloc()), found once from such a class. */
static destructor
class_statement_dealloc(void)
{
    static destructor dealloc;
    static int making;
    if (dealloc == NULL && !making) {
        /* In DRAM, whatever this thread's placement (the first call may
           come from the allocation of a placed instance).  The probe's
           making asks nothing of this again (a manager's class hook may
           ask whether it is a plain class). */
        if (PyStorage_PushPlacement(&PyStorage_DRAM) < 0) {
            PyErr_Clear();
            return NULL;
        }
        making = 1;
        PyObject *cls = PyObject_CallFunction((PyObject *)&PyType_Type,
                                              "s(O){}", "probe",
                                              &PyBaseObject_Type);
        making = 0;
        (void)PyStorage_PopPlacement(&PyStorage_DRAM);
        if (cls == NULL) {
            PyErr_Clear();
            return NULL;
        }
        dealloc = ((PyTypeObject *)cls)->tp_dealloc;
        Py_DECREF(cls);
    }
    return dealloc;
}

/* The builtin types whose instances a manager holds, which a class
   statement may derive from (Python's subclasses of them are held with
   the slots, dict and weak references that their classes add). */
static PyTypeObject *const class_bases[] = {
    &PyBaseObject_Type, &PyLong_Type, &PyFloat_Type, &PyComplex_Type,
    &PyUnicode_Type, &PyBytes_Type, &PyTuple_Type, &PyFrozenSet_Type,
    &PyDict_Type, &PyList_Type, &PySet_Type,
};

PyTypeObject *
_PyStorage_ClassBase(PyTypeObject *tp)
{
    /* Made by class statements, each over the one before, down to one
       of class_bases: the instances' memory is the base's, then the
       slots, and the dict and weak-reference pointers, which the
       managers know.  A heap type written in C (array.array,
       functools.partial...) has a deallocator of its own, and C-level
       state that they do not. */
    if (!PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE)
        || PyType_HasFeature(tp, Py_TPFLAGS_TYPE_SUBCLASS
                                 | Py_TPFLAGS_BASE_EXC_SUBCLASS))
    {
        return NULL;
    }
    destructor dealloc = class_statement_dealloc();
    PyTypeObject *cls = tp;
    while (PyType_HasFeature(cls, Py_TPFLAGS_HEAPTYPE)) {
        /* A heap type made by PyType_FromSpec() without a deallocator
           gets the same one: its size must be what a class statement
           makes, its base's and its slots, and the weak-reference list
           that it may add (3.13 keeps the dict, and a class statement's
           weak references, before the object). */
        PyTypeObject *base = cls->tp_base;
        Py_ssize_t weaklist = (cls->tp_weaklistoffset > 0
                               && base->tp_weaklistoffset == 0
                               ? (Py_ssize_t)sizeof(PyObject *) : 0);
        if (dealloc == NULL || cls->tp_dealloc != dealloc
            || cls->tp_itemsize != base->tp_itemsize
            || cls->tp_dictoffset > 0
            || cls->tp_basicsize != base->tp_basicsize + weaklist
                                    + Py_SIZE(cls)
                                      * (Py_ssize_t)sizeof(PyObject *))
        {
            return NULL;
        }
        cls = base;
    }
    for (size_t i = 0; i < Py_ARRAY_LENGTH(class_bases); i++) {
        if (cls == class_bases[i]) {
            return cls;
        }
    }
    return NULL;
}

int
_PyStorage_IsPlainClass(PyTypeObject *tp)
{
    return _PyStorage_ClassBase(tp) != NULL;
}

PyObject *
_PyStorage_ClassLayout(PyTypeObject *tp)
{
    /* "basicsize level level...": a level for each class from object up
       that adds to the instances' memory, with the names of the slots
       that it adds, in the order of their offsets (__slots__ sorted), and
       "__dict__" and "__weakref__" when it adds them.  A class made with
       the same levels, each over the one before, has the same layout.
       Over a builtin other than object, the builtin's name comes first:
       "dict 48 __dict__,__weakref__". */
    PyTypeObject *solid = _PyStorage_ClassBase(tp);
    assert(solid != NULL);
    PyObject *levels = PyList_New(0);
    if (levels == NULL) {
        return NULL;
    }
    for (PyTypeObject *cls = tp; cls != solid; cls = cls->tp_base) {
        PyTypeObject *base = cls->tp_base;
        PyObject *names = PyList_New(0);
        if (names == NULL) {
            goto error;
        }
        PyMemberDef *mp = _PyStorage_HeapTypeMembers(cls);
        int r = 0;
        for (Py_ssize_t i = 0; i < Py_SIZE(cls) && r == 0; i++, mp++) {
            PyObject *name = PyUnicode_FromString(mp->name);
            r = name == NULL ? -1 : PyList_Append(names, name);
            Py_XDECREF(name);
        }
        if (r == 0 && cls->tp_dictoffset != 0 && base->tp_dictoffset == 0) {
            r = PyList_Append(names, &_Py_ID(__dict__));
        }
        if (r == 0 && cls->tp_weaklistoffset != 0
            && base->tp_weaklistoffset == 0)
        {
            r = PyList_Append(names, &_Py_ID(__weakref__));
        }
        PyObject *level = NULL;
        if (r == 0 && PyList_GET_SIZE(names) != 0) {
            PyObject *comma = PyUnicode_FromOrdinal(',');
            level = comma == NULL ? NULL : PyUnicode_Join(comma, names);
            Py_XDECREF(comma);
            r = level == NULL ? -1 : PyList_Insert(levels, 0, level);
            Py_XDECREF(level);
        }
        Py_DECREF(names);
        if (r < 0) {
            goto error;
        }
    }
    PyObject *size = solid == &PyBaseObject_Type
                     ? PyUnicode_FromFormat("%zd", tp->tp_basicsize)
                     : PyUnicode_FromFormat("%s %zd", solid->tp_name,
                                            tp->tp_basicsize);
    if (size == NULL || PyList_Insert(levels, 0, size) < 0) {
        Py_XDECREF(size);
        goto error;
    }
    Py_DECREF(size);
    PyObject *space = PyUnicode_FromOrdinal(' ');
    PyObject *layout = space == NULL ? NULL : PyUnicode_Join(space, levels);
    Py_XDECREF(space);
    Py_DECREF(levels);
    return layout;
error:
    Py_DECREF(levels);
    return NULL;
}

/* Is v what "module:qualname" names in this process: the module
   (imported already) has v under that qualified name?  Not an object
   made in a function ("f.<locals>.g"), nor one whose names say where it
   is not (_pydecimal's classes say "decimal").  Never raises. */
static int
is_found_by_name(PyObject *v, PyObject *modname, PyObject *qualname)
{
    if (modname == NULL || qualname == NULL || !PyUnicode_Check(modname)
        || !PyUnicode_Check(qualname)
        || PyUnicode_FindChar(qualname, '<', 0, PY_SSIZE_T_MAX, 1) != -1)
    {
        PyErr_Clear();
        return 0;
    }
    PyObject *obj = PyImport_GetModule(modname);
    PyObject *parts = obj == NULL ? NULL
                      : PyUnicode_Split(qualname, _Py_LATIN1_CHR('.'), -1);
    for (Py_ssize_t i = 0; parts != NULL && obj != NULL
                           && i < PyList_GET_SIZE(parts); i++)
    {
        Py_SETREF(obj, PyObject_GetAttr(obj, PyList_GET_ITEM(parts, i)));
    }
    int found = obj == v;
    Py_XDECREF(obj);
    Py_XDECREF(parts);
    PyErr_Clear();
    return found;
}

int
_PyStorage_IsFindableClass(PyTypeObject *tp)
{
    /* Found again as "module:qualname", as pickle finds it. */
    if (!PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE)) {
        return 0;
    }
    return is_found_by_name((PyObject *)tp,
                            PyDict_GetItemWithError(tp->tp_dict,
                                                    &_Py_ID(__module__)),
                            ((PyHeapTypeObject *)tp)->ht_qualname);
}

/* The builtin whose layout an object of type tp has, for the rule: tp
   itself when it is a builtin that a manager holds, the builtin that a
   class statement's class derives from (_PyStorage_ClassBase()), or NULL
   for a type that a manager cannot hold.  *state tells whether its
   instances have a state of their own besides the builtin's: an instance
   of a class over object, or a class that adds a dict or slots (an
   instance of a named tuple has none). */
static PyTypeObject *
layout_of(PyTypeObject *tp, int *state)
{
    *state = 0;
    if (!PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE)) {
        if (tp == &PyBool_Type) {
            return &PyLong_Type;
        }
        return (tp == &PyLong_Type || tp == &PyFloat_Type
                || tp == &PyComplex_Type || tp == &PyUnicode_Type
                || tp == &PyBytes_Type || tp == &PyTuple_Type
                || tp == &PyFrozenSet_Type || tp == &PyDict_Type
                || tp == &PyList_Type || tp == &PySet_Type
                || tp == &PyByteArray_Type
                || _PyStorage_KindOf(tp) >= 0) ? tp : NULL;
    }
    if (_PyStorage_KindOf(tp) >= 0) {
        return tp;                /* decimal.Decimal: a module's heap type */
    }
    PyTypeObject *base = _PyStorage_ClassBase(tp);
    if (base == &PyBaseObject_Type) {
        *state = 1;
    }
    for (PyTypeObject *cls = tp; base != NULL && cls != base;
         cls = cls->tp_base)
    {
        *state |= Py_SIZE(cls) != 0 || cls->tp_dictoffset != 0;
    }
    return base;
}

/* Is an object of that layout and no state of its own a value, copied
   into a manager: immutable, and so are its parts (a tuple's items and a
   frozenset's keys are checked as values)? */
static int
is_value_layout(PyTypeObject *base)
{
    return (base == &PyLong_Type || base == &PyFloat_Type
            || base == &PyComplex_Type || base == &PyUnicode_Type
            || base == &PyBytes_Type || base == &PyTuple_Type
            || base == &PyFrozenSet_Type
            || (unsigned)_PyStorage_KindOf(base) < _PyStorage_KIND_VALUES_END);
}

/* Does the class say that its instances are values -- immutable, as
   fractions.Fraction, uuid.UUID, pathlib.PurePath and ipaddress's
   addresses are -- with __pmem_value__ = True (pmem.value() sets it)?
   Then a manager copies an instance rather than moves it, shared or not
   (what it holds follows the rule, as a moved instance's parts do).  1
   or 0, or -1 with an exception set. */
static int
is_value_class(PyTypeObject *tp)
{
    static PyObject *attribute;       /* under the GIL */
    if (attribute == NULL) {
        attribute = PyUnicode_InternFromString("__pmem_value__");
        if (attribute == NULL) {
            return -1;
        }
    }
    PyObject *flag = _PyType_Lookup(tp, attribute);
    return flag == NULL ? 0 : PyObject_IsTrue(flag);
}

/* Does v, an instance of a class statement's class over an immutable
   builtin, hold nothing of its own now: no attribute in its dict, no
   slot set?  Then it is a value as its builtin is (copied: a str
   subclass's instance used as a str), not a mutable that only a move
   may take (its identity kept).  1 or 0, or -1 with an exception set. */
static int
holds_nothing(PyObject *v, PyTypeObject *base)
{
    if (Py_TYPE(v)->tp_dictoffset != 0) {
        /* (Made from its inline values, if it had none.) */
        PyObject *dict = PyObject_GenericGetDict(v, NULL);
        if (dict == NULL) {
            return -1;
        }
        Py_ssize_t n = PyDict_Check(dict) ? PyDict_GET_SIZE(dict) : 1;
        Py_DECREF(dict);
        if (n != 0) {
            return 0;
        }
    }
    for (PyTypeObject *cls = Py_TYPE(v); cls != base; cls = cls->tp_base) {
        PyMemberDef *mp = _PyStorage_HeapTypeMembers(cls);
        for (Py_ssize_t i = 0; i < Py_SIZE(cls); i++, mp++) {
            if (mp->type == Py_T_OBJECT_EX
                && *(PyObject **)((char *)v + mp->offset) != NULL)
            {
                return 0;
            }
        }
    }
    return 1;
}

/* Is v, whose layout is base's (layout_of(), with state), a value that a
   manager copies, shared or not -- an immutable builtin, a subclass's
   instance that holds nothing of its own, a value class's instance --
   rather than a mutable that only a move may take?  1, 2 for a value
   class's instance (whose parts are held as a moved instance's are), 0,
   or -1 with an exception set. */
static int
is_value(PyObject *v, PyTypeObject *base, int state)
{
    int value = is_value_layout(base);
    if (value && state) {
        value = holds_nothing(v, base);
    }
    if (value == 0 && Py_TYPE(v) != base) {
        value = is_value_class(Py_TYPE(v));
        return value > 0 ? 2 : value;
    }
    return value;
}

/* A reference into __main__ is refused: the program that runs next
   defines its classes and functions only after the pool has opened, if
   it defines them at all (a placeholder waits for a class of __main__;
   a reference cannot).  NULL with *why set, for reference_name(). */
static PyObject *
refuse_main(PyObject *result, const char **why)
{
    if (result != NULL
        && PyUnicode_Tailmatch(result, &_Py_ID(__main__), 0, 8, -1) == 1
        && PyUnicode_READ_CHAR(result, 8) == ':')
    {
        Py_DECREF(result);
        *why = "an enum member, a class or a function is stored as a "
               "reference by module and name, and one of __main__ is not "
               "there when the next program opens the pool: define it in "
               "a module (or store a value instead)";
        return NULL;
    }
    return result;
}

/* "module:qualname" of v, a class or a function, when that name finds v
   in this process (its module loaded): a pool refers to it, as pickle
   does (a defaultdict's factory, a class kept as a value).  When it does
   not (a lambda, a function or class made in a function), NULL with
   *why set to the reason to refuse it; NULL with an exception set when
   this process fails. */
static PyObject *
code_reference_name(PyObject *v, const char **why)
{
    PyObject *module = NULL, *qualname = NULL, *result = NULL;
    if (PyObject_GetOptionalAttr(v, &_Py_ID(__module__), &module) < 0
        || PyObject_GetOptionalAttr(v, &_Py_ID(__qualname__),
                                    &qualname) < 0)
    {
        goto done;
    }
    if (is_found_by_name(v, module, qualname)) {
        result = PyUnicode_FromFormat("%U:%U", module, qualname);
    }
    else {
        *why = "a class or a function is stored as a reference, found "
               "again by module and qualified name, and this one is not "
               "where they say (a lambda, a method of an object, or one "
               "made inside a function?): define it at module level";
    }
done:
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    return refuse_main(result, why);
}

/* A zoneinfo.ZoneInfo: the zone of its key, as ZoneInfo(key) gives it
   (the class keeps one instance per key): "zoneinfo:ZoneInfo('Europe/
   Paris')".  One made otherwise (from a file, or with no_cache) has no
   name.  As reference_name(). */
static PyObject *
zoneinfo_reference_name(PyObject *v, const char **why)
{
    PyObject *key = PyObject_GetAttrString(v, "key");
    PyObject *again = (key == NULL || !PyUnicode_CheckExact(key)) ? NULL
                      : PyObject_CallOneArg((PyObject *)Py_TYPE(v), key);
    PyObject *result = NULL;
    if (again == v) {
        result = PyUnicode_FromFormat("zoneinfo:ZoneInfo(%R)", key);
    }
    else if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        *why = "a ZoneInfo is stored as a reference to the zone of its "
               "key, as ZoneInfo(key) gives it, and this one was made "
               "otherwise (ZoneInfo.from_file(), ZoneInfo.no_cache())";
    }
    Py_XDECREF(again);
    Py_XDECREF(key);
    return result;
}

/* The name by which every process finds v, when v is an object that a
   persistent manager refers to rather than copies: an enum member (its
   class's member, by the class's module and qualified name: "module:
   qualname.NAME", or a combination of flags, "module:qualname(6)"), a
   class or a function (code_reference_name()), or datetime.timezone.utc
   (a static object of the datetime module).  A new str; NULL with *why
   set when v is such an object that no name finds (refused, for that
   reason); NULL for any other object; NULL with an exception set when
   this process fails. */
static PyObject *
reference_name(PyObject *v, const char **why)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (!PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE | Py_TPFLAGS_TYPE_SUBCLASS)
        && (_PyStorage_HasBuiltinLayout(tp) || tp == &PyFloat_Type))
    {
        return NULL;              /* an int, a str, a tuple... (most) */
    }
    if (PyType_Check(v) || PyFunction_Check(v) || PyCFunction_Check(v)) {
        return code_reference_name(v, why);
    }
    if (!PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE)) {
        if (_PyStorage_KindOf(tp) != _PyStorage_KIND_TIMEZONE) {
            return NULL;
        }
        PyDateTime_CAPI *api = (PyDateTime_CAPI *)PyCapsule_Import(
            PyDateTime_CAPSULE_NAME, 0);
        if (api == NULL) {
            return NULL;
        }
        return v == api->TimeZone_UTC
               ? PyUnicode_FromString("datetime:timezone.utc") : NULL;
    }
    if (strcmp(tp->tp_name, "zoneinfo.ZoneInfo") == 0) {
        return zoneinfo_reference_name(v, why);
    }
    /* An enum member: its class's metaclass is enum.EnumType (the enum
       module is loaded, then). */
    static PyObject *enum_type;       /* under the GIL */
    if (enum_type == NULL) {
        PyObject *modules = PyImport_GetModuleDict();
        PyObject *enum_module = NULL;
        if (PyDict_GetItemStringRef(modules, "enum", &enum_module) <= 0) {
            return NULL;
        }
        enum_type = PyObject_GetAttrString(enum_module, "EnumType");
        Py_DECREF(enum_module);
        if (enum_type == NULL || !PyType_Check(enum_type)) {
            Py_CLEAR(enum_type);
            PyErr_Clear();
            return NULL;
        }
    }
    if (!PyObject_TypeCheck((PyObject *)tp, (PyTypeObject *)enum_type)) {
        return NULL;
    }
    if (!_PyStorage_IsFindableClass(tp)) {
        *why = "an enum member is stored as a reference to its class's "
               "member, and its class is not where its module and "
               "qualified name say (one defined inside a function?): "
               "define it at module level";
        return NULL;
    }
    PyObject *module = PyDict_GetItemWithError(tp->tp_dict,
                                               &_Py_ID(__module__));
    if (module == NULL || !PyUnicode_Check(module)) {
        return NULL;
    }
    /* A member, by name; a pseudo-member (a combination of flags), by
       its int value, as the class makes it again: "module:qualname(6)". */
    PyObject *result = NULL;
    PyObject *name = PyObject_GetAttrString(v, "_name_");
    PyObject *members = name == NULL ? NULL : PyObject_GetAttrString(
        (PyObject *)tp, "_member_map_");
    PyObject *member = NULL;
    if (members != NULL && PyDict_Check(members) && PyUnicode_Check(name)) {
        member = PyDict_GetItemWithError(members, name);
    }
    if (member == v) {
        result = PyUnicode_FromFormat(
            "%U:%U.%U", module, ((PyHeapTypeObject *)tp)->ht_qualname, name);
    }
    else if (!PyErr_Occurred()) {
        PyObject *value = PyObject_GetAttrString(v, "_value_");
        PyObject *again = (value == NULL || !PyLong_CheckExact(value)) ? NULL
                          : PyObject_CallOneArg((PyObject *)tp, value);
        if (again == v) {
            result = PyUnicode_FromFormat(
                "%U:%U(%S)", module, ((PyHeapTypeObject *)tp)->ht_qualname,
                value);
        }
        Py_XDECREF(again);
        Py_XDECREF(value);
    }
    Py_XDECREF(name);
    Py_XDECREF(members);
    if (result == NULL && (!PyErr_Occurred()
                           || PyErr_ExceptionMatches(PyExc_Exception)))
    {
        PyErr_Clear();
        *why = "an enum member is stored as a reference to its class's "
               "member, found again by name or by its int value, and this "
               "one is neither";
    }
    return refuse_main(result, why);
}

static int
refuse(PyObject *v, PyStorageManager *sm, const char *why)
{
    PyErr_Format(PyExc_TypeError,
                 "cannot store a '%.100s' object in %s storage: %s",
                 Py_TYPE(v)->tp_name, sm->name, why);
    return -1;
}

/* The __slots__ of instance v, as an array of member definitions of
   its class and its bases: calls visit for each object slot. */
typedef int (*slot_visitor)(PyObject **slot, void *arg);

static int
visit_slots(PyObject *v, slot_visitor visit, void *arg)
{
    /* Not those that the class names in __pmem_volatile__: caches of
       this process (pathlib's hash of a str), which a persistent manager
       never stores (and forgets when it maps its objects again). */
    static PyObject *attribute;       /* under the GIL */
    if (attribute == NULL) {
        attribute = PyUnicode_InternFromString("__pmem_volatile__");
        if (attribute == NULL) {
            return -1;
        }
    }
    PyObject *skip = NULL;
    if (PyObject_GetOptionalAttr((PyObject *)Py_TYPE(v), attribute,
                                 &skip) < 0)
    {
        return -1;
    }
    if (skip != NULL && !PyTuple_Check(skip)) {
        Py_CLEAR(skip);
    }
    for (PyTypeObject *tp = Py_TYPE(v);
         tp != NULL && PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE);
         tp = tp->tp_base)
    {
        PyMemberDef *mp = _PyStorage_HeapTypeMembers(tp);
        for (Py_ssize_t i = 0; i < Py_SIZE(tp); i++, mp++) {
            int volatile_slot = 0;
            for (Py_ssize_t k = 0; skip != NULL
                                   && k < PyTuple_GET_SIZE(skip); k++)
            {
                PyObject *name = PyTuple_GET_ITEM(skip, k);
                volatile_slot |= PyUnicode_Check(name)
                    && PyUnicode_CompareWithASCIIString(name, mp->name) == 0;
            }
            if (mp->type == T_OBJECT_EX && !volatile_slot) {
                int r = visit((PyObject **)((char *)v + mp->offset), arg);
                if (r) {
                    Py_XDECREF(skip);
                    return r;
                }
            }
        }
    }
    Py_XDECREF(skip);
    return 0;
}


/* --- pass 1: may v be stored, and how? ----------------------------------- */

typedef struct {
    PyStorageManager *sm;
    int exclusive;
} check_state;

/* The parts of a value are checked as values (recursion). */
static int check_value(PyObject *v, PyStorageManager *sm, int exclusive);

static int
check_slot(PyObject **slot, void *arg)
{
    /* A part is exclusive when the path to its holder is and the holder
       holds its only reference (a mutable held by a slot and by a
       variable is shared: moving it would split it in two). */
    check_state *st = (check_state *)arg;
    return *slot == NULL ? 0 : check_value(*slot, st->sm,
                                           st->exclusive
                                           && Py_REFCNT(*slot) == 1);
}

/* The same, for _PyStorage_VisitSlots(). */
static int
check_part(void **slot, int kind, void *arg)
{
    return kind == _PyStorage_SLOT_OBJECT ? check_slot((PyObject **)slot, arg)
                                          : 0;
}

/* The items of tuple or list v.  A tuple's item is exclusive when the
   path to the tuple is and the tuple holds its only reference; a list
   is exclusive already (a shared list is refused first). */
static int
check_items(PyObject *v, PyStorageManager *sm, int exclusive)
{
    PyObject **items = PyTuple_Check(v) ? ((PyTupleObject *)v)->ob_item
                                        : ((PyListObject *)v)->ob_item;
    for (Py_ssize_t i = 0; i < Py_SIZE(v); i++) {
        if (check_value(items[i], sm,
                        exclusive && Py_REFCNT(items[i]) == 1) < 0)
        {
            return -1;
        }
    }
    return 0;
}

/* The keys of a set or frozenset: hashable, immutable in practice, so
   never moved. */
static int
check_keys(PyObject *v, PyStorageManager *sm)
{
    Py_ssize_t pos = 0;
    PyObject *key;
    Py_hash_t hash;
    while (_PySet_NextEntry(v, &pos, &key, &hash)) {
        if (check_value(key, sm, 0) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The keys and values of an exclusive dict. */
static int
check_dict_items(PyObject *v, PyStorageManager *sm)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(v, &pos, &key, &value)) {
        if (check_value(key, sm, 0) < 0
            || check_value(value, sm, Py_REFCNT(value) == 1) < 0)
        {
            return -1;
        }
    }
    return 0;
}

/* The items of an exclusive deque, in its blocks. */
static int
check_deque_items(PyObject *v, PyStorageManager *sm)
{
    _PyStorage_Deque *dq = (_PyStorage_Deque *)v;
    _PyStorage_DequeBlock *b = dq->leftblock;
    Py_ssize_t i = dq->leftindex;
    for (Py_ssize_t n = 0; n < Py_SIZE(dq); n++) {
        PyObject *item = b->data[i];
        if (check_value(item, sm, Py_REFCNT(item) == 1) < 0) {
            return -1;
        }
        if (++i == _PyStorage_DEQUE_BLOCKLEN) {
            b = b->rightlink;
            i = 0;
        }
    }
    return 0;
}

/* An exclusive instance: a class that a persistent manager can find
   again, its dict (made on demand) and its slots. */
static int
check_instance(PyObject *v, PyStorageManager *sm)
{
    PyTypeObject *tp = Py_TYPE(v);
    if ((sm->flags & PyStorage_PERSISTENT)
        && !_PyStorage_IsFindableClass(tp))
    {
        return refuse(v, sm, "persistent storage finds classes again by "
                             "module and qualified name, and its class is "
                             "not where they say (one defined inside a "
                             "function, or whose __module__ or __qualname__ "
                             "was changed): define it at module level");
    }
    PyObject **dictptr = _PyStorage_InstanceDictPtr(v);
    if (dictptr != NULL && *dictptr != NULL) {
        if (check_value(*dictptr, sm, Py_REFCNT(*dictptr) == 1) < 0) {
            return -1;
        }
    }
    else if (tp->tp_dictoffset != 0) {
        /* No dict yet (its attributes may be inline values): made. */
        PyObject *dict = PyObject_GenericGetDict(v, NULL);
        if (dict == NULL) {
            return -1;
        }
        /* One reference is ours. */
        int r = check_value(dict, sm, Py_REFCNT(dict) == 2);
        Py_DECREF(dict);
        if (r < 0) {
            return -1;
        }
    }
    check_state st = {sm, 1};
    return visit_slots(v, check_slot, &st);
}

/* This thread's frames that run code, from the innermost: the first
   (after NULL), then the one after f. */
static _PyInterpreterFrame *
code_frame(_PyInterpreterFrame *f)
{
    f = f == NULL ? _PyThreadState_GET()->current_frame : f->previous;
    while (f != NULL
           && (!PyCode_Check(f->f_executable) || _PyFrame_IsIncomplete(f)))
    {
        f = f->previous;
    }
    return f;
}

/* The value that _PyStorage_StoreSlow() checks (under the GIL). */
static PyObject *storing_value;

/* Does container (a list, tuple, set or dict: its values) hold v? */
static int
contains_object(PyObject *container, PyObject *v)
{
    if (PyList_CheckExact(container) || PyTuple_CheckExact(container)) {
        PyObject **items = PyList_CheckExact(container)
                           ? ((PyListObject *)container)->ob_item
                           : ((PyTupleObject *)container)->ob_item;
        for (Py_ssize_t i = 0; i < Py_SIZE(container); i++) {
            if (items[i] == v) {
                return 1;
            }
        }
    }
    else if (PyDict_CheckExact(container)) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(container, &pos, &key, &value)) {
            if (value == v || key == v) {
                return 1;
            }
        }
    }
    else if (PyAnySet_CheckExact(container)) {
        Py_ssize_t pos = 0;
        PyObject *key;
        Py_hash_t hash;
        while (_PySet_NextEntry(container, &pos, &key, &hash)) {
            if (key == v) {
                return 1;
            }
        }
    }
    return 0;
}

/* A container that a variable of this thread's frames refers to and
   that holds v, a part of a value being stored, named for a refusal:
   " (it is in the list 'records' of load(), at least)", or "".  A new
   str, or NULL with an exception set. */
static PyObject *
container_holding(PyObject *v)
{
    for (_PyInterpreterFrame *f = code_frame(NULL); f != NULL;
         f = code_frame(f))
    {
        PyCodeObject *co = _PyFrame_GetCode(f);
        for (int i = 0; i < co->co_nlocalsplus; i++) {
            PyObject *c = f->localsplus[i];
            if (c != NULL && c != v && contains_object(c, v)) {
                return PyUnicode_FromFormat(
                    " (it is in the %s %R of %U(), at least)",
                    Py_TYPE(c)->tp_name,
                    PyTuple_GET_ITEM(co->co_localsplusnames, i),
                    co->co_qualname);
            }
        }
        if (f->f_locals != NULL && PyDict_Check(f->f_locals)) {
            PyObject *key, *c;
            Py_ssize_t pos = 0;
            while (PyDict_Next(f->f_locals, &pos, &key, &c)) {
                if (c != v && c != f->f_locals && contains_object(c, v)) {
                    return PyUnicode_FromFormat(
                        " (it is in the %s %R, a %s, at least)",
                        Py_TYPE(c)->tp_name, key,
                        f->f_locals == f->f_globals ? "global"
                                                    : "local");
                }
            }
        }
    }
    return PyUnicode_FromString("");
}

/* A variable of this thread's frames that refers to v, named for a
   refusal: " (by the variable 'x' of put(), at least)", " (by the global
   'x', at least)", or "" when none does (a container, another
   thread...).  Only the variables are looked at, not the evaluation
   stacks, which hold the storing operation's own references.  A new
   str, or NULL with an exception set. */
static PyObject *
variable_holding(PyObject *v)
{
    for (_PyInterpreterFrame *f = code_frame(NULL); f != NULL;
         f = code_frame(f))
    {
        PyCodeObject *co = _PyFrame_GetCode(f);
        for (int i = 0; i < co->co_nlocalsplus; i++) {
            if (f->localsplus[i] == v) {
                return PyUnicode_FromFormat(
                    " (by the variable %R of %U(), at least)",
                    PyTuple_GET_ITEM(co->co_localsplusnames, i),
                    co->co_qualname);
            }
        }
        if (f->f_locals != NULL && PyDict_Check(f->f_locals)) {
            PyObject *key, *value;
            Py_ssize_t pos = 0;
            while (PyDict_Next(f->f_locals, &pos, &key, &value)) {
                if (value == v) {
                    return f->f_locals == f->f_globals
                        ? PyUnicode_FromFormat(" (by the global %R, at least)",
                                               key)
                        : PyUnicode_FromFormat(" (by the variable %R of %U, "
                                               "at least)", key,
                                               co->co_qualname);
                }
            }
        }
    }
    return PyUnicode_FromString("");
}

/* A mutable v that cannot be moved into sm: it is another manager's, or
   referenced from elsewhere -- by a variable, when one of this thread's
   frames has one that does. */
static int
refuse_shared(PyObject *v, PyStorageManager *sm, PyStorageManager *owner)
{
    if (owner != NULL) {
        return refuse(v, sm, "it is a mutable object of another storage "
                             "manager; store a copy (copy.deepcopy())");
    }
    /* The value being stored moves with the references of the frames'
       variables and of their lists and dicts (frame_references(),
       container_references()), so what keeps it shared is something
       else; what keeps one of its parts shared may be a variable, or a
       list that a variable refers to. */
    PyObject *where = v == storing_value
        ? PyUnicode_FromString(" (by something else than this thread's "
                               "variables and the lists and dicts that they "
                               "refer to: an object, a set, another thread, "
                               "a suspended generator...)")
        : variable_holding(v);
    if (where != NULL && PyUnicode_GET_LENGTH(where) == 0) {
        Py_SETREF(where, container_holding(v));
    }
    if (where == NULL) {
        return -1;
    }
    PyErr_Format(PyExc_TypeError,
                 "cannot store a '%.100s' object in %s storage: it is a "
                 "mutable volatile object that is referenced from "
                 "elsewhere%U; store a new one (x.copy(), "
                 "copy.deepcopy(x)), or drop the other references first",
                 Py_TYPE(v)->tp_name, sm->name, where);
    Py_DECREF(where);
    return -1;
}

/* v's type is none that a manager holds: refused, with what to store
   instead when there is an obvious one. */
static int
refuse_type(PyObject *v, PyStorageManager *sm)
{
    static const struct {
        const char *type;
        const char *instead;
    } alternatives[] = {
        {"array.array", "a list (x.tolist()) or bytes (x.tobytes())"},
        {"memoryview", "bytes (x.tobytes())"},
        {"dict_keys", "a list or a set of them (list(x))"},
        {"odict_keys", "a list of them (list(x))"},
        {"dict_values", "a list of them (list(x))"},
        {"odict_values", "a list of them (list(x))"},
        {"dict_items", "a list of them (list(x))"},
        {"odict_items", "a list of them (list(x))"},
        {"mappingproxy", "a dict (dict(x))"},
        {"re.Pattern", "its pattern (x.pattern) and flags"},
        {"functools.partial", "a function defined at module level"},
        /* (A name that ends with a dot: its module's types.)  An open
           file (also an iterator), a StringIO, a BytesIO. */
        {"_io.", "its name (x.name), to open it again, or what it holds "
                 "(x.read(); x.getvalue() of a StringIO or BytesIO)"},
    };
    PyTypeObject *tp = Py_TYPE(v);
    const char *instead = NULL;
    for (size_t i = 0; i < Py_ARRAY_LENGTH(alternatives); i++) {
        const char *type = alternatives[i].type;
        size_t len = strlen(type);
        if (type[len - 1] == '.' ? strncmp(tp->tp_name, type, len) == 0
                                 : strcmp(tp->tp_name, type) == 0)
        {
            instead = alternatives[i].instead;
        }
    }
    if (instead == NULL && tp->tp_iternext != NULL
        && tp->tp_iternext != &_PyObject_NextNotImplemented)
    {
        /* A generator, a map, an iterator... */
        instead = "a list of what it gives (list(x))";
    }
    if (instead == NULL) {
        return refuse(v, sm, "its type is not one that a persistent "
                             "storage manager can hold");
    }
    PyErr_Format(PyExc_TypeError,
                 "cannot store a '%.100s' object in %s storage: its type is "
                 "not one that a persistent storage manager can hold; store "
                 "%s instead", tp->tp_name, sm->name, instead);
    return -1;
}

/* Can v be stored into sm?  exclusive: the path to v from the stored
   value holds the only references to every object on it.  Immutables
   are copied, exclusive mutables moved; a shared mutable is refused. */
static int
check_value(PyObject *v, PyStorageManager *sm, int exclusive)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (_PyStorage_IsStatic(v)) {
        return 0;
    }
    PyStorageManager *owner = _PyStorage_Lookup(v);
    if (owner == sm) {
        return 0;
    }
    const char *why = NULL;
    PyObject *name = reference_name(v, &why);
    if (name != NULL) {
        Py_DECREF(name);
        return sm->refer != NULL ? 0 : refuse(
            v, sm, "it is an object that every process finds by name, "
                   "which this storage cannot refer to");
    }
    if (why != NULL) {
        return refuse(v, sm, why);
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    int state;
    PyTypeObject *base = layout_of(tp, &state);
    if (base == NULL) {
        return refuse_type(v, sm);
    }
    int value = is_value(v, base, state);
    if (value < 0) {
        return -1;
    }
    if (value == 2) {
        /* A value class's instance, copied: its parts as a moved
           instance's are. */
        exclusive = 1;
    }
    if (!value && (owner != NULL || !exclusive)) {
        return refuse_shared(v, sm, owner);
    }
    if (value && tp == base && _PyStorage_KindOf(tp) >= 0) {
        /* A range, a slice, a datetime...: what it holds is copied as
           values are. */
        check_state st = {sm, 0};
        return _PyStorage_VisitSlots(v, check_part, &st) != 0 ? -1 : 0;
    }
    if (value && base != &PyTuple_Type && base != &PyFrozenSet_Type
        && tp == base)
    {
        /* Numbers, str and bytes have no references to follow. */
        return 0;
    }
    if (Py_EnterRecursiveCall(" while storing a value")) {
        return -1;
    }
    int r = 0;
    if (base == &PyTuple_Type) {
        r = check_items(v, sm, exclusive);
    }
    else if (base == &PyList_Type) {
        r = check_items(v, sm, 1);
    }
    else if (base == &PyFrozenSet_Type || base == &PySet_Type) {
        r = check_keys(v, sm);
    }
    else if (base == &PyDict_Type) {
        r = check_dict_items(v, sm);
    }
    else if (_PyStorage_KindOf(base) == _PyStorage_KIND_DEFAULTDICT) {
        PyObject *factory = ((_PyStorage_DefaultDict *)v)->default_factory;
        r = check_dict_items(v, sm);
        if (r == 0 && factory != NULL) {
            r = check_value(factory, sm, 0);
        }
    }
    else if (_PyStorage_KindOf(base) == _PyStorage_KIND_DEQUE) {
        r = check_deque_items(v, sm);
    }
    else if (_PyStorage_KindOf(base) == _PyStorage_KIND_ODICT) {
        /* Its items, and its __dict__ (made on demand). */
        PyObject *dict = ((_PyStorage_ODict *)v)->inst_dict;
        r = check_dict_items(v, sm);
        if (r == 0 && dict != NULL) {
            r = check_value(dict, sm, Py_REFCNT(dict) == 1);
        }
    }
    if (r == 0 && tp != base) {
        /* The class, and what its instance adds. */
        r = check_instance(v, sm);
    }
    Py_LeaveRecursiveCall();
    return r;
}


/* --- pass 2: copy into the manager --------------------------------------- */

/* The parts of a value are copied as values (recursion). */
static PyObject *copy_value(PyObject *v, PyStorageManager *sm);

/* The copies made of the items of one container: an item that it holds
   more than once (a repetition's: [0.0] * n, {k: 0.0 for k in keys}) is
   copied once, as the filled lists' are (store_new_items()).  A small
   cache by address, not a complete memo: a repetition that it misses is
   copied again, which costs room, not correctness.  It holds references
   to both, so that an address it keeps is never another object's. */
#define COPY_MEMO_SIZE 16
typedef struct {
    PyObject *item[COPY_MEMO_SIZE];
    PyObject *copy[COPY_MEMO_SIZE];
} copy_memo;

static PyObject *
copy_item(copy_memo *m, PyObject *v, PyStorageManager *sm)
{
    size_t h = ((uintptr_t)v >> 4) % COPY_MEMO_SIZE;
    if (m->item[h] == v) {
        return Py_NewRef(m->copy[h]);
    }
    PyObject *copy = copy_value(v, sm);
    if (copy != NULL && copy != v) {
        Py_XSETREF(m->item[h], Py_NewRef(v));
        Py_XSETREF(m->copy[h], Py_NewRef(copy));
    }
    return copy;
}

static void
copy_memo_clear(copy_memo *m)
{
    for (int h = 0; h < COPY_MEMO_SIZE; h++) {
        Py_CLEAR(m->item[h]);
        Py_CLEAR(m->copy[h]);
    }
}

/* A byte copy of the first size bytes of immutable v (no references
   inside) in sm, in a block of whole bytes (at least size), the rest
   zeroed, as is the pre-header (the dict and weak references of a class
   statement's instance). */
static PyObject *
copy_bytes(PyObject *v, size_t size, size_t whole, PyStorageManager *sm)
{
    PyTypeObject *tp = Py_TYPE(v);
    size_t presize = _PyType_PreHeaderSize(tp);
    char *mem = sm->alloc(sm, presize + whole, tp);
    if (mem == NULL) {
        return PyErr_NoMemory();
    }
    memset(mem, 0, presize);
    PyObject *copy = (PyObject *)(mem + presize);
    memcpy(copy, v, size);
    memset((char *)copy + size, 0, whole - size);
    if (PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE)) {
        Py_INCREF(tp);            /* an instance's reference */
    }
    _Py_NewReference(copy);
    return copy;
}

/* The same, in a block of the type's basic size at least (the slots of a
   class statement's, zeroed). */
static PyObject *
copy_flat(PyObject *v, size_t size, PyStorageManager *sm)
{
    return copy_bytes(v, size, Py_MAX(size, (size_t)Py_TYPE(v)->tp_basicsize),
                      sm);
}

/* A str of a class statement's class: as upstream makes one
   (unicode_subtype_new()), the characters in a table of their own, which
   an ASCII str's UTF-8 form shares; its slots zeroed. */
static PyObject *
copy_str_subclass(PyObject *v, PyStorageManager *sm)
{
    Py_ssize_t length = PyUnicode_GET_LENGTH(v);
    int kind = PyUnicode_KIND(v);
    size_t nbytes = (size_t)(length + 1) * (size_t)kind;
    char *data = sm->alloc(sm, nbytes, NULL);
    if (data == NULL) {
        return PyErr_NoMemory();
    }
    memcpy(data, PyUnicode_DATA(v), nbytes);
    PyObject *copy = copy_flat(v, sizeof(PyUnicodeObject), sm);
    if (copy == NULL) {
        sm->free(sm, data);
        return NULL;
    }
    int ascii = PyUnicode_IS_ASCII(v);
    PyASCIIObject *a = _PyASCIIObject_CAST(copy);
    a->state.interned = SSTATE_NOT_INTERNED;
    a->state.compact = 0;
    a->state.statically_allocated = 0;
    a->hash = -1;
    ((PyCompactUnicodeObject *)copy)->utf8 = ascii ? data : NULL;
    ((PyCompactUnicodeObject *)copy)->utf8_length = ascii ? length : 0;
    ((PyUnicodeObject *)copy)->data.any = data;
    return copy;
}

static PyObject *
copy_str(PyObject *v, PyStorageManager *sm)
{
    if (PyUnicode_READY(v) < 0) {
        return NULL;
    }
    if (!PyUnicode_IS_COMPACT(v)) {
        /* A legacy string: make it compact first. */
        PyObject *compact = _PyUnicode_Copy(v);
        if (compact == NULL) {
            return NULL;
        }
        PyObject *copy = copy_str(compact, sm);
        Py_DECREF(compact);
        return copy;
    }
    size_t header = (PyUnicode_IS_ASCII(v) ? sizeof(PyASCIIObject)
                                           : sizeof(PyCompactUnicodeObject));
    size_t size = header
                  + (PyUnicode_GET_LENGTH(v) + 1) * PyUnicode_KIND(v);
    PyObject *copy = copy_flat(v, size, sm);
    if (copy == NULL) {
        return NULL;
    }
    /* Caches made in this process stay behind; so does interning. */
    _PyStorage_ResetCaches(copy);
    return copy;
}

static PyObject *
copy_tuple(PyObject *v, PyStorageManager *sm)
{
    Py_ssize_t n = PyTuple_GET_SIZE(v);
    PyObject *copy = copy_flat(v, _PyObject_VAR_SIZE(&PyTuple_Type, n), sm);
    if (copy == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(copy, i, NULL);
    }
    copy_memo memo = {{NULL}, {NULL}};
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = copy_item(&memo, PyTuple_GET_ITEM(v, i), sm);
        if (item == NULL) {
            copy_memo_clear(&memo);
            Py_DECREF(copy);
            return NULL;
        }
        PyTuple_SET_ITEM(copy, i, item);
    }
    copy_memo_clear(&memo);
    _PyObject_GC_TRACK(copy);
    return copy;
}

PyObject *
_PyStorage_NewPlaced(PyStorageManager *sm, PyObject *(*make)(PyObject *),
                     PyObject *arg)
{
    if (PyStorage_PushPlacement(sm) < 0) {
        return NULL;
    }
    PyObject *copy = make(arg);
    if (PyStorage_PopPlacement(sm) < 0) {
        Py_XDECREF(copy);
        return NULL;
    }
    if (copy != NULL && _PyStorage_Lookup(copy) != sm) {
        Py_DECREF(copy);
        PyErr_Format(PyExc_SystemError, "a placed object is not in %s "
                     "storage", sm->name);
        return NULL;
    }
    return copy;
}

static PyObject *
make_list(PyObject *Py_UNUSED(arg))
{
    return PyList_New(0);
}

static PyObject *
make_dict(PyObject *Py_UNUSED(arg))
{
    return PyDict_New();
}

static PyObject *
make_set(PyObject *v)
{
    return PyFrozenSet_CheckExact(v) ? PyFrozenSet_New(NULL) : PySet_New(NULL);
}

static PyObject *
make_bytearray(PyObject *v)
{
    return PyByteArray_FromStringAndSize(PyByteArray_AS_STRING(v),
                                         PyByteArray_GET_SIZE(v));
}

static PyObject *
make_instance(PyObject *v)
{
    PyTypeObject *tp = Py_TYPE(v);
    return tp->tp_alloc(tp, 0);
}

/* An empty instance of the class of v, a class statement's over base (a
   dict, list, set or frozenset), made by the builtin's __new__ (no code
   of the class runs). */
static PyObject *
make_subclass_instance(PyObject *v)
{
    int state;
    PyTypeObject *base = layout_of(Py_TYPE(v), &state);
    PyObject *args = PyTuple_New(0);
    PyObject *copy = args == NULL
                     ? NULL : base->tp_new(Py_TYPE(v), args, NULL);
    Py_XDECREF(args);
    return copy;
}

static int
copy_items_into_list(PyObject *copy, PyObject *v, PyStorageManager *sm)
{
    copy_memo memo = {{NULL}, {NULL}};
    int r = 0;
    for (Py_ssize_t i = 0; r == 0 && i < PyList_GET_SIZE(v); i++) {
        PyObject *item = copy_item(&memo, PyList_GET_ITEM(v, i), sm);
        if (item == NULL) {
            r = -1;
            break;
        }
        r = PyList_Append(copy, item);
        Py_DECREF(item);
    }
    copy_memo_clear(&memo);
    return r;
}

static int
copy_items_into_dict(PyObject *copy, PyObject *v, PyStorageManager *sm)
{
    copy_memo memo = {{NULL}, {NULL}};
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    int r = 0;
    while (r == 0 && PyDict_Next(v, &pos, &key, &value)) {
        PyObject *k = copy_value(key, sm);
        PyObject *val = k == NULL ? NULL : copy_item(&memo, value, sm);
        r = val == NULL ? -1 : PyDict_SetItem(copy, k, val);
        Py_XDECREF(k);
        Py_XDECREF(val);
    }
    copy_memo_clear(&memo);
    return r;
}

static int
copy_items_into_set(PyObject *copy, PyObject *v, PyStorageManager *sm)
{
    Py_ssize_t pos = 0;
    PyObject *key;
    Py_hash_t hash;
    while (_PySet_NextEntry(v, &pos, &key, &hash)) {
        PyObject *k = copy_value(key, sm);
        if (k == NULL) {
            return -1;
        }
        int r = PySet_Add(copy, k);
        Py_DECREF(k);
        if (r < 0) {
            return -1;
        }
    }
    return 0;
}

typedef struct {
    PyObject *copy;
    PyObject *orig;
    PyStorageManager *sm;
} slot_copy_state;

static int
copy_slot(PyObject **slot, void *arg)
{
    slot_copy_state *st = (slot_copy_state *)arg;
    if (*slot == NULL) {
        return 0;
    }
    PyObject *value = copy_value(*slot, st->sm);
    if (value == NULL) {
        return -1;
    }
    PyObject **dest = (PyObject **)((char *)st->copy
                                    + ((char *)slot - (char *)st->orig));
    Py_XSETREF(*dest, value);
    return 0;
}

static int
copy_instance_state(PyObject *copy, PyObject *v, PyStorageManager *sm)
{
    if (Py_TYPE(v)->tp_dictoffset != 0) {
        PyObject *dict = PyObject_GenericGetDict(v, NULL);
        if (dict == NULL) {
            return -1;
        }
        if (PyDict_GET_SIZE(dict) == 0
            && _PyStorage_ClassBase(Py_TYPE(v)) != &PyBaseObject_Type)
        {
            /* A str's (or a list's...) empty dict: made when needed. */
            Py_DECREF(dict);
            slot_copy_state st = {copy, v, sm};
            return visit_slots(v, copy_slot, &st);
        }
        PyObject *dcopy = copy_value(dict, sm);
        Py_DECREF(dict);
        if (dcopy == NULL) {
            return -1;
        }
        int r = PyObject_GenericSetDict(copy, dcopy, NULL);
        Py_DECREF(dcopy);
        if (r < 0) {
            return -1;
        }
    }
    slot_copy_state st = {copy, v, sm};
    return visit_slots(v, copy_slot, &st);
}

static PyObject *
copy_container(PyObject *v, PyStorageManager *sm,
               PyObject *(*make)(PyObject *), PyObject *make_arg,
               int (*fill)(PyObject *, PyObject *, PyStorageManager *))
{
    PyObject *copy = _PyStorage_NewPlaced(sm, make, make_arg);
    if (copy == NULL) {
        return NULL;
    }
    if (fill != NULL && fill(copy, v, sm) < 0) {
        Py_DECREF(copy);
        return NULL;
    }
    return copy;
}

/* Each object that a byte copy holds, replaced by its copy (a part that
   cannot be copied, by None: the copy is then deallocated). */
typedef struct {
    PyStorageManager *sm;
    int failed;
} part_copy_state;

static int
copy_part(void **slot, int kind, void *arg)
{
    part_copy_state *st = (part_copy_state *)arg;
    if (kind != _PyStorage_SLOT_OBJECT || *slot == NULL) {
        return 0;
    }
    PyObject *part = st->failed ? NULL : copy_value(*slot, st->sm);
    if (part == NULL) {
        st->failed = 1;
        part = Py_None;
    }
    *slot = part;
    return 0;
}

/* A decimal.Decimal: its coefficient in the object, however long, as
   libmpdec's static data (never freed or resized: a Decimal is never
   changed once made). */
static PyObject *
copy_decimal(PyObject *v, PyStorageManager *sm)
{
    _PyStorage_Decimal *d = (_PyStorage_Decimal *)v;
    Py_ssize_t words = Py_MAX(d->dec.len, 4);
    size_t size = offsetof(_PyStorage_Decimal, data)
                  + (size_t)words * sizeof(uint64_t);
    PyObject *copy = copy_bytes(
        v, offsetof(_PyStorage_Decimal, data),
        Py_MAX(size, (size_t)Py_TYPE(v)->tp_basicsize), sm);
    if (copy == NULL) {
        return NULL;
    }
    _PyStorage_Decimal *c = (_PyStorage_Decimal *)copy;
    memcpy(c->data, d->dec.data, (size_t)d->dec.len * sizeof(uint64_t));
    c->dec.data = c->data;
    c->dec.alloc = words;
    c->dec.flags = (uint8_t)((d->dec.flags & ~_PyStorage_MPD_DATAFLAGS)
                             | _PyStorage_MPD_STATIC
                             | _PyStorage_MPD_STATIC_DATA);
    c->hash = -1;
    _PyObject_GC_TRACK(copy);
    return copy;
}

/* A copy of v, a range, a slice or one of datetime's (a value kind of
   _PyStorage_KindOf()), in sm: its memory, with copies of what it
   holds. */
static PyObject *
copy_value_object(PyObject *v, int kind, PyStorageManager *sm)
{
    PyTypeObject *tp = Py_TYPE(v);
    size_t size = (size_t)tp->tp_basicsize;
    if ((kind == _PyStorage_KIND_TIME || kind == _PyStorage_KIND_DATETIME)
        && !((_PyDateTime_BaseTZInfo *)v)->hastzinfo)
    {
        /* A naive one has no tzinfo pointer: its memory ends before. */
        size = kind == _PyStorage_KIND_TIME
               ? sizeof(_PyDateTime_BaseTime)
               : sizeof(_PyDateTime_BaseDateTime);
    }
    if (kind == _PyStorage_KIND_DECIMAL) {
        return copy_decimal(v, sm);
    }
    PyObject *copy = copy_flat(v, size, sm);
    if (copy == NULL) {
        return NULL;
    }
    part_copy_state st = {sm, 0};
    (void)_PyStorage_VisitSlots(copy, copy_part, &st);
    if (st.failed) {
        Py_DECREF(copy);
        return NULL;
    }
    /* Caches made in this process stay behind (a datetime's hash). */
    _PyStorage_ResetCaches(copy);
    if (_PyType_IS_GC(tp)) {
        _PyObject_GC_TRACK(copy);
    }
    return copy;
}

/* A new defaultdict of v's type in sm (placed), with the factory of v
   (None, or an object referred to by name: stored as it is) and copies
   of its items. */
static PyObject *
make_defaultdict(PyObject *v)
{
    PyObject *factory = ((_PyStorage_DefaultDict *)v)->default_factory;
    return PyObject_CallOneArg((PyObject *)Py_TYPE(v),
                               factory != NULL ? factory : Py_None);
}

static PyObject *
copy_defaultdict(PyObject *v, PyStorageManager *sm)
{
    PyObject *factory = ((_PyStorage_DefaultDict *)v)->default_factory;
    if (factory != NULL) {
        /* Recorded as a reference (copy_value() of such an object is the
           object itself). */
        PyObject *same = copy_value(factory, sm);
        if (same == NULL) {
            return NULL;
        }
        assert(same == factory);
        Py_DECREF(same);
    }
    return copy_container(v, sm, make_defaultdict, v, copy_items_into_dict);
}

/* A new OrderedDict in sm (placed), with copies of the items of v in
   their order, and of its __dict__. */
static PyObject *
make_odict(PyObject *Py_UNUSED(v))
{
    return PyODict_New();
}

static int
copy_items_into_odict(PyObject *copy, PyObject *v, PyStorageManager *sm)
{
    PyObject *it = PyObject_GetIter(v);
    if (it == NULL) {
        return -1;
    }
    PyObject *key;
    int r = 0;
    while (r == 0 && (key = PyIter_Next(it)) != NULL) {
        PyObject *value = PyDict_GetItemWithError(v, key);   /* borrowed */
        PyObject *k = value == NULL ? NULL : copy_value(key, sm);
        PyObject *val = k == NULL ? NULL : copy_value(value, sm);
        r = val == NULL ? -1 : PyODict_SetItem(copy, k, val);
        if (value == NULL && !PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, key);
        }
        Py_DECREF(key);
        Py_XDECREF(k);
        Py_XDECREF(val);
    }
    Py_DECREF(it);
    if (r < 0 || PyErr_Occurred()) {
        return -1;
    }
    PyObject *dict = ((_PyStorage_ODict *)v)->inst_dict;
    if (dict == NULL || PyDict_GET_SIZE(dict) == 0) {
        return 0;
    }
    PyObject *dcopy = copy_value(dict, sm);
    if (dcopy == NULL) {
        return -1;
    }
    r = PyObject_GenericSetDict(copy, dcopy, NULL);
    Py_DECREF(dcopy);
    return r;
}

/* A new deque of v's type and maxlen in sm (placed), with copies of the
   items of v. */
static PyObject *
make_deque(PyObject *v)
{
    Py_ssize_t maxlen = ((_PyStorage_Deque *)v)->maxlen;
    return (maxlen < 0 ? PyObject_CallNoArgs((PyObject *)Py_TYPE(v))
            : PyObject_CallFunction((PyObject *)Py_TYPE(v), "()n", maxlen));
}

static int
copy_items_into_deque(PyObject *copy, PyObject *v, PyStorageManager *sm)
{
    PyObject *it = PyObject_GetIter(v);
    if (it == NULL) {
        return -1;
    }
    PyObject *item;
    int r = 0;
    while (r == 0 && (item = PyIter_Next(it)) != NULL) {
        PyObject *c = copy_value(item, sm);
        PyObject *res = c == NULL ? NULL
                        : PyObject_CallMethod(copy, "append", "(O)", c);
        r = res == NULL ? -1 : 0;
        Py_XDECREF(res);
        Py_XDECREF(c);
        Py_DECREF(item);
    }
    Py_DECREF(it);
    return r < 0 || PyErr_Occurred() ? -1 : 0;
}

/* A new reference to v's counterpart in sm: v itself when it is static or
   in sm already, else a copy.  Pass 1 has accepted v. */
static PyObject *
copy_value(PyObject *v, PyStorageManager *sm)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (_PyStorage_IsStatic(v) || _PyStorage_Lookup(v) == sm) {
        return Py_NewRef(v);
    }
    const char *why = NULL;
    PyObject *name = reference_name(v, &why);
    if (name != NULL) {
        /* Referred to: it lives as long as the process. */
        int r = sm->refer(sm, v, name);
        Py_DECREF(name);
        if (r < 0) {
            return NULL;
        }
        _PyStorage_KeepForever(v);
        return Py_NewRef(v);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    int state;
    PyTypeObject *base = layout_of(tp, &state);
    if (base == &PyBaseObject_Type) {
        return copy_container(v, sm, make_instance, v, copy_instance_state);
    }
    int exact = tp == base;
    PyObject *copy;
    if (base == &PyLong_Type) {
        Py_ssize_t n = _PyLong_DigitCount((PyLongObject *)v);
        copy = copy_flat(v, offsetof(PyLongObject, long_value.ob_digit)
                            + Py_MAX(n, 1) * sizeof(digit), sm);
    }
    else if (base == &PyFloat_Type || base == &PyComplex_Type) {
        copy = copy_flat(v, base->tp_basicsize, sm);
    }
    else if (base == &PyBytes_Type) {
        copy = copy_flat(v, PyBytesObject_SIZE + PyBytes_GET_SIZE(v), sm);
    }
    else if (base == &PyUnicode_Type) {
        copy = exact ? copy_str(v, sm) : copy_str_subclass(v, sm);
    }
    else if (base == &PyTuple_Type) {
        copy = copy_tuple(v, sm);
    }
    else if (base == &PyList_Type) {
        copy = copy_container(v, sm, exact ? make_list
                                           : make_subclass_instance,
                              v, copy_items_into_list);
    }
    else if (base == &PyDict_Type) {
        copy = copy_container(v, sm, exact ? make_dict
                                           : make_subclass_instance,
                              v, copy_items_into_dict);
    }
    else if (base == &PySet_Type || base == &PyFrozenSet_Type) {
        copy = copy_container(v, sm, exact ? make_set
                                           : make_subclass_instance,
                              v, copy_items_into_set);
    }
    else if (base == &PyByteArray_Type) {
        return copy_container(v, sm, make_bytearray, v, NULL);
    }
    else if (_PyStorage_KindOf(tp) == _PyStorage_KIND_DEFAULTDICT) {
        return copy_defaultdict(v, sm);
    }
    else if (_PyStorage_KindOf(tp) == _PyStorage_KIND_ODICT) {
        return copy_container(v, sm, make_odict, v, copy_items_into_odict);
    }
    else if (_PyStorage_KindOf(tp) == _PyStorage_KIND_DEQUE) {
        return copy_container(v, sm, make_deque, v, copy_items_into_deque);
    }
    else {
        return copy_value_object(v, _PyStorage_KindOf(tp), sm);
    }
    if (copy == NULL || exact) {
        return copy;
    }
    /* What the class statements add: the dict and the slots. */
    if (state && copy_instance_state(copy, v, sm) < 0) {
        Py_DECREF(copy);
        return NULL;
    }
    if (_PyType_IS_GC(tp) && !_PyObject_GC_IS_TRACKED(copy)) {
        _PyObject_GC_TRACK(copy);
    }
    return copy;
}


/* --- moves that rewrite this thread's references ------------------------ */

/* A mutable that a store moves into a persistent manager may be referred
   to by this thread's frames as well as by the storing path: a variable
   of the caller (x = [1]; d[k] = x), the parameter of a helper
   (def put(k, v): d[k] = v), a loop's variable (for row in reader:
   rows.append(row)).  Those references are known: the move counts them
   as the store's own, and makes each one refer to the moved object, so
   that identity holds (x is d[k]).  Each rewrite is logged, the original
   kept alive, so that an undo of the manager's transaction puts the
   original back wherever the copy still is -- in a frame still running
   (known by its address and code), a cell, a locals dict -- rather than
   leave the variable on the undone copy, made empty by the undo. */
typedef struct {
    PyStorageManager *sm;         /* NULL once ended */
    Py_ssize_t seq;               /* _PyStorage_MovesMark() when logged */
    _PyInterpreterFrame *frame;   /* a frame's slot, or NULL */
    PyObject *code;               /* the frame's code (identity only) */
    Py_ssize_t index;
    PyObject *holder;             /* else a cell, a list (index), or a dict
                                     and its key */
    PyObject *key;
    PyObject *original;
    PyObject *copy;
} move_record;

static move_record *moves;        /* the log, under the GIL */
static Py_ssize_t nmoves, moves_allocated, moves_seq;

static int
log_move(PyStorageManager *sm, _PyInterpreterFrame *f, Py_ssize_t index,
         PyObject *holder, PyObject *key, PyObject *original, PyObject *copy)
{
    if (nmoves == moves_allocated) {
        Py_ssize_t n = moves_allocated * 2 + 16;
        move_record *m = PyMem_Realloc(moves, (size_t)n * sizeof(*m));
        if (m == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        moves = m;
        moves_allocated = n;
    }
    moves[nmoves++] = (move_record){
        sm, moves_seq++, f, f != NULL ? f->f_executable : NULL, index,
        Py_XNewRef(holder), Py_XNewRef(key), Py_NewRef(original),
        Py_NewRef(copy)};
    return 0;
}

/* Is holder (a cell, a locals dict, a list) among the n of seen?  Else
   it is added, and 0 returned.  When there is no room left (a thread
   with more than 64 of them), 1: its references are not counted (too
   few references found only make a move refuse). */
static int
seen_before(PyObject *holder, PyObject **seen, int *n)
{
    for (int i = 0; i < *n; i++) {
        if (seen[i] == holder) {
            return 1;
        }
    }
    if (*n == 64) {
        return 1;
    }
    seen[(*n)++] = holder;
    return 0;
}

/* The references to v that this thread's frames hold: their variables
   (fast locals, cells, and the locals dicts of module and class bodies)
   and the evaluation stacks of the frames that wait for a call to return
   (the running frame's stack is the storing path's, which held counts).
   With copy, each becomes a reference to copy, logged for sm.  Their
   number, or -1 with an exception set. */
static Py_ssize_t
frame_references(PyObject *v, PyObject *copy, PyStorageManager *sm)
{
    PyObject *seen[64];
    int nseen = 0;
    Py_ssize_t n = 0;
    for (_PyInterpreterFrame *f = code_frame(NULL); f != NULL;
         f = code_frame(f))
    {
        PyCodeObject *co = _PyFrame_GetCode(f);
        int nlocals = co->co_nlocalsplus;
        int end = Py_MAX(f->stacktop, nlocals);
        for (int i = 0; i < end; i++) {
            PyObject *o = f->localsplus[i];
            if (o == v) {
                n++;
                if (copy != NULL) {
                    if (log_move(sm, f, i, NULL, NULL, v, copy) < 0) {
                        return -1;
                    }
                    f->localsplus[i] = Py_NewRef(copy);
                    Py_DECREF(v);
                }
            }
            else if (o != NULL && i < nlocals
                     && (_PyLocals_GetKind(co->co_localspluskinds, i)
                         & (CO_FAST_CELL | CO_FAST_FREE))
                     && PyCell_Check(o) && PyCell_GET(o) == v)
            {
                if (seen_before(o, seen, &nseen)) {
                    continue;
                }
                n++;
                if (copy != NULL) {
                    if (log_move(sm, NULL, 0, o, NULL, v, copy) < 0) {
                        return -1;
                    }
                    PyCell_SET(o, Py_NewRef(copy));
                    Py_DECREF(v);
                }
            }
        }
        PyObject *locals = f->f_locals;
        if (locals == NULL || !PyDict_CheckExact(locals)) {
            continue;
        }
        if (seen_before(locals, seen, &nseen)) {
            continue;
        }
        PyObject *keys = copy != NULL ? PyList_New(0) : NULL;
        if (copy != NULL && keys == NULL) {
            return -1;
        }
        PyObject *key, *value;
        Py_ssize_t pos = 0;
        while (PyDict_Next(locals, &pos, &key, &value)) {
            if (value == v) {
                n++;
                if (keys != NULL && PyList_Append(keys, key) < 0) {
                    Py_DECREF(keys);
                    return -1;
                }
            }
        }
        for (Py_ssize_t k = 0; keys != NULL && k < PyList_GET_SIZE(keys);
             k++)
        {
            key = PyList_GET_ITEM(keys, k);
            if (log_move(sm, NULL, 0, locals, key, v, copy) < 0
                || PyDict_SetItem(locals, key, copy) < 0)
            {
                Py_DECREF(keys);
                return -1;
            }
        }
        Py_XDECREF(keys);
    }
    return n;
}

/* Would the rule move v, a volatile object: a mutable (not a value that
   it copies, an object that it refers to, or one that it refuses)?  1
   or 0, or -1 with an exception set. */
static int
will_move(PyObject *v)
{
    if (_PyStorage_Lookup(v) != NULL) {
        return 0;
    }
    const char *why = NULL;
    PyObject *name = reference_name(v, &why);
    if (name != NULL || why != NULL || PyErr_Occurred()) {
        Py_XDECREF(name);
        return PyErr_Occurred() ? -1 : 0;
    }
    int state;
    PyTypeObject *base = layout_of(Py_TYPE(v), &state);
    if (base == NULL) {
        return 0;
    }
    int value = is_value(v, base, state);
    return value < 0 ? -1 : !value;
}

/* Is dict the keyword arguments of the call that this thread's running
   frame makes (CALL_KW), made for it (nothing else holds it): then each
   of its values is on the frame's evaluation stack too, until the call
   returns.  Its keys are the names of the constant that the instruction
   before the call loads, in order. */
static int
is_call_kwargs(PyObject *dict)
{
    _PyInterpreterFrame *f = _PyThreadState_GET()->current_frame;
    if (Py_REFCNT(dict) != 1 || !PyDict_CheckExact(dict) || f == NULL
        || !PyCode_Check(f->f_executable) || _PyFrame_IsIncomplete(f))
    {
        return 0;
    }
    PyCodeObject *co = _PyFrame_GetCode(f);
    _Py_CODEUNIT *instr = f->instr_ptr;
    if ((instr->op.code != CALL_KW && instr->op.code != INSTRUMENTED_CALL_KW)
        || instr - _PyCode_CODE(co) < 1 || instr[-1].op.code != LOAD_CONST)
    {
        return 0;
    }
    int arg = instr[-1].op.arg;
    if (instr - _PyCode_CODE(co) >= 2 && instr[-2].op.code == EXTENDED_ARG) {
        arg |= instr[-2].op.arg << 8;
    }
    if (arg >= PyTuple_GET_SIZE(co->co_consts)) {
        return 0;
    }
    PyObject *names = PyTuple_GET_ITEM(co->co_consts, arg);
    if (!PyTuple_CheckExact(names)
        || PyTuple_GET_SIZE(names) != PyDict_GET_SIZE(dict))
    {
        return 0;
    }
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (key != PyTuple_GET_ITEM(names, i++)) {
            return 0;
        }
    }
    return 1;
}

/* The references to v that a move may rewrite besides held ones: this
   thread's frames', when v is one that the rule moves and something
   else refers to it.  -1 with an exception set. */
static Py_ssize_t
known_references(PyObject *v, Py_ssize_t held)
{
    if (Py_REFCNT(v) <= held) {
        return 0;
    }
    int moved = will_move(v);
    return moved <= 0 ? moved : frame_references(v, NULL, NULL);
}

/* v, an item of source (a list: index; a dict: key), was moved into sm
   as copy: source refers to copy instead, and so do this thread's frames
   when known (known_references()).  Logged, as frame_references()'s
   rewrites are.  0, or -1 with an exception set. */
static int
rewrite_item(PyStorageManager *sm, PyObject *source, Py_ssize_t index,
             PyObject *key, PyObject *v, PyObject *copy, Py_ssize_t known)
{
    if (log_move(sm, NULL, index, source, key, v, copy) < 0) {
        return -1;
    }
    if (key != NULL) {
        if (PyDict_SetItem(source, key, copy) < 0) {
            return -1;
        }
    }
    else {
        PyList_SET_ITEM(source, index, Py_NewRef(copy));
        Py_DECREF(v);
    }
    return known > 0 && frame_references(v, copy, sm) < 0 ? -1 : 0;
}

/* Where in list a reference to v was found last: a loop that stores a
   list's items one by one (for r in records: rows.append(r)) finds the
   next one at once. */
static PyObject *hint_list;       /* identity only */
static Py_ssize_t hint_index;

/* The slots of list that refer to v: the one after (or at) the hint
   alone when it does, else (unless hint_only) all of them; each
   rewritten to copy, with copy.  Their number, or -1 with an exception
   set. */
static Py_ssize_t
list_references(PyObject *list, PyObject *v, PyObject *copy,
                PyStorageManager *sm, int hint_only)
{
    PyObject **items = ((PyListObject *)list)->ob_item;
    Py_ssize_t size = PyList_GET_SIZE(list), lo = 0, hi = hint_only ? 0 : size;
    if (list == hint_list) {
        for (Py_ssize_t i = hint_index; i < size && i <= hint_index + 1;
             i++)
        {
            if (items[i] == v) {
                lo = i;
                hi = i + 1;
                break;
            }
        }
    }
    Py_ssize_t n = 0;
    for (Py_ssize_t i = lo; i < hi; i++) {
        if (items[i] != v) {
            continue;
        }
        n++;
        hint_list = list;
        hint_index = i;
        if (copy != NULL && rewrite_item(sm, list, i, NULL, v, copy, 0) < 0) {
            return -1;
        }
    }
    return n;
}

/* Where in dict (a PyDict_Next() position) a reference to v was found
   last: a loop over a dict's values finds the next one at once. */
static PyObject *hint_dict;       /* identity only */
static Py_ssize_t hint_dpos;

/* The values of dict that refer to v: the one at (or after) the hint
   alone when it does, else (unless hint_only) all of them; each
   rewritten to copy, with copy.  Their number, or -1 with an exception
   set. */
static Py_ssize_t
dict_references(PyObject *dict, PyObject *v, PyObject *copy,
                PyStorageManager *sm, int hint_only)
{
    PyObject *keys = PyList_New(0);
    if (keys == NULL) {
        return -1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = dict == hint_dict ? hint_dpos : 0, at = pos;
    for (int step = 0; dict == hint_dict && step < 2
                       && PyDict_Next(dict, &pos, &key, &value); step++)
    {
        if (value == v) {
            if (PyList_Append(keys, key) < 0) {
                Py_DECREF(keys);
                return -1;
            }
            hint_dpos = at;
            break;
        }
        at = pos;
    }
    int hinted = hint_only || PyList_GET_SIZE(keys) != 0;
    for (pos = 0, at = 0; !hinted && PyDict_Next(dict, &pos, &key, &value);
         at = pos)
    {
        if (value == v) {
            if (PyList_Append(keys, key) < 0) {
                Py_DECREF(keys);
                return -1;
            }
            hint_dict = dict;
            hint_dpos = at;
        }
    }
    Py_ssize_t n = PyList_GET_SIZE(keys);
    for (Py_ssize_t j = 0; copy != NULL && j < n; j++) {
        if (rewrite_item(sm, dict, 0, PyList_GET_ITEM(keys, j), v, copy,
                         0) < 0)
        {
            n = -1;
            break;
        }
    }
    Py_DECREF(keys);
    return n;
}

/* The references to v that the lists and dicts of this thread's
   frames' variables hold (one level: records, of a loop over its items
   that stores each one), volatile ones; with copy, rewritten as
   rewrite_item() does.  Their number, or -1 with an exception set. */
static Py_ssize_t
container_references(PyObject *v, PyObject *copy, PyStorageManager *sm,
                     Py_ssize_t needed)
{
    PyObject *seen[64];
    int nseen = 0;
    Py_ssize_t n = 0;
    /* The containers where the last ones were found first (when a
       variable still refers to them), then the others, until as many
       as needed are found: a loop over a big list stores each item in
       a few steps, whatever the other containers of its frames. */
    for (int hinted = 1; hinted >= 0 && n < needed; hinted--)
    for (_PyInterpreterFrame *f = code_frame(NULL); f != NULL && n < needed;
         f = code_frame(f))
    {
        PyCodeObject *co = _PyFrame_GetCode(f);
        PyObject *locals = f->f_locals;
        if (locals != NULL && !PyDict_CheckExact(locals)) {
            locals = NULL;
        }
        Py_ssize_t pos = 0;
        PyObject *key, *c;
        for (int i = 0; ; i++) {
            if (i < co->co_nlocalsplus) {
                c = f->localsplus[i];
                if (c != NULL && PyCell_Check(c)
                    && (_PyLocals_GetKind(co->co_localspluskinds, i)
                        & (CO_FAST_CELL | CO_FAST_FREE)))
                {
                    c = PyCell_GET(c);      /* a closure's variable */
                }
            }
            else if (locals == NULL || !PyDict_Next(locals, &pos, &key, &c)) {
                break;
            }
            if (c == NULL || c == v || c == locals
                || !(PyList_CheckExact(c) || PyDict_CheckExact(c))
                || (hinted && c != hint_list && c != hint_dict)
                || _PyStorage_Lookup(c) != NULL)
            {
                continue;
            }
            /* (A container whose hint finds nothing is searched whole in
               the second round; one whose hint finds v is not.) */
            int again = 0;
            for (int s = 0; s < nseen && !again; s++) {
                again = seen[s] == c;
            }
            if (again) {
                continue;
            }
            Py_ssize_t k = PyList_CheckExact(c)
                           ? list_references(c, v, copy, sm, hinted)
                           : dict_references(c, v, copy, sm, hinted);
            if (k < 0) {
                return -1;
            }
            if ((k > 0 || !hinted) && seen_before(c, seen, &nseen)) {
                /* No room left to tell it apart: not counted. */
                k = 0;
            }
            n += k;
            if (n >= needed) {
                break;
            }
        }
    }
    return n;
}

/* Whether move record m is still there to undo: its slot, cell or dict
   entry holds its copy. */
static PyObject **
moved_slot(move_record *m)
{
    if (m->frame != NULL) {
        for (_PyInterpreterFrame *f = code_frame(NULL); f != NULL;
             f = code_frame(f))
        {
            if (f == m->frame && f->f_executable == m->code
                && f->localsplus[m->index] == m->copy)
            {
                return &f->localsplus[m->index];
            }
        }
        return NULL;
    }
    if (PyCell_Check(m->holder)) {
        return PyCell_GET(m->holder) == m->copy
               ? &((PyCellObject *)m->holder)->ob_ref : NULL;
    }
    if (PyList_CheckExact(m->holder)) {
        PyListObject *l = (PyListObject *)m->holder;
        return m->index < Py_SIZE(l) && l->ob_item[m->index] == m->copy
               ? &l->ob_item[m->index] : NULL;
    }
    return NULL;
}

Py_ssize_t
_PyStorage_MovesMark(void)
{
    return moves_seq;
}

void
_PyStorage_MovesEnd(PyStorageManager *sm, Py_ssize_t mark, int undo)
{
    /* Newest first: a reference moved twice goes back to the first
       original. */
    PyObject *exc = undo ? PyErr_GetRaisedException() : NULL;
    for (Py_ssize_t i = nmoves - 1; i >= 0 && moves[i].seq >= mark; i--) {
        move_record *m = &moves[i];
        if (m->sm != sm) {
            continue;
        }
        if (undo) {
            PyObject **slot = moved_slot(m);
            if (slot != NULL) {
                *slot = Py_NewRef(m->original);
                Py_DECREF(m->copy);
            }
            else if (m->frame == NULL && PyDict_Check(m->holder)
                     && PyDict_GetItemWithError(m->holder, m->key) == m->copy
                     && PyDict_SetItem(m->holder, m->key, m->original) < 0)
            {
                PyErr_Clear();
            }
            PyErr_Clear();
        }
        Py_XDECREF(m->holder);
        Py_XDECREF(m->key);
        Py_DECREF(m->original);
        Py_DECREF(m->copy);
        m->sm = NULL;
    }
    /* The other managers' records, kept in order. */
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < nmoves; i++) {
        if (moves[i].sm != NULL) {
            moves[kept++] = moves[i];
        }
    }
    nmoves = kept;
    if (undo) {
        PyErr_SetRaisedException(exc);
    }
}

static int store_value(PyObject *owner, PyObject **pvalue, Py_ssize_t held,
                       int find);

int
_PyStorage_StoreSlow(PyObject *owner, PyObject **pvalue, Py_ssize_t held)
{
    return store_value(owner, pvalue, held, 1);
}

int
_PyStorage_StoreBinding(PyObject *owner, PyObject **pvalue,
                        Py_ssize_t held)
{
    return store_value(owner, pvalue, held, 0);
}

/* The rule; with find, the references of this thread's frames count as
   the store's own, and are rewritten to the moved object. */
static int
store_value(PyObject *owner, PyObject **pvalue, Py_ssize_t held, int find)
{
    PyStorageManager *sm = _PyStorage_Lookup(owner);
    if (sm == NULL || !(sm->flags & PyStorage_PERSISTENT)) {
        return 0;
    }
    PyObject *v = *pvalue;
    if (v == NULL || _PyStorage_IsStatic(v) || _PyStorage_Lookup(v) == sm) {
        return 0;
    }
    /* The tuples of a slot wrapper's call hold v too. */
    for (int k = 0; k < 2; k++) {
        PyObject *args = _PyStorage_CallArgs[k];
        if (args != NULL && PyTuple_CheckExact(args)
            && Py_REFCNT(args) == 1)
        {
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++) {
                held += PyTuple_GET_ITEM(args, i) == v;
            }
        }
    }
    /* References of this thread's frames that a move may rewrite count
       as the store's own. */
    Py_ssize_t known = 0, in_containers = 0;
    if (find && (known = known_references(v, held)) >= 0
        && Py_REFCNT(v) > held + known && will_move(v) > 0)
    {
        /* And the lists and dicts that those variables refer to. */
        in_containers = container_references(
            v, NULL, NULL, Py_REFCNT(v) - held - known);
        known = in_containers < 0 ? -1 : known + in_containers;
    }
    if (known < 0) {
        return -1;
    }
    PyObject *outer = storing_value;
    storing_value = v;
    int r = check_value(v, sm, Py_REFCNT(v) <= held + known);
    storing_value = outer;
    if (r < 0) {
        return -1;
    }
    /* The copy is one atomic operation: its objects are the manager's
       new blocks, and a failure leaves nothing behind. */
    PyStorageManager *tx;
    if (_PyStorage_TxBegin(owner, &tx) < 0) {
        return -1;
    }
    PyObject *copy = copy_value(v, sm);
    if (copy != NULL && known > 0
        && ((in_containers > 0
             && container_references(v, copy, sm, in_containers) < 0)
            || frame_references(v, copy, sm) < 0))
    {
        Py_CLEAR(copy);
    }
    if (_PyStorage_TxEnd(tx) < 0 || copy == NULL) {
        Py_XDECREF(copy);
        return -1;
    }
    *pvalue = copy;
    Py_DECREF(v);
    return 0;
}

int
_PyStorage_StoreOver(PyStorageManager *sm, PyObject *old, PyObject *value)
{
    /* The hot path of a transaction that updates numbers (the bank
       benchmark): old is tested first, value -- mostly a new int or
       float of this process -- against the registry's bounds before its
       look-up, and of the static objects only the small ints can be of
       old's type. */
    if (Py_REFCNT(old) != 1) {
        return 0;
    }
    return _PyStorage_OverwriteNumber(sm, old, value);
}

int
_PyStorage_OverwriteNumber(PyStorageManager *sm, PyObject *old,
                           PyObject *value)
{
    if (Py_TYPE(old) != Py_TYPE(value)
        || _PyStorage_Lookup(old) != sm
        || (_PyStorage_MAYBE_MANAGED(value)
            && _PyStorage_Lookup(value) == sm))
    {
        return 0;
    }
    char *to, *from;
    size_t size;
    if (PyFloat_CheckExact(old)) {
        to = (char *)&((PyFloatObject *)old)->ob_fval;
        from = (char *)&((PyFloatObject *)value)->ob_fval;
        size = sizeof(double);
    }
    else if (PyLong_CheckExact(old)) {
        if (_Py_IsImmortal(value)) {
            /* A small int, static: stored as it is, a pointer to it. */
            return 0;
        }
        /* An int's block (an int has no pre-header: old is its start)
           has room for at least one digit, and for what the manager
           says it can hold: a number that grows a digit may fit. */
        Py_ssize_t have = _PyLong_DigitCount((PyLongObject *)old);
        Py_ssize_t need = _PyLong_DigitCount((PyLongObject *)value);
        size_t digits = offsetof(PyLongObject, long_value.ob_digit);
        if (Py_MAX(need, 1) > Py_MAX(have, 1)
            && (sm->usable_size == NULL
                || digits + (size_t)need * sizeof(digit)
                   > sm->usable_size(sm, old)))
        {
            return 0;
        }
        to = (char *)&((PyLongObject *)old)->long_value;
        from = (char *)&((PyLongObject *)value)->long_value;
        size = digits - offsetof(PyLongObject, long_value)
               + (size_t)need * sizeof(digit);
    }
    else {
        return 0;
    }
    /* Logged with sm, whose object old is, in an operation on old (which
       tells the manager what the transaction changes). */
    PyStorageManager *tx;
    if (_PyStorage_TxBegin(old, &tx) < 0) {
        return -1;
    }
    int r = sm->modify != NULL ? sm->modify(sm, to, size) : 0;
    if (r == 0) {
        memcpy(to, from, size);
    }
    return _PyStorage_TxEnd(tx) < 0 || r < 0 ? -1 : 1;
}

int
_PyStorage_StoreIntoSlow(PyObject *owner, PyObject **slot, PyObject **pvalue,
                         Py_ssize_t held)
{
    PyStorageManager *sm = _PyStorage_Lookup(owner);
    if (sm == NULL) {
        return 0;
    }
    if ((sm->flags & PyStorage_PERSISTENT) && *slot != NULL) {
        int r = _PyStorage_StoreOver(sm, *slot, *pvalue);
        if (r != 0) {
            return r;
        }
    }
    if (_PyStorage_StoreSlow(owner, pvalue, held) < 0
        || _PyStorage_ModifySlow(slot, sizeof(PyObject *)) < 0)
    {
        return -1;
    }
    return 0;
}

int
_PyStorage_StoreItemsSlow(PyObject *owner, PyObject **pseq, PyObject *source,
                          Py_ssize_t source_held)
{
    PyStorageManager *sm = _PyStorage_Lookup(owner);
    if (sm == NULL || !(sm->flags & PyStorage_PERSISTENT)) {
        return 0;
    }
    PyObject *seq = *pseq;
    int exclusive = seq != source || Py_REFCNT(source) <= source_held;
    /* Items of a shared source list (rows.extend(records)) that only it
       and this thread's frames hold move: records[i] is the moved item
       afterwards. */
    int rewrite = !exclusive && PyList_CheckExact(source);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t *known = NULL;
    if (rewrite) {
        known = PyMem_New(Py_ssize_t, n);
        if (known == NULL && n > 0) {
            PyErr_NoMemory();
            return -1;
        }
    }
    /* Pass 1 over all items first: a refusal changes nothing. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = items[i];
        if (v == NULL || _PyStorage_IsStatic(v)
            || _PyStorage_Lookup(v) == sm)
        {
            if (rewrite) {
                known[i] = -1;
            }
            continue;
        }
        Py_ssize_t k = rewrite ? known_references(v, 1) : 0;
        if (rewrite) {
            known[i] = k;
        }
        if (k < 0 || check_value(v, sm, rewrite ? Py_REFCNT(v) <= 1 + k
                                        : exclusive && Py_REFCNT(v) == 1) < 0)
        {
            PyMem_Free(known);
            return -1;
        }
    }
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        PyMem_Free(known);
        return -1;
    }
    PyStorageManager *tx;
    if (_PyStorage_TxBegin(owner, &tx) < 0) {
        Py_DECREF(out);
        PyMem_Free(known);
        return -1;
    }
    int ok = 1;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        PyObject *item = items[i];
        PyObject *v = item == NULL ? NULL : copy_value(item, sm);
        ok = v != NULL || item == NULL;
        if (ok && rewrite && v != item && known[i] >= 0
            && Py_REFCNT(item) <= 1 + known[i] && will_move(item) == 1)
        {
            ok = rewrite_item(sm, source, i, NULL, item, v, known[i]) == 0;
        }
        PyList_SET_ITEM(out, i, v);
    }
    PyMem_Free(known);
    if (_PyStorage_TxEnd(tx) < 0 || !ok) {
        Py_DECREF(out);
        return -1;
    }
    Py_SETREF(*pseq, out);
    return 0;
}

/* The rule for the items of np, a new list of sm that has just been
   filled with references of its own (see _PyStorage_FilledList()).  Pass
   1 over all items first, so that a refusal changes nothing; then the
   copies, made once for an item that np holds more than once (a
   repetition's), and stored in one operation on np.  0, or -1 with an
   exception set; np holds references to its items either way. */
static int
store_new_items(PyListObject *np, PyStorageManager *sm)
{
    Py_ssize_t n = Py_SIZE(np);
    PyObject **items = np->ob_item;
    Py_ssize_t first = n;           /* the first item to store otherwise */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = items[i];
        if (_PyStorage_IsStatic(v) || _PyStorage_Lookup(v) == sm) {
            continue;
        }
        /* The list's is the one reference that the storing path holds. */
        if (check_value(v, sm, Py_REFCNT(v) == 1) < 0) {
            return -1;
        }
        if (first == n) {
            first = i;
        }
    }
    if (first == n) {
        return 0;
    }
    /* stored[i - first]: what item i becomes, then what it was. */
    Py_ssize_t m = n - first;
    PyObject **stored = PyMem_Calloc(m, sizeof(PyObject *));
    _Py_hashtable_t *copies = _Py_hashtable_new(_Py_hashtable_hash_ptr,
                                                _Py_hashtable_compare_direct);
    if (stored == NULL || copies == NULL) {
        PyMem_Free(stored);
        if (copies != NULL) {
            _Py_hashtable_destroy(copies);
        }
        PyErr_NoMemory();
        return -1;
    }
    PyStorageManager *tx;
    if (_PyStorage_TxBegin((PyObject *)np, &tx) < 0) {
        PyMem_Free(stored);
        _Py_hashtable_destroy(copies);
        return -1;
    }
    int ok = 1;
    for (Py_ssize_t i = first; ok && i < n; i++) {
        PyObject *v = items[i];
        if (_PyStorage_IsStatic(v) || _PyStorage_Lookup(v) == sm) {
            continue;
        }
        PyObject *copy = _Py_hashtable_get(copies, v);
        if (copy != NULL) {
            stored[i - first] = Py_NewRef(copy);
            continue;
        }
        copy = copy_value(v, sm);
        if (copy == NULL) {
            ok = 0;
            break;
        }
        stored[i - first] = copy;
        if (_Py_hashtable_set(copies, v, copy) < 0) {
            PyErr_NoMemory();
            ok = 0;
        }
    }
    if (ok && _PyStorage_ModifySlow(items + first,
                                    m * sizeof(PyObject *)) < 0)
    {
        ok = 0;
    }
    if (ok) {
        for (Py_ssize_t j = 0; j < m; j++) {
            if (stored[j] != NULL) {
                PyObject *old = items[first + j];
                items[first + j] = stored[j];
                stored[j] = old;
            }
        }
    }
    int committed = _PyStorage_TxEnd(tx) == 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        PyObject *v = stored[j];
        /* A copy that was never stored; or an original that the list
           gave up, unless an undone commit gave it back (the copy that
           it held is then the manager's to count). */
        if (v != NULL && (!ok || committed || items[first + j] != v)) {
            Py_DECREF(v);
        }
    }
    PyMem_Free(stored);
    _Py_hashtable_destroy(copies);
    return ok && committed ? 0 : -1;
}

PyObject *
_PyStorage_FilledListSlow(PyObject *list)
{
    PyStorageManager *sm = list == NULL ? NULL : _PyStorage_Lookup(list);
    if (sm == NULL || !(sm->flags & PyStorage_PERSISTENT)) {
        return list;
    }
    assert(PyList_Check(list));
    if (store_new_items((PyListObject *)list, sm) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

/* A new volatile dict of what storing other's items into owner stores:
   the hierarchy rule applied to each key and value, in one operation on
   owner.  exclusive: the caller's path holds other exclusively. */
static PyObject *
stored_items(PyObject *owner, PyObject *other, int exclusive)
{
    PyStorageManager *sm = _PyStorage_Lookup(owner);
    /* A value that only other and this thread's frames hold moves, and
       they refer to the moved value afterwards (a shared other, too:
       d.update(defaults) leaves defaults[k] is d[k]).  The keyword
       arguments of the running call (d.update(k=[1])) are on its
       evaluation stack as well. */
    Py_ssize_t stack = exclusive && is_call_kwargs(other);
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(other, &pos, &key, &value)) {
        Py_ssize_t k = known_references(value, 1 + stack);
        if (k < 0 || check_value(key, sm, 0) < 0
            || check_value(value, sm, Py_REFCNT(value) <= 1 + stack + k) < 0)
        {
            return NULL;
        }
    }
    PyObject *stored = PyDict_New();
    if (stored == NULL) {
        return NULL;
    }
    PyStorageManager *tx;
    if (_PyStorage_TxBegin(owner, &tx) < 0) {
        Py_DECREF(stored);
        return NULL;
    }
    PyObject *items = PyDict_Items(other);
    int r = items == NULL ? -1 : 0;
    for (Py_ssize_t i = 0; r == 0 && i < PyList_GET_SIZE(items); i++) {
        key = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 0);
        value = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 1);
        /* (items holds one more reference to value.) */
        Py_ssize_t known = known_references(value, 2 + stack);
        PyObject *k = known < 0 ? NULL : copy_value(key, sm);
        PyObject *v = k == NULL ? NULL : copy_value(value, sm);
        r = v == NULL ? -1 : PyDict_SetItem(stored, k, v);
        if (r == 0 && v != value && Py_REFCNT(value) <= 2 + stack + known
            && will_move(value) == 1)
        {
            r = exclusive ? (known > 0 && frame_references(value, v, sm) < 0
                             ? -1 : 0)
                : rewrite_item(sm, other, 0, key, value, v, known);
        }
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    Py_XDECREF(items);
    if (_PyStorage_TxEnd(tx) < 0 || r < 0) {
        Py_DECREF(stored);
        return NULL;
    }
    return stored;
}

int
_PyStorage_DictMergeFrom(PyObject *d, PyObject *other, Py_ssize_t held)
{
    PyStorageManager *sm = _PyStorage_Lookup(d);
    if (sm == NULL || !(sm->flags & PyStorage_PERSISTENT) || other == d) {
        return PyDict_Merge(d, other, 1);
    }
    PyObject *stored = stored_items(d, other, Py_REFCNT(other) <= held);
    if (stored == NULL) {
        return -1;
    }
    int r = PyDict_Merge(d, stored, 1);
    Py_DECREF(stored);
    return r;
}

int
_PyStorage_DictMerge(PyObject *a, PyObject *b, int override,
                     int (*merge)(PyObject *, PyObject *, int))
{
    PyStorageManager *sm;
    if (_PyStorage_TxBegin(a, &sm) < 0) {
        return -1;
    }
    PyObject *stored = NULL;
    int r = 0;
    if (sm != NULL && (sm->flags & PyStorage_PERSISTENT) && b != a
        && PyDict_CheckExact(b))
    {
        /* b: the caller's reference (C callers of PyDict_Merge hold one) */
        stored = stored_items(a, b, Py_REFCNT(b) <= 1);
        r = stored == NULL ? -1 : 0;
    }
    if (r == 0) {
        PyObject *outer = _PyStorage_Reentered;
        _PyStorage_Reentered = a;
        r = merge(a, stored != NULL ? stored : b, override);
        _PyStorage_Reentered = outer;
    }
    Py_XDECREF(stored);
    return _PyStorage_TxEnd(sm) < 0 ? -1 : r;
}

int
_PyStorage_OwnCallArgs(PyObject **pargs)
{
    /* f(*args): the callee gets the items of the tuple, as its own
       arguments, and the rule counts the references of an argument as
       the call's (a list that only the call holds is moved).  When
       something else holds the tuple (a variable), its items are not the
       call's alone: the call gets a tuple of its own, whose references
       the rule sees. */
    PyObject *args = *pargs;
    if (Py_REFCNT(args) == 1 || PyTuple_GET_SIZE(args) == 0) {
        return 0;
    }
    PyObject *own = _PyTuple_FromArray(&PyTuple_GET_ITEM(args, 0),
                                       PyTuple_GET_SIZE(args));
    if (own == NULL) {
        return -1;
    }
    Py_SETREF(*pargs, own);
    return 0;
}

int
_PyStorage_ListAppend(PyObject *list, PyObject *item)
{
    Py_INCREF(item);
    if (_PyStorage_StoreSlow(list, &item, 2) < 0) {
        Py_DECREF(item);
        return -1;
    }
    return _PyList_AppendTakeRef((PyListObject *)list, item);
}

/* Whether the rule's outcome for v depends on the references held (a
   number or a str is copied in whatever they are). */
static inline int
held_matters(PyObject *v)
{
    return !(PyUnicode_CheckExact(v) || PyLong_CheckExact(v)
             || PyFloat_CheckExact(v));
}

/* The rule for a key and value that a dict's store is given borrowed
   (the caller holds one reference to each, *pkey and *pvalue are the
   store's): what depends on the caller's reference, here; the rest is
   for insertdict()'s (_PyStorage_InsertDict()), which reuses a key the
   dict holds and writes a number over a number.  0, or -1 with an
   exception set. */
static int
store_borrowed_pair(PyObject *dict, PyObject **pkey, PyObject **pvalue)
{
    return ((held_matters(*pkey) && _PyStorage_StoreSlow(dict, pkey, 2) < 0)
            || (held_matters(*pvalue)
                && _PyStorage_StoreSlow(dict, pvalue, 2) < 0)) ? -1 : 0;
}

int
_PyStorage_DictSetItem(PyObject *dict, PyObject *key, PyObject *value)
{
    PyStorageManager *sm = _PyStorage_Lookup(dict);
    if (sm != NULL && sm->set_item != NULL) {
        int r = sm->set_item(sm, dict, key, value);
        if (r != 0) {
            return r < 0 ? -1 : 0;
        }
    }
    Py_INCREF(key);
    Py_INCREF(value);
    if (store_borrowed_pair(dict, &key, &value) < 0) {
        Py_DECREF(key);
        Py_DECREF(value);
        return -1;
    }
    return _PyDict_SetItem_Take2((PyDictObject *)dict, key, value);
}

int
_PyStorage_ODictSetItem(PyObject *od, PyObject *key, PyObject *value)
{
    /* The rule as _PyStorage_DictSetItem() applies it, then
       PyODict_SetItem() again, which links the key's node. */
    PyStorageManager *sm, *tx;
    PyObject *outer;
    if (_PyStorage_TxBegin(od, &tx) < 0) {
        return -1;
    }
    Py_INCREF(key);
    Py_INCREF(value);
    int r = -1;
    if (store_borrowed_pair(od, &key, &value) == 0
        && _PyStorage_ReenterBegin(od, &sm, &outer) == 0)
    {
        r = PyODict_SetItem(od, key, value);
        if (_PyStorage_ReenterEnd(sm, outer) < 0) {
            r = -1;
        }
    }
    Py_DECREF(key);
    Py_DECREF(value);
    return _PyStorage_TxEnd(tx) < 0 ? -1 : r;
}

/* The slot of the value of key in dict (a combined table), or NULL (no
   exception) when the dict does not hold key or the key's comparison
   would run code. */
PyObject **
_PyStorage_DictValueSlot(PyObject *dict, PyObject *key)
{
    PyDictObject *mp = (PyDictObject *)dict;
    if (!PyUnicode_CheckExact(key) || mp->ma_values != NULL) {
        return NULL;
    }
    Py_hash_t hash = PyObject_Hash(key);
    PyObject *value;
    Py_ssize_t ix = _Py_dict_lookup(mp, key, hash, &value);
    if (ix < 0 || value == NULL) {
        PyErr_Clear();
        return NULL;
    }
    return DK_IS_UNICODE(mp->ma_keys)
           ? &DK_UNICODE_ENTRIES(mp->ma_keys)[ix].me_value
           : &DK_ENTRIES(mp->ma_keys)[ix].me_value;
}

int
_PyStorage_DictReplaceValue(PyObject *dict, PyObject *key, PyObject *value)
{
    PyObject **slot = _PyStorage_DictValueSlot(dict, key);
    if (slot == NULL) {
        return 0;
    }
    _PyStorage_DictReplaceInSlot(dict, key, slot, value);
    return 1;
}

void
_PyStorage_DictReplaceInSlot(PyObject *dict, PyObject *key, PyObject **slot,
                             PyObject *value)
{
    PyDictObject *mp = (PyDictObject *)dict;
    mp->ma_version_tag = _PyDict_NotifyEvent(
        _PyInterpreterState_GET(), PyDict_EVENT_MODIFIED, mp, key, value);
    PyObject *old = *slot;
    *slot = Py_NewRef(value);
    Py_DECREF(old);
}


void
_PyStorage_StoredItemSlow(PyObject *container, PyObject *key,
                          PyObject **pvalue)
{
    PyObject *held = PyObject_GetItem(container, key);
    if (held == NULL) {
        /* (What was stored is gone already: the original stays.) */
        PyErr_Clear();
        return;
    }
    Py_SETREF(*pvalue, held);
}

/* --- operations that store ----------------------------------------------- */

/* The slow paths of the hooked writers that store a value into a managed
   object: each an atomic operation on it, with the rule applied to what
   it stores. */

/* The value of the entry of mp that a store to *pkey would replace, when
   *pkey is a str or an int (whose comparisons run no code) and mp holds
   it: *pkey is then replaced by the entry's own key (no copy to make).
   NULL when there is no such entry. */
static PyObject *
dict_entry_for(PyDictObject *mp, PyObject **pkey, Py_hash_t hash)
{
    if (!PyUnicode_CheckExact(*pkey) && !PyLong_CheckExact(*pkey)) {
        return NULL;
    }
    PyObject *old;
    Py_ssize_t ix = _Py_dict_lookup(mp, *pkey, hash, &old);
    if (ix < 0 || old == NULL) {
        /* A failed comparison fails the insertion's lookup again. */
        PyErr_Clear();
        return NULL;
    }
    PyDictKeysObject *keys = mp->ma_keys;
    PyObject *stored = DK_IS_UNICODE(keys)
                       ? DK_UNICODE_ENTRIES(keys)[ix].me_key
                       : DK_ENTRIES(keys)[ix].me_key;
    Py_SETREF(*pkey, Py_NewRef(stored));
    return old;
}

int
_PyStorage_InsertDict(
    PyDictObject *mp, PyObject *key, Py_hash_t hash, PyObject *value,
    int (*insert)(PyDictObject *, PyObject *, Py_hash_t, PyObject *))
{
    /* Consumes key and value, as insertdict() does. */
    PyStorageManager *sm;
    if (_PyStorage_TxBegin((PyObject *)mp, &sm) < 0) {
        Py_DECREF(key);
        Py_DECREF(value);
        return -1;
    }
    int r;
    if (sm != NULL && (sm->flags & PyStorage_PERSISTENT)) {
        /* A key already in the dict: the entry keeps its key (no copy),
           and a number may be overwritten in place. */
        PyObject *old = dict_entry_for(mp, &key, hash);
        r = old == NULL ? 0 : _PyStorage_StoreOver(sm, old, value);
        if (r != 0) {
            Py_DECREF(key);
            Py_DECREF(value);
            return _PyStorage_TxEnd(sm) < 0 || r < 0 ? -1 : 0;
        }
    }
    if (sm != NULL
        && (_PyStorage_StoreSlow((PyObject *)mp, &key, 1) < 0
            || _PyStorage_StoreSlow((PyObject *)mp, &value, 1) < 0))
    {
        Py_DECREF(key);
        Py_DECREF(value);
        r = -1;
    }
    else {
        r = insert(mp, key, hash, value);
    }
    return _PyStorage_TxEnd(sm) < 0 ? -1 : r;
}

int
_PyStorage_SetAddEntry(PySetObject *so, PyObject *key, Py_hash_t hash,
                       int (*add)(PySetObject *, PyObject *, Py_hash_t))
{
    PyStorageManager *sm;
    if (_PyStorage_TxBegin((PyObject *)so, &sm) < 0) {
        return -1;
    }
    /* key: the caller's reference and ours */
    Py_INCREF(key);
    int r = 0;
    if (sm != NULL) {
        r = _PyStorage_StoreSlow((PyObject *)so, &key, 2);
    }
    if (r == 0) {
        r = add(so, key, hash);
    }
    Py_DECREF(key);
    return _PyStorage_TxEnd(sm) < 0 ? -1 : r;
}

/* A new dict of sm, made by the dict type's own code. */
static PyObject *
new_dict_in(PyStorageManager *sm)
{
    return _PyStorage_NewPlaced(sm, make_dict, NULL);
}

PyObject *
_PyStorage_EnsureDict(PyObject *obj)
{
    PyObject **dictptr = _PyStorage_InstanceDictPtr(obj);
    if (*dictptr != NULL) {
        return *dictptr;
    }
    PyStorageManager *sm;
    if (_PyStorage_TxBegin(obj, &sm) < 0) {
        return NULL;
    }
    if (*dictptr == NULL
        && _PyStorage_ModifySlow(dictptr, sizeof(PyObject *)) == 0)
    {
        *dictptr = new_dict_in(_PyStorage_Lookup(obj));
    }
    PyObject *dict = *dictptr;
    return _PyStorage_TxEnd(sm) < 0 ? NULL : dict;
}

static int
object_dict_setitem(PyObject **dictptr, PyObject *key, PyObject *value)
{
    PyObject *dict = *dictptr;
    if (dict == NULL) {
        if (_PyStorage_ModifySlow(dictptr, sizeof(PyObject *)) < 0) {
            return -1;
        }
        dict = new_dict_in(_PyStorage_Lookup(dictptr));
        if (dict == NULL) {
            return -1;
        }
        *dictptr = dict;
    }
    return (value == NULL ? PyDict_DelItem(dict, key)
                          : PyDict_SetItem(dict, key, value));
}

int
_PyStorage_ObjectDictSetItem(PyObject *obj, PyObject **dictptr,
                             PyObject *key, PyObject *value)
{
    PyStorageManager *sm;
    if (_PyStorage_TxBegin(obj, &sm) < 0) {
        return -1;
    }
    int r = object_dict_setitem(dictptr, key, value);
    return _PyStorage_TxEnd(sm) < 0 ? -1 : r;
}

static int
set_dict_ptr(PyObject *obj, PyObject **dictptr, PyObject *value)
{
    /* value: the storing path's reference (the stack's) and ours */
    PyObject *v = Py_XNewRef(value);
    if (_PyStorage_StoreSlow(obj, &v, 2) < 0
        || _PyStorage_ModifySlow(dictptr, sizeof(PyObject *)) < 0)
    {
        Py_XDECREF(v);
        return -1;
    }
    Py_XSETREF(*dictptr, v);
    return 0;
}

int
_PyStorage_SetDictPtr(PyObject *obj, PyObject **dictptr, PyObject *value)
{
    PyStorageManager *sm;
    if (_PyStorage_TxBegin(obj, &sm) < 0) {
        return -1;
    }
    int r = set_dict_ptr(obj, dictptr, value);
    return _PyStorage_TxEnd(sm) < 0 ? -1 : r;
}


/* --- buffers ------------------------------------------------------------- */

/* A writer through a buffer is no hooked writer: what it writes would be
   part of no operation, neither undone nor made durable with one.  So a
   bytearray of a manager that registers writes exports read-only
   buffers (reading through them is as before), and a request for a
   writable one (memoryview(b)[i] = x asks for none: its view is
   read-only) is refused with a message that says what to do instead. */
int
_PyStorage_BufferReadOnlySlow(PyObject *op, int flags)
{
    PyStorageManager *sm = _PyStorage_Lookup(op);
    if (sm == NULL || sm->modify == NULL) {
        return 0;
    }
    if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE) {
        PyErr_Format(PyExc_BufferError,
                     "cannot export a writable buffer of a '%.100s' object "
                     "in %s storage: writes through a buffer would be part "
                     "of no atomic operation; change it with its methods, "
                     "item or slice assignment (b[i:j] = data), or fill a "
                     "bytearray in DRAM and assign or extend from it",
                     Py_TYPE(op)->tp_name, sm->name);
        return -1;
    }
    return 1;
}
