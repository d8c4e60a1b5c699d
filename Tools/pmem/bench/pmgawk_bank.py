"""The bank loop in pm-gawk and in Python under -X pmem, side by side.

pm-gawk (gawk 5.2 and later, GAWK_PERSIST_FILE=heap.pma) keeps all of an
awk program's variables in a heap file from run to run; ``python -X
pmem=PATH`` keeps those of the __main__ module in a pool.  Both run the
same plain script, its loop at top level: 1000 accounts in an awk array
or a dict bound to a global, then --transfers transfers (200,000 by
default) of 1..100 from one account to another, the accounts and amounts
drawn from one 32-bit LCG (that of bank/run.py), and at the end the sum
of the balances, which must not have changed.  In Python each transfer
is ``with pmem.transaction(): accounts[a] -= x; accounts[b] += x`` and
every other global binding of the loop (t, state, a, b, x) is atomic on
its own; pm-gawk stores into its heap file's mapping with no transaction
and no flush (its manual's answer to crashes is a copy of the file
between runs), so Python does more here than pm-gawk.

Example (from the repository root; the driver runs under any Python 3)::

    $ python3 Tools/pmem/bench/pmgawk_bank.py --transfers 200000 --repeat 5
    python  /work/main/build/Python-3.13.5/python: 3.13.5+pmem (main, ...)
    gawk    gawk: GNU Awk 5.2.1, API 3.2, PMA Avon 8-g1, (GNU MPFR 4.2.0, ...)
    files   /dev/shm/pmgawk-bank-jr21mkqe (PMEM_IS_PMEM_FORCE=1)
    200,000 transfers between 1000 accounts, best of 5
    check: every run ends with the expected balances, sum 1,000,000; ...

    | variant | wall s | CPU s | start-up CPU s | CPU µs/transfer | ratio ...
    |---|---:|---:|---:|---:|---:|
    | pm-gawk, GAWK_PERSIST_FILE | 0.213 | 0.196 | 0.002 | 0.97 | 1.00 |
    | python -X pmem, loop at module level | 8.039 | 6.054 | 0.057 | 29.98 ...
    | python -X pmem, loop in a function | 0.967 | 0.736 | 0.066 | 3.35 | ...
    | gawk, no heap file | 0.241 | 0.206 | 0.003 | 1.02 | 1.05 |
    | python, no pool (plain dicts) | 0.394 | 0.279 | 0.015 | 1.32 | 1.36 |

    python -X pmem / pm-gawk: wall 37.82x, CPU 30.85x (whole runs); CPU ...

    total 56 s

The variants (--only NAME picks some), each run as a fresh process on
its own files in /dev/shm (a temporary directory elsewhere, with a note),
with a hermetic environment (PATH, LC_ALL=C, PMEM_IS_PMEM_FORCE=1):

    pm-gawk         gawk with GAWK_PERSIST_FILE: the heap file is made
                    sparse with truncate(2) (--heap-size) beforehand
    pmem            python -X pmem=POOL, the loop at module level, one
                    pmem.transaction() per transfer: the target figure
    pmem-function   the same, the loop in a function whose variables
                    are local (only accounts is a global of the pool):
                    what the per-statement bindings cost
    gawk            gawk without a heap file (reference)
    python          the Python script without -X pmem and without
                    pmem.transaction(): plain dicts (reference)

The persistent variants first run once with no transfer: that run creates
the pool or fills the heap file and makes the accounts, and is not timed.
Then each --repeat round runs every variant twice, with 0 transfers (its
start-up: starting the interpreter and opening its file) and with
--transfers, alternating the order of the variants from round to round.
A child's CPU time is its user + system time from getrusage(2)
(RUSAGE_CHILDREN, so that the pool's check of its metadata, which runs in
a child of its own, counts); its wall time is that of the whole process.
The table keeps the minimum of the rounds per variant; "CPU µs/transfer"
subtracts the start-up and divides by --transfers, and "ratio" divides
that by pm-gawk's.  A persistent variant counts its runs in a variable
of its own file: the driver checks after every run that this count and
the balances (their sum and a checksum) are those that the driver's own
LCG gives after that many runs, which shows that the state was kept.

``--program VARIANT`` prints a variant's program, to run it by hand::

    python3 Tools/pmem/bench/pmgawk_bank.py --program pmem > /tmp/bank.py
    PMEM_IS_PMEM_FORCE=1 build/Python-3.13.5/python \\
        -X pmem=/dev/shm/bank.pool /tmp/bank.py 200000

Exit status: 0; 2 if gawk lacks persistent memory or a child failed.
There is no timing assertion: the line under the table gives the ratios
python -X pmem / pm-gawk and says whether those of whole runs, wall and
CPU, meet the target (python -X pmem at most 4x pm-gawk's time).
"""

import argparse
import os
import re
import resource
import shutil
import string
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# The upstream version of the base, as the build tree is named.
VERSION = subprocess.run(["sh", str(REPO / "Tools/pmem/tree.sh"), "version"],
                         stdout=subprocess.PIPE, text=True).stdout.strip()

ACCOUNTS = 1000
START_BALANCE = 1000
MAX_AMOUNT = 100
SEED = 20240601
DEFAULT_TRANSFERS = 200_000
HEAP_SIZE = 1 << 30             # sparse: only the pages used take memory
TARGET = 4.0                    # python -X pmem at most 4x pm-gawk's time

# The awk program.  Under pm-gawk all its variables persist: the first
# run makes the accounts; `runs` counts the runs that made transfers.
AWK_PROGRAM = string.Template("""\
BEGIN {
    if (!initialized) {
        for (i = 0; i < $accounts; i++)
            accounts[i] = $start
        runs = 0
        initialized = 1
    }
    state = $seed
    for (t = 0; t < transfers; t++) {
        state = (state * 1664525 + 1013904223) % 4294967296
        a = int(state / 256) % $accounts
        state = (state * 1664525 + 1013904223) % 4294967296
        b = (a + 1 + int(state / 256) % ($accounts - 1)) % $accounts
        state = (state * 1664525 + 1013904223) % 4294967296
        x = 1 + int(state / 256) % $max_amount
        accounts[a] -= x
        accounts[b] += x
    }
    if (transfers > 0)
        runs++
    total = checksum = 0
    for (i = 0; i < $accounts; i++) {
        total += accounts[i]
        checksum += (i + 1) * accounts[i]
    }
    printf "%d %d %d\\n", runs, total, checksum
}
""")

# The Python program, put together by python_program(): a head, the loop
# (at module level or in a function) and a tail.
PYTHON_HEAD = string.Template("""\
import sys
$import_pmem
try:
    accounts
except NameError:           # the first run (a new pool, or none)
    accounts = {i: $start for i in range($accounts)}
    runs = 0
transfers = int(sys.argv[1])
""")
PYTHON_LOOP = string.Template("""\
state = $seed
for t in range(transfers):
    state = (state * 1664525 + 1013904223) % 4294967296
    a = (state >> 8) % $accounts
    state = (state * 1664525 + 1013904223) % 4294967296
    b = (a + 1 + (state >> 8) % ($accounts - 1)) % $accounts
    state = (state * 1664525 + 1013904223) % 4294967296
    x = 1 + (state >> 8) % $max_amount
$transfer""")
TRANSFER_PMEM = """\
    with pmem.transaction():
        accounts[a] -= x
        accounts[b] += x
"""
TRANSFER_PLAIN = """\
    accounts[a] -= x
    accounts[b] += x
"""
PYTHON_TAIL = string.Template("""\
if transfers:
    runs += 1
print(runs, sum(accounts.values()),
      sum((i + 1) * accounts[i] for i in range($accounts)))
""")

# name: (label, the kind of program, persistent)
VARIANTS = {
    "pm-gawk": ("pm-gawk, GAWK_PERSIST_FILE", "awk", True),
    "pmem": ("python -X pmem, loop at module level", "pmem", True),
    "pmem-function": ("python -X pmem, loop in a function", "pmem-function",
                      True),
    "gawk": ("gawk, no heap file", "awk", False),
    "python": ("python, no pool (plain dicts)", "python", False),
}
PRIMARY, BASE = "pmem", "pm-gawk"


class BenchError(Exception):
    """A child failed or printed what the driver did not expect."""


def constants():
    """The values that the programs' templates substitute."""
    return {"accounts": ACCOUNTS, "start": START_BALANCE, "seed": SEED,
            "max_amount": MAX_AMOUNT}


def python_program(kind):
    """The Python program of kind "pmem", "pmem-function" or "python"."""
    values = constants()
    values["transfer"] = TRANSFER_PLAIN if kind == "python" else TRANSFER_PMEM
    values["import_pmem"] = "" if kind == "python" else "\nimport pmem\n"
    loop = PYTHON_LOOP.substitute(values)
    if kind == "pmem-function":
        loop = ("\n\ndef transfer_all(transfers):\n"
                + textwrap.indent(loop, "    ")
                + "\n\ntransfer_all(transfers)\n")
    return (PYTHON_HEAD.substitute(values) + loop
            + PYTHON_TAIL.substitute(values))


def program(kind):
    """The source of a program kind ("awk" or a Python kind)."""
    if kind == "awk":
        return AWK_PROGRAM.substitute(constants())
    return python_program(kind)


def expected_results(n, runs):
    """[(total, checksum)] after 0, 1, ... runs runs of n transfers.

    The driver's own copy of the programs' LCG: bank/run.py's, a 32-bit
    LCG with Numerical Recipes' constants whose upper 24 bits are used.
    """
    balances = [START_BALANCE] * ACCOUNTS
    results = []
    for run in range(runs + 1):
        if run:
            state = SEED
            for _ in range(n):
                draws = []
                for _ in range(3):
                    state = (state * 1664525 + 1013904223) & 0xFFFFFFFF
                    draws.append(state >> 8)
                source = draws[0] % ACCOUNTS
                target = (source + 1 + draws[1] % (ACCOUNTS - 1)) % ACCOUNTS
                amount = 1 + draws[2] % MAX_AMOUNT
                balances[source] -= amount
                balances[target] += amount
        results.append((sum(balances),
                        sum((i + 1) * b for i, b in enumerate(balances))))
    return results


class Variant:
    """One variant: its command lines, its files and its best figures."""

    def __init__(self, name, directory, python, gawk):
        self.name = name
        self.label, self.kind, self.persistent = VARIANTS[name]
        # Not pmem.py: the script's directory comes first in sys.path.
        suffix = ".awk" if self.kind == "awk" else ".py"
        self.source = os.path.join(directory, f"bank-{name}{suffix}")
        Path(self.source).write_text(program(self.kind))
        self.env = {"PATH": os.environ.get("PATH", os.defpath),
                    "LC_ALL": "C", "PMEM_IS_PMEM_FORCE": "1"}
        self.file = None
        if self.kind == "awk":
            self.command = [gawk, "-f", self.source]
            if self.persistent:
                self.file = os.path.join(directory, f"{name}.pma")
                self.env["GAWK_PERSIST_FILE"] = self.file
        else:
            self.command = [python]
            if self.persistent:
                self.file = os.path.join(directory, f"{name}.pool")
                self.command += ["-X", f"pmem={self.file}"]
            self.command.append(self.source)
        self.runs = 0                   # runs with transfers on its file
        self.best = {}                  # (figure, transfers) -> seconds
        self.stderr = set()

    def argv(self, n):
        """The command line of a run of n transfers."""
        if self.kind == "awk":
            return [self.command[0], "-v", f"transfers={n}",
                    *self.command[1:]]
        return [*self.command, str(n)]

    def create(self, heap_size):
        """Make the file (the heap, sparse; a pool is made by its run)."""
        if self.kind == "awk" and self.persistent:
            with open(self.file, "wb") as heap:
                heap.truncate(heap_size)

    def run(self, n, expected):
        """Run n transfers; check the output; return (wall, cpu) s."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(self.argv(n), env=self.env, cwd="/",
                              stdin=subprocess.DEVNULL, capture_output=True,
                              text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime
               + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise BenchError(f"{self.label} exited with status "
                             f"{proc.returncode}:\n{tail}")
        if proc.stderr.strip():
            self.stderr.add(proc.stderr.strip())
        if n and self.persistent:
            self.runs += 1
        runs = self.runs if self.persistent else int(n > 0)
        want = (runs, *expected[runs])
        try:
            got = tuple(int(word) for word in proc.stdout.split())
        except ValueError:
            got = proc.stdout
        if got != want:
            raise BenchError(f"{self.label}: printed {got!r} after "
                             f"{runs} run(s), expected {want!r} "
                             f"(runs, total, checksum)")
        return wall, cpu

    def record(self, n, wall, cpu):
        """Keep the minimum of each figure."""
        for figure, value in (("wall", wall), ("cpu", cpu)):
            key = figure, n
            self.best[key] = min(self.best.get(key, value), value)


def gawk_version(gawk):
    """gawk --version's first line; BenchError unless it has a PMA."""
    try:
        proc = subprocess.run([gawk, "--version"], capture_output=True,
                              text=True)
    except OSError as exc:
        raise BenchError(f"cannot run {gawk}: {exc} (Debian 12: apt-get "
                         f"install gawk)") from None
    line = proc.stdout.partition("\n")[0]
    match = re.match(r"GNU Awk (\d+)\.(\d+)", line)
    if (proc.returncode != 0 or not match
            or (int(match[1]), int(match[2])) < (5, 2) or "PMA" not in line):
        raise BenchError(f"{gawk} is not gawk 5.2 or later with persistent "
                         f"memory (its --version names a PMA): {line!r}")
    return line


def work_directory():
    """A fresh directory on /dev/shm, or in the default temporary one."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return tempfile.mkdtemp(prefix="pmgawk-bank-", dir="/dev/shm"), ""
    return (tempfile.mkdtemp(prefix="pmgawk-bank-"),
            "note: no writable /dev/shm; the files are on the file system "
            "of the temporary directory")


def measure(variants, n, repeat, heap_size):
    """Warm up, then run the rounds; fill each variant's best figures."""
    expected = expected_results(n, repeat)
    for variant in variants:
        if variant.persistent:
            print(f"  ... warm-up {variant.name}", file=sys.stderr,
                  flush=True)
            variant.create(heap_size)
            variant.run(0, expected)
    for rep in range(repeat):
        for variant in variants[::-1 if rep % 2 else 1]:
            print(f"  ... {variant.name} #{rep + 1}", file=sys.stderr,
                  flush=True)
            for transfers in (0, n):
                variant.record(transfers, *variant.run(transfers, expected))


def print_table(variants, n):
    """The Markdown table and the ratio lines."""
    def per_transfer(variant):
        best = variant.best
        return (best["cpu", n] - best["cpu", 0]) / n * 1e6

    base = next((v for v in variants if v.name == BASE), None)
    print("| variant | wall s | CPU s | start-up CPU s | CPU µs/transfer "
          "| ratio to pm-gawk |")
    print("|---|---:|---:|---:|---:|---:|")
    for variant in variants:
        ratio = (f"{per_transfer(variant) / per_transfer(base):.2f}"
                 if base and per_transfer(base) > 0 else "")
        print(f"| {variant.label} | {variant.best['wall', n]:.3f} | "
              f"{variant.best['cpu', n]:.3f} | {variant.best['cpu', 0]:.3f} "
              f"| {per_transfer(variant):.2f} | {ratio} |")
    primary = next((v for v in variants if v.name == PRIMARY), None)
    if base is None or primary is None:
        return
    wall = primary.best["wall", n] / base.best["wall", n]
    cpu = primary.best["cpu", n] / base.best["cpu", n]
    loop = per_transfer(primary) / per_transfer(base)
    verdict = "met" if max(wall, cpu) <= TARGET else "NOT met"
    print(f"\npython -X pmem / pm-gawk: wall {wall:.2f}x, CPU {cpu:.2f}x "
          f"(whole runs); CPU per transfer, start-up subtracted, "
          f"{loop:.2f}x; target <= {TARGET:g}x: {verdict}")


def parse_args(argv):
    """The command line; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--python",
                   default=str(REPO / f"build/Python-{VERSION}/python"),
                   help="the fork's interpreter (default: the build tree's)")
    p.add_argument("--gawk", default="gawk",
                   help="gawk 5.2 or later (default %(default)s)")
    p.add_argument("--transfers", "-n", type=int, default=DEFAULT_TRANSFERS,
                   help="transfers per timed run (default %(default)s)")
    p.add_argument("--repeat", "-r", type=int, default=3,
                   help="rounds; the minimum counts (default %(default)s)")
    p.add_argument("--heap-size", type=int, default=HEAP_SIZE,
                   help="bytes of pm-gawk's heap file (default %(default)s)")
    p.add_argument("--only", action="append", choices=VARIANTS,
                   help="run only this variant (repeatable)")
    p.add_argument("--program", choices=VARIANTS,
                   help="print the variant's program and exit")
    args = p.parse_args(argv)
    if args.transfers < 1 or args.repeat < 1:
        p.error("--transfers and --repeat must be at least 1")
    if args.heap_size <= 0 or args.heap_size % os.sysconf("SC_PAGE_SIZE"):
        p.error("--heap-size must be a positive multiple of the page size")
    return args


def main(argv):
    """Run the variants; return the exit status."""
    args = parse_args(argv)
    if args.program:
        print(program(VARIANTS[args.program][1]), end="")
        return 0
    names = [name for name in VARIANTS if not args.only or name in args.only]
    start = time.perf_counter()
    directory, note = work_directory()
    try:
        python = os.path.abspath(args.python)
        if any(VARIANTS[name][1] != "awk" for name in names):
            if not os.access(python, os.X_OK):
                raise BenchError(f"{python} is not executable (--python)")
            proc = subprocess.run(
                [python, "-c", "import sys; print(sys.version)"],
                capture_output=True, text=True)
            if proc.returncode != 0:
                raise BenchError(f"cannot run {python}:\n{proc.stderr}")
            print(f"python  {python}: {' '.join(proc.stdout.split())}")
        if any(VARIANTS[name][1] == "awk" for name in names):
            print(f"gawk    {args.gawk}: {gawk_version(args.gawk)}")
        print(f"files   {directory} (PMEM_IS_PMEM_FORCE=1)")
        if note:
            print(note)
        print(f"{args.transfers:,} transfers between {ACCOUNTS} accounts, "
              f"best of {args.repeat}")
        variants = [Variant(name, directory, python, args.gawk)
                    for name in names]
        measure(variants, args.transfers, args.repeat, args.heap_size)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(directory)
    persistent = [v.name for v in variants if v.persistent]
    print(f"check: every run ends with the expected balances, sum "
          f"{ACCOUNTS * START_BALANCE:,}; the runs of "
          f"{', '.join(persistent) or 'no variant'} continue the state "
          f"that the previous run left in the file")
    for variant in variants:
        for text in sorted(variant.stderr):
            print(f"note: {variant.label} wrote to stderr:\n"
                  f"{textwrap.indent(text, '    ')}")
    print()
    print_table(variants, args.transfers)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
