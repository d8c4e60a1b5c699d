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

PyType_Spec _PyPmem_NamespaceSpec = {
    .name = "_pmem.Namespace",
    .basicsize = sizeof(NamespaceObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = namespace_slots,
};
