"""A pool holds containers and buffers up to most of its size.

libpmemobj's own allocation classes are made for pools of gigabytes: a
64 MiB pool was "full" with a list of 30,804 items (247 KB), and a
bytearray stuck near 150 KB.  Each case fills a fresh pool of the default
size (64 MiB) in its own way, until MemoryError:

  - one list grown by appends, to at least 40% of the pool (a resize
    holds the old block and the new one at once);
  - one bytearray grown by appends, to at least 40%;
  - many objects of 1 KB to 1 MB, to at least 75% in total;

and a pool that is really full says so: which pool, how much is in use,
what to do; the transaction is rolled back, and the pool works on and
opens in a new process with what it held.
"""

import os
import random
import textwrap
import unittest
from test import support
from test.support import os_helper
from test.support.script_helper import assert_python_failure, assert_python_ok
from test.test_pmem.util import FAST_FLUSH, pmem


class CapacityTests(unittest.TestCase):

    def setUp(self):
        self.dir = self.enterContext(os_helper.temp_dir())
        self.path = os.path.join(self.dir, "fill.pool")

    def fill(self, code):
        """Run code on a fresh default pool in a new process, until it
        raises MemoryError; the message, and what the code printed."""
        _, out, _ = assert_python_ok("-c", textwrap.dedent(f"""
            import pmem
            pool = pmem.open({self.path!r})
            assert pool.size == pmem.DEFAULT_SIZE
            try:
            """) + textwrap.indent(textwrap.dedent(code), "    ") + """
except MemoryError as exc:
    print(exc)
else:
    raise AssertionError("the pool never filled")
""", **FAST_FLUSH)
        return out.decode()

    def assertFull(self, message):
        self.assertRegex(message, rf"pool '{self.path}' is full: \d+ more "
                                  rf"bytes do not fit \(\d+ of its \d+ bytes "
                                  rf"are in use")
        self.assertRegex(message, r"\d+ are free for blocks of any size, "
                                  r"at most \d+ in one")
        self.assertIn("rolled back", message)
        self.assertIn("python -m pmem grow PATH SIZE", message)

    def fill_dict(self, value):
        """Fill a fresh pool with entries i: value of a dict, until it is
        full (with the message that says so)."""
        self.assertFull(self.fill(f"""
            pool.ns.d = {{}}
            d = pool.ns.d
            i = 0
            while True:
                d[i] = {value}
                i += 1
            """))

    def reopened(self, code):
        """What code prints, run on the pool in a new process."""
        _, out, _ = assert_python_ok("-c", textwrap.dedent(f"""
            import pmem
            pool = pmem.open({self.path!r}, create=False)
            """) + textwrap.dedent(code), **FAST_FLUSH)
        return out.decode()

    def test_list_grown_by_appends(self):
        message = self.fill("""
            pool.ns.items = []
            items = pool.ns.items
            while True:
                with pool:
                    for _ in range(10000):
                        items.append(None)
            """)
        self.assertFull(message)
        n = int(self.reopened("print(len(pool.ns.items))"))
        self.assertGreaterEqual(n * 8, 0.40 * pmem.DEFAULT_SIZE)
        self.assertEqual(n % 10000, 0)      # whole blocks, or nothing

    @support.requires_resource('cpu')     # about 6 seconds
    def test_list_grown_one_append_at_a_time(self):
        # Each append its own transaction, as a plain program does it.
        message = self.fill("""
            pool.ns.items = []
            items = pool.ns.items
            while True:
                items.append(None)
            """)
        self.assertFull(message)
        n = int(self.reopened("print(len(pool.ns.items))"))
        self.assertGreaterEqual(n * 8, 0.40 * pmem.DEFAULT_SIZE)

    def test_bytearray_grown_by_appends(self):
        message = self.fill("""
            pool.ns.data = bytearray()
            data = pool.ns.data
            chunk = bytes(range(256)) * 4
            while True:
                with pool:
                    for _ in range(100):
                        data += chunk
                    data.append(7)
            """)
        self.assertFull(message)
        out = self.reopened("""
            data = pool.ns.data
            print(len(data), data[-1], data[:3] == b"\\x00\\x01\\x02")
            """)
        n, last, head = out.split()
        self.assertGreaterEqual(int(n), 0.40 * pmem.DEFAULT_SIZE)
        self.assertEqual((last, head), ("7", "True"))

    def test_many_mid_sized_objects(self):
        message = self.fill("""
            import random
            rng = random.Random(12)
            pool.ns.blobs = []
            blobs = pool.ns.blobs
            failures = 0
            while True:
                n = int(1024 * 1024 ** rng.random())   # 1 KB to 1 MB
                try:
                    blobs.append(bytes(n))
                except MemoryError:
                    failures += 1
                    if failures == 20:
                        raise
            """)
        self.assertFull(message)
        total = int(self.reopened("print(sum(map(len, pool.ns.blobs)))"))
        self.assertGreaterEqual(total, 0.75 * pmem.DEFAULT_SIZE)

    def test_full_dict_reopens(self):
        # A dict that filled the pool: the next open rebuilds its hash
        # table where it is (no new table, which would not fit).
        self.fill_dict("i")
        out = self.reopened("""
            d = pool.ns.d
            print(len(d) > 300000, all(d[i] == i for i in range(len(d))),
                  len(d) in d)
            """)
        self.assertEqual(out, "True True False\n")

    def test_full_pool_deletes_big_containers(self):
        # Deleting frees many blocks at once, whose log does not fit in
        # libpmemobj's lane: a full pool has room kept for it, and frees
        # beyond that room are made after the commit.
        self.fill_dict("i")
        out = self.reopened("""
            pool.ns.blocks = []
            try:
                while True:
                    pool.ns.blocks.append(str(len(pool.ns.blocks)) * 9)
            except MemoryError:
                pass
            n = len(pool.ns.blocks)
            assert 100 < n, n
            del pool.ns.blocks[-50:]  # in the lane's log and the room kept
            del pool.ns.blocks        # some thousands of frees
            del pool.ns.d             # some 700,000
            print(pool.stats()["objects"], pool.gc())
            """)
        self.assertEqual(out, "1 0\n")      # the namespace
        self.assertEqual(self.reopened("print(pool.gc(), dir(pool.ns))"),
                         "0 []\n")

    @support.requires_resource('cpu')     # about 5 seconds
    def test_reported_free_space_can_be_used(self):
        self.fill_dict("str(i)")
        out = self.reopened("""
            stats = pool.stats()
            free, largest = stats["bytes_free"], stats["largest_free"]
            assert 0 < largest <= free, (largest, free)
            pool.ns.big = bytes(largest - 4096)
            del pool.ns.big
            try:
                pool.ns.big = bytes(largest + (256 << 10))
            except MemoryError:
                pass
            else:
                raise AssertionError("a block larger than the largest fit")
            # Blocks that fit one of libpmemobj's chunks (256 KiB) use
            # the free space of any extent, less 1/16 (a chunk's rest)
            # and the room of the list that holds them.  (The old figure,
            # the pool's size less the bytes in use, was 3 times as much.)
            pool.ns.blocks = []
            total = 0
            try:
                while True:
                    pool.ns.blocks.append(bytes(240 << 10))
                    total += 240 << 10
            except MemoryError:
                pass
            print(total / free)
            """)
        self.assertGreaterEqual(float(out), 0.8)

    def test_size_of_an_existing_pool(self):
        pmem.open(self.path, size=32 << 20).close()
        before = open(self.path, "rb").read()
        for size, advice in ((1 << 30, "python -m pmem grow PATH SIZE"),
                             (16 << 20, "does not shrink")):
            with self.subTest(size=size):
                code = (f"import pmem; pmem.open({self.path!r}, "
                        f"size={size})")
                _, _, err = assert_python_failure("-c", code, **FAST_FLUSH)
                self.assertIn(f"pool {self.path!r} has 33554432 bytes, not "
                              f"{size}", err.decode())
                self.assertIn(advice, err.decode())
        self.assertEqual(open(self.path, "rb").read(), before)
        out = self.reopened("print(pool.size); "
                            "print(pmem.open(pool.path, size=32 << 20).size)")
        self.assertEqual(out, f"{32 << 20}\n{32 << 20}\n")

    def test_big_list_in_a_fresh_pool(self):
        pool = pmem.open(self.path)
        self.addCleanup(pool.close)
        pool.ns.m = [None] * 32000
        pool.ns.b = bytes(1 << 20)
        pool.ns.s = "x" * (4 << 20)
        self.assertEqual(len(pool.ns.m), 32000)

    def test_full_pool_is_rolled_back_and_works_on(self):
        message = self.fill("""
            pool.ns.log = []
            pool.ns.count = 0
            while True:
                with pool:
                    pool.ns.log.append("x" * 5000)
                    pool.ns.count += 1
            """)
        self.assertFull(message)
        out = self.reopened("""
            ns = pool.ns
            assert len(ns.log) == ns.count, (len(ns.log), ns.count)
            # From the end, a few at a time: a full pool has little room
            # for the undo log of a big change (libpmemobj extends it with
            # blocks of its own classes).
            half = len(ns.log) // 2
            while len(ns.log) > half:
                del ns.log[-100:]
            ns.log.append("after")
            ns.count = len(ns.log)
            print(ns.log[-1])
            """)
        self.assertEqual(out, "after\n")
        self.assertEqual(self.reopened("print(len(pool.ns.log) == "
                                       "pool.ns.count)"), "True\n")

    def test_too_big_a_container_to_move_in(self):
        # A container that does not fit, moved in: its copy is made in
        # the transaction (the items in their tuples, half-made when the
        # pool fills), which is rolled back; nothing of it stays.
        for make in ["[(i, [i]) for i in range(400000)]",
                     "collections.OrderedDict((i, [i]) for i in "
                     "range(400000))",
                     "collections.deque((i, [i]) for i in range(400000))"]:
            with self.subTest(make=make):
                os_helper.unlink(self.path)
                message = self.fill(f"""
                    import collections
                    pool.ns.small = [1]
                    before = pool.stats()["objects"]
                    try:
                        pool.ns.big = {{"big": {make}}}
                    finally:
                        assert pool.stats()["objects"] == before
                        pool.ns.small.append(2)
                    """)
                self.assertFull(message)
                self.assertEqual(self.reopened("""
                    print(vars(pool.ns), pool.stats()["objects"])
                    """), "{'small': [1, 2]} 3\n")


if __name__ == "__main__":
    unittest.main()


class HeapWalkTests(unittest.TestCase):
    """The pool lists its allocations from libpmemobj's heap metadata
    (Modules/_pmem/heapcheck.c, _PyPmem_WalkHeap()), not through
    pmemobj_next(): the two listings must be the same, for blocks of
    every kind of run, huge blocks, freed blocks, libpmemobj's own
    classes and its internal objects (a long transaction's log)."""

    SAME = textwrap.dedent("""
        import _pmem, pmem, sys
        pool = pmem.open(sys.argv[1], size=128 << 20)
        def same(when):
            walked, listed = _pmem._heap_listings(pool)
            assert walked == listed, (when, len(walked), len(listed))
            print(when, len(walked))
        """)

    def test_listing_matches_libpmemobj(self):
        path = os.path.join(self.enterContext(os_helper.temp_dir()),
                            "walk.pool")
        _, out, _ = assert_python_ok("-c", self.SAME + textwrap.dedent("""
            import random
            same("fresh")
            rng = random.Random(5)
            ns = pool.ns
            ns.small = [str(i) * rng.randrange(1, 40) for i in range(3000)]
            ns.pages = [bytearray(rng.randrange(5000, 200000))
                        for i in range(40)]
            ns.huge = [bytearray(3 << 20), list(range(500000))]
            same("made")
            del ns.small[::3]
            del ns.pages[::2]
            ns.huge.pop()
            same("freed")
            ns.d = {i: str(i) for i in range(5000)}
            d = ns.d
            with pool:
                for i in range(5000):
                    d[i] = "x"
            same("logged")
            """), path, **FAST_FLUSH)
        self.assertIn("logged", out.decode())
        _, out, _ = assert_python_ok("-c", self.SAME + 'same("reopened")',
                                     path, **FAST_FLUSH)
        self.assertIn("reopened", out.decode())
