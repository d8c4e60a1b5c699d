"""Helpers of the pool tests: pmem, loaded for fast flushes, and a test
case with a directory of its own.

The pools live in ordinary files.  On those, libpmemobj makes every
flush an msync() (about a millisecond here); PMEM_IS_PMEM_FORCE=1 makes
it flush CPU caches instead, as on real persistent memory.  What a
killed process wrote is in the page cache either way, which is all that
these tests (and the crash tests) rely on; only a power cut tells the two
apart.  libpmemobj reads the variable when it is loaded: it is set here
before _pmem is imported, and passed to every child.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
import unittest
from test.support import import_helper, os_helper
from test.test_pmem import run_in_new_process

FAST_FLUSH = {"PMEM_IS_PMEM_FORCE": "1"}
with os_helper.EnvironmentVarGuard() as env:
    env.update(FAST_FLUSH)
    _pmem = import_helper.import_module("_pmem")
    import pmem

SIZE = 16 << 20


class PoolTestCase(unittest.TestCase):
    """A directory of its own (self.dir) and a pool's path in it
    (self.path); CLASSES is the source of a module of two classes."""

    CLASSES = textwrap.dedent("""
        class Account:
            def __init__(self, owner, balance):
                self.owner = owner
                self.balance = balance

        class Point:
            __slots__ = ("x", "y", "__weakref__")
            def __init__(self, x, y):
                self.x, self.y = x, y
        """)

    def setUp(self):
        self.dir = self.enterContext(os_helper.temp_dir())
        self.path = os.path.join(self.dir, "test.pool")
        self.addCleanup(self.close_pools)

    def close_pools(self):
        """Close the pools that the test opened: each is let go once
        nothing holds its objects (then -R finds no leak)."""
        here = os.path.realpath(self.dir) + os.sep
        for pool in _pmem._pools():
            if (os.path.realpath(pool.path).startswith(here)
                    and pool.depth == 0):
                pool.close()

    def killed_writer(self, source, delays):
        """Run source (dedented) in a new interpreter with fast flushes
        and, once it prints "ready", SIGKILL it after each of delays
        (seconds) in turn: yields after each kill."""
        env = dict(os.environ, **FAST_FLUSH)
        code = textwrap.dedent(source)
        for delay in delays:
            proc = subprocess.Popen([sys.executable, "-c", code], env=env,
                                    stdout=subprocess.PIPE, text=True)
            self.assertEqual(proc.stdout.readline(), "ready\n")
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            yield

    def run_in_new_process(self, code, seed, path=None, hint=None):
        return run_in_new_process(self, code, hash_seed=seed, path=path,
                                  hint=hint)

    def assertRefused(self, path, regex):
        with self.assertRaisesRegex(pmem.PoolError, regex):
            pmem.open(path, create=False)
