"""pmem pools with forked processes, threads and the cycle collector.

Each scenario runs in a process of its own (a script), and what a pool
holds is then read by yet another process: the tests check what a new
process finds in the file.  Where nothing may change, the file's bytes
are compared before and after.
"""

import os
import subprocess
import sys
import textwrap
import time
import unittest
from test import support
from test.support import os_helper
from test.test_pmem.util import FAST_FLUSH

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__)))))
TOOLS = os.path.join(ROOT, "Tools", "pmem", "crash")

# Printed by the scripts: the digest of a file, as they see it.
DIGEST = """
import hashlib
def digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()
"""


class ProcessTestCase(unittest.TestCase):

    def setUp(self):
        self.dir = self.enterContext(os_helper.temp_dir())
        self.path = os.path.join(self.dir, "test.pool")

    def run_script(self, code, *args, timeout=support.SHORT_TIMEOUT,
                   status=0, prelude=""):
        """Run code (after prelude) in a new process; its stdout.  The
        script sees PATH (the pool's path) and DIR."""
        script = (f"PATH = {self.path!r}\nDIR = {self.dir!r}\n"
                  + prelude + textwrap.dedent(code))
        env = dict(os.environ, **FAST_FLUSH)
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c",
                               script, *args], capture_output=True,
                              text=True, env=env, timeout=timeout,
                              cwd=self.dir)
        self.assertEqual(proc.returncode, status,
                         proc.stdout + proc.stderr)
        return proc.stdout

    def read_pool(self, expr="repr(sorted(pool.ns.r.items()))", prelude=""):
        """What a new process finds: expr evaluated with the pool open
        (after prelude, which defines the classes it needs)."""
        return self.run_script(f"""
            import pmem
            pool = pmem.open(PATH, create=False)
            print({expr})
            """, prelude=prelude).strip()


class ForkTests(ProcessTestCase):

    def test_forked_child_reads_and_cannot_change(self):
        out = self.run_script("""
            import gc, os, pmem
            class Obj:
                pass
            class Slot:
                __slots__ = ('a',)
            p = pmem.open(PATH, size=16 << 20)
            with p:
                p.ns.r = {'k': 'v' * 20, 'n': 1}
                p.ns.l = [1, 2, 3]
                p.ns.s = {1, 2}
                p.ns.b = bytearray(b'abc')
                p.ns.o = p.new(Obj)
                p.ns.o.x = 5
                p.ns.slot = p.new(Slot)
                p.ns.slot.a = 1
            # The parent writes volatile metadata (reference counts, the
            # collector's links) into the file: none from here on.
            gc.collect()
            gc.disable()
            before = digest(PATH)
            pid = os.fork()
            if pid == 0:
                gc.enable()
                gc.collect()      # which writes to every object's head
                status = 0
                # Reading works, and sees what the parent committed.
                if (p.ns.r['k'] != 'v' * 20 or list(p.ns.l) != [1, 2, 3]
                        or p.ns.o.x != 5 or p.ns.slot.a != 1):
                    status = 10
                changes = [
                    lambda: p.ns.r.__setitem__('child', 'c' * 20),
                    lambda: p.ns.r.pop('k'),
                    lambda: p.ns.r.clear(),
                    lambda: p.ns.l.append(4),
                    lambda: p.ns.l.sort(reverse=True),
                    lambda: p.ns.l.clear(),
                    lambda: p.ns.l.__imul__(0),
                    lambda: p.ns.s.add(3),
                    lambda: p.ns.s.clear(),
                    lambda: p.ns.b.clear(),
                    lambda: p.ns.b.extend(b'x'),
                    lambda: setattr(p.ns.o, 'x', 6),
                    lambda: setattr(p.ns.slot, 'a', 2),
                    lambda: setattr(p.ns, 'new', 1),
                    lambda: p.new(Obj),
                    lambda: pmem.PersistentDict(p),
                    lambda: p.gc(),
                    lambda: p.__enter__(),
                ]
                for n, change in enumerate(changes):
                    try:
                        change()
                    except pmem.PoolError as exc:
                        if 'forked child' not in str(exc) \\
                                or PATH not in str(exc):
                            print('bad message', exc, flush=True)
                            status = 20 + n
                    else:
                        print('change', n, 'was allowed', flush=True)
                        status = 20 + n
                # The child's view is its own: nothing changed.
                if dict(p.ns.r) != {'k': 'v' * 20, 'n': 1}:
                    status = 11
                # Closed, the pool does not open again in the child.
                p.close()
                try:
                    pmem.open(PATH)
                except pmem.PoolError as exc:
                    if 'forked child' not in str(exc):
                        print('bad message', exc, flush=True)
                        status = 12
                else:
                    status = 13
                os._exit(status)
            _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status))
            print(before == digest(PATH))
            p.ns.r['parent'] = 'p' * 20
            """, prelude=DIGEST)
        self.assertEqual(out.split(), ["0", "True"])
        self.assertEqual(self.read_pool(prelude=textwrap.dedent("""
            class Obj:
                pass
            class Slot:
                __slots__ = ('a',)
            """)), repr([("k", "v" * 20), ("n", 1), ("parent", "p" * 20)]))

    def test_child_sees_the_pool_as_it_was_at_the_fork(self):
        # The parent changes much after the fork (a resize, frees,
        # reused memory); the child, which reads afterwards, still sees
        # each object as it was.
        out = self.run_script("""
            import os, pmem
            p = pmem.open(PATH, size=16 << 20)
            p.ns.r = {i: str(i) * 3 for i in range(100)}
            p.ns.l = [[i] for i in range(100)]
            go_r, go_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(go_w)
                os.read(go_r, 1)
                ok = (dict(p.ns.r) == {i: str(i) * 3 for i in range(100)}
                      and [x[0] for x in p.ns.l] == list(range(100)))
                os._exit(0 if ok else 1)
            os.close(go_r)
            with p:
                p.ns.r.clear()
                for i in range(1000):
                    p.ns.r[i] = -i
                del p.ns.l[:]
                p.ns.l.extend([-i] for i in range(500))
            os.write(go_w, b'x')
            _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status))
            """)
        self.assertEqual(out.strip(), "0")
        self.assertEqual(self.read_pool("len(pool.ns.r), pool.ns.r[999], "
                                        "len(pool.ns.l)"), "1000 -999 500")

    def test_fork_inside_a_block_leaves_the_transaction_the_parents(self):
        for outcome in ("commit", "abort"):
            with self.subTest(outcome=outcome):
                os_helper.unlink(self.path)
                out = self.run_script(f"""
                    import os, pmem
                    p = pmem.open(PATH, size=16 << 20)
                    p.ns.r = {{'a': 1}}
                    try:
                        with p:
                            p.ns.r['b'] = 2
                            pid = os.fork()
                            if pid == 0:
                                # The block's exit in the child ends
                                # nothing; its changes are refused.
                                try:
                                    p.ns.r['c'] = 3
                                except pmem.PoolError:
                                    pass
                                else:
                                    os._exit(2)
                                os._exit(0 if dict(p.ns.r) ==
                                         {{'a': 1, 'b': 2}} else 3)
                            _, status = os.waitpid(pid, 0)
                            print(os.waitstatus_to_exitcode(status))
                            p.ns.r['d'] = 4
                            if {outcome!r} == 'abort':
                                raise KeyError
                    except KeyError:
                        pass
                    """)
                self.assertEqual(out.strip(), "0")
                expected = ([("a", 1), ("b", 2), ("d", 4)]
                            if outcome == "commit" else [("a", 1)])
                self.assertEqual(self.read_pool(), repr(expected))

    def test_child_does_not_hold_the_pool(self):
        # The parent exits, or closes the pool, while its forked child
        # lives on: a new process can open the pool.
        for how in ("exit", "close"):
            with self.subTest(how=how):
                os_helper.unlink(self.path)
                proc = subprocess.Popen(
                    [sys.executable, "-c", textwrap.dedent(f"""
                        import os, sys, time, pmem
                        p = pmem.open({self.path!r}, size=16 << 20)
                        p.ns.r = {{'a': 1}}
                        if os.fork() == 0:
                            sys.stdin.read()    # until the test is done
                            os._exit(0)
                        if {how!r} == 'close':
                            p.close()
                            print('closed', flush=True)
                            sys.stdin.read()
                        """)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    env=dict(os.environ, **FAST_FLUSH))
                try:
                    if how == "exit":
                        proc.wait(timeout=support.SHORT_TIMEOUT)
                    else:
                        self.assertEqual(proc.stdout.readline(),
                                         b"closed\n")
                    self.assertEqual(self.read_pool(), "[('a', 1)]")
                finally:
                    proc.stdin.close()
                    proc.wait(timeout=support.SHORT_TIMEOUT)
                    proc.stdout.close()

    def test_no_descriptor_of_the_pool_is_inherited(self):
        # After the open, no descriptor of the process refers to the pool
        # file (libpmemobj keeps only the mapping), so a program that the
        # process executes, which loses the mapping, holds nothing of the
        # pool.
        out = self.run_script("""
            import os, subprocess, sys, pmem
            p = pmem.open(PATH, size=16 << 20)
            p.ns.r = {'a': 1}
            fds = []
            for fd in os.listdir('/proc/self/fd'):
                try:
                    if os.path.samefile(f'/proc/self/fd/{fd}', PATH):
                        fds.append(fd)
                except OSError:
                    pass
            print(fds)
            # A program executed with every inheritable descriptor open
            # opens the pool once this process has closed it.
            p.close()
            code = 'import pmem; print(pmem.open(%r, create=False).ns.r)'
            print(subprocess.run([sys.executable, '-c', code % PATH],
                                 close_fds=False, capture_output=True,
                                 text=True).stdout.strip())
            """)
        self.assertEqual(out.split("\n")[:2], ["[]", "{'a': 1}"])

    def test_multiprocessing_workers_read_the_parent_stores(self):
        out = self.run_script("""
            import multiprocessing, pmem
            pool = pmem.open(PATH, size=16 << 20)
            with pool:
                pool.ns.data = {i: list(range(i)) for i in range(40)}
                pool.ns.r = {}

            def work(i):
                # Reads the pool's objects; a change is refused.
                try:
                    pool.ns.data[i].append(0)
                except pmem.PoolError:
                    refused = True
                else:
                    refused = False
                return i, sum(pool.ns.data[i]), refused

            if __name__ == '__main__':
                ctx = multiprocessing.get_context('fork')
                with ctx.Pool(4) as workers:
                    for i, total, refused in workers.imap_unordered(
                            work, range(40)):
                        pool.ns.r[i] = total      # the parent stores
                        assert refused
                print(len(pool.ns.r))
            """)
        self.assertEqual(out.strip(), "40")
        self.assertEqual(
            self.read_pool("sorted(pool.ns.r.items()) == "
                           "[(i, sum(range(i))) for i in range(40)], "
                           "all(len(v) == k for k, v in "
                           "pool.ns.data.items())"),
            "True True")


class CollectorTests(ProcessTestCase):
    """The cycle collector, inside transactions that roll back."""

    CLASSES = textwrap.dedent("""
        class Obj:
            pass
        class Slot:
            __slots__ = ('a', 'b')
        class Mixed:
            __slots__ = ('a', '__dict__')
        """)
    SCRIPT = """
        import gc, pmem, sys
        pool = pmem.open(PATH, size=16 << 20)
        if sys.argv[1] == 'auto':
            gc.set_threshold(1, 1, 1)   # collections happen by themselves
        pool.ns.keep = []
        with pool:
            keep = pool.ns.keep
            keep.append(pool.new(Obj))
            keep.append(pool.new(Slot))
            keep.append(pool.new(Mixed))
            keep.append({})
            keep.append([])
            o, s, m, d, l = keep
            o.name = 'y'; o.me = o
            s.a = 'y'; s.b = s
            m.a = 'y'; m.me = m; m.x = [m]
            d['me'] = d; d['o'] = o
            l.append(l); l.append(s)
            del o, s, m, d, l, keep
        for _ in range(3):
            try:
                with pool:
                    pool.ns.keep.clear()
                    for _ in range(200):
                        [pool.new(Obj) for _ in range(3)]   # garbage too
                    if sys.argv[1] == 'explicit':
                        gc.collect()
                    raise KeyError
            except KeyError:
                pass
        gc.collect()
        o, s, m, d, l = pool.ns.keep
        print(vars(o) == {'name': 'y', 'me': o}, s.a, s.b is s,
              m.a, m.me is m, m.x[0] is m, d['me'] is d, d['o'] is o,
              l[0] is l, l[1] is s)
        """

    def test_collection_inside_an_aborted_transaction(self):
        expected = " ".join(["True", "y", "True", "y"] + ["True"] * 6)
        for mode in ("explicit", "auto"):
            with self.subTest(mode=mode):
                os_helper.unlink(self.path)
                self.assertEqual(self.run_script(
                    self.SCRIPT, mode, prelude=self.CLASSES).strip(),
                    expected)
                # And a new process opens the pool and finds the same.
                self.assertEqual(self.read_pool(
                    "[type(x).__name__ for x in pool.ns.keep], "
                    "pool.ns.keep[0].name, pool.ns.keep[1].a, "
                    "pool.ns.keep[2].x[0] is pool.ns.keep[2]",
                    prelude=self.CLASSES),
                    "['Obj', 'Slot', 'Mixed', 'dict', 'list'] y y True")

    def test_committed_garbage_is_collected_after_the_commit(self):
        out = self.run_script("""
            import gc, pmem, weakref
            class Obj:
                pass
            pool = pmem.open(PATH, size=16 << 20)
            pool.ns.keep = []
            with pool:
                pool.ns.keep.append(pool.new(Obj))
                pool.ns.keep[0].me = pool.ns.keep[0]
                pool.ns.keep[0].name = 'y'
            ref = weakref.ref(pool.ns.keep[0])
            with pool:
                pool.ns.keep.clear()
                gc.collect()      # kept: the transaction may roll back
                print(ref() is not None and ref().name)
            gc.collect()          # committed: now it is garbage
            print(ref())
            """)
        self.assertEqual(out.split(), ["y", "None"])


class ThreadTests(ProcessTestCase):

    def test_threads_on_shared_objects(self):
        # Tools/pmem/crash/threads.py, small: 8 threads doing every
        # mutating operation on shared pool objects; run it by hand with
        # --ops 100000.
        script = os.path.join(TOOLS, "threads.py")
        if not os.path.exists(script):
            self.skipTest(f"{script} not found")
        proc = subprocess.run(
            [sys.executable, "-X", "faulthandler", script, "--ops", "1500",
             "--seed", "20261202", "--quiet", "--dir", self.dir],
            capture_output=True, text=True, timeout=600,
            env=dict(os.environ, **FAST_FLUSH))
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertRegex(proc.stdout.splitlines()[-1],
                         r"^threads: 8 threads, \d+ operations, \d+ blocks "
                         r"\(\d+ rolled back\), 0 mismatches$")


    def test_two_threads_insert_and_pop_on_one_dict(self):
        # The reproduction of a crash: pops of existing keys looked up
        # before the pool's writer lock was taken.
        expected = "[('p', 1999), 1997, 1998, 1999] [[1997], [1998], [1999]]"
        out = self.run_script("""
            import threading, pmem, sys
            pool = pmem.open(PATH, size=16 << 20)
            pool.ns.d = {}
            d = pool.ns.d
            N = 2000
            def a():
                for i in range(N):
                    with pool:
                        d[i] = [i]
                        d.pop(i - 3, None)
            def b():
                for i in range(N):
                    d[('p', i)] = i
                    d.pop(('p', i - 1), None)
            sys.setswitchinterval(1e-5)
            threads = [threading.Thread(target=a), threading.Thread(target=b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            keys = sorted(d, key=repr)
            print(keys, [d[k] for k in keys if type(k) is int])
            """)
        self.assertEqual(out.strip(), expected)
        self.assertEqual(self.read_pool(
            "str(sorted(pool.ns.d, key=repr)) + ' ' + "
            "str([pool.ns.d[k] for k in sorted(pool.ns.d, key=repr) "
            "if type(k) is int])"), expected)

    def test_object_dropped_by_a_thread_during_an_undone_transaction(self):
        # Thread B drops its last reference to an object whose last
        # reference from the pool the main thread's transaction has just
        # removed; that transaction is undone: the object is back, whole,
        # in the pool (B's deallocation must not free it for good).
        out = self.run_script("""
            import threading, pmem
            class Obj:
                pass
            pool = pmem.open(PATH, size=16 << 20)
            pool.ns.r = {'list': [1, 2, [3]], 'dict': {'a': [4]}}
            pool.ns.r['obj'] = pool.new(Obj)
            pool.ns.r['obj'].x = [5]
            for name in ('list', 'dict', 'obj'):
                held = [pool.ns.r[name]]
                dropped = threading.Event()
                removed = threading.Event()
                def drop():
                    removed.wait()
                    held.clear()      # the last reference: deallocation
                    dropped.set()
                b = threading.Thread(target=drop)
                b.start()
                try:
                    with pool:
                        del pool.ns.r[name]
                        removed.set()
                        # An instance's deallocation waits for the
                        # transaction; the others go on.
                        dropped.wait(0.5)
                        raise KeyError
                except KeyError:
                    pass
                b.join()
            r = pool.ns.r
            print(r['list'], r['dict'], r['obj'].x)
            """)
        self.assertEqual(out.strip(), "[1, 2, [3]] {'a': [4]} [5]")
        self.assertEqual(self.read_pool(
            "pool.ns.r['list'], pool.ns.r['dict'], pool.ns.r['obj'].x",
            prelude="class Obj:\n    pass\n"),
            "[1, 2, [3]] {'a': [4]} [5]")


class KilledOpenTests(ProcessTestCase):

    def test_open_killed_during_the_check_leaves_the_pool_openable(self):
        # pmem.open() checks the pool's metadata in a child process, which
        # holds the pool's lock: killed with its parent, it must not keep
        # the pool locked.
        if not os.path.exists(f"/proc/self/task/{os.getpid()}/children"):
            self.skipTest("no /proc/PID/task/TID/children to find the "
                          "checker with")
        self.run_script("""
            import pmem
            p = pmem.open(PATH, size=256 << 20)
            with p:
                p.ns.r = {i: [str(i)] * 4 for i in range(100_000)}
            """, timeout=support.LONG_TIMEOUT)
        proc = subprocess.Popen(
            [sys.executable, "-c",
             f"import pmem; pmem.open({self.path!r}, create=False)"],
            env=dict(os.environ, **FAST_FLUSH))
        children = f"/proc/{proc.pid}/task/{proc.pid}/children"
        checker = None
        deadline = time.monotonic() + support.SHORT_TIMEOUT
        while checker is None and time.monotonic() < deadline:
            try:
                with open(children) as f:
                    pids = f.read().split()
            except FileNotFoundError:
                break
            if pids:
                checker = int(pids[0])
            else:
                time.sleep(0.0005)
        proc.kill()
        proc.wait()
        self.assertIsNotNone(checker, "the open's check was not seen")
        # The checker was alive when its parent was killed.
        self.assertEqual(self.read_pool("len(pool.ns.r)"), "100000")


if __name__ == "__main__":
    unittest.main()
