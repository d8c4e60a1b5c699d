"""pmem.grow() and ``python -m pmem grow``: a pool made larger keeps what
it holds and takes more; a grow killed at any step leaves a pool that
opens with all its data and can be grown again; what cannot be grown is
refused, the file unchanged.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest
from test import support
from test.support.script_helper import assert_python_ok
from test.test_pmem.util import FAST_FLUSH, SIZE, PoolTestCase, pmem
from pmem.__main__ import parse_size

MiB = 1 << 20
GiB = 1 << 30

# What the pools of these tests hold, and how a test proves that a pool
# has grown: 12 blocks of 1 MiB fit in a pool of 32 MiB (18 do), not in
# one of 16 MiB (8 do).
DATA = "{i: str(i) * 3 for i in range(5000)}"
ROOM = 12


def run_python(*args):
    """A new interpreter with fast flushes: its CompletedProcess."""
    env = dict(os.environ, **FAST_FLUSH)
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-X", "faulthandler", *args],
                          env=env, capture_output=True, text=True,
                          timeout=support.LONG_TIMEOUT)


class GrowTestCase(PoolTestCase):

    def make_pool(self, path=None, size=SIZE):
        """A pool of size bytes holding DATA, made by another process."""
        path = path or self.path
        assert_python_ok("-c", textwrap.dedent(f"""
            import pmem
            pool = pmem.open({path!r}, size={size})
            assert pool.size == {size}, pool.size
            pool.ns.d = {DATA}
            """), **FAST_FLUSH)
        return path

    def info(self):
        """python -m pmem info --json of self.path, as a dict."""
        proc = run_python("-m", "pmem", "info", "--json", self.path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        return json.loads(proc.stdout)

    def grow_command(self, path, size):
        """python -m pmem grow PATH SIZE: (exit status, stdout, stderr)."""
        proc = run_python("-m", "pmem", "grow", path, size)
        return proc.returncode, proc.stdout, proc.stderr

    def check_pool(self, path, size):
        """In a new process: the pool opens, is size bytes large, holds
        DATA; whether ROOM blocks of 1 MiB fit in it besides ("room" or
        "full": they are stored, then deleted)."""
        proc = run_python("-c", textwrap.dedent(f"""
            import pmem
            pool = pmem.open({path!r}, create=False)
            assert pool.size == {size}, pool.size
            assert pool.ns.d == {DATA}, len(pool.ns.d)
            try:
                pool.ns.room = [bytes(1 << 20) for _ in range({ROOM})]
            except MemoryError:
                print("full")
            else:
                del pool.ns.room
                print("room")
            """))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        return proc.stdout.strip()


class GrowTests(GrowTestCase):

    def test_full_pool_grown_to_1_GiB_takes_twice_as_much(self):
        # The case: small dict entries until the default pool is
        # full; grown from the shell; the fill goes on well past it.
        if shutil.disk_usage(self.dir).free < 3 * GiB:
            self.skipTest(f"less than 3 GiB free in {self.dir}")
        proc = run_python("-c", textwrap.dedent(f"""
            import pmem
            pool = pmem.open({self.path!r})
            assert pool.size == pmem.DEFAULT_SIZE, pool.size
            pool.ns.d = {{}}
            d = pool.ns.d
            i = 0
            try:
                while True:
                    d[i] = i
                    i += 1
            except MemoryError as exc:
                print(i)
                print(exc)
            """))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        n, message = proc.stdout.splitlines()
        n = int(n)
        self.assertGreater(n, 100_000)
        # The message says how much did not fit, and what to do.
        self.assertRegex(message, rf"pool '{self.path}' is full: "
                                  rf"(\d+) more bytes do not fit")
        self.assertIn("python -m pmem grow PATH SIZE", message)
        need = int(re.search(r"(\d+) more bytes", message).group(1))
        # The full pool opens, and its free space is reported as it is:
        # no block as large as the one that did not fit.
        info = self.info()
        self.assertLess(info["largest_free"], need)
        self.assertLessEqual(info["largest_free"], info["bytes_free"])
        status, out, err = self.grow_command(self.path, "1G")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, f"{self.path}: grown from "
                              f"{pmem.DEFAULT_SIZE:,} to {GiB:,} bytes\n")
        self.assertEqual(os.path.getsize(self.path), GiB)
        info = self.info()
        self.assertGreater(info["largest_free"], need)
        self.assertGreater(info["bytes_free"], GiB - pmem.DEFAULT_SIZE)
        proc = run_python("-c", textwrap.dedent(f"""
            import pmem
            pool = pmem.open({self.path!r}, create=False)
            assert pool.size == {GiB}, pool.size
            d = pool.ns.d
            assert len(d) == {n}, len(d)
            assert all(d[i] == i for i in range({n}))
            for i in range({n}, {2 * n}):
                d[i] = i
            print(len(d))
            """))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(int(proc.stdout), 2 * n)
        proc = run_python("-c", textwrap.dedent(f"""
            import pmem
            d = pmem.open({self.path!r}, create=False).ns.d
            print(len(d), all(d[i] == i for i in range({2 * n})))
            """))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout, f"{2 * n} True\n")

    def test_grow_in_this_process(self):
        self.make_pool()
        self.assertEqual(self.check_pool(self.path, SIZE), "full")
        self.assertEqual(pmem.grow(self.path, 2 * SIZE), (SIZE, 2 * SIZE))
        self.assertEqual(os.path.getsize(self.path), 2 * SIZE)
        # The grow let the pool go: it opens here, and in another process.
        pool = pmem.open(self.path, create=False)
        self.assertEqual(pool.size, 2 * SIZE)
        pool.close()
        self.assertEqual(self.check_pool(self.path, 2 * SIZE), "room")
        # Allocated, not a file with holes.
        st = os.stat(self.path)
        self.assertGreaterEqual(st.st_blocks * 512, 2 * SIZE)

    def test_size_is_rounded_up_to_4096(self):
        self.make_pool()
        self.assertEqual(pmem.grow(self.path, SIZE + 1),
                         (SIZE, SIZE + 4096))
        self.assertEqual(os.path.getsize(self.path), SIZE + 4096)
        self.assertEqual(self.check_pool(self.path, SIZE + 4096), "full")

    def test_the_same_size_changes_nothing(self):
        self.make_pool()
        self.assertEqual(pmem.grow(self.path, SIZE), (SIZE, SIZE))
        status, out, err = self.grow_command(self.path, "16M")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, f"{self.path}: already {SIZE:,} bytes, "
                              f"nothing to do\n")
        self.assertEqual(self.check_pool(self.path, SIZE), "full")

    def test_sizes_of_the_command(self):
        for text, size in [("4096", 4096), ("64K", 64 << 10),
                           ("3M", 3 * MiB), ("1G", GiB), ("1g", GiB),
                           ("2T", 2 << 40)]:
            with self.subTest(text):
                self.assertEqual(parse_size(text), size)
        for text in ["", "G", "0", "0G", "-1M", "1.5G", "1KB", "1 G",
                     "\N{SUPERSCRIPT TWO}"]:
            with self.subTest(text):
                with self.assertRaisesRegex(Exception, "is not a size"):
                    parse_size(text)
        status, out, err = self.grow_command(self.path, "12X")
        self.assertEqual(status, 2)
        self.assertIn("'12X' is not a size", err)

    def test_bad_sizes(self):
        self.make_pool()
        for size, exc in [("1G", TypeError), (1.5 * GiB, TypeError),
                          (0, ValueError), (-GiB, ValueError)]:
            with self.subTest(size=size):
                with self.assertRaises(exc):
                    pmem.grow(self.path, size)
        self.assertEqual(os.path.getsize(self.path), SIZE)


class RefusalTests(GrowTestCase):
    """Each refusal raises, and leaves the file byte for byte as it was."""

    def assertRefused(self, path, regex, exc=pmem.PoolError, size=2 * SIZE):
        with open(path, "rb") as f:
            before = f.read()
        with self.assertRaisesRegex(exc, regex):
            pmem.grow(path, size)
        status, out, err = self.grow_command(path, str(size))
        self.assertEqual((status, out), (1, ""))
        self.assertRegex(err, "^python -m pmem grow: " + regex)
        with open(path, "rb") as f:
            self.assertTrue(f.read() == before, "the file changed")

    def test_pool_open_in_another_process(self):
        self.make_pool()
        holder = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""
                import sys, pmem
                pool = pmem.open({self.path!r}, create=False)
                print("open", flush=True)
                sys.stdin.read()
                print(pool.size)
                """)],
            env=dict(os.environ, **FAST_FLUSH), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(holder.stdout.readline(), "open\n")
            self.assertRefused(self.path, "pool .* is open in another "
                                          "process; a pool has one writer "
                                          "at a time")
        finally:
            out, _ = holder.communicate("", timeout=support.LONG_TIMEOUT)
        self.assertEqual((holder.returncode, out), (0, f"{SIZE}\n"))
        self.assertEqual(self.check_pool(self.path, SIZE), "full")

    def test_pool_open_in_this_process(self):
        self.make_pool()
        # Under another name of the file: the open's real path counts.
        link = os.path.join(self.dir, "link.pool")
        os.symlink(self.path, link)
        pool = pmem.open(self.path, create=False)
        with open(self.path, "rb") as f:
            before = f.read()
        for path in (self.path, link):
            with self.assertRaisesRegex(pmem.PoolError, "is open in this "
                                                        "process; close "
                                                        "it first"):
                pmem.grow(path, 2 * SIZE)
        with open(self.path, "rb") as f:
            self.assertTrue(f.read() == before, "the file changed")
        self.assertFalse(pool.closed)
        pool.ns.after = 1             # still open, and usable
        pool.close()
        self.assertEqual(pmem.grow(link, 2 * SIZE), (SIZE, 2 * SIZE))
        pool = pmem.open(self.path, create=False)
        self.assertEqual((pool.size, pool.ns.after), (2 * SIZE, 1))
        pool.close()

    def test_pool_of_main_in_this_process(self):
        # python -X pmem: the pool holds __main__'s variables; it closes
        # when the interpreter exits, not before.
        self.make_pool()
        proc = run_python("-X", f"pmem={self.path}", "-c", textwrap.dedent(f"""
            def main():
                import pmem
                try:
                    pmem.grow({self.path!r}, {2 * SIZE})
                except pmem.PoolError as exc:
                    print(exc)
            main()
            """))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout, f"pool {self.path!r} holds __main__'s "
                                      f"variables (python -X pmem) in this "
                                      f"process: grow it from another "
                                      f"process once this one has ended\n")
        self.assertEqual(os.path.getsize(self.path), SIZE)

    def test_pool_closed_but_held_in_this_process(self):
        # A closed pool holds neither the file nor its lock: it grows, and
        # what this process holds of it stays as it was.
        self.make_pool()
        pool = pmem.open(self.path, create=False)
        d = pool.ns.d
        pool.close()
        self.assertEqual(pmem.grow(self.path, 2 * SIZE), (SIZE, 2 * SIZE))
        self.assertEqual(len(d), 5000)
        with self.assertRaisesRegex(pmem.PoolError, "which still holds "
                                                    "some of its objects"):
            pmem.open(self.path, create=False)
        del d
        pool = pmem.open(self.path, create=False)
        self.assertEqual(pool.size, 2 * SIZE)
        pool.close()
        self.assertEqual(self.check_pool(self.path, 2 * SIZE), "room")

    def test_smaller_size(self):
        self.make_pool()
        self.assertRefused(self.path, f"pool .* has {SIZE:,} bytes; it "
                                      f"cannot be {SIZE // 2:,}: a pool "
                                      f"does not shrink",
                           size=SIZE // 2)

    def test_foreign_file(self):
        if os.path.exists("/etc/passwd"):
            shutil.copyfile("/etc/passwd", self.path)
        else:
            with open(self.path, "w") as f:
                f.write("root:x:0:0:root:/root:/bin/sh\n")
        self.assertRefused(self.path, "'.*' is not a pmem-python pool: it "
                                      "does not start with a libpmemobj "
                                      "pool header")

    def test_truncated_pool(self):
        self.make_pool()
        os.truncate(self.path, SIZE // 2)
        self.assertRefused(self.path, "pool '.*' is corrupt")

    def test_no_room_on_the_file_system(self):
        # A tmpfs refuses an allocation larger than its room at once (a
        # disk file system could fill itself first).
        shm = "/dev/shm"
        try:
            with open("/proc/mounts") as f:
                tmpfs = any(line.split()[1:3] == [shm, "tmpfs"]
                            for line in f)
        except OSError:
            tmpfs = False
        if not tmpfs:
            self.skipTest(f"{shm} is not a tmpfs")
        tmp = tempfile.mkdtemp(dir=shm)
        self.addCleanup(shutil.rmtree, tmp)
        path = os.path.join(tmp, "big.pool")
        self.make_pool(path)
        too_big = shutil.disk_usage(shm).total + GiB
        with self.assertRaisesRegex(pmem.PoolError,
                                    r"cannot grow pool .* the file system "
                                    r"cannot allocate [\d,]+ more bytes for "
                                    r"it \(No space left on device\); the "
                                    r"pool keeps its size"):
            pmem.grow(path, too_big)
        self.assertEqual(os.path.getsize(path), SIZE)
        self.assertEqual(self.check_pool(path, SIZE), "full")

    def test_missing_file(self):
        # As pmem.open(path, create=False) says it.
        with self.assertRaises(FileNotFoundError):
            pmem.grow(self.path, 2 * SIZE)
        status, out, err = self.grow_command(self.path, "32M")
        self.assertEqual((status, out), (1, ""))
        self.assertIn("No such file or directory", err)
        self.assertFalse(os.path.exists(self.path))

    def test_directory(self):
        with self.assertRaisesRegex(pmem.PoolError, "is not a regular "
                                                    "file"):
            pmem.grow(self.dir, 2 * SIZE)


# A grow killed at one step: SIGKILL right before or right after the
# named call (a function of os), or in the last step's open: the
# interpreter that opens the pool killed with the pool open, and grow
# with it.
KILLED_GROW = """\
import os, signal, sys
import pmem
path, size, name, when = sys.argv[1], int(sys.argv[2]), *sys.argv[3:5]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if name == "open":
    real = pmem._in_new_interpreter
    def killer(what, path):
        if what == "open":
            pmem._IN_NEW_INTERPRETER = (
                "import os, signal, sys, pmem\\n"
                "pool = pmem.open(sys.argv[2], create=False)\\n"
                "os.kill(os.getpid(), signal.SIGKILL)\\n")
            try:
                real(what, path)
            except pmem.PoolError as exc:
                assert "status -9" in str(exc), exc
                die()
        real(what, path)
    pmem._in_new_interpreter = killer
else:
    real = getattr(os, name)
    def killer(*args):
        if when == "before":
            die()
        real(*args)
        die()
    setattr(os, name, killer)
pmem.grow(path, size)
print("not killed")
"""


class KilledGrowTests(GrowTestCase):
    """A grow killed between any two of its steps."""

    def kill_grow(self, path, name, when, size=2 * SIZE):
        proc = run_python("-c", KILLED_GROW, path, str(size), name, when)
        self.assertEqual(proc.returncode, -signal.SIGKILL,
                         proc.stdout + proc.stderr)

    def test_killed_at_each_step(self):
        original = self.make_pool(os.path.join(self.dir, "original.pool"))
        # (the call, kill before or after it, whether the heap has its new
        # size from then on: once the 8 bytes are written, for a process
        # crash; the next open extends the heap)
        cases = [("posix_fallocate", "before", False),
                 ("posix_fallocate", "after", False),
                 ("fsync", "after", False),
                 ("pwrite", "before", False),
                 ("pwrite", "after", True),
                 ("fdatasync", "after", True),
                 ("open", "after", True)]
        for name, when, grown in cases:
            with self.subTest(name=name, when=when):
                path = os.path.join(self.dir, f"{name}-{when}.pool")
                shutil.copyfile(original, path)
                self.kill_grow(path, name, when)
                extended = name != "posix_fallocate" or when == "after"
                self.assertEqual(os.path.getsize(path),
                                 2 * SIZE if extended else SIZE)
                # It opens, with its data; the heap is grown only once its
                # size was written.
                self.assertEqual(self.check_pool(path, os.path.getsize(path)),
                                 "room" if grown else "full")
                # A grow afterwards completes.
                status, out, err = self.grow_command(path, "32M")
                self.assertEqual((status, err), (0, ""))
                self.assertEqual(out, f"{path}: already {2 * SIZE:,} bytes, "
                                      f"nothing to do\n" if grown else
                                      f"{path}: grown from {SIZE:,} to "
                                      f"{2 * SIZE:,} bytes\n")
                self.assertEqual(self.check_pool(path, 2 * SIZE), "room")

    def test_grow_elsewhere_after_a_kill_past_the_extension(self):
        # Killed once the file was extended: the pool is as it was, in a
        # larger file, which does not shrink back.
        self.make_pool()
        self.kill_grow(self.path, "fsync", "after")
        self.assertEqual(os.path.getsize(self.path), 2 * SIZE)
        with self.assertRaisesRegex(pmem.PoolError,
                                    f"has {2 * SIZE:,} bytes; it cannot be "
                                    f"{3 * SIZE // 2:,}"):
            pmem.grow(self.path, 3 * SIZE // 2)
        self.assertEqual(pmem.grow(self.path, 3 * SIZE), (SIZE, 3 * SIZE))
        self.assertEqual(self.check_pool(self.path, 3 * SIZE), "room")


if __name__ == "__main__":
    unittest.main()
