"""Hostile pool files: corrupt copies of a valid pool, opened one by one.

    ./python Tools/pmem/crash/fuzz.py --files 1000 [--seed S]

What it proves: whatever bytes a pool file holds, pmem.open() either
refuses it with pmem.PoolError or returns a pool whose every object
reachable from pool.ns can be walked and repr()'d and whose namespace
takes a write -- the interpreter neither crashes, nor hangs, nor raises
anything else; and `python -m pmem check`, run on the file first, says
"ok" exactly when the open succeeds (a disagreement is a failure).  That
is the promise of the open pass (Doc/pmem/design.rst: a pointer that
does not land on an object of this pool or a known singleton is an
error, never a segfault), and of the checks that run before it (the
file's header, libpmemobj's own check, the root).

How.  A child process makes one valid pool holding every builtin type
the pool supports, nested containers, shared references, instances of
two user classes (Thing, with a __dict__, and Slotted, with __slots__;
found as fuzz:Thing and fuzz:Slotted), instances of two classes of a
module that the opening children cannot import (fuzz_gone: placeholders
there), a big dict, and the standard library's kinds and references
(datetime, Decimal, a str subclass, Counter, defaultdict, an OrderedDict
and its nodes, a deque and its blocks, an enum member, a class: the
root's table of references), and reports where its objects
and tables lie; then it dies (SIGKILL) inside a transaction, which the
pool's undo log holds and every open undoes.  Each corrupted copy gets
one to three changes, each aimed at one part of the file -- the pool
header, the pool descriptor, the lanes (libpmemobj's logs), the heap,
zone and chunk headers, the run headers and allocation bitmaps, the
pool's root object, its undo log, the Python objects and their tables,
or anywhere -- and made by flipping bits,
writing random bytes, filling with zeros or ones, or overwriting an
aligned 8-byte word with a plausible value (a pointer to another object
or just beside it, a pointer into the pool, a static pointer of the
process that made the pool, a small or a huge integer); some copies are
truncated instead.

Each copy is opened in a child process of its own, run with
PMEM_IS_PMEM_FORCE=1 and -X faulthandler, as many at a time as there are
CPUs (--jobs): one file a process, because every copy has the valid
pool's UUID and libpmemobj opens one pool of a UUID per process (a second
one would be refused for that alone), and so that a death is always put
down to the right file.  Every failure -- death by a signal, a hang, an
exception other than PoolError -- is saved with a description of the
changes and the child's stderr (and a gdb backtrace for deaths, when gdb
is installed) in the failures directory, and the run goes on.  The last
line is ``fuzz: N files, opened A, refused R (PoolError), F failures``;
the exit status is 1 when F > 0.
"""

import argparse
import ast
import collections
import concurrent.futures
import gc
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
FAST_FLUSH = {"PMEM_IS_PMEM_FORCE": "1"}
POOL_SIZE = 16 << 20
TIMEOUT = 15                    # seconds a file may take
GDB_RUNS = 12                   # backtraces taken at most

# libpmemobj 1.12's layout, as far as aiming needs it (a wrong guess
# only makes the aim worse, never the verdict).
POOL_HDR_SIZE = 4096
DESC_LANES = 4096 + 1024        # lanes_offset, nlanes, heap_offset
DESC_ROOT = 6144                # root_offset
ROOT_LOG = 96                   # struct pool_root's log field
HEAP_HEADER_SIZE = 1024
ZONE_HEADER_SIZE = 64
MAX_CHUNK = 65535 - 7
CHUNK_SIZE = 256 << 10
CHUNK_HEADER = struct.Struct("<HHI")     # type, flags, size_idx
CHUNK_TYPE_USED, CHUNK_TYPE_RUN = 3, 4
SMALL_RUN_OFFSET = 80           # runs.c: a run's header in its chunk
SMALL_RUN_MAGIC = 0x6e755279


class Thing:
    """An instance with a __dict__."""

    def __init__(self, name, items, extra):
        self.name = name
        self.items = items
        self.extra = extra


class Label(str):
    """A subclass of str: its characters in a table of their own."""


Point = collections.namedtuple("Point", "x y")


class Slotted:
    """An instance with __slots__."""

    __slots__ = ("a", "b", "__weakref__")

    def __init__(self, a, b):
        self.a = a
        self.b = b


# --- in the children ---------------------------------------------------

def make_pool():
    """python -c "import fuzz; fuzz.make_pool()" PATH: make the valid
    pool; print JSON: its base, the anchor (None's address) and the
    objects and tables, as (offset, size, what)."""
    import ctypes
    import pmem
    path = sys.argv[1]
    pool = pmem.open(path, size=POOL_SIZE)
    ns = pool.ns
    # Classes of a module that the opening children cannot import: their
    # instances are placeholders there.
    gone_dir = tempfile.mkdtemp(prefix="fuzz-gone-")
    with open(os.path.join(gone_dir, "fuzz_gone.py"), "w") as f:
        f.write("class Gone:\n"
                "    def __init__(self, i):\n"
                "        self.i = i\n"
                "class GoneSlotted:\n"
                "    __slots__ = ('p', 'q')\n")
    sys.path.insert(0, gone_dir)
    import fuzz_gone
    shutil.rmtree(gone_dir)
    with pool:
        ns.none, ns.true, ns.false = None, True, False
        ns.ints = [0, 1, -5, 255, 256, 257, 2**31, -2**63, 2**100, -2**200]
        ns.floats = [0.0, -0.0, 1.5, float("inf"), 1e300]
        ns.complex = 3 + 4j
        ns.strs = ["", "a", "ascii text", "h\u00e9llo", "\u65e5\u672c\u8a9e",
                   "\U0001f600 emoji", "x" * 300]
        ns.bytes = [b"", b"b", b"\x00\xff" * 50]
        ns.bytearray = bytearray(b"mutable bytes " * 5)
        ns.tuple = (1, "two", (3.0, None), ())
        ns.dict = {"k": 1, 2: "two", (3, 4): [5], 2**80: "big",
                   "nested": {"a": {"b": [1, {2, 3}]}}}
        ns.set = {1, "a", (1, 2), 2**70, frozenset({4})}
        ns.frozenset = frozenset({"x", "y", 3})
        ns.list = [[], [1, [2, [3, [4]]]], {"d": (5,)}, bytearray(b"x")]
        ns.thing = Thing("name", [1, 2, 3], {"k": "v"})
        ns.slotted = Slotted(1, [2, "b"])
        ns.things = [Thing(i, [i], {"i": i}) for i in range(5)]
        ns.big = {f"key{i}": (i, str(i), [i] if i % 7 == 0 else i * 0.5)
                  for i in range(3000)}
        ns.gone = [fuzz_gone.Gone(i) for i in range(3)]
        ns.gone.append(fuzz_gone.GoneSlotted())
        ns.gone[-1].p, ns.gone[-1].q = "p", [ns.gone[0]]
        ns.shared = [1, "shared"]
        ns.holder = {"a": ns.shared, "b": (ns.shared,)}
        # The standard library's kinds (a Decimal's interior pointer, a
        # str subclass's characters, a datetime's tzinfo...) and the
        # references (the root's table of them: enum members, a class,
        # timezone.utc).
        import collections, datetime, decimal, fractions, uuid
        ns.stdlib = [
            datetime.datetime(2024, 1, 2, 3, 4, 5,
                              tzinfo=datetime.timezone(
                                  datetime.timedelta(hours=2), "X")),
            datetime.date(2024, 2, 29), datetime.timedelta(days=-1),
            datetime.time(1, 2, tzinfo=datetime.timezone.utc),
            decimal.Decimal("-1234567890123456789012345678901234567.8"),
            decimal.Decimal("1.5"), fractions.Fraction(2, 3),
            range(1, 2 ** 70, 3), slice(1, None, "s"),
            uuid.UUID(int=7), signal.SIGTERM, collections.Counter("hello"),
            collections.defaultdict(list, a=[1]), Point(1, "y"),
            Label("h\u00e9llo"), collections.OrderedDict, len,
            collections.OrderedDict((f"o{i}", [i]) for i in range(6)),
            collections.deque((i, [i]) for i in range(100)),
        ]
    base = pool.base
    objects, tables, seen = [], [], set()

    def table(address, size, what):
        if address:
            tables.append((address - base, size, what))

    def pointer_at(obj, offset):
        return ctypes.c_void_p.from_address(id(obj) + offset).value

    stack = list(vars(ns).values())
    while stack:
        obj = stack.pop()
        if id(obj) in seen or pmem.storage_of(obj) is not pool:
            continue
        seen.add(id(obj))
        objects.append((id(obj) - base, sys.getsizeof(obj),
                        type(obj).__name__))
        t = type(obj)
        if t is list:
            table(pointer_at(obj, 24), 8 * len(obj), "list items")
            stack.extend(obj)
        elif t is tuple or t is frozenset or t is set:
            if t is not tuple:
                table(pointer_at(obj, 40), 16 * (len(obj) + 1), "set table")
            stack.extend(obj)
        elif t is dict:
            table(pointer_at(obj, 32), 64 + 24 * len(obj), "dict keys")
            stack.extend(obj)
            stack.extend(obj.values())
        elif t is collections.OrderedDict:
            # Its dict's keys, its fast-nodes table (od_fast_nodes and
            # its size after od_first, od_last), its list of nodes (key,
            # hash, next, prev).
            table(pointer_at(obj, 32), 64 + 24 * len(obj), "dict keys")
            table(pointer_at(obj, 64), 8 * pointer_at(obj, 72),
                  "odict fast nodes")
            node = pointer_at(obj, 48)
            while node:
                table(node, 32, "odict node")
                node = ctypes.c_void_p.from_address(node + 16).value
            stack.extend(obj)
            stack.extend(obj.values())
        elif t is collections.deque:
            # Its blocks (leftlink, 64 items, rightlink), from leftblock.
            block, last = pointer_at(obj, 24), pointer_at(obj, 32)
            while block:
                table(block, 66 * 8, "deque block")
                block = (None if block == last else
                         ctypes.c_void_p.from_address(block + 65 * 8).value)
            stack.extend(obj)
        elif t is bytearray:
            table(pointer_at(obj, 32), len(obj) + 1, "bytearray bytes")
        elif t is Thing or t is fuzz_gone.Gone:
            stack.append(vars(obj))
        elif t is Slotted:
            stack.extend((obj.a, obj.b))
        elif t is fuzz_gone.GoneSlotted:
            stack.extend((obj.p, obj.q))
    json.dump({"base": base, "anchor": id(None), "objects": objects,
               "tables": tables}, sys.stdout)
    sys.stdout.flush()
    # A transaction that the process dies in: every open of a copy
    # undoes it from the pool's log first (log.c).
    with pool:
        for i in range(0, 3000, 3):
            ns.big[f"key{i}"] = None
        ns.list[1][1].append("pending")
        ns.dict["k"] = 2
        os.kill(os.getpid(), signal.SIGKILL)


def walk(ns):
    """repr() every object that ns reaches, each once."""
    stack = list(vars(ns).items())
    seen = set()
    count = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        repr(obj)
        count += 1
        if isinstance(obj, dict):
            stack.extend(obj.items())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.append(vars(obj))
        if hasattr(type(obj), "__slots__"):
            for name in type(obj).__slots__:
                if name != "__weakref__" and hasattr(obj, name):
                    stack.append(getattr(obj, name))
    return count


def open_child():
    """python -c "import fuzz; fuzz.open_child()" FILE...: open each
    file, walk it and write to it; one line for each outcome.  (Copies
    of one pool share its UUID: give them one process each.)"""
    import pmem
    out = sys.stdout
    for n, path in enumerate(sys.argv[1:]):
        print(f"begin {n}", file=out, flush=True)
        try:
            pool = pmem.open(path, create=False)
        except pmem.PoolError as exc:
            print(f"refused {n} {str(exc)!r}", file=out, flush=True)
            continue
        except BaseException:
            text = traceback.format_exc()
            print(f"error {n} {('pmem.open: ' + text)!r}", file=out,
                  flush=True)
            continue
        try:
            walk(pool.ns)
            pool.ns.x = 1
            gc.collect()
        except BaseException:
            text = traceback.format_exc()
            print(f"error {n} {('after the open: ' + text)!r}", file=out,
                  flush=True)
        else:
            print(f"opened {n}", file=out, flush=True)
        del pool


# --- the parent ---------------------------------------------------------

class Layout:
    """Where the parts of the valid pool lie: name -> [(start, end)]."""

    def __init__(self, path, info):
        with open(path, "rb") as f:
            data = f.read()
        self.size = len(data)
        self.base = info["base"]
        self.anchor = info["anchor"]
        lanes, nlanes, heap = struct.unpack_from("<3Q", data, DESC_LANES)
        (root,) = struct.unpack_from("<Q", data, DESC_ROOT)
        lane_size = (heap - lanes) // max(nlanes, 1)
        chunk_headers = heap + HEAP_HEADER_SIZE + ZONE_HEADER_SIZE
        chunks = chunk_headers + 8 * MAX_CHUNK
        used, runs, codes = [], [], []
        for k in range(MAX_CHUNK):
            kind, _, size_idx = CHUNK_HEADER.unpack_from(
                data, chunk_headers + 8 * k)
            if kind == 0:
                break
            if kind in (CHUNK_TYPE_USED, CHUNK_TYPE_RUN):
                used.append(k)
            if kind == CHUNK_TYPE_RUN:
                start = chunks + k * CHUNK_SIZE
                runs.append((start, start + 16 + 1024))
                # A run of small objects (Modules/_pmem/runs.c) of that
                # libpmemobj run: its header, then a type code per slot.
                at = start + SMALL_RUN_OFFSET
                magic, _, nslots, _ = struct.unpack_from("<4I", data, at)
                if magic == SMALL_RUN_MAGIC:
                    codes.append((at + 16, at + 16 + 2 * nslots))
        self.objects = info["objects"]
        self.tables = info["tables"]
        # The root's log field (struct pool_root): the undo log's first
        # chunk, whose header and first entries are the pending
        # transaction's.
        (log,) = struct.unpack_from("<Q", data, root + ROOT_LOG)
        last = max(used, default=0) + 1
        self.regions = {
            "pool header": [(0, POOL_HDR_SIZE)],
            "pool descriptor": [(POOL_HDR_SIZE, lanes)],
            "lanes": [(lanes, lanes + 4 * lane_size)],
            "heap headers": [(heap, chunk_headers + 8 * last)],
            "run headers": runs or [(chunks, chunks + 1024)],
            "slot codes": codes or [(chunks, chunks + 1024)],
            "root": [(root - 64, root + 128)],
            "log": [(log, log + 4096)],
            "objects": [(off - 48, off + min(size, 160))
                        for off, size, _ in self.objects],
            "tables": [(off - 16, off + min(size, 256))
                       for off, size, _ in self.tables],
            "anywhere": [(0, self.size)],
        }

    def plausible_word(self, rng):
        """An 8-byte value that looks like something a pool holds."""
        r = rng.randrange(8)
        if r == 0:
            off = rng.choice(self.objects)[0]
            return self.base + off               # another object
        if r == 1:
            off = rng.choice(self.objects)[0]
            return self.base + off + rng.choice((-48, -16, -8, 8, 16, 24))
        if r == 2:
            off = rng.choice(self.tables)[0]
            return self.base + off               # a table
        if r == 3:
            return self.base + rng.randrange(self.size)
        if r == 4:
            return self.anchor + rng.choice((0, 16, 32, 64, -64, 4096))
        if r == 5:
            return rng.choice((0, 1, 2, 7, 8, 16, 255, 256, 4096,
                               0xFFFFFFFF, 2**63 - 1, 2**64 - 1))
        if r == 6:
            return rng.randrange(2**40, 2**63)   # a huge size
        return rng.randrange(1, 1024)


WEIGHTS = {"pool header": 8, "pool descriptor": 8, "lanes": 6,
           "heap headers": 14, "run headers": 12, "slot codes": 8,
           "root": 6, "log": 10,
           "objects": 26, "tables": 10, "anywhere": 5, "truncate": 5}


def corrupt(layout, path, rng):
    """Change the file at path; a description of what was changed."""
    names = list(WEIGHTS)
    changes = []
    with open(path, "r+b") as f:
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            region = rng.choices(names, [WEIGHTS[n] for n in names])[0]
            if region == "truncate":
                length = rng.choice((
                    rng.randrange(0, 8192),
                    rng.randrange((8 << 20) - 4096, (8 << 20) + 4096),
                    rng.randrange(0, layout.size),
                    layout.size - rng.randrange(1, 1 << 20)))
                f.truncate(length)
                changes.append({"region": "truncate", "length": length})
                break
            start, end = rng.choice(layout.regions[region])
            start, end = max(start, 0), min(end, layout.size)
            offset = rng.randrange(start, max(end, start + 1))
            kind = rng.choice(("flip", "bytes", "word", "word", "zero",
                               "ones"))
            if kind == "word":
                offset &= ~7
                new = (layout.plausible_word(rng) % 2**64).to_bytes(
                    8, "little")
            else:
                f.seek(offset)
                n = rng.choice((1, 1, 2, 4, 8, 16, 64))
                old = f.read(n)
                if kind == "flip":
                    new = bytearray(old)
                    for _ in range(rng.randrange(1, 4)):
                        new[rng.randrange(len(new))] ^= 1 << rng.randrange(8)
                    new = bytes(new)
                elif kind == "bytes":
                    new = rng.randbytes(len(old))
                else:
                    new = (b"\0" if kind == "zero" else b"\xff") * len(old)
            f.seek(offset)
            old = f.read(len(new))
            f.seek(offset)
            f.write(new)
            changes.append({"region": region, "kind": kind,
                            "offset": offset, "old": old.hex(),
                            "new": new.hex()})
    return changes


class Fuzz:

    def __init__(self, seed, workdir, faildir, verbose, timeout=TIMEOUT,
                 gdb=True):
        self.seed = seed
        self.rng = random.Random(seed)
        self.workdir = workdir
        self.faildir = faildir
        self.verbose = verbose
        self.opened = self.refused = 0
        self.failures = []
        self.gdb_runs = 0 if gdb else GDB_RUNS
        self.timeout = timeout
        self.env = dict(os.environ, **FAST_FLUSH)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [HERE] + [p for p in [os.environ.get("PYTHONPATH")] if p])

    def make_valid_pool(self):
        path = os.path.join(self.workdir, "valid.pool")
        for attempt in range(5):
            # (retried: the interpreter may be in the middle of a rebuild)
            proc = subprocess.run(
                [sys.executable, "-c", "import fuzz; fuzz.make_pool()",
                 path], env=dict(self.env, PYTHONHASHSEED="0"),
                capture_output=True, text=True, timeout=120)
            if proc.returncode == -signal.SIGKILL and proc.stdout:
                break
            if os.path.exists(path):
                os.remove(path)
            time.sleep(10)
        if proc.returncode != -signal.SIGKILL or not proc.stdout:
            sys.exit(f"fuzz: making the valid pool failed:\n{proc.stderr}")
        self.valid = path
        self.layout = Layout(path, json.loads(proc.stdout))
        # The valid pool itself must pass (a copy: the open undoes the
        # transaction that its log holds, which the copies must hold).
        copy = os.path.join(self.workdir, "valid-copy.pool")
        shutil.copyfile(path, copy)
        outcome = self.open_file(copy, 0)
        os.remove(copy)
        if outcome[0] != "opened":
            sys.exit(f"fuzz: the valid pool does not pass: {outcome}")

    def command(self, paths):
        return [sys.executable, "-X", "faulthandler", "-c",
                "import fuzz; fuzz.open_child()", *paths]

    def open_file(self, path, hash_seed):
        """Open path in a child of its own: (verdict, detail)."""
        env = dict(self.env, PYTHONHASHSEED=str(hash_seed))
        # A session of its own: a hang may be in a process that the
        # child forked (libpmemobj's check runs in one), which holds the
        # pipes; the whole group is killed.
        proc = subprocess.Popen(self.command([path]), env=env,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return "hang", f"no answer in {self.timeout} s\n{err}"
        for line in out.splitlines():
            word, _, *rest = line.split(" ", 2)
            if word in ("opened", "refused", "error"):
                if proc.returncode != 0:
                    break         # died after its verdict: at exit
                return word, ast.literal_eval(rest[0]) if rest else ""
        if proc.returncode == 1 and "ImportError" in err:
            return "retry", err
        return "death", (f"exit status {proc.returncode} "
                         f"({_signal_name(proc.returncode)})\n{err}")

    def tool_verdict(self, path, hash_seed):
        """What `python -m pmem check` says of path (it reads a copy):
        "opened" for ok, "refused" for not ok, else "death"; and its
        output."""
        env = dict(self.env, PYTHONHASHSEED=str(hash_seed))
        try:
            proc = subprocess.run(
                [sys.executable, "-X", "faulthandler", "-m", "pmem",
                 "check", path], env=env, capture_output=True, text=True,
                timeout=self.timeout, start_new_session=True)
        except subprocess.TimeoutExpired:
            return "hang", "python -m pmem check gave no answer"
        verdicts = {0: "opened", 1: "refused"}
        return (verdicts.get(proc.returncode, "death"),
                proc.stdout + proc.stderr)

    def check(self, k, path, changes):
        """In a worker thread: check the k-th file with `python -m pmem
        check`, then open it; the two must agree (retrying when the
        interpreter itself cannot start, as while it is rebuilt)."""
        for attempt in range(10):
            try:
                tool, said = self.tool_verdict(path, self.seed + k)
                verdict, detail = self.open_file(path, self.seed + k)
                if (verdict in ("opened", "refused")
                        and tool != verdict):
                    verdict, detail = "disagree", (
                        f"python -m pmem check: {said.strip()}; but "
                        f"the open: {verdict} {detail}")
            except OSError as exc:          # the binary is being replaced
                verdict, detail = "retry", str(exc)
            if verdict != "retry":
                break
            time.sleep(5)
        else:
            verdict = "death"
        return path, changes, verdict, detail

    def record(self, path, changes, verdict, detail):
        if verdict == "opened":
            self.opened += 1
        elif verdict == "refused":
            self.refused += 1
        else:
            self.fail(path, changes, verdict, detail)
            return
        os.remove(path)

    def fail(self, path, changes, verdict, detail):
        # The file as corrupt() made it: the child's open may have
        # written into the one it opened.
        os.remove(path)
        os.makedirs(self.faildir, exist_ok=True)
        kept = os.path.join(self.faildir,
                            f"fuzz-{self.seed}-{os.path.basename(path)}")
        apply_changes(self.valid, kept, changes)
        report = {"file": kept, "verdict": verdict, "detail": detail,
                  "changes": changes, "seed": self.seed,
                  "reproduce": f"cp {kept} /tmp/x.pool && "
                               f"PMEM_IS_PMEM_FORCE=1 PYTHONPATH={HERE} "
                               f"{sys.executable} -X faulthandler -c "
                               f"'import fuzz; fuzz.open_child()' "
                               f"/tmp/x.pool"}
        if (verdict in ("death", "hang") and self.gdb_runs < GDB_RUNS
                and shutil.which("gdb")):
            self.gdb_runs += 1
            scratch = path + ".gdb"
            apply_changes(self.valid, scratch, changes)
            report["gdb"] = self.backtrace(scratch, verdict == "hang")
            os.remove(scratch)
        with open(kept + ".json", "w") as f:
            json.dump(report, f, indent=2)
        self.failures.append(kept)
        lines = [line for line in detail.splitlines() if line.strip()]
        first = next((line for line in lines
                      if line.startswith(("Fatal Python error", "no answer",
                                          "Traceback"))), "")
        frame = next((line.strip() for line in lines
                      if line.lstrip().startswith("File ")), "")
        what = ", ".join(f"{c['region']} {c.get('kind', '')} at "
                         f"{c.get('offset', c.get('length'))}"
                         for c in changes)
        print(f"fuzz: FAILURE ({verdict}) {kept}: {first} {frame} "
              f"[{what}]", flush=True)

    def backtrace(self, path, hang):
        """gdb's backtrace of the death (or, for a hang, of the process
        after some seconds)."""
        try:
            if not hang:
                proc = subprocess.run(
                    ["gdb", "-batch", "-ex", "run", "-ex", "bt 25",
                     "--args", *self.command([path])], env=self.env,
                    capture_output=True, text=True, timeout=300)
                out = proc.stdout
            else:
                child = subprocess.Popen(self.command([path]), env=self.env,
                                         stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL,
                                         start_new_session=True)
                time.sleep(5)
                try:
                    proc = subprocess.run(
                        ["gdb", "-batch", "-p", str(child.pid), "-ex",
                         "bt 25"], capture_output=True, text=True,
                        timeout=300)
                finally:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                out = proc.stdout
        except subprocess.TimeoutExpired:
            return "gdb timed out"
        lines = out.splitlines()
        start = next((k for k, line in enumerate(lines)
                      if "received signal" in line or line.startswith("#0")),
                     0)
        return "\n".join(lines[start:])

    def run(self, count, jobs):
        def files():
            for k in range(count):
                path = os.path.join(self.workdir, f"{k:05d}.pool")
                shutil.copyfile(self.valid, path)
                yield k, path, corrupt(self.layout, path, self.rng)

        done = 0
        with concurrent.futures.ThreadPoolExecutor(jobs) as executor:
            pending = set()
            for k, path, changes in files():
                pending.add(executor.submit(self.check, k, path, changes))
                if len(pending) < 2 * jobs:
                    continue
                finished, pending = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    self.record(*future.result())
                    done += 1
                    self.progress(done, count)
            for future in concurrent.futures.as_completed(pending):
                self.record(*future.result())
                done += 1
                self.progress(done, count)

    def progress(self, done, count):
        if self.verbose and (done % 100 == 0 or done == count):
            print(f"  {done} files: opened {self.opened}, refused "
                  f"{self.refused}, {len(self.failures)} failures",
                  flush=True)


def apply_changes(valid, path, changes):
    """Make path the copy of valid that changes describe."""
    shutil.copyfile(valid, path)
    with open(path, "r+b") as f:
        for change in changes:
            if change["region"] == "truncate":
                f.truncate(change["length"])
            else:
                f.seek(change["offset"])
                f.write(bytes.fromhex(change["new"]))


def _signal_name(status):
    if status is None or status >= 0:
        return "no signal"
    try:
        return signal.Signals(-status).name
    except ValueError:
        return f"signal {-status}"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Open corrupt copies of a valid pool: each must open "
                    "or raise pmem.PoolError, never crash or hang.")
    parser.add_argument("--files", type=int, default=200,
                        help="number of corrupt files (default: "
                             "%(default)s)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the corruption (default: random)")
    parser.add_argument("--failures", default="/tmp/fuzz-failures",
                        help="where failing files are kept (default: "
                             "%(default)s)")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count(),
                        help="files opened at a time (default: "
                             "%(default)s)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT,
                        help="seconds a file may take before it counts as "
                             "a hang (default: %(default)s)")
    parser.add_argument("--no-gdb", action="store_true",
                        help="take no gdb backtraces of failures")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print failures and the summary line only")
    args = parser.parse_args(argv)
    seed = (args.seed if args.seed is not None
            else int.from_bytes(os.urandom(4), "little"))
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    workdir = tempfile.mkdtemp(prefix="pmem-fuzz-", dir=base)
    try:
        fuzz = Fuzz(seed, workdir, args.failures, not args.quiet,
                    args.timeout, not args.no_gdb)
        if not args.quiet:
            print(f"fuzz: seed {seed}, failures go to {args.failures}",
                  flush=True)
        start = time.monotonic()
        fuzz.make_valid_pool()
        fuzz.run(args.files, max(args.jobs, 1))
        elapsed = time.monotonic() - start
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not args.quiet:
        print(f"  {elapsed:.1f} s, {elapsed / max(args.files, 1) * 1000:.0f}"
              f" ms a file", flush=True)
    print(f"fuzz: {args.files} files, opened {fuzz.opened}, refused "
          f"{fuzz.refused} (PoolError), {len(fuzz.failures)} failures",
          flush=True)
    return 1 if fuzz.failures else 0


if __name__ == "__main__":
    sys.exit(main())
