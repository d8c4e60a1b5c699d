"""pmem pools: the pool's undo log (Modules/_pmem/log.c) and
pmem.open(durability=...).

A transaction copies each range of the pool into the log before its first
change; a crash leaves the copies, which the next open writes back.  The
log starts with one block; a transaction that logs more links more,
which its end (or the next open) frees.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
import unittest
from test.test_pmem.util import FAST_FLUSH, SIZE, PoolTestCase, pmem


class DurabilityTests(PoolTestCase):

    def test_process_durability_persists(self):
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE},
                             durability="process")
            assert pool.durability == "process", pool.durability
            pool.ns.d = {{i: str(i) for i in range(100)}}
            with pool:
                pool.ns.d[5] = "five"
                pool.ns.l = [1, 2, 3]
            try:
                with pool:
                    pool.ns.d[6] = "six"
                    raise KeyError
            except KeyError:
                pass
            """, seed=1)
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            print(pool.durability, pool.ns.d[5], pool.ns.d[6], pool.ns.l)
            """, seed=2)
        self.assertEqual(out, "power five 6 [1, 2, 3]\n")

    def test_bad_durability(self):
        with self.assertRaisesRegex(ValueError, "durability is 'power' or "
                                                "'process', not 'disk'"):
            pmem.open(self.path, size=SIZE, durability="disk")
        self.assertFalse(os.path.exists(self.path))

    def test_one_durability_while_open(self):
        pool = pmem.open(self.path, size=SIZE)
        self.assertEqual(pool.durability, "power")
        self.assertIs(pmem.open(self.path), pool)
        with self.assertRaisesRegex(pmem.PoolError,
                                    "open with durability='power'"):
            pmem.open(self.path, durability="process")
        pool.close()
        pool = pmem.open(self.path, durability="process")
        self.assertEqual(pool.durability, "process")

    def test_killed_with_process_durability(self):
        # SIGKILL at any instant of transfers on a pool that flushes
        # nothing: whole transactions only.
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.accounts = {{i: 1000 for i in range(100)}}
            pool.ns.log = []
            """, seed=3)
        writer = textwrap.dedent(f"""
            import pmem, random
            pool = pmem.open({self.path!r}, durability="process")
            accounts, log = pool.ns.accounts, pool.ns.log
            rng = random.Random(4)
            print("ready", flush=True)
            while True:
                a, b = rng.sample(range(100), 2)
                n = rng.randrange(1, 50)
                with pool:
                    accounts[a] -= n
                    accounts[b] += n
                    log.append((a, b, n))
                    if len(log) > 500:
                        del log[:250]
            """)
        check = f"""
            import pmem
            pool = pmem.open({self.path!r})
            accounts = pool.ns.accounts
            print(sum(accounts.values()), len(pool.ns.log) > 0)
            """
        env = dict(os.environ, **FAST_FLUSH)
        for i, delay in enumerate((0.15, 0.3, 0.45)):
            proc = subprocess.Popen([sys.executable, "-c", writer], env=env,
                                    stdout=subprocess.PIPE, text=True)
            self.assertEqual(proc.stdout.readline(), "ready\n")
            proc.stdout.close()
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.assertEqual(self.run_in_new_process(check, seed=5 + i),
                             "100000 True\n")


class ForkTests(PoolTestCase):

    @unittest.skipUnless(hasattr(os, "fork"), "needs os.fork()")
    def test_child_of_a_transaction_opens_another_pool(self):
        # The parent's transaction stays the parent's: a child forked in
        # it may use a pool of its own.
        other = os.path.join(self.dir, "other.pool")
        out = self.run_in_new_process(f"""
            import os, pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            with pool:
                pool.ns.x = 1
                pid = os.fork()
                if pid == 0:
                    try:
                        child = pmem.open({other!r}, size={SIZE})
                        child.ns.y = 2
                        os._exit(0)
                    except BaseException as exc:
                        print(type(exc).__name__, exc, flush=True)
                        os._exit(1)
                _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status))
            """, seed=20)
        self.assertEqual(out, "0\n")


class LogTests(PoolTestCase):

    SETUP = """
        import pmem
        pool = pmem.open({path!r}, size=64 << 20)
        pool.ns.d = {{i: -i for i in range(20000)}}
        """

    def test_crash_in_a_big_transaction(self):
        # 20000 values changed log more than the log's first block holds:
        # a SIGKILL before the commit leaves linked blocks, whose entries
        # the next open writes back, and which it frees.
        self.run_in_new_process(self.SETUP.format(path=self.path), seed=10)
        before = self.run_in_new_process(f"""
            import pmem
            stats = pmem.open({self.path!r}).stats()
            print(stats["bytes_free"], stats["bytes_log"])
            """, seed=11)
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import os, signal, pmem
            pool = pmem.open({self.path!r})
            d = pool.ns.d
            with pool:
                for i in range(20000):
                    d[i] = i
                os.kill(os.getpid(), signal.SIGKILL)
            """)], env=dict(os.environ, **FAST_FLUSH))
        self.assertEqual(proc.returncode, -signal.SIGKILL)
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            d = pool.ns.d
            stats = pool.stats()
            print(all(d[i] == -i for i in range(20000)), len(d),
                  stats["bytes_free"], stats["bytes_log"])
            """, seed=12)
        self.assertEqual(out, f"True 20000 {before.strip()}\n")

    def test_crash_after_a_first_range_bigger_than_the_log(self):
        # A transaction whose first range (a list's 20000 items, reversed
        # in place) does not fit the log's first block: its entry is the
        # first of the next one, where the next open finds it.
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size=64 << 20)
            pool.ns.l = list(range(20000))
            """, seed=16)
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import os, signal, pmem
            pool = pmem.open({self.path!r})
            with pool:
                pool.ns.l.reverse()
                os.kill(os.getpid(), signal.SIGKILL)
            """)], env=dict(os.environ, **FAST_FLUSH))
        self.assertEqual(proc.returncode, -signal.SIGKILL)
        out = self.run_in_new_process(f"""
            import pmem
            print(pmem.open({self.path!r}).ns.l == list(range(20000)))
            """, seed=17)
        self.assertEqual(out, "True\n")

    def test_crash_after_an_empty_range(self):
        # A change that logs no bytes (a slice inserted at a list's end
        # moves no items) is followed by others, which the next open
        # undoes too.
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.l = list(range(10))
            pool.ns.d = {{}}
            """, seed=18)
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import os, signal, pmem
            pool = pmem.open({self.path!r})
            with pool:
                pool.ns.l[10:10] = ["x" * 20]
                for i in range(50):
                    pool.ns.d[i] = [i]
                os.kill(os.getpid(), signal.SIGKILL)
            """)], env=dict(os.environ, **FAST_FLUSH))
        self.assertEqual(proc.returncode, -signal.SIGKILL)
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            print(pool.ns.l, pool.ns.d)
            """, seed=19)
        self.assertEqual(out, f"{list(range(10))} {{}}\n")

    def test_abort_of_a_big_transaction(self):
        # The same undone in the process: the values are back, and the
        # blocks the log linked are freed (the next process finds as much
        # room as before).
        self.run_in_new_process(self.SETUP.format(path=self.path), seed=13)
        before = self.run_in_new_process(f"""
            import pmem
            print(pmem.open({self.path!r}).stats()["bytes_free"])
            """, seed=14)
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            d = pool.ns.d
            first = pool.stats()["bytes_log"]
            for _ in range(2):
                try:
                    with pool:
                        for i in range(20000):
                            d[i] = i
                        big = pool.stats()["bytes_log"]
                        raise ValueError
                except ValueError:
                    pass
            print(all(d[i] == -i for i in range(20000)),
                  big > first, pool.stats()["bytes_log"] == first)
            with pool:
                for i in range(20000):
                    d[i] = -i - 1
            print(pool.stats()["bytes_log"] == first)
            """, seed=15)
        self.assertEqual(out, "True True True\nTrue\n")
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            d = pool.ns.d
            print(all(d[i] == -i - 1 for i in range(20000)),
                  pool.stats()["bytes_free"])
            """, seed=16)
        self.assertEqual(out, f"True {before.strip()}\n")


if __name__ == "__main__":
    unittest.main()
