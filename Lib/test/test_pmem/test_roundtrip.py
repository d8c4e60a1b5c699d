"""pmem pools: what one process stores, the next one finds.

Each test stores in a new process and reads in another one, under other
hash seeds and another binary layout (ASLR moves the interpreter every
run); some make the next process map the pool at another address.
"""

import os
import signal
import subprocess
import sys
import textwrap
import unittest
from test.test_pmem.util import FAST_FLUSH, SIZE, PoolTestCase


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


class BankProgramTests(PoolTestCase):
    """The demo's bank program, run three times."""

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


class ValueRoundTripTests(PoolTestCase):
    """Values of every builtin type, and the hashes of pool keys."""

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
                _testcapi.unicode_asutf8(s, len(s.encode()))
            hash(pool.ns.bytes)
            hash(pool.ns.frozen)
            """, seed=4)
        out = self.run_in_new_process(f"""
            import pmem, _testcapi
            ns = pmem.open({self.path!r}).ns
            for s in ns.strs:
                assert hash(s) == hash(s.encode().decode()), s
                n = len(s.encode())
                assert _testcapi.unicode_asutf8(s, n) == s.encode(), s
            assert hash(ns.bytes) == hash(b"some bytes")
            assert hash(ns.frozen) == hash(frozenset({{"a", "b"}}))
            print("ok")
            """, seed=5)
        self.assertEqual(out, "ok\n")

    def test_small_sets_are_rehashed(self):
        # A set of one element sits in its small table, which upstream's
        # resize leaves as it is: the open must rebuild it all the same.
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.sets = [{{"x20"}}, frozenset({{"y7"}}), {{"a", "b"}},
                            set()]
            """, seed=23)
        for seed in (24, 25, 26):
            out = self.run_in_new_process(f"""
                import pmem
                one, frozen, two, empty = pmem.open({self.path!r}).ns.sets
                print("x20" in one, "y7" in frozen, "b" in two, len(empty))
                """, seed=seed)
            self.assertEqual(out, "True True True 0\n")


class InstanceRoundTripTests(PoolTestCase):
    """Instances of classes, found again by module and name."""

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

    def test_weak_references_of_a_killed_process_are_forgotten(self):
        # A class statement's instances keep their list of weak
        # references in the pre-header: a process killed while it had
        # some leaves the list's pointer there, which the next process
        # must not follow when the instance dies.
        with open(os.path.join(self.dir, "accounts.py"), "w") as f:
            f.write(self.CLASSES)
        code = f"""
            import os, pmem, signal, weakref
            from accounts import Account, Point
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.alice = Account("alice", 10.0)
            pool.ns.point = Point(1, 2)
            refs = [weakref.ref(pool.ns.alice), weakref.ref(pool.ns.point)]
            os.kill(os.getpid(), signal.SIGKILL)
            """
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=dict(os.environ, PMEM_IS_PMEM_FORCE="1",
                     PYTHONPATH=self.dir))
        self.assertEqual(proc.returncode, -signal.SIGKILL)
        out = self.run_in_new_process(f"""
            import gc, pmem, weakref
            from accounts import Account, Point
            pool = pmem.open({self.path!r})
            ref = weakref.ref(pool.ns.alice)
            del pool.ns.alice, pool.ns.point
            gc.collect()
            print(ref())
            """, seed=15, path=self.dir)
        self.assertEqual(out, "None\n")

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


class ReopenTests(PoolTestCase):
    """An open frees what nothing reaches: the pool does not grow
    from one process to the next."""

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


class ThreadedTransferTests(PoolTestCase):

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


class RelocationTests(PoolTestCase):
    """A pool mapped at another address in the next process."""

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


class PlacedListRoundTripTests(PoolTestCase):
    """Lists that pool.new()'s constructor makes by copying pointers
    (BUILD_LIST, slices, copy, +, *) are volatile, as everything it makes
    but its object: stored into the object, they are moved in, and their
    items copied in (a repeated one once), or refused as any store
    would be."""

    LISTS = textwrap.dedent("""
        class Lists:
            def __init__(self, s, y):
                self.build = [s, 2.5, (s, 1.5)]
                self.repeat = [s, 0.5] * 3
                self.many = [1.25] * 1000
                self.slice = y[1:]
                self.step = y[::2]
                self.copy = y.copy()
                self.concat = y + [s]

        class Holder:
            def __init__(self, y, how):
                if how == "slice":
                    self.l = y[:]
                elif how == "copy":
                    self.l = y.copy()
                elif how == "concat":
                    self.l = y + y
                elif how == "repeat":
                    self.l = y * 2
                elif how == "step":
                    self.l = y[::2]
                elif how == "build":
                    self.l = [y[0]]
                elif how == "list":
                    self.l = list(y)
        """)

    def test_new_lists_hold_what_the_rule_stores(self):
        with open(os.path.join(self.dir, "lists.py"), "w") as f:
            f.write(self.LISTS)
        out = self.run_in_new_process(f"""
            import pmem
            from lists import Lists, Holder
            pool = pmem.open({self.path!r}, size={SIZE})
            s = "dram " + str(len(__name__))
            y = ["y" + str(i) for i in range(5)]
            before = pool.stats()["objects"]
            pool.ns.lists = pool.new(Lists, s, y)
            lists = pool.ns.lists
            for name, l in vars(lists).items():
                assert pmem.storage_of(l) is pool, name
                for item in l:
                    assert pmem.storage_of(item) is pool, (name, item)
            # A repeated item is copied once.
            assert lists.repeat[0] is lists.repeat[4]
            assert lists.many[0] is lists.many[-1]
            assert pool.stats()["objects"] - before < 50
            # The items of a DRAM list are shared with it: a mutable one
            # is refused, list(y)'s too (a new volatile list, stored as
            # in any code).
            for how in ("slice", "copy", "concat", "repeat", "step",
                        "build", "list"):
                z = [[1], {{"k": 2}}]
                try:
                    pool.ns.refused = pool.new(Holder, z, how)
                except TypeError as exc:
                    assert "referenced from elsewhere" in str(exc), exc
                    print("refused", how)
            # One that is in the pool already is not.
            pool.ns.z = [[1]]
            pool.ns.holder = pool.new(Holder, pool.ns.z, "concat")
            """, seed=40, path=self.dir)
        self.assertEqual(out.split("\n")[:-1], [
            f"refused {how}" for how in ("slice", "copy", "concat",
                                         "repeat", "step", "build",
                                         "list")])
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            lists = pool.ns.lists
            for name, l in sorted(vars(lists).items()):
                print(name, l[:3], len(l))
            print(hasattr(pool.ns, "refused"))
            h = pool.ns.holder
            print(h.l, h.l[0] is pool.ns.z[0] is h.l[1])
            """, seed=41, path=self.dir)
        self.assertEqual(out, textwrap.dedent("""\
            build ['dram 8', 2.5, ('dram 8', 1.5)] 3
            concat ['y0', 'y1', 'y2'] 6
            copy ['y0', 'y1', 'y2'] 5
            many [1.25, 1.25, 1.25] 1000
            repeat ['dram 8', 0.5, 'dram 8'] 6
            slice ['y1', 'y2', 'y3'] 4
            step ['y0', 'y2', 'y4'] 3
            False
            [[1], [1]] True
            """))


class NewRoundTripTests(PoolTestCase):
    """pool.new() places its object only: what the constructor makes
    otherwise (a list that C code fills without a store, str.split()'s)
    is volatile and reaches the pool by stores; a value (a named tuple, a
    str subclass) is made in DRAM and copied in; what a pool cannot hold
    (array.array) is refused.  The pool opens again in a new process."""

    def test_only_the_object_is_placed(self):
        with open(os.path.join(self.dir, "made.py"), "w") as f:
            f.write(textwrap.dedent("""
                import collections
                class Box:
                    def __init__(self, text):
                        self.words = text.split()
                        self.lines = (text + "\\nend").splitlines()
                        self.keys = sorted({w: 1 for w in self.words})
                P = collections.namedtuple("P", "x y")
                class Name(str):
                    pass
                """))
        self.run_in_new_process(f"""
            import array, pmem
            from made import Box, P, Name
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.box = pool.new(Box, "alpha beta x" + str(len(__name__)))
            for l in vars(pool.ns.box).values():
                assert pmem.storage_of(l) is pool
                assert all(pmem.storage_of(w) is pool for w in l), l
            pool.ns.p = pool.new(P, 1.5, "hello " + str(len(__name__)))
            assert pmem.storage_of(pool.ns.p) is pool
            assert pmem.storage_of(pool.ns.p.y) is pool
            pool.ns.name = pool.new(Name, "n" * 20)
            assert type(pool.ns.name) is Name
            before = pool.stats()["objects"]
            try:
                pool.new(array.array, "i", [1, 2])
            except TypeError as exc:
                assert "array.array" in str(exc), exc
            else:
                raise AssertionError("array.array was made")
            assert pool.stats()["objects"] == before
            """, seed=42, path=self.dir)
        out = self.run_in_new_process(f"""
            import pmem
            from made import Box, P, Name
            pool = pmem.open({self.path!r})
            print(sorted(vars(pool.ns.box).items()))
            print(pool.ns.p, type(pool.ns.name).__name__, pool.ns.name)
            """, seed=43, path=self.dir)
        self.assertEqual(out, textwrap.dedent("""\
            [('keys', ['alpha', 'beta', 'x8']), \
('lines', ['alpha beta x8', 'end']), ('words', ['alpha', 'beta', 'x8'])]
            P(x=1.5, y='hello 8') Name nnnnnnnnnnnnnnnnnnnn
            """))


class HeapqRoundTripTests(PoolTestCase):
    """heapq's functions on a pool list: each is one operation, whose
    sifts are logged and whose pushed item is stored by the rule."""

    def test_heapq_on_a_pool_list(self):
        out = self.run_in_new_process(f"""
            import heapq, pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.heap = []
            heap = pool.ns.heap
            for i in (5, 3, 8, 1, 9, 2, 7):
                heapq.heappush(heap, ("task " + str(i), [float(i)]))
            heapq.heappop(heap)
            print(heapq.heapreplace(heap, ("task 0", [0.5]))[0])
            print(heapq.heappushpop(heap, ("task 6", [6.5]))[0])
            pool.ns.big = [(i * 7919) % 3001 + 0.5 for i in range(3000)]
            heapq.heapify(pool.ns.big)
            pool.ns.maxheap = [float(i) for i in range(10)]
            heapq._heapify_max(pool.ns.maxheap)
            heapq._heappop_max(pool.ns.maxheap)
            heapq._heapreplace_max(pool.ns.maxheap, 4.25)
            for item in heap:
                assert pmem.storage_of(item) is pool, item
                assert pmem.storage_of(item[1]) is pool, item
            shared = ("task 10", [10.0])
            try:
                heapq.heapreplace(heap, shared)
            except TypeError as exc:
                print("refused", "referenced from elsewhere" in str(exc))
            # A comparison that fails undoes the whole push.
            try:
                heapq.heappush(heap, 4.0)
            except TypeError:
                pass
            print(len(heap))
            """, seed=42)
        self.assertEqual(out, "task 2\ntask 0\nrefused True\n6\n")
        out = self.run_in_new_process(f"""
            import heapq, pmem
            pool = pmem.open({self.path!r})
            heap, big = pool.ns.heap, pool.ns.big
            print([heapq.heappop(heap)[0] for _ in range(len(heap))])
            print(all(big[i] <= big[c] for i in range(len(big))
                      for c in (2 * i + 1, 2 * i + 2) if c < len(big)))
            print(sorted(pool.ns.maxheap, reverse=True)[:3],
                  pool.ns.maxheap[0])
            """, seed=43)
        self.assertEqual(out, "['task 3', 'task 5', 'task 6', 'task 7', "
                              "'task 8', 'task 9']\nTrue\n"
                              "[7.0, 6.0, 5.0] 7.0\n")


class TwoPoolTests(PoolTestCase):

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

    def test_between_pools(self):
        # Cross-pool stores: immutables are copied, mutables refused.
        other = os.path.join(self.dir, "other.pool")
        out = self.run_in_new_process(f"""
            import pmem, socket
            a = pmem.open({self.path!r}, size={SIZE})
            b = pmem.open({other!r}, size={SIZE})
            a.ns.items = [("tuple", 1.5), "str"]
            b.ns.copy = a.ns.items[0]
            assert pmem.storage_of(b.ns.copy) is b
            assert b.ns.copy == ("tuple", 1.5)
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


if __name__ == "__main__":
    unittest.main()
