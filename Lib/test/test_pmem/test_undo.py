"""The undo of a transaction: what it counts, against the whole pool.

An abort writes back what the transaction logged, and then counts again
the references of what it touched, made and freed only (Modules/_pmem/
undo.c), not those of the whole pool.  With PYTHONPMEMCHECKUNDO=1 every
undo also counts the whole pool the old way and compares: a difference
is a fatal error.  These tests run workloads of transactions that raise
(and nested blocks that raise) under that check, against a model of the
same operations in ordinary objects, and reopen the pool in a new
process to compare it with the model and check every object.
"""

import os
import subprocess
import sys
import unittest
from test import support
from test.test_pmem.util import PoolTestCase


WORKLOAD = r"""
import collections, os, random, sys
os.environ["PYTHONPMEMCHECKUNDO"] = "1"     # read at the first undo
import pmem
from records import Record

path, seed, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)

def fresh():
    return {
        "d": {"k%d" % i: [i] for i in range(300)},
        "l": [("t", i) for i in range(200)],
        "s": set(range(50)),
        "q": collections.deque(range(100)),
        "o": collections.OrderedDict((i, str(i)) for i in range(40)),
        "r": {},
    }

def op(t, c, k, m):
    d, l, s, q, o, r = t["d"], t["l"], t["s"], t["q"], t["o"], t["r"]
    if c == 0: d["k%d" % k] = [k, "new"]
    elif c == 1: d.pop("k%d" % k, None)
    elif c == 2: d.update(("u%d" % (k + j), j) for j in range(m))
    elif c == 3: d.setdefault("k%d" % k, []).append(k)
    elif c == 4: l.append([k])
    elif c == 5 and l: l.pop(k % len(l)) if k % 3 else l.pop()
    elif c == 6: l[k % 7:k % 7 + 5] = [k] * (m % 9)
    elif c == 7: l.extend(range(m))
    elif c == 8: del l[slice(m % 40) if k % 2 else slice(-(m % 40), None)]
    elif c == 9: s.add(k); s.discard(k + 1)
    elif c == 10: s.update(range(k, k + m % 100))
    elif c == 11: s.difference_update(range(k, k + 30))
    elif c == 12: q.append((k,)); q.rotate(m)
    elif c == 13 and q: q.pop(); q.popleft() if q else None
    elif c == 14: o[k] = [k]; o.move_to_end(next(iter(o)))
    elif c == 15 and o: o.popitem(last=k % 2 == 0)
    elif c == 16: r[k] = Record(k, [k, {"x": k}])
    elif c == 17 and r: r.pop(next(iter(r))).items.append(k)
    elif c == 18: l.sort(key=repr)
    elif c == 19: d.clear() if k < 15 else d.pop(next(iter(d), None), None)
    elif c == 20: l.clear() if k < 15 else l.reverse()
    elif c == 21 and k < 15: d.clear(); d["fresh"] = [k]

class Names:
    # The pool's namespace as a mapping, for op().
    def __getitem__(self, name): return getattr(ns, name)

def dump(t):
    return {name: (repr(sorted(v.items(), key=repr)) if name in "dr" else
                   repr(sorted(v, key=repr)) if name == "s" else repr(list(
                       v.items()) if name == "o" else list(v)))
            for name, v in ((n, t[n]) for n in "dlsqor")}

class Abort(Exception):
    pass

pool = pmem.open(path, size=64 << 20)
ns = pool.ns
model = fresh()
with pool:
    t = fresh()
    for name in list(t):
        setattr(ns, name, t.pop(name))
for step in range(steps):
    ops = [(rng.randrange(22), rng.randrange(600), rng.randrange(300))
           for _ in range(rng.randrange(1, 6))]
    raises = rng.random() < 0.6
    nested = rng.random() < 0.3
    try:
        with pool:
            for i, (c, k, m) in enumerate(ops):
                if nested and i == len(ops) - 1:
                    try:
                        with pool:
                            op(Names(), c, k, m)
                            raise Abort
                    except Abort:
                        pass
                else:
                    op(Names(), c, k, m)
            if raises:
                raise Abort
    except Abort:
        pass
    if not raises:
        for c, k, m in ops[:-1] if nested else ops:
            op(model, c, k, m)
    if step % 25 == 0:
        assert dump(Names()) == dump(model), step
assert dump(Names()) == dump(model)
print(repr(dump(model)))
"""

RECORDS = """
class Record:
    def __init__(self, key, items):
        self.key = key
        self.items = items
    def __repr__(self):
        return "Record(%r, %r)" % (self.key, self.items)
"""


class UndoCountTests(PoolTestCase):

    def run_workload(self, seed, steps):
        with open(os.path.join(self.dir, "records.py"), "w") as f:
            f.write(RECORDS)
        script = os.path.join(self.dir, "workload.py")
        with open(script, "w") as f:
            f.write(WORKLOAD)
        env = dict(os.environ, PMEM_IS_PMEM_FORCE="1",
                   PYTHONPATH=self.dir)
        proc = subprocess.run(
            [sys.executable, "-X", "faulthandler", script, self.path,
             str(seed), str(steps)],
            env=env, capture_output=True, text=True,
            timeout=support.LONG_TIMEOUT)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertNotIn("pmem undo:", proc.stderr)
        return proc.stdout.strip()

    def test_aborts_count_what_they_touched(self):
        # Every undo's counts equal the whole pool's (else the child dies
        # of a fatal error), the pool equals the model of the committed
        # transactions, and a new process finds the same.
        expected = self.run_workload(seed=1, steps=150)
        out = self.run_in_new_process(f"""
            import pmem
            pool = pmem.open({self.path!r})
            ns = pool.ns
            t = {{n: getattr(ns, n) for n in "dlsqor"}}
            print(repr({{name: (repr(sorted(v.items(), key=repr))
                               if name in "dr" else
                               repr(sorted(v, key=repr)) if name == "s"
                               else repr(list(v.items()) if name == "o"
                                         else list(v)))
                        for name, v in t.items()}}))
            """, seed=7, path=self.dir)
        self.assertEqual(out.strip(), expected)
        proc = subprocess.run(
            [sys.executable, "-m", "pmem", "check", self.path],
            env=dict(os.environ, PMEM_IS_PMEM_FORCE="1",
                     PYTHONPATH=self.dir),
            capture_output=True, text=True, timeout=support.LONG_TIMEOUT)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)

    @support.requires_resource("cpu")
    def test_aborts_many_seeds(self):
        for seed in range(2, 6):
            with self.subTest(seed=seed):
                os.unlink(self.path) if os.path.exists(self.path) else None
                self.run_workload(seed=seed, steps=200)


if __name__ == "__main__":
    unittest.main()
