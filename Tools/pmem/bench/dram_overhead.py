"""Measure the DRAM overhead of pmem-python against stock CPython.

Every object of the fork goes through its storage manager's hooks; for the
default manager, ordinary DRAM, those hooks should cost (almost) nothing.
This driver runs the same small workloads (dict, list, set, bytearray,
attribute access, calls, a mixed graph walk) under both interpreters, side
by side, and prints the ratio fork/stock per workload.

Example (from the repository root; the driver runs under any Python 3)::

    $ python3 Tools/pmem/bench/dram_overhead.py --mode callgrind --only dict
    stock  /work/main/build/stock/Python-3.13.5/python: 3.13.5 (main, ...)
    fork   /work/main/python: 3.13.5+pmem (main, Dec  3 2026, 09:37:41) ...

    callgrind instructions (start-up subtracted: stock 24,585,037, ...)
    workload             stock            fork  fork/stock  overhead
    dict           144,016,587     145,736,251      1.0119    +1.19%
    max 1.0119 (dict), geometric mean 1.0119

    total 8 s

Other runs: ``--mode both`` (the default) adds the wall-time table,
``--mode time --repeat 9 --regrtest`` times only, and also the core
regrtests; ``--with-manager`` runs the fork's workloads with a storage
manager registered (what a program pays for its DRAM objects while a
pool or a memory kind is open); ``--namespace-pool`` compares the fork
with itself under ``-X pmem`` (below); ``--limit 1`` fails (exit status
1) when a callgrind overhead exceeds 1%; ``--scale 0.5`` halves every
iteration count; ``--list``.

The primary figure is the instruction count (Ir) that callgrind collects.
It is deterministic: the same on a quiet machine and on a shared two-core
one where another build saturates both cores, and the same from one run to
the next, so a difference of a few hundredths of a per cent is visible (the
floor: a different memory layout, e.g. a longer path, moves each workload
by some 10,000 instructions).  Wall time, the minimum of --repeat runs
alternating which interpreter goes first, moves by several per cent on such
a machine; it runs ten times the iterations.  Both subtract an empty
workload, measured once per interpreter: start-up differs between builds.

Children run with ``-B -S``, in /, with an environment of PYTHONHASHSEED=0
alone, so that counts do not depend on the caller.  (``-E`` is not passed:
it would ignore PYTHONHASHSEED, and random str hashes make counts vary.)

``--namespace-pool`` measures what ``python -X pmem=PATH`` costs a program
that computes on local DRAM data.  It runs each workload under the fork
twice, as it is ("fork") and with ``-X pmem=POOL`` ("fork+pmem": a fresh
pool in a temporary directory on /dev/shm, removed after the run, and
PMEM_IS_PMEM_FORCE=1 added to that child's environment only), and prints
fork+pmem/fork.  Every workload does its work in a function, ``run(n)``:
its loops bind locals, and at module level there are only the
definitions and the call, so that what is measured is the workload's own
DRAM computation with __main__'s namespace in a pool -- the pool open
(hence a storage manager registered, as with --with-manager) and
__main__'s dict in the pool's region, read by the workload's global
loads -- and not the cost of binding globals, each of which is a
transaction of the pool.  Opening (here creating) the pool is start-up,
subtracted with the empty workload, which gets a fresh pool too.  Under
callgrind, the count is that of the interpreter's process alone:
``pmem.open()`` forks a child that checks the pool, whose count valgrind
prints too.  Example::

    $ python3 Tools/pmem/bench/dram_overhead.py --mode callgrind \\
          --namespace-pool --only dict
    fork       /work/main/build/Python-3.13.5/python: 3.13.5+pmem (main, ...
    fork+pmem  /work/main/build/Python-3.13.5/python -X pmem: 3.13.5+pmem ...
    pool       /dev/shm/dram-overhead-j1plsz5s/namespace.pool, fresh for ...

    callgrind instructions (start-up subtracted: fork 29,603,696, ...)
    workload              fork       fork+pmem fork+pmem/fork  overhead
    dict           160,638,505     163,309,996         1.0166    +1.66%
    max 1.0166 (dict), geometric mean 1.0166

    total 17 s
"""

import argparse
import contextlib
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# The upstream version of the base, as the build tree is named.
VERSION = subprocess.run(["sh", str(REPO / "Tools/pmem/tree.sh"), "version"],
                         stdout=subprocess.PIPE, text=True).stdout.strip()
VALGRIND = "/usr/bin/valgrind"
TIME_FACTOR = 10    # time mode runs 10x the iterations: noise needs length
REGRTESTS = ("test_dict", "test_list", "test_set", "test_bytes",
             "test_descr", "test_class")
HARNESS = "\nimport sys\nrun(int(sys.argv[1]))\n"
# --with-manager: the fork's workloads run with a storage manager
# registered (a test arena that holds no object of theirs), as a program
# with an open pool or a memory kind does.
MANAGER = ("import _teststorage\n"
           "_arena = _teststorage.Arena(1 << 20, name='idle')\n")
EMPTY = "def run(n):\n    pass\n"

# (name, what it hammers, iterations under callgrind, source defining run(n))
WORKLOADS = (
    ("dict", "str/int insert, lookup, delete, resizes, setdefault, update, "
     "popitem, clear, comprehension", 14, '''
def run(n):
    keys = ["k%d" % i for i in range(2000)]
    for r in range(n):
        d = {}
        for i in range(2000):
            d[i] = d[keys[i]] = i
        t = 0
        for i in range(2000):
            t += d[i] + d[keys[i]]
        for i in range(0, 2000, 2):
            del d[i], d[keys[i]]
        for i in range(500):
            d.setdefault(3000 + i, []).append(i)
            d.setdefault("k1", 0)
        d.update({j: j for j in range(4000, 4500)}, a=1, b=2)
        e = {keys[j]: j for j in range(500)}
        e.update(d)
        while len(e) > 100:
            e.popitem()
        e.clear()
'''),
    ("list", "append, comprehension, insert, pop, slice assignment, sort, "
     "reverse, *=, lst[i] = x", 12, '''
def run(n):
    for r in range(n):
        a = []
        for i in range(3000):
            a.append(i)
        b = [x * 2 for x in a]
        for i in range(300):
            b.insert(i * 3, i)
        for i in range(300):
            b.pop(), b.pop(0)
        for i in range(len(a)):
            a[i] = i * 3 % 1000
        a[100:200], a[-50:], a[0:0] = b[:50], [], b[:100]
        a.sort()
        a.reverse()
        c = a[:100]
        c *= 20
        b.sort(key=lambda x: -x)
        del a[:]
'''),
    ("set", "add, discard, pop, update, &=, |=, intersection_update", 20, '''
def run(n):
    for r in range(n):
        s = set()
        for i in range(3000):
            s.add(i)
            s.add(-i)
        for i in range(0, 3000, 3):
            s.discard(i)
        t, u = {i for i in range(1000, 4000)}, set(range(2000, 5000))
        s |= t
        s &= u
        t.update(range(5000, 6000))
        t.intersection_update(u)
        t.update(str(i) for i in range(500))
        while len(t) > 500:
            t.pop()
'''),
    ("bytearray", "append, extend, slice assignment, +=", 70, '''
def run(n):
    for r in range(n):
        b = bytearray()
        for i in range(5000):
            b.append(i & 255)
        for i in range(500):
            b.extend(b"abcdefgh")
            b += b"xyz"
        for i in range(0, 2000, 4):
            b[i:i + 2] = b"QRS"
        b[100:1000], b[0:0] = b"", bytes(range(256))
'''),
    ("attr", "instance attributes: inline values, __slots__, a 40-attribute "
     "instance (STORE_ATTR_WITH_HINT)", 60, '''
class Plain:
    def __init__(self):
        self.a, self.b, self.c = 0, 1, 2
class Slotted:
    __slots__ = ("a", "b", "c")
    def __init__(self):
        self.a, self.b, self.c = 0, 1, 2
class Many:
    def __init__(self):
        for i in range(40):
            setattr(self, "f%d" % i, i)
def plain(o, m):  # one function per class keeps each site monomorphic
    for i in range(m):
        o.a = i
        o.b = o.a + o.c
        o.c = o.b - 1
def slotted(o, m):
    for i in range(m):
        o.a = i
        o.b = o.a + o.c
        o.c = o.b - 1
def hinted(o, m):
    for i in range(m):
        o.f1 = i
        o.f30 = o.f1 + o.f39
        o.f39 = o.f30 - 1
def run(n):
    p, s, h = Plain(), Slotted(), Many()
    for r in range(n):
        plain(p, 2000), slotted(s, 2000), hinted(h, 2000)
        for k in range(100):
            Plain(), Slotted()
'''),
    ("calls", "function, keyword, method and static-method calls", 50, '''
def add(a, b):
    return a + b
def kw(a, b=1, *, c=2):
    return a + b + c
class C:
    v = 0
    def inc(self, x):
        self.v += x
        return self.v
    @staticmethod
    def st(x):
        return x
def run(n):
    o = C()
    for r in range(n):
        t = 0
        for i in range(2000):
            t = add(t, i)
            t = kw(t, c=i)
            o.inc(i)
            C.st(i)
            len((i,))
'''),
    ("collections", "deque append, appendleft, pop, popleft, rotate, "
     "extend, q[i] = x; OrderedDict stores, move_to_end, popitem, del", 12,
     '''
import collections

def run(n):
    for r in range(n):
        q = collections.deque()
        for i in range(2000):
            q.append(i)
            q.appendleft(i)
        for i in range(1000):
            q.rotate(3)
            q[i] = i
        q.extend(range(1000))
        while q:
            q.pop()
            if q:
                q.popleft()
        o = collections.OrderedDict()
        for i in range(1000):
            o[i] = i
        for i in range(0, 999, 3):
            o.move_to_end(i)
            o.move_to_end(i + 1, last=False)
        while len(o) > 100:
            o.popitem(last=len(o) % 2 == 0)
        for k in list(o):
            del o[k]
'''),
    ("mixed", "build a random dict-of-lists graph, walk it breadth first, "
     "rank by in-degree", 25, '''
def run(n):
    x = 12345
    for r in range(n):
        g = {v: [] for v in range(600)}
        for k in range(3000):
            x = (x * 1103515245 + 12345) & 0x7fffffff
            g[x % 600].append(x // 600 % 600)
        seen, order, i = {0}, [0], 0
        while i < len(order):
            for w in g[order[i]]:
                if w not in seen:
                    seen.add(w)
                    order.append(w)
            i += 1
        deg = {}
        for v, ws in g.items():
            for w in ws:
                deg[w] = deg.get(w, 0) + 1
        ranked = sorted(deg, key=deg.__getitem__)
'''),
)


class BenchError(Exception):
    """An interpreter (or valgrind) failed; the message says which."""


def run_child(cmd, label, hermetic=True, extra_env=None):
    """Run cmd; return (seconds, output); raise BenchError on failure.

    A hermetic child gets nothing but PYTHONHASHSEED=0 (and extra_env) in
    its environment, / as its directory and /dev/null as stdin, so that
    its counts do not depend on the caller's; else it gets the caller's
    environment without PYTHON* and with that seed.
    """
    env = {} if hermetic else {k: v for k, v in os.environ.items()
                               if not k.startswith("PYTHON")}
    env["PYTHONHASHSEED"] = "0"
    env.update(extra_env or {})
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd="/" if hermetic else None,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise BenchError(f"{label} exited with status {proc.returncode}:"
                         f"\n{tail}")
    return elapsed, proc.stdout + proc.stderr


class Interpreter:
    """One interpreter to measure.

    path is its executable; with pool_dir, each of its runs keeps
    __main__'s namespace in a fresh pool there (``-X pmem``).
    """

    def __init__(self, path, pool_dir=None):
        self.path = path
        self.pool_dir = pool_dir

    def __str__(self):
        return self.path + (" -X pmem" if self.pool_dir else "")

    @contextlib.contextmanager
    def child(self, source, n):
        """The command line and extra environment of one workload run.

        With pool_dir, the run gets a pool of its own, removed after it.
        """
        cmd = [self.path, "-B", "-S"]
        if self.pool_dir is None:
            yield [*cmd, "-c", source + HARNESS, str(n)], {}
            return
        pool = os.path.join(self.pool_dir, "namespace.pool")
        if os.path.exists(pool):
            os.unlink(pool)
        try:
            yield ([*cmd, "-X", f"pmem={pool}", "-c", source + HARNESS,
                    str(n)], {"PMEM_IS_PMEM_FORCE": "1"})
        finally:
            if os.path.exists(pool):
                os.unlink(pool)


def callgrind_ir(interp, name, source, n):
    """Total instructions (Ir) of one workload under callgrind.

    Only the interpreter's process counts: a process that it forks (a
    pool's check) prints a total of its own, which includes what it
    inherited.
    """
    # Valgrind 3.19 accepts /dev/null as its output file and prints the
    # total on stderr, so no profile file is written.
    with interp.child(source, n) as (cmd, env):
        _, out = run_child([VALGRIND, "--tool=callgrind",
                            "--callgrind-out-file=/dev/null", *cmd],
                           f"{interp} ({name}, callgrind)", extra_env=env)
    first = re.search(r"^==(\d+)==", out, re.MULTILINE)
    match = first and re.search(
        rf"^=={first.group(1)}== Collected : (\d+)", out, re.MULTILINE)
    if not match:
        raise BenchError(f"no 'Collected :' line from valgrind for {name}")
    return int(match.group(1))


def wall_time(interp, name, source, n):
    """Seconds that one run of a workload takes."""
    with interp.child(source, n) as (cmd, env):
        return run_child(cmd, f"{interp} ({name})", extra_env=env)[0]


def measure(interps, selected, probe, runs=1, factor=1.0, prelude=None):
    """Return {workload: {interp: figure}} and {interp: start-up figure}.

    probe(python, name, source, n) measures one run; the figure is the
    minimum over runs (alternating which interpreter goes first) minus the
    empty workload's.  factor multiplies the iteration counts; prelude maps
    an interpreter's label to code that runs before each of its workloads
    (the empty one too).
    """
    prelude = prelude or {}
    jobs = [("empty", EMPTY, 1)] + [(name, source, max(1, round(n * factor)))
                                    for name, _, n, source in selected]
    best = {}
    for name, source, n in jobs:
        best[name] = dict.fromkeys(interps, math.inf)
        for rep in range(runs):
            for label in list(interps)[::-1 if rep % 2 else 1]:
                print(f"  ... {probe.__name__} {label} {name} #{rep + 1}",
                      file=sys.stderr, flush=True)
                figure = probe(interps[label], name,
                               prelude.get(label, "") + source, n)
                best[name][label] = min(best[name][label], figure)
    empty = best.pop("empty")
    return {name: {label: fig - empty[label] for label, fig in row.items()}
            for name, row in best.items()}, empty


def measure_regrtest(interps, repeat):
    """Time ``-m test -j2`` on the fixed test list: min of repeat runs."""
    best = dict.fromkeys(interps, math.inf)
    for rep in range(repeat):
        for label in list(interps)[::-1 if rep % 2 else 1]:
            python = interps[label].path
            print(f"  ... regrtest {label} #{rep + 1}", file=sys.stderr,
                  flush=True)
            # -B and --tempdir keep regrtest's files out of the build tree.
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [python, "-B", "-m", "test", "-j2", "--tempdir", tmp,
                       *REGRTESTS]
                secs, _ = run_child(cmd, f"{python} -m test", False)
            best[label] = min(best[label], secs)
    return best


def print_table(title, rows, fmt, base="stock", other="fork"):
    """Print workload, base, other, ratio, overhead; return the ratios."""
    head = f"{other}/{base}"
    print(f"\n{title}\n{'workload':<10} {base:>15} {other:>15} "
          f"{head:>{max(11, len(head))}} {'overhead':>9}")
    ratios = {}
    for name, row in rows.items():
        ratio = ratios[name] = row[other] / row[base]
        print(f"{name:<10} {fmt(row[base]):>15} {fmt(row[other]):>15} "
              f"{ratio:>{max(11, len(head))}.4f} "
              f"{(ratio - 1) * 100:>+8.2f}%")
    worst = max(ratios, key=ratios.get)
    print(f"max {ratios[worst]:.4f} ({worst}), geometric mean "
          f"{statistics.geometric_mean(ratios.values()):.4f}")
    return ratios


def parse_args(argv):
    """The command line; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fork", default=str(REPO / f"build/Python-{VERSION}/python"))
    p.add_argument("--stock",
                   default=str(REPO / f"build/stock/Python-{VERSION}/python"))
    p.add_argument("--mode", choices=("callgrind", "time", "both"),
                   default="both")
    p.add_argument("--repeat", type=int, default=5,
                   help="wall-time runs per workload; the minimum counts")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every iteration count")
    p.add_argument("--only", action="append", metavar="NAME",
                   choices=[w[0] for w in WORKLOADS],
                   help="run only this workload (repeatable)")
    p.add_argument("--list", action="store_true", help="list the workloads")
    p.add_argument("--limit", type=float, metavar="PCT",
                   help="exit 1 when a callgrind overhead exceeds PCT %%")
    p.add_argument("--with-manager", action="store_true",
                   help="run the fork's workloads with a storage manager "
                        "registered (the cost for DRAM objects while a pool "
                        "is open)")
    p.add_argument("--namespace-pool", action="store_true",
                   help="compare the fork with itself under -X pmem=POOL "
                        "(a fresh pool per run) instead of with stock")
    p.add_argument("--regrtest", action="store_true",
                   help="also time -m test -j2 " + " ".join(REGRTESTS))
    args = p.parse_args(argv)
    if args.namespace_pool and (args.with_manager or args.regrtest):
        p.error("--namespace-pool goes with neither --with-manager nor "
                "--regrtest")
    return args


def main(argv):
    """Run the selected measurements; return the exit status."""
    args = parse_args(argv)
    if args.list:
        for name, what, n, _ in WORKLOADS:
            print(f"{name:<10} {n:>3} iterations: {what}")
        return 0
    fork = os.path.abspath(args.fork)
    pool_dir = None
    if args.namespace_pool:
        base, other = "fork", "fork+pmem"
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        pool_dir = tempfile.mkdtemp(prefix="dram-overhead-", dir=shm)
        interps = {base: Interpreter(fork),
                   other: Interpreter(fork, pool_dir)}
    else:
        base, other = "stock", "fork"
        interps = {base: Interpreter(os.path.abspath(args.stock)),
                   other: Interpreter(fork)}
    try:
        return run_measurements(args, interps, base, other)
    finally:
        if pool_dir is not None:
            shutil.rmtree(pool_dir)


def run_measurements(args, interps, base, other):
    """main() once the interpreters are chosen: base is the reference."""
    for label, interp in interps.items():
        if not os.access(interp.path, os.X_OK):
            print(f"error: {label} interpreter {interp.path} is not "
                  f"executable", file=sys.stderr)
            return 2
    selected = [w for w in WORKLOADS if not args.only or w[0] in args.only]
    prelude = {"fork": MANAGER} if args.with_manager else {}
    status, start = 0, time.perf_counter()
    mtimes = {label: os.stat(interp.path).st_mtime
              for label, interp in interps.items()}
    width = max(6, *(len(label) + 1 for label in interps))
    try:
        for label, interp in interps.items():
            _, version = run_child([interp.path, "-B", "-S", "-c",
                                    "import sys; print(sys.version)"],
                                   interp.path)
            print(f"{label:<{width}} {interp}: {' '.join(version.split())}")
        if args.namespace_pool:
            pool = os.path.join(interps[other].pool_dir, "namespace.pool")
            print(f"{'pool':<{width}} {pool}, fresh for each run "
                  f"(PMEM_IS_PMEM_FORCE=1)")
        if args.mode in ("callgrind", "both"):
            rows, start_up = measure(interps, selected, callgrind_ir,
                                     factor=args.scale, prelude=prelude)
            ratios = print_table(
                f"callgrind instructions (start-up subtracted: {base} "
                f"{start_up[base]:,}, {other} {start_up[other]:,})",
                rows, "{:,}".format, base, other)
            if (args.limit is not None
                    and max(ratios.values()) > 1 + args.limit / 100):
                print(f"FAIL: an overhead exceeds the limit of {args.limit}%")
                status = 1
        if args.mode in ("time", "both"):
            rows, start_up = measure(interps, selected, wall_time,
                                     args.repeat, args.scale * TIME_FACTOR,
                                     prelude)
            print_table(
                f"wall time, s, min of {args.repeat} (start-up subtracted: "
                f"{base} {start_up[base]:.4f}, {other} "
                f"{start_up[other]:.4f})",
                rows, "{:.4f}".format, base, other)
        if args.regrtest:
            secs = measure_regrtest(interps, args.repeat)
            print(f"\nregrtest -j2 {' '.join(REGRTESTS)}, min of "
                  f"{args.repeat}: stock "
                  f"{secs['stock']:.1f} s, fork {secs['fork']:.1f} s, "
                  f"fork/stock {secs['fork'] / secs['stock']:.4f}")
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    for label, interp in interps.items():
        if os.stat(interp.path).st_mtime != mtimes[label]:
            print(f"WARNING: {interp.path} changed during the run")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
