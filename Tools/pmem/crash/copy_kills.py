"""Random-kill test of pmem.copy(): a copy is never half made.

    ./python Tools/pmem/crash/copy_kills.py --trials 200 [--seed S]
                                        [--mode inproc|file|both] [--dir D]

What it proves (issue 17's lifecycle point): a copy of a pool killed at
any instant leaves no copy under its name, or a complete one, which opens
beside its original with what the original held at one instant between
two transactions; and the original is never changed by a copy.

Mode inproc: a process runs transfers between the accounts of a bank in
a pool, one ``with pool:`` block each, in its main thread, while a
second thread copies the pool (pool.copy(), from the process, between
two transactions) to copy-1.pool, copy-2.pool... in turn; half of the
trials take the path of a file system without O_TMPFILE (a temporary
name, DST.copying).  It is SIGKILLed at a random instant.  Mode file: a
process copies the pool, closed, from its file (``python -m pmem
copy``) and is SIGKILLed at a random instant; the pool's bytes must be
as they were.

After each kill, one new process opens the pool and every copy there is,
side by side (each copy has an identity of its own), and reports their
balances and transfer counts: the money of each is the bank's, a copy
has no more transfers than the pool, and a later copy no fewer than an
earlier one.  The processes print a line before and after each copy, so
that a kill is counted as one during a copy when it came between them.
The last line is ``copy_kills: T trials, K kills during copy, F
failures``; the exit status is 1 on a failure, whose directory is kept.
"""

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

ACCOUNTS = 20
MONEY = 1000 * ACCOUNTS
SIZE = 16 << 20

MAKE = f"""
import pmem, sys
pool = pmem.open(sys.argv[1], size={SIZE})
pool.ns.accounts = {{i: 1000 for i in range({ACCOUNTS})}}
pool.ns.done = 0
"""

# The writer and copier of mode inproc: argv is the pool, the directory
# of the copies, the number of the first copy, and whether to do without
# O_TMPFILE.
INPROC = f"""
import os, random, sys, threading, pmem
path, where, first, named = sys.argv[1:]
first = int(first)
if named == "1":
    del os.O_TMPFILE
pool = pmem.open(path, create=False)
accounts = pool.ns.accounts

def copier():
    n = first
    while True:
        print("C", n, flush=True)
        pool.copy(os.path.join(where, f"copy-{{n}}.pool"))
        print("D", n, flush=True)
        n += 1

threading.Thread(target=copier, daemon=True).start()
rng = random.Random()
while True:
    a, b = rng.sample(range({ACCOUNTS}), 2)
    x = rng.randrange(100)
    with pool:
        accounts[a] -= x
        accounts[b] += x
        pool.ns.done += 1
"""

# The copier of mode file: argv is the pool and the copy.
FILE = """
import sys, pmem
print("C", flush=True)
pmem.copy(sys.argv[1], sys.argv[2])
print("D", flush=True)
"""

# Open the pool and every copy at once; print the money and the count of
# each: "name money done".
CHECK = """
import sys, pmem
pools = [pmem.open(path, create=False) for path in sys.argv[1:]]
for path, pool in zip(sys.argv[1:], pools):
    print(path, sum(pool.ns.accounts.values()), pool.ns.done)
"""


def python(code, *args):
    env = dict(os.environ, PMEM_IS_PMEM_FORCE="1")
    env.pop("PYTHONPATH", None)
    return [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code),
            *map(str, args)], env


def run(code, *args):
    argv, env = python(code, *args)
    return subprocess.run(argv, env=env, capture_output=True, text=True,
                          timeout=120)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Harness:

    def __init__(self, workdir, rng, say):
        self.dir = workdir
        self.rng = rng
        self.say = say
        self.pool = os.path.join(workdir, "bank.pool")
        self.trials = 0
        self.kills_during_copy = 0
        self.copies = 0
        self.next_copy = 1
        proc = run(MAKE, self.pool)
        if proc.returncode != 0:
            raise SystemExit(f"copy_kills: cannot make the pool: "
                             f"{proc.stderr}")

    def kill_after(self, argv, env, delay):
        """Run argv, SIGKILL it after delay seconds (unless it ended);
        its stdout lines."""
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        if proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"the process failed "
                                 f"({proc.returncode}): {err}")
        return out.splitlines()

    def trial_inproc(self):
        named = self.rng.random() < 0.5
        argv, env = python(INPROC, self.pool, self.dir, self.next_copy,
                           int(named))
        lines = self.kill_after(argv, env, self.rng.uniform(0.05, 1.5))
        # (A kill may cut the last line short: only whole ones count.)
        started = [int(line[2:]) for line in lines
                   if line.startswith("C ") and line[2:].isdigit()]
        ended = {int(line[2:]) for line in lines
                 if line.startswith("D ") and line[2:].isdigit()}
        if started and started[-1] not in ended:
            self.kills_during_copy += 1
        self.copies += len(ended)
        if started:
            self.next_copy = started[-1] + 1
        return None

    def trial_file(self):
        before = digest(self.pool)
        dst = os.path.join(self.dir, f"copy-{self.next_copy}.pool")
        self.next_copy += 1
        argv, env = python(FILE, self.pool, dst)
        lines = self.kill_after(argv, env, self.rng.uniform(0.0, 0.4))
        if "C" in lines and "D" not in lines:
            self.kills_during_copy += 1
        self.copies += "D" in lines
        if digest(self.pool) != before:
            return "the copy changed the original's bytes"
        return None

    def check(self):
        """Open the pool and its copies side by side; a failure's
        description, or None."""
        names = sorted(os.listdir(self.dir))
        for name in names:
            if name.endswith(".copying"):
                # A copy killed on the path without O_TMPFILE: never
                # under the copy's name.
                os.unlink(os.path.join(self.dir, name))
            elif name != "bank.pool" and not (
                    name.startswith("copy-") and name.endswith(".pool")):
                return f"a stray file {name!r}"
        copies = sorted((n for n in names if n.startswith("copy-")
                         and n.endswith(".pool")),
                        key=lambda n: int(n[5:-5]))
        paths = [self.pool] + [os.path.join(self.dir, n) for n in copies]
        proc = run(CHECK, *paths)
        if proc.returncode != 0:
            return f"the pool and its copies do not open: {proc.stderr}"
        found = [line.split() for line in proc.stdout.splitlines()]
        last = 0
        for path, money, done in found[1:]:
            if int(money) != MONEY:
                return f"{path} holds {money}, not {MONEY}"
            if int(done) > int(found[0][2]):
                return f"{path} has more transfers than the pool"
            if int(done) < last:
                return f"{path} has fewer transfers than an earlier copy"
            last = int(done)
        if int(found[0][1]) != MONEY:
            return f"the pool holds {found[0][1]}, not {MONEY}"
        # Keep the directory small: the newest copy stays.
        for name in copies[:-1]:
            os.unlink(os.path.join(self.dir, name))
        return None

    def run(self, trials, modes):
        for i in range(trials):
            mode = modes[i % len(modes)]
            self.trials += 1
            problem = (self.trial_inproc() if mode == "inproc"
                       else self.trial_file())
            problem = problem or self.check()
            if problem:
                return f"trial {i} ({mode}): {problem}"
            if (i + 1) % 20 == 0:
                self.say(f"  {i + 1} trials, {self.kills_during_copy} kills "
                         f"during copy, {self.copies} copies made",
                         flush=True)
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Kill copies of a pool at random instants; check that "
                    "a copy is absent or complete, and opens beside its "
                    "original.")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--mode", choices=("inproc", "file", "both"),
                        default="both")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", default=None,
                        help="where the pools go (default: a new directory "
                             "under /dev/shm, or the temp dir)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print the summary line only")
    args = parser.parse_args(argv)
    seed = (args.seed if args.seed is not None
            else int.from_bytes(os.urandom(4), "little"))
    base = args.dir
    if base is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    workdir = tempfile.mkdtemp(prefix="pmem-copykills-", dir=base)
    say = (lambda *a, **k: None) if args.quiet else print
    say(f"copy_kills: seed {seed}, {args.trials} trials, in {workdir}",
        flush=True)
    modes = ("inproc", "file") if args.mode == "both" else (args.mode,)
    harness = Harness(workdir, random.Random(seed), say)
    started = time.monotonic()
    failure = harness.run(args.trials, modes)
    say(f"  {harness.copies} copies made, in "
        f"{time.monotonic() - started:.0f} s")
    if failure:
        print(f"copy_kills: FAILED, seed {seed}: {failure}; the pools are "
              f"kept in {workdir}")
    else:
        shutil.rmtree(workdir)
    print(f"copy_kills: {harness.trials} trials, {harness.kills_during_copy} "
          f"kills during copy, {1 if failure else 0} failures", flush=True)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
