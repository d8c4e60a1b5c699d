"""pmem pools in one process: creating and opening, storing, transactions
and savepoints, the pool's collector, closing.

Where a test needs a second process it runs one, so that what is checked
is what a new process finds in the file.  test_roundtrip has the values
that go from one process to the next, test_badfiles the files that an
open refuses and test_kills the processes killed half-way.
"""

import gc
import inspect
import io
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
import threading
import time
import types
import unittest
import weakref
from test import support
from test.test_pmem import run_in_new_process
from test.test_pmem.util import SIZE, PoolTestCase, _pmem, pmem


class Plain:
    """A class of this module, for instances in pools."""


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


class OpenTests(PoolTestCase):
    """A pool is open for writing in one process at a time."""

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


class OpenPoolTestCase(PoolTestCase):
    """A new pool, open as self.pool."""

    def setUp(self):
        super().setUp()
        self.pool = pmem.open(self.path, size=SIZE)


class StoreTests(OpenPoolTestCase):
    """What a store into a pool takes in: builtins, moved or copied;
    a mutable referenced from elsewhere is refused."""

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
        # Held by an object's attribute, which no store finds (a variable
        # alone would be rewritten: test_ownership).
        shared = {}
        keeper = types.SimpleNamespace(value=shared)
        with self.assertRaisesRegex(TypeError, "referenced from elsewhere "
                                    r"\(by something else than this "
                                    r"thread's variables"):
            self.pool.ns.shared = shared
        self.assertFalse(hasattr(self.pool.ns, "shared"))
        self.assertIs(keeper.value, shared)

    def test_refusal_names_what_holds_the_value(self):
        self.pool.ns.d = {}
        d = self.pool.ns.d
        # A part of the value that a variable holds (a move rewrites the
        # frames' references to the value, not to its parts).
        x = [1]
        with self.assertRaisesRegex(TypeError, r"\(by the variable 'x' of "
                                    r".*, at least\)"):
            d["k"] = [x]
        # The value, in a list that a variable refers to (which a move
        # rewrites) and in another that no store finds.
        records = [[1], [2]]
        copied = records.copy()
        keeper = types.SimpleNamespace(records=copied)
        del copied
        with self.assertRaisesRegex(TypeError, r"\(by something else than "
                                    r"this thread's variables and the "
                                    r"lists and dicts that they refer to"):
            d["r"] = records[0]
        self.assertEqual(d, {})
        self.assertIs(keeper.records[0], records[0])

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
        # Without the pool: the message names the function.
        with self.assertRaisesRegex(TypeError, r"^PersistentDict\(pool, "):
            pmem.PersistentDict({})

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


class BufferTests(OpenPoolTestCase):
    """A pool bytearray exports read-only buffers: a write through a
    buffer would be part of no transaction."""

    def test_pool_bytearray_buffers_are_read_only(self):
        pool = self.pool
        pool.ns.b = bytearray(b"data")
        b = pool.ns.b
        with memoryview(b) as m:
            self.assertTrue(m.readonly)
            self.assertEqual(m.tobytes(), b"data")
            with self.assertRaisesRegex(TypeError, "read-only"):
                m[0] = ord("D")
        with self.assertRaisesRegex(
                BufferError, "cannot export a writable buffer of a "
                "'bytearray' object in pool .*: writes through a buffer "
                "would be part of no atomic operation; change it with its "
                r"methods, item or slice assignment \(b\[i:j\] = data\)"):
            b.__buffer__(inspect.BufferFlags.WRITABLE)
        with self.assertRaisesRegex(TypeError, "read-write bytes-like"):
            struct.pack_into("B", b, 0, ord("D"))
        with self.assertRaisesRegex(TypeError, "read-write bytes-like"):
            io.BytesIO(b"DA").readinto(b)
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        os.write(w, b"DA")
        with self.assertRaises(BufferError):
            os.readv(r, [b])
        # DRAM bytearrays are writable as ever while the pool is open.
        d = bytearray(b"data")
        memoryview(d)[0] = ord("D")
        self.assertEqual(d, b"Data")
        # Reads through buffers work, and so do the hooked writers.
        self.assertEqual((bytes(b), b.decode(), b.find(b"t")),
                         (b"data", "data", 2))
        b[0:2] = os.read(r, 2)
        self.assertEqual(b, b"DAta")
        pool.close()
        self.assertEqual(run_in_new_process(self, f"""
            import pmem
            print(pmem.open({self.path!r}).ns.b)
            """), "bytearray(b'DAta')\n")


class TransactionTests(OpenPoolTestCase):
    """A `with pool:` block commits, or undoes all it did."""

    def test_begin_and_end(self):
        pool = self.pool
        pool.begin()
        pool.ns.x = [1]
        pool.end(False)
        self.assertFalse(hasattr(pool.ns, "x"))
        pool.begin()
        pool.ns.x = [2]
        pool.end(True)
        self.assertEqual(pool.ns.x, [2])
        # An end without a begin is the program's error.
        with self.assertRaisesRegex(RuntimeError, r"end\(\) without a "
                                                  r"block that this thread "
                                                  r"began"):
            pool.end(True)
        pool.ns.y = 3                   # the pool works on
        self.assertEqual(pool.ns.y, 3)

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
        # The namespace, d, its list and float: the keys are strs of one
        # character, which are static (never in a pool).
        self.assertEqual(pool.stats()["objects"], 4)

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
        # Its objects and tables (the new dicts' keys...) are freed.  (Not
        # all of libpmemobj's runs that held them are whole chunks again
        # yet: the free space for blocks of any size may be less.)
        after = pool.stats()
        for name in "bytes_free", "largest_free":
            del stats[name], after[name]
        self.assertEqual(after, stats)
        self.assertEqual(sys.getrefcount(vars(pool.ns)), refs)
        self.assertEqual(pool.gc(), 0)

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


class SavepointTests(OpenPoolTestCase):
    """A nested block is a savepoint: undone alone."""

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


class GcTests(OpenPoolTestCase):
    """pool.gc() frees what nothing reaches, and only that."""

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


class CloseTests(OpenPoolTestCase):

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

    def test_closed_pool_opens_again(self):
        # Nothing holds its objects: close() lets the pool go, and the path
        # opens again in this process, as a new Pool.
        pool = self.pool
        pool.ns.items = [1, {"k": (2.5, "v")}]
        pool.close()
        self.assertNotIn(pool, _pmem._pools())
        with self.assertRaisesRegex(pmem.PoolError, "is closed"):
            pool.namespace()
        again = pmem.open(self.path)
        self.assertIsNot(again, pool)
        self.assertEqual(again.ns.items, [1, {"k": (2.5, "v")}])
        again.ns.items.append(3)
        self.assertEqual(again.ns.items[-1], 3)

    def test_closed_pool_opens_again_once_let_go(self):
        pool = self.pool
        pool.ns.items = [1]
        pool.ns.keys = {"k"}
        for hold in (lambda: pool.ns.items, lambda: weakref.ref(pool.ns.keys)):
            held = hold()
            pool.close()
            with self.assertRaisesRegex(pmem.PoolError,
                                        "still holds some of its objects"):
                pmem.open(self.path)
            del held
            pool = pmem.open(self.path)
        self.assertEqual(pool.ns.items, [1])

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


if __name__ == "__main__":
    unittest.main()
