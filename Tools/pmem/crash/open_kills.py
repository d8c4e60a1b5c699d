"""Random-kill test of pmem.open() on a big pool: an open killed at any
instant is finished by the next one.

    ./python Tools/pmem/crash/open_kills.py --n 1000000 --trials 20
                                        [--seed S] [--dir D]

What it proves (issue 17's point on crash harnesses): the open pass of a
pool of --n dict entries 'key%d' -> (i, [i + 0.5]) (about 4 objects an
entry) -- undoing a transaction that a crash left in the log, moving
every pointer when the pool maps elsewhere (PMEM_MMAP_HINT), remapping
static pointers, counting references, freeing garbage, rebuilding every
hash table for another PYTHONHASHSEED -- can be killed (SIGKILL) at any
instant, and the next open finishes it: the pool then holds exactly what
it held, and ``python -m pmem check`` finds it sound.

The pool is made once, with a transaction of --n / 10 changes killed
before its commit, so that the first open has a log to undo.  Each trial
starts an open in a new process with another hash seed and another
mapping address, and kills it at a random instant of 1.3 times how long
the last full open took (so that some finish).  A final open checks every
entry.  The last line is ``open_kills: T trials, K kills during open, F
failures``; the exit status is 1 on a failure, whose pool is kept.
"""

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MAKE = """
import os, signal, sys, pmem
n = int(sys.argv[2])
pool = pmem.open(sys.argv[1], size=max(64 << 20, n * 1000))
pool.ns.d = {}
d = pool.ns.d
with pool:
    for i in range(n):
        d['key%d' % i] = (i, [i + 0.5])
with pool:
    for i in range(0, n, 10):
        d['key%d' % i] = None
    os.kill(os.getpid(), signal.SIGKILL)
"""

OPEN = """
import sys, time, pmem
start = time.perf_counter()
pmem.open(sys.argv[1])
print(time.perf_counter() - start, flush=True)
"""

CHECK = """
import sys, pmem
n = int(sys.argv[2])
d = pmem.open(sys.argv[1]).ns.d
bad = [k for i in range(n)
       for k in ['key%d' % i] if d.get(k) != (i, [i + 0.5])]
print(len(d), len(bad), bad[:3])
"""

HINTS = ["0x500000000000", "0x580000000000", "0x600000000000",
         "0x680000000000", None]


def run(code, *args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)],
                          env=env, capture_output=True, text=True,
                          timeout=timeout)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Kill pmem.open() of a big pool at random instants; "
                    "check that the next open finishes it.")
    parser.add_argument("--n", type=int, default=1_000_000,
                        help="dict entries (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", default=None,
                        help="where the pool goes (default: /dev/shm)")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    seed = (args.seed if args.seed is not None
            else int.from_bytes(os.urandom(4), "little"))
    rng = random.Random(seed)
    say = (lambda *a: None) if args.quiet else print
    base = args.dir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    workdir = tempfile.mkdtemp(prefix="pmem-open-kills-", dir=base)
    path = os.path.join(workdir, "big.pool")
    env = dict(os.environ, PMEM_IS_PMEM_FORCE="1")
    say(f"open_kills: seed {seed}, {args.n:,} entries, pool {path}")
    made = run(MAKE, path, args.n, env=env)
    if made.returncode != -signal.SIGKILL:
        sys.exit(f"open_kills: making the pool failed:\n{made.stderr}")
    duration = args.n / 500_000   # until an open is timed
    kills = failures = 0
    for trial in range(1, args.trials + 1):
        child_env = dict(env, PYTHONHASHSEED=str(rng.randrange(2**32)))
        hint = rng.choice(HINTS)
        if hint is not None:
            child_env["PMEM_MMAP_HINT"] = hint
        proc = subprocess.Popen([sys.executable, "-c", OPEN, path],
                                env=child_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        # Some opens finish first: they time the next ones.
        time.sleep(rng.uniform(0, 1.3 * duration))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        if proc.returncode == -signal.SIGKILL:
            kills += 1
        elif proc.returncode == 0:
            duration = float(out)
        else:
            failures += 1
            say(f"  trial {trial}: the open failed:\n{err}")
            break
        if trial % 5 == 0:
            say(f"  {trial} trials, {kills} kills during open, "
                f"an open takes {duration:.2f} s")
    if not failures:
        checked = run(CHECK, path, args.n, env=env)
        if checked.returncode != 0 or checked.stdout.split()[:2] != [
                str(args.n), "0"]:
            failures += 1
            say(f"  final check: {checked.stdout}{checked.stderr}")
        tool = subprocess.run([sys.executable, "-m", "pmem", "check", path],
                              env=env, capture_output=True, text=True)
        if tool.returncode != 0:
            failures += 1
            say(f"  python -m pmem check: {tool.stdout}{tool.stderr}")
    if failures:
        say(f"open_kills: the pool is kept at {path}")
    else:
        shutil.rmtree(workdir)
    print(f"open_kills: {args.trials} trials, {kills} kills during open, "
          f"{failures} failures", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
