"""Python objects in persistent memory.

A pool is a file of persistent memory (a PMDK libpmemobj pool) that holds
real Python objects -- dict, list, set, bytearray, int, str, tuple... --
which survive the process::

    import pmem
    pool = pmem.open("accounts.pool")        # created the first time
    if not hasattr(pool.ns, "accounts"):
        pool.ns.accounts = dict()            # moved into the pool
    with pool:                               # one transaction
        pool.ns.accounts["alice"] = 10.0

Every change to a pool object is atomic: one operation (``d[k] = v``,
``lst.append(x)``) is a transaction of its own, and ``with pool:`` makes
a block one transaction, rolled back when it raises.  Storing into a
pool object follows the memory hierarchy: immutable values are copied
in, a mutable value that nothing else refers to is moved in, and a
shared mutable value is refused with TypeError.

Transactions in detail:

* A ``with pool:`` block inside another is a savepoint: when it raises,
  its own changes are undone and the outer block goes on; the outermost
  block commits them all or nothing.
* An undone block leaves every object as it was: what it freed comes
  back, what it made is freed unless a variable still refers to it (then
  it is back as it was made, empty for a container).
* A block belongs to the thread that entered it, and is the pool's one
  writer while it runs: the other threads' changes to the pool wait for
  its end (reading does not wait).
* A generator or coroutine that suspends inside a block keeps the block
  open: what its thread does meanwhile joins the transaction, which ends
  when the generator leaves the block (committed, or undone when it
  raises or is closed).  Blocks must end in the order they began.
* A pool that is full raises MemoryError, and the transaction is undone;
  so is a transaction interrupted by KeyboardInterrupt or SystemExit.

Threads: every change to a pool object -- an operation, or a block --
takes the pool's writer lock before it reads what it changes, so threads
can share pool objects as they share ordinary ones; what they see of
another thread's block before it ends is what they would see of an
ordinary object.  A thread's block that waits for another thread to
release a lock that thread needs, while that thread changes the pool,
waits for ever (as with any two locks).  The cycle collector leaves a
pool's objects alone while a transaction of the pool is open: what it
would clear could not be undone with the transaction; garbage cycles
that a transaction made are collected after it commits.

Processes: a pool is open in one process at a time; a second process
that opens it gets PoolError (after waiting up to a second for a process
that is exiting to let the pool go).  A pool holds no file descriptor (only its
mapping), so a program the process executes (subprocess) has nothing of
it.  A child made by fork() -- os.fork(), multiprocessing with the
'fork' start method, Linux's default -- gets each open pool as it was at
the fork, in a copy of its own at the same addresses:

* it can read every object, and sees none of the parent's later
  changes;
* any change to a pool object (a store, a method that mutates, a
  ``with pool:`` block, pool.new(), pool.gc()) raises PoolError, and
  nothing the child does reaches the file; it returns what it computed
  to the parent, which stores it (a multiprocessing worker returns it);
* a fork inside a ``with pool:`` block leaves the block the parent's: the
  child's exit from it ends nothing;
* the child does not hold the pool: once the parent has closed the pool
  or exited, another process can open it while the child lives on.

The copy is made during fork(), of the parts of the pool file that hold
data (its holes are not copied), and the parent waits for it: a fork
takes about a second per gigabyte of data in open pools, and as much
memory.  pool.close() ends the pool's use in this process and frees
the file for another process.  When nothing in the process holds the
pool's objects any more, the pool is let go at once and its path can be
opened again here; else its objects stay readable from a copy, and the
path opens again once they are dropped.

Programs with a persistent namespace: ``python -X pmem=PATH prog.py``
(or PYTHONPMEM=PATH; also with -c, -m and the interactive interpreter)
keeps the variables of __main__ in the pool at PATH, created the first
time, opened before the program's first line:

* a binding whose value a pool can hold is kept in the pool's namespace
  (pool.ns), under the store rule above, and is back in __main__ when the
  next run starts: ``try: n`` / ``except NameError: n = 0`` picks up where
  the last run stopped.  A container that the binding moves into the
  pool is the pool's from then on: the variable refers to it;
* modules, functions, classes and dunder names (``__name__``...) stay
  per run, as in any run; so does a value that a pool refuses (an open
  file, a generator, a list that another variable shares too): binding it
  works, removes an earlier run's binding of the name, and warns once per
  name with NotPersistedWarning (-W filters it, or makes it an error);
* each binding, rebinding and deletion is atomic; ``with
  pmem.transaction():`` makes a block one transaction, and when it
  raises (or the process dies) its bindings are undone with the rest;
* instances of the program's own classes persist; in the next run a
  variable that holds one is unbound until the program has defined the
  class again, and then is back (objects of a missing class wait as
  placeholders and take their class when it is made, in any program);
* current_pool() is the pool; it closes when the interpreter exits.  A
  pool that cannot be opened stops the interpreter before the program
  runs, with one line on stderr and exit status 1.  Programs that the
  process starts run without it (PYTHONPMEM is removed from os.environ);
  a forked child binds its variables for itself.

Volatile memory of other kinds (when built with libmemkind): a
MemoryKind is a region of a memkind kind -- high-bandwidth memory
('hbw'), persistent memory used as volatile memory ('dax_kmem', or
'file' with dir=), ordinary memory ('regular') -- and ``with kind:``
places there the dicts, lists, sets, bytearrays and class instances that
the thread makes meanwhile.  They are ordinary objects, without
transactions; storage_of(obj) tells where an object lives::

    hbw = pmem.MemoryKind("hbw", size=4 << 30)
    with hbw:
        table = dict()
"""

import os
import reprlib

# A pool's objects hold raw pointers.  A pool that maps where it was
# mapped last opens fastest (when it maps elsewhere, the open pass moves
# every pointer).  libpmemobj reads this hint once, when it is loaded
# (with _pmem), and maps a pool there when the address is free.  The
# environment is left as it was.
_HINT = "PMEM_MMAP_HINT"
_hint_set = _HINT not in os.environ
if _hint_set:
    os.environ[_HINT] = "0x600000000000"
try:
    import _pmem
finally:
    if _hint_set:
        del os.environ[_HINT]
del _hint_set

from _pmem import (PoolError, FORMAT_VERSION, DEFAULT_SIZE, current_pool,
                   PersistentDict, PersistentList, PersistentSet,
                   PersistentByteArray)

try:
    # The memkind manager: built when libmemkind was found (--with-memkind).
    import _memkind
except ImportError:
    _memkind = None
    MemoryKind = None
else:
    MemoryKind = _memkind.Kind

__all__ = ["open", "Pool", "PoolError", "Placeholder",
           "placeholder_attributes", "storage_of", "current_pool",
           "transaction", "NotPersistedWarning", "PersistentDict",
           "PersistentList", "PersistentSet", "PersistentByteArray",
           "MemoryKind", "FORMAT_VERSION", "DEFAULT_SIZE"]


class NotPersistedWarning(UserWarning):
    """A variable of __main__, under python -X pmem, is bound for this run
    only: its value cannot live in the pool (an open file, a generator, a
    mutable object that something else refers to too).  Said once per
    name; filter it with -W ignore::pmem.NotPersistedWarning, or make it
    an error with -W error::pmem.NotPersistedWarning."""


def transaction(pool=None):
    """``with pmem.transaction():`` -- one transaction of pool: by
    default the one of __main__'s variables (python -X pmem), else the
    one pool that this process has open."""
    if pool is None:
        pool = current_pool()
    if pool is None:
        pools = [p for p in _pmem._pools() if not p.closed]
        if len(pools) != 1:
            raise PoolError(
                "pmem.transaction() names no pool: python runs without -X "
                f"pmem, and this process has {len(pools)} pools open; use "
                "`with pool:`")
        pool, = pools
    return pool


def _run_main_in_pool(path):
    """Keep __main__'s variables in the pool at path (python -X pmem=PATH,
    PYTHONPMEM=PATH), from now until the interpreter exits: the
    interpreter calls this before the program's first line."""
    import atexit
    import sys
    pool = open(path)
    try:
        _pmem._start_main(pool, sys.modules["__main__"], NotPersistedWarning,
                          Placeholder)
    except BaseException:
        pool.close()
        raise
    # The last of the exit functions (the first registered): those that
    # the program registers still change its variables.
    atexit.register(_pmem._stop_main)
    # The pool is this process's: programs that it starts (subprocess,
    # multiprocessing's spawned workers) run without it, instead of
    # failing to open a pool held by their parent.
    os.environ.pop("PYTHONPMEM", None)


def storage_of(obj):
    """Where obj lives: its Pool, its MemoryKind, or None (DRAM)."""
    return _pmem.storage_of(obj)


class Pool(_pmem.Pool):
    """An open pool.  ``with pool:`` is a transaction."""

    @property
    def ns(self):
        """The pool's persistent root namespace."""
        return _pmem.Namespace(self)

    def transaction(self):
        """A context manager for one transaction: ``with pool:``."""
        return self

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"<pmem.Pool {self.path!r} ({state})>"


class Placeholder:
    """An object of a pool whose class this process cannot use.

    A pool records each class of its instances by module and qualified
    name, with the layout of its instances.  When opening finds no such
    class (a script's ``__main__`` class, a module not on the path, a
    class renamed, or one whose layout changed), the instances stay as
    they are and are reachable as placeholders: objects of a class of the
    same layout, named like the missing one, which derives from
    Placeholder.  Their attributes can be read (placeholder_attributes()
    gives them all); they cannot be made, and their attributes cannot be
    set or deleted.  The next open that finds the class gives the
    instances their class again; in this process, so does the making of
    a class of that module and qualified name, with that layout (its
    module imported, a class statement of __main__ run), and
    Pool.resolve() for a class that exists by now.  Pool.unresolved()
    tells which classes are missing, and why.
    """

    __slots__ = ()

    #: "module:qualname" of the class the instances wait for; the reason
    #: it is not used.  Set on each placeholder class.
    __pmem_class__ = None
    __pmem_reason__ = None

    def __new__(cls, *args, **kwargs):
        raise TypeError(f"cannot make a {cls.__qualname__!r}: it is a "
                        f"placeholder for {cls.__pmem_class__}, which this "
                        f"process cannot use ({cls.__pmem_reason__})")

    def __setattr__(self, name, value):
        raise AttributeError(_refusal(self, f"set attribute {name!r}"))

    def __delattr__(self, name):
        raise AttributeError(_refusal(self, f"delete attribute {name!r}"))

    @reprlib.recursive_repr()
    def __repr__(self):
        fields = ", ".join(f"{name}={value!r}" for name, value
                           in placeholder_attributes(self).items())
        return f"<placeholder for {type(self).__pmem_class__}({fields})>"


def _refusal(placeholder, what):
    cls = type(placeholder)
    return (f"cannot {what} of a placeholder for {cls.__pmem_class__}, "
            f"which this process cannot use ({cls.__pmem_reason__}): make "
            f"the class importable under that name, with the same "
            f"attributes, and open the pool again (or call the pool's "
            f"resolve())")


def placeholder_attributes(placeholder):
    """{name: value} of what a Placeholder holds: its slots, from its
    first class's, then its __dict__."""
    attrs = {}
    for cls in reversed(type(placeholder).__mro__):
        for name in cls.__dict__.get("__slots__", ()):
            if name not in ("__dict__", "__weakref__"):
                try:
                    attrs[name] = object.__getattribute__(placeholder, name)
                except AttributeError:
                    pass
    try:
        attrs.update(object.__getattribute__(placeholder, "__dict__"))
    except AttributeError:
        pass
    return attrs


def _placeholder(name, layout, reason):
    """The placeholder class for instances of name ("module:qualname")
    whose layout the pool recorded: one class for each level of the
    layout (the slots that one class of the missing one's bases added,
    and "__dict__" and "__weakref__" when it added them), over
    Placeholder.  The pool checks that the result has the layout."""
    module, _, qualname = name.partition(":")
    levels = [tuple(level.split(",")) for level in layout.split(" ")[1:]]
    cls = Placeholder
    for slots in levels or [()]:
        cls = type(qualname.rpartition(".")[2], (cls,),
                   {"__slots__": slots, "__module__": module,
                    "__qualname__": qualname, "__pmem_class__": name,
                    "__pmem_reason__": reason})
    return cls


def open(path, *, create=True, size=None):
    """Open the pool at path, creating it if it does not exist and create
    is true: size bytes (DEFAULT_SIZE by default).  A pool that exists has
    the size it has: a size given that differs is an error (grow() makes
    a pool bigger).  Opening a pool twice in one process gives the same
    Pool."""
    return Pool(path, create=create, size=size)
