"""The crash harnesses of Tools/pmem/crash, with small counts.

soak.py kills a workload at random instants (during pmem.open() too) and
checks that the pool holds exactly what committed (also with
durability="process"); open_kills.py kills opens of a big pool;
namespace_kills.py does the same to a program run with python -X pmem;
fuzz.py opens corrupt
copies of a pool, which must open or raise pmem.PoolError.  Here each
runs a few trials with a fixed seed, as a subprocess; run them by hand
with thousands (``./python Tools/pmem/crash/soak.py --trials 2000``).

The harnesses are found from this file's real path: in the build tree
it is a link to the repository's, whose root holds Tools/.
"""

import os
import re
import subprocess
import sys
import unittest
from test import support
from test.support import import_helper, os_helper

with os_helper.EnvironmentVarGuard() as env:
    env["PMEM_IS_PMEM_FORCE"] = "1"
    import_helper.import_module("_pmem")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__)))))
CRASH = os.path.join(ROOT, "Tools", "pmem", "crash")


class CrashHarnessTests(unittest.TestCase):

    def run_harness(self, name, *args):
        script = os.path.join(CRASH, name)
        if not os.path.exists(script):
            self.skipTest(f"{script} not found")
        proc = subprocess.run([sys.executable, script, *args],
                              capture_output=True, text=True, timeout=300)
        output = proc.stdout + proc.stderr
        self.assertEqual(proc.returncode, 0, output)
        return proc.stdout.splitlines()[-1]

    def soak(self, seed, *options):
        with os_helper.temp_dir() as tmp:
            last = self.run_harness("soak.py", "--trials", "40", "--seed",
                                    str(seed), "--quiet", "--dir", tmp,
                                    *options)
        self.assertRegex(last, r"^soak: 40 trials, \d+ kills during open, "
                               r"0 invariant failures$")

    def test_soak(self):
        self.soak(20261126)

    def test_soak_process_durability(self):
        # The same with pools that flush nothing: kills only.
        self.soak(20261205, "--durability", "process")

    def test_open_kills(self):
        with os_helper.temp_dir() as tmp:
            last = self.run_harness("open_kills.py", "--n", "20000",
                                    "--trials", "4", "--seed", "20261205",
                                    "--quiet", "--dir", tmp)
        self.assertRegex(last, r"^open_kills: 4 trials, \d+ kills during "
                               r"open, 0 failures$")

    def namespace_kills(self, mode):
        with os_helper.temp_dir() as tmp:
            last = self.run_harness("namespace_kills.py", "--mode", mode,
                                    "--trials", "8", "--seed", "20261203",
                                    "--quiet", "--dir", tmp)
        self.assertRegex(last, rf"^namespace_kills: {mode}: 8 trials, "
                               rf"\d+ kills during start-up, 0 failures$")

    def test_namespace_kills_tx(self):
        self.namespace_kills("tx")

    def test_namespace_kills_stmt(self):
        self.namespace_kills("stmt")

    @support.requires_resource('cpu')     # about 20 seconds
    def test_fuzz(self):
        with os_helper.temp_dir() as failures:
            last = self.run_harness("fuzz.py", "--files", "40",
                                    "--seed", "20261126", "--quiet",
                                    "--failures", failures,
                                    "--timeout", "10", "--no-gdb")
        match = re.fullmatch(r"fuzz: 40 files, opened (\d+), refused (\d+) "
                             r"\(PoolError\), 0 failures", last)
        self.assertIsNotNone(match, last)
        self.assertEqual(sum(map(int, match.groups())), 40)


if __name__ == "__main__":
    unittest.main()
