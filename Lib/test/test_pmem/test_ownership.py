"""Ownership: the memory-hierarchy rule counts the references that a store
can find and rewrite.

A mutable volatile object moves into a pool when every reference to it is
one that the store finds and rewrites -- this thread's variables (fast
locals, cells, the globals of a module that is running), the evaluation
stacks of the calls in progress, the source container of extend() and
update(), the keyword arguments of the running call -- and each of those
refers to the moved object afterwards: x is d[k].  A transaction that is
undone puts them back on the originals.  What stays shared (an object that
is not one of those, another thread, a suspended generator) is refused,
and the message names the container when a variable refers to it.
"""

import collections
import csv
import io
import os
import unittest
from test.test_pmem import run_in_new_process
from test.test_pmem.util import SIZE, PoolTestCase, pmem


def put(d, k, v):
    """A helper that stores its argument."""
    d[k] = v


class Aborted(Exception):
    pass


class OwnershipTests(PoolTestCase):

    def setUp(self):
        super().setUp()
        self.pool = pmem.open(self.path, size=SIZE)
        self.pool.ns.d = {}
        self.pool.ns.rows = []
        self.d = self.pool.ns.d
        self.rows = self.pool.ns.rows
        # (Before close_pools(): a pool is let go once nothing holds its
        # objects.)
        self.addCleanup(self.drop)

    def drop(self):
        del self.d, self.rows, self.pool

    def assertMoved(self, obj):
        self.assertIs(pmem.storage_of(obj), self.pool)

    def test_argument_of_a_helper(self):
        put(self.d, "h", [1])
        self.assertEqual(self.d["h"], [1])
        self.assertMoved(self.d["h"])

    def test_variable_passed_to_a_helper(self):
        x = [1]
        put(self.d, "h", x)
        self.assertIs(x, self.d["h"])
        self.assertMoved(x)
        x.append(2)
        self.assertEqual(self.d["h"], [1, 2])

    def test_variable_stored_directly(self):
        x = {"a": [1]}
        self.d["k"] = x
        self.assertIs(x, self.d["k"])
        self.rows.append(x["a"])        # held by the pool's dict: stays
        self.assertIs(self.rows[0], x["a"])

    def test_variable_of_a_closure(self):
        x = [1]
        records = [[2], [3]]

        def store():
            self.d["c"] = x
            for r in records:
                self.rows.append(r)
        store()
        self.assertIs(x, self.d["c"])
        self.assertIs(records[1], self.rows[1])

    def test_slot_wrappers(self):
        # d.__setitem__(k, v) and o.__setattr__(n, v): the call's tuple of
        # arguments holds v too.
        self.d.__setitem__("k", [])
        self.assertMoved(self.d["k"])
        x = [1]
        dict.__setitem__(self.d, "x", x)
        self.assertIs(x, self.d["x"])
        self.pool.ns.__setattr__("attr", x)
        self.assertIs(self.pool.ns.attr, x)
        self.rows.append(None)
        self.rows.__setitem__(0, [2])
        self.assertMoved(self.rows[0])

    def test_loop_over_csv_rows(self):
        text = "name,qty\napple,3\npear,5\n"
        for row in csv.DictReader(io.StringIO(text)):
            self.rows.append(row)
            self.assertIs(row, self.rows[-1])
        self.assertEqual([r["name"] for r in self.rows], ["apple", "pear"])
        self.assertMoved(self.rows[0])

    def test_extend_from_a_shared_list(self):
        records = [[i] for i in range(5)] + [(1, 2), "s"]
        self.rows.extend(records)
        self.assertEqual(records, self.rows)
        # The lists moved (values are copied: (1, 2) is another tuple).
        for i in range(5):
            self.assertIs(records[i], self.rows[i])
        self.assertMoved(records[0])

    def test_loop_append_from_a_list(self):
        # Each item is held by records too, a list of a variable: it
        # refers to the moved item afterwards.
        records = [{"n": i} for i in range(300)]
        for r in records:
            self.rows.append(r)
        self.assertEqual(self.rows, records)
        for i in (0, 150, 299):
            self.assertIs(records[i], self.rows[i])
        by_name = {"a": [1], "b": [2]}
        for key in by_name:
            self.d[key] = by_name[key]
        self.assertIs(by_name["a"], self.d["a"])

    def test_part_held_by_a_variable_is_refused(self):
        # The parts of a moved value are not looked for in the frames.
        x = [1]
        with self.assertRaisesRegex(TypeError, r"'list' object .*by the "
                                               r"variable 'x'"):
            self.d["nested"] = [x]

    def test_update_from_a_shared_dict(self):
        defaults = {"a": [1], "b": 2}
        self.d.update(defaults)
        self.assertIs(defaults["a"], self.d["a"])
        self.d.update(c=[3], e={"f": [4]})
        self.assertEqual(self.d["c"], [3])
        self.assertMoved(self.d["e"]["f"])
        self.d |= {"g": [5]}
        self.assertEqual(self.d["g"], [5])

    def test_undone_transaction_puts_the_variables_back(self):
        x = [1]
        try:
            with self.pool:
                self.d["k"] = x
                self.assertIs(x, self.d["k"])
                x.append(2)
                raise Aborted
        except Aborted:
            pass
        self.assertNotIn("k", self.d)
        self.assertEqual(x, [1])
        self.assertIsNone(pmem.storage_of(x))

    def test_undone_savepoint_puts_its_variables_back(self):
        x, y = [1], [2]
        with self.pool:
            self.d["x"] = x
            try:
                with self.pool:
                    self.d["y"] = y
                    raise Aborted
            except Aborted:
                pass
            self.assertIsNone(pmem.storage_of(y))
            self.assertIs(x, self.d["x"])
        self.assertIs(x, self.d["x"])
        self.assertEqual(y, [2])
        self.assertNotIn("y", self.d)

    def test_held_by_an_object_is_refused(self):
        x = [1]
        holder = collections.deque([x])
        with self.assertRaisesRegex(TypeError, r"referenced from elsewhere "
                                               r"\(by something else than "
                                               r"this thread's variables"):
            self.d["k"] = x
        self.assertIsNone(pmem.storage_of(x))
        self.assertIs(holder[0], x)

    def test_held_by_a_suspended_generator_is_refused(self):
        x = [1]

        def gen(v):
            yield v
        g = gen(x)
        next(g)
        del x
        with self.assertRaises(TypeError):
            self.d["k"] = g.gi_frame.f_locals["v"]


class ModuleLevelTests(PoolTestCase):

    def test_globals_of_a_running_module(self):
        out = run_in_new_process(self, f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.d = {{}}
            d = pool.ns.d
            def put(k, v):
                d[k] = v
            x = [1]
            put("h", x)
            print(x is d["h"], pmem.storage_of(x) is pool)
            """)
        self.assertEqual(out, "True True\n")
        out = run_in_new_process(self, f"""
            import pmem
            pool = pmem.open({self.path!r})
            print(pool.ns.d)
            """)
        self.assertEqual(out, "{'h': [1]}\n")


if __name__ == "__main__":
    unittest.main()
