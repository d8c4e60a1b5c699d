"""The lifecycle of a pool file beyond one process's open: copies of it.

A raw copy of a pool (cp) opened beside its original is refused with a
message that says what it is and what to do.  Each scenario runs in a
new process, as a program would.
"""

import os
import subprocess
import sys
import textwrap
import unittest
from test import support
from test.support import os_helper
from test.test_pmem.util import FAST_FLUSH, SIZE


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


if __name__ == "__main__":
    unittest.main()
