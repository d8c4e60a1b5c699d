"""Bytes an object takes in a pool, against the same object in DRAM.

    ./python Tools/pmem/bench/space.py [--n N] [--dir DIR]

For each kind of value (an int beyond the small ones, a short str, a
small tuple, a float, an instance with a __dict__, an instance with
__slots__), N of them are made in a list of a fresh pool, and the pool's
heap is measured before and after (pool.stats()["bytes_heap"]: a block's
usable size plus libpmemobj's 16-byte header, a small object's share of
its run); the list's own table is left out.  The same values made in DRAM are measured with tracemalloc (the
bytes asked of the allocator: pymalloc rounds each block up to 16).  It
prints bytes per value both ways, and their ratio, as a Markdown table:
issue 17's space report.
"""

import argparse
import os
import subprocess
import sys
import tempfile

KINDS = {
    "int (beyond the small ones)": "10**6 + i",
    "short str (8 characters)": "'k%07d' % i",
    "small tuple (2 ints)": "(10**6 + i, 10**6 + i)",
    "float": "i + 0.5",
    "instance with a __dict__ (2 attributes)": "Point(10**6 + i, 0.5)",
    "instance with __slots__ (2)": "Slotted(10**6 + i, 0.5)",
}

CHILD = r"""
import json, sys, tracemalloc
mode, path, n, expr = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

class Slotted:
    __slots__ = ("x", "y")
    def __init__(self, x, y):
        self.x = x
        self.y = y

make = eval("lambda i: " + expr)
if mode == "dram":
    values = [None] * n
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        values[i] = make(i)
    after = tracemalloc.get_traced_memory()[0]
    print(json.dumps((after - before) / n))
else:
    import pmem
    pool = pmem.open(path, size=max(256 << 20, n * 400))
    pool.ns.values = []
    def used():
        stats = pool.stats()
        count, size = stats["by_type"]["(tables)"]
        return stats["bytes_heap"] - size - 16 * count
    before = used()
    values = pool.ns.values
    with pool:
        for i in range(n):
            values.append(make(i))
    print(json.dumps((used() - before) / n))
"""


def measure(python, mode, directory, n, expr):
    path = os.path.join(directory, "space.pool")
    if os.path.exists(path):
        os.unlink(path)
    env = dict(os.environ, PMEM_IS_PMEM_FORCE="1",
               PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([python, "-c", CHILD, mode, path, str(n), expr],
                          env=env, capture_output=True, text=True,
                          cwd=directory)
    if proc.returncode != 0:
        sys.exit(f"{mode} {expr!r} failed:\n{proc.stderr}")
    return float(proc.stdout.split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable,
                        type=os.path.abspath)
    parser.add_argument("--n", type=int, default=100000)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir(
        "/dev/shm") else tempfile.gettempdir())
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="pmem-space-", dir=args.dir)
    try:
        print(f"{args.n:,} values of each kind\n")
        print("| value | pool bytes | DRAM bytes (asked) | ratio |")
        print("|---|---:|---:|---:|")
        for name, expr in KINDS.items():
            pool = measure(args.python, "pool", directory, args.n, expr)
            dram = measure(args.python, "dram", directory, args.n, expr)
            print(f"| {name} | {pool:.1f} | {dram:.1f} | "
                  f"{pool / dram:.2f} |")
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


if __name__ == "__main__":
    main()
