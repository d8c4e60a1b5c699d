"""python -m pmem: the tools read a pool without changing it, and tell
the truth about it.

info, check and dump open a private copy of the pool (the open repairs
and moves what it must in the copy): the file is byte-identical
afterwards, even after an open that would have had work to do.  dump
shows one name, to a depth, as JSON; piped into head, it ends quietly.
A pool open in another process is refused.
"""

import hashlib
import os
import subprocess
import sys
import textwrap
import unittest
from test.support import os_helper
from test.support.script_helper import assert_python_ok
from test.test_pmem.util import FAST_FLUSH, SIZE, PoolTestCase

ENV = dict(os.environ, **FAST_FLUSH)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class ToolTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = cls.enterClassContext(os_helper.temp_dir())
        cls.path = os.path.join(cls.dir, "tools.pool")
        # Left with garbage, and mapped at another address than the one
        # the tools will map it at: an open has work to do.
        assert_python_ok("-c", textwrap.dedent(f"""
            import pmem
            pool = pmem.open({cls.path!r}, size=16 << 20)
            pool.ns.rows = [{{"id": i, "tags": {{"a", "b"}}, "pt": (i, 2.5)}}
                            for i in range(2000)]
            pool.ns.count = 2000
            pool.ns.name = "caf\\xe9"
            pool.ns.blob = b"\\x00\\x01"
            pool.ns.garbage = [[i] for i in range(100)]
            del pool.ns.garbage
            import collections, decimal, re
            pool.ns.kinds = [re.IGNORECASE, collections.OrderedDict, len,
                             decimal.Decimal("1.5"),
                             collections.Counter("aab"),
                             collections.OrderedDict(b=1, a=[2]),
                             collections.deque([(1, 2), "x"], maxlen=5)]
            """), PMEM_MMAP_HINT="0x610000000000", **FAST_FLUSH)

    def cli(self, *args):
        return subprocess.run([sys.executable, "-m", "pmem", *args],
                              env=ENV, capture_output=True, text=True)

    def test_tools_do_not_change_the_file(self):
        before = digest(self.path)
        for args in (("info",), ("check",), ("dump",), ("info", "--json"),
                     ("dump", "--json")):
            with self.subTest(args=args):
                proc = self.cli(args[0], self.path, *args[1:])
                self.assertEqual(proc.returncode, 0, proc.stderr)
                self.assertEqual(digest(self.path), before)

    def test_check(self):
        proc = self.cli("check", self.path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertRegex(proc.stdout, rf"^{self.path}: ok, [\d,]+ objects "
                                      rf"read\n$")

    def test_progress(self):
        # The long passes say how far they are, on stderr, when asked
        # (a terminal asks by default; a pipe does not).  The pool has
        # about 10,000 objects: a line every 65536 items and at each
        # step's end.
        proc = self.cli("--progress", "check", self.path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        # (text mode reads each "\r" as a new line)
        lines = [line.strip() for line in proc.stderr.splitlines()]
        for step in ("types", "pointers", "hash tables"):
            self.assertTrue(any(line.startswith(f"{step}: ") and
                                line.endswith("(100%)") for line in lines),
                            (step, proc.stderr))
        self.assertRegex(proc.stdout, rf"^{self.path}: ok, ")
        for args in (("check",), ("--no-progress", "check")):
            with self.subTest(args=args):
                proc = self.cli(*args, self.path)
                self.assertEqual(proc.stderr, "")

    def test_dump_one_name_to_a_depth(self):
        self.assertEqual(self.cli("dump", self.path, "count").stdout,
                         "2000\n")
        self.assertEqual(self.cli("dump", self.path, "name").stdout,
                         "'caf\xe9'\n")
        out = self.cli("dump", self.path, "rows", "--depth", "1").stdout
        self.assertTrue(out.startswith("[{...},\n {...},"), out[:50])
        proc = self.cli("dump", self.path, "nothing")
        self.assertEqual(proc.returncode, 1)
        self.assertIn("no name 'nothing'", proc.stderr)

    def test_json(self):
        import json
        info = json.loads(self.cli("info", self.path, "--json").stdout)
        self.assertEqual(info["path"], self.path)
        self.assertEqual(info["names"], ["blob", "count", "kinds", "name",
                                         "rows"])
        self.assertGreater(info["objects"], 2000)
        rows = json.loads(self.cli("dump", self.path, "rows",
                                   "--json").stdout)
        self.assertEqual(rows[7], {"id": 7, "tags": ["a", "b"],
                                   "pt": [7, 2.5]})
        whole = json.loads(self.cli("dump", self.path, "--json").stdout)
        self.assertEqual(whole["blob"], "b'\\x00\\x01'")
        # What a pool refers to, by its name; a Counter and an
        # OrderedDict as the dicts they are, a deque as a list.
        self.assertEqual(whole["kinds"], [
            {"__reference__": "re:RegexFlag.IGNORECASE"},
            {"__reference__": "collections:OrderedDict"},
            {"__reference__": "builtins:len"}, "Decimal('1.5')",
            {"a": 2, "b": 1}, {"b": 1, "a": [2]}, [[1, 2], "x"]])
        self.assertEqual(list(whole["kinds"][5]), ["b", "a"])

    def test_dump_into_head_ends_quietly(self):
        proc = subprocess.run(
            f"{sys.executable} -m pmem dump {self.path} | head -1",
            shell=True, env=ENV, capture_output=True, text=True)
        self.assertEqual(proc.stdout.count("\n"), 1, proc.stdout)
        self.assertEqual(proc.stderr, "")

    def test_pool_open_elsewhere_is_refused(self):
        holder = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""
                import pmem, sys
                pool = pmem.open({self.path!r})
                print("open", flush=True)
                sys.stdin.read()
                """)], env=ENV, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(holder.stdout.readline(), "open\n")
            proc = self.cli("info", self.path)
            self.assertEqual(proc.returncode, 1)
            self.assertIn("open in another process", proc.stderr)
        finally:
            holder.communicate("")


class CollectTests(PoolTestCase):

    def test_gc(self):
        # python -m pmem gc collects in place (the open itself frees what
        # a crash left: the count is what the collection found then).
        assert_python_ok("-c", textwrap.dedent(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.kept = [1, 2]
            """), **FAST_FLUSH)
        proc = subprocess.run([sys.executable, "-m", "pmem", "gc",
                               self.path], env=ENV, capture_output=True,
                              text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertRegex(proc.stdout, rf"^{self.path}: [\d,]+ unreachable "
                                      rf"objects freed\n$")
        proc = subprocess.run([sys.executable, "-m", "pmem", "gc",
                               os.path.join(self.dir, "missing.pool")],
                              env=ENV, capture_output=True, text=True)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("python -m pmem gc: ", proc.stderr)


class CommandLineTests(PoolTestCase):
    """info, dump and check of a small pool, and check of a file that
    is not a pool."""

    def test_command_line(self):
        self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r}, size={SIZE})
            pool.ns.accounts = {{"alice": 1.5}}
            """, seed=10)
        env = dict(os.environ, **FAST_FLUSH)
        def cli(*args):
            return subprocess.run([sys.executable, "-m", "pmem", *args],
                                  env=env, capture_output=True, text=True)
        info = cli("info", self.path)
        self.assertEqual(info.returncode, 0, info.stderr)
        self.assertIn("names:     accounts", info.stdout)
        self.assertRegex(info.stdout, r"dict +2 ")   # and the namespace
        self.assertEqual(cli("dump", self.path).stdout,
                         "{'accounts': {'alice': 1.5}}\n")
        self.assertIn(": ok, 5 objects", cli("check", self.path).stdout)
        foreign = os.path.join(self.dir, "foreign")
        with open(foreign, "w") as f:
            f.write("x" * 100)
        bad = cli("check", foreign)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("not ok", bad.stdout)
        self.assertIn("not a pmem-python pool", bad.stdout)
        self.assertNotIn(".pool", bad.stdout)      # names the pool, not
                                                   # the copy it read


if __name__ == "__main__":
    unittest.main()
