"""The memkind manager: volatile objects in memory of a memkind kind.

This machine has no high-bandwidth or DAX KMEM memory: the tests use the
'regular' kind (memory of the NUMA nodes that have CPUs) and the 'file'
kind (a file in a directory, as persistent memory used as volatile memory
would be), and check that the absent kinds are refused.
"""

import copy
import os
import threading
import unittest
from test.support import import_helper, os_helper

_memkind = import_helper.import_module("_memkind")
with os_helper.EnvironmentVarGuard() as env:
    env["PMEM_IS_PMEM_FORCE"] = "1"
    import pmem

SIZE = 32 << 20


class Plain:
    """A class of this module, for instances placed in a kind."""


def regular(size=SIZE):
    try:
        return pmem.MemoryKind("regular", size=size)
    except OSError as e:
        raise unittest.SkipTest(f"no 'regular' memkind kind here: {e}")


class PlacementTests(unittest.TestCase):

    def test_new_objects_of_the_block_live_in_the_kind(self):
        kind = regular()
        with kind as entered:
            d = {"k": [1, 2]}
            lst = [1, 2, 3]
            s = {1, 2}
            b = bytearray(b"abc")
            obj = Plain()
            obj.x = {}
        self.assertIs(entered, kind)
        for x in (d, lst, s, b, obj, obj.x, d["k"]):
            with self.subTest(type=type(x).__name__):
                self.assertIn(x, kind)
                self.assertIs(pmem.storage_of(x), kind)
        self.assertIs(type(d), dict)
        self.assertIs(type(obj), Plain)
        after = {}
        self.assertNotIn(after, kind)
        self.assertIsNone(pmem.storage_of(after))

    def test_objects_behave_as_in_dram(self):
        kind = regular()
        with kind:
            d = {}
            lst = []
        for i in range(20000):              # many resizes of both tables
            d[i] = str(i)
            lst.append(i)
        lst.sort(reverse=True)
        del lst[::2]
        self.assertEqual(len(d), 20000)
        self.assertEqual(d[12345], "12345")
        self.assertEqual(lst[:3], [19998, 19996, 19994])
        self.assertIn(d, kind)
        self.assertIn(lst, kind)

    def test_freed_objects_go_back_to_the_kind(self):
        kind = regular()
        before = kind.stats()["blocks"]
        with kind:
            d = {i: [i] for i in range(1000)}
        self.assertGreater(kind.stats()["blocks"], before + 1000)
        del d
        self.assertEqual(kind.stats()["blocks"], before)

    def test_kind_stays_while_its_objects_live(self):
        kind = regular()
        with kind:
            d = {"k": [1]}
        del kind
        kind = pmem.storage_of(d)
        self.assertIsInstance(kind, pmem.MemoryKind)
        self.assertEqual(kind.name, "regular")
        del kind
        d["k"].append(2)                    # the region is still there
        self.assertEqual(d, {"k": [1, 2]})

    def test_regions_go_back(self):
        # More kinds than a process has ranges (64), one after another:
        # each gives its range back when it and its objects are gone.
        tmp = self.enterContext(os_helper.temp_dir())
        for i in range(100):
            kind = regular(16 << 20)
            with kind:
                d = {i: [i]}
            del kind                        # before its objects
            del d
            kind = pmem.MemoryKind("file", dir=tmp, size=16 << 20)
            with kind:
                d = {i: [i]}
            del d, kind

    def test_placement_is_per_thread(self):
        kind = regular()
        made = []
        with kind:
            t = threading.Thread(target=lambda: made.append([]))
            t.start()
            t.join()
            mine = []
        self.assertNotIn(made[0], kind)
        self.assertIn(mine, kind)

    def test_blocks_nest_across_kinds(self):
        outer, inner = regular(), regular()
        with outer:
            a = []
            with inner:
                b = []
            c = []
        self.assertIn(a, outer)
        self.assertIn(b, inner)
        self.assertIn(c, outer)

    def test_volatile_objects_point_anywhere(self):
        kind = regular()
        dram = [1]
        with kind:
            d = {"dram": dram}
        dram_holder = {"kind": d}
        self.assertIs(d["dram"], dram)
        self.assertIs(dram_holder["kind"], d)

    def test_a_pool_takes_copies_of_kind_objects(self):
        # The memory hierarchy: a pool is above every volatile kind, and
        # moves only DRAM objects; a kind's mutable is refused, unchanged.
        tmp = self.enterContext(os_helper.temp_dir())
        pool = pmem.open(os.path.join(tmp, "k.pool"), size=16 << 20)
        self.addCleanup(pool.close)
        kind = regular()
        with kind:
            lst = [1, 2]
        with self.assertRaisesRegex(TypeError, "mutable object of another "
                                               "storage manager; store a "
                                               "copy"):
            pool.ns.x = lst
        self.assertFalse(hasattr(pool.ns, "x"))
        self.assertIn(lst, kind)
        pool.ns.x = copy.deepcopy(lst)
        self.assertIs(pmem.storage_of(pool.ns.x), pool)
        self.assertEqual(pool.ns.x, [1, 2])
        # The other way round is free: a kind's object may hold pool ones.
        with kind:
            holder = {"pool": pool.ns.x}
        self.assertIs(holder["pool"], pool.ns.x)


class RegionTests(unittest.TestCase):

    def setUp(self):
        self.dir = self.enterContext(os_helper.temp_dir())

    def test_file_kind_is_an_unnamed_file(self):
        kind = pmem.MemoryKind("file", dir=self.dir, size=SIZE)
        self.assertEqual(kind.name, "file")
        self.assertEqual(kind.dir, self.dir)
        self.assertEqual(kind.size, SIZE)
        with kind:
            d = {i: i for i in range(100)}
        self.assertIn(d, kind)
        self.assertEqual(os.listdir(self.dir), [])
        self.assertIn(repr(self.dir), repr(kind))

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork()")
    def test_file_kind_after_fork_is_the_processes_own(self):
        # The file is mapped shared; a forked child must not write into
        # the parent's objects (nor allocate from the same free blocks).
        kind = pmem.MemoryKind("file", dir=self.dir, size=SIZE)
        with kind:
            d = {"k": [1]}
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                d["k"].append(2)
                with kind:
                    junk = [[i] for i in range(1000)]
                d["child"] = junk
                os.write(w, repr(sorted(d)).encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            seen = f.read()
        os.waitpid(pid, 0)
        self.assertEqual(seen, "['child', 'k']")
        self.assertEqual(d, {"k": [1]})
        with kind:
            mine = [[i] for i in range(1000)]
        self.assertEqual(d, {"k": [1]})
        self.assertEqual(mine[999], [999])

    def test_full_region_raises_memory_error(self):
        kind = pmem.MemoryKind("file", dir=self.dir, size=16 << 20)
        keep = []
        full = (r"^memory kind 'file' is full: \d+ more bytes do not fit "
                r"\(\d+ of its 16777216 bytes are in use by objects; .*"
                r"Delete what is no longer needed, or make a larger one")
        # Raised out of the block: the kind's __exit__ explains it.
        with self.assertRaisesRegex(MemoryError, full):
            with kind:
                for _ in range(32):                 # 32 MiB: more than fits
                    keep.append(bytearray(1 << 20))
        self.assertGreater(kind.stats()["used"], 4 << 20)
        # Nothing broke: what was made is intact, and freeing makes room.
        self.assertGreater(len(keep), 4)
        self.assertTrue(all(b in kind for b in keep))
        self.assertEqual(keep[0], bytearray(1 << 20))
        del keep[:]
        self.assertEqual(kind.stats()["blocks"], 0)
        self.assertEqual(kind.stats()["used"], 0)
        # Growing a container of the kind, outside any block.
        with kind:
            grown = bytearray()
        with self.assertRaisesRegex(MemoryError, full):
            while True:
                grown += bytes(1 << 20)
        del grown
        # Caught inside the block: explained where the operation failed.
        with kind:
            try:
                grown = [bytearray(1 << 20) for _ in range(32)]
            except MemoryError as e:
                self.assertRegex(str(e), full)
            else:
                self.fail("32 MiB fit in a kind of 16 MiB")
        with kind:
            again = bytearray(1 << 20)
        self.assertIn(again, kind)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "unknown memkind kind 'nope'; "
                                                "the kinds are: file, "):
            pmem.MemoryKind("nope")
        with self.assertRaisesRegex(TypeError, "needs dir="):
            pmem.MemoryKind("file")
        with self.assertRaisesRegex(TypeError, "dir= is for the 'file' "
                                               "kind only"):
            pmem.MemoryKind("regular", dir=self.dir)
        with self.assertRaisesRegex(ValueError, "bytes at least"):
            pmem.MemoryKind("regular", size=4096)
        with self.assertRaises(FileNotFoundError):
            pmem.MemoryKind("file", dir=os.path.join(self.dir, "missing"))

    def test_absent_kind_is_refused(self):
        for name in ("hbw", "dax_kmem"):
            with self.subTest(name=name):
                try:
                    kind = pmem.MemoryKind(name, size=SIZE)
                except OSError as e:
                    self.assertIn(f"this machine has no memory of memkind "
                                  f"kind {name!r}", str(e))
                else:
                    # A machine that has it: then it must work.
                    with kind:
                        d = {}
                    self.assertIn(d, kind)


if __name__ == "__main__":
    unittest.main()
