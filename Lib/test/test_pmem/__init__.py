"""Tests of pmem-python: the fork's build, its storage managers, pools."""

import os
import subprocess
import sys
import textwrap
from test import support
from test.support import load_package_tests


def load_tests(*args):
    return load_package_tests(os.path.dirname(__file__), *args)


def run_in_new_process(testcase, code, *, hash_seed=None, path=None,
                       hint=None):
    """Run code (dedented) in a new interpreter, with faulthandler, fast
    flushes (PMEM_IS_PMEM_FORCE=1), the given PYTHONHASHSEED, the modules
    of directory path, and hint as PMEM_MMAP_HINT (where pools map); the
    test fails unless it exits with 0 (within support.LONG_TIMEOUT: a
    hang is a failure too).  Its output."""
    env = dict(os.environ, PMEM_IS_PMEM_FORCE="1")
    env.pop("PYTHONPATH", None)
    if hash_seed is not None:
        env["PYTHONHASHSEED"] = str(hash_seed)
    if path is not None:
        env["PYTHONPATH"] = path
    if hint is not None:
        env["PMEM_MMAP_HINT"] = hint
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c",
                           textwrap.dedent(code)],
                          env=env, capture_output=True, text=True,
                          timeout=support.LONG_TIMEOUT)
    testcase.assertEqual(proc.returncode, 0, proc.stderr)
    return proc.stdout
