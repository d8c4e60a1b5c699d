"""Crashes at every persist point: Tools/pmem/crash/persist_points.py, small.

The harness kills a process doing one pool operation right after each of
its persist points in turn (every pmem_drain, pmem_persist, msync...
through which libpmemobj makes something durable; an LD_PRELOAD shim
counts them) and checks that the next process finds the pool whole: the
state from before the operation or the one after it, with nothing leaked
and the accounts' sum kept.  In power-loss mode the shim writes out, at
the point, only what had been flushed and drained (the media), and that
image is checked the same way.

What is proven here, in about a minute:

  - a bank transfer in a `with pool:` block and an insert that grows a
    dict survive a kill at every one of their persist points;
  - a transfer survives a power cut at every one of its persist points;
  - the shim's power-loss model is sound: a transaction made with
    libpmemobj alone (through ctypes, without the pool code) leaves, at
    every persist point, an image holding either all of its old values
    or all of its new ones -- so a failure of the pool's images is the
    pool's, not the shim's; and what a forked child makes durable (the
    checker child of an open recovers the pool, and extends a grown heap,
    before its parent maps it) is in its parent's image.

The full run (every kind of operation, both flushing modes) is the
harness's own: ./python Tools/pmem/crash/persist_points.py --power-loss
"""

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest
from test import support
from test.support import import_helper

import_helper.import_module("_pmem")

# This file is linked into the build tree: the repository is found from
# where the link points.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__)))))
DRIVER = os.path.join(REPO, "Tools", "pmem", "crash", "persist_points.py")
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def setUpModule():
    if not os.path.exists(DRIVER):
        raise unittest.SkipTest(f"no harness at {DRIVER}")
    if CC is None or shutil.which(CC.split()[0]) is None:
        raise unittest.SkipTest("no C compiler (cc) to build the "
                                "persist-point shim")


def load_driver():
    spec = importlib.util.spec_from_file_location("persist_points", DRIVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class HarnessTests(unittest.TestCase):

    def run_driver(self, *args):
        proc = subprocess.run(
            [sys.executable, DRIVER, "--jobs", str(min(os.cpu_count() or 1,
                                                       4)),
             "--timeout", "20", *args],
            capture_output=True, text=True)
        return proc.returncode, proc.stdout + proc.stderr

    def assertSummary(self, out, label, kinds):
        m = re.search(rf"^{label}: (\d+) kinds, (\d+) points, (\d+) "
                      rf"failures$", out, re.MULTILINE)
        self.assertIsNotNone(m, out)
        self.assertEqual(int(m.group(1)), kinds, out)
        # A transaction has a few at least (its log, its commit): none
        # would mean that the shim saw nothing.
        self.assertGreater(int(m.group(2)), 3, out)
        self.assertEqual(int(m.group(3)), 0, out)

    def assertKindsPass(self, kinds, *args,
                        labels=("persist points", "power-loss images")):
        """Run the driver on kinds (comma-separated) with args: each of
        labels sums up every kind, with no failure, and the driver
        exits with 0."""
        rc, out = self.run_driver("--kinds", kinds, *args)
        for label in labels:
            self.assertSummary(out, label, len(kinds.split(",")))
        self.assertEqual(rc, 0, out)

    def test_every_point_of_a_transfer_and_a_dict_resize(self):
        self.assertKindsPass("transfer,dict-resize",
                             labels=("persist points",))

    @support.requires_resource('cpu')     # about 10 seconds
    def test_points_of_an_allocation(self):
        # An atomic allocation killed half-way leaves a zeroed block that
        # nothing reaches: the open frees it without reading it.
        self.assertKindsPass("alloc", "--power-loss",
                             "--limit-per-kind", "40")

    @support.requires_resource('cpu')     # about 10 seconds
    def test_points_of_namespace_bindings(self):
        # python -X pmem: rebindings that one store makes durable (an int
        # rewritten in place, a pointer) and one that takes two (an int
        # that gets more digits, written into a spare block first),
        # killed and cut off at each point.
        self.assertKindsPass("ns-int,ns-static,ns-digits", "--power-loss")

    @support.requires_resource('cpu')     # about 30 seconds
    def test_points_of_a_grow(self):
        # pmem.grow()'s syncs, and the open that extends the heap of a
        # pool whose grow was killed once its heap's size was written:
        # killed and cut off at each point, and grown again after.
        self.assertKindsPass("grow,grow-open", "--power-loss")

    def test_power_loss_at_every_point_of_a_transfer(self):
        self.assertKindsPass("transfer", "--only-power-loss",
                             labels=("power-loss images",))


# A libpmemobj transaction through ctypes: 512 counters of a root object
# change together.  "check" says which state an image holds.
PLAIN_TX = """\
import ctypes, sys
lib = ctypes.CDLL("libpmemobj.so.1")
class OID(ctypes.Structure):
    _fields_ = [("pool", ctypes.c_uint64), ("off", ctypes.c_uint64)]
lib.pmemobj_create.restype = lib.pmemobj_open.restype = ctypes.c_void_p
lib.pmemobj_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                               ctypes.c_size_t, ctypes.c_uint]
lib.pmemobj_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
lib.pmemobj_root.restype = OID
lib.pmemobj_root.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
lib.pmemobj_direct.restype = ctypes.c_void_p
lib.pmemobj_direct.argtypes = [OID]
lib.pmemobj_tx_begin.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_int]
lib.pmemobj_tx_add_range_direct.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
lib.pmemobj_persist.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_size_t]
what, path = sys.argv[1], sys.argv[2].encode()
OLD = [1000] * 512
NEW = [1000 + (1 if i % 2 else -1) for i in range(512)]
if what == "make":
    pop = lib.pmemobj_create(path, b"plain", 16 << 20, 0o600)
else:
    pop = lib.pmemobj_open(path, b"plain")
assert pop, "cannot open"
root = lib.pmemobj_direct(lib.pmemobj_root(pop, 4096))
counters = (ctypes.c_uint64 * 512).from_address(root)
if what == "make":
    counters[:] = OLD
    lib.pmemobj_persist(pop, root, 4096)
elif what == "change":
    assert lib.pmemobj_tx_begin(pop, None, 0) == 0
    assert lib.pmemobj_tx_add_range_direct(root, 4096) == 0
    counters[:] = NEW
    assert lib.pmemobj_tx_commit() == 0
    lib.pmemobj_tx_end()
else:
    print("old" if counters[:] == OLD else
          "new" if counters[:] == NEW else "mixed")
"""


# The transaction of PLAIN_TX run by a forked child of a process that
# maps the pool itself (as the checker child of an open runs libpmemobj's
# recovery, or extends a grown heap, before its parent maps the pool);
# the parent then reaches one persist point of its own, which changes
# nothing.
FORKED_TX = PLAIN_TX.split("what, path =")[0] + """\
import mmap, os
lib.pmemobj_close.argtypes = [ctypes.c_void_p]
path = sys.argv[1].encode()
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, 4096)
pid = os.fork()
if pid == 0:
    pop = lib.pmemobj_open(path, b"plain")
    root = lib.pmemobj_direct(lib.pmemobj_root(pop, 4096))
    counters = (ctypes.c_uint64 * 512).from_address(root)
    assert lib.pmemobj_tx_begin(pop, None, 0) == 0
    assert lib.pmemobj_tx_add_range_direct(root, 4096) == 0
    counters[:] = [1000 + (1 if i % 2 else -1) for i in range(512)]
    assert lib.pmemobj_tx_commit() == 0
    lib.pmemobj_tx_end()
    lib.pmemobj_close(pop)
    os._exit(0)
assert os.waitpid(pid, 0)[1] == 0
header = ctypes.addressof(ctypes.c_char.from_buffer(m))
ctypes.CDLL(None).pmem_persist(ctypes.c_void_p(header), ctypes.c_size_t(8))
"""


class ShimModelTests(unittest.TestCase):

    def setUp(self):
        try:
            self.shim = load_driver().build_shim()
        except SystemExit as exc:
            self.skipTest(f"cannot build the shim: {exc}")
        self.dir = tempfile.mkdtemp(prefix="persist-shim-",
                                    dir="/dev/shm" if os.path.isdir(
                                        "/dev/shm") else None)
        self.addCleanup(shutil.rmtree, self.dir)
        self.script = os.path.join(self.dir, "plain_tx.py")
        with open(self.script, "w") as f:
            f.write(PLAIN_TX)

    def run_plain(self, what, path, **env):
        full = {k: v for k, v in os.environ.items()
                if not k.startswith("PERSISTSHIM_") and k != "LD_PRELOAD"}
        full.update(PMEM_IS_PMEM_FORCE="1", **env)
        return subprocess.run([sys.executable, self.script, what, path],
                              env=full, capture_output=True, text=True)

    def test_images_of_a_libpmemobj_transaction_are_whole(self):
        base = os.path.join(self.dir, "base")
        self.assertEqual(self.run_plain("make", base).returncode, 0)
        pool, image = (os.path.join(self.dir, name)
                       for name in ("pool", "image"))
        count = os.path.join(self.dir, "count")
        shim = {"LD_PRELOAD": self.shim, "PERSISTSHIM_POOL": pool}
        shutil.copyfile(base, pool)
        proc = self.run_plain("change", pool, PERSISTSHIM_COUNT=count,
                              **shim)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(count) as f:
            n = int(f.read())
        self.assertGreater(n, 5)
        seen = []
        for k in range(1, n + 1):
            shutil.copyfile(base, pool)
            proc = self.run_plain("change", pool, PERSISTSHIM_KILL_AT=str(k),
                                  PERSISTSHIM_IMAGE=image, **shim)
            self.assertEqual(proc.returncode, -signal.SIGKILL, proc.stderr)
            os.replace(image, pool)
            proc = self.run_plain("check", pool)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            seen.append(proc.stdout.strip())
        # Old until the commit's last point, new from it on.
        self.assertNotIn("mixed", seen)
        self.assertEqual(seen[0], "old")
        self.assertEqual(seen[-1], "new")
        self.assertEqual(seen, sorted(seen, key=["old", "new"].index))

    def test_what_a_forked_child_makes_durable_is_in_the_image(self):
        base = os.path.join(self.dir, "base")
        self.assertEqual(self.run_plain("make", base).returncode, 0)
        pool, image = (os.path.join(self.dir, name)
                       for name in ("pool", "image"))
        script = os.path.join(self.dir, "forked_tx.py")
        with open(script, "w") as f:
            f.write(FORKED_TX)
        shutil.copyfile(base, pool)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PERSISTSHIM_") and k != "LD_PRELOAD"}
        env.update(PMEM_IS_PMEM_FORCE="1", LD_PRELOAD=self.shim,
                   PERSISTSHIM_POOL=pool, PERSISTSHIM_KILL_AT="1",
                   PERSISTSHIM_IMAGE=image)
        proc = subprocess.run([sys.executable, script, pool], env=env,
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, -signal.SIGKILL, proc.stderr)
        os.replace(image, pool)
        proc = self.run_plain("check", pool)
        self.assertEqual((proc.returncode, proc.stdout), (0, "new\n"),
                         proc.stderr)


if __name__ == "__main__":
    unittest.main()
