"""Random-kill test of python -X pmem: a bank whose globals persist.

    ./python Tools/pmem/crash/namespace_kills.py --mode both --trials 1000
                                        [--seed S] [--accounts N] [--dir D]

What it proves (acceptance point 3 of -X pmem): a program whose module
globals live in a pool, killed with SIGKILL at random instants -- while
the interpreter starts, while the pool is created or opened, in its
set-up lines, in its loop -- and started again, as a real program would
be, never loses or creates money when each transfer is one ``with
pmem.transaction():`` block (mode tx); without the block (mode stmt),
each statement is still atomic: no binding or value is half-written, no
structure is damaged, every global holds its old or its new value, and
the only money missing is that of the one transfer in flight.

The programs.  Each mode writes a small program, prog_tx.py or
prog_stmt.py, and runs it as ``python -X pmem=POOL prog.py`` (or with
PYTHONPMEM=POOL): it makes its accounts on the first run (``if
"accounts" not in globals():``) and then makes transfers for ever.
Transfer ``done`` is a pure function of the program's SEED and of its
persisted counter ``done``.  Each iteration also rebinds a str (label),
a tuple (last), and numbers and a short str that only the namespace
refers to, which -X pmem rewrites in place in the pool (ratio, a float;
tag, a str of 5 characters; stamp, an int of two digits; wobble, an int
of two digits, then a negative one, a positive one and a small int;
moved, the sum of the amounts); it appends to a list (history) and trims
it, and deletes or makes again a dict (spare).  In mode tx the whole
iteration is one transaction.  In mode stmt each statement commits alone; the
program records the transfer in flight, ``pending = (done, a, b, x,
old_a, old_b, moved + x)``, before its balance statements and clears it
after, and its set-up lines finish a transfer that a kill cut short.
What a restarted program does again is idempotent (the statements of
the loop before ``pending = ...``, the set-up lines' assignments from
pending), so it passes through the same states again: the pool holds,
at every instant, one state of a single sequence, the one that this
script's model steps through.

Each trial starts the program on the pool that the earlier trials left
and SIGKILLs it after a random delay: a share of the delays falls within
the start-up (the interpreter's, then the pool's open), the rest in the
loop; and a few kills follow the program's first line at once, to land
in its set-up lines, which take a fraction of a millisecond.  A
sitecustomize module on the program's PYTHONPATH marks the end of the
interpreter's start and the program's first line marks the end of the
pool's open, so each kill is counted where it landed.  Then, in most
trials, a checker process opens the pool (a read-only copy of it, as
``python -m pmem check`` does, or the pool itself, mapped elsewhere and
with another hash seed) and sends its namespace; the checker has looked
every key up, and on a copy pool.gc() must find nothing to free.  This
script checks the money (the sum of the balances, plus the amount of a
half-done transfer in mode stmt) and the types, then looks for the
namespace in the model's sequence of states, from the one the last
check found: a namespace that is none of them, or one that went back,
is a failure.  The trials without a check leave the kill's state to the
program's own start-up.  Now and then the pool is retired (checked with
``python -m pmem check``) and a new one is started, so that kills land
in the creation of pools too.

Figures: the kills by phase (interpreter start, pool creation, pool
open, set-up lines, loop), the transfers committed, the checks, and in
mode stmt where in the loop the kills left the program.  The last line
of each mode is ``namespace_kills: MODE: T trials, K kills during
start-up, F failures``.  On a failure the pools (after, and as the
failing trial found it: before.pool), the program and the seed and trial
are printed; the exit status is 1.  The kills are timed, so the same
--seed need not fail the same way: run the program on a copy of
before.pool to reproduce.
"""

import argparse
import collections
import marshal
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

FAST_FLUSH = {"PMEM_IS_PMEM_FORCE": "1"}
# Where the checker maps the pool when it opens the pool itself: the
# program's next open then moves every pointer back.
HINTS = ("0x680000000000", "0x500000000000", "0x580000000000")
START_SHARE = 0.4       # trials whose kill aims at the start-up
SETUP_SHARE = 0.1       # ... at the program's set-up lines
SETUP_WINDOW = 0.0003   # seconds after its first line, at most
LOOP_WINDOW = 0.25      # seconds of loop after the start-up, at most
CHECK_SHARE = 0.75      # trials followed by a check
DIRECT_SHARE = 0.3      # checks that open the pool itself, not a copy
NEW_POOL_SHARE = 0.02   # trials after which the pool is retired
TIMEOUT = 60            # seconds a program or a check may take

# The programs.  @SEED@ and @N@ are replaced; the markers that they
# print ("main", "loop") tell the parent how far each run got.
PROGRAM_HEAD = '''\
"""A bank whose globals persist: python -X pmem=POOL {name}.

Written by Tools/pmem/crash/namespace_kills.py (mode {mode}).
"""

import random
import time
{imports}
print("main", time.monotonic(), flush=True)

SEED = @SEED@
N = @N@
TOTAL = 100 * N


def transfer(i):
    """Transfer i: (from, to, amount), the same in every run."""
    rng = random.Random(SEED * 1_000_003 + i)
    a, b = rng.sample(range(N), 2)
    return f"a{{a}}", f"a{{b}}", rng.randrange(1, 100)


'''

# A turn of the loop but for the transfer itself, in both modes: the
# values that -X pmem stores in the ways it has (in place, a pointer, a
# copy, a moved container, a deletion).
ITERATION = '''\
a, b, x = transfer(done)
label = f"{x} from {a} to {b}"
ratio = x / TOTAL
tag = f"{done % 100000:05d}"
stamp = 2 ** 40 + done
wobble = (2 ** 35 + done, -1000 - done, 1000 + done, 7)[done % 4]
last = (done, a, b, x)
if not history or history[-1] != last:
    history.append(last)
if len(history) > 40:
    del history[:20]
if done % 4 == 0:
    if "spare" in globals():
        del spare
else:
    spare = {"n": done, "pair": [a, b], "big": 2 ** 70 + done}
'''

TX_PROGRAM = PROGRAM_HEAD.format(name="prog_tx.py", mode="tx",
                                 imports="\nimport pmem\n") + '''\
with pmem.transaction():
    if "accounts" not in globals():
        accounts = {f"a{n}": TOTAL // N for n in range(N)}
        done = 0
        moved = 0
        history = []

print("loop", done, time.monotonic(), flush=True)
while True:
    with pmem.transaction():
''' + textwrap.indent(ITERATION, ' ' * 8) + '''        accounts[a] -= x
        accounts[b] += x
        moved += x
        done += 1
'''

STMT_PROGRAM = PROGRAM_HEAD.format(name="prog_stmt.py", mode="stmt",
                                   imports="") + '''\
# Each statement is one transaction: each name is made on its own.
if "accounts" not in globals():
    accounts = {f"a{n}": TOTAL // N for n in range(N)}
if "done" not in globals():
    done = 0
if "moved" not in globals():
    moved = 0
if "pending" not in globals():
    pending = None
if "history" not in globals():
    history = []
if pending is not None and pending[0] == done:
    # A kill cut transfer `done` short: finish it from its record (each
    # statement is atomic, and doing them twice does no harm).
    accounts[pending[1]] = pending[4] - pending[3]
    accounts[pending[2]] = pending[5] + pending[3]
    moved = pending[6]
    done += 1
pending = None

print("loop", done, time.monotonic(), flush=True)
while True:
''' + textwrap.indent(ITERATION, ' ' * 4) + '''    pending = (done, a, b, x, accounts[a], accounts[b], moved + x)
    accounts[a] -= x
    accounts[b] += x
    moved += x
    done += 1
    pending = None
'''

PROGRAMS = {"tx": TX_PROGRAM, "stmt": STMT_PROGRAM}

# On the program's PYTHONPATH: the interpreter has started, the pool's
# open comes next.
SITECUSTOMIZE = '''\
import os, time
os.write(1, b"site %.6f\\n" % time.monotonic())
'''

# python -c CHECKER POOL copy|direct: the namespace, marshalled, with what
# the checker found wrong; b"absent" when there is no pool.
CHECKER = '''\
import contextlib, marshal, os, sys
import pmem
from pmem.__main__ import read_only_copy

def walk(value, where, problems):
    """Every key found again by a lookup; len() as long as iteration."""
    t = type(value)
    if t is dict:
        n = 0
        for key in value:
            n += 1
            if key not in value:
                problems.append(f"{where}: key {key!r} not found by lookup")
        if n != len(value):
            problems.append(f"{where}: len() {len(value)}, {n} keys")
        for key, item in value.items():
            walk(item, f"{where}[{key!r}]", problems)
    elif t in (list, tuple):
        if sum(1 for _ in value) != len(value):
            problems.append(f"{where}: len() {len(value)}, other items")
        for n, item in enumerate(value):
            walk(item, f"{where}[{n}]", problems)

path, how = sys.argv[1], sys.argv[2]
out = sys.stdout.buffer
if not os.path.exists(path):
    out.write(b"absent")
    sys.exit(0)
if how == "copy":
    opening = read_only_copy(path)
else:
    opening = contextlib.nullcontext(path)
with opening as where:
    pool = pmem.open(where, create=False)
    ns = dict(vars(pool.ns))
    problems = []
    walk(ns, "ns", problems)
    objects = pool.stats()["objects"]
    garbage = pool.gc() if how == "copy" else 0
    out.write(marshal.dumps((ns, problems, objects, garbage)))
'''


# --- the model --------------------------------------------------------------

def transfer(seed, n, i):
    """Transfer i of the program: as its transfer()."""
    rng = random.Random(seed * 1_000_003 + i)
    a, b = rng.sample(range(n), 2)
    return f"a{a}", f"a{b}", rng.randrange(1, 100)


class Bank:
    """The program's namespace, as a sequence of states: step() goes to
    the next one, which the statement self.label made."""

    def __init__(self, mode, seed, n):
        self.mode = mode
        self.seed = seed
        self.n = n
        self.ns = {}
        self.label = "(the pool made, nothing bound)"
        self._steps = self._run()

    def step(self):
        self.label = next(self._steps)

    @property
    def done(self):
        return self.ns.get("done")

    def _run(self):
        ns = self.ns
        ns["SEED"] = self.seed
        yield "SEED = ..."
        ns["N"] = self.n
        yield "N = ..."
        ns["TOTAL"] = 100 * self.n
        yield "TOTAL = ..."
        accounts = {f"a{i}": 100 for i in range(self.n)}
        if self.mode == "tx":
            ns.update(accounts=accounts, done=0, moved=0, history=[])
            yield "the set-up transaction"
            while True:
                for _ in self._iteration():
                    pass
                yield "the transaction of a transfer"
        ns["accounts"] = accounts
        yield "accounts = ..."
        ns["done"] = 0
        yield "done = 0"
        ns["moved"] = 0
        yield "moved = 0"
        ns["pending"] = None
        yield "pending = None (set-up)"
        ns["history"] = []
        yield "history = []"
        while True:
            yield from self._iteration()

    def _iteration(self):
        """The loop's body, a state after each statement (in mode stmt)."""
        ns = self.ns
        stmt = self.mode == "stmt"
        d = ns["done"]
        a, b, x = transfer(self.seed, self.n, d)
        ns["a"] = a
        yield "a, b, x = transfer(done): a"
        ns["b"] = b
        yield "a, b, x = transfer(done): b"
        ns["x"] = x
        yield "a, b, x = transfer(done): x"
        ns["label"] = f"{x} from {a} to {b}"
        yield "label = ..."
        ns["ratio"] = x / ns["TOTAL"]
        yield "ratio = ..."
        ns["tag"] = f"{d % 100000:05d}"
        yield "tag = ..."
        ns["stamp"] = 2 ** 40 + d
        yield "stamp = ..."
        ns["wobble"] = (2 ** 35 + d, -1000 - d, 1000 + d, 7)[d % 4]
        yield "wobble = ..."
        last = ns["last"] = (d, a, b, x)
        yield "last = ..."
        history = ns["history"]
        if not history or history[-1] != last:
            history.append(last)
            yield "history.append(last)"
        if len(history) > 40:
            del history[:20]
            yield "del history[:20]"
        if d % 4 == 0:
            if "spare" in ns:
                del ns["spare"]
                yield "del spare"
        else:
            ns["spare"] = {"n": d, "pair": [a, b], "big": 2 ** 70 + d}
            yield "spare = {...}"
        accounts = ns["accounts"]
        if stmt:
            ns["pending"] = (d, a, b, x, accounts[a], accounts[b],
                             ns["moved"] + x)
            yield "pending = (...)"
        accounts[a] -= x
        yield "accounts[a] -= x"
        accounts[b] += x
        yield "accounts[b] += x"
        ns["moved"] += x
        yield "moved += x"
        ns["done"] = d + 1
        yield "done += 1"
        if stmt:
            ns["pending"] = None
            yield "pending = None"


def canon(value):
    """value as a hashable form that tells types apart (1, 1.0 and True
    differ) and ignores the order of dicts."""
    t = type(value)
    if t is dict:
        return ("dict", frozenset((canon(k), canon(v))
                                  for k, v in value.items()))
    if t in (list, tuple):
        return (t.__name__, tuple(canon(v) for v in value))
    return (t.__name__, value)


def differences(pool, model, limit=4):
    """How namespace pool differs from model, in words (a list)."""
    found = []
    for name in sorted(pool.keys() | model.keys()):
        if name not in model:
            found.append(f"{name} = {short(pool[name])} is not in the model")
        elif name not in pool:
            found.append(f"{name} is missing (model: {short(model[name])})")
        elif canon(pool[name]) != canon(model[name]):
            p, m = pool[name], model[name]
            if type(p) is type(m) is dict and p.keys() == m.keys():
                keys = [k for k in p if canon(p[k]) != canon(m[k])]
                found.append(f"{name}: " + ", ".join(
                    f"[{k!r}] is {short(p[k])}, model {short(m[k])}"
                    for k in keys[:6]))
            else:
                found.append(f"{name} is {short(p)}, model {short(m)}")
    if len(found) > limit:
        found[limit:] = [f"and {len(found) - limit} more"]
    return found


def short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# --- the harness ------------------------------------------------------------

class Failure(Exception):
    """The pool is not what the program may have left."""


PHASES = ("interpreter start", "pool creation", "pool open", "set-up lines",
          "loop")
START_UP = PHASES[:3]


class Harness:
    """The trials of one mode, on pools in workdir."""

    def __init__(self, mode, seed, accounts, workdir, say):
        self.mode = mode
        self.seed = seed
        self.n = accounts
        self.say = say
        self.rng = random.Random(f"{seed}/{mode}")
        self.dir = os.path.join(workdir, mode)
        os.mkdir(self.dir)
        self.path = os.path.join(self.dir, "bank.pool")
        self.before = os.path.join(self.dir, "before.pool")
        self.program = os.path.join(self.dir, f"prog_{mode}.py")
        site = os.path.join(self.dir, "site")
        os.mkdir(site)
        with open(os.path.join(site, "sitecustomize.py"), "w") as f:
            f.write(SITECUSTOMIZE)
        self.env = dict(os.environ, **FAST_FLUSH)
        self.env.pop("PYTHONPMEM", None)
        self.env.pop("PMEM_MMAP_HINT", None)
        self.program_env = dict(self.env, PYTHONPATH=site)
        # Figures.
        self.kills = collections.Counter()          # by phase
        self.found = collections.Counter()          # by model label
        self.checks = collections.Counter()         # copy, direct, final
        self.half_done = set()      # (pool, done) of half-done transfers
        self.finishing = 0          # set-up kills with a transfer to finish
        self.in_create = 0
        self.max_objects = 0
        self.pools = 0
        self.transfers = 0          # in the pools retired
        self.last_run = (0.0, b"", b"")
        self.checker_times = []
        # Seconds from the start to the "loop" marker, for new and for
        # existing pools: the last ones, to aim the start-up kills.
        self.start_times = {True: [0.2], False: [0.08]}

    # -- pools --

    def new_pool(self):
        """Retire the pool; the next trial creates one, for a new
        workload seed."""
        if self.pools:
            self.transfers += self.model.done or 0
        for name in (self.path, self.path + ".creating"):
            if os.path.exists(name):
                os.remove(name)
        self.workload = self.rng.randrange(2**31)
        source = PROGRAMS[self.mode].replace("@SEED@", str(self.workload))
        with open(self.program, "w") as f:
            f.write(source.replace("@N@", str(self.n)))
        self.model = Bank(self.mode, self.workload, self.n)
        self.pool_seen = False      # by a check, or by a run's "main"
        self.last_found = "(no check yet)"
        self.to_finish = False      # a transfer for the set-up lines
        self.pools += 1

    # -- a run of the program --

    def run_program(self):
        """Start the program, kill it; the phase that the kill hit."""
        creating = not os.path.exists(self.path)
        start_up = statistics.median(self.start_times[creating])
        aim = self.rng.random()
        after_main = None
        if creating or aim < START_SHARE:
            delay = self.rng.uniform(0, 1.2 * start_up)
        elif aim < START_SHARE + (0.5 if self.to_finish else SETUP_SHARE):
            # As soon as the program's first line has run (mode stmt
            # finishes a transfer in the set-up lines that follow).
            delay = after_main = self.rng.uniform(0, SETUP_WINDOW)
        else:
            delay = start_up + self.rng.uniform(0, LOOP_WINDOW)
        env = dict(self.program_env,
                   PYTHONHASHSEED=str(self.rng.randrange(2**32)))
        if os.path.exists(self.path):
            shutil.copyfile(self.path, self.before)
        elif os.path.exists(self.before):
            os.remove(self.before)
        if self.rng.random() < 0.25:
            env["PYTHONPMEM"] = self.path
            command = [sys.executable, self.program]
        else:
            command = [sys.executable, "-X", f"pmem={self.path}",
                       self.program]
        start = time.monotonic()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        watchdog = threading.Timer(TIMEOUT, proc.kill)
        watchdog.start()
        try:
            seen = b""
            if after_main is not None:
                while not seen.endswith(b"\n") or b"main " not in seen:
                    line = proc.stdout.readline()
                    if not line:
                        break
                    seen += line
                time.sleep(after_main)
                delay = time.monotonic() - start
            else:
                time.sleep(max(0.0, start + delay - time.monotonic()))
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate()
            out = seen + out
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.last_run = (delay, out, err)
        marks = {}
        for line in out.decode(errors="replace").splitlines():
            words = line.split()
            if words:
                marks[words[0]] = words[1:]
        if proc.returncode != -signal.SIGKILL or err:
            raise Failure(f"the program ended with {proc.returncode} "
                          f"before its kill ({delay * 1000:.1f} ms), "
                          f"stdout {out[-300:]!r}, stderr:\n"
                          f"{err.decode(errors='replace')}")
        if "loop" in marks:
            phase = "loop"
            try:
                reached = float(marks["loop"][1])
            except (IndexError, ValueError):
                pass        # the kill cut the line short
            else:
                times = self.start_times[creating]
                times.append(reached - start)
                del times[:-20]
        elif "main" in marks:
            phase = "set-up lines"
            self.finishing += self.to_finish
        elif "site" in marks:
            phase = "pool creation" if creating else "pool open"
            if os.path.exists(self.path + ".creating"):
                # Inside pmemobj_create(): the next run makes it again.
                self.in_create += 1
        else:
            phase = "interpreter start"
        if "main" in marks:
            # The program ran: the state is known no more.
            self.pool_seen = True
            self.to_finish = False
        self.kills[phase] += 1
        return phase

    # -- checks --

    def check(self, how):
        """Run the checker on the pool; its findings."""
        env = dict(self.env, PYTHONHASHSEED=str(self.rng.randrange(2**32)))
        if how == "direct":
            env["PMEM_MMAP_HINT"] = self.rng.choice(HINTS)
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", CHECKER, self.path, how], env=env,
            capture_output=True, timeout=TIMEOUT)
        self.checker_times.append(time.monotonic() - start)
        if proc.returncode != 0 or proc.stderr:
            raise Failure(f"the checker ({how}) ended with "
                          f"{proc.returncode}:\n"
                          f"{proc.stderr.decode(errors='replace')}")
        self.checks[how] += 1
        if proc.stdout == b"absent":
            if self.pool_seen:
                raise Failure("the pool is gone: a program opened it, or "
                              "a check found it, before")
            return None
        return marshal.loads(proc.stdout)

    def verify(self, found):
        """found (the checker's) must be a state of the model's sequence
        from where the last check left it, with all the money."""
        if found is None:
            return "(no pool)"
        ns, problems, objects, garbage = found
        self.pool_seen = True
        self.max_objects = max(self.max_objects, objects)
        if problems:
            raise Failure("the checker found damage: " + "; ".join(problems))
        if garbage:
            raise Failure(f"pool.gc() freed {garbage} objects that "
                          f"nothing reached (a leak)")
        d = ns.get("done")
        if "done" in ns and (type(d) is not int or d < 0):
            raise Failure(f"done is {short(d)}")
        self.verify_money(ns)
        target = canon(ns)
        candidates = []
        model = self.model
        while True:
            if model.done == d:
                state = canon(model.ns)
                if state == target:
                    break
                candidates.append((model.label,
                                   differences(ns, model.ns)))
            if model.done is not None and (d is None or model.done > d):
                raise Failure(self.describe(ns, candidates))
            model.step()
        self.last_found = f"{model.label}, done={model.done}"
        pending = model.ns.get("pending")
        self.to_finish = type(pending) is tuple and pending[0] == model.done
        return model.label

    def verify_money(self, ns):
        """The money, the balances' types and the accounts' names."""
        if "accounts" not in ns:
            return
        accounts = ns["accounts"]
        names = {f"a{i}" for i in range(self.n)}
        if type(accounts) is not dict or accounts.keys() != names:
            raise Failure(f"accounts is not a dict of the {self.n} "
                          f"accounts: {short(accounts)}")
        odd = {k: v for k, v in accounts.items() if type(v) is not int}
        if odd:
            raise Failure(f"balances that are not ints: {short(odd)}")
        total = 100 * self.n
        money = sum(accounts.values())
        if self.mode == "stmt":
            pending = ns.get("pending")
            if (type(pending) is tuple and len(pending) == 7
                    and pending[0] == ns.get("done")):
                _, a, b, x, old_a, old_b, _ = pending
                if (accounts.get(a) == old_a - x
                        and accounts.get(b) == old_b):
                    # Transfer `done` debited a, and not yet credited b.
                    self.half_done.add((self.pools, pending[0]))
                    if money + x != total:
                        raise Failure(
                            f"the accounts hold {money}: with the {x} of "
                            f"the half-done transfer {pending}, "
                            f"{money + x}, not {total}")
                    return
        if money != total:
            raise Failure(f"the accounts hold {money}, not {total} "
                          f"({money - total:+d}; done={ns.get('done')}, "
                          f"pending={short(ns.get('pending'))})")

    def describe(self, ns, candidates):
        where = f"done={ns.get('done')}"
        if "pending" in ns:
            where += f", pending={short(ns['pending'])}"
        if not candidates:
            return (f"{where}: the pool went back (the last check found "
                    f"the state after {self.last_found})")
        best = min(candidates, key=lambda c: len(c[1]))
        return (f"{where}: the pool is none of the {len(candidates)} "
                f"states that the program passes through with this "
                f"done; nearest, after {best[0]!r}: "
                + "; ".join(best[1]))

    def final(self):
        """The last check of a pool: the checker, and pmem check."""
        found = self.check("copy")
        self.verify(found)
        if found is None:
            return
        proc = subprocess.run([sys.executable, "-m", "pmem", "check",
                               self.path], env=self.env,
                              capture_output=True, text=True,
                              timeout=TIMEOUT)
        self.checks["pmem check"] += 1
        if proc.returncode != 0:
            raise Failure(f"python -m pmem check: {proc.stdout}"
                          f"{proc.stderr}")

    # -- the trials --

    def trial(self):
        phase = self.run_program()
        if self.rng.random() < CHECK_SHARE:
            how = "direct" if self.rng.random() < DIRECT_SHARE else "copy"
            label = self.verify(self.check(how))
            if phase in ("set-up lines", "loop"):
                self.found[label] += 1

    def keep(self, number):
        """Keep the pools and the program of a failure: a message."""
        kept = os.path.join(self.dir, f"failed-{number}")
        os.mkdir(kept)
        for name in (self.path, self.before, self.program):
            if os.path.exists(name):
                shutil.copy(name, kept)
        delay, out, err = self.last_run
        return (f"kept in {kept}: bank.pool (after), before.pool (as "
                f"the trial found it), {os.path.basename(self.program)}; "
                f"the trial killed the program after "
                f"{delay * 1000:.1f} ms, its output {out[-200:]!r}")

    def run(self, trials, keep_going):
        """The trials; the failures (a list of messages)."""
        failures = []
        start = time.monotonic()
        self.new_pool()
        number = 0
        while number < trials:
            number += 1
            try:
                self.trial()
                if number == trials or self.rng.random() < NEW_POOL_SHARE:
                    self.final()
                    if number < trials:
                        self.new_pool()
            except Failure as exc:
                message = (f"FAILED in mode {self.mode} at trial {number} "
                           f"(--seed {self.seed}, pool {self.pools}, "
                           f"program SEED {self.workload}, the last check "
                           f"found the state after {self.last_found}): "
                           f"{exc}\n  {self.keep(number)}")
                print(f"namespace_kills: {message}", file=sys.stderr,
                      flush=True)
                failures.append(message)
                if not keep_going:
                    break
                self.new_pool()
            if number % 100 == 0 or number == trials:
                self.progress(number, start)
        self.elapsed = time.monotonic() - start
        self.trials = number
        return failures

    def progress(self, number, start):
        elapsed = time.monotonic() - start
        self.say(f"  {number} trials: {self.start_up_kills()} kills during "
                 f"start-up, {self.kills['loop']} in the loop, "
                 f"{self.all_transfers()} transfers, {self.pools} pools, "
                 f"{elapsed / number * 1000:.0f} ms a trial", flush=True)

    def all_transfers(self):
        return self.transfers + (self.model.done or 0)

    def start_up_kills(self):
        return sum(self.kills[p] for p in START_UP)

    def report(self):
        say = self.say
        checker = statistics.median(self.checker_times or [0])
        say(f"  time: {self.elapsed:.1f} s, "
            f"{self.elapsed / max(1, self.trials) * 1000:.0f} ms a trial "
            f"(a check: {checker * 1000:.0f} ms)")
        say("  kills: " + ", ".join(f"{self.kills[p]} {p}" for p in PHASES)
            + f" ({self.in_create} inside pmemobj_create())")
        say(f"  start-up to the loop: "
            f"{statistics.median(self.start_times[False]) * 1000:.0f} ms "
            f"(an existing pool), "
            f"{statistics.median(self.start_times[True]) * 1000:.0f} ms "
            f"(a new one)")
        say(f"  checks: {self.checks['copy']} on a copy, "
            f"{self.checks['direct']} of the pool itself, "
            f"{self.checks['pmem check']} by python -m pmem check; "
            f"{self.pools} pools, {self.all_transfers()} transfers, "
            f"{self.max_objects} objects in a pool at most")
        if self.mode == "stmt":
            say(f"  half-done transfers found (a debited, b not): "
                f"{len(self.half_done)}; kills in the set-up lines of a "
                f"program that had a transfer to finish: {self.finishing}")
        if self.found:
            say("  where the checked kills in the program's lines left it:")
            for label, count in self.found.most_common():
                if count:
                    say(f"    {count:5d}  after {label}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Kill a python -X pmem program at random instants; "
                    "check each time that its persisted globals are "
                    "whole and that no money was lost or created.")
    parser.add_argument("--mode", choices=("tx", "stmt", "both"),
                        default="both",
                        help="each transfer in a `with pmem.transaction():`"
                             " (tx), or each statement alone (stmt) "
                             "(default: %(default)s)")
    parser.add_argument("--trials", type=int, default=50,
                        help="kills per mode (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None,
                        help="the seed of the kills and of the programs "
                             "(default: random)")
    parser.add_argument("--accounts", type=int, default=50,
                        help="accounts in the bank (default: %(default)s)")
    parser.add_argument("--dir", default=None,
                        help="where the pools go (default: a new directory "
                             "under /dev/shm, or the temp dir)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the pools and programs when all passes")
    parser.add_argument("-k", "--keep-going", action="store_true",
                        help="after a failure, keep the pool and go on "
                             "with a new one")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print the summary lines only")
    args = parser.parse_args(argv)
    if args.accounts < 2:
        parser.error("--accounts: 2 at least")
    seed = (args.seed if args.seed is not None
            else int.from_bytes(os.urandom(4), "little"))
    base = args.dir
    if base is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    workdir = tempfile.mkdtemp(prefix="pmem-nskills-", dir=base)
    say = (lambda *a, **k: None) if args.quiet else print
    modes = ("tx", "stmt") if args.mode == "both" else (args.mode,)
    say(f"namespace_kills: seed {seed}, {args.trials} trials a mode, "
        f"{args.accounts} accounts, in {workdir}", flush=True)
    failures = []
    lines = []
    for mode in modes:
        say(f"mode {mode}:", flush=True)
        harness = Harness(mode, seed, args.accounts, workdir, say)
        failed = harness.run(args.trials, args.keep_going)
        harness.report()
        failures += failed
        lines.append(f"namespace_kills: {mode}: {harness.trials} trials, "
                     f"{harness.start_up_kills()} kills during start-up, "
                     f"{len(failed)} failures")
    if failures or args.keep:
        say(f"namespace_kills: the pools are kept in {workdir}")
    else:
        shutil.rmtree(workdir)
    for line in lines:
        print(line, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
