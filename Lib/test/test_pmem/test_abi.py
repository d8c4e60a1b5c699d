"""An extension built against stock headers runs on the fork.

The fork adds no field to any object (storage managers are found from an
object's address), so an extension compiled with upstream's Include/
directory sees the same layouts as the interpreter.  The test compiles
one against the pristine headers that ./configure unpacked, reads object
fields through upstream's struct definitions, mutates objects through the
C API, and does both on objects that live in a checking storage manager
too.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import unittest
from test.support import import_helper, os_helper

_teststorage = import_helper.import_module("_teststorage")

# This file is a link from the build tree into the repository.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__)))))
STOCK_INCLUDE = os.path.join(REPO, "build", "pristine",
                             "Python-%d.%d.%d" % sys.version_info[:3],
                             "Include")

SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include "Python.h"

/* sizes as upstream's headers define them */
static PyObject *
sizes(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("{sn sn sn sn sn sn}",
                         "object", (Py_ssize_t)sizeof(PyObject),
                         "dict", (Py_ssize_t)sizeof(PyDictObject),
                         "list", (Py_ssize_t)sizeof(PyListObject),
                         "set", (Py_ssize_t)sizeof(PySetObject),
                         "bytearray", (Py_ssize_t)sizeof(PyByteArrayObject),
                         "heaptype", (Py_ssize_t)sizeof(PyHeapTypeObject));
}

/* fields read through upstream's structs */
static PyObject *
fields(PyObject *self, PyObject *args)
{
    PyListObject *l;
    PyDictObject *d;
    PySetObject *s;
    PyByteArrayObject *b;
    if (!PyArg_ParseTuple(args, "O!O!O!O!", &PyList_Type, &l, &PyDict_Type,
                          &d, &PySet_Type, &s, &PyByteArray_Type, &b)) {
        return NULL;
    }
    return Py_BuildValue("{sn sO sn sn sn sy#}",
                         "list_size", Py_SIZE(l),
                         "list_first", Py_SIZE(l) ? l->ob_item[0] : Py_None,
                         "dict_used", d->ma_used,
                         "set_used", s->used,
                         "bytearray_size", Py_SIZE(b),
                         "bytearray_bytes", b->ob_start, Py_SIZE(b));
}

/* mutations through the C API */
static PyObject *
mutate(PyObject *self, PyObject *args)
{
    PyObject *l, *d, *s, *b, *v;
    if (!PyArg_ParseTuple(args, "OOOOO", &l, &d, &s, &b, &v)) {
        return NULL;
    }
    Py_ssize_t n = PyByteArray_GET_SIZE(b);
    if (PyList_Append(l, v) < 0 || PyList_Insert(l, 0, v) < 0
        || PyDict_SetItemString(d, "abi", v) < 0
        || PyDict_DelItemString(d, "gone") < 0
        || PySet_Add(s, v) < 0 || PySet_Discard(s, Py_None) < 0
        || PyByteArray_Resize(b, n + 1) < 0)
    {
        return NULL;
    }
    PyByteArray_AS_STRING(b)[n] = '!';  /* a write no hook sees: DRAM only */
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"sizes", sizes, METH_NOARGS, NULL},
    {"fields", fields, METH_VARARGS, NULL},
    {"mutate", mutate, METH_VARARGS, NULL},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_abi_probe", NULL, -1, methods
};

PyMODINIT_FUNC
PyInit__abi_probe(void)
{
    return PyModule_Create(&module);
}
"""


_probe = None


def probe():
    """The extension, built and loaded once per process (an extension
    module stays loaded: a new one on each run of -R would look like a
    leak)."""
    global _probe
    if _probe is not None:
        return _probe
    with os_helper.temp_dir() as tmp:
        source = os.path.join(tmp, "_abi_probe.c")
        with open(source, "w") as f:
            f.write(SOURCE)
        target = os.path.join(
            tmp, "_abi_probe" + sysconfig.get_config_var("EXT_SUFFIX"))
        # Upstream's headers; pyconfig.h, which configure generates, is
        # the build's (no object layout depends on it differing).
        config_dir = os.path.dirname(sysconfig.get_config_h_filename())
        cmd = (sysconfig.get_config_var("CC").split()
               + ["-shared", "-fPIC", "-O2", "-Wall", "-Werror",
                  "-I", STOCK_INCLUDE, "-I", config_dir, "-o", target,
                  source])
        subprocess.run(cmd, check=True)
        spec = importlib.util.spec_from_file_location("_abi_probe", target)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    _probe = module
    return module


def placed(arena, factory, *args):
    arena.push_placement()
    try:
        return factory(*args)
    finally:
        arena.pop_placement()


@unittest.skipUnless(os.path.isfile(os.path.join(STOCK_INCLUDE, "Python.h")),
                     "no pristine headers: a source tree that ./configure "
                     "unpacked, not an installed interpreter")
@unittest.skipUnless(shutil.which(sysconfig.get_config_var("CC").split()[0]),
                     "no C compiler")
class StockHeadersTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.probe = probe()
        cls.arena = _teststorage.Arena(1 << 22, name="abi")

    def test_sizes_are_the_interpreters(self):
        sizes = self.probe.sizes()
        self.assertEqual(sizes["object"], object.__basicsize__)
        for t in (dict, list, set, bytearray):
            self.assertEqual(sizes[t.__name__], t.__basicsize__, t)
        self.assertEqual(sizes["heaptype"], type.__basicsize__)

    def objects(self, factory=lambda t, v: t(v)):
        return (factory(list, ["first", 2]),
                factory(dict, {"a": 1, "gone": 2}),
                factory(set, {None, 3}),
                factory(bytearray, b"xy"))

    def check(self, l, d, s, b):
        self.assertEqual(self.probe.fields(l, d, s, b), {
            "list_size": 2, "list_first": "first", "dict_used": 2,
            "set_used": 2, "bytearray_size": 2, "bytearray_bytes": b"xy"})
        self.probe.mutate(l, d, s, b, "v")
        self.assertEqual(l, ["v", "first", 2, "v"])
        self.assertEqual(d, {"a": 1, "abi": "v"})
        self.assertEqual(s, {3, "v"})
        self.assertEqual(self.probe.fields(l, d, s, b)["list_first"], "v")

    def test_dram_objects(self):
        l, d, s, b = self.objects()
        self.check(l, d, s, b)
        self.assertEqual(b, b"xy!")

    def test_managed_objects_through_the_api(self):
        l, d, s, b = self.objects(lambda t, v: placed(self.arena, t, v))
        for obj in (l, d, s, b):
            self.assertTrue(self.arena.contains(obj), type(obj))
        self.arena.check()
        self.arena.violations.clear()
        self.check(l, d, s, b)
        # The C API calls were hooked; the extension's direct write of the
        # bytearray's third byte was not, and the checker says so.
        violations = list(self.arena.check())
        self.arena.violations.clear()
        self.assertEqual(len(violations), 1, violations)
        self.assertRegex(violations[0],
                         r"^1 byte\(s\) at offset 2 of a table "
                         r"\(arena \+\d+\) changed outside any atomic "
                         r"operation$")


if __name__ == "__main__":
    unittest.main()
