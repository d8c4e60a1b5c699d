"""What a move that rewrites references costs, against a plain store.

Each store puts a new one-item list into a pool: made in the statement
(nothing else refers to it: the plain move), referred to by a variable,
an item of a list that a loop goes over (for r in records:
rows.append(r)), a value of a dict that a loop goes over, and the items
of a list that extend() takes.  The moves that rewrite references
(issue 16, point 2) find them in this thread's frames, and in the lists
and dicts that its variables refer to; a loop's next item is found in a
few steps whatever the size of its container, so the cost per store
must not grow with n.

Example (from the repository root)::

    $ ./python Tools/pmem/bench/ownership.py --n 2000 20000
    n=20000   fresh  4.95 us   variable 1.02x   list loop 1.01x ...
"""

import argparse
import os
import sys
import tempfile
import time


def run(pool, n):
    pool.ns.rows = []
    pool.ns.d = {}
    rows, d = pool.ns.rows, pool.ns.d
    times = {}

    def timed(name, f):
        del rows[:]
        d.clear()
        start = time.perf_counter()
        f()
        times[name] = (time.perf_counter() - start) / n

    def fresh():
        for i in range(n):
            rows.append([i])

    def variable():
        for i in range(n):
            x = [i]
            rows.append(x)

    records = [[i] for i in range(n)]

    def list_loop():
        for r in records:
            rows.append(r)

    by_key = {i: [i] for i in range(n)}

    def dict_loop():
        for k in by_key:
            d[k] = by_key[k]

    more = [[i] for i in range(n)]

    def extend():
        rows.extend(more)

    for name, f in [("fresh", fresh), ("variable", variable),
                    ("list loop", list_loop), ("dict loop", dict_loop),
                    ("extend", extend)]:
        timed(name, f)
    assert records[-1] is rows[-1] or more[-1] is rows[-1]
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 20000])
    args = parser.parse_args()
    os.environ.setdefault("PMEM_IS_PMEM_FORCE", "1")
    import pmem
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        pool = pmem.open(os.path.join(tmp, "own.pool"), size=1 << 30)
        run(pool, 500)                  # warm-up: the pool's first blocks
        for n in args.n:
            t = run(pool, n)
            base = t["fresh"]
            cells = "   ".join(f"{name} {t[name] / base:.2f}x"
                               for name in t if name != "fresh")
            print(f"n={n:<7} fresh {base * 1e6:5.2f} us   {cells}")
            sys.stdout.flush()
        pool.close()


if __name__ == "__main__":
    main()
