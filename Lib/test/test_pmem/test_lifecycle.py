"""The lifecycle of a pool file beyond one process's open: copies of it.

A raw copy of a pool (cp) opened beside its original is refused with a
message that says what it is and what to do; pmem.copy() and ``python -m
pmem copy`` make copies that open beside their original, consistent
(from the process that has the pool open, or from the file under its
lock), never half made under their name; pmem.open(path, readonly=True)
lets processes read a pool together, while no process writes it.  Each
scenario runs in a new process, as a program would.
"""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import unittest
from test import support
from test.support import os_helper
from test.test_pmem.util import FAST_FLUSH, SIZE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__)))))
CRASH = os.path.join(ROOT, "Tools", "pmem", "crash")


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def python(*args):
    """A new interpreter with fast flushes, in no pool's directory."""
    env = dict(os.environ, **FAST_FLUSH)
    env.pop("PYTHONPATH", None)
    return [sys.executable, "-X", "faulthandler", *args], env


class LifecycleTestCase(unittest.TestCase):

    def setUp(self):
        self.dir = self.enterContext(os_helper.temp_dir())
        self.path = os.path.join(self.dir, "test.pool")

    def run_script(self, code, *args, status=0):
        """Run code in a new process, in self.dir, with PATH and DIR set;
        its stdout.  The test fails unless it exits with status."""
        script = (f"PATH = {self.path!r}\nDIR = {self.dir!r}\n"
                  f"SIZE = {SIZE}\n" + textwrap.dedent(code))
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c",
                               script, *args], capture_output=True,
                              text=True, env=dict(os.environ, **FAST_FLUSH),
                              timeout=support.LONG_TIMEOUT, cwd=self.dir)
        self.assertEqual(proc.returncode, status, proc.stdout + proc.stderr)
        return proc.stdout

    def make_pool(self, path=None):
        """A pool at path (self.path) holding a list, made by a process
        of its own."""
        self.run_script(f"""
            import pmem
            pool = pmem.open({path or self.path!r}, size=SIZE)
            pool.ns.items = list(range(100))
            """)


class RawCopyTests(LifecycleTestCase):
    """cp of a pool keeps the header, and with it the identity by which
    libpmemobj tells open pools apart."""

    def test_raw_copy_beside_its_original(self):
        self.make_pool()
        out = self.run_script("""
            import pmem, shutil
            original = pmem.open(PATH, create=False)
            shutil.copyfile(PATH, "copy.pool")
            try:
                pmem.open("copy.pool", create=False)
            except pmem.PoolError as exc:
                print(exc)
            """)
        self.assertIn("'copy.pool' is a raw copy of pool ", out)
        self.assertIn(f"{self.path!r}, which is open in this process", out)
        self.assertIn("close the original here first", out)
        self.assertNotIn("not a valid", out)

    def test_raw_copy_alone_in_another_process(self):
        # The copy is a pool of its own, in a process without the
        # original; changes to it leave the original alone.
        self.make_pool()
        out = self.run_script("""
            import pmem, shutil
            shutil.copyfile(PATH, "copy.pool")
            copy = pmem.open("copy.pool", create=False)
            copy.ns.items.append("copy")
            print(copy.ns.items[-1])
            """)
        self.assertEqual(out, "copy\n")
        out = self.run_script("""
            import pmem
            print(pmem.open(PATH, create=False).ns.items[-1])
            """)
        self.assertEqual(out, "99\n")

    def test_raw_copy_after_the_original_is_let_go(self):
        # A closed original still holds its identity while its objects
        # are held, and lets it go when they are dropped.
        self.make_pool()
        out = self.run_script("""
            import pmem, shutil
            original = pmem.open(PATH, create=False)
            items = original.ns.items
            original.close()
            shutil.copyfile(PATH, "copy.pool")
            try:
                pmem.open("copy.pool", create=False)
            except pmem.PoolError as exc:
                print(exc)
            del items
            copy = pmem.open("copy.pool", create=False)
            print(len(copy.ns.items))
            try:
                pmem.open(PATH, create=False)
            except pmem.PoolError as exc:
                print(exc)
            """)
        first, second, third = out.splitlines()
        self.assertIn("which this process has closed but still holds "
                      "objects of", first)
        self.assertEqual(second, "100")
        self.assertIn(f"{self.path!r} is a raw copy of pool 'copy.pool', "
                      f"which is open in this process", third)

    def test_another_name_of_an_open_pool(self):
        self.make_pool()
        out = self.run_script("""
            import os, pmem
            original = pmem.open(PATH, create=False)
            os.link(PATH, "link.pool")
            try:
                pmem.open("link.pool", create=False)
            except pmem.PoolError as exc:
                print(exc)
            """)
        self.assertIn(f"'link.pool' is pool {self.path!r}, which is open in "
                      f"this process, under another name", out)


class CopyTests(LifecycleTestCase):
    """pmem.copy(), pool.copy() and python -m pmem copy."""

    def pmem_copy(self, *args):
        """python -m pmem copy ARGS, in self.dir: (status, stdout,
        stderr)."""
        argv, env = python("-m", "pmem", "copy", *args)
        proc = subprocess.run(argv, env=env, capture_output=True, text=True,
                              timeout=support.LONG_TIMEOUT, cwd=self.dir)
        return proc.returncode, proc.stdout, proc.stderr

    def test_copy_opens_beside_its_original(self):
        self.make_pool()
        before = digest(self.path)
        status, out, err = self.pmem_copy(self.path, "copy.pool")
        self.assertEqual(status, 0, err)
        self.assertEqual(out, f"{self.path}: copied to copy.pool "
                              f"({SIZE:,} bytes)\n")
        self.assertEqual(digest(self.path), before)
        out = self.run_script("""
            import pmem
            original = pmem.open(PATH, create=False)
            copy = pmem.open("copy.pool", create=False)
            copy.ns.items.append("copy")
            del original.ns.items[50:]
            print(len(original.ns.items), copy.ns.items[-2:])
            """)
        self.assertEqual(out, "50 [99, 'copy']\n")
        # Each is a pool of its own in the next process too.
        out = self.run_script("""
            import pmem
            copy = pmem.open("copy.pool", create=False)
            original = pmem.open(PATH, create=False)
            print(len(original.ns.items), len(copy.ns.items))
            """)
        self.assertEqual(out, "50 101\n")

    def test_copies_have_identities_of_their_own(self):
        # A copy of a copy, and two copies of one pool, open side by side.
        self.make_pool()
        out = self.run_script("""
            import pmem
            pmem.copy(PATH, "one.pool")
            pmem.copy(PATH, "two.pool")
            pmem.copy("one.pool", "three.pool")
            pools = [pmem.open(p, create=False)
                     for p in (PATH, "one.pool", "two.pool", "three.pool")]
            print(sum(len(p.ns.items) for p in pools))
            """)
        self.assertEqual(out, "400\n")

    def test_copy_from_the_process_that_has_it_open(self):
        # Another thread makes transfers, one transaction each; every copy
        # holds the bank's money, and the transfers that had committed.
        out = self.run_script("""
            import threading, pmem
            pool = pmem.open(PATH, size=SIZE)
            pool.ns.accounts = {i: 100 for i in range(10)}
            pool.ns.done = 0
            stop = False
            def transfers():
                i = 0
                while not stop:
                    with pool:
                        pool.ns.accounts[i % 10] -= 7
                        pool.ns.accounts[(i + 3) % 10] += 7
                        pool.ns.done += 1
                    i += 1
            thread = threading.Thread(target=transfers)
            thread.start()
            for n in range(5):
                size = pool.copy(f"copy-{n}.pool")
                assert size == pool.size, size
            stop = True
            thread.join()
            print(pool.ns.done)
            """)
        done = int(out)
        out = self.run_script("""
            import pmem
            for n in range(5):
                copy = pmem.open(f"copy-{n}.pool", create=False)
                print(sum(copy.ns.accounts.values()), copy.ns.done)
            """)
        last = 0
        for line in out.splitlines():
            money, copied = map(int, line.split())
            self.assertEqual(money, 1000)
            self.assertLessEqual(last, copied)
            self.assertLessEqual(copied, done)
            last = copied

    def test_copy_inside_a_transaction_is_refused(self):
        self.make_pool()
        out = self.run_script("""
            import os, pmem
            pool = pmem.open(PATH, create=False)
            with pool:
                pool.ns.items.append(1)
                try:
                    pmem.copy(pool, "copy.pool")
                except pmem.PoolError as exc:
                    print(exc)
            print(os.path.exists("copy.pool"), os.listdir("."))
            """)
        message, exists = out.splitlines()
        self.assertIn("cannot be copied inside one of its transactions",
                      message)
        self.assertEqual(exists, "False ['test.pool']")

    def test_copy_never_replaces_a_file(self):
        self.make_pool()
        with open(os.path.join(self.dir, "taken"), "w") as f:
            f.write("mine")
        status, out, err = self.pmem_copy(self.path, "taken")
        self.assertEqual(status, 1)
        self.assertIn("a copy never replaces a file", err)
        with open(os.path.join(self.dir, "taken")) as f:
            self.assertEqual(f.read(), "mine")
        out = self.run_script("""
            import pmem
            pool = pmem.open(PATH, create=False)
            try:
                pool.copy("taken")
            except FileExistsError as exc:
                print(exc.filename)
            """)
        self.assertEqual(out, "taken\n")

    def test_copy_of_a_pool_open_for_writing_elsewhere(self):
        # The writer holds the pool's lock from its open to its close:
        # the copy fails after its wait, saying what to do, and succeeds
        # when it waits for the writer's close.
        self.make_pool()
        argv, env = python("-c", textwrap.dedent(f"""
            import sys, time, pmem
            pool = pmem.open({self.path!r}, create=False)
            pool.ns.items.append("last")
            print("open", flush=True)
            time.sleep(2)
            """))
        writer = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                  text=True)
        self.addCleanup(writer.wait)
        self.addCleanup(writer.kill)
        self.assertEqual(writer.stdout.readline(), "open\n")
        started = time.monotonic()
        status, out, err = self.pmem_copy("--wait", "0.2", self.path,
                                          "copy.pool")
        self.assertEqual(status, 1)
        self.assertIn("is open for writing in another process", err)
        self.assertIn("copy it from that process (pool.copy(dst)", err)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "copy.pool")))
        status, out, err = self.pmem_copy("--wait", "inf", self.path,
                                          "copy.pool")
        self.assertEqual(status, 0, err)
        self.assertGreater(time.monotonic() - started, 1.0)
        writer.wait()
        out = self.run_script("""
            import pmem
            print(pmem.open("copy.pool", create=False).ns.items[-1])
            """)
        self.assertEqual(out, "last\n")

    def test_copy_of_a_pool_that_a_crash_left_mid_transaction(self):
        # The copy is checked as an open checks a pool: libpmemobj rolls
        # the transaction back in the copy; the original is not changed.
        self.make_pool()
        self.run_script("""
            import os, signal, pmem
            pool = pmem.open(PATH, create=False)
            with pool:
                pool.ns.items.clear()
                os.kill(os.getpid(), signal.SIGKILL)
            """, status=-signal.SIGKILL)
        before = digest(self.path)
        status, out, err = self.pmem_copy(self.path, "copy.pool")
        self.assertEqual(status, 0, err)
        self.assertEqual(digest(self.path), before)
        out = self.run_script("""
            import pmem
            copy = pmem.open("copy.pool", create=False)
            original = pmem.open(PATH, create=False)
            print(len(copy.ns.items), len(original.ns.items))
            """)
        self.assertEqual(out, "100 100\n")

    def test_copy_of_what_is_not_a_pool(self):
        with open(self.path, "wb") as f:
            f.write(b"PMEMOBJ\0" + bytes(SIZE - 8))
        status, out, err = self.pmem_copy(self.path, "copy.pool")
        self.assertEqual(status, 1)
        self.assertIn("is a libpmemobj pool of format 0; pmem-python pools "
                      "have format 6", err)
        status, out, err = self.pmem_copy("/etc/passwd", "copy.pool")
        self.assertEqual(status, 1)
        self.assertIn("not a pmem-python pool", err)
        status, out, err = self.pmem_copy("missing.pool", "copy.pool")
        self.assertEqual(status, 1)
        self.assertIn("No such file", err)
        self.assertEqual(sorted(os.listdir(self.dir)), ["test.pool"])

    def test_a_corrupt_header_is_not_copied(self):
        self.make_pool()
        with open(self.path, "r+b") as f:
            f.seek(130)                   # in arch_flags, checksummed
            f.write(b"\xff")
        status, out, err = self.pmem_copy(self.path, "copy.pool")
        self.assertEqual(status, 1)
        self.assertIn("the checksum of its header is wrong", err)
        self.assertEqual(sorted(os.listdir(self.dir)), ["test.pool"])

    def test_header_checksum(self):
        # _header_checksum() is libpmemobj's util_checksum(): it gives the
        # checksum that libpmemobj wrote.
        import struct
        import pmem
        self.make_pool()
        with open(self.path, "rb") as f:
            header = f.read(4096)
        (stored,) = struct.unpack_from("<Q", header, 4088)
        self.assertEqual(pmem._header_checksum(header), stored)

    def kill_during_copy(self, named):
        """SIGKILL a process at random instants of copies of a pool (an
        unnamed file, or a temporary name): the copy is absent, or
        complete."""
        self.make_pool()
        before = digest(self.path)
        code = textwrap.dedent(f"""
            import os, sys, pmem
            if {named}:
                del os.O_TMPFILE
            n = 0
            while True:
                print("C", n, flush=True)
                pmem.copy({self.path!r}, f"copy-{{n}}.pool")
                n += 1
            """)
        argv, env = python("-c", code)
        delays = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45]
        for delay in delays:
            with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                  text=True, cwd=self.dir) as proc:
                time.sleep(delay)
                proc.kill()
                proc.wait()
            names = sorted(os.listdir(self.dir))
            copies = [n for n in names if n.endswith(".pool")
                      and n != "test.pool"]
            stray = [n for n in names if n not in copies
                     and n != "test.pool"]
            if named:
                self.assertLessEqual(len(stray), 1, names)
                self.assertTrue(all(n.endswith(".pool.copying")
                                    for n in stray), names)
            else:
                self.assertEqual(stray, [], names)
            for name in stray:
                os.unlink(os.path.join(self.dir, name))
            # A copy never changes the original.
            self.assertEqual(digest(self.path), before)
            if copies:
                out = self.run_script(f"""
                    import pmem
                    original = pmem.open(PATH, create=False)
                    for name in {copies!r}:
                        print(len(pmem.open(name, create=False).ns.items))
                    """)
                self.assertEqual(out, "100\n" * len(copies))
            for name in copies:
                os.unlink(os.path.join(self.dir, name))
            before = digest(self.path)    # opened beside its copies

    def test_kill_during_copy(self):
        self.kill_during_copy(named=False)

    def test_kill_during_copy_to_a_temporary_name(self):
        # Where the file system has no O_TMPFILE.
        self.kill_during_copy(named=True)


class ReadOnlyTests(LifecycleTestCase):
    """pmem.open(path, readonly=True)."""

    def start(self, code):
        """A process running code (PATH set), which prints "ready" when it
        has the pool, then waits for a line on its stdin; its Popen."""
        argv, env = python("-c", f"PATH = {self.path!r}\n"
                           + textwrap.dedent(code))
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                cwd=self.dir)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        line = proc.stdout.readline()
        self.assertEqual(line, "ready\n", proc.stderr.read()
                         if not line else line)
        return proc

    def finish(self, proc):
        """Let proc go on past its wait; its output after "ready"."""
        out, err = proc.communicate("go\n", timeout=support.LONG_TIMEOUT)
        self.assertEqual(proc.returncode, 0, err)
        return out

    READER = """
        import sys, pmem
        pool = pmem.open(PATH, readonly=True)
        print("ready", flush=True)
        sys.stdin.readline()
        print(len(pool.ns.items), pool.readonly)
        """

    def test_readers_share_a_pool_that_no_one_writes(self):
        self.make_pool()
        before = digest(self.path)
        first = self.start(self.READER)
        second = self.start(self.READER)
        # A writer meanwhile gets a PoolError that says why.
        out = self.run_script("""
            import pmem
            try:
                pmem.open(PATH, create=False)
            except pmem.PoolError as exc:
                print(exc)
            """)
        self.assertIn("is open read-only in another process", out)
        self.assertIn("once every process that reads it has closed it", out)
        self.assertEqual(self.finish(first), "100 True\n")
        self.assertEqual(self.finish(second), "100 True\n")
        self.assertEqual(digest(self.path), before)
        out = self.run_script("""
            import pmem
            pool = pmem.open(PATH, create=False)
            pool.ns.items.append("written")
            print(len(pool.ns.items))
            """)
        self.assertEqual(out, "101\n")

    def test_changes_are_refused(self):
        self.make_pool()
        before = digest(self.path)
        out = self.run_script("""
            import pmem
            pool = pmem.open(PATH, readonly=True)
            items = pool.ns.items
            attempts = [
                lambda: items.append(1),
                lambda: items.sort(reverse=True),
                lambda: items.__setitem__(0, "x"),
                lambda: setattr(pool.ns, "other", 1),
                lambda: delattr(pool.ns, "items"),
                lambda: pool.new(dict),
                lambda: pool.gc(),
                lambda: pool.__enter__(),
            ]
            for attempt in attempts:
                try:
                    attempt()
                except pmem.PoolError as exc:
                    assert "is open read-only" in str(exc), exc
                else:
                    print("not refused")
            print(items[:3], sum(items), repr(pool))
            """)
        self.assertEqual(out, f"[0, 1, 2] 4950 <pmem.Pool {self.path!r} "
                              f"(open read-only)>\n")
        self.assertEqual(digest(self.path), before)

    def test_an_empty_pool_reads_as_empty(self):
        self.run_script("import pmem; pmem.open(PATH, size=SIZE)")
        out = self.run_script("""
            import pmem
            pool = pmem.open(PATH, readonly=True)
            print(dir(pool.ns), hasattr(pool.ns, "items"))
            """)
        self.assertEqual(out, "[] False\n")

    def test_a_pool_open_for_writing_is_not_read(self):
        self.make_pool()
        writer = self.start("""
            import sys, pmem
            pool = pmem.open(PATH, create=False)
            print("ready", flush=True)
            sys.stdin.readline()
            """)
        out = self.run_script("""
            import pmem
            try:
                pmem.open(PATH, readonly=True)
            except pmem.PoolError as exc:
                print(exc)
            """)
        self.assertIn("is open for writing in another process: it can be "
                      "read once that process has closed it", out)
        self.finish(writer)

    def test_read_only_never_creates(self):
        out = self.run_script("""
            import os, pmem
            try:
                pmem.open(PATH, readonly=True)
            except FileNotFoundError as exc:
                print(exc.filename == PATH, os.path.exists(PATH))
            """)
        self.assertEqual(out, "True False\n")

    def test_a_crashed_transaction_is_rolled_back_in_the_copy(self):
        # The file keeps its log; each read-only open rolls the
        # transaction back in its own copy, and the next open for
        # writing in the file.
        self.make_pool()
        self.run_script("""
            import os, signal, pmem
            pool = pmem.open(PATH, create=False)
            with pool:
                pool.ns.items.clear()
                pool.ns.items.append("half")
                os.kill(os.getpid(), signal.SIGKILL)
            """, status=-signal.SIGKILL)
        before = digest(self.path)
        for _ in range(2):
            out = self.run_script("""
                import pmem
                print(len(pmem.open(PATH, readonly=True).ns.items))
                """)
            self.assertEqual(out, "100\n")
            self.assertEqual(digest(self.path), before)
        out = self.run_script("""
            import pmem
            print(len(pmem.open(PATH, create=False).ns.items))
            """)
        self.assertEqual(out, "100\n")

    def test_one_way_at_a_time_in_a_process(self):
        self.make_pool()
        out = self.run_script("""
            import pmem
            reader = pmem.open(PATH, readonly=True)
            assert pmem.open(PATH, readonly=True) is reader
            try:
                pmem.open(PATH)
            except pmem.PoolError as exc:
                print(exc)
            items = reader.ns.items
            reader.close()
            print(items[-1], reader.closed)
            try:
                items.append(1)
            except pmem.PoolError as exc:
                print(exc)
            del items
            writer = pmem.open(PATH)
            try:
                pmem.open(PATH, readonly=True)
            except pmem.PoolError as exc:
                print(exc)
            writer.ns.items.append("w")
            print(len(writer.ns.items))
            """)
        lines = out.splitlines()
        self.assertIn("is open read-only in this process: close it", lines[0])
        self.assertEqual(lines[1], "99 True")
        self.assertIn("is closed: its objects can be read, not changed",
                      lines[2])
        self.assertIn("is open for writing in this process: read it "
                      "through that pool", lines[3])
        self.assertEqual(lines[4], "101")

    def test_close_lets_writers_in(self):
        # A forked child of a reader reads its own copy, and holds no
        # lock: once the parent closes the pool, a writer opens it while
        # the child still reads.
        self.make_pool()
        reader = self.start("""
            import os, sys, pmem
            pool = pmem.open(PATH, readonly=True)
            items = pool.ns.items
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(w)
                os.read(r, 1)         # the parent has closed the pool
                try:
                    items.append(1)
                except pmem.PoolError:
                    pass
                else:
                    os._exit(3)
                os._exit(0 if len(items) == 100 else 2)
            pool.close()
            print("ready", flush=True)
            sys.stdin.readline()      # a writer has written
            os.write(w, b"x")
            _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status), len(items))
            """)
        out = self.run_script("""
            import pmem
            pool = pmem.open(PATH, create=False)
            pool.ns.items.append("w")
            print(len(pool.ns.items))
            """)
        self.assertEqual(out, "101\n")
        self.assertEqual(self.finish(reader), "0 100\n")

    def test_copies_while_read(self):
        self.make_pool()
        reader = self.start("""
            import sys, pmem
            pool = pmem.open(PATH, readonly=True)
            pmem.copy(pool, "from-the-reader.pool")
            print("ready", flush=True)
            sys.stdin.readline()
            """)
        out = self.run_script("""
            import pmem
            pmem.copy(PATH, "from-the-file.pool")
            a = pmem.open("from-the-reader.pool", create=False)
            b = pmem.open("from-the-file.pool", create=False)
            print(len(a.ns.items), len(b.ns.items))
            """)
        self.assertEqual(out, "100 100\n")
        self.finish(reader)


class CopyHarnessTests(unittest.TestCase):

    def test_copy_kills(self):
        script = os.path.join(CRASH, "copy_kills.py")
        if not os.path.exists(script):
            self.skipTest(f"{script} not found")
        with os_helper.temp_dir() as tmp:
            proc = subprocess.run([sys.executable, script, "--trials", "8",
                                   "--seed", "20261204", "--quiet",
                                   "--dir", tmp],
                                  capture_output=True, text=True,
                                  timeout=support.LONG_TIMEOUT)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertRegex(proc.stdout.splitlines()[-1],
                         r"^copy_kills: 8 trials, \d+ kills during copy, "
                         r"0 failures$")


if __name__ == "__main__":
    unittest.main()
