"""pmem pools: creating, opening, refusing bad files, transactions.

Each test that needs a second process runs one (script_helper), so that
what is checked is what a new process finds in the file.
"""

import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from test.support import import_helper
from test.support.script_helper import assert_python_ok

_pmem = import_helper.import_module("_pmem")
import pmem

SIZE = 16 << 20


class PoolTestCase(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="pmem-test-")
        self.addCleanup(shutil.rmtree, self.dir)
        self.path = os.path.join(self.dir, "test.pool")

    def make_pool(self, name="made.pool", code="pool.ns.x = [1, 2]"):
        """A pool made, and left, by another process."""
        path = os.path.join(self.dir, name)
        assert_python_ok("-c", textwrap.dedent(f"""
            import pmem
            pool = pmem.open({path!r}, size={SIZE})
            {code}
            """))
        return path

    def assertRefused(self, path, regex):
        with self.assertRaisesRegex(pmem.PoolError, regex):
            pmem.open(path, create=False)


class CreateTests(PoolTestCase):

    def test_create_makes_a_pool_under_its_name_only(self):
        pool = pmem.open(self.path, size=SIZE)
        self.assertIsInstance(pool, pmem.Pool)
        self.assertEqual(os.listdir(self.dir), ["test.pool"])
        self.assertEqual(os.path.getsize(self.path), SIZE)
        self.assertEqual(pool.size, SIZE)
        self.assertIs(pmem.open(self.path), pool)

    def test_leftover_of_a_crashed_creation_is_ignored(self):
        with open(self.path + ".creating", "wb") as f:
            f.write(b"half a pool")
        pmem.open(self.path, size=SIZE)
        self.assertEqual(os.listdir(self.dir), ["test.pool"])

    def test_missing_pool_without_create(self):
        with self.assertRaises(FileNotFoundError):
            pmem.open(self.path, create=False)
        self.assertEqual(os.listdir(self.dir), [])

    def test_too_small(self):
        with self.assertRaisesRegex(ValueError, "bytes at least"):
            pmem.open(self.path, size=1 << 20)
        self.assertEqual(os.listdir(self.dir), [])


class BadFileTests(PoolTestCase):
    """Each bad file gives PoolError, and the interpreter lives on."""

    def copy_of(self, path, name):
        copy = os.path.join(self.dir, name)
        shutil.copy(path, copy)
        return copy

    def test_foreign_file(self):
        with open(self.path, "w") as f:
            f.write("not a pool\n" * 1000)
        self.assertRefused(self.path, "does not start with a libpmemobj "
                                      "pool header")

    def test_empty_file(self):
        open(self.path, "w").close()
        self.assertRefused(self.path, "does not start with a libpmemobj")

    def test_truncated_pool(self):
        path = self.copy_of(self.make_pool(), "truncated.pool")
        os.truncate(path, SIZE // 2)
        self.assertRefused(path, "corrupt")

    def test_truncated_below_a_pool(self):
        path = self.copy_of(self.make_pool(), "tiny.pool")
        os.truncate(path, 4096)
        self.assertRefused(path, "truncated: 4096 bytes")

    def corrupt(self, offset, size=4096):
        path = self.copy_of(self.make_pool(), f"corrupt-{offset}.pool")
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(b"\xff" * size)
        return path

    def test_corrupt_pool_header(self):
        self.assertRefused(self.corrupt(100, 64),
                           "invalid checksum of pool header")

    def test_corrupt_pool_descriptor(self):
        self.assertRefused(self.corrupt(4096 + 100, 64),
                           "invalid checksum of pool descriptor")

    def test_corrupt_heap(self):
        # libpmemobj's own check crashes on this one: it runs in a child.
        self.assertRefused(self.corrupt(1 << 20), "corrupt")

    def test_pool_of_another_layout(self):
        name = ctypes.util.find_library("pmemobj")
        if name is None:
            self.skipTest("libpmemobj not found by ctypes")
        lib = ctypes.CDLL(name)
        lib.pmemobj_create.restype = ctypes.c_void_p
        lib.pmemobj_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                       ctypes.c_size_t, ctypes.c_uint]
        lib.pmemobj_close.argtypes = [ctypes.c_void_p]
        pop = lib.pmemobj_create(os.fsencode(self.path), b"another program",
                                 SIZE, 0o600)
        self.assertTrue(pop)
        lib.pmemobj_close(pop)
        self.assertRefused(self.path, "another layout")

    def test_wrong_format_version(self):
        path = self.make_pool()
        _pmem._set_format_version(path, pmem.FORMAT_VERSION + 98)
        self.assertRefused(path, f"format version {pmem.FORMAT_VERSION + 98};"
                                 f" this interpreter reads version "
                                 f"{pmem.FORMAT_VERSION} only")

    def test_pool_open_in_another_process(self):
        holder = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""
                import sys, pmem
                pool = pmem.open({self.path!r}, size={SIZE})
                print("open", flush=True)
                sys.stdin.read()
                """)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(holder.wait)
        self.addCleanup(holder.stdin.close)
        self.assertEqual(holder.stdout.readline(), "open\n")
        self.assertRefused(self.path, "open in another process")


class TransactionTests(PoolTestCase):

    def setUp(self):
        super().setUp()
        self.pool = pmem.open(self.path, size=SIZE)

    def test_objects_are_builtins_in_the_pool(self):
        pool = self.pool
        pool.ns.accounts = dict()            # moved in
        pool.ns.accounts["alice"] = 10.0     # copied in
        accounts = pool.ns.accounts
        self.assertIs(type(accounts), dict)
        self.assertIs(pmem.storage_of(accounts), pool)
        self.assertIs(pmem.storage_of(accounts["alice"]), pool)
        self.assertIsNone(pmem.storage_of({}))
        self.assertEqual(json.dumps(accounts), '{"alice": 10.0}')
        self.assertEqual(dir(pool.ns), ["accounts"])
        self.assertEqual(vars(pool.ns), {"accounts": accounts})
        self.assertTrue(hasattr(pool.ns, "accounts"))
        del pool.ns.accounts
        self.assertFalse(hasattr(pool.ns, "accounts"))
        with self.assertRaises(AttributeError):
            del pool.ns.accounts

    def test_shared_mutable_is_refused(self):
        shared = {}
        with self.assertRaisesRegex(TypeError, "referenced from elsewhere"):
            self.pool.ns.shared = shared
        self.assertFalse(hasattr(self.pool.ns, "shared"))

    def test_explicit_styles(self):
        d = pmem.PersistentDict(self.pool, a=1)
        l = pmem.PersistentList(self.pool, [1, 2])
        s = pmem.PersistentSet(self.pool, "ab")
        b = pmem.PersistentByteArray(self.pool, b"xy")
        for obj in (d, l, s, b):
            self.assertIs(pmem.storage_of(obj), self.pool)
        self.assertEqual((d, l, s, b), ({"a": 1}, [1, 2], {"a", "b"},
                                        bytearray(b"xy")))

    def test_with_pool_commits(self):
        pool = self.pool
        pool.ns.accounts = {"alice": 10.0, "bob": 0.0}
        with pool:
            pool.ns.accounts["alice"] -= 4
            pool.ns.accounts["bob"] += 4
        self.assertEqual(pool.ns.accounts, {"alice": 6.0, "bob": 4.0})
        self.assertEqual(pool.depth, 0)

    def test_exception_rolls_back(self):
        pool = self.pool
        pool.ns.accounts = {"alice": 10.0, "bob": 0.0}
        pool.ns.log = []
        with self.assertRaises(ZeroDivisionError):
            with pool.transaction():
                pool.ns.accounts["alice"] -= 4
                pool.ns.accounts["carol"] = 1.0
                pool.ns.log.append("transfer")
                with pool:                   # nested: joins the outer one
                    pool.ns.accounts["bob"] += 4
                1 / 0
        self.assertEqual(pool.ns.accounts, {"alice": 10.0, "bob": 0.0})
        self.assertEqual(list(pool.ns.accounts), ["alice", "bob"])
        self.assertEqual(pool.ns.log, [])
        self.assertEqual(pool.depth, 0)

    def test_closed_pool_refuses_changes(self):
        pool = self.pool
        pool.ns.items = [1]
        items = pool.ns.items
        pool.close()
        self.assertTrue(pool.closed)
        with self.assertRaisesRegex(pmem.PoolError, "is closed"):
            items.append(2)
        self.assertEqual(items, [1])
        with self.assertRaisesRegex(pmem.PoolError, "closed in this process"):
            pmem.open(self.path)

    def test_reopen_is_refused_until_the_open_pass_exists(self):
        # What a new process finds today: a clear refusal, not garbage.
        path = self.make_pool()
        self.assertRefused(path, "no open pass")


if __name__ == "__main__":
    unittest.main()
