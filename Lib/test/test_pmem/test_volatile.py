"""Volatile metadata of pool objects is each process's own.

What the interpreter keeps in an object for its own bookkeeping (the
reference count, the collector's links, hash caches, a str's UTF-8 and
wchar_t forms, its interning) is never logged by a pool, and is made
fresh when a pool is opened.  Interning is the sharpest case: the
interned dict of a process points to the interned strs, and a str marked
interned that the dict does not hold breaks the dict when it dies.
"""

import textwrap
import unittest
from test.support import import_helper, os_helper
from test.test_pmem import run_in_new_process

import_helper.import_module("_pmem")

# The state word of a compact str: after ob_refcnt, ob_type, length and
# hash (64-bit builds); its two low bits say how it is interned.
SETUP = """
import ctypes, os, signal, sys
import pmem

def interned_bits(s):
    return ctypes.c_uint32.from_address(id(s) + 32).value & 3

class Plain:
    pass
"""


class InternTests(unittest.TestCase):

    def setUp(self):
        self.path = self.enterContext(os_helper.temp_dir()) + "/interned.pool"

    def run_code(self, code):
        code = textwrap.dedent(code).replace("PATH", repr(self.path))
        return run_in_new_process(self, SETUP + code)

    def test_a_pool_str_is_interned_as_a_copy(self):
        # A name looked up with a str of the pool (setattr interns it) is
        # interned as a str of this process; the pool's str is untouched.
        out = self.run_code("""
            pool = pmem.open(PATH)
            ns = pool.namespace()
            with pool:
                ns["name"] = "".join(["zq", "xattr"])
            name = ns["name"]
            obj = Plain()
            setattr(obj, name, 1)
            interned = sys.intern("".join(["zq", "xattr"]))
            print(interned is name, pmem.storage_of(interned) is None,
                  interned_bits(name), getattr(obj, interned))
        """)
        self.assertEqual(out.split(), ["False", "True", "0", "1"])

    def test_interning_left_by_a_killed_process_is_forgotten(self):
        # A process that was killed never cleared what it interned.  The
        # mark is written into the pool's str directly, as an earlier
        # build's setattr() did; the next process forgets it on open, so
        # the str's death leaves the interned dict alone.
        self.run_code("""
            import subprocess
            code = '''if 1:
                import ctypes, os, signal, pmem
                pool = pmem.open(%r)
                ns = pool.namespace()
                with pool:
                    ns["name"] = "".join(["zq", "xkilled"])
                word = ctypes.c_uint32.from_address(id(ns["name"]) + 32)
                word.value |= 1                 # SSTATE_INTERNED_MORTAL
                os.kill(os.getpid(), signal.SIGKILL)
            ''' % PATH
            proc = subprocess.run([sys.executable, "-c", code])
            assert proc.returncode == -signal.SIGKILL, proc.returncode
        """)
        out = self.run_code("""
            import gc
            pool = pmem.open(PATH)
            ns = pool.namespace()
            ours = sys.intern("".join(["zq", "xkilled"]))
            print(interned_bits(ns["name"]), ns["name"] is ours)
            with pool:
                del ns["name"]
            gc.collect()
            print(sys.intern("".join(["zq", "xkilled"])) is ours)
            del ours
            again = sys.intern("".join(["zq", "xkilled"]))
            print(again == "zqxkilled")
        """)
        self.assertEqual(out.split(), ["0", "False", "True", "True"])


if __name__ == "__main__":
    unittest.main()
