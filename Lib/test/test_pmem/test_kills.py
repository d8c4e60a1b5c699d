"""pmem pools: a process killed (SIGKILL) at any instant -- in a
transaction, while opening, while freeing an object -- leaves a pool that
the next process opens with whole transactions only and nothing leaked.

Tools/pmem/crash has the harnesses that do this thousands of times
(test_crash runs them small, test_persist kills at every persist point).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
import unittest
from test.test_pmem.util import FAST_FLUSH, SIZE, PoolTestCase


class KillTests(PoolTestCase):

    def test_killed_in_transactions(self):
        # SIGKILL at whatever instant: the next process sees whole
        # transactions only, and nothing that a killed one allocated.
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size=512 << 20)
            pool.ns.d = {{}}
            pool.ns.n = 0
            """, seed=21)
        writer = f"""
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
            """
        check = f"""
            import pmem
            pool = pmem.open({self.path!r})
            n, d = pool.ns.n, pool.ns.d
            assert len(d) == 200 * n, (len(d), n)
            assert all(d[f"k{{i}}_{{j}}"] == [j, (i, j)]
                       for i in range(n) for j in range(200))
            # Three objects an entry (key, list, tuple); an int for each
            # transaction past the small ints, shared by its tuples; the
            # namespace and the dict (its keys, strs of one character,
            # are static), and n: nothing else.
            expected = (3 * len(d) + max(0, n - 257) + (n >= 257) + 2)
            print(n, pool.stats()["objects"] - expected)
            """
        for i, _ in enumerate(self.killed_writer(writer, (0.2, 0.35, 0.5))):
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
            assert pool.ns.small == {{"a", "b", None}}
            assert None in pool.ns.small
            print(len(data), pool.gc())
            """, seed=50, hint="0x600000000000")
        self.assertEqual(out, "50000 0\n")

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


if __name__ == "__main__":
    unittest.main()
