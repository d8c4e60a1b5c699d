"""The bank benchmark: one transfer per transaction, several ways.

    ./python Tools/pmem/bench/bank/run.py [--transfers N] [--repeat R]

1000 accounts start at 1000 each; every transfer moves 1..100 from one
account to another in one transaction.  The pairs and amounts come from
one fixed generator (a 32-bit LCG, see transfers()), so every variant
makes the identical sequence; they are computed before the clock starts.
The variants:

    pool dict, with pool:   a pool dict; ``with pool:`` around the two
                            updates (the program of Tools/pmem/demo.py)
    pool dict, process      the same on a pool opened with
                            durability="process": safe against the
                            process being killed, not against a power
                            loss (nothing is flushed to the device)
    pool dict, implicit     the same without ``with``: two implicit
                            transactions per transfer
    pool list, with pool:   a pool list instead of the dict
    C on libpmemobj         bank_pmemobj.c: an int64 array in the root,
                            TX_BEGIN, two pmemobj_tx_add_range_direct(),
                            TX_END
    sqlite3                 WAL, synchronous=FULL; BEGIN, two UPDATEs,
                            COMMIT
    sqlite3, OFF            the same with synchronous=OFF, sqlite's
                            counterpart of durability="process"
    shelve                  two assignments and sync() (dbm; not atomic)
    DRAM dict               a plain dict and a no-op context manager
                            written like pmem.Pool's: the interpreter's
                            share, nothing persistent

Each run of a variant is a fresh child process on fresh files in
/dev/shm (a temporary directory elsewhere when there is none), with
PMEM_IS_PMEM_FORCE=1 in its environment.  A child reports the process
CPU time and the wall time of its transfers and the final balances; the
driver checks that the balances sum to the start sum and are the same
in every variant, and prints the best (minimum) of --repeat runs per
variant as a Markdown table.  The C program is compiled with
``cc -O2 ... -lpmemobj`` into build/bench/ under the repository root,
again only when its source is newer.

With ``--disk DIR`` the files go on DIR's ordinary file system instead,
and the children run with PMEM_IS_PMEM_FORCE=0: libpmemobj makes each of
its persist points an msync() there, and sqlite3 (WAL, synchronous=FULL)
fsyncs the same disk: the comparison for users without persistent
memory.

``--child VARIANT --dir DIR`` runs one variant in this process and
prints its JSON report: the way to profile one, e.g. under callgrind,
where ``--dry`` gives the baseline to subtract (the same set-up and
transfer list, no transfers made).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    HERE))))
C_SOURCE = os.path.join(HERE, "bank_pmemobj.c")
C_BINARY = os.path.join(REPO, "build", "bench", "bank_pmemobj")

ACCOUNTS = 1000
START_BALANCE = 1000
MAX_AMOUNT = 100
SEED = 20240601
POOL_SIZE = 64 << 20
DEFAULT_TRANSFERS = 100_000
PRIMARY = "pool-with"           # the variant the targets are about
TARGET_C = 2.0                  # pool CPU at most 2x the C program's
TARGET_SQLITE = 5.0             # sqlite3 CPU at least 5x the pool's

# name -> the label in the table ({info}: what the child reports), in
# the order of the table.
VARIANTS = {
    "pool-with": "pool dict, `with pool:`",
    "pool-process": "pool dict, `with pool:`, durability=\"process\"",
    "pool-implicit": "pool dict, 2 implicit tx",
    "pool-list-with": "pool list, `with pool:`",
    "c": "C on libpmemobj",
    "sqlite3": "sqlite3 {info} (WAL, synchronous=FULL)",
    "sqlite3-off": "sqlite3 {info} (WAL, synchronous=OFF)",
    "shelve": "shelve ({info})",
    "dram": "DRAM dict, no-op `with` (floor)",
}


def transfers(n, seed=SEED):
    """The n transfers (from, to, amount) that every variant makes.

    The generator is the C program's next_random(): a 32-bit LCG with
    Numerical Recipes' constants whose upper 24 bits are used.
    """
    result = []
    state = seed
    for _ in range(n):
        draws = []
        for _ in range(3):
            state = (state * 1664525 + 1013904223) & 0xFFFFFFFF
            draws.append(state >> 8)
        source = draws[0] % ACCOUNTS
        target = (source + 1 + draws[1] % (ACCOUNTS - 1)) % ACCOUNTS
        result.append((source, target, 1 + draws[2] % MAX_AMOUNT))
    return result


# --- the variants, each run in a child process ------------------------------

DRY_RUN = False                 # --dry: set up, skip the timed loop


def timed(loop, *args):
    """Run loop(*args); return its (process CPU ns, wall ns)."""
    if DRY_RUN:
        return 0, 0
    wall = time.perf_counter_ns()
    cpu = time.process_time_ns()
    loop(*args)
    cpu = time.process_time_ns() - cpu
    wall = time.perf_counter_ns() - wall
    return cpu, wall


def open_pool(directory, durability="power"):
    # libpmemobj reads PMEM_IS_PMEM_FORCE once, when it is loaded.
    os.environ.setdefault("PMEM_IS_PMEM_FORCE", "1")
    import pmem
    path = os.path.join(directory, "bank.pool")
    if os.path.exists(path):
        os.unlink(path)
    return pmem.open(path, create=True, size=POOL_SIZE,
                     durability=durability)


def loop_with(pool, accounts, todo):
    for source, target, amount in todo:
        with pool:
            accounts[source] -= amount
            accounts[target] += amount


def loop_implicit(pool, accounts, todo):
    for source, target, amount in todo:
        accounts[source] -= amount
        accounts[target] += amount


def run_pool(directory, todo, container, loop, durability="power"):
    pool = open_pool(directory, durability)
    if container == "dict":
        pool.ns.accounts = {i: START_BALANCE for i in range(ACCOUNTS)}
    else:
        pool.ns.accounts = [START_BALANCE] * ACCOUNTS
    accounts = pool.ns.accounts
    cpu, wall = timed(loop, pool, accounts, todo)
    return cpu, wall, [accounts[i] for i in range(ACCOUNTS)], ""


class NoTransaction:
    """A context manager that does nothing, shaped like pmem.Pool's."""

    def begin(self):
        pass

    def end(self, ok):
        pass

    def __enter__(self):
        self.begin()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.end(exc_type is None)
        return False


def run_dram(todo):
    accounts = {i: START_BALANCE for i in range(ACCOUNTS)}
    cpu, wall = timed(loop_with, NoTransaction(), accounts, todo)
    return cpu, wall, [accounts[i] for i in range(ACCOUNTS)], ""


def loop_sqlite3(con, todo):
    cur = con.cursor()
    execute = cur.execute
    for source, target, amount in todo:
        execute("BEGIN")
        execute("UPDATE accounts SET balance = balance - ? WHERE id = ?",
                (amount, source))
        execute("UPDATE accounts SET balance = balance + ? WHERE id = ?",
                (amount, target))
        execute("COMMIT")


def run_sqlite3(directory, todo, synchronous="FULL"):
    import sqlite3
    path = os.path.join(directory, "bank.sqlite")
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    con = sqlite3.connect(path, isolation_level=None)
    mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise RuntimeError(f"sqlite3 refused WAL mode: {mode}")
    con.execute(f"PRAGMA synchronous={synchronous}")
    con.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, "
                "balance INTEGER NOT NULL)")
    with con:
        con.execute("BEGIN")
        con.executemany("INSERT INTO accounts VALUES (?, ?)",
                        ((i, START_BALANCE) for i in range(ACCOUNTS)))
    cpu, wall = timed(loop_sqlite3, con, todo)
    balances = [b for (b,) in con.execute(
        "SELECT balance FROM accounts ORDER BY id")]
    con.close()
    return cpu, wall, balances, sqlite3.sqlite_version


def loop_shelve(db, keys, todo):
    for source, target, amount in todo:
        db[keys[source]] -= amount
        db[keys[target]] += amount
        db.sync()


def run_shelve(directory, todo):
    import dbm
    import shelve
    path = os.path.join(directory, "bank.shelve")
    keys = [str(i) for i in range(ACCOUNTS)]
    with shelve.open(path, flag="n") as db:
        for key in keys:
            db[key] = START_BALANCE
        db.sync()
        cpu, wall = timed(loop_shelve, db, keys, todo)
        balances = [db[key] for key in keys]
    return cpu, wall, balances, dbm.whichdb(path) or "dbm"


def run_child(variant, directory, n):
    """Run one Python variant here; print its report as one JSON line."""
    todo = transfers(n)
    if variant == "pool-with":
        result = run_pool(directory, todo, "dict", loop_with)
    elif variant == "pool-process":
        result = run_pool(directory, todo, "dict", loop_with, "process")
    elif variant == "pool-implicit":
        result = run_pool(directory, todo, "dict", loop_implicit)
    elif variant == "pool-list-with":
        result = run_pool(directory, todo, "list", loop_with)
    elif variant == "sqlite3":
        result = run_sqlite3(directory, todo)
    elif variant == "sqlite3-off":
        result = run_sqlite3(directory, todo, "OFF")
    elif variant == "shelve":
        result = run_shelve(directory, todo)
    elif variant == "dram":
        result = run_dram(todo)
    else:
        sys.exit(f"no Python variant {variant!r}")
    cpu, wall, balances, info = result
    print(json.dumps({"cpu_ns": cpu, "wall_ns": wall, "balances": balances,
                      "info": info}))


# --- the driver -------------------------------------------------------------

def build_c(cc):
    """Compile bank_pmemobj.c into build/bench/ unless that is up to date."""
    if (os.path.exists(C_BINARY)
            and os.path.getmtime(C_BINARY) >= os.path.getmtime(C_SOURCE)):
        return
    os.makedirs(os.path.dirname(C_BINARY), exist_ok=True)
    tmp = f"{C_BINARY}.{os.getpid()}"
    command = [*shlex.split(cc), "-O2", "-std=c11",
               "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra",
               "-o", tmp, C_SOURCE, "-lpmemobj"]
    print("building:", shlex.join(command), file=sys.stderr)
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"cannot build {C_SOURCE}:\n{proc.stderr}")
    os.replace(tmp, C_BINARY)


def run_variant(variant, directory, n, python, env):
    """Run one variant in a child; return its report (a dict)."""
    if variant == "c":
        path = os.path.join(directory, "bank_c.pool")
        if os.path.exists(path):
            os.unlink(path)
        command = [C_BINARY, path, str(n), str(SEED)]
    else:
        command = [python, os.path.abspath(__file__), "--child", variant,
                   "--dir", directory, "--transfers", str(n)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"variant {variant} failed ({proc.returncode}):\n"
                 f"{proc.stderr}")
    if variant != "c":
        return json.loads(proc.stdout.splitlines()[-1])
    report = {"info": ""}
    for line in proc.stdout.splitlines():
        key, _, rest = line.partition(" ")
        if key == "balances":
            report[key] = [int(b) for b in rest.split()]
        elif key in ("cpu_ns", "wall_ns"):
            report[key] = int(rest)
    if report.keys() != {"cpu_ns", "wall_ns", "balances", "info"}:
        sys.exit(f"cannot parse the C program's output:\n{proc.stdout}")
    return report


def work_directory():
    """A fresh directory on /dev/shm, or in the default temporary one."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return tempfile.mkdtemp(prefix="pmem-bank-", dir="/dev/shm"), ""
    return (tempfile.mkdtemp(prefix="pmem-bank-"),
            "note: no writable /dev/shm; the files are on the file system "
            "of the temporary directory, whose syncs are slower")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", "-n", type=int,
                        default=DEFAULT_TRANSFERS,
                        help="transfers per run (default %(default)s)")
    parser.add_argument("--repeat", "-r", type=int, default=3,
                        help="runs per variant, best kept (default "
                             "%(default)s)")
    parser.add_argument("--only", action="append", choices=VARIANTS,
                        help="run this variant only (repeatable; the check "
                             "of identical balances covers those run)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter of the Python variants")
    parser.add_argument("--cc", default=os.environ.get("CC", "cc"),
                        help="the C compiler (default $CC or cc)")
    parser.add_argument("--child", choices=[v for v in VARIANTS if v != "c"],
                        help="run one variant in this process and print "
                             "its JSON report (for profiling)")
    parser.add_argument("--dir", help="--child's directory for its files")
    parser.add_argument("--disk", metavar="DIR",
                        help="put the files in a directory of DIR, an "
                             "ordinary (block device) file system, "
                             "without PMEM_IS_PMEM_FORCE: libpmemobj then "
                             "makes every persist an msync(), and sqlite3 "
                             "syncs to the same disk")
    parser.add_argument("--dry", action="store_true",
                        help="with --child: make the transfers and set up, "
                             "but skip the loop (a baseline to subtract)")
    args = parser.parse_args()
    if args.transfers < (0 if args.child else 1) or args.repeat < 1:
        parser.error("--transfers and --repeat must be at least 1")
    if args.child:
        if not args.dir:
            parser.error("--child needs --dir")
        global DRY_RUN
        DRY_RUN = args.dry
        run_child(args.child, args.dir, args.transfers)
        return

    variants = [v for v in VARIANTS if args.only is None or v in args.only]
    if "c" in variants:
        build_c(args.cc)
    if args.disk:
        env = dict(os.environ, PMEM_IS_PMEM_FORCE="0")
        directory = tempfile.mkdtemp(prefix="pmem-bank-", dir=args.disk)
        note = ""
    else:
        env = dict(os.environ, PMEM_IS_PMEM_FORCE="1")
        directory, note = work_directory()
    version = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version)"],
        capture_output=True, text=True).stdout.strip()
    print(f"python: {args.python} ({version})")
    print(f"files: {directory} (PMEM_IS_PMEM_FORCE="
          f"{env['PMEM_IS_PMEM_FORCE']}); {args.transfers:,} "
          f"transfers between {ACCOUNTS} accounts, best of {args.repeat}")
    if note:
        print(note)
    best = {}
    expected = None
    try:
        for _ in range(args.repeat):
            for variant in variants:
                report = run_variant(variant, directory, args.transfers,
                                     args.python, env)
                balances = report["balances"]
                if sum(balances) != ACCOUNTS * START_BALANCE:
                    sys.exit(f"{variant}: the balances sum to "
                             f"{sum(balances)}, not "
                             f"{ACCOUNTS * START_BALANCE}")
                if expected is None:
                    expected = balances
                elif balances != expected:
                    sys.exit(f"{variant}: final balances differ from "
                             f"{variants[0]}'s")
                old = best.get(variant, report)
                report["cpu_ns"] = min(report["cpu_ns"], old["cpu_ns"])
                report["wall_ns"] = min(report["wall_ns"], old["wall_ns"])
                best[variant] = report
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)
    print(f"check: {len(variants)} variants end with identical balances, "
          f"sum {ACCOUNTS * START_BALANCE:,} = the start sum")
    print()
    print_table(best, args.transfers)


def print_table(best, n):
    def us(variant, key):
        return best[variant][key] / n / 1000

    print("| variant | CPU µs/tx | wall µs/tx | ratio to C (CPU) |")
    print("|---|---:|---:|---:|")
    for variant, report in best.items():
        label = VARIANTS[variant].format(info=report["info"])
        ratio = (f"{us(variant, 'cpu_ns') / us('c', 'cpu_ns'):.2f}"
                 if "c" in best and best["c"]["cpu_ns"] else "")
        print(f"| {label} | {us(variant, 'cpu_ns'):.2f} | "
              f"{us(variant, 'wall_ns'):.2f} | {ratio} |")
    if PRIMARY not in best:
        return
    print()
    pool = us(PRIMARY, "cpu_ns")
    if "c" in best:
        ratio = pool / us("c", "cpu_ns")
        verdict = "met" if ratio <= TARGET_C else "NOT met"
        print(f"pool/C (CPU): {ratio:.2f} (target <= {TARGET_C:g}: "
              f"{verdict})")
    if "sqlite3" in best:
        ratio = us("sqlite3", "cpu_ns") / pool
        wall = us("sqlite3", "wall_ns") / us(PRIMARY, "wall_ns")
        verdict = "met" if ratio >= TARGET_SQLITE else "NOT met"
        print(f"sqlite3/pool (CPU): {ratio:.2f}, wall {wall:.2f} "
              f"(target >= {TARGET_SQLITE:g}: {verdict})")


if __name__ == "__main__":
    main()
