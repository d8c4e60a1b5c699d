"""Small objects in runs (Modules/_pmem/runs.c): a pool's objects of up to
512 bytes are slots of runs, which allocate and free without persisting
anything of their own.  Each scenario runs in new processes: what one
process allocated and freed, the next finds, and a process killed at any
instant leaves no slot that nothing reaches.
"""

import os
import unittest
from test.test_pmem.util import PoolTestCase, _pmem

MAGIC = (0x6e755279).to_bytes(4, "little")
BIG = 64 << 20


class RunTests(PoolTestCase):

    def test_objects_survive_in_runs(self):
        self.run_in_new_process(f"""
            import pmem
            class Point:
                def __init__(self, x, y):
                    self.x, self.y = x, y
            pool = pmem.open({self.path!r}, size={BIG})
            with pool:
                pool.ns.d = {{f"key{{i}}": 10**6 + i for i in range(20000)}}
                pool.ns.values = [(i, i + 0.5, str(i) * 3, b"x" * (i % 600))
                                  for i in range(3000)]
            # Outside a transaction too: each store its own.
            for i in range(300):
                pool.ns.values.append(-(10**7) - i)
            stats = pool.stats()
            # A small object takes its slot and its share of its run's
            # codes and header, 2 to 3 bytes: a block of libpmemobj's
            # takes 16 more than it holds.
            assert (stats["bytes_heap"]
                    < stats["bytes_used"] + 6 * stats["objects"]), stats
            """, seed=1)
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            d, values = pool.ns.d, pool.ns.values
            assert d == {{f"key{{i}}": 10**6 + i for i in range(20000)}}
            assert values[:3000] == [(i, i + 0.5, str(i) * 3,
                                      b"x" * (i % 600))
                                     for i in range(3000)]
            assert values[3000:] == [-(10**7) - i for i in range(300)]
            print(pool.gc())
            """, seed=2)
        self.assertEqual(out, "0\n")

    def test_freed_slots_are_reused(self):
        # Deleting objects frees their slots: filling again takes no more
        # of the heap, in this process and in the next (which finds the
        # first process's undo log and tables gone, and more room).
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={BIG})
            pool.ns.l = []
            def fill():
                with pool:
                    pool.ns.l.extend(str(i) * 5 for i in range(50000))
                return pool.stats()["bytes_free"]
            first = fill()
            for _ in range(3):
                with pool:
                    del pool.ns.l[:]
                assert fill() == first
            print(first)
            """, seed=3)
        out2 = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            with pool:
                del pool.ns.l[:]
            with pool:
                pool.ns.l.extend(str(i) * 5 for i in range(50000))
            print(pool.stats()["bytes_free"])
            """, seed=4)
        self.assertGreaterEqual(int(out2), int(out))

    def test_runs_emptied_are_given_back(self):
        # A pool filled with small objects, then emptied: their runs are
        # given back, and one big block takes the room -- at once, and
        # after pool.gc().
        for collect in False, True:
            with self.subTest(gc=collect):
                if os.path.exists(self.path):
                    os.unlink(self.path)
                out = self.run_in_new_process(f"""
                    import pmem
                    pool = pmem.open({self.path!r}, size={BIG})
                    pool.ns.l = []
                    try:
                        while True:
                            with pool:
                                pool.ns.l.extend(str(i) * 3
                                                 for i in range(10000))
                    except MemoryError:
                        pass
                    assert len(pool.ns.l) > 500000, len(pool.ns.l)
                    del pool.ns.l
                    if {collect}:
                        pool.gc()
                        assert pool.stats()["bytes_free"] > {BIG} // 2
                    pool.ns.big = bytes({BIG} // 2)
                    """, seed=12)
                out = self.run_in_new_process(f"""
                    import pmem
                    pool = pmem.open({self.path!r})
                    print(len(pool.ns.big), pool.gc())
                    """, seed=13)
                self.assertEqual(out, f"{BIG // 2} 0\n")

    def test_pool_of_format_7(self):
        # A pool whose small objects are libpmemobj's blocks (format 7)
        # is read, changed and collected with new objects in runs.
        self.run_in_new_process(f"""
            import _pmem, pmem
            _pmem._use_runs(False)
            pool = pmem.open({self.path!r}, size={BIG})
            with pool:
                pool.ns.d = {{i: str(i) for i in range(5000)}}
            print(pool.stats()["bytes_heap"])
            """, seed=5)
        _pmem._set_format_version(self.path, 7)
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            d = pool.ns.d
            assert d == {{i: str(i) for i in range(5000)}}
            with pool:
                for i in range(0, 5000, 2):
                    d[i] = "new" + str(i)
            for i in range(1, 5000, 4):
                del d[i]
            assert pool.gc() == 0
            """, seed=6)
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            expect = {{i: "new" + str(i) if i % 2 == 0 else str(i)
                      for i in range(5000) if i % 4 != 1}}
            assert pool.ns.d == expect
            # A str a value; an int a key, past the small ones.
            big = sum(k > 256 for k in expect)
            print(pool.gc(), pool.stats()["objects"] - len(expect) - big)
            """, seed=7)
        self.assertEqual(out, "0 2\n")    # the namespace and the dict
        self.assertEqual(_pmem._set_format_version(self.path, 8), 8)

    def test_object_made_by_an_undone_transaction(self):
        # An object made in a transaction that raised, which a variable
        # keeps, is a whole object of the pool: a later store keeps it.
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={BIG})
            try:
                with pool:
                    pool.ns.t = ("made", 10**9, 2.5)
                    t = pool.ns.t
                    raise KeyError
            except KeyError:
                pass
            assert not hasattr(pool.ns, "t")
            pool.ns.u = t
            """, seed=8)
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            print(pool.ns.u, pool.gc())
            """, seed=9)
        self.assertEqual(out, "('made', 1000000000, 2.5) 0\n")

    def corrupt_run(self, offset, data):
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={BIG})
            pool.ns.l = [str(i) for i in range(100)]
            """, seed=10)
        with open(self.path, "r+b") as f:
            image = f.read()
            at = image.index(MAGIC)
            f.seek(at)
            header = bytearray(f.read(16))
            header[offset:offset + len(data)] = data
            f.seek(at)
            f.write(header)
        for _ in range(2):
            self.assertRefused(self.path, "is corrupt: the run of small "
                               f"objects at offset {at} has a bad header")
            with open(self.path, "rb") as f:
                f.seek(at)
                self.assertEqual(f.read(16), header)   # left as it is

    def test_run_with_a_bad_magic(self):
        self.corrupt_run(0, b"\0\0\0\0")

    def test_run_with_a_bad_slot_size(self):
        self.corrupt_run(4, (24).to_bytes(4, "little"))

    def test_run_with_a_bad_slot_count(self):
        self.corrupt_run(8, (1 << 30).to_bytes(4, "little"))

    def test_killed_while_slots_come_and_go(self):
        # Each transaction replaces values (new slots, the old ones freed
        # after its commit point) and deletes and adds keys; SIGKILL at
        # any instant leaves whole transactions and no slot unreached.
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={BIG})
            pool.ns.d = {{i: "v0" for i in range(100)}}
            pool.ns.n = 0
            """, seed=11)
        writer = f"""
            import pmem
            pool = pmem.open({self.path!r})
            d = pool.ns.d
            print("ready", flush=True)
            while True:
                with pool:
                    n = pool.ns.n + 1
                    for i in range(100):
                        d[i] = "v" + str(n) * (1 + i % 7)
                    d[1000 + n % 50] = (n, str(n))
                    d.pop(1000 + (n + 25) % 50, None)
                    pool.ns.n = n
            """
        check = f"""
            import pmem
            pool = pmem.open({self.path!r})
            d = pool.ns.d
            def check():
                n = pool.ns.n
                for i in range(100):
                    assert d[i] == ("v" + str(n) * (1 + i % 7) if n
                                    else "v0"), (i, d[i], n)
                extra = [k for k in d if k >= 1000]
                assert all(d[k] == (d[k][0], str(d[k][0])) for k in extra)
                return n
            n = check()
            # The slots that the open found free are free: new objects
            # in them overwrite nothing that is in use.
            objects = pool.stats()["objects"]
            for m in range(n + 1, n + 30):
                with pool:
                    for i in range(100):
                        d[i] = "v" + str(m) * (1 + i % 7)
                    pool.ns.n = m
            check()
            print(n, pool.stats()["objects"] - objects)
            """
        delays = [0.002 * k for k in range(1, 16)]
        seen = set()
        for i, _ in enumerate(self.killed_writer(writer, delays)):
            out = self.run_in_new_process(check, seed=14 + i)
            n, grown = map(int, out.split())
            self.assertLessEqual(grown, 2, out)  # pool.ns.n's int
            seen.add(n)
        self.assertGreater(len(seen), 3, seen)


if __name__ == "__main__":
    unittest.main()
