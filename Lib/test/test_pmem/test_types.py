"""pmem pools hold only the types whose layout the storage managers know.

A value enters a pool only when the managers know its type's layout: the
supported builtins (None, bool, int, float, complex, str, bytes, tuple,
frozenset, dict, list, set, bytearray, Ellipsis, NotImplemented), the C
types known by kind (range, slice, datetime's, Decimal, defaultdict,
OrderedDict, deque), and classes written in Python whose instances hold
only a __dict__ and/or __slots__ over object or over another supported
layout.  Everything else -- any other C type, heap type or not
(array.array, struct.Struct, functools.partial...), and a Python subclass
of one that adds C-level state -- is refused with a TypeError that names
the type, and nothing changes.

SurveyTests proves it of the whole standard library: it walks every class
that its importable modules define, makes an instance where a trivial
constructor allows (cls(), cls(0), cls(''), cls(len) or cls(0, 0)), and
stores it four ways: as a name of the pool's namespace, appended to a
pool list, as a value in a pool dict and as an attribute of a stored
instance.  Each store round-trips through a new process (the same type
and value, a repr() that works, equal to a new instance where the class
defines equality), or is refused with a TypeError that names the type of
the value or of what it holds, leaving the namespace, the list, the
dict, the instance and the pool's object count as they were.  A value of
a layout that the managers do not know, or that holds one, must be
refused; nothing may crash.

Which values a manager must refuse is decided here, not asked of the
managers: layout() takes a class for one written in Python when it is a
heap type whose instances add to its base's only __slots__, a __dict__
and a weak-reference list (by its sizes and offsets) and that is
deallocated as a class statement's class is; below such classes, a C
type other than object and the supported builtins is a layout the
managers do not know.  A class written in Python over a supported builtin
(a dict subclass, a named tuple) may be held or refused.

A store of an unknown type can corrupt the pool or crash the process,
so the stores run in a child process and the reading in another one, a
batch of classes at a time; a batch that crashes is split until the
classes that crash it are found.  ``python -m test.test_pmem.test_types``
runs the survey alone and prints its counts, every failure, and what it
skipped and why (with arguments, it runs the tests).

FocusedTests are the known cases one by one: array.array, struct.Struct,
functools.partial and a Python subclass of array.array are refused in all
four places (with what to store instead, where there is an obvious
alternative); plain classes, with __slots__ and with a __dict__, the
builtins, datetime's types, deque and OrderedDict round-trip.
"""

import contextlib
import gc
import collections
import datetime
import decimal
import enum
import importlib
import io
import itertools
import json
import os
import pkgutil
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import types
import unittest
import warnings
from concurrent.futures import ThreadPoolExecutor
from test import support
from test.support import os_helper
from test.test_pmem import run_in_new_process
# Subclasses of the immutable builtins (test_types.Str...).
from test.test_pmem.test_stdlib_types import (  # noqa: F401
    Bytes, Complex, FrozenSet, Int, Str, Tuple)
from test.test_pmem.util import FAST_FLUSH, pmem

# The child processes import this module by this name: its classes are
# found by it in the pools.
MODULE = "test.test_pmem.test_types"
POOL_SIZE = 32 << 20
BATCH = 40                  # classes stored by one writer
CHILD_TIMEOUT = 120         # seconds, for a child
CLASS_TIMEOUT = 10          # seconds, for one class's work in a child
SPLITS = 300                # batches that failed without a culprit, split
STORES = ("ns", "list", "dict", "attr")
FAILURES = ("crashed", "accepted", "mismatched", "error")

# What reading a value back raises when a method of it stores into it
# what a pool cannot hold (importlib.metadata's FoldedCase caches an
# lru_cache wrapper on itself): the store rule's refusal, not a mismatch.
REFUSED_ON_USE = re.compile(r"^reading it back: TypeError: cannot store a "
                            r"'[\w.]+' object in pool .* storage: its type "
                            r"is not one")

# The builtin types that the managers hold (Objects/storagestore.c):
# immutables copied, mutables moved, singletons kept as they are.
# The C types other than the builtins that the managers hold as values,
# and what each holds (what a manager's walk of one reaches).
VALUE_PARTS = {
    range: lambda r: [r.start, r.stop, r.step],
    slice: lambda s: [s.start, s.stop, s.step],
    datetime.date: lambda d: [],
    datetime.time: lambda t: [t.tzinfo],
    datetime.datetime: lambda d: [d.tzinfo],
    datetime.timedelta: lambda d: [],
    datetime.timezone: lambda z: [z.utcoffset(None), z.tzname(None)],
    decimal.Decimal: lambda d: [],
    collections.defaultdict: lambda d: [d.default_factory, *d.keys(),
                                        *d.values()],
    collections.OrderedDict: lambda d: [*d.keys(), *d.values(),
                                        *vars(d).values()],
    collections.deque: lambda d: list(d),
}
SUPPORTED = frozenset({type(None), bool, int, float, complex, str, bytes,
                       tuple, frozenset, dict, list, set, bytearray,
                       type(Ellipsis), type(NotImplemented), *VALUE_PARTS})
SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes,
                     type(Ellipsis), type(NotImplemented)})

# Modules that the survey does not import, and why.
SKIPPED_MODULES = {
    "idlelib": "IDLE: starts its GUI (idlelib.idle) on import, needs Tk",
    "tkinter": "needs a display",
    "turtle": "needs a display (Tk)",
    "turtledemo": "needs a display (Tk)",
    "antigravity": "opens a web browser on import",
    "this": "prints on import",
}
# Classes that it does not construct, and why.
SKIPPED_CLASSES = {
    "multiprocessing.pool.Pool": "starts worker processes",
    "multiprocessing.pool.ThreadPool": "starts worker threads",
    "multiprocessing.shared_memory.ShareableList":
        "creates a shared memory segment (and the resource tracker)",
    "unittest.main.TestProgram": "runs the tests of __main__ and exits",
    "imaplib.IMAP4_stream": "runs a shell command",
    "subprocess.Popen": "runs a program",
}


def skipped_module(name):
    """Why the survey does not import module name, or None."""
    parts = name.split(".")
    if "__main__" in parts:
        return "runs its program on import"
    if {"test", "tests", "idle_test"} & set(parts):
        return "a test suite"
    return SKIPPED_MODULES.get(parts[0])


class Holder:
    """A plain class of this module: its stored instance holds values as
    attributes."""


class Slotted:
    """Instances that hold __slots__ only."""
    __slots__ = ("a", "b", "__weakref__")

    def __init__(self):
        self.a = [1, "two", (3.0, None)]
        self.b = {"k": {4, 5}}

    def __eq__(self, other):
        return (type(other) is Slotted
                and (self.a, self.b) == (other.a, other.b))


class WithDict:
    """Instances that hold a __dict__."""

    def __init__(self):
        self.x = 1.5
        self.items = [b"bytes", bytearray(b"ba"), frozenset({"f"})]


class SlottedWithDict(WithDict):
    """__slots__ over a class with a __dict__."""
    __slots__ = ("extra",)

    def __init__(self):
        super().__init__()
        self.extra = 2 ** 70


class TaggedStr(str):
    __slots__ = ("tag",)

    def __new__(cls, value="tagged", tag=("t", 1)):
        self = super().__new__(cls, value)
        self.tag = tag
        return self

    def __eq__(self, other):
        return str.__eq__(self, other) and self.tag == other.tag

    __hash__ = str.__hash__


class SlotlessFloat(float):
    __slots__ = ()


class Dict(dict):
    """A subclass of dict with an attribute of its own."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.note = ["note"]

    def __eq__(self, other):
        return dict.__eq__(self, other) and self.note == other.note


class List(list):
    __slots__ = ("note",)

    def __init__(self, *args):
        super().__init__(*args)
        self.note = {"n": 1}

    def __eq__(self, other):
        return list.__eq__(self, other) and self.note == other.note


class Set(set):
    pass


Pair = collections.namedtuple("Pair", "left right")


try:
    import zoneinfo
    zoneinfo.ZoneInfo("UTC")
except Exception:
    zoneinfo = None

try:
    import array
except ImportError:
    array = None
else:
    class ArraySubclass(array.array):
        """A class written in Python over a C type with state of its own:
        refused like array.array."""


# --- what a class's instances are ------------------------------------------

_HEAPTYPE = 1 << 9          # Py_TPFLAGS_HEAPTYPE
_MANAGED_DICT = 1 << 4      # Py_TPFLAGS_MANAGED_DICT


def _dealloc(tp):
    """tp's tp_dealloc (None without ctypes)."""
    try:
        import ctypes
    except ImportError:
        return None
    # After PyObject_VAR_HEAD: tp_name, tp_basicsize, tp_itemsize.
    offset = object.__basicsize__ + 4 * ctypes.sizeof(ctypes.c_void_p)
    return ctypes.c_void_p.from_address(id(tp) + offset).value


class _Probe:
    pass


_written = {}


def written_in_python(tp):
    """Whether tp is a class statement's (or type()'s): a heap type whose
    instances add to its base's layout only __slots__, a __dict__ and a
    weak-reference list, and that is not a C type made by PyType_FromSpec
    (whose tp_dealloc is its own)."""
    try:
        return _written[tp]
    except KeyError:
        pass
    except TypeError:           # an unhashable metaclass
        return False
    _written[tp] = result = _written_in_python(tp)
    return result


def _written_in_python(tp):
    base = tp.__base__
    if not tp.__flags__ & _HEAPTYPE or base is None:
        return False
    own = vars(tp)
    if "__slots__" not in own and not tp.__dictoffset__:
        return False
    slots = own.get("__slots__", ())
    if isinstance(slots, str):
        slots = (slots,)
    try:
        slots = list(slots)
    except TypeError:
        return False
    pointer = tuple.__itemsize__
    size = base.__basicsize__ + pointer * sum(
        1 for name in slots if name not in ("__dict__", "__weakref__"))
    if (tp.__dictoffset__ and not base.__dictoffset__
            and not tp.__flags__ & _MANAGED_DICT):
        size += pointer
    # A weak-reference list in the object (3.13 keeps a class statement's
    # before it, at a negative offset, as it does the dict).
    if tp.__weakrefoffset__ > 0 and not base.__weakrefoffset__:
        size += pointer
    if tp.__basicsize__ != size or tp.__itemsize__ != base.__itemsize__:
        return False
    return _dealloc(tp) == _dealloc(_Probe)


def layout(tp):
    """What tp's instances are, for the managers:

    'builtin': a supported builtin type;
    'plain': a class written in Python over object;
    'over-builtin': a class written in Python over a supported builtin (a
        manager may hold it, or refuse it);
    'C': anything else -- a C type, or a class written in Python over
        one: a manager must refuse it.
    """
    if tp in SUPPORTED:
        return "builtin"
    base = tp
    while (base is not object and base not in SUPPORTED
           and written_in_python(base)):
        base = base.__base__
    if base is tp:
        return "C"
    if base is object:
        return "plain"
    if base in SUPPORTED:
        return "over-builtin"
    return "C"


def type_name(tp):
    return f"{tp.__module__}.{tp.__qualname__}"


def describe(obj, memo=None, depth=0):
    """A text of obj's value that is the same in every process (no
    addresses, sets in an order of their own): what a round trip keeps.
    Objects of C types are named, not looked into."""
    tp = type(obj)
    if tp in SCALARS:
        return repr(obj)
    if memo is None:
        memo = {}
    if id(obj) in memo:
        return f"@{memo[id(obj)][0]}"
    # With obj: the temporaries made here must not die, and lend their
    # addresses to others.
    memo[id(obj)] = (len(memo), obj)
    if depth > 100:
        return "..."

    def d(value):
        return describe(value, memo, depth + 1)

    def elements(values):
        # Hashable, without cycles; sorted, as the hashes of str differ
        # between processes.
        return ", ".join(sorted(describe(value) for value in values))

    if tp is tuple:
        return "(" + ", ".join(map(d, obj)) + ")"
    if tp is list:
        return "[" + ", ".join(map(d, obj)) + "]"
    if tp is dict:
        return "{" + ", ".join(f"{d(k)}: {d(v)}" for k, v in obj.items()) + "}"
    if tp in (set, frozenset):
        return f"{tp.__name__}({{{elements(obj)}}})"
    if tp is collections.defaultdict:
        return (f"defaultdict({d(obj.default_factory)}, "
                f"{d(dict(obj))})")
    if tp is collections.deque:
        return f"deque({d(list(obj))}, maxlen={obj.maxlen})"
    if tp is collections.OrderedDict:
        return (f"OrderedDict({d(list(obj.items()))}, "
                f"{d(vars(obj))})")
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
        # A reference, by name (its repr may hold an address).
        return f"<{getattr(obj, '__module__', '?')}:{obj.__qualname__}>"
    if tp is bytearray or tp in VALUE_PARTS or is_reference(obj):
        return repr(obj)
    if layout(tp) == "C":
        return f"<{type_name(tp)}>"
    parts = []
    for base in tp.__mro__:
        if base is dict:
            parts.append(d(list(dict.items(obj))))
        elif base in (list, tuple):
            parts.append(d(list(base.__iter__(obj))))
        elif base in (set, frozenset):
            parts.append(f"{{{elements(base.__iter__(obj))}}}")
        elif base in SUPPORTED:
            parts.append(base.__repr__(obj))
        else:
            continue
        break
    if tp.__dictoffset__:
        parts.append(d(dict(object.__getattribute__(obj, "__dict__"))))
    for base in tp.__mro__:
        if written_in_python(base):
            for name, member in vars(base).items():
                if (isinstance(member, types.MemberDescriptorType)
                        and name != "__weakref__"):
                    try:
                        value = d(member.__get__(obj, tp))
                    except AttributeError:
                        value = "<unset>"
                    parts.append(f"{base.__qualname__}.{name}={value}")
    return f"{type_name(tp)}({', '.join(parts)})"


def is_reference(obj):
    """Whether a pool stores obj as a reference to an object that every
    process finds by name (an enum member, datetime.timezone.utc, a class,
    a function): not looked into, and the same object when read back."""
    return (refers_to(type(obj)) or obj is datetime.timezone.utc)


def refers_to(tp):
    """Whether a pool stores the objects of type tp, when it takes them,
    as references: enum members, classes, functions."""
    return (isinstance(tp, enum.EnumType) or issubclass(tp, type)
            or tp in (types.FunctionType, types.BuiltinFunctionType)
            or type_name(tp) == "zoneinfo.ZoneInfo")


def reachable_types(obj, limit=20000):
    """The types of obj and of what a manager's walk of it reaches: what
    a refusal of obj may name."""
    found = set()
    seen = set()
    todo = [obj]
    while todo and len(seen) < limit:
        value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        tp = type(value)
        found.add(tp)
        if (tp in SCALARS or isinstance(value, type) or layout(tp) == "C"
                or is_reference(value)):
            continue
        if tp in VALUE_PARTS:
            todo.extend(VALUE_PARTS[tp](value))
            continue
        referents = gc.get_referents(value)
        if tp in referents:
            # The visit of an instance's class (subtype_traverse's): the
            # class is not stored with it.
            referents.remove(tp)
        todo.extend(referents)
    return found


def names_a_type(message, candidates):
    """Whether message names one of the types candidates as tp_name does
    ('name' or 'module.name')."""
    names = {tp.__name__ for tp in candidates}
    quoted = re.findall(r"'([\w.]+)'", message)
    return any(q.rpartition(".")[2] in names for q in quoted)


def entry_name(entry):
    """The name of a survey entry's class, or a focused entry's value."""
    if "expr" in entry:
        return entry["expr"]
    return f"{entry['module']}.{entry['path']}"


# --- the child processes ----------------------------------------------------

class _Timeout(BaseException):
    """A class's work took too long (raised by SIGALRM)."""


@contextlib.contextmanager
def time_limit(seconds=CLASS_TIMEOUT):
    def alarm(signum, frame):
        raise _Timeout
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def quiet():
    """What the library prints and warns while it works is not ours."""
    with warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class Progress:
    """A child's report: JSON lines written to a file as it goes, so that
    what it was doing when it crashed is known."""

    def __init__(self, path):
        # Opened before anything else: its descriptor is not one that a
        # constructor of the survey closes (FileIO(0) closes 0).
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def __call__(self, **record):
        data = (json.dumps(record) + "\n").encode()
        while data:
            data = data[os.write(self.fd, data):]


def import_quietly(name):
    with quiet():
        return importlib.import_module(name)


def import_all(names):
    for name in names:
        try:
            with time_limit():
                import_quietly(name)
        except (Exception, _Timeout, SystemExit):
            pass


def stdlib_modules():
    """The standard library's modules and their packages' submodules: a
    dict of name -> module, or the reason it was not imported."""
    found = {}

    def visit(name):
        if name in found:
            return
        why = skipped_module(name)
        if why is not None:
            found[name] = why
            return
        try:
            with time_limit():
                module = found[name] = import_quietly(name)
        except (Exception, _Timeout, SystemExit) as exc:
            found[name] = f"{type(exc).__name__}: {exc}"
            return
        path = getattr(module, "__path__", None)
        if path is not None:
            with quiet():
                names = [info.name for info in
                         pkgutil.iter_modules(path, name + ".")]
            for name in names:
                visit(name)

    # With the fork's own modules.
    for name in sorted(set(sys.stdlib_module_names)
                       | {"pmem", "_pmem", "_memkind"}):
        visit(name)
    return found


def list_classes(job):
    """Child: every class that the standard library's modules define,
    each once, as [module, attribute path] (nested classes too): in the
    module that defines it when it is found there."""
    progress = Progress(job["progress"])
    modules = stdlib_modules()
    classes = {}

    def add(cls, module, path):
        home = cls.__module__ == module and cls.__qualname__ == path
        if id(cls) in classes and not home:
            return
        classes[id(cls)] = (cls, module, path)
        for name, value in sorted(vars(cls).items()):
            if (isinstance(value, type)
                    and value.__qualname__ == f"{cls.__qualname__}.{name}"):
                add(value, module, f"{path}.{name}")

    for name, module in sorted(modules.items()):
        if isinstance(module, types.ModuleType):
            for attr, value in sorted(vars(module).items()):
                if isinstance(value, type):
                    add(value, name, attr)
    with open(job["out"], "w") as f:
        json.dump({"classes": sorted([module, path] for _, module, path
                                     in classes.values()),
                   "modules": {name: why for name, why in modules.items()
                               if isinstance(why, str)}}, f)
    progress(event="end")


# The trivial constructors tried, in this order: the first that works
# makes the class's values.
FORMS = ((), (0,), ("",), (len,), (0, 0))


def maker(entry, form=None):
    """(make, form): a function that makes a new value of entry, and the
    trivial arguments it passes (an index of FORMS; None for a focused
    entry); make is None when no trivial constructor works."""
    if "expr" in entry:
        namespace = {name: import_quietly(name)
                     for name in entry["imports"]}
        namespace["test_types"] = sys.modules[MODULE]
        code = compile(entry["expr"], "<value>", "eval")
        return (lambda: eval(code, namespace)), None
    cls = import_quietly(entry["module"])
    for name in entry["path"].split("."):
        cls = getattr(cls, name)
    for i in (range(len(FORMS)) if form is None else [form]):
        args = FORMS[i]
        try:
            with quiet():
                cls(*args)
        except (Exception, SystemExit, KeyboardInterrupt):
            continue
        return (lambda: cls(*args)), i
    return None, None


def make_quietly(make):
    with quiet():
        return make()


def writer(job):
    """Child: store new values of job's entries four ways each."""
    progress = Progress(job["progress"])
    import_all(job["imports"])
    pool = pmem.open(job["pool"], size=POOL_SIZE)
    ns = pool.ns
    ns.list = []
    ns.dict = {}
    ns.holder = Holder()
    plist, pdict, holder = ns.list, ns.dict, ns.holder
    modules = set()

    def state():
        return (len(vars(ns)), len(plist), len(pdict), len(vars(holder)),
                pool.stats()["objects"])

    def fetch(how, key):
        return (getattr(ns, key) if how == "ns" else plist[-1]
                if how == "list" else pdict[key] if how == "dict"
                else getattr(holder, key))

    def store_one(how, key, make):
        """A store's record."""
        try:
            with time_limit():
                box = [make_quietly(make)]
                value = box[0]
                record = {}
                # repr() first: it may change the value (pathlib caches
                # its str), and so may the rest (a _LazyModule becomes a
                # module when an attribute is looked up).
                try:
                    with quiet():
                        repr(value)
                    record["repr"] = True
                except Exception:
                    record["repr"] = False
                try:
                    record["describe"] = describe(value)
                except Exception as exc:
                    record["describe"] = f"<describe: {type(exc).__name__}>"
                reachable = reachable_types(value)
                tp = type(value)
                record.update(type=type_name(tp), layout=layout(tp))
                del value
        except (Exception, _Timeout, SystemExit, KeyboardInterrupt) as exc:
            return {"outcome": "skipped",
                    "detail": f"constructing: {type(exc).__name__}"}
        before = state()
        try:
            # The value moves from the box to the store: the evaluation
            # stack holds the only reference to it, as in ``ns.x = C()``.
            with time_limit():
                if how == "ns":
                    setattr(ns, key, box.pop())
                elif how == "list":
                    plist.append(box.pop())
                elif how == "dict":
                    pdict[key] = box.pop()
                else:
                    setattr(holder, key, box.pop())
        except TypeError as exc:
            message = str(exc).replace(job["pool"], "<pool>")
            if state() != before:
                return dict(record, outcome="error", detail=(
                    f"the refused store changed the pool: {before} -> "
                    f"{state()} (names, list, dict, instance, objects): "
                    f"{message}"))
            if not names_a_type(message, reachable):
                return dict(record, outcome="error", detail=(
                    f"the refusal names none of "
                    f"{sorted(tp.__name__ for tp in reachable)}: "
                    f"{message}"))
            return dict(record, outcome="refused", detail=message)
        except _Timeout:
            return dict(record, outcome="error", detail="the store hung")
        except BaseException as exc:
            return dict(record, outcome="error",
                        detail=f"storing: {type(exc).__name__}: {exc}")
        if how == "list":
            record["index"] = len(plist) - 1
        progress(key=key, event="store", how=how,
                 stage="looking at the value it stored")
        try:
            with time_limit():
                stored = fetch(how, key)
                held = reachable_types(stored)
                modules.update(tp.__module__ for tp in held)
                record["C"] = sorted(type_name(tp) for tp in held
                                     if layout(tp) == "C"
                                     and not refers_to(tp))
                after = describe(stored)
                tp = type(stored)
                del stored
        except (Exception, _Timeout) as exc:
            return dict(record, outcome="mismatched", detail=(
                f"the stored value: {type(exc).__name__}: {exc}"))
        if type_name(tp) != record["type"]:
            return dict(record, outcome="mismatched",
                        detail=f"stored as a {type_name(tp)}")
        if after != record["describe"]:
            return dict(record, outcome="mismatched", detail=(
                f"stored as {after}, not {record['describe']}"))
        return dict(record, outcome="stored")

    for entry in job["entries"]:
        key = entry["key"]
        progress(key=key, event="begin")
        why = SKIPPED_CLASSES.get(entry_name(entry))
        if why is None:
            try:
                with time_limit():
                    make, form = maker(entry)
            except (Exception, _Timeout, SystemExit) as exc:
                why = f"not found: {type(exc).__name__}: {exc}"
            else:
                if make is None:
                    why = "no trivial constructor"
        if why is not None:
            progress(key=key, event="skip", why=why)
            continue
        stores = {}
        for how in STORES:
            progress(key=key, event="store", how=how, stage="storing it")
            stores[how] = store_one(how, key, make)
        progress(key=key, event="done", form=form, stores=stores)
    progress(event="stored", modules=sorted(modules))
    pool.close()
    progress(event="end")


def reader(job):
    """Child: open the pool in a new process and check what the writer
    stored (its records are job['stored'])."""
    progress = Progress(job["progress"])
    import_all(job["imports"])
    progress(event="opening")
    pool = pmem.open(job["pool"], create=False)
    ns = pool.ns
    progress(event="opened")
    stored = job["stored"]

    # The pool holds what was stored and nothing that was refused.
    expected = {"ns": set(), "dict": set(), "attr": set()}
    count = 0
    for key, record in stored.items():
        for how, store in record["stores"].items():
            if store["outcome"] in ("stored", "mismatched"):
                if how == "list":
                    count += 1
                else:
                    expected[how].add(key)
    found = {"ns": set(vars(ns)) - {"list", "dict", "holder"},
             "dict": set(ns.dict), "attr": set(vars(ns.holder))}
    problems = {}
    for how in expected:
        for key in found[how] - expected[how]:
            problems.setdefault(key, []).append(
                f"{how}: in the pool, although its store was refused")
        for key in expected[how] - found[how]:
            problems.setdefault(key, []).append(
                f"{how}: stored, and not in the pool")
    if len(ns.list) != count:
        for key in stored:
            problems.setdefault(key, []).append(
                f"list: the batch's list holds {len(ns.list)} values, not "
                f"the {count} stored")
    progress(event="structure", problems=problems)

    def check(entry, how, store):
        """What is wrong with the store read back, or None."""
        key = entry["key"]
        value = (getattr(ns, key) if how == "ns"
                 else ns.list[store["index"]] if how == "list"
                 else ns.dict[key] if how == "dict"
                 else getattr(ns.holder, key))
        if type_name(type(value)) != store["type"]:
            return (f"read back as a {type_name(type(value))}, stored as a "
                    f"{store['type']}")
        if describe(value) != store["describe"]:
            return (f"read back as {describe(value)}, stored as "
                    f"{store['describe']}")
        if store["repr"]:
            try:
                with quiet():
                    repr(value)
            except Exception as exc:
                return (f"repr() of the value read back raised "
                        f"{type(exc).__name__}: {exc}")
        # Equal to a new value, where the class defines equality, a new
        # value is the same as the one stored was, and two new values are
        # equal.
        try:
            make, _ = maker(entry, stored[key]["form"])
            new = make_quietly(make)
            if (type(new).__eq__ is object.__eq__
                    or type(new) is not type(value)
                    or describe(new) != store["describe"]
                    or not new == make_quietly(make)):
                return None
        except Exception:
            return None
        if not value == new:
            return "the value read back is not equal to a new one"
        return None

    for entry in job["entries"]:
        key = entry["key"]
        if key not in stored:
            continue
        progress(key=key, event="begin")
        problems = {}
        for how, store in stored[key]["stores"].items():
            if store["outcome"] != "stored":
                continue
            progress(key=key, event="store", how=how,
                     stage="reading it back")
            try:
                with time_limit():
                    problem = check(entry, how, store)
            except _Timeout:
                problem = "reading it back hung"
            except Exception as exc:
                problem = f"reading it back: {type(exc).__name__}: {exc}"
            if problem is not None:
                problems[how] = problem
        progress(key=key, event="checked", problems=problems)
    progress(event="checked all")
    pool.close()
    progress(event="end")


def child_main(argv):
    mode, path = argv
    with open(path) as f:
        job = json.load(f)
    {"list": list_classes, "write": writer, "read": reader}[mode](job)
    # Leave at once: what the survey made (threads, executors, temporary
    # files) has atexit handlers and finalizers that are not under test.
    # The pool is closed.
    sys.stdout.flush()
    os._exit(0)


# --- the parent -------------------------------------------------------------

CHILD = ("import sys; from test.test_pmem import test_types; "
         "test_types.child_main(sys.argv[1:])")


class Child:
    """What a child process did: its records, how it ended."""

    def __init__(self, records, returncode, stderr, timed_out):
        self.records = records
        self.returncode = returncode
        self.stderr = stderr
        self.timed_out = timed_out

    @property
    def ok(self):
        return (not self.timed_out and self.returncode == 0
                and "end" in self.events())

    @property
    def crashed(self):
        """Killed by a signal or hung: not a Python exception."""
        return self.timed_out or self.returncode < 0

    def events(self):
        return [r["event"] for r in self.records if "key" not in r]

    def current(self):
        """The key that the child was at when it ended, and what it was
        doing with it (a store and its stage, or None)."""
        key = doing = None
        for r in self.records:
            if r["event"] == "begin":
                key, doing = r["key"], None
            elif r["event"] == "store":
                key, doing = r["key"], f"{r['stage']} ({r['how']})"
            elif "key" in r:
                key = doing = None
        return key, doing

    def how_it_ended(self):
        if self.timed_out:
            return f"hung (killed after {CHILD_TIMEOUT} s)"
        if self.returncode < 0:
            try:
                return f"killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                return f"killed by signal {-self.returncode}"
        return f"ended with status {self.returncode}"

    def error(self):
        """What the child printed of its end: the fatal error and the
        innermost frame (faulthandler's), or the exception."""
        lines = [line.strip() for line in self.stderr.splitlines()
                 if line.strip()]
        for i, line in enumerate(lines):
            if line.startswith("Fatal Python error"):
                frame = next((f for f in lines[i + 1:]
                              if f.startswith("File ")), "")
                return f"{line} ({frame})" if frame else line
        return lines[-1] if lines else "nothing on stderr"


class SurveyError(Exception):
    """The survey could not run."""


class Survey:
    """Stores instances of the standard library's classes into pools, a
    batch at a time, and reads them back in new processes."""

    def __init__(self, directory, workers=None):
        self.dir = directory
        self.workers = workers or max(2, min(8, os.cpu_count() or 2))
        self.numbers = itertools.count()
        self.splits = itertools.count()
        self.classes = []
        self.modules = {}       # modules not imported -> why
        self.results = {}       # class name -> result
        self.elapsed = 0.0

    def run_child(self, mode, job, timeout=CHILD_TIMEOUT):
        stem = os.path.join(self.dir, f"{mode}{next(self.numbers)}")
        job = dict(job, progress=stem + ".progress")
        with open(stem + ".json", "w") as f:
            json.dump(job, f)
        env = dict(os.environ, TMPDIR=self.dir, HOME=self.dir, **FAST_FLUSH)
        env.pop("PYTHONWARNINGS", None)
        # stderr goes to a file: a process that the child leaves behind
        # (a constructor's) does not hold it open.  The child leads a
        # process group, killed with what it left when it ends.
        with open(stem + ".stderr", "w+b") as errors:
            proc = subprocess.Popen(
                [sys.executable, "-X", "faulthandler", "-c", CHILD, mode,
                 stem + ".json"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=errors, env=env, cwd=self.dir,
                start_new_session=True)
            try:
                returncode = proc.wait(timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                returncode = None
                timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            errors.seek(0)
            stderr = errors.read()
        records = []
        with contextlib.suppress(FileNotFoundError), \
                open(job["progress"]) as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
        for suffix in (".json", ".progress", ".stderr"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stem + suffix)
        return Child(records, returncode,
                     stderr.decode(errors="replace"), timed_out)

    def list_classes(self):
        out = os.path.join(self.dir, "classes.json")
        child = self.run_child("list", {"out": out}, timeout=600)
        if not child.ok:
            raise SurveyError(f"listing the classes: {child.how_it_ended()}"
                              f": {child.error()}")
        with open(out) as f:
            listing = json.load(f)
        os.unlink(out)
        self.modules = listing["modules"]
        self.classes = [{"key": f"c{i}", "module": module, "path": path}
                        for i, (module, path)
                        in enumerate(listing["classes"])]

    @staticmethod
    def batches(entries):
        """Runs of at most BATCH entries, of few modules each."""
        batch = []
        for entry in entries:
            if batch and (len(batch) == BATCH
                          or (entry["module"] != batch[-1]["module"]
                              and len(batch) >= BATCH // 2)):
                yield batch
                batch = []
            batch.append(entry)
        if batch:
            yield batch

    def run_pair(self, entries):
        """A writer, then a reader, on a new pool: ({key: record},
        failure), failure being None or (key or None, kind, text)."""
        pool = os.path.join(self.dir, f"pool{next(self.numbers)}")
        imports = sorted({e["module"] for e in entries if "module" in e}
                         | {m for e in entries for m in e.get("imports", ())}
                         | {MODULE})
        job = {"pool": pool, "entries": entries, "imports": imports}
        try:
            return self._run_pair(job)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pool)

    def _run_pair(self, job):
        def failure(child, name):
            key, doing = child.current()
            events = child.events()
            if name == "writer":
                where = ("while storing" if "stored" not in events
                         else "after storing (closing the pool, exiting)")
            else:
                where = ("while opening the pool" if "opened" not in events
                         else "while reading" if "checked all" not in events
                         else "after reading (closing the pool, exiting)")
            if doing is not None:
                where = f"while {doing}"
            text = (f"the {name} {child.how_it_ended()} {where}: "
                    f"{child.error()}").replace(job["pool"], "<pool>")
            return key, "crashed" if child.crashed else "error", text

        writer = self.run_child("write", job)
        records = {}
        modules = []
        for r in writer.records:
            if r["event"] == "done":
                records[r["key"]] = {"form": r["form"],
                                     "stores": r["stores"]}
            elif r["event"] == "skip":
                records[r["key"]] = {"skip": r["why"]}
            elif r["event"] == "stored":
                modules = r["modules"]
        if not writer.ok:
            return records, failure(writer, "writer")
        stored = {key: r for key, r in records.items() if "stores" in r}
        job = dict(job, stored=stored,
                   imports=sorted(set(job["imports"]) | set(modules)))
        reader = self.run_child("read", job)
        for r in reader.records:
            if r["event"] == "checked":
                records[r["key"]]["read"] = r["problems"]
            elif r["event"] == "structure":
                for key, problems in r["problems"].items():
                    records.setdefault(key, {})["structure"] = problems
        if not reader.ok:
            return records, failure(reader, "reader")
        return records, None

    def run_batch(self, entries):
        """{key: record} of entries; the failures of a child are found by
        splitting its batch (while the budget of splits lasts)."""
        records, failure = self.run_pair(entries)
        if failure is None:
            return records
        key, kind, text = failure
        if key is None and len(entries) == 1:
            key = entries[0]["key"]
        if key is None and next(self.splits) >= SPLITS:
            text += " (one of a batch, not split further)"
            return {e["key"]: {"failed": (kind, text)} for e in entries}
        result = {}
        if key is not None:
            result[key] = {"failed": (kind, text)}
            rest = [e for e in entries if e["key"] != key]
        else:
            half = len(entries) // 2
            result.update(self.run_batch(entries[half:]))
            rest = entries[:half]
        if rest:
            result.update(self.run_batch(rest))
        return result

    def run(self):
        start = time.monotonic()
        # A pool that holds nothing of the survey's round-trips first:
        # otherwise every batch fails, for the same reason.
        _, failure = self.run_pair([])
        if failure is not None:
            raise SurveyError(f"an empty pool does not round-trip: "
                              f"{failure[2]}")
        self.list_classes()
        with ThreadPoolExecutor(self.workers) as executor:
            done = list(executor.map(self.run_batch,
                                     self.batches(self.classes)))
        records = {}
        for batch in done:
            records.update(batch)
        for entry in self.classes:
            self.results[entry_name(entry)] = judge(records.get(entry["key"]))
        self.elapsed = time.monotonic() - start
        return self

    def counts(self):
        counts = dict.fromkeys(["classes", "round-tripped", "refused",
                                "refused on use", "mixed", "skipped",
                                "failed", *FAILURES], 0)
        counts["classes"] = len(self.results)
        for result in self.results.values():
            if result["outcome"] in counts:
                counts[result["outcome"]] += 1
            for kind in {kind for kind, _ in result["failures"]}:
                counts[kind] += 1
        return counts

    def failures(self, kind):
        return sorted(f"{name}: {text}"
                      for name, result in self.results.items()
                      for k, text in result["failures"] if k == kind)

    def summary(self):
        c = self.counts()
        return (f"{c['classes']} classes: {c['round-tripped']} "
                f"round-tripped, {c['refused']} refused, {c['mixed']} "
                f"round-tripped or refused by where they were stored, "
                f"{c['refused on use']} stored but refused what a method "
                f"then stored into them, "
                f"{c['skipped']} skipped (no trivial constructor); "
                f"{c['failed']} failed: {c['crashed']} crashed, "
                f"{c['accepted']} stored a C layout, {c['mismatched']} "
                f"mismatched, {c['error']} errors ({len(self.modules)} "
                f"modules not imported; {self.elapsed:.0f} s)")

    def report(self, limit=None, skipped=False):
        """The summary and the failures (limit of each kind); with
        skipped, what was not imported or constructed, and why."""
        lines = [self.summary()]
        for kind in FAILURES:
            found = self.failures(kind)
            if found:
                lines.append(f"{kind} ({len(found)}):")
                lines.extend("  " + text for text in found[:limit])
                if limit is not None and len(found) > limit:
                    lines.append(f"  ... and {len(found) - limit} more")
        if skipped:
            lines.append(f"modules not imported ({len(self.modules)}):")
            lines.extend(f"  {name}: {why}"
                         for name, why in sorted(self.modules.items()))
            whys = {}
            for name, result in self.results.items():
                if result["outcome"] == "skipped":
                    why = result.get("why", "no store could construct one")
                    whys.setdefault(why, []).append(name)
            lines.append("classes skipped:")
            for why, names in sorted(whys.items(), key=lambda i: -len(i[1])):
                shown = names if len(names) <= 10 else names[:10] + ["..."]
                lines.append(f"  {len(names)}: {why}: {', '.join(shown)}")
        return "\n".join(lines)


def judge(record):
    """A class's result from its record: {'outcome': ..., 'failures':
    [(kind, text)...]}, kind one of FAILURES."""
    if record is None:
        return {"outcome": "failed",
                "failures": [("error", "the survey lost its record")]}
    if "failed" in record:
        return {"outcome": "failed", "failures": [tuple(record["failed"])]}
    if "skip" in record:
        return {"outcome": "skipped", "why": record["skip"],
                "failures": []}
    if "stores" not in record:
        return {"outcome": "failed",
                "failures": [("error", "the writer left no record of it")]}
    failures = []
    outcomes = set()
    for how in STORES:
        store = record["stores"][how]
        outcomes.add(store["outcome"])
        if store["outcome"] in ("error", "mismatched"):
            failures.append((store["outcome"], f"{how}: {store['detail']}"))
        elif store["outcome"] == "stored" and store["C"]:
            what = ("" if store["C"] == [store["type"]]
                    else f" holding {', '.join(store['C'])}")
            failures.append(("accepted", f"{how}: a {store['type']}{what} "
                             f"was stored: a manager does not know the "
                             f"layout"))
        problem = record.get("read", {}).get(how)
        if problem is not None and REFUSED_ON_USE.search(problem):
            # Stored, but a method of it sets an attribute to what a
            # pool cannot hold (a cache of functions): the store rule's
            # TypeError, at that store.
            outcomes.add("refused on use")
        elif problem is not None:
            failures.append(("mismatched", f"{how}: {problem}"))
    for problem in record.get("structure", ()):
        failures.append(("mismatched", problem))
    merged = {}
    for kind, text in failures:
        how, _, rest = text.partition(": ")
        if how in STORES:
            merged.setdefault((kind, rest), []).append(how)
        else:
            merged.setdefault((kind, text), [])
    failures = [(kind, f"{', '.join(hows)}: {text}" if hows else text)
                for (kind, text), hows in merged.items()]
    if failures:
        outcome = "failed"
    elif outcomes == {"skipped"}:
        outcome = "skipped"
    elif outcomes <= {"stored", "skipped"}:
        outcome = "round-tripped"
    elif outcomes <= {"refused", "skipped"}:
        outcome = "refused"
    elif "refused on use" in outcomes:
        outcome = "refused on use"
    else:
        outcome = "mixed"
    return {"outcome": outcome, "failures": failures}


def survey(workers=None):
    """Run the survey in a temporary directory: the Survey, done."""
    directory = tempfile.mkdtemp(prefix="pmem-types-")
    try:
        return Survey(directory, workers).run()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- the tests --------------------------------------------------------------

class SurveyTests(unittest.TestCase):

    @support.requires_resource('cpu')     # about 30 seconds
    def test_every_stdlib_class_round_trips_or_is_refused(self):
        try:
            result = survey()
        except SurveyError as exc:
            self.fail(str(exc))
        if support.verbose:
            print(f"\npmem type survey: {result.summary()}",
                  file=sys.stderr, flush=True)
        counts = result.counts()
        self.assertGreater(counts["classes"], 1000)
        self.assertGreater(counts["round-tripped"], 100)
        self.assertGreater(counts["refused"], 100)
        if any(counts[kind] for kind in FAILURES):
            self.fail(result.report(limit=40))


class FocusedTests(unittest.TestCase):
    """The known cases, each value stored four ways by one process and
    read back by another, as the survey does."""

    def setUp(self):
        self.dir = self.enterContext(os_helper.temp_dir())
        self.survey = Survey(self.dir)

    def store(self, *exprs, imports=()):
        """Store new values of each of exprs four ways in a new pool, and
        read the pool in a new process: the records of the stores, one
        for each expr."""
        entries = [{"key": f"v{i}", "expr": expr, "imports": list(imports)}
                   for i, expr in enumerate(exprs)]
        records, failure = self.survey.run_pair(entries)
        if failure is not None:
            self.fail(f"{', '.join(exprs)}: {failure[2]}")
        for entry in entries:
            # Nothing of a refused store is in the pool, nothing of a
            # stored one is missing.
            record = records[entry["key"]]
            self.assertNotIn("structure", record, entry["expr"])
        return [records[entry["key"]] for entry in entries]

    def assertRefused(self, expr, name, imports=()):
        """The four stores of expr are refused with a TypeError that names
        the type name ('name' or 'module.name'), and change nothing: the
        writer finds the namespace, the list, the dict, the instance and
        the pool's object count as they were (else an 'error'), and the
        reader none of it in the pool."""
        record, = self.store(expr, imports=imports)
        for how in STORES:
            with self.subTest(expr=expr, how=how):
                store = record["stores"][how]
                self.assertEqual(store["outcome"], "refused",
                                 store.get("detail")
                                 or f"a {store['type']} was stored")
                self.assertRegex(store["detail"], rf"'(\w+\.)*{name}'")

    def assertRoundTrip(self, *exprs, imports=()):
        """The four stores of each of exprs round-trip: the same type and
        value in a new process, a repr() that works."""
        for expr, record in zip(exprs, self.store(*exprs, imports=imports)):
            for how in STORES:
                with self.subTest(expr=expr, how=how):
                    store = record["stores"][how]
                    self.assertEqual(store["outcome"], "stored",
                                     store.get("detail"))
                    self.assertEqual(store["C"], [])
                    self.assertIsNone(record["read"].get(how))

    @unittest.skipIf(array is None, "needs array")
    def test_array(self):
        self.assertRefused("array.array('i', [1, 2])", "array", ["array"])

    @unittest.skipIf(array is None, "needs array")
    def test_python_subclass_of_array(self):
        self.assertRefused("test_types.ArraySubclass('i', [1, 2])",
                           "ArraySubclass")

    @unittest.skipIf(array is None, "needs array")
    def test_plain_instance_that_holds_an_array(self):
        # The refusal names the array, what a manager cannot hold.
        self.assertRefused("(lambda h: (setattr(h, 'a', array.array('i')), "
                           "h)[1])(test_types.Holder())", "array", ["array"])

    def test_plain_instance_with_inline_attributes(self):
        # A thread's attributes are inline values (no dict made yet): each
        # is checked, and the first that a manager cannot hold refused.
        self.assertRefused("threading.Thread(target=print)",
                           "_ThreadHandle", ["threading"])

    def test_struct(self):
        self.assertRefused("struct.Struct('i')", "Struct", ["struct"])

    def test_partial(self):
        self.assertRefused("functools.partial(print)", "partial",
                           ["functools"])

    def test_deque_and_ordered_dict(self):
        self.assertRoundTrip("collections.deque([1, 2])",
                             "collections.deque('ab', maxlen=3)",
                             "collections.deque(range(200))",
                             "collections.OrderedDict(a=1, b=(2,))",
                             imports=["collections"])

    def test_refusal_says_what_to_store_instead(self):
        # Where there is an obvious alternative, the message gives it.
        for expr, name, instead, imports in [
                ("memoryview(b'ab')", "memoryview", "bytes (x.tobytes())",
                 []),
                ("{1: 2}.keys()", "dict_keys", "a list or a set of them", []),
                ("(i for i in range(3))", "generator",
                 "a list of what it gives (list(x))", []),
                ("io.StringIO('a')", "StringIO", "its name (x.name)",
                 ["io"]),
                ("re.compile('a+')", "Pattern", "its pattern", ["re"])]:
            with self.subTest(expr=expr):
                self.assertRefused(expr, name, imports)
                record, = self.store(expr, imports=imports)
                for how in STORES:
                    self.assertIn(f"; store {instead}",
                                  record["stores"][how]["detail"])

    def test_datetime_family(self):
        self.assertRoundTrip(
            "datetime.date(2024, 2, 29)", "datetime.time(12, 30, 1, 5)",
            "datetime.time(1, 2, tzinfo=datetime.timezone.utc, fold=1)",
            "datetime.datetime(2024, 1, 2, 3, 4, 5, 6)",
            "datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone("
            "datetime.timedelta(hours=-5), 'EST'))",
            "datetime.timedelta(days=-3, microseconds=7)",
            "datetime.timezone.utc",
            "datetime.timezone(datetime.timedelta(minutes=90))",
            imports=["datetime"])

    @unittest.skipIf(zoneinfo is None, "needs zoneinfo")
    def test_zoneinfo_tzinfo(self):
        # A reference to the zone of its key; one not made by ZoneInfo(key)
        # has no name to find it by.
        self.assertRoundTrip("datetime.datetime(2024, 1, 2, tzinfo="
                             "zoneinfo.ZoneInfo('UTC'))",
                             imports=["datetime", "zoneinfo"])
        self.assertRefused("zoneinfo.ZoneInfo.no_cache('UTC')", "ZoneInfo",
                           ["zoneinfo"])

    def test_range_and_slice(self):
        self.assertRoundTrip("range(3, 100, 7)", "range(2 ** 70)",
                             "range(0)", "slice(1, None, 'a')",
                             "slice(None)", "slice((1, 2), 2 ** 80, 1.5)")

    def test_slice_of_a_mutable_is_refused(self):
        self.assertRefused("slice([1], 2)", "list")

    def test_plain_classes(self):
        self.assertRoundTrip("test_types.Slotted()", "test_types.WithDict()",
                             "test_types.SlottedWithDict()")

    def test_subclasses_of_immutable_builtins(self):
        # Values: copied when they hold nothing of their own, even shared.
        self.assertRoundTrip(
            "test_types.Str('abc')", "test_types.Str('h\u00e9llo' * 20)",
            "test_types.TaggedStr()", "test_types.Int(2 ** 70)",
            "test_types.Int(-3)", "test_types.SlotlessFloat(1.5)",
            "test_types.Complex(1, 2)", "test_types.Bytes(b'xy')",
            "test_types.Tuple((1, [2]))", "test_types.FrozenSet({1, 'a'})",
            "test_types.Pair(1, (2, 'b'))")

    def test_subclasses_of_mutable_builtins(self):
        self.assertRoundTrip(
            "test_types.Dict(a=[1], b={2})", "test_types.List([1, [2]])",
            "test_types.Set({1, 'a'})",
            "collections.Counter('abracadabra')", imports=["collections"])

    def test_builtins(self):
        self.assertRoundTrip(
            "None", "True", "2 ** 80", "1.5", "1 + 2j", "'s' * 9", "b'b' * 9",
            "(1, ('a', None))", "frozenset({1, 'a'})", "{'k': [1, {2}]}",
            "[1, [2]]", "{1, 'a'}", "bytearray(b'abc')", "...")



class ClassRecordTests(unittest.TestCase):
    """A pool records a class by module and qualified name: it takes only
    classes found there, and an open finds there only classes it can
    hold."""

    def setUp(self):
        self.dir = self.enterContext(os_helper.temp_dir())
        self.path = os.path.join(self.dir, "classes.pool")

    def run_child(self, code, module):
        with open(os.path.join(self.dir, "recorded.py"), "w") as f:
            f.write(textwrap.dedent(module))
        return run_in_new_process(self, code, path=self.dir)

    def test_open_refuses_a_recorded_class_it_cannot_hold(self):
        # The name of a class recorded by one process names a C type in
        # the next: its instances are placeholders, never array.arrays.
        self.run_child(f"""
            import pmem, recorded
            pmem.open({self.path!r}, size=16 << 20).ns.x = recorded.C()
            """, "class C:\n    pass\n")
        out = self.run_child(f"""
            import pmem
            pool = pmem.open({self.path!r})
            print(type(pool.ns.x).__mro__[1:])
            print(pool.unresolved())
            """, "import array\nC = array.array\n")
        self.assertIn("(<class 'pmem.Placeholder'>, <class 'object'>)", out)
        self.assertIn("'recorded:C'", out)
        self.assertIn("not a class written in Python", out)

    def test_class_not_where_its_names_say_is_refused(self):
        out = self.run_child(f"""
            import pmem, recorded
            pool = pmem.open({self.path!r}, size=16 << 20)
            pool.ns.items = []
            for cls in (recorded.Moved, recorded.Renamed):
                try:
                    pool.ns.items.append(cls())
                except TypeError as exc:
                    print(cls.__name__,
                          "module and qualified name" in str(exc))
            print(len(pool.ns.items))
            """, """
            class Moved:
                pass
            Moved.__module__ = "elsewhere"

            class Renamed:
                pass
            Renamed.__qualname__ = "Other"
            """)
        self.assertEqual(out, "Moved True\nRenamed True\n0\n")


if __name__ == "__main__":
    if len(sys.argv) == 1:
        try:
            print(survey().report(skipped=True))
        except SurveyError as exc:
            sys.exit(f"pmem type survey: {exc}")
    else:
        unittest.main()
