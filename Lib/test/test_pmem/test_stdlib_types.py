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


class Bytes(bytes):
    pass


class Tuple(tuple):
    pass


class FrozenSet(frozenset):
    pass


class Dict(dict):
    pass


class List(list):
    __slots__ = ("note",)


class Set(set):
    pass


Point = collections.namedtuple("Point", "x y")


def factory():
    """A defaultdict's factory of this module."""
    return []


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

# name: a function that makes a new mutable value.
MUTABLES = {
    "dict_subclass": lambda: Dict(a=1, b=[2]),
    "list_subclass": lambda: List([1, [2]]),
    "set_subclass": lambda: Set({1, "a"}),
    "counter": lambda: collections.Counter("abracadabra"),
    "defaultdict": lambda: collections.defaultdict(list, a=[1]),
    "defaultdict_int": lambda: collections.defaultdict(int, a=1),
    "defaultdict_factory": lambda: collections.defaultdict(factory),
}


# --- the changes -------------------------------------------------------------
#
# Each change is a function of the object and a random.Random: applied to
# the pool's object and to its twin with generators of the same seed, it
# makes the same change with equal (and new) arguments.  None raises.

def _key(r):
    return r.choice("abcdefgh")


def _value(r):
    return r.choice([r.randrange(100), str(r.randrange(10)),
                     (r.randrange(5), "t")])


def _new(r):
    """A value, or a new list: what a store moves into the pool (the
    stores that take a value from another container -- update(), |=,
    extend() -- see it shared with that container: a move the ownership
    rule does not make yet)."""
    return [r.randrange(5)] if r.random() < 0.3 else _value(r)


def _dict_changes(value=_value, new=_new):
    def setitem(x, r): x[_key(r)] = new(r)
    def delitem(x, r):
        k = _key(r)
        if k in x:
            del x[k]
    def update(x, r): x.update({_key(r): value(r), _key(r): value(r)})
    def update_kwargs(x, r): x.update(kw=value(r))
    def pop(x, r): x.pop(_key(r), None)
    def popitem(x, r):
        if x:
            x.popitem()
    def setdefault(x, r): x.setdefault(_key(r), value(r))
    def ior(x, r): x.__ior__({_key(r): value(r)})
    def clear(x, r):
        if r.random() < 0.1:
            x.clear()
    return [setitem, delitem, update, update_kwargs, pop, popitem,
            setdefault, ior, clear]


def _counter_changes():
    def update(x, r): x.update(r.choice("abcz") * r.randrange(1, 4))
    def subtract(x, r): x.subtract(r.choice("abcz"))
    def iadd(x, r): x.__iadd__(collections.Counter(r.choice("abz")))
    def isub(x, r): x.__isub__(collections.Counter(r.choice("abz")))
    def ior(x, r): x.__ior__(collections.Counter({r.choice("abz"): 9}))
    def iand(x, r): x.__iand__(collections.Counter("abcdrz" * 3))
    def setitem(x, r): x[_key(r)] = r.randrange(-3, 5)
    def missing(x, r): x[_key(r)] += 1
    def count(r):
        return r.randrange(-3, 9)
    return [update, subtract, iadd, isub, ior, iand, setitem, missing,
            *_dict_changes(count, count)[1:-1]]


def _defaultdict_changes(int_values=False):
    # Ints for a defaultdict(int); lists, and the tuples that the stores
    # from other containers take, for the others.
    def missing(x, r):
        k = _key(r)
        if int_values:
            x[k] += r.randrange(5)
        elif isinstance(x[k], list):
            x[k].append(r.randrange(5))
        else:
            x[k] = [r.randrange(5)]
    def factory_again(x, r):
        x.default_factory = x.default_factory
    def value(r):
        return r.randrange(9) if int_values else (r.randrange(5),)
    def new(r):
        return r.randrange(9) if int_values else [r.randrange(5)]
    return [missing, factory_again, *_dict_changes(value, new)]


def _list_changes():
    def append(x, r): x.append(_new(r))
    def extend(x, r): x.extend([_value(r), _value(r)])
    def insert(x, r): x.insert(r.randrange(-2, len(x) + 2), _new(r))
    def remove(x, r):
        v = r.randrange(100)
        if v in x:
            x.remove(v)
    def pop(x, r):
        if x:
            x.pop(r.randrange(len(x)))
    def sort(x, r): x.sort(key=repr, reverse=r.random() < 0.5)
    def reverse(x, r): x.reverse()
    def setitem(x, r):
        if x:
            x[r.randrange(len(x))] = _new(r)
    def delitem(x, r):
        if x:
            del x[r.randrange(len(x))]
    def setslice(x, r):
        i = r.randrange(len(x) + 1)
        x[i:i + r.randrange(3)] = [_value(r) for _ in range(r.randrange(3))]
    def delslice(x, r):
        i = r.randrange(len(x) + 1)
        del x[i:i + 2]
    def iadd(x, r): x.__iadd__([_value(r)])
    def imul(x, r):
        if len(x) < 8:
            x.__imul__(2)
    def clear(x, r):
        if r.random() < 0.1:
            x.clear()
    def note(x, r): x.note = _value(r)
    return [append, extend, insert, remove, pop, sort, reverse, setitem,
            delitem, setslice, delslice, iadd, imul, clear, note]


def _set_changes():
    def element(r):
        return r.choice([r.randrange(20), str(r.randrange(5)),
                         (r.randrange(3),)])
    def add(x, r): x.add(element(r))
    def discard(x, r): x.discard(element(r))
    def remove(x, r):
        e = element(r)
        if e in x:
            x.remove(e)
    def pop_least(x, r):
        if x:
            x.discard(min(x, key=repr))
    def update(x, r): x.update([element(r), element(r)])
    def difference_update(x, r): x.difference_update([element(r)])
    def intersection_update(x, r):
        x.intersection_update(set(x) - {element(r)})
    def symmetric_difference_update(x, r):
        x.symmetric_difference_update({element(r)})
    def ior(x, r): x.__ior__({element(r)})
    def iand(x, r): x.__iand__(set(x) | {element(r)})
    def isub(x, r): x.__isub__({element(r)})
    def ixor(x, r): x.__ixor__({element(r)})
    def clear(x, r):
        if r.random() < 0.1:
            x.clear()
    return [add, discard, remove, pop_least, update, difference_update,
            intersection_update, symmetric_difference_update, ior, iand,
            isub, ixor, clear]


CHANGES = {
    "dict_subclass": _dict_changes(),
    "list_subclass": _list_changes(),
    "set_subclass": _set_changes(),
    "counter": _counter_changes(),
    "defaultdict": _defaultdict_changes(),
    "defaultdict_int": _defaultdict_changes(int_values=True),
    "defaultdict_factory": _defaultdict_changes(),
}


class Aborted(Exception):
    pass


def same(a, b):
    """Whether a is b's equal: the same type, value and attributes."""
    return (type(a) is type(b) and a == b
            and getattr(a, "note", None) == getattr(b, "note", None)
            and getattr(a, "default_factory", None)
            is getattr(b, "default_factory", None))


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

    def test_every_kind_is_listed(self):
        # The values of this test are the ones that help(pmem) says a
        # pool holds; a kind added there must be tested here.
        self.assertEqual(set(CHANGES), set(MUTABLES))
        self.assertLessEqual(IDENTITY - {"zone"}, set(VALUES))


if __name__ == "__main__":
    unittest.main()
