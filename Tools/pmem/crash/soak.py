"""Random-kill soak test of pmem pools.

    ./python Tools/pmem/crash/soak.py --trials 2000 [--seed S] [--dir D]

What it proves: a pool that its process left at any instant -- inside a
transaction, between two single-statement (implicit) transactions, while
an abort rolls back, or inside pmem.open() itself (recovery, pointers
moved for another mapping, static pointers remapped, tables rehashed for
another hash seed) -- opens in the next process holding exactly what the
committed transactions made, no more and no less, with the money of the
bank accounts summing to what it started with.

How.  One pool lives through every trial.  Operation i of the workload
is fully determined by (seed, i) and by the state that operations
0..i-1 left; each one commits with the counter ``pool.ns.done`` in the
same transaction (``with pool:``), or -- for the operations that are a
single mutating statement outside any ``with`` block -- is followed by
an implicit transaction of its own that sets ``done``.  The operations
cover bank transfers, dict growth past resizes, deletes, popitem, list
insert/sort/slice assignment/pop, set updates, bytearray edits, a
deque's ends, rotations and middle (across its blocks, with a maxlen),
an OrderedDict's order (move_to_end, popitem at both ends), nested
containers, instances of user classes (Record and Pair, found as
``soak:Record`` and ``soak:Pair``), transactions that raise and roll
back, transactions that make records garbage cycles, collect them
(gc.collect()) and roll back, and transactions that a forked child
tries first: its every change must raise PoolError (a kill of the
parent then leaves the child running, which must not hold the pool).

Each trial starts a child process that opens the pool and sends a
canonical dump of everything in ``pool.ns`` to this process, which keeps
a model of the state in ordinary (DRAM) Python objects: the same
operations replayed up to ``done``.  The dump must equal the model at
``done`` exactly -- or, when operation ``done`` is an implicit one, at
``done + 1`` (it committed, the store of the counter did not); such an
operation always changes the state or is a no-op, so which of the two
holds is never ambiguous.  The child is then told where to continue the
workload and is SIGKILLed at a random moment.  A share of the trials
kill the child during pmem.open() instead, at a random instant of it; the
child of each trial runs with another PYTHONHASHSEED and often with
another mapping address (PMEM_MMAP_HINT), so that opens do real work.
A last, clean check opens the pool, compares it, verifies that
``pool.gc()`` finds nothing to free and runs ``python -m pmem check``.

With --durability process every child opens the pool with
pmem.open(path, durability="process"): its transactions flush nothing,
and a kill (never a power loss) must leave the same guarantees.

On a failure the pool file is kept and its path, the seed and the trial
are printed; the exit status is 1.
"""

import argparse
import collections
import gc
import itertools
import marshal
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from operator import attrgetter, itemgetter

HERE = os.path.dirname(os.path.abspath(__file__))
FAST_FLUSH = {"PMEM_IS_PMEM_FORCE": "1"}
POOL_SIZE = 64 << 20
# Where the children map the pool: pmem's default (None), or elsewhere,
# which makes the open pass move every pointer.
HINTS = (None, None, "0x680000000000", "0x500000000000")
TOTAL = 50 * 10_000             # the money in the bank, forever
TIMEOUT = 120                   # seconds a child may take to answer

# Bounds that keep the state (and so each trial's dump) a steady size.
TABLE_MAX = 2500
SEQ_MAX = 1200
MIXED_MAX = 400
BLOB_MAX = 6000
TREE_MAX = 40
RECS_MAX = 60


class Record:
    """A user-class instance in the pool, with nested containers."""

    def __init__(self, name, value, tags=(), extra=None):
        self.name = name
        self.value = value
        self.tags = list(tags)
        self.extra = dict(extra or {})


class Pair:
    """An instance with __slots__ and no __dict__."""

    __slots__ = ("left", "right", "__weakref__")

    def __init__(self, left, right):
        self.left = left
        self.right = right


class Model:
    """The DRAM twin of pool.ns: attributes, in the same order."""


class Rollback(Exception):
    """Raised inside a transaction to abort it."""


# --- values ----------------------------------------------------------------

LETTERS = b"abcdefghijklmnopqrstuvwxyz"
TEXTS = ("", "a", "h\u00e9llo", "\u65e5\u672c\u8a9e", "\U0001f600 x",
         "plain text")


def make_key(rng, i, j=0):
    """A hashable key that operation i may store; often a new one."""
    r = rng.randrange(6)
    if r == 0:
        return f"k{i}.{j}"
    if r == 1:
        return i * 1000 + j
    if r == 2:
        return (i, j, "t")
    if r == 3:
        return rng.choice(TEXTS) + str(rng.randrange(500))
    if r == 4:
        return rng.randrange(3000)          # often one that is there
    return (rng.randrange(50), f"x{rng.randrange(50)}")


def make_scalar(rng, i):
    r = rng.randrange(13)
    if r == 0:
        return rng.randrange(-5, 300)       # small ints are static
    if r == 1:
        return rng.randrange(-10**9, 10**9)
    if r == 2:
        return rng.choice((1, -1)) * (2 ** rng.randrange(63, 200)
                                      + rng.randrange(1000))
    if r == 3:
        return rng.randrange(-1000, 1000) + 0.5
    if r == 4:
        return f"v{i}.{rng.randrange(1000)}"
    if r == 5:
        return rng.choice(TEXTS) * rng.randrange(1, 4)
    if r == 6:
        return rng.randbytes(rng.randrange(0, 24))
    if r == 7:
        return rng.choice((None, True, False))
    if r == 8:
        return complex(rng.randrange(100), -1.5)
    if r == 9:
        return frozenset(rng.randrange(100) for _ in range(rng.randrange(4)))
    if r == 10:
        return (rng.randrange(100), f"t{i}")
    if r == 11:
        return ()
    return ""


def make_value(rng, i, depth=0):
    """A fresh value, nested up to three levels."""
    r = rng.random()
    if depth >= 2 or r < 0.45:
        return make_scalar(rng, i)
    n = rng.randrange(5)
    if r < 0.6:
        return [make_value(rng, i, depth + 1) for _ in range(n)]
    if r < 0.7:
        return tuple(make_value(rng, i, depth + 1) for _ in range(n))
    if r < 0.82:
        return {make_key(rng, i, j): make_value(rng, i, depth + 1)
                for j in range(n)}
    if r < 0.9:
        return {make_key(rng, i, j) for j in range(n)}
    if r < 0.95:
        return bytearray(rng.randbytes(rng.randrange(30)))
    return Pair(make_scalar(rng, i), [make_scalar(rng, i)])


def letters(rng, n):
    return bytes(rng.choices(LETTERS, k=n))


def nth(container, n):
    """The n-th key of a dict, in its (deterministic) order."""
    return next(itertools.islice(iter(container), n, None))


def make_node(rng, i):
    return {"items": [make_value(rng, i) for _ in range(rng.randrange(4))],
            "tags": {rng.randrange(100) for _ in range(rng.randrange(4))},
            "meta": (i, f"node{i}", rng.randrange(1000)),
            "sub": {"n": 0, "log": []}}


def make_record(rng, i):
    extra = {f"e{j}": make_value(rng, i) for j in range(rng.randrange(3))}
    if rng.random() < 0.3:
        extra["pair"] = Pair(i, make_value(rng, i))
    return Record(f"r{i}", rng.randrange(1000),
                  [make_scalar(rng, i) for _ in range(rng.randrange(3))],
                  extra)


# --- the state and the operations --------------------------------------------

def initial(ns):
    """The state at done == 0."""
    ns.accounts = {f"acct{n}": TOTAL // 50 for n in range(50)}
    ns.table = {}
    ns.seq = [(n * 7 % 101, f"s{n}") for n in range(100)]
    ns.mixed = [None, 1, "two", [3], {"four": 4}, (5,), {6}, b"7"]
    ns.bag = set(range(0, 200, 3))
    ns.blob = bytearray(b"the quick brown fox" * 10)
    ns.tree = {}
    ns.recs = [Record("first", 0, ["a"], {"k": [1]})]
    ns.meta = Record("meta", 0)
    ns.pair = Pair(None, [])
    ns.counter = 0
    ns.queue = collections.deque(((n, f"q{n}") for n in range(100)),
                                 maxlen=400)
    ns.order = collections.OrderedDict((f"o{n}", n) for n in range(40))


# Each operation takes (ns, rng, i); an implicit one makes exactly one
# mutating call on a pool object (or on the namespace), or none.

def tx_transfer(ns, rng, i):
    accounts = ns.accounts
    names = list(accounts)
    for _ in range(rng.randrange(1, 7)):
        a, b = rng.sample(names, 2)
        amount = rng.randrange(1000)
        if rng.random() < 0.05:
            amount += 2 ** 70           # a big int, there and back
        accounts[a] -= amount
        accounts[b] += amount
        if amount >= 2 ** 70:
            accounts[a] += 2 ** 70
            accounts[b] -= 2 ** 70


def tx_accounts_churn(ns, rng, i):
    accounts = ns.accounts
    if len(accounts) > 30 and rng.random() < 0.5:
        gone = nth(accounts, rng.randrange(len(accounts)))
        balance = accounts.pop(gone)
        heir = nth(accounts, rng.randrange(len(accounts)))
        accounts[heir] += balance
    if len(accounts) < 80:
        new = f"opened{i}"
        donor = nth(accounts, rng.randrange(len(accounts)))
        amount = rng.randrange(500)
        accounts[donor] -= amount
        accounts[new] = amount


def implicit_transfer(ns, rng, i):
    # Two balances, one dict.update: one implicit transaction.
    accounts = ns.accounts
    a, b = rng.sample(list(accounts), 2)
    amount = rng.randrange(1, 1000)
    accounts.update({a: accounts[a] - amount, b: accounts[b] + amount})


def tx_table_grow(ns, rng, i):
    table = ns.table
    if len(table) > TABLE_MAX:
        tx_table_shrink(ns, rng, i)
        return
    for j in range(rng.choice((1, 3, 20, 150, 400, 900))):
        if table and rng.random() < 0.15:
            key = nth(table, rng.randrange(len(table)))
        else:
            key = make_key(rng, i, j)
        table[key] = make_value(rng, i)


def tx_table_shrink(ns, rng, i):
    table = ns.table
    n = len(table)
    if n == 0:
        return
    keys = list(table)
    count = n // 2 if n > TABLE_MAX else rng.randrange(1, max(2, n // 3))
    for index in rng.sample(range(n), min(count, n)):
        del table[keys[index]]
    for _ in range(rng.randrange(4)):
        if table:
            table.popitem()
    if rng.random() < 0.03:
        table.clear()


def tx_table_mutate(ns, rng, i):
    table = ns.table
    for j in range(rng.randrange(1, 12)):
        if not table:
            table[make_key(rng, i, j)] = make_value(rng, i)
            continue
        key = nth(table, rng.randrange(len(table)))
        value = table[key]
        r = rng.randrange(4)
        if type(value) is list and r < 3:
            if value and r == 0:
                value.pop(rng.randrange(len(value)))
            else:
                value.insert(rng.randrange(len(value) + 1),
                             make_value(rng, i, 1))
        elif type(value) is dict and r < 3:
            value[make_key(rng, i, j)] = make_value(rng, i, 1)
        elif type(value) is set and r < 3:
            value.add(make_key(rng, i, j))
        elif type(value) is bytearray and r < 3:
            value.extend(rng.randbytes(rng.randrange(1, 9)))
        elif r == 3:
            table.pop(key)
        else:
            table[key] = make_value(rng, i)
    table.setdefault(make_key(rng, i, 99), make_value(rng, i))
    table.update({make_key(rng, i, 100 + j): make_scalar(rng, i)
                  for j in range(rng.randrange(4))})


def implicit_table(ns, rng, i):
    table = ns.table
    r = rng.randrange(6)
    if r == 0 or not table:
        table[make_key(rng, i)] = make_value(rng, i)
    elif r == 1:
        del table[nth(table, rng.randrange(len(table)))]
    elif r == 2:
        table.popitem()
    elif r == 3:
        table.update({make_key(rng, i, j): make_value(rng, i)
                      for j in range(rng.randrange(1, 6))})
    elif r == 4:
        table.pop(make_key(rng, i), None)
    else:
        value = table[nth(table, rng.randrange(len(table)))]
        if type(value) is list:
            value.append(make_value(rng, i, 1))
        elif type(value) is dict:
            value[make_key(rng, i)] = make_scalar(rng, i)
        elif type(value) is set:
            value.add(make_key(rng, i))


def seq_item(rng, i):
    return (rng.randrange(10000), f"s{i}.{rng.randrange(100)}")


def seq_edit(seq, rng, i):
    """One mutating call on the list seq."""
    n = len(seq)
    r = rng.randrange(12)
    if n > SEQ_MAX:
        del seq[:n // 2]
    elif r == 0:
        seq.insert(rng.randrange(n + 1), seq_item(rng, i))
    elif r == 1 and n:
        seq.pop(rng.randrange(n))
    elif r == 2:
        a = rng.randrange(n + 1)
        b = rng.randrange(a, n + 1)
        seq[a:b] = [seq_item(rng, i) for _ in range(rng.randrange(30))]
    elif r == 3:
        a = rng.randrange(n + 1)
        del seq[a:a + rng.randrange(20):rng.choice((1, 1, 2, 3))]
    elif r == 4:
        seq.extend(seq_item(rng, i) for _ in range(rng.randrange(40)))
    elif r == 5:
        seq.reverse()
    elif r == 6:
        seq.sort()
    elif r == 7:
        seq.sort(key=itemgetter(1), reverse=True)
    elif r == 8 and n:
        seq[rng.randrange(n)] = seq_item(rng, i)
    elif r == 9 and n:
        seq.remove(seq[rng.randrange(n)])
    elif r == 10:
        seq += [seq_item(rng, i) for _ in range(rng.randrange(5))]
    else:
        seq.append(seq_item(rng, i))


def tx_seq(ns, rng, i):
    for _ in range(rng.randrange(1, 10)):
        seq_edit(ns.seq, rng, i)


def implicit_seq(ns, rng, i):
    seq_edit(ns.seq, rng, i)


def tx_mixed(ns, rng, i):
    mixed = ns.mixed
    for _ in range(rng.randrange(1, 8)):
        n = len(mixed)
        r = rng.randrange(6)
        if n > MIXED_MAX:
            del mixed[::2]
        elif r == 0 and n > 1:
            # The same pool object stored again, elsewhere.
            item = mixed.pop(rng.randrange(n))
            mixed.insert(rng.randrange(n), item)
        elif r == 1:
            a = rng.randrange(n + 1)
            mixed[a:a + rng.randrange(4)] = [make_value(rng, i)
                                            for _ in range(rng.randrange(4))]
        elif r == 2 and n:
            mixed.pop()
        elif r == 3 and n:
            mixed[rng.randrange(n)] = make_value(rng, i)
        else:
            mixed.append(make_value(rng, i))


def bag_edit(bag, rng, i):
    """One mutating call on the set bag."""
    r = rng.randrange(9)
    def some():
        return [rng.randrange(3000) if rng.random() < 0.8
                else f"e{rng.randrange(600)}"
                for _ in range(rng.randrange(1, 60))]
    if r == 0:
        bag.add(rng.randrange(3000))
    elif r == 1:
        bag.discard(rng.randrange(3000))
    elif r == 2:
        bag.update(some())
    elif r == 3:
        bag.difference_update(some())
    elif r == 4:
        bag.symmetric_difference_update(some())
    elif r == 5:
        bag.intersection_update(range(rng.randrange(3000), 3000))
    elif r == 6:
        bag |= set(some())
    elif r == 7:
        bag -= set(some())
    elif rng.random() < 0.1:
        bag.clear()
    else:
        bag.add(f"e{rng.randrange(600)}")


def tx_bag(ns, rng, i):
    for _ in range(rng.randrange(1, 10)):
        bag_edit(ns.bag, rng, i)


def implicit_bag(ns, rng, i):
    bag_edit(ns.bag, rng, i)


def blob_edit(blob, rng, i):
    """One mutating call on the bytearray blob."""
    n = len(blob)
    r = rng.randrange(10)
    if n > BLOB_MAX:
        del blob[:n // 2]
    elif r == 0:
        a = rng.randrange(n + 1)
        blob[a:a + rng.randrange(50)] = letters(rng, rng.randrange(60))
    elif r == 1:
        a = rng.randrange(n + 1)
        del blob[a:a + rng.randrange(40)]
    elif r == 2:
        blob.insert(rng.randrange(n + 1), rng.choice(LETTERS))
    elif r == 3:
        blob.extend(letters(rng, rng.randrange(200)))
    elif r == 4 and n:
        blob[rng.randrange(n)] = rng.choice(LETTERS)
    elif r == 5 and n:
        a, b = sorted((rng.randrange(n), rng.randrange(n)))
        blob[a:b] = blob[a:b][::-1]
    elif r == 6 and n:
        blob.pop(rng.randrange(n))
    elif r == 7:
        blob += letters(rng, rng.randrange(10))
    elif r == 8 and 0 < n < 500:
        blob *= 2
    else:
        blob.reverse()


def tx_blob(ns, rng, i):
    for _ in range(rng.randrange(1, 10)):
        blob_edit(ns.blob, rng, i)


def implicit_blob(ns, rng, i):
    blob_edit(ns.blob, rng, i)


def tx_tree(ns, rng, i):
    tree = ns.tree
    for j in range(rng.randrange(1, 6)):
        n = len(tree)
        r = rng.randrange(7)
        if r == 0 or n < 2:
            if n >= TREE_MAX:
                del tree[nth(tree, rng.randrange(n))]
            tree[f"n{i}.{j}"] = make_node(rng, i)
            continue
        a = tree[nth(tree, rng.randrange(n))]
        b = tree[nth(tree, rng.randrange(n))]
        if r == 1:
            del tree[nth(tree, rng.randrange(n))]
        elif r == 2 and a["items"]:
            # An item moves from one node's list to another's.
            b["items"].append(a["items"].pop(rng.randrange(len(a["items"]))))
        elif r == 3 and a is not b:
            # Subtrees swap: each is stored twice for a moment.
            a["sub"], b["sub"] = b["sub"], a["sub"]
        elif r == 4:
            sub = a["sub"]
            sub["n"] += 1
            sub["log"].append((i, sub["n"]))
            if len(sub["log"]) > 20:
                del sub["log"][:10]
        elif r == 5:
            a["tags"].add(rng.randrange(100))
            a["tags"].discard(rng.randrange(100))
            a["meta"] = a["meta"][:2] + (rng.randrange(1000),)
        else:
            items = a["items"]
            items.insert(0, make_value(rng, i))
            if len(items) > 30:
                del items[15:]


def implicit_tree(ns, rng, i):
    tree = ns.tree
    n = len(tree)
    r = rng.randrange(5)
    if r == 0 or n == 0:
        tree[f"n{i}"] = make_node(rng, i)
    elif r == 1:
        del tree[nth(tree, rng.randrange(n))]
    elif r == 2:
        sub = tree[nth(tree, rng.randrange(n))]["sub"]
        sub["n"] = sub["n"] + 1
    elif r == 3:
        tree[nth(tree, rng.randrange(n))]["items"].append(make_scalar(rng, i))
    else:
        tree[nth(tree, rng.randrange(n))]["tags"].add(rng.randrange(100))


def tx_recs(ns, rng, i):
    recs = ns.recs
    for j in range(rng.randrange(1, 6)):
        n = len(recs)
        r = rng.randrange(7)
        if r == 0 or n == 0:
            if n >= RECS_MAX:
                del recs[rng.randrange(n)]
            recs.append(make_record(rng, i))
            continue
        rec = recs[rng.randrange(n)]
        if r == 1:
            del recs[rng.randrange(n)]
        elif r == 2:
            rec.value += rng.randrange(-50, 50)
            rec.tags.append(make_scalar(rng, i))
            if len(rec.tags) > 10:
                del rec.tags[:5]
        elif r == 3:
            rec.extra[f"e{rng.randrange(5)}"] = make_value(rng, i)
        elif r == 4:
            name = f"a{rng.randrange(4)}"
            if hasattr(rec, name):
                delattr(rec, name)
            else:
                setattr(rec, name, make_value(rng, i))
        elif r == 5:
            recs.sort(key=attrgetter("value"))
        else:
            pair = rec.extra.get("pair")
            if type(pair) is Pair:
                pair.left, pair.right = pair.right, pair.left
            else:
                rec.extra["pair"] = Pair(rng.randrange(10), [i])


def implicit_recs(ns, rng, i):
    recs = ns.recs
    n = len(recs)
    r = rng.randrange(7)
    if r == 0 or n == 0:
        if n < RECS_MAX:
            recs.append(make_record(rng, i))
    elif r == 1:
        recs[rng.randrange(n)].value = rng.randrange(1000)
    elif r == 2:
        recs[rng.randrange(n)].tags.append(make_scalar(rng, i))
    elif r == 3 and n > 1:
        del recs[rng.randrange(n)]
    elif r == 4:
        recs.sort(key=attrgetter("value"), reverse=rng.random() < 0.5)
    elif r == 5:
        ns.meta.value = i
    elif len(ns.pair.right) < 30:
        ns.pair.right.append(i)
    else:
        ns.pair.right.clear()


def queue_edit(queue, rng, i):
    """One mutating call on the deque queue (blocks of 64 items)."""
    n = len(queue)
    r = rng.randrange(9)
    if r == 0:
        queue.append(make_scalar(rng, i))
    elif r == 1:
        queue.appendleft((i, make_scalar(rng, i)))
    elif r == 2 and n:
        queue.pop()
    elif r == 3 and n:
        queue.popleft()
    elif r == 4:
        queue.rotate(rng.randrange(-150, 150))
    elif r == 5:
        queue.extend([make_scalar(rng, i) for _ in range(rng.randrange(90))])
    elif r == 6 and n:
        queue[rng.randrange(n)] = make_scalar(rng, i)
    elif r == 7 and n:
        del queue[rng.randrange(n)]
    else:
        queue.extendleft(range(rng.randrange(70)))


def tx_queue(ns, rng, i):
    for _ in range(rng.randrange(1, 8)):
        queue_edit(ns.queue, rng, i)


def implicit_queue(ns, rng, i):
    queue_edit(ns.queue, rng, i)


def order_edit(order, rng, i):
    """One mutating call on the OrderedDict order."""
    n = len(order)
    r = rng.randrange(6)
    if n > 150:
        order.popitem(last=False)
    elif r == 0 or n == 0:
        order[f"o{rng.randrange(300)}"] = make_scalar(rng, i)
    elif r == 1:
        order.move_to_end(nth(order, rng.randrange(n)),
                          last=rng.random() < 0.5)
    elif r == 2:
        order.popitem(last=rng.random() < 0.5)
    elif r == 3:
        del order[nth(order, rng.randrange(n))]
    elif r == 4:
        order.setdefault(f"o{rng.randrange(300)}", [i])
    else:
        order.update({f"o{rng.randrange(300)}": make_scalar(rng, i)})


def tx_order(ns, rng, i):
    for _ in range(rng.randrange(1, 8)):
        order_edit(ns.order, rng, i)


def implicit_order(ns, rng, i):
    order_edit(ns.order, rng, i)


def implicit_namespace(ns, rng, i):
    r = rng.randrange(3)
    if r == 0:
        ns.scratch = make_value(rng, i)
    elif r == 1 and hasattr(ns, "scratch"):
        del ns.scratch
    else:
        ns.counter = ns.counter + 1


TX, IMPLICIT, ABORT = "tx", "implicit", "abort"
FORK, GC_ABORT = "fork", "gc-abort"
OPERATIONS = [
    # (weight, mode, function)
    (14, TX, tx_transfer),
    (2, TX, tx_accounts_churn),
    (4, IMPLICIT, implicit_transfer),
    (4, TX, tx_table_grow),
    (3, TX, tx_table_shrink),
    (4, TX, tx_table_mutate),
    (5, IMPLICIT, implicit_table),
    (4, TX, tx_seq),
    (4, IMPLICIT, implicit_seq),
    (3, TX, tx_mixed),
    (3, TX, tx_bag),
    (3, IMPLICIT, implicit_bag),
    (3, TX, tx_blob),
    (3, IMPLICIT, implicit_blob),
    (4, TX, tx_tree),
    (3, IMPLICIT, implicit_tree),
    (4, TX, tx_recs),
    (3, IMPLICIT, implicit_recs),
    (2, IMPLICIT, implicit_namespace),
    (3, TX, tx_queue),
    (3, IMPLICIT, implicit_queue),
    (3, TX, tx_order),
    (3, IMPLICIT, implicit_order),
    (4, ABORT, None),               # a TX operation, then Rollback
    (2, FORK, None),                # a TX operation, which a forked child
                                    # tries first (refused)
    (2, GC_ABORT, None),            # a TX operation, records made garbage
                                    # cycles, collected, then Rollback
]
_WEIGHTS = list(itertools.accumulate(w for w, _, _ in OPERATIONS))
_TX_FUNCS = [f for _, mode, f in OPERATIONS if mode == TX]
# False: the ABORT operations commit instead (--no-rollback).
ROLLBACKS = True
# How the children open the pool (--durability).
DURABILITY = os.environ.get("SOAK_DURABILITY", "power")


def plan(seed, i):
    """Operation i: (mode, function, its random generator)."""
    rng = random.Random(seed * 1_000_003 + i)
    _, mode, func = rng.choices(OPERATIONS, cum_weights=_WEIGHTS)[0]
    if mode in (ABORT, FORK, GC_ABORT):
        func = rng.choice(_TX_FUNCS)
        if mode != FORK and not ROLLBACKS:
            mode = TX
    return mode, func, rng


def forked_writer(ns, func, rng, i):
    """A forked child tries operation i: the pool is the parent's, and
    every change must raise PoolError without reaching it."""
    import pmem
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            try:
                func(ns, rng, i)
            except pmem.PoolError:
                pass
            try:
                ns.done = -1
                status = 3                  # a change was allowed
            except pmem.PoolError:
                pass
        except BaseException:
            import traceback
            traceback.print_exc()
            sys.stderr.flush()
            status = 4
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(status)
    if status != 0:
        raise RuntimeError(f"the forked writer of operation {i} ended "
                           f"with status {status} (3: a change was "
                           f"allowed; 4: an error other than PoolError)")


def orphan_cycles(ns, rng):
    """Records taken out of the pool's list as garbage cycles (through
    their attributes, their dict and a list)."""
    recs = ns.recs
    for _ in range(min(len(recs), rng.randrange(1, 4))):
        rec = recs.pop(rng.randrange(len(recs)))
        rec.me = rec
        rec.extra["me"] = rec
        rec.tags.append(rec.tags)


def run_in_pool(pool, ns, seed, i):
    """Operation i on the pool, with its counter."""
    mode, func, rng = plan(seed, i)
    if mode == TX:
        with pool:
            func(ns, rng, i)
            ns.done = i + 1
    elif mode == IMPLICIT:
        func(ns, rng, i)
        ns.done = i + 1
    elif mode == FORK:
        if i % 2:
            forked_writer(ns, func, random.Random(i), i)
        with pool:
            if not i % 2:               # inside the parent's transaction
                forked_writer(ns, func, random.Random(i), i)
            func(ns, rng, i)
            ns.done = i + 1
    else:
        try:
            with pool:
                func(ns, rng, i)
                if mode == GC_ABORT:
                    orphan_cycles(ns, rng)
                    gc.collect()
                ns.done = i + 1
                raise Rollback
        except Rollback:
            pass
        ns.done = i + 1


def run_in_model(model, seed, i):
    """Operation i on the model."""
    mode, func, rng = plan(seed, i)
    if mode not in (ABORT, GC_ABORT):
        func(model, rng, i)
    model.done = i + 1


# --- canonical form ----------------------------------------------------------

class Mismatch(Exception):
    pass


def canon(obj, seen):
    """A value made of tuples, frozensets and scalars that equals another
    one's exactly when the objects have the same types and contents, in
    any process (sets are compared as sets, whatever their hash seed).
    Looks every key up again, which checks the tables' hashes."""
    t = type(obj)
    if t is str:
        return obj
    if t in (int, float, complex, bytes, bool) or obj is None:
        return (t.__name__, obj)
    if t is tuple:
        return ("tuple", tuple(canon(x, seen) for x in obj))
    if t is frozenset:
        return ("frozenset", frozenset(canon(x, seen) for x in obj))
    # Mutable objects: a cycle would be a bug of the workload.
    if id(obj) in seen:
        raise Mismatch(f"a {t.__name__} is inside itself")
    seen.add(id(obj))
    try:
        if t is list:
            return ("list", tuple(canon(x, seen) for x in obj))
        if t is dict:
            for key in obj:
                if key not in obj:
                    raise Mismatch(f"dict key {key!r} not found by lookup")
            return ("dict", tuple((canon(k, seen), canon(v, seen))
                                  for k, v in obj.items()))
        if t is set:
            for item in obj:
                if item not in obj:
                    raise Mismatch(f"set item {item!r} not found by lookup")
            return ("set", frozenset(canon(x, seen) for x in obj))
        if t is bytearray:
            return ("bytearray", bytes(obj))
        if t is collections.deque:
            return ("deque", obj.maxlen, tuple(canon(x, seen) for x in obj))
        if t is collections.OrderedDict:
            # In order, which is what an OrderedDict keeps.
            for key in obj:
                if key not in obj:
                    raise Mismatch(f"OrderedDict key {key!r} not found by "
                                   f"lookup")
            return ("OrderedDict", tuple((canon(k, seen), canon(v, seen))
                                         for k, v in obj.items()))
        if t.__name__ == "Record":
            return ("Record", canon(vars(obj), seen))
        if t.__name__ == "Pair":
            return ("Pair", canon(obj.left, seen), canon(obj.right, seen))
    finally:
        seen.discard(id(obj))
    raise Mismatch(f"an object of unexpected type {t.__qualname__}")


def canon_namespace(ns):
    return tuple((name, canon(value, set()))
                 for name, value in vars(ns).items() if name != "done")


def first_difference(a, b, path="ns"):
    """Where two canonical forms differ first, in words."""
    if type(a) is not type(b) or type(a) is not tuple or len(a) != len(b):
        if (type(a) is type(b) is tuple and len(a) == 2 == len(b)
                and a[0] == b[0] and type(a[1]) is frozenset):
            return (f"{path}: {a[0]} differ: only in pool "
                    f"{_short(sorted(map(repr, a[1] - b[1])))}, only in "
                    f"model {_short(sorted(map(repr, b[1] - a[1])))}")
        return f"{path}: pool has {_short(a)}, model has {_short(b)}"
    for n, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return first_difference(x, y, f"{path}[{n}]")
    return f"{path}: equal"


def _short(value, limit=300):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# --- the child ---------------------------------------------------------------

def child():
    """Run in each trial's process: python -c "import soak; soak.child()"
    PATH SEED ROLLBACKS.  Open, dump, continue the workload where told."""
    global ROLLBACKS
    import pmem
    path, seed, ROLLBACKS = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    out = sys.stdout.buffer
    out.write(b"opening\n")
    out.flush()
    start = time.perf_counter()
    pool = pmem.open(path, create=False, durability=DURABILITY)
    out.write(b"opened %.6f\n" % (time.perf_counter() - start))
    out.flush()
    ns = pool.ns
    done = ns.done
    money = sum(ns.accounts.values())
    stats = pool.stats()
    data = marshal.dumps((done, money, stats["objects"], stats["bytes_used"],
                          canon_namespace(ns)))
    out.write(b"dump %d\n" % len(data))
    out.write(data)
    out.flush()
    command = sys.stdin.readline().split()
    if command[0] == "stop":
        out.write(b"gc %d\n" % pool.gc())
        out.flush()
        return
    out.write(b"running\n")
    out.flush()
    for i in itertools.count(int(command[1])):
        run_in_pool(pool, ns, seed, i)


def setup_child():
    """python -c "import soak; soak.setup_child()" PATH: a new pool."""
    import pmem
    pool = pmem.open(sys.argv[1], size=POOL_SIZE, durability=DURABILITY)
    with pool:
        initial(pool.ns)
        pool.ns.done = 0


# --- the parent --------------------------------------------------------------

class Failure(Exception):
    """The pool is not what it must be."""


class SetupError(Exception):
    """A new pool could not be made: no trial can run."""


class Soak:

    def __init__(self, seed, path, hash_seed=None, durability="power"):
        self.path = path
        self.hash_seed = hash_seed
        self.rng = random.Random(seed)
        self.seed = seed              # the workload's
        self.kills_in_open = 0
        self.open_times = []
        self.ops = 0
        self.max_bytes = 0
        self.env = dict(os.environ, SOAK_DURABILITY=durability,
                        **FAST_FLUSH)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [HERE] + [p for p in [os.environ.get("PYTHONPATH")] if p])

    def spawn(self, entry, *args, hint=None):
        hash_seed = self.rng.randrange(2**32)
        if self.hash_seed is not None:
            hash_seed = self.hash_seed
        env = dict(self.env, PYTHONHASHSEED=str(hash_seed))
        if hint is not None:
            env["PMEM_MMAP_HINT"] = hint
        return subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-c",
             f"import soak; soak.{entry}()", *map(str, args)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)

    def create(self, seed):
        """A new pool, and workload seed, at done == 0."""
        self.seed = seed
        self.model = Model()
        initial(self.model)
        self.model.done = 0
        self.expected = canon_namespace(self.model)
        if os.path.exists(self.path):
            os.remove(self.path)
        proc = self.spawn("setup_child", self.path)
        try:
            _, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            raise SetupError(f"creating the pool failed:\n{err.decode()}")

    def advance(self, n):
        """Bring the model to done == n."""
        for i in range(self.model.done, n):
            run_in_model(self.model, self.seed, i)
        if n != self.model.done:
            raise AssertionError((n, self.model.done))
        self.expected = canon_namespace(self.model)

    def verify(self, dump):
        """Compare a child's dump with the model; where to continue."""
        done, money, objects, used, state = marshal.loads(dump)
        self.max_bytes = max(self.max_bytes, used)
        if money != TOTAL:
            raise Failure(f"the accounts hold {money}, not {TOTAL}")
        m = self.model.done
        if done == m - 1:
            # The last check found implicit operation `done` committed
            # and told the child to go on from m; it died before it
            # stored the counter.
            if plan(self.seed, done)[0] == IMPLICIT and state == self.expected:
                return m
            raise Failure(f"the pool went back from done={m} to {done}")
        if done < m:
            raise Failure(f"the pool went back from done={m} to {done}")
        self.ops += done - m
        self.advance(done)
        if state == self.expected:
            return done
        if plan(self.seed, done)[0] == IMPLICIT:
            mismatch = first_difference(state, self.expected)
            self.advance(done + 1)
            if state == self.expected:
                return done + 1
            raise Failure(f"done={done}: the pool is neither the state "
                          f"before implicit operation {done} ({mismatch}) "
                          f"nor after it "
                          f"({first_difference(state, self.expected)})")
        raise Failure(f"done={done}: the pool differs from the model: "
                      f"{first_difference(state, self.expected)}")

    def read_dump(self, stdout, lines):
        """Read the child's output up to its dump; the dump or None."""
        while True:
            line = stdout.readline()
            if not line:
                return None
            lines.append(line)
            if line.startswith(b"dump "):
                size = int(line.split()[1])
                data = stdout.read(size)
                return data if len(data) == size else None

    def trial(self, number):
        hint = self.rng.choice(HINTS)
        in_open = self.rng.random() < 0.3
        proc = self.spawn("child", self.path, self.seed, int(ROLLBACKS),
                          hint=hint)
        hung = threading.Event()

        def watchdog():
            hung.set()
            proc.kill()
        timer = threading.Timer(TIMEOUT, watchdog)
        timer.start()
        lines = []
        try:
            line = proc.stdout.readline()
            lines.append(line)
            if line == b"opening\n":
                if in_open:
                    # At a random instant of the open, as long as the
                    # last ones took (the first ones take longer).
                    estimate = (sorted(self.open_times)[
                        len(self.open_times) // 2]
                        if self.open_times else 0.02)
                    time.sleep(self.rng.uniform(0, 1.3 * estimate))
                    proc.send_signal(signal.SIGKILL)
                    dump = self.read_dump(proc.stdout, lines)
                    if dump is not None:
                        self.verify(dump)
                else:
                    dump = self.read_dump(proc.stdout, lines)
                    if dump is None:
                        raise Failure(self.died(proc, hung, "opening"))
                    start = self.verify(dump)
                    proc.stdin.write(b"go %d\n" % start)
                    proc.stdin.flush()
                    if proc.stdout.readline() != b"running\n":
                        raise Failure(self.died(proc, hung, "resuming"))
                    time.sleep(self.rng.uniform(0, 0.25))
                    proc.send_signal(signal.SIGKILL)
            else:
                proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        for line in lines:
            if line.startswith(b"opened "):
                self.open_times.append(float(line.split()[1]))
                del self.open_times[:-20]
                break
        else:
            if lines[0] == b"opening\n":
                self.kills_in_open += 1
        if hung.is_set():
            raise Failure("the child hung (killed after "
                          f"{TIMEOUT} s):\n{err.decode(errors='replace')}")
        if proc.returncode != -signal.SIGKILL:
            raise Failure(f"the child exited with {proc.returncode}:\n"
                          f"{err.decode(errors='replace')}")

    def died(self, proc, hung, when):
        proc.kill()
        _, err = proc.communicate()
        what = ("hung" if hung.is_set()
                else f"exited with {proc.returncode}")
        return f"the child {what} while {when}:\n" + err.decode(
            errors="replace")

    def final(self):
        proc = self.spawn("child", self.path, self.seed, int(ROLLBACKS),
                          hint=self.rng.choice(HINTS))
        lines = []
        try:
            dump = self.read_dump(proc.stdout, lines)
            if dump is None:
                raise Failure(self.died(proc, threading.Event(),
                                        "opening (final check)"))
            self.verify(dump)
            out, err = proc.communicate(b"stop\n", timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if proc.returncode != 0 or out != b"gc 0\n":
            raise Failure(f"final check: exit {proc.returncode}, {out!r} "
                          f"(pool.gc() must find nothing):\n"
                          f"{err.decode(errors='replace')}")
        check = subprocess.run([sys.executable, "-m", "pmem", "check",
                                self.path], env=self.env,
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise Failure(f"python -m pmem check: {check.stderr}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Kill a pmem workload at random instants; check each "
                    "time that the pool holds exactly what committed.")
    parser.add_argument("--trials", type=int, default=100,
                        help="number of kills (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None,
                        help="the workload's and the kills' seed "
                             "(default: random)")
    parser.add_argument("--dir", default=None,
                        help="where the pool goes (default: a new "
                             "directory under /dev/shm or the temp dir)")
    parser.add_argument("--hash-seed", type=int, default=None,
                        help="run every child with this PYTHONHASHSEED "
                             "(default: another one each trial)")
    parser.add_argument("--no-rollback", action="store_true",
                        help="leave out the transactions that raise and "
                             "roll back (to tell bugs apart)")
    parser.add_argument("--durability", choices=("power", "process"),
                        default="power",
                        help="how the children open the pool "
                             "(default: %(default)s)")
    parser.add_argument("-k", "--keep-going", action="store_true",
                        help="after a failure, keep the pool and go on "
                             "with a new one (and a new workload seed)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print the summary line only")
    args = parser.parse_args(argv)
    global ROLLBACKS
    ROLLBACKS = not args.no_rollback
    seed = (args.seed if args.seed is not None
            else int.from_bytes(os.urandom(4), "little"))
    base = args.dir
    if base is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    workdir = tempfile.mkdtemp(prefix="pmem-soak-", dir=base)
    path = os.path.join(workdir, "soak.pool")
    soak = Soak(seed, path, args.hash_seed, args.durability)
    say = (lambda *a, **k: None) if args.quiet else print
    say(f"soak: seed {seed}, pool {path}, durability {args.durability}")
    failures = []
    start = time.monotonic()
    workload = seed
    number = 0
    while True:
        try:
            if number == 0 or failures:
                soak.create(workload)
            while number < args.trials:
                number += 1
                soak.trial(number)
                if number % 100 == 0 or number == args.trials:
                    elapsed = time.monotonic() - start
                    say(f"  {number} trials, {soak.ops} operations "
                        f"checked, {soak.kills_in_open} kills during open, "
                        f"{elapsed / number * 1000:.0f} ms a trial, "
                        f"{soak.max_bytes >> 10} KiB used at most",
                        flush=True)
            soak.final()
            break
        except SetupError as exc:
            print(f"soak: {exc}", file=sys.stderr, flush=True)
            return 2
        except Failure as exc:
            kept = os.path.join(workdir, f"failed-{len(failures) + 1}.pool")
            os.rename(path, kept)
            failures.append(kept)
            where = (f"trial {number}" if number <= args.trials
                     else "the final check")
            print(f"soak: FAILED at {where} (seed {seed}, workload seed "
                  f"{workload}, operation {soak.model.done}): {exc}\n"
                  f"soak: the pool is kept at {kept}; the kills are timed, "
                  f"so the same --seed need not fail the same way",
                  file=sys.stderr, flush=True)
            if not args.keep_going or number >= args.trials:
                break
            workload = soak.rng.randrange(2**32)
    if not failures:
        shutil.rmtree(workdir)
    print(f"soak: {number} trials, {soak.kills_in_open} kills during open, "
          f"{len(failures)} invariant failures", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
