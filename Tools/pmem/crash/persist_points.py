"""Crash a pool operation at every one of its persist points.

    ./python Tools/pmem/crash/persist_points.py [--kinds K,...]
        [--power-loss | --only-power-loss] [--limit-per-kind N]
        [--flush force|msync|both] [--when after|before|both] [--jobs N]

The ns-* kinds are statements of a program run as python -X
pmem=POOL (PYTHONPMEM): the rebindings of __main__'s variables, among
them those that one atomic store makes durable.  The grow kinds are
pmem.grow() (its points are the syncs of the file: its check of the pool
and its open run in other interpreters) and the open that finishes a
grow killed once the heap's new size was written.

What is proven.  For each kind of operation below, and for every persist
point k of it (every call through which libpmemobj makes something
durable: a drain, a persist, an msync; see persistshim.c for the exact
list), a process doing the operation is killed with SIGKILL right after
point k, and a new process then finds the pool:

  - opening without error (libpmemobj's recovery, then the open pass),
  - holding exactly the state from before the operation or the state
    after it (every name of the root namespace compared, deep, in order),
  - with exactly the objects of that state (pool.stats() after the open,
    which frees what a crash leaked) and nothing left for pool.gc(),
  - keeping its invariants (the accounts always sum to the same money),
  - usable (one more transaction commits),
  - and fit for what a kind says must follow (grow: grow() run again on
    the pool, then more stored in it than the old size holds).

Random kills (test_kills's test_killed_in_transactions) only sample the
instants of an operation; between two persist points nothing new becomes
durable, so a kill after each point covers every state a process crash
can leave, as far as the points go.  After SIGKILL, though, everything
the process stored is still in the page cache.  --power-loss checks the
harder case as well: the shim keeps a shadow of the media (only cache
lines flushed and then drained, or pages msync'ed, reach it) and writes
it out at point k; that image, copied under the pool's name, is what a
power cut at point k leaves when no line reached the media unasked.

How.  The LD_PRELOAD shim Tools/pmem/crash/persistshim.c is compiled
(cc -O2 -shared -fPIC ... -ldl) into build/crash/ of the repository and
reused while up to date.  Per kind, the pool is set up by plain child
processes (no shim), the operation is run once under the shim to count
its points N (only the operation is counted: the child arms the shim
around it through ctypes), then once per k = 1..N on a fresh copy of the
set-up pool, each followed by a checking process without the shim.  The
reference states come from running the checker on the set-up pool and on
a copy on which the operation ran to its end.  Children share one hash
seed per role and one map address, so that N is the same in every run
(a run that ends before its point k is reported).

Flushing.  By default the children run with PMEM_IS_PMEM_FORCE=1: the
pool file is treated as persistent memory and libpmemobj flushes cache
lines (pmem_flush) and drains (pmem_drain).  That gives the most points
and the finest power-loss model (64-byte lines, a flush without a drain
is not enough).  --flush msync runs without it, as on an ordinary disk
file: every flush is then an msync() of whole pages; --flush both runs
both.

Failures are kept under /tmp/persist-failures/ (a few per kind and
mode): the set-up pool, the crashed pool or image as it was before it
was checked, the scripts, a description with the point's call stack, and
repro.sh.  The exit status is 1 if anything failed.
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SHIM_SOURCE = os.path.join(HERE, "persistshim.c")
BUILD_DIR = os.path.join(REPO, "build", "crash")
FAILURES = "/tmp/persist-failures"
KEEP_PER_KIND = 5                 # failures kept on disk, per kind and mode

SETUP_SEED = "11"                 # PYTHONHASHSEED of each role
OP_SEED = "22"
CHECK_SEED = "33"
MOVED_HINT = "0x680000000000"     # pmem maps at 0x600000000000 by default


# --- the child programs ------------------------------------------------------

# Every operation runs with this in front: the shim's switches, found in
# the process (a run without the shim gets no-ops), and the pool's path.
OP_PRELUDE = """\
import ctypes, os, signal, sys
try:
    _shim = ctypes.CDLL(None)
    start, stop = _shim.persist_shim_start, _shim.persist_shim_stop
except AttributeError:
    start = stop = lambda: None
import pmem
path, SIZE = sys.argv[1], int(sys.argv[2])
"""

# The prelude of an operation of python -X pmem=POOL (PYTHONPMEM): its
# names are dunder names, which stay per run, so that only the operation
# changes the pool's namespace.
NAMESPACE_PRELUDE = """\
import ctypes as __ctypes__
try:
    __shim__ = __ctypes__.CDLL(None)
    __start__ = __shim__.persist_shim_start
    __stop__ = __shim__.persist_shim_stop
except AttributeError:
    __start__ = __stop__ = lambda: None
"""

# The variables of a program under -X pmem: numbers and strs of the pool
# that only the namespace refers to, which a rebinding rewrites in place.
NAMESPACE_DATA = """\
pool = pmem.open(path, size=SIZE)
ns = pool.ns
ns.n = 10 ** 6
ns.f = 1.5
ns.s = "abc"
ns.z = 3
ns.accounts = {f"acct{i}": 100.0 for i in range(20)}
"""

# Statements of -X pmem whose bindings go into the journal of stores,
# around a transaction: ns_journal(k) runs the first k parts, whose
# states are all right.
NS_JOURNAL_PARTS = ("""\
n += 1
s = "abd"
z = 4
f = 2.5
""", """\
with pmem.transaction():
    accounts["acct1"] -= 7.5
    accounts["acct2"] += 7.5
""", """\
n += 1
z = 5
""", """\
pmem.current_pool().ns.__dict__    # the journal applied
""")


def ns_journal(k):
    return "__start__()\n" + "".join(NS_JOURNAL_PARTS[:k]) + "__stop__()\n"


# The pool contents most kinds start from.  The accounts sum to 2000.0.
DATA = """\
pool = pmem.open(path, size=SIZE)
ns = pool.ns
ns.accounts = {f"acct{i}": 100.0 for i in range(20)}
ns.log = [("entry", i, i + 0.5) for i in range(50)]
ns.small = {"a": 1}
ns.tags = {"a", "b", "c", 1, 2, (3, 4)}
ns.frozen = frozenset({"x", "y"})
ns.blob = bytearray(b"abc" * 100)
ns.big = 2 ** 100
ns.text = "h\\u00e9llo w\\u00f6rld"
ns.none = None
"""

# Values of the standard library: copies (datetime, Decimal, Fraction, a
# named tuple), moves (Counter, defaultdict, OrderedDict, deque), references
# (enum members, timezone.utc, a class), recorded in the pool's type
# table and its table of references.
STDLIB = """\
import collections, datetime, decimal, fractions, http, re, urllib.parse
import uuid
STDLIB = lambda: {
    "when": datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.timezone.utc),
    "span": datetime.timedelta(days=2, seconds=5),
    "price": decimal.Decimal("-12345678901234567890123456789012345.6789"),
    "ratio": fractions.Fraction(1, 3),
    "id": uuid.UUID(int=5),
    "range": range(3, 90, 7),
    "status": http.HTTPStatus.OK,
    "flags": re.IGNORECASE | re.MULTILINE,
    "url": urllib.parse.urlsplit("https://example.org/a?b"),
    "count": collections.Counter("hello"),
    "index": collections.defaultdict(list, a=[1]),
    "order": collections.OrderedDict((f"k{i}", [i]) for i in range(12)),
    "queue": collections.deque((i, [i]) for i in range(150)),
    "kind": collections.OrderedDict,
}
"""
STDLIB_DATA = STDLIB + """\
pool = pmem.open(path)
pool.ns.stdlib = STDLIB()
"""

# A dict or a list filled up to the last entry before its table grows:
# found by growing a DRAM one the same way (the code is upstream's).
DICT_FULL = """\
def entries_before_resize(at_least):
    probe, size = {}, None
    for i in range(10000):
        if i >= at_least and sys.getsizeof(probe) != size and size:
            return i - 1
        size = sys.getsizeof(probe)
        probe[f"k{i}"] = i
n = entries_before_resize(20)
pool = pmem.open(path, size=SIZE)
pool.ns.d = {}
for i in range(n):
    pool.ns.d[f"k{i}"] = i
pool.ns.n = n
"""

LIST_FULL = """\
def items_before_growth(at_least):
    probe, size = [], None
    for i in range(10000):
        if i >= at_least and sys.getsizeof(probe) != size and size:
            return i - 1
        size = sys.getsizeof(probe)
        probe.append(i)
n = items_before_growth(16)
pool = pmem.open(path, size=SIZE)
pool.ns.l = []
for i in range(n):
    pool.ns.l.append(f"item{i}")
"""

# The checking process: opens the pool, prints what it holds as JSON.
CHECK = """\
import json, os, sys
import pmem
path, SIZE = sys.argv[1], int(sys.argv[2])

def canon(x):
    t = type(x)
    if t is dict:
        return ["dict", [[canon(k), canon(v)] for k, v in x.items()]]
    if t in (list, tuple):
        return [t.__name__, [canon(v) for v in x]]
    if t in (set, frozenset):
        return [t.__name__, sorted(json.dumps(canon(v)) for v in x)]
    return [t.__name__, repr(x)]

if not os.path.exists(path):
    # A creation that stopped half-way: nothing under the name, and what
    # it left must not stop the next creation.
    pool = pmem.open(path, size=SIZE)
    assert vars(pool.ns) == {}, vars(pool.ns)
    print(json.dumps({"state": "absent", "objects": None, "gc": 0}))
    sys.exit(0)
pool = pmem.open(path, create=False)
ns = pool.ns
state = canon(vars(ns))
# The pool's records of classes and references only grow (an undo puts
# back what it took out of them; PyDict_SetItem() copies a value in by
# one transaction and inserts it by the next), and may keep an entry
# that a crash left unused: not counted.
stats = pool.stats()
objects = stats["objects"] - stats["records"]
collected = pool.gc()
if hasattr(ns, "accounts"):
    money = sum(ns.accounts.values())
    assert money == 2000.0, f"the accounts sum to {money}"
ns.probe_after_crash = [1.5, "probe"]          # usable: one more transaction
assert ns.probe_after_crash == [1.5, "probe"]
print(json.dumps({"state": state, "objects": objects, "gc": collected}))
"""


class Kind:
    """One kind of operation: how its pool is set up, the operation (run
    under the shim, which it arms around the part that is counted), and
    the environment of the operation's process."""

    def __init__(self, name, setup, op, env=None, doc="", namespace=False,
                 then=None, prefixes=()):
        self.name = name
        self.setup = setup        # [(code, expected return code)]
        self.op = op
        self.env = env or {}
        self.doc = doc
        # The operation is a statement of __main__ under -X pmem=POOL.
        self.namespace = namespace
        # Run on the pool once it has checked, in a new process: what
        # must work on every state the operation can leave.
        self.then = then
        # Operations that stop part of the way (a program's first
        # statements): their states are right too.
        self.prefixes = prefixes


KINDS = [
    Kind("create", [], """\
start()
pool = pmem.open(path, size=SIZE)
stop()
""", doc="pmem.open() of a new pool: created under a temporary name, "
          "renamed, opened"),
    Kind("open", [(DATA, 0)], """\
start()
pool = pmem.open(path)
stop()
""", doc="a plain open (same address, another binary layout and hash "
         "seed: types, statics, rehash)"),
    Kind("open-moved", [(DATA, 0)], """\
start()
pool = pmem.open(path)
stop()
assert pool.base == int(os.environ["PMEM_MMAP_HINT"], 16), hex(pool.base)
""", env={"PMEM_MMAP_HINT": MOVED_HINT},
         doc="an open at another address: every pointer relocated"),
    Kind("open-recovery", [(DATA, 0), ("""\
pool = pmem.open(path)
ns = pool.ns
with pool:
    for i in range(20):
        ns.accounts[f"acct{i}"] -= 1.0
    ns.log.append(("pending", [1, 2]))
    ns.extra = {"k": [1, 2, 3]}
    del ns.tags
    os.kill(os.getpid(), signal.SIGKILL)
""", -signal.SIGKILL)], """\
start()
pool = pmem.open(path)
stop()
""", doc="the open of a pool whose last process was killed inside a "
         "transaction (undo log replayed, leaked objects freed)"),
    Kind("implicit-commit", [(DATA, 0)], """\
pool = pmem.open(path)
small = pool.ns.small
start()
small["b"] = [2.5, "two"]
stop()
""", doc='one d[k] = v, its own transaction'),
    Kind("transfer", [(DATA, 0)], """\
pool = pmem.open(path)
accounts = pool.ns.accounts
start()
with pool:
    accounts["acct1"] -= 7.5
    accounts["acct2"] += 7.5
stop()
""", doc="a `with pool:` bank transfer, one explicit transaction"),
    Kind("dict-resize", [(DICT_FULL, 0)], """\
pool = pmem.open(path)
d = pool.ns.d
n = pool.ns.n
size = sys.getsizeof(d)
start()
d[f"k{n}"] = n
stop()
assert sys.getsizeof(d) > size, "the dict did not grow"
""", doc="an insert that grows a dict's table"),
    Kind("list-growth", [(LIST_FULL, 0)], """\
pool = pmem.open(path)
l = pool.ns.l
size = sys.getsizeof(l)
start()
l.append("grown")
stop()
assert sys.getsizeof(l) > size, "the list did not grow"
""", doc="an append that reallocates a list's items"),
    Kind("alloc", [(DATA, 0)], """\
pool = pmem.open(path)
ns = pool.ns
start()
ns.new = {"blob": b"x" * 50000, "items": [f"s{i}" for i in range(30)],
          "nested": [[i, i + 0.5] for i in range(10)]}
stop()
""", doc="a structure of 43 objects, one of 50 kB, moved into the pool"),
    Kind("free", [(DATA, 0), ("""\
pool = pmem.open(path)
pool.ns.doomed = {"blob": b"y" * 50000,
                  "items": [f"t{i}" for i in range(30)],
                  "nested": [[i, i + 0.5] for i in range(10)]}
""", 0)], """\
pool = pmem.open(path)
ns = pool.ns
start()
del ns.doomed
stop()
""", doc="del of a big structure: all of it freed by one commit"),
    Kind("free-many", [(DATA, 0), ("""\
pool = pmem.open(path)
pool.ns.doomed = [f"t{i}" for i in range(5000)]
""", 0)], """\
pool = pmem.open(path)
ns = pool.ns
start()
del ns.doomed
stop()
""", doc="del of more objects than a commit's log of frees holds: "
         "freed one by one after the commit (many points: use "
         "--limit-per-kind)"),
    Kind("abort", [(DATA, 0)], """\
pool = pmem.open(path)
ns = pool.ns
start()
try:
    with pool:
        ns.accounts["acct1"] -= 5.0
        ns.accounts["new"] = 5.0
        ns.log.append(("aborted", [1]))
        del ns.tags
        ns.extra = [1.5, "x"]
        raise ZeroDivisionError
except ZeroDivisionError:
    pass
stop()
""", doc="a `with pool:` block that raises: rolled back"),
    Kind("ns-int", [(NAMESPACE_DATA, 0)], """\
__start__()
n += 1
pmem.current_pool().ns.__dict__    # the journal applied
__stop__()
""", namespace=True, doc="-X pmem: n += 1, the pool's int rewritten in "
                        "place by one store"),
    Kind("ns-str", [(NAMESPACE_DATA, 0)], """\
__start__()
s = "abd"
pmem.current_pool().ns.__dict__    # the journal applied
__stop__()
""", namespace=True, doc="-X pmem: a short str rewritten in place by one "
                        "store"),
    Kind("ns-static", [(NAMESPACE_DATA, 0)], """\
__start__()
f = None
pmem.current_pool().ns.__dict__    # the journal applied
__stop__()
""", namespace=True, doc="-X pmem: a binding to a static object, one "
                        "pointer of the pool's namespace"),
    Kind("ns-journal", [(NAMESPACE_DATA, 0)], ns_journal(4),
         namespace=True, prefixes=(ns_journal(1), ns_journal(2),
                                   ns_journal(3)),
         doc="-X pmem: bindings in the journal, a transaction, more "
             "bindings, the journal applied: a prefix of the statements"),
    Kind("ns-digits", [(NAMESPACE_DATA, 0)], """\
n = 2 ** 40                 # the first spare block: made
n = 10 ** 6                 # the value of the set-up again
__start__()
n = 2 ** 40
pmem.current_pool().ns.__dict__    # the journal applied
__stop__()
""", namespace=True, doc="-X pmem: an int whose number of digits changes, "
                        "written into a spare block of the pool that the "
                        "binding then refers to"),
    Kind("ns-new", [(NAMESPACE_DATA, 0)], """\
__start__()
m = {"k": [1, 2.5, "x"]}
__stop__()
""", namespace=True, doc="-X pmem: a new name, its container moved in"),
    Kind("ns-block", [(NAMESPACE_DATA, 0)], """\
__start__()
with pmem.transaction():
    accounts["acct1"] -= 7.5
    accounts["acct2"] += 7.5
    n += 1
    s = "xyz"
__stop__()
""", namespace=True, doc="-X pmem: a pmem.transaction() block of "
                        "bindings and a transfer"),
]

# pmem.grow() of the set-up pool to twice its size.  Then, on whatever a
# crash left: grow() again, and a pool that holds more than the old size
# could (12 blocks of 1 MiB: a pool of 16 MiB holds 8, one of 32 MiB 18).
GROW_THEN = """\
assert pmem.grow(path, 2 * SIZE)[1] == 2 * SIZE
pool = pmem.open(path, create=False)
assert pool.size == 2 * SIZE, pool.size
pool.ns.room = [bytes(1 << 20) for _ in range(SIZE * 3 // 4 >> 20)]
"""

# A grow killed once the heap's new size is written: the next open
# extends the heap.
GROW_KILLED = """\
real_fdatasync = os.fdatasync
def fdatasync(fd):
    real_fdatasync(fd)
    os.kill(os.getpid(), signal.SIGKILL)
os.fdatasync = fdatasync
pmem.grow(path, 2 * SIZE)
"""

KINDS += [
    Kind("types", [(DATA, 0)], STDLIB + """\
pool = pmem.open(path)
ns = pool.ns
start()
ns.stdlib = STDLIB()
stop()
""", doc="values of the standard library stored in one transaction: "
         "copies (datetime, Decimal, Fraction, a named tuple), moves "
         "(Counter, defaultdict, OrderedDict, deque), references (enum "
         "members, timezone.utc, a class) recorded in the pool's table of "
         "references, classes entered in its type table"),
    Kind("types-open-moved", [(DATA, 0), (STDLIB_DATA, 0)], """\
start()
pool = pmem.open(path)
stop()
assert pool.base == int(os.environ["PMEM_MMAP_HINT"], 16), hex(pool.base)
""", env={"PMEM_MMAP_HINT": MOVED_HINT},
         doc="an open at another address of a pool that holds them: "
             "references found by name again and their pointers "
             "rewritten, a Decimal's, an OrderedDict's and a deque's "
             "interior pointers moved"),
    Kind("odict", [(DATA, 0), (STDLIB_DATA, 0)], """\
pool = pmem.open(path)
order = pool.ns.stdlib["order"]
start()
with pool:
    order.move_to_end("k3")
    order.move_to_end("k7", last=False)
    order.popitem(last=False)
    del order["k5"]
    order["new"] = [1, 2]
    order.setdefault("k0", "again")
stop()
""", doc="an OrderedDict's list of keys changed in one transaction: "
         "moves to either end, a pop from the front, a delete, new keys "
         "(nodes made, unlinked, freed)"),
    Kind("deque", [(DATA, 0), (STDLIB_DATA, 0)], """\
pool = pmem.open(path)
queue = pool.ns.stdlib["queue"]
start()
with pool:
    queue.rotate(70)
    queue.extend(range(60))
    for _ in range(70):
        queue.popleft()
    queue.appendleft([1, 2])
    del queue[100]
    queue[3] = "three"
stop()
""", doc="a deque changed in one transaction: a rotation across blocks, "
         "items added and taken at both ends (blocks made and freed), a "
         "delete and a store in the middle"),
    Kind("deque-one", [(DATA, 0), (STDLIB_DATA, 0)], """\
pool = pmem.open(path)
queue = pool.ns.stdlib["queue"]
start()
queue.append(["new"])
stop()
""", doc="one deque.append(), its own transaction"),
    Kind("odict-one", [(DATA, 0), (STDLIB_DATA, 0)], """\
pool = pmem.open(path)
order = pool.ns.stdlib["order"]
start()
order.move_to_end("k0")
stop()
""", doc="one OrderedDict.move_to_end(), its own transaction"),
    Kind("grow", [(DATA, 0)], """\
start()
sizes = pmem.grow(path, 2 * SIZE)
stop()
assert sizes == (SIZE, 2 * SIZE), sizes
""", then=GROW_THEN, doc="pmem.grow() to twice the size: the file extended "
                         "and synced, the heap's size written and synced "
                         "(its check before and its open after run in "
                         "other interpreters, whose points are not "
                         "counted: grow-open is that open)"),
    Kind("grow-open", [(DATA, 0), (GROW_KILLED, -signal.SIGKILL)], """\
start()
pool = pmem.open(path)
stop()
assert pool.size == 2 * SIZE, pool.size
""", then=GROW_THEN, doc="the open of a pool whose grow was killed once the "
                         "heap's new size was written: it extends the "
                         "heap"),
]
KIND_NAMES = [k.name for k in KINDS]


# --- building the shim -------------------------------------------------------

def build_shim(cc=None):
    """Compile the shim unless an up-to-date build exists; its path."""
    os.makedirs(BUILD_DIR, exist_ok=True)
    target = os.path.join(BUILD_DIR, "persistshim.so")
    if (os.path.exists(target)
            and os.path.getmtime(target) >= os.path.getmtime(SHIM_SOURCE)):
        return target
    cc = cc or os.environ.get("CC") or shutil.which("cc") or "cc"
    tmp = f"{target}.{os.getpid()}.tmp"
    cmd = cc.split() + ["-O2", "-Wall", "-shared", "-fPIC", "-o", tmp,
                        SHIM_SOURCE, "-ldl"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"cannot compile the shim: {' '.join(cmd)}\n"
                         f"{proc.stderr}")
    os.replace(tmp, target)
    return target


# --- running children --------------------------------------------------------

class Runner:
    def __init__(self, args, shim, workdir):
        self.args = args
        self.shim = shim
        self.workdir = workdir
        self.python = args.python
        base = dict(os.environ)
        for name in list(base):
            if name.startswith(("PERSISTSHIM_", "PMEM_")) or name in (
                    "LD_PRELOAD", "PYTHONPATH", "PYTHONHASHSEED"):
                del base[name]
        self.base_env = base

    def env(self, flush, seed, extra=None):
        env = dict(self.base_env, PYTHONHASHSEED=seed,
                   PMEM_IS_PMEM_FORCE="1" if flush == "force" else "0")
        env.update(extra or {})
        return env

    def run(self, code, path, env):
        """Run code with the pool at path; (return code, stdout, stderr).
        A run that takes longer than --timeout seconds is killed: a check
        that hangs on a damaged pool is a failure too."""
        timeout = self.args.timeout
        try:
            proc = subprocess.run(
                [self.python, "-X", "faulthandler", "-c", code, path,
                 str(self.args.size)],
                env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr or b""
            if isinstance(err, bytes):
                err = err.decode(errors="replace")
            return f"a timeout ({timeout} s: hangs)", "", err
        return proc.returncode, proc.stdout, proc.stderr

    def check(self, path, flush):
        """The checker's verdict on the pool at path: (result, error)."""
        rc, out, err = self.run(CHECK, path, self.env(flush, CHECK_SEED))
        if rc != 0:
            return None, describe_exit(rc, err)
        try:
            return json.loads(out.strip().splitlines()[-1]), None
        except (ValueError, IndexError):
            return None, f"checker printed {out!r}"


def describe_exit(rc, err):
    """What became of a child: how it ended, and its last lines."""
    if isinstance(rc, str):
        what = rc
    elif rc < 0:
        try:
            what = f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            what = f"killed by signal {-rc}"
    else:
        what = f"exit status {rc}"
    tail = "\n".join(err.strip().splitlines()[-12:])
    return f"{what}\n{tail}" if tail else what


def copy_pool(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)


# --- one kind, one mode ------------------------------------------------------

class Mode:
    """How the runs of a kind are made: flushing, and kill or power loss."""

    def __init__(self, flush, powerloss, when="after"):
        self.flush = flush
        self.powerloss = powerloss
        self.when = when

    @property
    def label(self):
        kill = "power-loss" if self.powerloss else f"kill-{self.when}"
        return f"{self.flush}/{kill}"


def trace_blocks(trace_path):
    """{point number: its trace line and call stack}."""
    blocks, current = {}, None
    try:
        with open(trace_path, errors="replace") as f:
            for line in f:
                m = re.match(r"point (\d+) ", line)
                if m:
                    current = int(m.group(1))
                    blocks[current] = [line.rstrip()]
                elif current is not None and not line.startswith("flush "):
                    blocks[current].append("    " + line.rstrip())
    except OSError:
        pass
    return {k: "\n".join(v) for k, v in blocks.items()}


def symbolize(block):
    """The stack with file:line for frames of objects with debug info."""
    out = []
    for line in block.splitlines():
        m = re.match(r"\s+(/\S+?)\(\+(0x[0-9a-f]+)\)", line)
        if m and shutil.which("addr2line"):
            proc = subprocess.run(
                ["addr2line", "-f", "-i", "-e", m.group(1), m.group(2)],
                capture_output=True, text=True)
            if proc.returncode == 0 and "??" not in proc.stdout:
                where = " <- ".join(
                    " ".join(pair) for pair in zip(
                        *[iter(proc.stdout.split("\n"))] * 2))
                line = f"{line}  [{os.path.basename(where.strip())}]"
        out.append(line)
    return "\n".join(out)


def pick_points(n, limit):
    """The points to run: all, or limit of them spread evenly."""
    if not limit or n <= limit:
        return list(range(1, n + 1))
    if limit == 1:
        return [n]
    return sorted({round(1 + i * (n - 1) / (limit - 1)) for i in range(limit)})


class KindRun:
    def __init__(self, runner, kind, mode):
        self.r = runner
        self.kind = kind
        self.mode = mode
        self.dir = os.path.join(runner.workdir, kind.name,
                                mode.label.replace("/", "-"))
        os.makedirs(self.dir)
        self.setup_pool = os.path.join(self.dir, "setup", "pool")
        self.failures = []
        self.kept = 0
        if kind.namespace:
            self.code = NAMESPACE_PRELUDE + "import pmem\n" + kind.op
        else:
            self.code = OP_PRELUDE + kind.op

    def op_env(self, extra=None, path=None):
        env = self.r.env(self.mode.flush, OP_SEED, self.kind.env)
        if self.kind.namespace and path is not None:
            env["PYTHONPMEM"] = path
        env.update(extra or {})
        return env

    def shim_env(self, pool, **settings):
        extra = {"LD_PRELOAD": self.r.shim, "PERSISTSHIM_ARMED": "0",
                 "PERSISTSHIM_POOL": pool}
        extra.update({f"PERSISTSHIM_{k.upper()}": str(v)
                      for k, v in settings.items()})
        return self.op_env(extra, pool)

    def fresh_pool(self, name):
        """A copy of the set-up pool (none for a creation) at a new path."""
        path = os.path.join(self.dir, name, "pool")
        os.makedirs(os.path.dirname(path))
        if self.kind.setup:
            copy_pool(self.setup_pool, path)
        return path

    def prepare(self):
        """Set up, take the reference states, count the points: N."""
        os.makedirs(os.path.dirname(self.setup_pool))
        for code, expected in self.kind.setup:
            rc, out, err = self.r.run(
                OP_PRELUDE + code, self.setup_pool,
                self.r.env(self.mode.flush, SETUP_SEED))
            if rc != expected:
                raise RuntimeError(f"{self.kind.name}: setting up failed: "
                                   f"{describe_exit(rc, err)}")
        if self.kind.setup:
            path = self.fresh_pool("before")
            self.before, error = self.r.check(path, self.mode.flush)
            if error:
                raise RuntimeError(f"{self.kind.name}: the set-up pool does "
                                   f"not check: {error}")
        else:
            self.before = {"state": "absent", "objects": None, "gc": 0}
        path = self.fresh_pool("after")
        rc, out, err = self.r.run(self.code, path, self.op_env(path=path))
        if rc != 0:
            raise RuntimeError(f"{self.kind.name}: the operation failed: "
                               f"{describe_exit(rc, err)}")
        self.after, error = self.r.check(path, self.mode.flush)
        if error:
            raise RuntimeError(f"{self.kind.name}: the pool after the "
                               f"operation does not check: {error}")
        self.middles = []
        for i, prefix in enumerate(self.kind.prefixes):
            path = self.fresh_pool(f"prefix{i}")
            code = self.code[:-len(self.kind.op)] + prefix
            rc, out, err = self.r.run(code, path, self.op_env(path=path))
            state, error = self.r.check(path, self.mode.flush)
            if rc != 0 or error:
                raise RuntimeError(f"{self.kind.name}: prefix {i + 1} of "
                                   f"the operation failed: "
                                   f"{error or describe_exit(rc, err)}")
            self.middles.append(state)
        path = self.fresh_pool("count")
        count_file = os.path.join(self.dir, "count.txt")
        self.trace = os.path.join(self.dir, "trace.txt")
        settings = {"count": count_file, "trace": self.trace}
        if self.mode.powerloss:
            settings["image"] = os.path.join(self.dir, "count", "image")
        rc, out, err = self.r.run(self.code, path,
                                  self.shim_env(path, **settings))
        if rc != 0:
            raise RuntimeError(f"{self.kind.name}: the operation failed "
                               f"under the shim: {describe_exit(rc, err)}")
        with open(count_file) as f:
            self.n = int(f.read())
        result, error = self.r.check(path, self.mode.flush)
        if error or not self.same(result, self.after):
            raise RuntimeError(f"{self.kind.name}: the operation under the "
                               f"shim ends elsewhere: {error or result}")
        return self.n

    @staticmethod
    def same(result, ref):
        return (result["state"] == ref["state"]
                and result["objects"] == ref["objects"])

    def verdict(self, result):
        """None if result is the before or the after state, else why not."""
        if result["gc"] != 0:
            return f"pool.gc() freed {result['gc']} objects after the open"
        for ref in (self.before, self.after, *self.middles):
            if self.same(result, ref):
                return None
        for name, ref in (("before", self.before), ("after", self.after)):
            if result["state"] == ref["state"]:
                return (f"the {name}-state, but {result['objects']} objects "
                        f"instead of {ref['objects']}")
        what = ("neither the before- nor the after-state" if not
                self.middles else "none of the states of a prefix of the "
                "operation")
        return what + ":\n" + json.dumps(result["state"])[:2000]

    def run_point(self, k):
        """Kill at point k, check: None, or a failure description.  The
        point's files go when it is done (a failure's are kept apart)."""
        try:
            return self.kill_and_check(k)
        finally:
            shutil.rmtree(os.path.join(self.dir, f"k{k}"),
                          ignore_errors=True)

    def kill_and_check(self, k):
        path = self.fresh_pool(f"k{k}")
        settings = {"kill_at": k, "when": self.mode.when}
        image = os.path.join(os.path.dirname(path), "image")
        if self.mode.powerloss:
            settings["image"] = image
        rc, out, err = self.r.run(self.code, path,
                                  self.shim_env(path, **settings))
        if rc != -signal.SIGKILL:
            if rc == 0:
                why = (f"the run ended without reaching point {k} (of "
                       f"{self.n} counted)")
            else:
                why = f"the operation failed: {describe_exit(rc, err)}"
            return self.fail(k, why, path)
        if self.mode.powerloss:
            if not os.path.exists(image):
                return self.fail(k, "the shim wrote no image", path)
            target = path if os.path.exists(path) else path + ".creating"
            if not os.path.exists(target):
                return self.fail(k, "neither the pool nor its temporary "
                                 "file exists after the kill", path)
            os.replace(image, target)
        crashed = os.path.join(os.path.dirname(path), "crashed")
        src = path if os.path.exists(path) else path + ".creating"
        if os.path.exists(src):
            shutil.copyfile(src, crashed)
        result, error = self.r.check(path, self.mode.flush)
        why = error or self.verdict(result)
        if not why and self.kind.then:
            rc, out, err = self.r.run(OP_PRELUDE + self.kind.then, path,
                                      self.r.env(self.mode.flush, OP_SEED))
            if rc != 0:
                why = ("the pool checked, but then failed: "
                       + describe_exit(rc, err))
        if why:
            return self.fail(k, why, crashed)
        return None

    def fail(self, k, why, pool):
        # In the summary: how the child ended, and its last line (the
        # exception), with the pool's path taken out.
        lines = why.strip().splitlines() or [why]
        first = lines[0] if len(lines) == 1 else f"{lines[0]}: {lines[-1]}"
        first = re.sub(r"'/[^']*/k\d+/pool(\.creating)?'", "<pool>", first)
        self.failures.append((k, first[:200]))
        if self.kept < KEEP_PER_KIND:
            self.kept += 1
            self.keep(k, why, pool)
        return why

    def keep(self, k, why, pool):
        dest = os.path.join(FAILURES, f"{self.kind.name}-"
                            f"{self.mode.label.replace('/', '-')}-k{k}")
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        if self.kind.setup:
            shutil.copyfile(self.setup_pool, os.path.join(dest, "setup.pool"))
        if os.path.exists(pool):
            shutil.copyfile(pool, os.path.join(dest, "crashed.pool"))
        with open(os.path.join(dest, "op.py"), "w") as f:
            f.write(self.code)
        with open(os.path.join(dest, "check.py"), "w") as f:
            f.write(CHECK)
        force = "1" if self.mode.flush == "force" else "0"
        extra = " ".join(f"{k}={v}" for k, v in self.kind.env.items())
        if self.kind.namespace:
            extra += ' PYTHONPMEM="$D/pool"'
        kill = (f"PERSISTSHIM_POOL=$D/pool PERSISTSHIM_IMAGE=$D/image "
                if self.mode.powerloss else "")
        setup_line = ('cp "$HERE/setup.pool" "$D/pool"'
                      if self.kind.setup else ": # a creation")
        moved = ('[ -e "$D/pool" ] && mv "$D/image" "$D/pool" || '
                 'mv "$D/image" "$D/pool.creating"'
                 if self.mode.powerloss else ":")
        with open(os.path.join(dest, "repro.sh"), "w") as f:
            f.write(textwrap.dedent(f"""\
                #!/bin/sh
                # The crashed pool, checked again:
                #   sh repro.sh           check crashed.pool
                #   sh repro.sh rerun     kill the operation at point {k}
                #                         again, then check
                HERE=$(cd "$(dirname "$0")" && pwd)
                PY={self.r.python}
                D=$(mktemp -d /tmp/persist-repro-XXXXXX)
                if [ "${{1:-}}" = rerun ]; then
                    {setup_line}
                    env PYTHONHASHSEED={OP_SEED} PMEM_IS_PMEM_FORCE={force} \\
                        {extra} LD_PRELOAD={self.r.shim} \\
                        PERSISTSHIM_ARMED=0 PERSISTSHIM_KILL_AT={k} \\
                        PERSISTSHIM_WHEN={self.mode.when} {kill}\\
                        "$PY" "$HERE/op.py" "$D/pool" {self.r.args.size}
                    {moved}
                else
                    cp "$HERE/crashed.pool" "$D/pool"
                fi
                PYTHONHASHSEED={CHECK_SEED} PMEM_IS_PMEM_FORCE={force} \\
                    "$PY" -X faulthandler "$HERE/check.py" "$D/pool" \\
                    {self.r.args.size}
                echo "pool left in $D"
                """))
        stack = symbolize(trace_blocks(self.trace).get(k, "(not traced)"))
        with open(os.path.join(dest, "description.txt"), "w") as f:
            f.write(textwrap.dedent(f"""\
                kind:   {self.kind.name} -- {self.kind.doc}
                mode:   {self.mode.label} (PMEM_IS_PMEM_FORCE={force})
                point:  {k} of {self.n}
                failure:
                """) + textwrap.indent(why, "    ") + "\n\n"
                f"expected, before the operation:\n    "
                f"{json.dumps(self.before)[:3000]}\n"
                f"expected, after it:\n    "
                f"{json.dumps(self.after)[:3000]}\n\n"
                f"point {k}, as traced in the counting run:\n"
                f"{textwrap.indent(stack, '    ')}\n\n"
                "files: setup.pool (before the operation), crashed.pool "
                "(as the next process found it,\nbefore the check opened "
                "it), op.py, check.py, repro.sh\n")


def run_kind(runner, kind, mode, executor):
    """Run every chosen point of kind in mode; a result dict."""
    started = time.monotonic()
    kr = KindRun(runner, kind, mode)
    try:
        n = kr.prepare()
    except RuntimeError as exc:
        return {"kind": kind.name, "mode": mode.label, "points": 0, "run": 0,
                "failures": [(0, str(exc))], "seconds":
                time.monotonic() - started, "error": str(exc)}
    points = pick_points(n, runner.args.limit_per_kind)
    list(executor.map(kr.run_point, points))
    return {"kind": kind.name, "mode": mode.label, "points": n,
            "run": len(points), "failures": sorted(kr.failures),
            "seconds": time.monotonic() - started}


def report(result):
    failures = result["failures"]
    print(f"  {result['kind']:<16} {result['mode']:<22} "
          f"{result['points']:5d} points {result['run']:5d} run "
          f"{len(failures):5d} failures {result['seconds']:7.1f} s",
          flush=True)
    if result.get("error"):
        print(textwrap.indent(result["error"], "      "))
        return
    # The failures by what went wrong, with the points where it did.
    groups = {}
    for k, why in failures:
        groups.setdefault(why, []).append(k)
    for why, ks in groups.items():
        shown = ", ".join(map(str, ks[:12])) + (" ..." if len(ks) > 12 else "")
        print(f"      {len(ks)} x {why}  (points {shown})")


def summary(label, results):
    kinds = sorted({r["kind"] for r in results})
    points = sum(r["run"] for r in results)
    failures = sum(len(r["failures"]) for r in results)
    print(f"{label}: {len(kinds)} kinds, {points} points, "
          f"{failures} failures")
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Kill pool operations at every persist point and check "
                    "what the next process finds.")
    parser.add_argument("--kinds", default=",".join(KIND_NAMES),
                        help="comma-separated, of: " + ", ".join(KIND_NAMES))
    parser.add_argument("--power-loss", action="store_true",
                        help="also check power-loss images")
    parser.add_argument("--only-power-loss", action="store_true",
                        help="check power-loss images only")
    parser.add_argument("--limit-per-kind", type=int, default=0,
                        metavar="N", help="at most N points of a kind, "
                        "spread evenly (default: all)")
    parser.add_argument("--flush", choices=("force", "msync", "both"),
                        default="force",
                        help="PMEM_IS_PMEM_FORCE=1 (cache-line flushes, the "
                        "default), msync() of pages, or both")
    parser.add_argument("--when", choices=("after", "before", "both"),
                        default="after", help="kill right after the k-th "
                        "point (default) or right before it")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--size", type=int, default=16 << 20,
                        help="pool size in bytes (default 16 MiB)")
    parser.add_argument("--timeout", type=float, default=60,
                        help="seconds a child may take (default 60)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--workdir", default=None,
                        help="where the pools go (default: a new directory "
                        "under /dev/shm, removed at the end)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory")
    args = parser.parse_args(argv)

    names = [n for n in re.split(r"[,\s]+", args.kinds) if n]
    unknown = [n for n in names if n not in KIND_NAMES]
    if unknown:
        parser.error(f"unknown kinds: {', '.join(unknown)}")
    kinds = [k for k in KINDS if k.name in names]
    flushes = ["force", "msync"] if args.flush == "both" else [args.flush]
    whens = ["after", "before"] if args.when == "both" else [args.when]
    modes = []
    for flush in flushes:
        if not args.only_power_loss:
            modes += [Mode(flush, False, when) for when in whens]
        if args.power_loss or args.only_power_loss:
            modes.append(Mode(flush, True))

    shim = build_shim()
    base = args.workdir or ("/dev/shm" if os.path.isdir("/dev/shm")
                            else None)
    workdir = tempfile.mkdtemp(prefix="persist-points-", dir=base)
    runner = Runner(args, shim, workdir)
    print(f"shim: {shim}\nwork: {workdir}\njobs: {args.jobs}", flush=True)
    results = []
    started = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as executor:
            for mode in modes:
                print(f"{mode.label}:", flush=True)
                for kind in kinds:
                    result = run_kind(runner, kind, mode, executor)
                    report(result)
                    results.append(result)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    failures = 0
    kill = [r for r in results if "power-loss" not in r["mode"]]
    power = [r for r in results if "power-loss" in r["mode"]]
    if kill:
        failures += summary("persist points", kill)
    if power:
        failures += summary("power-loss images", power)
    print(f"time: {time.monotonic() - started:.1f} s")
    if failures:
        print(f"failures kept under {FAILURES}/")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
