"""Threads on shared pool objects: a stress test against DRAM models.

    ./python Tools/pmem/crash/threads.py [--threads 8] [--ops 100000]
                                         [--seed S] [--dir D] [--quiet]

What it proves: threads that mutate the same pool objects at once -- a
dict, a list, a set, a bytearray and an instance, with every mutating
operation of each, inside ``with pool:`` blocks (some of which raise and
roll back) and as implicit transactions of one statement -- neither
crash the interpreter nor lose, duplicate or tear a committed change,
and what they committed is what a new process finds in the pool.

How.  Each thread owns a part of every shared object: the dict keys
``(t, k)``, the list items ``(t, i, ...)``, the set elements ``(t, k)``,
the bytes of value ``t`` in the bytearray, the attributes ``a<t>_<k>`` of
the instance.  Its operations touch its own part only, so that the
committed operations of one thread, replayed in order on a DRAM model of
its part, must give exactly what the pool holds of that part however
the threads interleaved (for the bytearray, which orders the threads'
bytes freely, the count of its byte).  Deleting by an index found with
index(), which only a block makes atomic, is done in blocks only.  Each
thread also has containers of its own in the pool (a dict, list, set,
bytearray and a __slots__ instance) for the operations whose outcome
depends on everything there: popitem(), pop(), clear(), sort(),
reverse(), intersection_update(), slice assignments.  A block is
applied to a copy of the model, which replaces the model only when the
block commits.

At the end each thread's model is compared with the pool, in this
process and then in a new one that opens the pool.  The last line is
``threads: T threads, N operations, B blocks (R rolled back), 0
mismatches``; the exit status is 1 on a mismatch.
"""

import argparse
import copy
import marshal
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading

POOL_SIZE = 256 << 20
KEYS = 40                       # keys per thread in each keyed object
LIST_MAX = 60                   # a thread's items in the shared list
OWN_MAX = 40


class Shared:
    """The instance that every thread sets attributes of."""


class Slots:
    """A thread's own __slots__ instance."""

    __slots__ = ("x", "y", "z")


class Rollback(Exception):
    """Raised in a block to roll it back."""


# --- the model of one thread's part ------------------------------------------

def new_model():
    return {"d": {}, "l": [], "s": set(), "b": 0, "o": {},
            "od": {}, "ol": [], "os": set(), "ob": bytearray(),
            "slots": {}}


def value(rng, i):
    """What a store will store: made at each store (make()), so that a
    list is new, held by the store alone, and moved into the pool."""
    return (rng.randrange(5), i)


def make(spec):
    r, i = spec
    if r == 0:
        return i
    if r == 1:
        return f"v{i}"
    if r == 2:
        return (i, "t", float(i))
    if r == 3:
        return [i, f"x{i}"]
    return None


# Each operation: (name, args).  apply_pool() does it on the pool's
# objects, apply_model() on the model; both must agree.

def plan_op(rng, m, t, i, in_block):
    """An operation of thread t on its part, given its model m."""
    while True:
        r = rng.randrange(34)
        k = rng.randrange(KEYS)
        # The shared dict.
        if r < 6:
            name = ("dset", "ddel", "dpop", "dsetdef", "dupdate", "dior")[r]
            if name == "ddel" and k not in m["d"]:
                continue
            return name, (k, value(rng, i))
        # The shared list.
        if r < 13:
            name = ("lappend", "lextend", "liadd", "linsert", "lremove",
                    "lappend", "lremove")[r - 6]
            if name in ("lappend", "lextend", "liadd", "linsert") \
                    and len(m["l"]) >= LIST_MAX:
                name = "lremove"
            if name == "lremove" and not m["l"]:
                continue
            if name == "lremove":
                return name, (rng.choice(m["l"]),)
            return name, (i,)
        if r == 13:
            if not in_block or not m["l"]:
                continue
            return "ldelindex", (rng.choice(m["l"]),)
        # The shared set.
        if r < 21:
            name = ("sadd", "sdiscard", "sremove", "supdate", "sior", "sisub",
                    "ssymdiff")[r - 14]
            if name == "sremove" and k not in m["s"]:
                continue
            return name, (k,)
        # The shared bytearray.
        if r < 25:
            name = ("bappend", "bextend", "biadd", "bremove")[r - 21]
            if name != "bremove" and m["b"] >= LIST_MAX:
                name = "bremove"
            if name == "bremove" and m["b"] == 0:
                continue
            return name, ()
        if r == 25:
            if not in_block or m["b"] == 0:
                continue
            return "bdelindex", ()
        # The shared instance.
        if r < 28:
            if r == 27 and f"a{t}_{k}" not in m["o"]:
                continue
            return ("osetattr", "odelattr")[r - 26], (k, value(rng, i))
        # The thread's own containers.
        name = ("owndict", "ownlist", "ownset", "ownbytes", "ownslots",
                "ownclear")[r - 28]
        return name, (rng.randrange(1 << 30), i)


def apply_model(m, t, op):
    name, args = op
    d, l, s, o = m["d"], m["l"], m["s"], m["o"]
    if name in ("dset", "dupdate", "dior"):
        d[args[0]] = make(args[1])
    elif name == "ddel":
        del d[args[0]]
    elif name == "dpop":
        d.pop(args[0], None)
    elif name == "dsetdef":
        d.setdefault(args[0], make(args[1]))
    elif name in ("lappend", "liadd"):
        l.append((args[0],))
    elif name == "lextend":
        l.extend([(args[0],), (args[0], 1)])
    elif name == "linsert":
        l.insert(0, (args[0], 2))
    elif name in ("lremove", "ldelindex"):
        l.remove(args[0])
    elif name in ("sadd", "supdate", "sior"):
        s.add(args[0])
    elif name in ("sdiscard", "sremove", "sisub"):
        s.discard(args[0])
    elif name == "ssymdiff":
        s.symmetric_difference_update({args[0]})
    elif name in ("bappend", "biadd"):
        m["b"] += 1
    elif name == "bextend":
        m["b"] += 2
    elif name in ("bremove", "bdelindex"):
        m["b"] -= 1
    elif name == "osetattr":
        o[f"a{t}_{args[0]}"] = make(args[1])
    elif name == "odelattr":
        del o[f"a{t}_{args[0]}"]
    else:
        own_op(name, args, m["od"], m["ol"], m["os"], m["ob"], m["slots"],
               model=True)


def apply_pool(objs, t, op):
    name, args = op
    d, l, s, b, o = objs["d"], objs["l"], objs["s"], objs["b"], objs["o"]
    if name == "dset":
        d[(t, args[0])] = make(args[1])
    elif name == "ddel":
        del d[(t, args[0])]
    elif name == "dpop":
        d.pop((t, args[0]), None)
    elif name == "dsetdef":
        d.setdefault((t, args[0]), make(args[1]))
    elif name == "dupdate":
        d.update({(t, args[0]): make(args[1])})
    elif name == "dior":
        d |= {(t, args[0]): make(args[1])}
    elif name == "lappend":
        l.append((t, args[0]))
    elif name == "liadd":
        l += [(t, args[0])]
    elif name == "lextend":
        l.extend([(t, args[0]), (t, args[0], 1)])
    elif name == "linsert":
        l.insert(0, (t, args[0], 2))
    elif name == "lremove":
        l.remove((t,) + args[0])
    elif name == "ldelindex":
        del l[l.index((t,) + args[0])]
    elif name == "sadd":
        s.add((t, args[0]))
    elif name == "supdate":
        s.update({(t, args[0])})
    elif name == "sior":
        s |= {(t, args[0])}
    elif name == "sdiscard":
        s.discard((t, args[0]))
    elif name == "sremove":
        s.remove((t, args[0]))
    elif name == "sisub":
        s -= {(t, args[0])}
    elif name == "ssymdiff":
        s.symmetric_difference_update({(t, args[0])})
    elif name == "bappend":
        b.append(t)
    elif name == "biadd":
        b += bytes([t])
    elif name == "bextend":
        b.extend(bytes([t, t]))
    elif name == "bremove":
        b.remove(t)
    elif name == "bdelindex":
        del b[b.index(t)]
    elif name == "osetattr":
        setattr(o, f"a{t}_{args[0]}", make(args[1]))
    elif name == "odelattr":
        delattr(o, f"a{t}_{args[0]}")
    else:
        own = objs["own"][t]
        own_op(name, args, own["d"], own["l"], own["s"], own["b"],
               own["slots"], model=False)


def own_op(name, args, od, ol, os_, ob, slots, model):
    """An operation on a thread's own containers (the same code on the
    model and on the pool: the slots instance is a dict in the model)."""
    rng = random.Random(args[0])
    i = args[1]
    if name == "owndict":
        r = rng.randrange(4)
        if r == 0 and od:
            od.popitem()
        elif r == 1 and od:
            del od[rng.choice(sorted(od))]
        else:
            od[rng.randrange(OWN_MAX)] = [i]
    elif name == "ownlist":
        r = rng.randrange(6)
        if r == 0 and ol:
            ol.pop(rng.randrange(len(ol)))
        elif r == 1:
            if rng.random() < 0.5:
                ol.sort(reverse=rng.random() < 0.5)
            else:
                ol.reverse()
        elif r == 2 and len(ol) < OWN_MAX:
            ol[1:3] = [i, i + 1, i + 2]
        elif r == 3 and 0 < len(ol) < OWN_MAX // 2:
            ol *= 2
        elif r == 4 and ol:
            ol[rng.randrange(len(ol))] = -i
        elif len(ol) < OWN_MAX:
            ol.append(i)
        else:
            del ol[:OWN_MAX // 2]
    elif name == "ownset":
        r = rng.randrange(4)
        if r == 0 and os_:
            # pop() takes whatever its table has first, which differs
            # between a pool set and its model: put it back, and take
            # the smallest.
            os_.add(os_.pop())
            os_.discard(min(os_))
        elif r == 1:
            os_.intersection_update(range(0, OWN_MAX, 2))
        elif r == 2:
            os_ &= set(range(OWN_MAX // 2))
        else:
            os_.add(rng.randrange(OWN_MAX))
    elif name == "ownbytes":
        r = rng.randrange(4)
        if r == 0 and ob:
            ob.pop()
        elif r == 1 and len(ob) < OWN_MAX:
            ob[0:1] = b"xyz"
        elif r == 2 and 0 < len(ob) < OWN_MAX // 2:
            ob *= 2
        elif len(ob) < OWN_MAX:
            ob.insert(0, i & 0xFF)
        else:
            ob.clear()
    elif name == "ownslots":
        attr = "xyz"[rng.randrange(3)]
        if rng.random() < 0.3:
            if model:
                slots.pop(attr, None)
            elif hasattr(slots, attr):
                delattr(slots, attr)
        elif model:
            slots[attr] = (i, attr)
        else:
            setattr(slots, attr, (i, attr))
    elif name == "ownclear":
        (od, ol, os_, ob)[rng.randrange(4)].clear()


# --- the pool's part of a thread, as the model shows it ---------------------

def extract(ns, t):
    """Thread t's part of the pool, in the model's form."""
    objs = ns.shared
    own = objs["own"][t]
    l = [item[1:] for item in objs["l"] if item[0] == t]
    slots = {a: getattr(own["slots"], a) for a in "xyz"
             if hasattr(own["slots"], a)}
    prefix = f"a{t}_"
    return {
        "d": {k[1]: v for k, v in objs["d"].items() if k[0] == t},
        "l": l,
        "s": {e[1] for e in objs["s"] if e[0] == t},
        "b": objs["b"].count(t),
        "o": {a: v for a, v in vars(objs["o"]).items()
              if a.startswith(prefix)},
        "od": dict(own["d"]), "ol": list(own["l"]), "os": set(own["s"]),
        "ob": bytearray(own["b"]), "slots": slots,
    }


def canon(obj):
    """A marshal-able form of a part (pool lists and DRAM lists alike)."""
    if isinstance(obj, dict):
        return {k: canon(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return ("list", tuple(canon(v) for v in obj))
    if isinstance(obj, tuple):
        return tuple(canon(v) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return frozenset(canon(v) for v in obj)
    if isinstance(obj, bytearray):
        return ("bytearray", bytes(obj))
    return obj


# --- the run ------------------------------------------------------------------

def worker(pool, t, seed, nops, model, counts, errors):
    rng = random.Random(seed * 1009 + t)
    objs = pool.ns.shared
    try:
        i = 0
        while i < nops:
            if rng.random() < 0.3:
                size = rng.randrange(1, 5)
                scratch = copy.deepcopy(model)
                rollback = rng.random() < 0.25
                ops = []
                try:
                    with pool:
                        for _ in range(size):
                            op = plan_op(rng, scratch, t, i, True)
                            apply_pool(objs, t, op)
                            apply_model(scratch, t, op)
                            i += 1
                        if rollback:
                            raise Rollback
                except Rollback:
                    counts[t][2] += 1
                else:
                    model.clear()
                    model.update(scratch)
                counts[t][1] += 1
            else:
                op = plan_op(rng, model, t, i, False)
                apply_pool(objs, t, op)
                apply_model(model, t, op)
                i += 1
        counts[t][0] = i
    except BaseException as exc:
        errors.append((t, repr(exc)))
        raise


def setup(pool, nthreads):
    with pool:
        pool.ns.shared = {
            "d": {}, "l": [], "s": set(), "b": bytearray(),
            "o": pool.new(Shared),
            "own": [{"d": {}, "l": [], "s": set(), "b": bytearray(),
                     "slots": pool.new(Slots)} for _ in range(nthreads)],
        }


def dump(path, nthreads):
    """Run in a new process: every thread's part, marshalled."""
    import pmem
    pool = pmem.open(path, create=False)
    parts = [canon(extract(pool.ns, t)) for t in range(nthreads)]
    sys.stdout.buffer.write(marshal.dumps(parts))


def first_difference(a, b, path="part"):
    if type(a) is not type(b):
        return f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=repr):
            if k not in a or k not in b:
                return f"{path}[{k!r}]: only in {'pool' if k in a else 'model'}"
            diff = first_difference(a[k], b[k], f"{path}[{k!r}]")
            if diff:
                return diff
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--ops", type=int, default=100_000,
                        help="operations per thread")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--dump", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dump:
        dump(args.dump[0], int(args.dump[1]))
        return 0
    import pmem
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    tmp = tempfile.mkdtemp(prefix="pmem-threads-", dir=args.dir)
    path = os.path.join(tmp, "threads.pool")
    failed = True
    try:
        pool = pmem.open(path, size=POOL_SIZE)
        setup(pool, args.threads)
        models = [new_model() for _ in range(args.threads)]
        counts = [[0, 0, 0] for _ in range(args.threads)]
        errors = []
        threads = [threading.Thread(target=worker,
                                    args=(pool, t, seed, args.ops, models[t],
                                          counts, errors))
                   for t in range(args.threads)]
        # Switch often: every operation can be interleaved.
        sys.setswitchinterval(1e-5)
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        sys.setswitchinterval(5e-3)
        mismatches = []
        for t, exc in errors:
            mismatches.append(f"thread {t} raised {exc}")
        expected = [canon(m) for m in models]
        for t in range(args.threads):
            diff = first_difference(canon(extract(pool.ns, t)), expected[t])
            if diff:
                mismatches.append(f"thread {t}, in this process: {diff}")
        pool.close()              # which lets the new process open it
        proc = subprocess.run([sys.executable, os.path.abspath(__file__),
                               "--dump", path, str(args.threads)],
                              capture_output=True, timeout=600)
        if proc.returncode != 0:
            mismatches.append("the new process could not read the pool: "
                              + proc.stderr.decode(errors="replace"))
        else:
            for t, part in enumerate(marshal.loads(proc.stdout)):
                diff = first_difference(part, expected[t])
                if diff:
                    mismatches.append(f"thread {t}, in a new process: {diff}")
        for line in mismatches[:10]:
            print(line)
        nops = sum(c[0] for c in counts)
        blocks = sum(c[1] for c in counts)
        rolled = sum(c[2] for c in counts)
        if mismatches:
            print(f"pool kept in {tmp}; seed {seed}")
        elif not args.quiet:
            print(f"seed {seed}")
        print(f"threads: {args.threads} threads, {nops} operations, "
              f"{blocks} blocks ({rolled} rolled back), "
              f"{len(mismatches)} mismatches")
        failed = bool(mismatches)
        return 1 if failed else 0
    finally:
        if not failed:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
