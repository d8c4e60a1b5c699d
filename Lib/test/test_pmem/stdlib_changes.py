"""The mutable kinds of values that a pool holds beyond the builtins, and
every public method that changes each: what test_stdlib_types runs on a
pool's objects and test_storage on a checking manager's.

Each change is a function of the object and a random.Random: applied to
two equal objects with generators of the same seed, it makes the same
change to each, with equal (and new) arguments.  None raises.
"""

import collections


class Dict(dict):
    pass


class List(list):
    __slots__ = ("note",)


class Set(set):
    pass


def factory():
    """A defaultdict's factory of this module."""
    return []


# name: a function that makes a new mutable value.
MUTABLES = {
    "dict_subclass": lambda: Dict(a=1, b=[2]),
    "list_subclass": lambda: List([1, [2]]),
    "set_subclass": lambda: Set({1, "a"}),
    "counter": lambda: collections.Counter("abracadabra"),
    "defaultdict": lambda: collections.defaultdict(list, a=[1]),
    "defaultdict_int": lambda: collections.defaultdict(int, a=1),
    "defaultdict_factory": lambda: collections.defaultdict(factory),
    "ordereddict": lambda: collections.OrderedDict(a=1, b=[2], c=3),
    # Long enough for several blocks of 64 items.
    "deque": lambda: collections.deque([i, [i], (i, "t")][i % 3]
                                       for i in range(150)),
    "deque_maxlen": lambda: collections.deque("abcdef", maxlen=8),
}


def _key(r):
    return r.choice("abcdefgh")


def _value(r):
    return r.choice([r.randrange(100), str(r.randrange(10)),
                     (r.randrange(5), "t")])


def _new(r):
    """A value, or a new list: what a store moves into the pool (also
    from the container that update(), |= and extend() take it from)."""
    return [r.randrange(5)] if r.random() < 0.3 else _value(r)


def _dict_changes(value=_value, new=_new, passed=_new):
    # passed: what update() and |= take from another dict.
    def setitem(x, r): x[_key(r)] = new(r)
    def delitem(x, r):
        k = _key(r)
        if k in x:
            del x[k]
    def update(x, r): x.update({_key(r): passed(r), _key(r): value(r)})
    def update_kwargs(x, r): x.update(kw=passed(r))
    def pop(x, r): x.pop(_key(r), None)
    def popitem(x, r):
        if x:
            x.popitem()
    def setdefault(x, r): x.setdefault(_key(r), value(r))
    def ior(x, r): x.__ior__({_key(r): passed(r)})
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
            *_dict_changes(count, count, count)[1:-1]]


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
    return [missing, factory_again, *_dict_changes(value, new, new)]


def _ordereddict_changes():
    # Equality of two OrderedDicts compares their order too.
    def move_to_end(x, r):
        k = _key(r)
        if k in x:
            x.move_to_end(k, last=r.random() < 0.5)
    def popitem_first(x, r):
        if x:
            x.popitem(last=False)
    def note(x, r): x.note = _value(r)
    # (Its update() stores the items one by one: a new mutable that the
    # argument holds is shared with it, and refused.)
    return [move_to_end, popitem_first, note,
            *_dict_changes(passed=_value)]


def _deque_changes():
    def append(x, r): x.append(_new(r))
    def appendleft(x, r): x.appendleft(_new(r))
    def extend(x, r): x.extend([_value(r) for _ in range(r.randrange(70))])
    def extendleft(x, r):
        x.extendleft([_value(r) for _ in range(r.randrange(70))])
    def pop(x, r):
        for _ in range(r.randrange(1, 70)):
            if x:
                x.pop()
    def popleft(x, r):
        for _ in range(r.randrange(1, 70)):
            if x:
                x.popleft()
    def rotate(x, r): x.rotate(r.randrange(-200, 200))
    def reverse(x, r): x.reverse()
    def insert(x, r):
        if len(x) != x.maxlen:
            x.insert(r.randrange(-2, len(x) + 2), _new(r))
    def iadd(x, r): x.__iadd__([_value(r), _value(r)])
    def imul(x, r):
        if len(x) < 100:
            x.__imul__(r.randrange(3))
    return [append, appendleft, extend, extendleft, pop, popleft, rotate,
            reverse, insert, iadd, imul, *_sequence_changes()]


def _sequence_changes():
    """The changes that a list and a deque share."""
    def remove(x, r):
        v = r.randrange(100)
        if v in x:
            x.remove(v)
    def setitem(x, r):
        if x:
            x[r.randrange(len(x))] = _new(r)
    def delitem(x, r):
        if x:
            del x[r.randrange(len(x))]
    def clear(x, r):
        if r.random() < 0.1:
            x.clear()
    return [remove, setitem, delitem, clear]


def _list_changes():
    def append(x, r): x.append(_new(r))
    def extend(x, r): x.extend([_new(r), _value(r)])
    def insert(x, r): x.insert(r.randrange(-2, len(x) + 2), _new(r))
    def pop(x, r):
        if x:
            x.pop(r.randrange(len(x)))
    def sort(x, r): x.sort(key=repr, reverse=r.random() < 0.5)
    def reverse(x, r): x.reverse()
    def setslice(x, r):
        i = r.randrange(len(x) + 1)
        x[i:i + r.randrange(3)] = [_value(r) for _ in range(r.randrange(3))]
    def delslice(x, r):
        i = r.randrange(len(x) + 1)
        del x[i:i + 2]
    def iadd(x, r): x.__iadd__([_new(r)])
    def imul(x, r):
        if len(x) < 8:
            x.__imul__(2)
    def note(x, r): x.note = _value(r)
    return [append, extend, insert, pop, sort, reverse, setslice, delslice,
            iadd, imul, note, *_sequence_changes()]


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
    "ordereddict": _ordereddict_changes(),
    "deque": _deque_changes(),
    "deque_maxlen": _deque_changes(),
}


def same(a, b):
    """Whether a is b's equal: the same type, value and attributes."""
    return (type(a) is type(b) and a == b
            and getattr(a, "note", None) == getattr(b, "note", None)
            and getattr(a, "default_factory", None)
            is getattr(b, "default_factory", None)
            and getattr(a, "maxlen", None) == getattr(b, "maxlen", None))
