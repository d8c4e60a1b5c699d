"""Storage-manager hooks: every mutation path of the core objects tells the
manager of the object what it writes.

The proof is _teststorage.Arena, a checking storage manager: objects placed
in it are real dicts, lists, sets, bytearrays and instances, and at the end
of every atomic operation it compares its memory with a snapshot taken at
the beginning, reporting any byte that changed outside the ranges the
hooks registered (volatile metadata excepted: reference counts, GC heads,
hash caches...).  It also reports writes made outside any atomic operation.

Each test below runs one operation on an arena object and on an equal
DRAM object, checks that both give the same result, and that the arena
found nothing.  COVERED lists the operations, by the upstream function
or opcode that implements them, so that a reader can hold it against the
hook sites listed in Doc/pmem/hook-sites.rst.
"""

import dis
import gc
import heapq
import inspect
import io
import random
import struct
import sys
import unittest
from test.support import import_helper
from test.test_pmem import stdlib_changes
from test.support.script_helper import assert_python_ok

_teststorage = import_helper.import_module("_teststorage")
_testcapi = import_helper.import_module("_testcapi")
_testlimitedcapi = import_helper.import_module("_testlimitedcapi")

# Specialized opcodes appear after a few executions of a code object;
# this many warm-up calls on DRAM objects make sure they are in place.
WARMUP = 64

COVERED = {
    "list": [
        "PyList_New / list_new_prealloc / _PyList_FromArraySteal (table "
        "from the owner's manager; no free-list list while placing)",
        "list_resize (header, realloc through the manager)",
        "list_preallocate_exact",
        "_PyList_AppendTakeRef / _PyList_AppendTakeRefListResize",
        "PyList_Append", "list.append", "LIST_APPEND", "CALL_LIST_APPEND",
        "PyList_SetItem", "ins1 (list.insert, PyList_Insert)",
        "list_ass_item (l[i] = v, del l[i])",
        "STORE_SUBSCR_LIST_INT (deoptimized for managed lists)",
        "list_ass_slice (l[i:j] = seq, del l[i:j], PyList_SetSlice)",
        "list_ass_subscript (extended slices: assign and delete)",
        "list_extend (list/tuple fast path, iterator path, self; sets, "
        "dicts and views through the iterator path)",
        "PyList_Extend / _PyList_Extend (LIST_EXTEND)",
        "list_inplace_concat (+=)", "list_inplace_repeat (*=)",
        "list_pop_impl", "list_remove_impl",
        "list_clear (list.clear, PyList_Clear, tp_clear)",
        "list_sort_impl", "list_reverse_impl", "PyList_Reverse",
        "list___init__",
        "_PyList_FromArraySteal (BUILD_LIST), list_slice_wrap (l[i:j], "
        "l[i:j:k]), PyList_GetSlice, list_copy_impl, list_concat_lock_held "
        "(+), list_repeat_lock_held (*): a new list of a placement filled "
        "by copying pointers gets its items by the rule "
        "(_PyStorage_FilledList)",
    ],
    "heapq": [
        "_heapq_heappush_impl", "heappop_internal (heappop, "
        "_heappop_max)", "heapreplace_internal (heapreplace, "
        "_heapreplace_max)", "_heapq_heappushpop_impl",
        "heapify_internal (heapify, _heapify_max): sifts inside an "
        "operation, the items registered, a pushed item stored by the rule",
    ],
    "dict": [
        "new_keys_object (keys from the owner's manager, no free list)",
        "insertdict / insert_combined_dict (new slot, replacement, "
        "unicode -> general keys)",
        "insert_to_emptydict", "dictresize (insertion_resize)",
        "PyDict_SetItem (d[k] = v)", "_PyDict_SetItem_Take2",
        "STORE_SUBSCR_DICT", "MAP_ADD",
        "delitem_common (del d[k], dict.pop)", "_PyDict_Pop_KnownHash",
        "PyDict_Clear / clear_lock_held (dict.clear)", "dict_popitem_impl",
        "dict_setdefault_ref_lock_held (dict.setdefault, "
        "PyDict_SetDefault, PyDict_SetDefaultRef)",
        "dict_merge (update from a dict, clone path skipped, |=)",
        "PyDict_MergeFromSeq2 (update from pairs)", "dict___init__",
        "_PyDictKeys_GetVersionForCurrentState (no version for managed "
        "keys)",
    ],
    "set": [
        "set_add_entry (set.add, new slot, dummy slot)",
        "set_table_resize (table from the owner's manager)",
        "set_discard_entry (discard, remove)", "set_pop_impl",
        "set_clear_internal (clear, PySet_Clear)",
        "set_merge_lock_held (fast paths skipped for managed sets)",
        "set_update_internal (update from sets, dicts, iterables, |=)",
        "set_update_local (set(iterable) made by a placement)",
        "set_update_lock_held (copy, symmetric_difference results)",
        "set_difference_update_internal (difference_update, -=)",
        "set_symmetric_difference_update (^=)",
        "set_swap_bodies (set_intersection_update_multi_impl, set_iand &=)",
        "set_init",
    ],
    "bytearray": [
        "PyByteArray_FromStringAndSize (buffer from the owner's manager)",
        "PyByteArray_Resize (PyMem_Malloc/PyMem_Realloc through the "
        "manager)",
        "bytearray_iconcat (+=)", "bytearray_irepeat (*=)",
        "bytearray_setslice_linear", "bytearray_setitem (b[i] = x)",
        "bytearray_ass_subscript (slices, extended slices, del)",
        "bytearray___init___impl", "bytearray_reverse_impl",
        "bytearray_insert_impl", "bytearray_append_impl",
        "bytearray_extend", "bytearray_pop_impl", "bytearray_remove_impl",
        "bytearray_clear_impl",
        "bytearray_getbuffer (read-only buffers; a writable one refused "
        "with BufferError)",
    ],
    "instance": [
        "_PyType_AllocNoTrack / _PyObject_InitInlineValues (a placed "
        "instance: its inline values never valid, room for their header "
        "only)",
        "_PyObject_StoreInstanceAttribute, _PyObjectDict_SetItem (setattr, "
        "delattr through a dict of the instance's manager, made by the "
        "first store: _PyStorage_EnsureDict)",
        "ensure_managed_dict (obj.__dict__ of a managed instance)",
        "PyObject_GenericSetDict, subtype_setdict (obj.__dict__ = d)",
        "PyMember_SetOne (__slots__ stores and deletes)",
        "STORE_ATTR_INSTANCE_VALUE, STORE_ATTR_WITH_HINT, STORE_ATTR_SLOT "
        "(specialized for DRAM objects only; they deopt for a managed "
        "object or dict)",
    ],
    "collections": [
        "subclasses of dict, list and set written in Python, Counter (its "
        "update() through _collections._count_elements), defaultdict "
        "(__missing__: defdict_missing, default_factory: PyMember_SetOne), "
        "OrderedDict (its list: _odict_add_new_node, _odict_clear_node, "
        "_odict_resize, odict_clear, OrderedDict_move_to_end_impl; its "
        "__dict__: ensure_nonmanaged_dict), deque (its blocks: "
        "_PyStorage_ModifyDeque; d[i] = x: _PyStorage_StoreInto): every "
        "public method that changes one, as test.test_pmem.stdlib_changes "
        "lists them",
    ],
}


class Keep:
    """A reference that no store finds or rewrites (an object's
    attribute): what makes a value shared, now that a move rewrites this
    thread's variables and their lists and dicts."""

    def __init__(self, value):
        self.value = value


def placed(arena, factory, *args, **kwargs):
    """factory(*args, **kwargs), with the arena as this thread's
    placement."""
    arena.push_placement()
    try:
        return factory(*args, **kwargs)
    finally:
        arena.pop_placement()


def assertSpecialized(test, func, opname):
    ops = {i.opname for i in dis.get_instructions(func, adaptive=True)}
    test.assertIn(opname, ops)


class ArenaTestCase(unittest.TestCase):
    persistent = False

    @classmethod
    def setUpClass(cls):
        # Arenas with live objects are never unmapped: one per class.
        cls.arena = _teststorage.Arena(1 << 24, persistent=cls.persistent,
                                       name=cls.__name__)

    def setUp(self):
        self.assertClean()

    def assertClean(self):
        self.arena.check()
        violations = list(self.arena.violations)
        self.arena.violations.clear()
        self.assertEqual(violations, [])

    def run_both(self, op, ours, theirs):
        """op on an arena object and on its equal DRAM twin: the same
        outcome, and nothing the checker cannot account for."""
        self.assertInArena(ours)
        self.assertClean()
        try:
            expected = op(theirs)
        except Exception as exc:
            with self.assertRaises(type(exc)):
                op(ours)
        else:
            result = op(ours)
            if result is not ours:
                self.assertEqual(result, expected)
        self.assertClean()

    def assertInArena(self, obj):
        self.assertTrue(self.arena.contains(obj),
                        f"{type(obj).__name__} is in "
                        f"{_teststorage.storage_of(obj)}, not the arena")


class ListHookTests(ArenaTestCase):

    def make(self, items=(1, 2, 3, "a", None, 4.5, 2**70, (1, 2))):
        arena_list = placed(self.arena, list, items)
        self.assertInArena(arena_list)
        self.assertClean()
        return arena_list, list(items)

    def check_op(self, op, items=None):
        """op(list) on an arena list and a DRAM list: same result, same
        contents, nothing unregistered."""
        ours, theirs = self.make() if items is None else self.make(items)
        self.run_both(op, ours, theirs)
        self.assertEqual(ours, theirs)
        return ours

    def test_append(self):
        self.check_op(lambda l: l.append(5))
        self.check_op(lambda l: [l.append(i) for i in range(100)])

    def test_insert(self):
        for where in (0, 3, -2, 100, -100):
            with self.subTest(where=where):
                self.check_op(lambda l: l.insert(where, "x"))

    def test_extend(self):
        self.check_op(lambda l: l.extend([7, 8, 9]))
        self.check_op(lambda l: l.extend((7, 8)))
        self.check_op(lambda l: l.extend(range(50)))
        self.check_op(lambda l: l.extend(str(i) for i in range(20)))
        self.check_op(lambda l: l.extend(l))
        self.check_op(lambda l: l.extend([]), items=[])
        self.check_op(lambda l: l.extend(range(3)), items=[])
        # 3.13's direct writers of sets, dicts and dict views.
        self.check_op(lambda l: l.extend({"s1", "s2", 3}))
        self.check_op(lambda l: l.extend(frozenset({"f1", 2})))
        self.check_op(lambda l: l.extend({"k1": 1, "k2": [2]}))
        self.check_op(lambda l: l.extend({"k1": 1, "k2": 2}.values()))
        self.check_op(lambda l: l.extend({"k1": 1, "k2": 2}.items()))
        self.check_op(lambda l: _testcapi.list_extend(l, ["c1", "c2"]))

    def test_inplace_concat_and_repeat(self):
        def iadd(l):
            l += [1, 2]
        def imul(n):
            def op(l):
                l *= n
            return op
        self.check_op(iadd)
        for n in (0, 1, 3):
            with self.subTest(n=n):
                self.check_op(imul(n))

    def test_setitem(self):
        def setitem(i):
            def op(l):
                l[i] = "new"
            return op
        for i in (0, 3, -1, 99):
            with self.subTest(i=i):
                self.check_op(setitem(i))

    def test_slices(self):
        ops = {
            "l[1:3] = []": lambda l: l.__setitem__(slice(1, 3), []),
            "l[1:3] = [a, b, c, d]":
                lambda l: l.__setitem__(slice(1, 3), list("abcd")),
            "l[1:3] = (x, y)": lambda l: l.__setitem__(slice(1, 3), "xy"),
            "l[:] = l": lambda l: l.__setitem__(slice(None), l),
            "l[:] = []": lambda l: l.__setitem__(slice(None), []),
            "l[::2] = seq": lambda l: l.__setitem__(slice(None, None, 2),
                                                   range(4)),
            "l[::-2] = seq": lambda l: l.__setitem__(slice(None, None, -2),
                                                    range(4)),
            "l[::-1] = l": lambda l: l.__setitem__(slice(None, None, -1), l),
            "del l[2]": lambda l: l.__delitem__(2),
            "del l[1:4]": lambda l: l.__delitem__(slice(1, 4)),
            "del l[::2]": lambda l: l.__delitem__(slice(None, None, 2)),
            "del l[::-3]": lambda l: l.__delitem__(slice(None, None, -3)),
            "l[5:2] = seq": lambda l: l.__setitem__(slice(5, 2), [0, 0]),
            "l[::2] = wrong size": lambda l: l.__setitem__(
                slice(None, None, 2), [1]),
        }
        for name, op in ops.items():
            with self.subTest(name):
                self.check_op(op)

    def test_pop_remove_clear(self):
        self.check_op(lambda l: l.pop())
        self.check_op(lambda l: l.pop(0))
        self.check_op(lambda l: l.pop(3))
        self.check_op(lambda l: l.pop(), items=[])
        self.check_op(lambda l: l.remove("a"))
        self.check_op(lambda l: l.remove("missing"))
        self.check_op(lambda l: l.clear())
        self.check_op(lambda l: [l.pop() for _ in range(len(l))])
        self.check_op(lambda l: l.pop(), items=["only"])
        self.check_op(lambda l: _testcapi.list_clear(l))

    def test_sort_reverse_init(self):
        items = [5, 3, 9, 1, 7, 2, 8] * 10
        self.check_op(lambda l: l.sort(), items=items)
        self.check_op(lambda l: l.sort(key=lambda x: -x, reverse=True),
                      items=items)
        self.check_op(lambda l: l.sort(key=str), items=items)
        self.check_op(lambda l: l.sort(), items=[3, "a"])  # TypeError
        self.check_op(lambda l: l.reverse())
        self.check_op(lambda l: l.__init__(range(10)))
        self.check_op(lambda l: l.__init__())

    def test_specialized_store_subscr_list_int(self):
        def store(l, i, v):
            l[i] = v
        for _ in range(WARMUP):
            store([1, 2, 3], 1, 0)
        # Specialized on DRAM lists while the arena is registered; it
        # deopts for the arena's.
        assertSpecialized(self, store, "STORE_SUBSCR_LIST_INT")
        self.check_op(lambda l: [store(l, i, i * 10) for i in range(3)])

    def test_specialized_list_append(self):
        def append(l, v):
            l.append(v)
        for _ in range(WARMUP):
            append([], 0)
        self.check_op(lambda l: [append(l, i) for i in range(20)])

    def test_list_append_opcode(self):
        # A comprehension's list is placed like any new list.
        result = placed(self.arena, lambda: [str(i) for i in range(50)])
        self.assertInArena(result)
        self.assertEqual(result, [str(i) for i in range(50)])
        self.assertClean()

    def test_heapq(self):
        items = [5, 3, 9, 1, 7, 2, 8, 4.5, 2**70] * 3
        ops = {
            "heappush": lambda h: heapq.heappush(h, 0),
            "heappush many": lambda h: [heapq.heappush(h, i)
                                        for i in range(100)],
            "heappop": lambda h: heapq.heappop(h),
            "heappop all": lambda h: [heapq.heappop(h)
                                      for _ in range(len(h))],
            "heappop empty": lambda h: heapq.heappop(h),
            "heapreplace": lambda h: heapq.heapreplace(h, 6),
            "heappushpop": lambda h: heapq.heappushpop(h, 6),
            "heappushpop smallest": lambda h: heapq.heappushpop(h, -1),
            "heapify": heapq.heapify,
            "heapify large": heapq.heapify,
            "_heapify_max": heapq._heapify_max,
            "_heappop_max": lambda h: heapq._heappop_max(h),
            "_heapreplace_max": lambda h: heapq._heapreplace_max(h, 6),
            "heappush TypeError": lambda h: heapq.heappush(h, "x"),
        }
        for name, op in ops.items():
            with self.subTest(name):
                data = list(items)
                if name == "heappop empty":
                    data = []
                elif name == "heapify large":
                    data = [(i * 7919) % 3001 for i in range(3000)]
                elif "max" in name:
                    heapq._heapify_max(data)
                elif not name.startswith("heapify"):
                    heapq.heapify(data)
                self.check_op(op, items=data)

    def test_reads_write_nothing(self):
        ours, theirs = self.make()
        for op in (len, repr, list, tuple, iter, sorted.__call__ if False
                   else (lambda l: sorted(l, key=str)), reversed,
                   lambda l: l.index("a"), lambda l: l.count(1),
                   lambda l: 3 in l, lambda l: l[1:5], lambda l: l == theirs,
                   lambda l: l.copy(), lambda l: l * 2, lambda l: l + l):
            op(ours)
        self.assertClean()


class DictHookTests(ArenaTestCase):

    def make(self, items=None):
        if items is None:
            items = {"a": 1, "b": "two", "c": None, "d": 4.5, "e": 2**70}
        ours = placed(self.arena, dict, items)
        self.assertInArena(ours)
        self.assertClean()
        return ours, dict(items)

    def check_op(self, op, items=None):
        ours, theirs = self.make(items)
        self.run_both(op, ours, theirs)
        self.assertEqual(ours, theirs)
        self.assertEqual(list(ours), list(theirs))
        return ours

    def test_setitem(self):
        def setitem(k, v):
            def op(d):
                d[k] = v
            return op
        self.check_op(setitem("new", 1))
        self.check_op(setitem("a", "replaced"))
        self.check_op(setitem(7, "int key"))       # unicode -> general
        self.check_op(setitem((1, 2), "tuple key"))
        self.check_op(setitem("x", 1), items={})   # empty keys
        self.check_op(setitem(1, 1), items={})

    def test_growth(self):
        self.check_op(lambda d: [d.__setitem__(f"k{i}", i)
                                 for i in range(1000)])
        self.check_op(lambda d: [d.__setitem__(i, i) for i in range(1000)],
                      items={})

    def test_delete(self):
        self.check_op(lambda d: d.__delitem__("b"))
        self.check_op(lambda d: d.__delitem__("missing"))
        self.check_op(lambda d: d.pop("c"))
        self.check_op(lambda d: d.pop("missing", "default"))
        self.check_op(lambda d: d.pop("missing"))
        self.check_op(lambda d: [d.pop(k) for k in list(d)])
        self.check_op(lambda d: (d.pop("a"), d.__setitem__("a", 0)))
        self.check_op(lambda d: d.popitem())
        self.check_op(lambda d: [d.popitem() for _ in range(len(d))])
        self.check_op(lambda d: d.popitem(), items={})
        self.check_op(lambda d: d.popitem(), items={1: 2, 3: 4})
        self.check_op(lambda d: d.clear())

    def test_setdefault(self):
        self.check_op(lambda d: d.setdefault("a", 0))
        self.check_op(lambda d: d.setdefault("new", "v"))
        self.check_op(lambda d: d.setdefault("new"))

    def test_update(self):
        self.check_op(lambda d: d.update({"a": 0, "z": 26}))
        self.check_op(lambda d: d.update(x=1, y=2))
        self.check_op(lambda d: d.update([("p", 1), ("q", 2)]))
        self.check_op(lambda d: d.update(d))
        self.check_op(lambda d: d.update({str(i): i for i in range(100)}))
        self.check_op(lambda d: d.update({"k": 1}), items={})  # clone path
        self.check_op(lambda d: d.__ior__({"m": 1}))
        self.check_op(lambda d: d.__init__({"i": 1}, j=2))
        self.check_op(lambda d: d.update(1))  # TypeError

    def test_specialized_store_subscr_dict(self):
        def store(d, k, v):
            d[k] = v
        for _ in range(WARMUP):
            store({}, "k", 0)
        self.check_op(lambda d: [store(d, str(i), i) for i in range(30)])

    def test_map_add(self):
        result = placed(self.arena, lambda: {str(i): i for i in range(50)})
        self.assertInArena(result)
        self.assertEqual(result, {str(i): i for i in range(50)})
        self.assertClean()

    def test_reads_write_nothing(self):
        ours, theirs = self.make()
        for op in (len, repr, list, iter, lambda d: d["a"],
                   lambda d: d.get("zz"), lambda d: "b" in d,
                   lambda d: list(d.items()), lambda d: list(d.values()),
                   lambda d: d == theirs, lambda d: d.copy(),
                   lambda d: dict(d), lambda d: d | {"q": 1},
                   lambda d: {**d}):
            op(ours)
        self.assertClean()


class SetHookTests(ArenaTestCase):

    def make(self, items=(1, 2, 3, "a", "b", None, 4.5, (1, 2))):
        ours = placed(self.arena, set, items)
        self.assertInArena(ours)
        self.assertClean()
        return ours, set(items)

    def check_op(self, op, items=None):
        ours, theirs = self.make() if items is None else self.make(items)
        self.run_both(op, ours, theirs)
        self.assertEqual(ours, theirs)
        return ours

    def test_add_discard_pop_clear(self):
        self.check_op(lambda s: s.add("new"))
        self.check_op(lambda s: s.add(1))
        self.check_op(lambda s: [s.add(i) for i in range(500)])
        self.check_op(lambda s: [s.add(i) for i in range(500)], items=())
        self.check_op(lambda s: s.discard("a"))
        self.check_op(lambda s: s.discard("missing"))
        self.check_op(lambda s: s.remove("missing"))
        self.check_op(lambda s: (s.discard("a"), s.add("a")))
        self.check_op(lambda s: sorted(map(str, [s.pop()
                                                for _ in range(len(s))])))
        self.check_op(lambda s: s.pop(), items=())
        self.check_op(lambda s: s.clear())
        self.check_op(lambda s: [s.discard(i) for i in range(300)],
                      items=range(500))

    def test_updates(self):
        self.check_op(lambda s: s.update({5, 6}, [7], "xy"))
        self.check_op(lambda s: s.update({"k": 1}))
        self.check_op(lambda s: s.update(set(range(100))), items=())
        self.check_op(lambda s: s.update(s))
        self.check_op(lambda s: s.__ior__({8, 9}))
        self.check_op(lambda s: s.__isub__({1, 2}))
        self.check_op(lambda s: s.difference_update([3], {"a"}))
        self.check_op(lambda s: s.__ixor__({1, 99}))
        self.check_op(lambda s: s.symmetric_difference_update({"k": 0}))
        self.check_op(lambda s: s.__iand__({1, 2, "a"}))
        self.check_op(lambda s: s.intersection_update([1, "b"], (1, "b")))
        self.check_op(lambda s: s.intersection_update(range(1000)),
                      items=range(100))
        self.check_op(lambda s: s.__init__([1, 2]))

    def test_reads_write_nothing(self):
        ours, theirs = self.make()
        for op in (len, repr, list, lambda s: 1 in s, lambda s: s | {0},
                   lambda s: s & {1}, lambda s: s - {1}, lambda s: s ^ {1},
                   lambda s: s.copy(), lambda s: s <= theirs,
                   lambda s: s.isdisjoint({0}), frozenset):
            op(ours)
        self.assertClean()


class ByteArrayHookTests(ArenaTestCase):

    def check_op(self, op, data=b"hello, world"):
        ours, theirs = placed(self.arena, bytearray, data), bytearray(data)
        self.run_both(op, ours, theirs)
        self.assertEqual(ours, theirs)

    def test_methods(self):
        ops = {
            "append": lambda b: b.append(33),
            "append many": lambda b: [b.append(i) for i in range(300)],
            "extend bytes": lambda b: b.extend(b"abc"),
            "extend ints": lambda b: b.extend(range(100)),
            "extend self": lambda b: b.extend(b),
            "insert": lambda b: b.insert(3, 65),
            "insert front": lambda b: b.insert(-100, 65),
            "pop": lambda b: b.pop(),
            "pop 0": lambda b: b.pop(0),
            "remove": lambda b: b.remove(ord("o")),
            "remove missing": lambda b: b.remove(ord("z")),
            "reverse": lambda b: b.reverse(),
            "clear": lambda b: b.clear(),
            "+=": lambda b: b.__iadd__(b"tail"),
            "*= 3": lambda b: b.__imul__(3),
            "*= 0": lambda b: b.__imul__(0),
            "b[i] = x": lambda b: b.__setitem__(2, 90),
            "b[i:j] = grow": lambda b: b.__setitem__(slice(2, 4), b"XYZW"),
            "b[i:j] = shrink": lambda b: b.__setitem__(slice(0, 6), b"."),
            "b[::2] = ...": lambda b: b.__setitem__(slice(None, None, 2),
                                                   b"_" * 6),
            "del b[i]": lambda b: b.__delitem__(4),
            "del b[::3]": lambda b: b.__delitem__(slice(None, None, 3)),
            "del b[:5]": lambda b: b.__delitem__(slice(None, 5)),
            "__init__": lambda b: b.__init__(b"again"),
            "__init__ int": lambda b: b.__init__(10),
        }
        for name, op in ops.items():
            with self.subTest(name):
                self.check_op(op)
        self.check_op(lambda b: b.extend(b"x" * 100), data=b"")

    def test_buffers_are_read_only(self):
        b = placed(self.arena, bytearray, b"abcdef")
        self.assertClean()
        with memoryview(b) as m:
            self.assertTrue(m.readonly)
            self.assertEqual(bytes(m[1:3]), b"bc")
            with self.assertRaises(TypeError):
                m[0] = 65
        with self.assertRaisesRegex(BufferError, "cannot export a writable "
                                    "buffer of a 'bytearray' object in "
                                    "ByteArrayHookTests storage"):
            b.__buffer__(inspect.BufferFlags.WRITABLE)
        with self.assertRaises(TypeError):
            struct.pack_into("B", b, 0, 65)
        with self.assertRaises(TypeError):
            io.BytesIO(b"xyz").readinto(b)
        self.assertEqual(b, b"abcdef")
        self.assertClean()
        # A DRAM bytearray's are writable, while the arena is registered.
        d = bytearray(b"abcdef")
        memoryview(d)[0] = 65
        struct.pack_into("B", d, 1, 66)
        self.assertEqual(d, b"ABcdef")

    def test_reads_write_nothing(self):
        b = placed(self.arena, bytearray, b"abcdef")
        for op in (len, bytes, repr, lambda b: b[1:3], lambda b: b.find(b"c"),
                   lambda b: b.upper(), lambda b: b + b"x",
                   lambda b: b.hex(), lambda b: b.decode()):
            op(b)
        self.assertClean()


class InstanceHookTests(ArenaTestCase):

    def check_op(self, cls, op, *args):
        ours, theirs = placed(self.arena, cls, *args), cls(*args)
        if hasattr(ours, "__dict__"):
            self.assertInArena(ours.__dict__)
        self.run_both(op, ours, theirs)
        self.assertEqual(state(ours), state(theirs))

    def test_dict_attributes(self):
        ops = {
            "replace": lambda p: setattr(p, "x", 10),
            "new": lambda p: setattr(p, "z", "zed"),
            "many": lambda p: [setattr(p, f"a{i}", i) for i in range(40)],
            "delete": lambda p: delattr(p, "y"),
            "delete missing": lambda p: delattr(p, "nope"),
            "object.__setattr__": lambda p: object.__setattr__(p, "x", 0),
            "via __dict__": lambda p: p.__dict__.__setitem__("w", 1),
            "__dict__ = d": lambda p: setattr(p, "__dict__", {"q": 1}),
            "vars update": lambda p: vars(p).update(k=2),
        }
        for name, op in ops.items():
            with self.subTest(name):
                self.check_op(Point, op, 1, 2)

    def test_slots(self):
        ops = {
            "replace": lambda s: setattr(s, "a", 10),
            "delete": lambda s: delattr(s, "b"),
            "delete twice": lambda s: (delattr(s, "b"), delattr(s, "b")),
        }
        for name, op in ops.items():
            with self.subTest(name):
                self.check_op(Slotted, op, 1, 2)

    def test_specialized_store_attr(self):
        def store(obj, v):
            obj.x = v
        def store_slot(obj, v):
            obj.a = v
        def store_hint(obj, v):
            obj.a30 = v
        many = Point(0, 0)
        for i in range(40):
            setattr(many, f"a{i}", i)
        for _ in range(WARMUP):
            store(Point(0, 0), 1)
            store_slot(Slotted(0, 0), 1)
            store_hint(many, 1)
        # Specialized on DRAM objects while the arena is registered; they
        # deopt for the arena's objects.
        assertSpecialized(self, store, "STORE_ATTR_INSTANCE_VALUE")
        assertSpecialized(self, store_slot, "STORE_ATTR_SLOT")
        assertSpecialized(self, store_hint, "STORE_ATTR_WITH_HINT")
        self.check_op(Point, lambda p: [store(p, i) for i in range(5)], 1, 2)
        self.check_op(Slotted, lambda s: [store_slot(s, i) for i in range(5)],
                      1, 2)

        def fill_and_store(p):
            for i in range(40):
                setattr(p, f"a{i}", i)
            for i in range(5):
                store_hint(p, i)
        self.check_op(Point, fill_and_store, 1, 2)


class LayoutTests(unittest.TestCase):
    """No field was added to any object: extensions built for 3.13 load."""

    @unittest.skipUnless(sys.maxsize > 2**32, "sizes measured on 64-bit")
    def test_object_layouts_are_stock(self):
        # The basic sizes of stock CPython 3.13.5 (make stock).
        stock = {object: 16, dict: 48, list: 40, set: 200, frozenset: 200,
                 bytearray: 56, type: 928, tuple: 24, int: 24, float: 24,
                 str: 64, bytes: 33}
        self.assertEqual({t: t.__basicsize__ for t in stock}, stock)
        self.assertEqual(type.__itemsize__, 40)


class SpecializationTests(unittest.TestCase):

    def test_store_attr_specialized_before_activation(self):
        # Only a new process has specialized code from before any manager.
        code = """if 1:
            import dis, _teststorage
            class P:
                __slots__ = ("a",)
            class Q:
                pass
            def store_slot(o, v):
                o.a = v
            def store_hint(o, v):
                o.a30 = v
            many = Q()
            for i in range(40):
                setattr(many, f"a{i}", i)
            for _ in range(64):
                store_slot(P(), 1)
                store_hint(many, 1)
            ops = {i.opname for f in (store_slot, store_hint)
                   for i in dis.get_instructions(f, adaptive=True)}
            assert {"STORE_ATTR_SLOT", "STORE_ATTR_WITH_HINT"} <= ops, ops
            arena = _teststorage.Arena()
            arena.push_placement()
            p, q = P(), Q()
            arena.pop_placement()
            for i in range(40):
                setattr(q, f"a{i}", i)
            arena.check()
            store_slot(p, 5)
            store_hint(q, 6)
            assert (p.a, q.a30) == (5, 6)
            violations = arena.check()
            assert violations == [], violations
        """
        assert_python_ok("-c", code)


def state(obj):
    if hasattr(obj, "__dict__"):
        return dict(vars(obj))
    return {name: getattr(obj, name, None) for name in obj.__slots__}


class StoreRuleTests(ArenaTestCase):
    """The memory-hierarchy rule, with a persistent arena."""

    persistent = True

    def new_list(self):
        l = placed(self.arena, list)
        self.assertInArena(l)
        return l

    def test_immutables_are_copied_in(self):
        l = self.new_list()
        values = [2**100, 1.5, 3j, "text", "\u20ac" * 3, b"bytes",
                  (1, "two", (3.0,)), frozenset({1, "a"}), 12345, True]
        for v in values:
            l.append(v)
        self.assertEqual(l, values)
        for got in l:
            if got is not True:
                self.assertInArena(got)
        self.assertClean()

    def test_singletons_and_small_ints_are_stored_as_they_are(self):
        l = self.new_list()
        l.extend([None, True, False, ..., NotImplemented, 5, -3, ""])
        self.assertIs(l[0], None)
        self.assertIs(l[1], True)
        self.assertIs(l[3], ...)
        self.assertIs(l[5], 5)
        self.assertClean()

    def test_unshared_mutables_are_moved_in(self):
        l = self.new_list()
        l.append([])
        l.append({"k": [1, 2], "s": {3}})
        l.insert(0, bytearray(b"xyz"))
        l[0:0] = [[9]]
        l.extend([[8], {7}])
        for item in l:
            self.assertInArena(item)
        self.assertInArena(l[3]["k"])
        self.assertEqual(l, [[9], bytearray(b"xyz"), [],
                             {"k": [1, 2], "s": {3}}, [8], {7}])
        self.assertClean()

    def test_shared_mutables_are_refused(self):
        l = self.new_list()
        l.append(1)
        shared = []
        keep = Keep(shared)     # (a variable's dict would be rewritten)
        inner_shared = {"k": shared}
        cases = {
            "append": lambda: l.append(shared),
            "insert": lambda: l.insert(0, shared),
            "setitem": lambda: l.__setitem__(0, shared),
            "extend": lambda: l.extend([shared]),
            "slice": lambda: l.__setitem__(slice(0, 1), [shared]),
            "nested": lambda: l.append({"k": shared}),
            "shared source": lambda: l.extend(inner_shared.values()),
            "in a tuple": lambda: l.append((1, shared)),
        }
        for name, op in cases.items():
            with self.subTest(name):
                with self.assertRaisesRegex(TypeError, "referenced from "
                                            "elsewhere"):
                    op()
                self.assertEqual(l, [1])
                self.assertClean()

    def test_new_lists_of_a_placement_store_their_items(self):
        s = "volatile " + str(len(self.id()))
        y = [s, 2.5, (1, "t")]
        made = placed(self.arena, lambda: {
            "build": [s, 2.5, (s, 1.5)],
            "repeat": [s, 0.5] * 3,
            "slice": y[1:],
            "step": y[::2],
            "copy": y.copy(),
            "concat": y + [s],
            "getslice": _testlimitedcapi.list_getslice(y, 0, 2),
        })
        for name, l in made.items():
            with self.subTest(name):
                self.assertInArena(l)
                for item in l:
                    self.assertInArena(item)
        self.assertEqual(made["build"], [s, 2.5, (s, 1.5)])
        self.assertEqual(made["repeat"], [s, 0.5] * 3)
        self.assertEqual(made["concat"], y + [s])
        self.assertEqual(made["getslice"], y[:2])
        self.assertIs(made["repeat"][0], made["repeat"][4])
        self.assertClean()
        # A new list's own mutable is moved in; the items of a DRAM list
        # are shared with it, and a mutable one is refused by a list
        # filled wholesale; list(z) (an extend) moves it, and z then
        # refers to the moved item (test_pmem.test_ownership).
        pending = [[7, [8]]]
        moved = placed(self.arena, lambda: [pending.pop()])
        self.assertEqual(moved, [[7, [8]]])
        self.assertInArena(moved[0])
        self.assertInArena(moved[0][1])
        z = [[1]]
        for name, op in {"slice": lambda: z[:], "copy": z.copy,
                         "concat": lambda: z + z, "repeat": lambda: z * 2,
                         "step": lambda: z[::-1],
                         "build": lambda: [z[0]]}.items():
            with self.subTest(name):
                with self.assertRaisesRegex(TypeError, "referenced from "
                                            "elsewhere"):
                    placed(self.arena, op)
        made = placed(self.arena, lambda: list(z))
        self.assertIs(made[0], z[0])
        self.assertInArena(z[0])
        z[0] = [1]
        # A DRAM list's own temporary copy (l[:] = l) is not stored.
        placed(self.arena, lambda: z.__setitem__(slice(None), z))
        placed(self.arena, lambda: z.__setitem__(slice(None, None, -1), z))
        self.assertEqual(z, [[1]])
        self.assertClean()

    def test_heapq_stores_by_the_rule(self):
        h = self.new_list()
        heapq.heappush(h, [3.5])
        heapq.heappush(h, [1.5])
        self.assertEqual(heapq.heapreplace(h, [2.5]), [1.5])
        self.assertEqual(heapq.heappushpop(h, [4.5]), [2.5])
        self.assertEqual(h, [[3.5], [4.5]])
        for item in h:
            self.assertInArena(item)
            self.assertInArena(item[0])
        shared = [9.5]      # larger than h[0]: heappushpop stores it
        keep = Keep(shared)
        for op in (heapq.heapreplace, heapq.heappushpop, heapq.heappush,
                   heapq._heapreplace_max):
            with self.subTest(op.__name__):
                with self.assertRaisesRegex(TypeError, "referenced from "
                                            "elsewhere"):
                    op(h, shared)
                self.assertEqual(h, [[3.5], [4.5]])
        self.assertClean()

    def test_unstorable_type_is_refused(self):
        l = self.new_list()
        with self.assertRaisesRegex(TypeError,
                                    "cannot store a 'function' object"):
            l.append(lambda: None)
        self.assertEqual(l, [])

    def test_dict_rules(self):
        d = placed(self.arena, dict)
        d["key"] = []       # (a one-character str is static: not copied)
        d.update({"u": {"v": [1]}})
        d.setdefault("s", [2])
        self.assertInArena(d["key"])
        self.assertInArena(d["u"]["v"])
        self.assertInArena(d["s"])
        self.assertInArena(next(iter(d)))        # the key, copied in
        shared = {"k2": []}
        keep = Keep(shared["k2"])
        with self.assertRaisesRegex(TypeError, "referenced from elsewhere"):
            d.update(shared)
        inner = []
        keep = Keep(inner)
        with self.assertRaisesRegex(TypeError, "referenced from elsewhere"):
            d["x"] = inner
        del keep
        self.assertEqual(d, {"key": [], "u": {"v": [1]}, "s": [2]})
        self.assertClean()

    def test_moved_instance(self):
        l = self.new_list()
        l.append(Point(1, [2]))
        p = l[0]
        self.assertIs(type(p), Point)
        self.assertInArena(p)
        self.assertEqual((p.x, p.y), (1, [2]))
        self.assertInArena(p.y)
        l.append(Slotted(3, "s"))
        self.assertEqual((l[1].a, l[1].b), (3, "s"))
        self.assertInArena(l[1])
        self.assertClean()
        # Stores into the persistent instances follow the rule too.
        p.z = [3]
        self.assertInArena(p.z)
        l[1].b = {"k": []}
        self.assertInArena(l[1].b)
        shared = []
        keep = Keep(shared)
        with self.assertRaisesRegex(TypeError, "referenced from elsewhere"):
            p.w = shared
        with self.assertRaisesRegex(TypeError, "referenced from elsewhere"):
            l[1].a = shared
        with self.assertRaisesRegex(TypeError, "referenced from elsewhere"):
            p.__dict__ = shared_dict = {}
        self.assertEqual((p.x, p.y, p.z, l[1].a), (1, [2], [3], 3))
        self.assertClean()


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a = a
        self.b = b


class CollectionsHookTests(ArenaTestCase):
    """The mutable kinds that a pool holds beyond the builtins -- Python's
    subclasses of dict, list and set, Counter, defaultdict, OrderedDict,
    deque -- change through hooked code: every public method that changes one
    (stdlib_changes.CHANGES), each on an arena object and its DRAM twin,
    with several arguments."""

    def test_every_change(self):
        for name, changes in stdlib_changes.CHANGES.items():
            make = stdlib_changes.MUTABLES[name]
            for change in changes:
                for seed in range(4):
                    with self.subTest(kind=name, change=change.__name__,
                                      seed=seed):
                        ours, theirs = placed(self.arena, make), make()
                        self.assertIs(type(ours), type(theirs))
                        self.run_both(
                            lambda x: change(x, random.Random(seed)),
                            ours, theirs)
                        self.assertTrue(stdlib_changes.same(ours, theirs),
                                        f"{ours!r} != {theirs!r}")


class FreeListTests(ArenaTestCase):
    """Free lists and caches never receive or hand out arena memory."""

    persistent = True

    def test_freed_arena_objects_are_not_recycled(self):
        before = self.arena.stats()["live_blocks"]
        for _ in range(20):
            # Made under the placement: a mutable that placed()'s *args
            # held would be shared, and refused.
            l = placed(self.arena, lambda: list([1.5, (1, 2), {"a": 1},
                                                 [2]]))
            d = placed(self.arena, dict, a=1)
            del l, d
        gc.collect()
        self.assertEqual(self.arena.stats()["live_blocks"], before)
        fresh = ([[] for _ in range(50)] + [{} for _ in range(50)]
                 + [float(i) + 0.5 for i in range(50)]
                 + [(i, i) for i in range(50)])
        for obj in fresh:
            self.assertFalse(self.arena.contains(obj), type(obj))
        self.assertClean()


class FailureTests(ArenaTestCase):
    """A manager that cannot begin or commit makes the operation raise.

    One operation per kind of slow path: a re-entered function, a hooked
    twin (with and without the store rule), and each signature of the
    twins' slow paths.  The arena injects the failures.
    """

    value = object()

    def operations(self):
        v = self.value
        return {
            "list.append": (list, [1, 2], lambda l: l.append(v)),
            "l[0] = v": (list, [1, 2], lambda l: l.__setitem__(0, v)),
            "list.sort": (list, [2, 1], lambda l: l.sort()),
            "d[k] = v": (dict, {"a": 1}, lambda d: d.__setitem__("b", v)),
            "{}[k] = v": (dict, {}, lambda d: d.__setitem__("b", v)),
            "del d[k]": (dict, {"a": 1}, lambda d: d.__delitem__("a")),
            "dict.popitem": (dict, {"a": 1}, lambda d: d.popitem()),
            "dict.clear": (dict, {"a": 1}, lambda d: d.clear()),
            "set.add": (set, {1}, lambda s: s.add(v)),
            "set.discard": (set, {1}, lambda s: s.discard(1)),
            "set.pop": (set, {1}, lambda s: s.pop()),
            "bytearray.append": (bytearray, b"ab", lambda b: b.append(1)),
            "b[0:1] = x": (bytearray, b"ab",
                           lambda b: b.__setitem__(slice(0, 1), b"xyz")),
            "bytearray +=": (bytearray, b"ab", lambda b: b.__iadd__(b"c")),
            "setattr": (Point, (1, 2), lambda p: setattr(p, "x", v)),
            "__slots__": (Slotted, (1, 2), lambda s: setattr(s, "a", v)),
        }

    def make(self, factory, arg):
        args = arg if factory in (Point, Slotted) else (arg,)
        obj = placed(self.arena, factory, *args)
        self.assertClean()
        return obj

    @staticmethod
    def contents(obj):
        if isinstance(obj, (Point, Slotted)):
            return state(obj)
        return bytes(obj) if isinstance(obj, bytearray) else type(obj)(obj)

    def test_failed_begin_changes_nothing(self):
        for name, (factory, arg, op) in self.operations().items():
            with self.subTest(name):
                obj = self.make(factory, arg)
                before = self.contents(obj)
                refs = sys.getrefcount(self.value)
                self.arena.fail_begins = 1
                with self.assertRaisesRegex(RuntimeError,
                                            "injected begin failure"):
                    op(obj)
                self.assertEqual(self.arena.fail_begins, 0)
                self.assertEqual(self.contents(obj), before)
                self.assertEqual(sys.getrefcount(self.value), refs)
                self.assertClean()

    def test_failed_commit_raises(self):
        for name, (factory, arg, op) in self.operations().items():
            with self.subTest(name):
                obj = self.make(factory, arg)
                self.arena.fail_commits = 1
                with self.assertRaisesRegex(RuntimeError,
                                            "injected commit failure"):
                    op(obj)
                self.assertEqual(self.arena.fail_commits, 0)
                self.assertClean()


if __name__ == "__main__":
    unittest.main()
