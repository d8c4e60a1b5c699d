/* _pmem.Namespace: a pool's root dict, seen as attributes (pool.ns).
 */

#include "pool.h"

/* --- the namespace ------------------------------------------------------- */

/* pool.ns: attribute access to the namespace dict.  In C, so that a
   store reaches the dict's hook holding only the caller's reference to
   the value: pool.ns.accounts = dict() moves the new dict in. */
typedef struct {
    PyObject_HEAD
    PoolObject *pool;
} NamespaceObject;

/*[clinic input]
module _pmem
class _pmem.Namespace "NamespaceObject *" "get_state_by_type(type)->NamespaceType"
[clinic start generated code]*/
/*[clinic end generated code: output=da39a3ee5e6b4b0d input=a7c989b45a488935]*/

#include "clinic/namespace.c.h"

/*[clinic input]
@classmethod
_pmem.Namespace.__new__ as namespace_new

    pool: object
    /

The pool's named objects, as attributes.
[clinic start generated code]*/

static PyObject *
namespace_new_impl(PyTypeObject *type, PyObject *pool)
/*[clinic end generated code: output=acedda75a6524e21 input=41b3e1822a9f912b]*/
{
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
    PyObject *ns = _PyPmem_PoolNamespace(self->pool);
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
    PyObject *ns = _PyPmem_PoolNamespace(self->pool);
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

/*[clinic input]
_pmem.Namespace.__dir__

The names in the pool's namespace, sorted.
[clinic start generated code]*/

static PyObject *
_pmem_Namespace___dir___impl(NamespaceObject *self)
/*[clinic end generated code: output=e926ce0b853392c7 input=2d4a700304883a52]*/
{
    PyObject *ns = _PyPmem_PoolNamespace(self->pool);
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
    _PMEM_NAMESPACE___DIR___METHODDEF
    {NULL}
};

static PyType_Slot namespace_slots[] = {
    {Py_tp_new, namespace_new},
    {Py_tp_dealloc, namespace_dealloc},
    {Py_tp_getattro, namespace_getattro},
    {Py_tp_setattro, namespace_setattro},
    {Py_tp_methods, namespace_methods},
    {Py_tp_repr, namespace_repr},
    {Py_tp_doc, (void *)namespace_new__doc__},
    {0, NULL}
};

PyType_Spec _PyPmem_NamespaceSpec = {
    .name = "_pmem.Namespace",
    .basicsize = sizeof(NamespaceObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = namespace_slots,
};
