"""pmem pools: creating, opening, refusing bad files, transactions.

Each test that needs a second process runs one, so that what is checked
is what a new process finds in the file.

The pools live in ordinary files.  On those, libpmemobj makes every
flush an msync() (about a millisecond here); PMEM_IS_PMEM_FORCE=1 makes
it flush CPU caches instead, as on real persistent memory.  What a
killed process wrote is in the page cache either way, which is all that
these tests (and the crash tests) rely on; only a power cut tells the two
apart.  libpmemobj reads the variable when it is loaded: it is set here
before _pmem is imported, and passed to every child.
"""

import ctypes
import ctypes.util
import gc
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from test import support
from test.support import import_helper, os_helper
from test.support.script_helper import assert_python_ok
from test.test_pmem import run_in_new_process

FAST_FLUSH = {"PMEM_IS_PMEM_FORCE": "1"}
with os_helper.EnvironmentVarGuard() as env:
    env.update(FAST_FLUSH)
    _pmem = import_helper.import_module("_pmem")
    import pmem

SIZE = 16 << 20


class Plain:
    """A class of this module, for instances in pools."""


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
            """), **FAST_FLUSH)
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

    def test_corrupt_undo_log_of_a_lane(self):
        # A lane's undo log with its capacity zeroed: pmemobj_check() lets
        # it through, and libpmemobj's first transaction copied past it
        # (found by fuzz.py).  Lanes from offset 8192, 3072 bytes each, the
        # undo log's header 960 bytes in, its capacity 16 bytes into that.
        path = self.copy_of(self.make_pool(), "lane.pool")
        with open(path, "r+b") as f:
            f.seek(8192 + 3072 * 5 + 960 + 16)
            f.write(bytes(8))
        self.assertRefused(path, "lane 5's undo log has a capacity of 0 "
                                 "bytes, not 2048")

    def long_run(self):
        """A pool with a run of several chunks in libpmemobj's heap: the
        pool's path, and the file offsets of the run's chunk headers and
        of its block size (libpmemobj 1.12's heap format)."""
        path = self.make_pool(code="pool.ns.d = {i: str(i) for i in "
                                   "range(3000)}")
        with open(path, "rb") as f:
            data = f.read()
        (heap,) = struct.unpack_from("<Q", data, 4096 + 1024 + 16)
        headers = heap + 1024 + 64                  # zone 0's chunk headers
        chunks = headers + 8 * (65535 - 7)
        chunk = 0
        while True:
            kind, _, size_idx = struct.unpack_from("<HHI", data,
                                                   headers + 8 * chunk)
            self.assertIn(kind, (2, 3, 4), "no run of several chunks")
            if kind == 4 and size_idx > 1:
                return (path, [headers + 8 * (chunk + i)
                               for i in range(size_idx)],
                        chunks + (chunk << 18))
            chunk += size_idx

    def patched(self, path, offset, data):
        copy = self.copy_of(path, f"patched-{offset}.pool")
        with open(copy, "r+b") as f:
            f.seek(offset)
            f.write(data)
        return copy

    def test_corrupt_chunk_header_of_a_run(self):
        # pmemobj_check() reads only the headers of chunks that start a
        # block; libpmemobj follows these when it frees or allocates in
        # the run (a wild index, or a division by zero, in a commit).
        # (libpmemobj's own check crashes on a corrupt last header: that
        # one is refused too, but without saying why.)
        path, headers, block_size = self.long_run()
        middle = headers[len(headers) // 2]
        for offset, data in [
                (middle, bytes(8)),
                (middle + 4, struct.pack("<I", 40104)),
                (headers[1], struct.pack("<HHI", 3, 0, 1))]:
            with self.subTest(offset=offset, data=data):
                self.assertRefused(self.patched(path, offset, data),
                                   r"heap metadata is inconsistent \(chunk "
                                   r"\d+ of zone 0 is chunk \d+ of a run")
        self.assertRefused(self.patched(path, block_size, bytes(8)),
                           "corrupt")
        # The pool itself is fine.
        pmem.open(path, create=False).close()

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
        self.addCleanup(holder.stdout.close)
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

    def test_shared_mutable_in_star_args_is_refused(self):
        # The tuple of f(*args) is held by a variable: its items are not
        # the call's alone, and are never silently copied.
        self.pool.ns.items = []
        items = self.pool.ns.items
        args = ([6],)
        with self.assertRaisesRegex(TypeError, "referenced from elsewhere"):
            items.append(*args)
        self.assertEqual(items, [])
        def fresh():
            return ([7],)
        items.append(*fresh())               # a tuple of the call's own
        self.assertEqual(items, [[7]])
        self.assertIs(pmem.storage_of(items[0]), self.pool)

    def test_explicit_styles(self):
        d = pmem.PersistentDict(self.pool, a=1)
        l = pmem.PersistentList(self.pool, [1, 2])
        s = pmem.PersistentSet(self.pool, "ab")
        b = pmem.PersistentByteArray(self.pool, b"xy")
        for obj in (d, l, s, b):
            self.assertIs(pmem.storage_of(obj), self.pool)
        self.assertEqual((d, l, s, b), ({"a": 1}, [1, 2], {"a", "b"},
                                        bytearray(b"xy")))
        # Unshared mutables inside the arguments are moved in...
        nested = [pmem.PersistentDict(self.pool, {"a": []}),
                  pmem.PersistentList(self.pool, [[1], {"k": [2]}]),
                  pmem.PersistentDict(self.pool, a=[1]),
                  self.pool.new(dict, {"a": {"b": []}})]
        self.assertEqual(nested, [{"a": []}, [[1], {"k": [2]}], {"a": [1]},
                                  {"a": {"b": []}}])
        self.assertIs(pmem.storage_of(nested[1][1]["k"]), self.pool)
        # ...shared ones are refused.
        shared = []
        with self.assertRaisesRegex(TypeError, "referenced from elsewhere"):
            pmem.PersistentList(self.pool, [shared])

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

    def test_interrupt_and_exit_roll_back(self):
        pool = self.pool
        pool.ns.log = ["start"]
        for exc in (KeyboardInterrupt, SystemExit, GeneratorExit):
            with self.subTest(exc.__name__):
                with self.assertRaises(exc):
                    with pool:
                        pool.ns.log.append("inside")
                        pool.ns.extra = {"k": [1]}
                        raise exc
                self.assertEqual(pool.ns.log, ["start"])
                self.assertFalse(hasattr(pool.ns, "extra"))
                self.assertEqual(pool.depth, 0)

    def test_generator_suspended_in_a_block(self):
        # The block spans the suspension: what the thread does meanwhile
        # joins its transaction, which ends when the generator leaves the
        # block -- committed when it runs to the end, undone when it is
        # closed (GeneratorExit) or raises.
        pool = self.pool
        pool.ns.log = []
        def steps(tag):
            with pool:
                pool.ns.log.append(tag + "1")
                yield
                pool.ns.log.append(tag + "2")
        g = steps("a")
        next(g)
        self.assertEqual(pool.depth, 1)
        pool.ns.log.append("meanwhile")        # joins the block
        self.assertRaises(StopIteration, next, g)
        self.assertEqual(pool.ns.log, ["a1", "meanwhile", "a2"])
        self.assertEqual(pool.depth, 0)
        g = steps("b")
        next(g)
        pool.ns.log.append("meanwhile")
        g.close()                               # undone, with what joined
        self.assertEqual(pool.ns.log, ["a1", "meanwhile", "a2"])
        self.assertEqual(pool.depth, 0)

    def test_abort_brings_back_what_the_transaction_freed(self):
        pool = self.pool
        pool.ns.x = [1.5, "a"]
        pool.ns.d = {"k": [2.5]}
        refs = (sys.getrefcount(pool.ns.x), sys.getrefcount(pool.ns.d["k"]))
        with self.assertRaises(KeyError):
            with pool:
                del pool.ns.x              # the list, its key, its items
                pool.ns.d["k"] = None      # the inner list and its float
                pool.ns.y = ["new"]
                kept = pool.ns.y           # made by the transaction
                raise KeyError
        self.assertEqual((pool.ns.x, pool.ns.d), ([1.5, "a"], {"k": [2.5]}))
        self.assertFalse(hasattr(pool.ns, "y"))
        # What the transaction made is not freed under a variable that
        # refers to it: it is back as it was made, empty.
        self.assertEqual(kept, [])
        self.assertEqual(sys.getrefcount(kept), 2)
        kept.append("more")
        self.assertEqual(kept, ["more"])
        del kept
        self.assertEqual((sys.getrefcount(pool.ns.x),
                          sys.getrefcount(pool.ns.d["k"])), refs)
        # The counts are right: deleting now frees for good.
        x = pool.ns.x
        del pool.ns.x
        self.assertEqual(sys.getrefcount(x), 2)
        del x
        # What the transaction made and nothing keeps was freed by the
        # abort: nothing is left for the collector.
        self.assertEqual(pool.gc(), 0)
        self.assertEqual(pool.stats()["objects"], 6)

    def test_abort_frees_what_the_transaction_made(self):
        pool = self.pool
        pool.ns.d = {"k": 1}
        stats = pool.stats()
        refs = sys.getrefcount(vars(pool.ns))
        for i in range(3):
            with self.assertRaises(KeyError):
                with pool:
                    pool.ns.d["new"] = [{"x": (1.5, "s" * 40)}, 2.5]
                    pool.ns.d.update((f"key{i}", i * 1.5)
                                     for i in range(100))     # resizes
                    pool.ns.other = {"a": [3.5]}
                    raise KeyError
        self.assertEqual(pool.ns.d, {"k": 1})
        # Its objects and tables (the new dicts' keys...) are freed.
        self.assertEqual(pool.stats(), stats)
        self.assertEqual(sys.getrefcount(vars(pool.ns)), refs)
        self.assertEqual(pool.gc(), 0)

    def test_nested_block_is_a_savepoint(self):
        pool = self.pool
        pool.ns.accounts = {"alice": 10.0, "bob": 0.0}
        pool.ns.log = ["start"]
        pool.ns.gone = [7.5]
        gone = pool.ns.gone
        before = pool.stats()["objects"]
        refs = sys.getrefcount(gone)
        with pool:
            pool.ns.accounts["alice"] -= 4
            with self.assertRaises(ZeroDivisionError):
                with pool:
                    pool.ns.accounts["bob"] += 4
                    pool.ns.accounts.update((f"c{i}", float(i))
                                            for i in range(50))   # resizes
                    pool.ns.log.extend(["inner"] * 100)            # grows
                    pool.ns.made = {"new": [1.5]}
                    kept = pool.ns.made
                    del pool.ns.gone
                    1 / 0
            # Only the inner block's changes are undone...
            self.assertEqual(pool.ns.accounts, {"alice": 6.0, "bob": 0.0})
            self.assertEqual(pool.ns.log, ["start"])
            self.assertIs(pool.ns.gone, gone)
            self.assertFalse(hasattr(pool.ns, "made"))
            # ...what they made and a variable keeps is back as made...
            self.assertEqual(kept, {})
            self.assertEqual(sys.getrefcount(kept), 2)
            del kept
            # ...and the block goes on, and commits.
            pool.ns.log.append("outer")
        self.assertEqual(pool.ns.accounts, {"alice": 6.0, "bob": 0.0})
        self.assertEqual(pool.ns.log, ["start", "outer"])
        self.assertEqual(sys.getrefcount(gone), refs)
        # The log's new item ("outer"), nothing else: what the inner block
        # made was freed when it was undone.
        self.assertEqual(pool.stats()["objects"], before + 1)
        self.assertEqual(pool.gc(), 0)
        self.assertEqual(pool.depth, 0)

    def test_savepoints_nest(self):
        pool = self.pool
        pool.ns.trail = []
        with pool:
            pool.ns.trail.append(1)
            with self.assertRaises(KeyError):
                with pool:
                    pool.ns.trail.append(2)
                    with pool:               # committed into the middle
                        pool.ns.trail.append(3)
                    with self.assertRaises(ValueError):
                        with pool:           # undone alone
                            pool.ns.trail.append(4)
                            raise ValueError
                    self.assertEqual(pool.ns.trail, [1, 2, 3])
                    raise KeyError           # undoes 2 and 3
            self.assertEqual(pool.ns.trail, [1])
            pool.ns.trail.append(5)
        self.assertEqual(pool.ns.trail, [1, 5])
        # An exception that leaves the outermost block undoes it all,
        # committed nested blocks too.
        with self.assertRaises(KeyError):
            with pool:
                with pool:
                    pool.ns.trail.append(6)
                raise KeyError
        self.assertEqual(pool.ns.trail, [1, 5])

    def test_numbers_are_stored_over_in_place(self):
        # A number that only its slot refers to is overwritten in place
        # (what a C program on the pool does); one held elsewhere is not.
        pool = self.pool
        pool.ns.d = {"a": 1000, "f": 1.5}
        pool.ns.l = [1000, 2.5]
        d, l = pool.ns.d, pool.ns.l
        before = pool.stats()["objects"]
        ident = id(d["a"]), id(d["f"]), id(l[0]), id(l[1])
        d["a"] += 1
        d["f"] *= 2
        l[0] -= 1
        l[1] = 7.25
        self.assertEqual((d, l), ({"a": 1001, "f": 3.0}, [999, 7.25]))
        self.assertEqual((id(d["a"]), id(d["f"]), id(l[0]), id(l[1])), ident)
        self.assertEqual(pool.stats()["objects"], before)
        held = d["a"]
        d["a"] = 5000
        self.assertEqual(held, 1001)
        self.assertNotEqual(id(d["a"]), id(held))
        d["a"] = 10 ** 30                  # does not fit: a new int
        d["a"] = -5                        # a small int: the static one
        self.assertIs(d["a"], -5)
        d["a"] = 12345
        # Undone like any change: by an abort, and by a savepoint.
        with self.assertRaises(KeyError):
            with pool:
                d["a"] = 99999
                l[1] = -1.0
                raise KeyError
        self.assertEqual((d["a"], l[1]), (12345, 7.25))
        with pool:
            with self.assertRaises(KeyError):
                with pool:
                    d["a"] = 77777
                    raise KeyError
            d["f"] = 0.5
        self.assertEqual(d, {"a": 12345, "f": 0.5})

    def test_gc_keeps_the_counts_of_constants(self):
        pool = self.pool
        pool.ns.l = [None] * 100 + [True, 7, ()]
        gc.collect()            # what DRAM garbage held of them, let go
        counts = [sys.getrefcount(c) for c in (None, True, 7, ())]
        self.assertEqual(pool.gc(), 0)
        self.assertEqual([sys.getrefcount(c) for c in (None, True, 7, ())],
                         counts)

    def test_gc_frees_unreachable_cycles(self):
        pool = self.pool
        pool.ns.keep = [1.5]
        a, b = pool.new(list), pool.new(list)
        a.append(b)
        b.append(a)                        # a cycle nothing reaches
        del a, b
        held = pool.new(list)
        held.append(pool.new(list))
        held[0].append(held)               # a cycle that DRAM holds
        before = pool.stats()["objects"]
        self.assertEqual(pool.gc(), 2)
        self.assertEqual(pool.stats()["objects"], before - 2)
        self.assertEqual(pool.gc(), 0)
        self.assertIs(held[0][0], held)
        self.assertEqual(pool.ns.keep, [1.5])

    def test_gc_frees_what_only_dram_garbage_holds(self):
        pool = self.pool
        pool.ns.keep = [1.5]

        class Box:
            pass
        box = Box()
        box.box = box                      # DRAM garbage, once dropped
        box.held = pool.new(list)
        before = pool.stats()["objects"]
        del box
        self.assertEqual(pool.gc(), 1)
        self.assertEqual(pool.stats()["objects"], before - 1)
        self.assertEqual(pool.ns.keep, [1.5])

    def test_gc_frees_names_used_for_lookups(self):
        # The keys of an instance's __dict__, used as names in getattr():
        # the types' attribute cache kept them, so that they stayed
        # looked-for from DRAM after their keys were deleted, and only
        # the next open freed them.
        pool = self.pool
        pool.ns.thing = Plain()
        thing = pool.ns.thing
        rnd = random.Random(5)

        def walk():
            return [getattr(thing, key) for key in list(vars(thing))]
        for i in range(3000):
            key = f"a{rnd.randrange(300)}"
            if rnd.random() < 0.6:
                setattr(thing, key, i)
            elif hasattr(thing, key):
                delattr(thing, key)
            if i % 10 == 0:
                walk()
        del thing
        pool.gc()
        objects = pool.stats()["objects"]
        pool.close()
        out = run_in_new_process(self, f"""
            import pmem
            pool = pmem.open({self.path!r})
            print(pool.stats()["objects"])
            """, hash_seed=16)
        self.assertEqual(int(out), objects)

    def test_pool_full(self):
        # MemoryError, the transaction rolled back, the pool usable.
        path = os.path.join(self.dir, "small.pool")
        pool = pmem.open(path, size=_pmem.MIN_SIZE)
        pool.ns.items = []
        pool.ns.count = 0
        items = pool.ns.items
        with self.assertRaises(MemoryError):
            while True:
                with pool:
                    items.append("x" * 200)
                    pool.ns.count = len(items)
        self.assertGreater(len(items), 0)
        self.assertEqual(pool.ns.count, len(items))
        with self.assertRaises(MemoryError):
            with pool:
                del items[0]
                items.extend("y" * 1000 for _ in range(1000))
        self.assertEqual(pool.ns.count, len(items))
        self.assertEqual(items[0], "x" * 200)
        # Small changes fit the log that a full pool keeps for itself.
        for _ in range(20):
            items.pop()
        items.append("after")
        self.assertEqual(items[-1], "after")

    def test_one_writer_at_a_time(self):
        # A thread's transaction waits for another thread's to end.
        pool = self.pool
        pool.ns.c = {"n": 0, "log": []}
        c = pool.ns.c
        def work(tag):
            for i in range(100):
                with pool:
                    n = c["n"]
                    time.sleep(0)          # the other thread runs here
                    c["log"].append((tag, n))
                    c["n"] = n + 1
                c["log"].append(tag)       # an implicit transaction
        threads = [threading.Thread(target=work, args=(tag,))
                   for tag in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(c["n"], 200)
        self.assertEqual(sorted(e[1] for e in c["log"] if type(e) is tuple),
                         list(range(200)))
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

    def test_instances_outlive_a_closed_pool_quietly(self):
        # Deallocating an instance logs what it clears, in an operation
        # of its pool; a closed pool has none going on, and says nothing.
        pool = self.pool
        pool.ns.keep = [1]
        obj = pool.new(Plain)
        obj.x = [1.5]
        pool.close()
        with support.catch_unraisable_exception() as cm:
            del obj
            gc.collect()
            self.assertIsNone(cm.unraisable)



BANK = """
import sys, pmem
src, dst, delta = sys.argv[1].lower(), sys.argv[2].lower(), float(sys.argv[3])
pop = pmem.open(sys.argv[4])
if not hasattr(pop.ns, "accounts"):
    pop.ns.accounts = {ACCOUNTS}
for acct in (src, dst):
    if acct not in pop.ns.accounts:
        pop.ns.accounts[acct] = 0.0
with pop:
    pop.ns.accounts[src] -= delta
    pop.ns.accounts[dst] += delta
print(f"{src:<10s} {pop.ns.accounts[src]:10.2f} "
      f"{dst:<10s} {pop.ns.accounts[dst]:10.2f}")
"""


class RoundTripTests(PoolTestCase):
    """What one process stores, the next one finds: other hash seeds,
    another binary layout (ASLR moves the interpreter every run)."""

    def run_in_new_process(self, code, seed, path=None, hint=None):
        return run_in_new_process(self, code, hash_seed=seed, path=path,
                                  hint=hint)

    def test_bank_program(self):
        for accounts in ("dict()", "pmem.PersistentDict(pop)"):
            with self.subTest(accounts):
                path = os.path.join(self.dir, f"bank{len(accounts)}.pool")
                script = os.path.join(self.dir, "bank.py")
                with open(script, "w") as f:
                    f.write(BANK.replace("{ACCOUNTS}", accounts))
                runs = [("alice", "bob", "10"), ("bob", "carol", "2.5"),
                        ("alice", "carol", "1")]
                outputs = []
                for seed, args in enumerate(runs):
                    env = dict(os.environ, PYTHONHASHSEED=str(seed),
                               **FAST_FLUSH)
                    proc = subprocess.run(
                        [sys.executable, script, *args, path], env=env,
                        capture_output=True, text=True)
                    self.assertEqual(proc.returncode, 0, proc.stderr)
                    outputs.append(proc.stdout.split())
                self.assertEqual(outputs, [
                    ["alice", "-10.00", "bob", "10.00"],
                    ["bob", "7.50", "carol", "2.50"],
                    ["alice", "-11.00", "carol", "3.50"]])

    def test_every_type_round_trips(self):
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size=256 << 20)
            ns = pool.ns
            ns.none, ns.true, ns.false = None, True, False
            ns.ints = [0, 1, -5, 256, 257, 2**100, -2**70]
            ns.floats = [1.5, float("inf"), -0.0]
            ns.complex = 1 + 2j
            ns.strs = ["", "a", "hello", "h\u00e9llo", "\u65e5\u672c",
                       "\U0001f600x"]
            ns.bytes = [b"", b"x", b"bytes"]
            ns.bytearray = bytearray(b"mutable")
            ns.tuple = (1, "a", (2, 3), None)
            ns.dict = {{"k": 1, (1, 2): "tuple", 5: "int", 2**80: "big"}}
            ns.set = {{1, "a", (1, 2)}}
            ns.frozenset = frozenset({{"x", "y"}})
            ns.shared = []
            ns.holder = {{"a": None}}
            ns.holder["a"] = ns.shared
            ns.strkeys = {{}}
            ns.otherkeys = {{}}
            with pool:
                for i in range(100000):
                    ns.strkeys[f"key{{i}}"] = i
                for i in range(20000):
                    ns.otherkeys[(i, str(i))] = i
                    ns.otherkeys[i * 7919] = -i
            """, seed=1)
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            ns = pool.ns
            assert ns.none is None and ns.true is True and ns.false is False
            assert ns.ints == [0, 1, -5, 256, 257, 2**100, -2**70], ns.ints
            assert ns.ints[1] is 1 and ns.ints[3] is 256
            assert ns.floats == [1.5, float("inf"), -0.0]
            assert ns.complex == 1 + 2j
            assert ns.strs == ["", "a", "hello", "h\u00e9llo", "\u65e5\u672c",
                               "\U0001f600x"]
            assert ns.bytes == [b"", b"x", b"bytes"]
            assert ns.bytearray == b"mutable"
            assert ns.tuple == (1, "a", (2, 3), None)
            assert ns.dict == {{"k": 1, (1, 2): "tuple", 5: "int",
                               2**80: "big"}}
            assert ns.set == {{1, "a", (1, 2)}} and (1, 2) in ns.set
            assert ns.frozenset == frozenset({{"x", "y"}})
            assert hash(ns.frozenset) == hash(frozenset({{"x", "y"}}))
            assert ns.holder["a"] is ns.shared
            for name in ("ints", "floats", "complex", "strs", "bytes",
                         "bytearray", "tuple", "dict", "set", "frozenset"):
                value = getattr(ns, name)
                assert pmem.storage_of(value) is pool, name
                print(name, type(value).__name__)
            assert all(ns.strkeys[f"key{{i}}"] == i for i in range(100000))
            assert all(ns.otherkeys[(i, str(i))] == i
                       and ns.otherkeys[i * 7919] == -i
                       for i in range(20000))
            ns.shared.append("appended")
            """, seed=2)
        self.assertEqual(out.split(), [
            "ints", "list", "floats", "list", "complex", "complex",
            "strs", "list", "bytes", "list", "bytearray", "bytearray",
            "tuple", "tuple", "dict", "dict", "set", "set",
            "frozenset", "frozenset"])
        self.assertEqual(self.run_in_new_process(f"""
            import pmem
            ns = pmem.open({self.path!r}).ns
            print(ns.holder["a"] is ns.shared, ns.shared)
            """, seed=3), "True ['appended']\n")

    def test_no_stale_cache_in_the_next_process(self):
        # Hashes and UTF-8 buffers that a process made of pool strings
        # are its own: the next process must not find them.
        self.run_in_new_process(f"""
            import pmem, _testcapi
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.strs = ["h\u00e9llo w\u00f6rld", "\u65e5\u672c\u8a9e",
                            "plain"]
            pool.ns.bytes = b"some bytes"
            pool.ns.frozen = frozenset({{"a", "b"}})
            for s in pool.ns.strs:
                hash(s)
                _testcapi.unicode_asutf8(s)
            hash(pool.ns.bytes)
            hash(pool.ns.frozen)
            """, seed=4)
        out = self.run_in_new_process(f"""
            import pmem, _testcapi
            ns = pmem.open({self.path!r}).ns
            for s in ns.strs:
                assert hash(s) == hash(s.encode().decode()), s
                assert _testcapi.unicode_asutf8(s) == s.encode(), s
            assert hash(ns.bytes) == hash(b"some bytes")
            assert hash(ns.frozen) == hash(frozenset({{"a", "b"}}))
            print("ok")
            """, seed=5)
        self.assertEqual(out, "ok\n")

    def test_unreachable_objects_are_freed(self):
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.keep = [1.5, "kept"]
            pool.ns.drop = [[i + 0.5] for i in range(1000)]
            del pool.ns.drop
            """, seed=6)
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            print(pool.stats()["objects"])
            """, seed=7)
        # the namespace, its key "keep", the kept list, its float and str
        self.assertEqual(out, "5\n")

    def test_open_modify_close_cycles_do_not_grow_the_pool(self):
        code = f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            if not hasattr(pool.ns, "log"):
                pool.ns.log = []
                pool.ns.counts = {{}}
            with pool:
                pool.ns.log.append(("entry", 1.5))
                del pool.ns.log[0]
                pool.ns.counts["n"] = pool.ns.counts.get("n", 0) + 1
            pool.close()
            print(pool.stats()["bytes_used"] if not pool.closed else "")
            """
        for i in range(3):
            self.run_in_new_process(code, seed=i)
        used = []
        for i in range(20):
            self.run_in_new_process(code, seed=i)
            used.append(self.run_in_new_process(f"""
                import pmem
                print(pmem.open({self.path!r}).stats()["bytes_used"])
                """, seed=i))
        self.assertEqual(len(set(used)), 1, used)

    CLASSES = textwrap.dedent("""
        class Account:
            def __init__(self, owner, balance):
                self.owner = owner
                self.balance = balance

        class Point:
            __slots__ = ("x", "y", "__weakref__")
            def __init__(self, x, y):
                self.x, self.y = x, y
        """)

    def test_instances_of_classes_round_trip(self):
        with open(os.path.join(self.dir, "accounts.py"), "w") as f:
            f.write(self.CLASSES)
        self.run_in_new_process(f"""
            import pmem, weakref
            from accounts import Account, Point
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.alice = Account("alice", 10.0)
            pool.ns.points = [Point(1, 2), Point(3, [4])]
            pool.ns.first = pool.ns.points[0]
            ref = weakref.ref(pool.ns.first)
            def local():
                class Local:
                    pass
                return Local()
            try:
                pool.ns.local = local()
            except TypeError as exc:
                assert "defined inside a function" in str(exc), exc
            else:
                raise AssertionError("a local class was stored")
            """, seed=11, path=self.dir)
        out = self.run_in_new_process(f"""
            import pmem, weakref
            from accounts import Account, Point
            ns = pmem.open({self.path!r}).ns
            assert type(ns.alice) is Account
            assert vars(ns.alice) == {{"owner": "alice", "balance": 10.0}}
            assert [type(p) for p in ns.points] == [Point, Point]
            assert (ns.points[1].x, ns.points[1].y) == (3, [4])
            assert ns.first is ns.points[0]
            assert weakref.ref(ns.first)() is ns.first
            ns.alice.balance += 5
            ns.points[1].y.append(5)
            print(ns.alice.balance, ns.points[1].y)
            """, seed=12, path=self.dir)
        self.assertEqual(out, "15.0 [4, 5]\n")
        # Without the module: placeholders (test_placeholders has more).
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            print(sorted(pool.unresolved()), pool.ns.alice.balance,
                  isinstance(pool.ns.first, pmem.Placeholder))
            """, seed=13)
        self.assertEqual(out, "['accounts:Account', 'accounts:Point'] 15.0 "
                              "True\n")

    def test_classes_registered_by_undone_transactions(self):
        # A class's first instance makes its entry in the pool's type
        # table.  When the transaction is undone (or the nested block),
        # the entry comes back: instances made since keep their class.
        with open(os.path.join(self.dir, "accounts.py"), "w") as f:
            f.write(self.CLASSES)
        self.run_in_new_process(f"""
            import pmem
            from accounts import Account, Point
            pool = pmem.open({self.path!r}, size={SIZE})
            try:
                with pool:
                    kept = pool.new(Account, "kept", 1.5)
                    pool.ns.a = Account("undone", 0.0)
                    raise KeyError
            except KeyError:
                pass
            with pool:
                try:
                    with pool:
                        pool.ns.p = Point(0, 0)
                        raise KeyError
                except KeyError:
                    pass
                pool.ns.q = Point(1, 2)
            pool.ns.b = Account("bob", 2.5)
            pool.ns.kept = kept
            """, seed=14, path=self.dir)
        out = self.run_in_new_process(f"""
            import pmem
            from accounts import Account, Point
            ns = pmem.open({self.path!r}).ns
            print(sorted(vars(ns)), type(ns.q).__name__, ns.q.x, ns.q.y,
                  type(ns.b).__name__, ns.b.owner, type(ns.kept).__name__)
            """, seed=15, path=self.dir)
        self.assertEqual(out, "['b', 'kept', 'q'] Point 1 2 Account bob "
                              "Account\n")

    def test_small_sets_are_rehashed(self):
        # A set of one element sits in its small table, which upstream's
        # resize leaves as it is: the open must rebuild it all the same.
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.sets = [{{"x20"}}, frozenset({{"y7"}}), {{"a", "b"}}, set()]
            """, seed=23)
        for seed in (24, 25, 26):
            out = self.run_in_new_process(f"""
                import pmem
                one, frozen, two, empty = pmem.open({self.path!r}).ns.sets
                print("x20" in one, "y7" in frozen, "b" in two, len(empty))
                """, seed=seed)
            self.assertEqual(out, "True True True 0\n")

    def test_eight_threads_of_transfers(self):
        # Four threads move money between shared accounts in `with pool:`
        # blocks (a block is the only writer while it runs); four move it
        # between accounts of their own with implicit transactions, and
        # log each transfer with list.append().  Switching threads every
        # few microseconds, nothing deadlocks, no money appears or goes,
        # and the next process finds all of it.
        self.run_in_new_process(f"""
            import pmem, random, sys, threading
            sys.setswitchinterval(1e-5)
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.accounts = {{i: 1000 for i in range(48)}}
            pool.ns.log = []
            accounts, log = pool.ns.accounts, pool.ns.log
            def explicit(seed):
                rng = random.Random(seed)
                for _ in range(200):
                    a, b = rng.sample(range(32), 2)
                    x = rng.randrange(1, 100)
                    with pool:
                        accounts[a] -= x
                        accounts[b] += x
                        log.append(("e", seed, x))
            def implicit(seed):
                rng = random.Random(seed)
                own = [32 + 4 * (seed - 4) + k for k in range(4)]
                for _ in range(200):
                    a, b = rng.sample(own, 2)
                    x = rng.randrange(1, 100)
                    accounts[a] -= x
                    accounts[b] += x
                    log.append(("i", seed, x))
            threads = [threading.Thread(target=explicit if n < 4
                                        else implicit, args=(n,))
                       for n in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
                assert not t.is_alive(), "deadlock"
            assert sum(accounts.values()) == 48000, sum(accounts.values())
            assert len(log) == 1600, len(log)
            assert pool.depth == 0
            """, seed=16)
        out = self.run_in_new_process(f"""
            import pmem
            ns = pmem.open({self.path!r}).ns
            print(sum(ns.accounts.values()), len(ns.log),
                  sorted(set(e[1] for e in ns.log)))
            """, seed=17)
        self.assertEqual(out, "48000 1600 [0, 1, 2, 3, 4, 5, 6, 7]\n")

    CHECK_MOVED = """
        import pmem
        pool = pmem.open({path!r})
        ns = pool.ns
        assert ns.data["k5"][1:] == [(5, "x"), {{5}}, frozenset({{5}})]
        assert all(ns.data[f"k{{i}}"][3] == frozenset({{i}})
                   for i in range(1000))
        assert ns.small == {{1, 2, 3}} and 2 in ns.small
        assert ns.bytes == b"world"
        assert ns.none is None and ns.flag is True
        ns.data["k5"][0] += 1
        print(hex(pool.base))
        """

    def test_pool_that_maps_elsewhere_moves(self):
        # PMEM_MMAP_HINT makes the next process map the pool at another
        # address: every pointer moves, statics are remapped, and it all
        # moves back.
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.data = {{f"k{{i}}": [i, (i, "x"), {{i}}, frozenset({{i}})]
                            for i in range(1000)}}
            pool.ns.small = {{1, 2, 3}}
            pool.ns.bytes = bytearray(b"hello world")
            del pool.ns.bytes[:6]
            pool.ns.none = None
            pool.ns.flag = True
            """, seed=14)
        bases = [self.run_in_new_process(
                     self.CHECK_MOVED.format(path=self.path), seed=15 + i,
                     hint=hint).strip()
                 for i, hint in enumerate(["0x680000000000",
                                           "0x500000000000", None])]
        self.assertEqual(len(set(bases)), 3, bases)
        out = self.run_in_new_process(f"""
            import pmem
            print(pmem.open({self.path!r}).ns.data["k5"][0])
            """, seed=18)
        self.assertEqual(out, "8\n")

    def test_two_pools_in_one_process(self):
        other = os.path.join(self.dir, "other.pool")
        for path, value in ((self.path, "first"), (other, "second")):
            self.run_in_new_process(f"""
                import pmem
                pmem.open({path!r}, size={SIZE}).ns.value = [{value!r}]
                """, seed=19)
        out = self.run_in_new_process(f"""
            import pmem
            a, b = pmem.open({self.path!r}), pmem.open({other!r})
            print(a.ns.value, b.ns.value, a.base != b.base)
            """, seed=20)
        self.assertEqual(out, "['first'] ['second'] True\n")

    def test_killed_in_transactions(self):
        # SIGKILL at whatever instant: the next process sees whole
        # transactions only, and nothing that a killed one allocated.
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size=512 << 20)
            pool.ns.d = {{}}
            pool.ns.n = 0
            """, seed=21)
        writer = textwrap.dedent(f"""
            import pmem, sys
            pool = pmem.open({self.path!r})
            d = pool.ns.d
            print("ready", flush=True)
            while True:
                with pool:
                    n = pool.ns.n
                    for j in range(200):
                        d[f"k{{n}}_{{j}}"] = [j, (n, j)]
                    pool.ns.n = n + 1
            """)
        check = f"""
            import pmem
            pool = pmem.open({self.path!r})
            n, d = pool.ns.n, pool.ns.d
            assert len(d) == 200 * n, (len(d), n)
            assert all(d[f"k{{i}}_{{j}}"] == [j, (i, j)]
                       for i in range(n) for j in range(200))
            # Three objects an entry (key, list, tuple); an int for each
            # transaction past the small ints, shared by its tuples; the
            # namespace, its two keys, the dict and n: nothing else.
            expected = (3 * len(d) + max(0, n - 257) + (n >= 257) + 4)
            print(n, pool.stats()["objects"] - expected)
            """
        env = dict(os.environ, **FAST_FLUSH)
        for i, delay in enumerate((0.2, 0.35, 0.5)):
            proc = subprocess.Popen([sys.executable, "-c", writer], env=env,
                                    stdout=subprocess.PIPE, text=True)
            self.assertEqual(proc.stdout.readline(), "ready\n")
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            n, leftovers = map(int, self.run_in_new_process(
                check, seed=22 + i).split())
            self.assertGreater(n, 0)
            self.assertEqual(leftovers, 0)

    def test_killed_while_opening(self):
        # The open pass writes into the pool (pointers moved for another
        # address, statics for another binary, tables rehashed); killed at
        # any instant, the next open repairs it.
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size=256 << 20)
            pool.ns.data = {{}}
            with pool:
                for i in range(50000):
                    pool.ns.data[f"k{{i}}"] = (i, [i + 0.5])
            pool.ns.small = {{"a", "b", None}}
            """, seed=30)
        env = dict(os.environ, **FAST_FLUSH)
        opener = f"import pmem; pmem.open({self.path!r}); print('open')"
        interrupted = 0
        for i, (hint, delay) in enumerate((("0x680000000000", 0.05),
                                           ("0x500000000000", 0.1),
                                           ("0x580000000000", 0.15),
                                           (None, 0.08))):
            child_env = dict(env, PYTHONHASHSEED=str(40 + i))
            if hint is not None:
                child_env["PMEM_MMAP_HINT"] = hint
            proc = subprocess.Popen([sys.executable, "-c", opener],
                                    env=child_env, stdout=subprocess.PIPE)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            interrupted += proc.communicate()[0] != b"open\n"
        self.assertGreater(interrupted, 0, "no open was interrupted")
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            data = pool.ns.data
            assert all(data[f"k{{i}}"] == (i, [i + 0.5]) for i in range(50000))
            assert pool.ns.small == {{"a", "b", None}} and None in pool.ns.small
            print(len(data), pool.gc())
            """, seed=50, hint="0x600000000000")
        self.assertEqual(out, "50000 0\n")

    def test_between_pools(self):
        # Cross-pool stores: immutables are copied, mutables refused.
        other = os.path.join(self.dir, "other.pool")
        out = self.run_in_new_process(f"""
            import pmem, socket
            a = pmem.open({self.path!r}, size={SIZE})
            b = pmem.open({other!r}, size={SIZE})
            a.ns.items = [("tuple", 1.5), "str"]
            b.ns.copy = a.ns.items[0]
            assert pmem.storage_of(b.ns.copy) is b and b.ns.copy == ("tuple", 1.5)
            try:
                b.ns.shared = a.ns.items
            except TypeError as exc:
                print("refused:", "list" in str(exc))
            try:
                a.ns.sock = socket.socket()
            except TypeError as exc:
                print(str(exc).startswith("cannot store a 'socket' object"))
            print(sorted(vars(b.ns)), sorted(vars(a.ns)))
            """, seed=31)
        self.assertEqual(out, "refused: True\nTrue\n['copy'] ['items']\n")

    def test_command_line(self):
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.accounts = {{"alice": 1.5}}
            """, seed=10)
        env = dict(os.environ, **FAST_FLUSH)
        def cli(*args):
            return subprocess.run([sys.executable, "-m", "pmem", *args],
                                  env=env, capture_output=True, text=True)
        info = cli("info", self.path)
        self.assertEqual(info.returncode, 0, info.stderr)
        self.assertIn("names:     accounts", info.stdout)
        self.assertRegex(info.stdout, r"dict +2 ")   # and the namespace
        self.assertEqual(cli("dump", self.path).stdout,
                         "{'accounts': {'alice': 1.5}}\n")
        self.assertIn(": ok, 5 objects", cli("check", self.path).stdout)
        foreign = os.path.join(self.dir, "foreign")
        with open(foreign, "w") as f:
            f.write("x" * 100)
        bad = cli("check", foreign)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("not ok", bad.stdout)
        self.assertIn("not a pmem-python pool", bad.stdout)
        self.assertNotIn(".pool", bad.stdout)      # names the pool, not
                                                   # the copy it read

    def test_killed_while_deallocating(self):
        # An object that nothing in the pool refers to any more is freed
        # part by part (its items, its table, itself).  Killed half-way,
        # it is garbage holding pointers to freed blocks: the next open
        # frees it, and opens.
        with open(os.path.join(self.dir, "items.py"), "w") as f:
            f.write(textwrap.dedent("""
                import os, signal

                class Item:
                    armed = False

                    def __init__(self, n):
                        self.n = n

                    def __del__(self):
                        if self.armed and self.n == 5:
                            os.kill(os.getpid(), signal.SIGKILL)
                """))
        env = dict(os.environ, PYTHONPATH=self.dir, **FAST_FLUSH)
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import pmem
            from items import Item
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.keep = [1.5]
            pool.ns.items = [Item(i) for i in range(10)]
            items = pool.ns.items
            del pool.ns.items
            Item.armed = True
            del items      # items 9..6 freed, then killed in 5's __del__
            """)], env=env, capture_output=True, text=True)
        self.assertEqual(proc.returncode, -signal.SIGKILL, proc.stderr)
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            print(vars(pool.ns), pool.stats()["objects"])
            """, seed=10, path=self.dir)
        # The namespace, its key, the list and its float; the type table
        # and its class name.
        self.assertEqual(out, "{'keep': [1.5]} 6\n")

    def open_with_word(self, offset, value, *, seed, path=None):
        """What opening the pool in a new process says (its PoolError)
        once the 8-byte word at offset of its file is value."""
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(value.to_bytes(8, "little"))
        return self.run_in_new_process(f"""
            import pmem
            try:
                pmem.open({self.path!r})
            except pmem.PoolError as exc:
                print(exc)
            """, seed=seed, path=path)

    def test_corrupt_pointer_is_refused(self):
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.items = [1.5, 2.5]
            items = pool.ns.items
            # the address of items[0]'s slot, as an offset in the file
            import ctypes
            table = ctypes.c_void_p.from_address(id(items) + 24).value
            print(table - pool.base)
            """, seed=8)
        out = self.open_with_word(int(out), 12345, seed=9)
        self.assertRegex(out, r"is corrupt: a list at \+\d+ holds a pointer "
                              r"to neither the pool nor a constant")

    def test_instance_with_inline_values_is_refused(self):
        # A pool's instances keep their attributes in their dict; a values
        # pointer (before the dict pointer) would be read as an array of
        # attributes.
        with open(os.path.join(self.dir, "accounts.py"), "w") as f:
            f.write(self.CLASSES)
        out = self.run_in_new_process(f"""
            import pmem
            from accounts import Account
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.alice = Account("alice", 10.0)
            alice = pool.ns.alice
            print(id(alice) - 32 - pool.base, id(vars(alice)))
            """, seed=17, path=self.dir)
        offset, value = map(int, out.split())
        out = self.open_with_word(offset, value, seed=18, path=self.dir)
        self.assertRegex(out, r"is corrupt: a Account at \+\d+ holds a "
                              r"header that its memory cannot hold")

    def test_counts_that_the_table_does_not_match_are_refused(self):
        # A word written where a count or a key lies: a count that its
        # table does not match made the open's rebuild of the table read
        # past it (found by fuzz.py); a str-keyed table takes every key
        # for a str.  Each case prints the word's offset in the file and
        # the value to write there.
        cases = [
            ("a dict's ma_used, with no entries left",
             "pool.ns.x = {'k': 1}; del pool.ns.x['k']",
             "print(id(pool.ns.x) + 16 - pool.base, 14011121)"),
            ("a set's used, below its entries",
             "pool.ns.x = set(range(20))",
             "print(id(pool.ns.x) + 24 - pool.base, 3)"),
            ("a float as a key of a str-keyed table",
             "pool.ns.x = {'k': 1.5}",
             "keys = ctypes.c_void_p.from_address(id(pool.ns.x) + 32).value; "
             "print(keys + 40 - pool.base, id(pool.ns.x['k']))"),
        ]
        for what, make, where in cases:
            with self.subTest(what):
                if os.path.exists(self.path):
                    os.unlink(self.path)
                out = self.run_in_new_process(f"""
                    import ctypes, pmem
                    pool = pmem.open({self.path!r}, size={SIZE})
                    {make}
                    {where}
                    """, seed=14)
                offset, value = map(int, out.split())
                out = self.open_with_word(offset, value, seed=15)
                self.assertRegex(out, r"is corrupt: a (dict|set) at \+\d+ "
                                      r"holds counts that its table does "
                                      r"not match")

if __name__ == "__main__":
    unittest.main()
