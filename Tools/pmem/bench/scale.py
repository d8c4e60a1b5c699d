"""Pools at the scale of real data, against sqlite3 and shelve (issue 17).

    python3 Tools/pmem/bench/scale.py [--python ./python] [--n 100000 1000000]
                                      [--dir /dev/shm]

For each N, a dict of N entries 'key%d' % i -> i is loaded into a fresh
pool in one transaction (`with pool:`), and the same rows into a sqlite3
table (one transaction) and a shelve; then, each in a new process:

  reopen      pmem.open() of the loaded pool, its peak RSS; sqlite3's
              connect and first query, shelve's open and first lookup
  in use      the pool's bytes in use by objects (pool.stats()), against
              the same objects in DRAM (sys.getsizeof()), the sqlite3
              file, the shelve's files
  bulk load   the load above: per insert, and the loading process's RSS
  per insert  one transaction per insert, for min(N, 20000) inserts into
              the loaded pool; sqlite3 in WAL mode, synchronous=FULL
  gc          pool.gc() of the loaded pool
  rollback    a one-line `with pool:` block that raises, in the loaded
              pool

and prints the table with the targets of issue 17.  Every child runs
with PMEM_IS_PMEM_FORCE=1 (flushes are CPU cache flushes, as on
persistent memory), in --dir (tmpfs by default: /dev/shm).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

# Each child prints one JSON object: its figures, and its peak RSS.
PRELUDE = """
import json, os, resource, sys, time
def done(**figures):
    figures["rss_mb"] = resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))
path, n = sys.argv[1], int(sys.argv[2])
"""

CHILDREN = {
    "pmem_load": """
import pmem
pool = pmem.open(path, size=max(256 << 20, n * 600))
start = time.perf_counter()
with pool:
    pool.ns.d = {}
    d = pool.ns.d
    for i in range(n):
        d['key%d' % i] = i
load = time.perf_counter() - start
# The same objects in DRAM (the small ints are shared).
dram = {'key%d' % i: i for i in range(n)}
size = sys.getsizeof(dram) + sum(
    sys.getsizeof(k) + (sys.getsizeof(v) if not -5 <= v < 257 else 0)
    for k, v in dram.items())
done(load_us=load / n * 1e6, used_mb=pool.stats()["bytes_used"] / 2**20,
     dram_mb=size / 2**20)
""",
    "pmem_open": """
import pmem
start = time.perf_counter()
pool = pmem.open(path)
opened = time.perf_counter() - start
assert len(pool.ns.d) == n
done(open_s=opened)
""",
    "pmem_ops": """
import pmem
pool = pmem.open(path)
d = pool.ns.d
m = min(n, 20000)
start = time.perf_counter()
for i in range(m):
    d['new%d' % i] = i
per_insert = (time.perf_counter() - start) / m
start = time.perf_counter()
try:
    with pool:
        d['x'] = 1
        raise ValueError
except ValueError:
    pass
rollback = time.perf_counter() - start
start = time.perf_counter()
pool.gc()
gc_s = time.perf_counter() - start
done(insert_us=per_insert * 1e6, rollback_s=rollback, gc_s=gc_s)
""",
    "sqlite_load": """
import sqlite3
db = sqlite3.connect(path)
db.execute("pragma journal_mode=wal")
db.execute("pragma synchronous=full")
db.execute("create table t (k text primary key, v integer)")
start = time.perf_counter()
with db:
    db.executemany("insert into t values (?, ?)",
                   (('key%d' % i, i) for i in range(n)))
load = time.perf_counter() - start
db.close()
size = sum(os.path.getsize(p) for p in (path, path + "-wal")
           if os.path.exists(p))
done(load_us=load / n * 1e6, used_mb=size / 2**20)
""",
    "sqlite_open": """
import sqlite3
start = time.perf_counter()
db = sqlite3.connect(path)
assert db.execute("select v from t where k = 'key7'").fetchone() == (7,)
opened = time.perf_counter() - start
db.execute("pragma synchronous=full")
m = min(n, 20000)
start = time.perf_counter()
for i in range(m):
    with db:
        db.execute("insert into t values (?, ?)", ('new%d' % i, i))
per_insert = (time.perf_counter() - start) / m
done(open_s=opened, insert_us=per_insert * 1e6)
""",
    "shelve_load": """
import shelve
start = time.perf_counter()
with shelve.open(path) as s:
    for i in range(n):
        s['key%d' % i] = i
load = time.perf_counter() - start
folder = os.path.dirname(path)
size = sum(os.path.getsize(os.path.join(folder, f))
           for f in os.listdir(folder) if f.startswith("shelf"))
done(load_us=load / n * 1e6, used_mb=size / 2**20)
""",
    "shelve_open": """
import shelve
start = time.perf_counter()
s = shelve.open(path)
assert s['key7'] == 7
opened = time.perf_counter() - start
done(open_s=opened)
""",
}


def child(python, name, path, n, env):
    proc = subprocess.run([python, "-c", PRELUDE + CHILDREN[name], path,
                           str(n)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} (n={n}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(python, n, folder, env):
    pool = os.path.join(folder, "scale.pool")
    db = os.path.join(folder, "scale.db")
    shelf = os.path.join(folder, "shelf")
    r = {"pmem_load": child(python, "pmem_load", pool, n, env)}
    r["pmem_open"] = child(python, "pmem_open", pool, n, env)
    r["pmem_ops"] = child(python, "pmem_ops", pool, n, env)
    r["sqlite_load"] = child(python, "sqlite_load", db, n, env)
    r["sqlite_open"] = child(python, "sqlite_open", db, n, env)
    r["shelve_load"] = child(python, "shelve_load", shelf, n, env)
    r["shelve_open"] = child(python, "shelve_open", shelf, n, env)
    return r


def table(n, r):
    p, po, ops = r["pmem_load"], r["pmem_open"], r["pmem_ops"]
    sq, sqo = r["sqlite_load"], r["sqlite_open"]
    sh, sho = r["shelve_load"], r["shelve_open"]
    rows = [
        ("reopen", f"{po['open_s']:.2f} s, {po['rss_mb']:.0f} MB RSS",
         f"{sqo['open_s']:.3f} s / {sho['open_s']:.3f} s",
         f"<= 0.3 s, RSS <= in use + 64 MB"),
        ("pool bytes in use", f"{p['used_mb']:.0f} MB "
         f"({p['used_mb'] / p['dram_mb']:.2f}x DRAM's {p['dram_mb']:.0f} MB)",
         f"{sq['used_mb']:.0f} MB / {sh['used_mb']:.0f} MB",
         "<= 1.25x the DRAM footprint"),
        (f"{n} inserts, one `with pool:`",
         f"{p['load_us']:.2f} us each, {p['rss_mb']:.0f} MB RSS",
         f"{sq['load_us']:.2f} us (sqlite3) / {sh['load_us']:.2f} us",
         "<= 1 us per insert, memory bounded"),
        ("one transaction per insert", f"{ops['insert_us']:.2f} us",
         f"{sqo['insert_us']:.2f} us (sqlite3 WAL FULL)", "<= 2 us"),
        ("pool.gc()", f"{ops['gc_s']:.2f} s", "", "<= 0.3 s"),
        ("roll back a one-line transaction",
         f"{ops['rollback_s'] * 1e3:.3f} ms",
         "", "<= 1 ms"),
    ]
    out = [f"\n{n:,} entries ('key%d' % i -> i)", "",
           "| what | now | sqlite3 / shelve | target |",
           "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=os.path.join(REPO, "python"))
    parser.add_argument("--n", type=int, nargs="+",
                        default=[100_000, 1_000_000])
    parser.add_argument("--dir", default="/dev/shm")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PMEM_IS_PMEM_FORCE"] = "1"
    for n in args.n:
        folder = tempfile.mkdtemp(prefix="pmem-scale-", dir=args.dir)
        try:
            print(table(n, measure(args.python, n, folder, env)))
            sys.stdout.flush()
        finally:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
