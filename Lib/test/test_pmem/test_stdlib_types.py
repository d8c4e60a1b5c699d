"""The values that real programs keep, in a pool: the standard library's
types, subclasses of the builtins written in Python, enum members.

One process stores a new instance of each kind of value four ways (as a
namespace variable, in a list, as a dict value, as an attribute); another
process, with another hash seed and the pool mapped elsewhere, compares
each with a new one: ==, type() is, the same hash (a dict finds it), and
`is` for what a pool refers to by name (enum members, timezone.utc, a
zone, a class, a function).  Each mutable kind is changed by every
public method that changes it, outside and inside `with pool:` blocks,
half of them aborted, beside a twin in DRAM that gets the same changes
(the committed ones); the two are compared after every block, and once
more in the new process.
"""

import collections
import datetime
import decimal
import enum
import fractions
import ipaddress
import json
import os
import pathlib
import pickle
import random
import unittest
import uuid
from test.test_pmem import run_in_new_process
from test.test_pmem.stdlib_changes import CHANGES, MUTABLES, same
from test.test_pmem.util import SIZE, PoolTestCase

try:
    import zoneinfo
    zoneinfo.ZoneInfo("Europe/Paris")
except Exception:
    zoneinfo = None


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


class Name(enum.StrEnum):
    A = "a"


class Str(str):
    pass


class Int(int):
    pass


class Float(float):
    pass


class Complex(complex):
    pass


class Bytes(bytes):
    pass


class Tuple(tuple):
    pass


class FrozenSet(frozenset):
    pass


Point = collections.namedtuple("Point", "x y")


# name: a function that makes a new value, the same one at every call.
VALUES = {
    "date": lambda: datetime.date(2024, 2, 29),
    "time": lambda: datetime.time(12, 30, 1, 5),
    "time_utc": lambda: datetime.time(1, 2, tzinfo=datetime.timezone.utc,
                                      fold=1),
    "datetime": lambda: datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
    "datetime_est": lambda: datetime.datetime(
        2024, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=-5),
                                             "EST")),
    "timedelta": lambda: datetime.timedelta(days=-3, microseconds=7),
    "timezone": lambda: datetime.timezone(datetime.timedelta(minutes=90)),
    "utc": lambda: datetime.timezone.utc,
    "decimal": lambda: decimal.Decimal(
        "-1234567890123456789012345678901234567890.123456789"),
    "decimal_small": lambda: decimal.Decimal("1.10"),
    "decimal_inf": lambda: decimal.Decimal("-Infinity"),
    "fraction": lambda: fractions.Fraction(22, 7),
    "uuid": lambda: uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "range": lambda: range(3, 100, 7),
    "slice": lambda: slice(1, None, "a"),
    "complex": lambda: 1 + 2j,
    "ipv4": lambda: ipaddress.IPv4Address("10.0.0.1"),
    "ipv6_network": lambda: ipaddress.IPv6Network("2001:db8::/32"),
    "ipv4_interface": lambda: ipaddress.IPv4Interface("10.0.0.1/24"),
    "posix_path": lambda: pathlib.PurePosixPath("/usr/lib/python3"),
    "windows_path": lambda: pathlib.PureWindowsPath("C:/Users/me"),
    "named_tuple": lambda: Point(1, (2, "b")),
    "str_subclass": lambda: Str("h\u00e9llo"),
    "int_subclass": lambda: Int(2 ** 70),
    "float_subclass": lambda: Float(1.5),
    "complex_subclass": lambda: Complex(1, -2),
    "bytes_subclass": lambda: Bytes(b"xy"),
    "tuple_subclass": lambda: Tuple((1, "a")),
    "frozenset_subclass": lambda: FrozenSet({1, "a"}),
    "enum": lambda: Color.RED,
    "int_enum": lambda: Level.HIGH,
    "flag": lambda: Perm.R,
    "flags": lambda: Perm.R | Perm.W,
    "str_enum": lambda: Name.A,
    "class": lambda: collections.OrderedDict,
    "function": lambda: json.dumps,
    "builtin": lambda: len,
}
if zoneinfo is not None:
    VALUES["zone"] = lambda: zoneinfo.ZoneInfo("Europe/Paris")
    VALUES["datetime_zone"] = lambda: datetime.datetime(
        2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))

# The values that a pool refers to: the same object in every process.
IDENTITY = {"utc", "enum", "int_enum", "flag", "flags", "str_enum",
            "class", "function", "builtin", "zone"}

class Aborted(Exception):
    pass


def change_all(pool, seed, blocks=60):
    """Change each mutable of pool.ns.mutables and its twin: blocks of one
    to three changes, outside `with pool:` or inside it, half of those
    aborted.  The twins (pickled), and what went wrong."""
    r = random.Random(seed)
    twins = {name: make() for name, make in MUTABLES.items()}
    problems = []
    for name, changes in CHANGES.items():
        x, twin = pool.ns.mutables[name], twins[name]
        used = set()
        for block in range(blocks):
            picked = [(r.choice(changes), r.randrange(1 << 30))
                      for _ in range(r.randrange(1, 4))]
            used.update(change.__name__ for change, _ in picked)
            how = r.choice(["outside", "commit", "abort"])
            try:
                if how == "outside":
                    for change, s in picked:
                        change(x, random.Random(s))
                else:
                    with pool:
                        for change, s in picked:
                            change(x, random.Random(s))
                        if how == "abort":
                            raise Aborted
            except Aborted:
                pass
            if how != "abort":
                for change, s in picked:
                    change(twin, random.Random(s))
            if not same(x, twin):
                problems.append(f"{name}, block {block} ({how}, "
                                f"{[c.__name__ for c, _ in picked]}): "
                                f"{x!r} != {twin!r}")
                break
        missed = {c.__name__ for c in changes} - used
        if missed:
            problems.append(f"{name}: never changed by {sorted(missed)}")
    return pickle.dumps(twins), problems


def store_all(path, seed):
    """The writer: every value four ways, the mutables, their changes."""
    import pmem
    pool = pmem.open(path, size=SIZE)
    ns = pool.ns
    ns.values = []
    ns.by_name = {}
    ns.holder = Holder()
    for name, make in VALUES.items():
        setattr(ns, name, make())
        ns.values.append(make())
        ns.by_name[name] = make()
        setattr(ns.holder, name, make())
    # The mutables too, as made (each store moves a new one), and one of
    # each that change_all() changes.
    ns.made = []
    for name, make in MUTABLES.items():
        setattr(ns, "made_" + name, make())
        ns.made.append(make())
        ns.by_name["made_" + name] = make()
        setattr(ns.holder, "made_" + name, make())
    ns.mutables = {name: make() for name, make in MUTABLES.items()}
    twins, problems = change_all(pool, seed)
    with open(path + ".twins", "wb") as f:
        f.write(twins)
    return problems


def check_all(path):
    """The reader: what went wrong, reading back what store_all() left."""
    import pmem
    pool = pmem.open(path, create=False)
    ns = pool.ns
    problems = []
    for i, (name, make) in enumerate(VALUES.items()):
        expected = make()
        stored = {"ns": getattr(ns, name), "list": ns.values[i],
                  "dict": ns.by_name[name], "attr": getattr(ns.holder, name)}
        for how, value in stored.items():
            where = f"{name} ({how})"
            if type(value) is not type(expected):
                problems.append(f"{where}: a {type(value).__name__}, not a "
                                f"{type(expected).__name__}")
            elif value != expected:
                problems.append(f"{where}: {value!r} != {expected!r}")
            elif name in IDENTITY and value is not expected:
                problems.append(f"{where}: not the same object")
            elif {value: 1}.get(expected) != 1:
                problems.append(f"{where}: another hash, "
                                f"{hash(value)} != {hash(expected)}")
    for i, (name, make) in enumerate(MUTABLES.items()):
        key = "made_" + name
        stored = {"ns": getattr(ns, key), "list": ns.made[i],
                  "dict": ns.by_name[key], "attr": getattr(ns.holder, key)}
        for how, value in stored.items():
            if not same(value, make()):
                problems.append(f"{name} ({how}): {value!r} != {make()!r}")
    with open(path + ".twins", "rb") as f:
        twins = pickle.load(f)
    for name, twin in twins.items():
        if not same(ns.mutables[name], twin):
            problems.append(f"{name}: {ns.mutables[name]!r} != {twin!r}")
    return problems


class Holder:
    """An instance of this module, whose attributes hold values."""


class StdlibTypesTests(PoolTestCase):

    def test_values_and_mutables_round_trip(self):
        path = os.path.join(self.dir, "types.pool")
        for seed in (1, 2):
            with self.subTest(seed=seed):
                if os.path.exists(path):
                    os.unlink(path)
                out = run_in_new_process(self, f"""
                    from test.test_pmem import test_stdlib_types as t
                    print(t.json.dumps(t.store_all({path!r}, {seed})))
                    """, hash_seed=seed, hint="0x500000000000")
                self.assertEqual(json.loads(out), [])
                out = run_in_new_process(self, f"""
                    from test.test_pmem import test_stdlib_types as t
                    print(t.json.dumps(t.check_all({path!r})))
                    """, hash_seed=seed + 100, hint="0x610000000000")
                self.assertEqual(json.loads(out), [])

    def test_in_this_process(self):
        # The same, in this process (regrtest -R finds what it leaks).
        path = os.path.join(self.dir, "here.pool")
        self.assertEqual(store_all(path, 3), [])
        self.assertEqual(check_all(path), [])

    def test_references_into_main_are_refused(self):
        # The next program would not find them when it opens the pool
        # (under -X pmem, such a binding is for its run only).
        out = run_in_new_process(self, f"""
            import enum, pmem
            class Color(enum.Enum):
                RED = 1
            def f():
                pass
            pool = pmem.open({os.path.join(self.dir, "main.pool")!r},
                             size={SIZE})
            for value in (Color.RED, Color, f):
                try:
                    pool.ns.x = value
                except TypeError as exc:
                    print("__main__" in str(exc), "define it in a module"
                          in str(exc))
            print(vars(pool.ns))
            """)
        self.assertEqual(out, "True True\n" * 3 + "{}\n")

    def test_dropped_after_their_pool_closed(self):
        # A deque's deallocation clears it, in an operation that a closed
        # pool cannot begin: it goes on without one, silently.
        out = run_in_new_process(self, f"""
            import collections, gc, io, sys
            import pmem
            pool = pmem.open({os.path.join(self.dir, "closed.pool")!r},
                             size={SIZE})
            pool.ns.q = collections.deque(range(100))
            pool.ns.o = collections.OrderedDict(a=[1])
            q, o = pool.ns.q, pool.ns.o
            del pool.ns.q, pool.ns.o
            pool.close()
            sys.stderr = io.StringIO()
            print(len(q), list(o))
            del q, o
            gc.collect()
            print(repr(sys.stderr.getvalue()))
            """)
        self.assertEqual(out, "100 ['a']\n''\n")

    def test_every_kind_is_listed(self):
        # The values of this test are the ones that help(pmem) says a
        # pool holds; a kind added there must be tested here.
        self.assertEqual(set(CHANGES), set(MUTABLES))
        self.assertLessEqual(IDENTITY - {"zone"}, set(VALUES))


if __name__ == "__main__":
    unittest.main()
