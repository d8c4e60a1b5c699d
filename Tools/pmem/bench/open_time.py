"""How long opening a pool takes, by the number of objects in it.

    python3 Tools/pmem/bench/open_time.py [--python ./python] [--repeat 3]

Builds, in a child process, a pool of about N objects (a dict of N/4
str keys, each mapping to a tuple of an int and a float) for N = 10^4,
10^5 and 10^6, then times pmem.open() in fresh processes (the minimum of
--repeat runs) and prints it against the target of issue 4: 10^6 objects
in under 1 s.  Opening is the pass that makes a pool's objects the
process's (types, static pointers, reference counts, unreachable
allocations freed, dict and set tables rehashed).

The children run with PMEM_IS_PMEM_FORCE=1 (flushes are CPU cache
flushes, as on persistent memory) unless --msync is given, which leaves
libpmemobj to msync() the ordinary files the pools live in.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

BUILD = """
import sys, pmem
path, n = sys.argv[1], int(sys.argv[2])
pool = pmem.open(path, size=int(sys.argv[3]))
pool.ns.data = {}
data = pool.ns.data
with pool:
    for i in range(n // 4):
        data[f"k{i}"] = (i, i + 0.5)
print(pool.stats()["objects"])
"""

OPEN = """
import sys, time
t = time.perf_counter()
import pmem
pool = pmem.open(sys.argv[1])
print(time.perf_counter() - t, pool.stats()["objects"])
"""


def run(python, code, *args, env):
    proc = subprocess.run([python, "-c", textwrap.dedent(code), *args],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"child failed:\n{proc.stderr}")
    return proc.stdout.split()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=os.path.join(REPO, "python"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--msync", action="store_true",
                        help="let libpmemobj msync() (no PMEM_IS_PMEM_FORCE)")
    args = parser.parse_args()
    env = dict(os.environ)
    if not args.msync:
        env["PMEM_IS_PMEM_FORCE"] = "1"
    print(f"{'objects':>10} {'open, s':>10} {'per object':>12}")
    with tempfile.TemporaryDirectory(prefix="pmem-open-") as tmp:
        for n in (10**4, 10**5, 10**6):
            path = os.path.join(tmp, f"{n}.pool")
            size = max(64 << 20, n * 320)
            objects = int(run(args.python, BUILD, path, str(n), str(size),
                              env=env)[0])
            best = min(float(run(args.python, OPEN, path, env=env)[0])
                       for _ in range(args.repeat))
            print(f"{objects:>10,} {best:>10.3f} {best / objects * 1e6:>9.2f} us",
                  flush=True)
            os.unlink(path)
    print("target: 10^6 objects open in under 1 s")


if __name__ == "__main__":
    main()
