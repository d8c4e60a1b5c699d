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
in, a mutable value is moved in, and a shared mutable value is refused
with TypeError.  A move takes the value with the references that it can
find and rewrite -- this thread's variables (x = [1]; d[k] = x; then
x is d[k]), the lists and dicts that they refer to (rows.extend(records),
for r in records: rows.append(r)), a helper's parameters, a call's
keyword arguments -- so that identity holds afterwards; an undone
transaction puts them back.  Anything else that refers to the value (an
object's attribute, a set, another thread, a suspended generator) makes
it shared: store a copy (copy.deepcopy(x)) then.

What a pool holds:

  ==========================  =========================================
  None, True, False, ...,     referenced: static objects of the
  small ints, 1-char strs     interpreter, never copied
  enum members, classes,      referenced by name ("module:qualname"):
  functions,                  the same object in every process
  datetime.timezone.utc,      (pmem.MissingReference when the name is
  zoneinfo.ZoneInfo(key)      not found)
  int, float, complex, str,   copied in (a tuple or frozenset with its
  bytes, tuple, frozenset,    items, which must be held as well)
  range, slice, date, time,
  datetime, timedelta,
  timezone, decimal.Decimal
  Fraction, UUID, PurePath,   copied in, shared or not: classes whose
  ipaddress objects           instances are values (pmem.value())
  dict, list, set, bytearray, moved in when nothing else refers to
  collections.defaultdict,    them; refused when shared (each method
  collections.OrderedDict,    is atomic: OrderedDict.move_to_end,
  collections.deque           deque.rotate, a deque's maxlen kept)
  instances of classes made   moved in like containers, their __dict__
  by class statements over    and __slots__ with them; found again by
  object or one of the        "module:qualname" (pool.unresolved() and
  builtins above (named       pmem.Placeholder when the class is
  tuples, Counter, a str or   missing).  An instance of a subclass of
  dict subclass)              an immutable builtin that holds nothing
                              of its own (a named tuple) is copied
  anything else               refused with TypeError, naming the type:
                              e.g. dict views, array.array (a list or
                              bytes instead), functools.partial, a
                              lambda
  ==========================  =========================================

A class may name, in __pmem_volatile__, slots that cache what differs
between processes (pathlib.PurePath's hash of a str): a pool neither
stores nor keeps them.  An instance is otherwise copied as it is, with
whatever else it caches.

Transactions in detail:

* A ``with pool:`` block inside another is a savepoint: when it raises,
  its own changes are undone and the outer block goes on; the outermost
  block commits them all or nothing.
* An undone block leaves every object of the pool as it was: what it
  freed comes back, what it made is freed unless a variable still refers
  to it (then it stays, holding what it held at some point of the block:
  rely on none).
* A commit returns once its changes are durable: on persistent memory
  a few cache-line flushes, on a file of an ordinary file system a few
  msync() calls.  A pool opened with durability="process" flushes
  nothing: its commits survive the process being killed, not a power
  loss (help(pmem.open)).
* A block belongs to the thread that entered it, and is the pool's one
  writer while it runs: the other threads' changes to the pool wait for
  its end (reading does not wait).
* A generator or coroutine that suspends inside a block keeps the block
  open: what its thread does meanwhile joins the transaction, which ends
  when the generator leaves the block (committed, or undone when it
  raises or is closed).  Blocks must end in the order they began.
* A pool that is full raises MemoryError, and the transaction is undone;
  so is a transaction interrupted by KeyboardInterrupt or SystemExit.
  pmem.grow() makes a pool larger once it is closed.

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

Processes: a pool is open for writing in one process at a time; a
second process that opens it gets PoolError (after waiting up to a
second for a process that is exiting to let the pool go).  Any number of
processes can read a pool that no process writes, with
pmem.open(path, readonly=True): its objects can be read, any change
raises PoolError, and a process that opens it for writing meanwhile gets
PoolError, which says so (help(pmem.open)).  A pool holds no file
descriptor (only its mapping; a read-only one, one that is closed on
exec), so a program the process executes (subprocess) has nothing of
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

Growing: ``pmem.grow(path, size)`` (``python -m pmem grow PATH 1G`` from
the shell) makes a pool that no process has open larger, keeping all it
holds, crash-safely: a grow killed at any moment leaves a pool that opens
with all its data, at its old size or at the new one, and can be grown
again.  Pools do not shrink.  help(pmem.grow) says how.

Copying: ``pmem.copy(src, dst)`` (``python -m pmem copy SRC DST``)
makes a new file, a pool of its own that holds what src held between two
transactions and that opens beside its original.  A raw copy (cp) does
not: it has its original's identity (the UUID of its header), and a
process opens one pool of an identity at a time; PoolError says so.  A
pool that this process has open is copied at once, from the process
(``pool.copy(dst)``, as sqlite3's backup() copies from the connection);
one that another process has open for writing, once that process has
closed it.  A crash leaves no copy, or a complete one.  help(pmem.copy)
says how.

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
* each binding, rebinding and deletion is atomic, and a crash keeps
  those of a prefix of the program's statements (all of them when only
  the process dies); ``with pmem.transaction():`` makes a block one
  transaction, and when it raises (or the process dies) its bindings are
  undone with the rest;
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

import ast
import builtins
import os
import pkgutil
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

__all__ = ["open", "Pool", "PoolError", "Placeholder", "MissingReference",
           "value",
           "placeholder_attributes", "storage_of", "current_pool",
           "transaction", "NotPersistedWarning", "PersistentDict",
           "PersistentList", "PersistentSet", "PersistentByteArray",
           "MemoryKind", "FORMAT_VERSION", "DEFAULT_SIZE", "grow", "copy"]


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

    def copy(self, dst):
        """Copy the pool into a new file dst, between two transactions:
        pmem.copy(pool, dst)."""
        return copy(self, dst)

    def __repr__(self):
        state = ("closed" if self.closed
                 else "open read-only" if self.readonly else "open")
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


def value(cls):
    """Class decorator: cls's instances are values, immutable once made
    (as fractions.Fraction, uuid.UUID and pathlib.PurePath are).  A pool
    copies such an instance when it is stored, whether or not something
    else refers to it, where it would move an instance of another class
    (and refuse a shared one).  It sets cls.__pmem_value__ = True, which
    subclasses inherit.  A class may also name, in __pmem_volatile__, the
    slots that cache what differs between processes (a hash of a str):
    a pool neither stores nor keeps them."""
    cls.__pmem_value__ = True
    return cls


class MissingReference:
    """What a pool's reference to an object found by name (an enum
    member, datetime.timezone.utc) gives when this process cannot find
    that name: the name and the reason.  The next open that finds it
    gives the object again."""

    __slots__ = ("__pmem_name__", "__pmem_reason__")

    def __init__(self, name, reason):
        object.__setattr__(self, "__pmem_name__", name)
        object.__setattr__(self, "__pmem_reason__", reason)

    def __setattr__(self, name, value):
        raise AttributeError(f"{self!r} cannot be changed")

    def __repr__(self):
        return (f"<missing reference to {self.__pmem_name__} "
                f"({self.__pmem_reason__})>")


def _find_reference(name):
    """The object of a pool's reference: "module:qualname.attr" (an enum
    member, a class, a function, datetime.timezone.utc) or
    "module:qualname(literal)" (what the class gives for that argument:
    a combination of flags, the ZoneInfo of a key)."""
    if name.endswith(")"):
        where, _, argument = name[:-1].partition("(")
        return pkgutil.resolve_name(where)(ast.literal_eval(argument))
    return pkgutil.resolve_name(name)


def _placeholder(name, layout, reason):
    """The placeholder class for instances of name ("module:qualname")
    whose layout the pool recorded: one class for each level of the
    layout (the slots that one class of the missing one's bases added,
    and "__dict__" and "__weakref__" when it added them), over
    Placeholder, and over the builtin that the layout names first when
    it names one ("dict 48 __dict__,__weakref__": the placeholder of a
    subclass of dict is a dict).  The pool checks that the result has
    the layout."""
    module, _, qualname = name.partition(":")
    words = layout.split(" ")
    bases = (Placeholder,)
    if not words[0].isdigit():
        builtin = getattr(builtins, words.pop(0), None)
        if not isinstance(builtin, type):
            raise TypeError(f"the layout {layout!r} names no builtin")
        bases = (builtin, Placeholder)
    levels = [tuple(level.split(",")) for level in words[1:]]
    cls = None
    for slots in levels or [()]:
        cls = type(qualname.rpartition(".")[2],
                   bases if cls is None else (cls,),
                   {"__slots__": slots, "__module__": module,
                    "__qualname__": qualname, "__pmem_class__": name,
                    "__pmem_reason__": reason})
    return cls


def open(path, *, create=True, size=None, readonly=False,
         durability="power"):
    """Open the pool at path, creating it if it does not exist and create
    is true: size bytes (DEFAULT_SIZE by default).  A pool that exists has
    the size it has: a size given that differs is an error (grow() makes
    a pool bigger).  Opening a pool twice in one process gives the same
    Pool.

    readonly=True opens a pool that exists to read it: any number of
    processes can read a pool at once, while no process writes it.  Its
    objects can be read; any change raises PoolError.  The open takes the
    pool's lock shared, and holds it until close(): it waits up to a
    second for a process that has the pool open for writing, then raises
    PoolError, and a process that opens the pool for writing while
    readers have it gets PoolError, which says so.  The open reads the
    file into memory (a second or so per gigabyte of data, and as much
    memory) and opens that copy: what an open repairs -- a transaction
    that a crash left, pointers of a pool mapped elsewhere -- is repaired
    in the copy, and the file is never written (the next open for
    writing repairs it).  A process has a pool open one way at a time.

    durability says what a committed transaction survives.  "power" (the
    default): a power loss or a crash of the system; a commit returns
    once its changes are on the device (on a file of an ordinary file
    system, that takes a few msync() calls per transaction, each a
    journal commit).  "process": the process being killed at any point
    -- SIGKILL, an abort, the OOM killer -- and nothing more: the
    transactions flush nothing to the device, and the kernel writes the
    pool's pages back when it does, so that a power loss or a crash of
    the system can lose the last transactions or leave the pool corrupt,
    like sqlite's PRAGMA synchronous=OFF.  A pool has one durability
    while a process has it open (pool.durability)."""
    return Pool(path, create=create, size=size, readonly=readonly,
                durability=durability)


# --- grow() ------------------------------------------------------------------
#
# What grow() reads and writes of a pool file: the on-media layout of a
# libpmemobj 1.12 pool, format 6 (PMDK's src/common/pool_hdr.h and
# src/libpmemobj/obj.h, struct pmemobjpool).  A single-file pool records
# no size of its own: the header and the checksummed part of the pool
# descriptor (the layout name, the lanes' and the heap's offsets) hold
# none, and the pool is as large as its file.  The heap's persistent size,
# heap_size, comes after the descriptor's checksum: libpmemobj itself
# raises it when it extends a pool set (heap_extend()), and an open that
# finds the file larger than heap_offset + heap_size keeps the heap at
# heap_size (heap_boot()), while one that finds heap_size larger than the
# heap's last zone extends the zone to it with one 8-byte store of the
# zone's header (heap_zone_update_if_needed(), which does nothing when
# the zone is up to date).  So heap_size is the one field to change, with
# one aligned 8-byte write, once the file has the room.
_POOL_SIGNATURE = b"PMEMOBJ\0"          # pool_hdr.signature, at 0
_POOL_MAJOR_AT = 8                      # pool_hdr.major (uint32)
_POOL_MAJOR = 6                         # OBJ_FORMAT_MAJOR of libpmemobj 1.12
_LAYOUT_AT = 4096                       # pmemobjpool.layout[1024], after the
_LAYOUT_SIZE = 1024                     # 4 KiB pool header
_HEAP_OFFSET_AT = 5136                  # pmemobjpool.heap_offset (uint64)
_HEAP_SIZE_AT = 6176                    # pmemobjpool.heap_size (uint64),
                                        # not under the checksum
# The heap (src/libpmemobj/heap_layout.h, heap format 1): a 1 KiB header,
# then zones of a 64-byte header (its uint32 magic, then its uint32
# size_idx: the chunks it holds), 65528 chunk headers of 8 bytes and up to
# 65528 chunks of 256 KiB.
_HEAP_HEADER_SIZE = 1024
_ZONE_MAGIC = 0xC3F0A2D2
_MAX_CHUNK = 65535 - 7
_CHUNK_SIZE = 256 << 10
_ZONE_META_SIZE = 64 + 8 * _MAX_CHUNK
_ZONE_MIN_SIZE = _ZONE_META_SIZE + _CHUNK_SIZE
_ZONE_MAX_SIZE = _ZONE_META_SIZE + _MAX_CHUNK * _CHUNK_SIZE
_GROW_UNIT = 4096                       # a new size is rounded up to this


def _zone_sizes(heap_size):
    """The chunks that libpmemobj 1.12 gives each zone of a heap of
    heap_size bytes that fills its mapping (heap_max_zone() and
    zone_calc_size_idx() of heap.c): [size_idx of zone 0, ...]."""
    nzones, left = 0, heap_size - _HEAP_HEADER_SIZE
    while left >= _ZONE_MIN_SIZE:
        nzones += 1
        left -= min(left, _ZONE_MAX_SIZE)
    sizes = [_MAX_CHUNK] * nzones
    if nzones:
        raw = heap_size - (nzones - 1) * _ZONE_MAX_SIZE
        sizes[-1] = (raw - _ZONE_META_SIZE - _HEAP_HEADER_SIZE) // _CHUNK_SIZE
    return sizes


def _zone_headers(path, heap_offset, nzones):
    """[(magic, size_idx)] of the first nzones zones of the pool's heap."""
    import struct
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return [struct.unpack("<II", os.pread(
                    fd, 8, heap_offset + _HEAP_HEADER_SIZE
                    + i * _ZONE_MAX_SIZE))
                for i in range(nzones)]
    finally:
        os.close(fd)


def _pool_geometry(fd, path):
    """(heap_offset, heap_size, file size) of the pool file open as fd,
    whose header and descriptor are checked to be those of a pool of this
    interpreter, in libpmemobj 1.12's format; PoolError when they are
    not."""
    import struct
    size = os.fstat(fd).st_size
    head = os.pread(fd, _HEAP_SIZE_AT + 8, 0)
    if (len(head) < _HEAP_SIZE_AT + 8
            or head[:len(_POOL_SIGNATURE)] != _POOL_SIGNATURE):
        raise PoolError(f"{path!r} is not a pmem-python pool: it does not "
                        f"start with a libpmemobj pool header")
    (major,) = struct.unpack_from("<I", head, _POOL_MAJOR_AT)
    if major != _POOL_MAJOR:
        raise PoolError(f"{path!r} is a libpmemobj pool of format {major}; "
                        f"pmem-python pools have format {_POOL_MAJOR} "
                        f"(libpmemobj 1.12)")
    layout = head[_LAYOUT_AT:_LAYOUT_AT + _LAYOUT_SIZE].split(b"\0")[0]
    if layout != _pmem.LAYOUT.encode():
        raise PoolError(f"{path!r} is a libpmemobj pool of another program "
                        f"(layout {layout.decode(errors='replace')!r}), not "
                        f"a pmem-python pool")
    (heap_offset,) = struct.unpack_from("<Q", head, _HEAP_OFFSET_AT)
    (heap_size,) = struct.unpack_from("<Q", head, _HEAP_SIZE_AT)
    if (heap_size == 0 or heap_offset < _HEAP_SIZE_AT
            or heap_offset + heap_size > size):
        raise PoolError(f"pool {path!r} is corrupt: its heap of {heap_size} "
                        f"bytes at offset {heap_offset} does not fit in its "
                        f"{size} bytes")
    return heap_offset, heap_size, size


# grow() checks and opens the pool in a new interpreter.  There the pool
# maps where it was mapped last (the address that PMEM_MMAP_HINT gives),
# as in the next program that opens it.  In this process it could map
# elsewhere (another pool at that address, libpmemobj loaded without the
# hint), and the open would move every pointer of the pool, and the next
# program's open move them back; or the larger file could overlap where
# this process had the pool mapped before, from which no open can move
# pointers; and libpmemobj refuses to open here a pool that this process
# closed but still holds objects of.
_IN_NEW_INTERPRETER = """\
import sys
import pmem
what, path = sys.argv[1:3]
try:
    if what == "check":
        pmem._pmem._check_pool(path)
    else:
        pmem.open(path, create=False).close()
except (OSError, MemoryError) as exc:
    print(exc, end="")
    sys.exit(1)
"""


def _in_new_interpreter(what, path, *, command="grow", pass_fds=()):
    """Check ("check": what pmem.open() checks before its pass over the
    objects) or open and close ("open") the pool at path, in a new
    interpreter, for command (grow, copy), which gets pass_fds too; what
    it refuses is raised here as PoolError, with the open's message."""
    import subprocess
    import sys
    if not sys.executable:
        raise PoolError(f"cannot {command} pool {path!r} from this "
                        f"process: {command}() opens the pool in a new "
                        f"interpreter, and sys.executable does not say "
                        f"where this one is; run python -m pmem {command}")
    # -I: the pmem of this interpreter, whatever the environment's
    # PYTHONPATH or PYTHONPMEM; libpmem(obj)'s variables pass.
    proc = subprocess.run([sys.executable, "-I", "-c", _IN_NEW_INTERPRETER,
                           what, path], capture_output=True, text=True,
                          pass_fds=pass_fds)
    if proc.returncode == 1 and proc.stdout:
        raise PoolError(proc.stdout)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        raise PoolError(f"cannot open pool {path!r}: the interpreter that "
                        f"opened it ended with status {proc.returncode}: "
                        f"{lines[-1]}")


def grow(path, size):
    """Make the pool at path size bytes large (a multiple of 4096: size
    is rounded up), keeping everything it holds; return (old, new), its
    sizes in bytes before and after.  A size that the pool has already
    changes nothing; a smaller one raises PoolError (pools do not
    shrink).  ``python -m pmem grow PATH SIZE`` does it from the shell.

    The pool must not be open: not in another process, nor in this one
    (close it first).  What pmem.open() refuses, grow() refuses before
    changing anything, with the same PoolError (a pool too full to open
    is what grow() is for: it checks the file as the open does, without
    the open's pass over the objects).  The new room is allocated on the
    file system (a full file system raises PoolError, and the pool keeps
    its size; holes are never left in a pool file).  The pool is checked
    and opened in a new interpreter (sys.executable), where it maps as in
    the next program.

    Crash-safe: the file is made larger and synced first, then the heap's
    size in the pool's header is written with one 8-byte store and synced,
    then the pool is opened once and closed (libpmemobj extends its heap
    there).  A crash before the store leaves the pool as it was, in a
    larger file (run grow() again); after it, the pool's next open
    finishes growing it.
    """
    import fcntl
    import operator
    import stat
    import struct
    size = operator.index(size)
    if size <= 0:
        raise ValueError(f"a pool's size is a positive number of bytes, "
                         f"not {size}")
    new = -(-size // _GROW_UNIT) * _GROW_UNIT
    path = os.fspath(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise PoolError(f"{path!r} is not a regular file; a pool is one")
    if new < st.st_size:
        raise _no_shrink(path, new, st.st_size)
    pool = _pmem._open_pool_at(path)
    if pool is not None:
        if pool is current_pool():
            raise PoolError(f"pool {path!r} holds __main__'s variables "
                            f"(python -X pmem) in this process: grow it "
                            f"from another process once this one has "
                            f"ended")
        raise PoolError(f"pool {path!r} is open in this process; close it "
                        f"first (pool.close())")
    # What open() refuses, grow() refuses, before changing anything; but
    # not through a whole open: its pass over the objects may need room
    # that a full pool lacks (a dict's table, made again), and a full pool
    # is what one grows.  libpmemobj's open finishes what a crash left.
    _in_new_interpreter("check", path)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        try:
            # libpmemobj holds this lock (flock) while a pool is open; it
            # is ours while the file changes.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PoolError(f"pool {path!r} is open in another process; a "
                            f"pool has one writer at a time") from None
        heap_offset, heap_size, file_size = _pool_geometry(fd, path)
        old = heap_offset + heap_size
        if new < file_size:
            raise _no_shrink(path, new, file_size)
        if new == old:
            return old, new
        # 1. The room, allocated and synced.  From the heap's end: what a
        # grow that crashed here left past it is allocated again.
        try:
            os.posix_fallocate(fd, old, new - old)
        except OSError as exc:
            if os.fstat(fd).st_size > file_size:
                os.ftruncate(fd, file_size)
            raise PoolError(
                f"cannot grow pool {path!r} to {new:,} bytes: the file "
                f"system cannot allocate {new - old:,} more bytes for it "
                f"({exc.strerror}); the pool keeps its size.  A pool file "
                f"has all its blocks allocated: a mapped file with holes "
                f"dies of SIGBUS when the file system is full") from exc
        os.fsync(fd)
        # 2. The heap's new size: one aligned 8-byte store, synced.  From
        # here on, the next open of the pool grows its heap.
        record = struct.pack("<Q", new - heap_offset)
        if os.pwrite(fd, record, _HEAP_SIZE_AT) != len(record):
            raise PoolError(f"cannot grow pool {path!r}: a short write of "
                            f"its heap's size; run grow() again")
        os.fdatasync(fd)
    finally:
        os.close(fd)              # and the lock with it
    # 3. One open, which extends the heap and checks the pool, and a close.
    try:
        _in_new_interpreter("open", path)
    except PoolError as exc:
        raise PoolError(f"pool {path!r} has its new size ({new:,} bytes) "
                        f"on the disk, but the open that finishes growing "
                        f"it failed: {exc}") from exc
    # libpmemobj took the size: the last zone it has initialised holds the
    # chunks that the new size gives it.
    expected = _zone_sizes(new - heap_offset)
    found = _zone_headers(path, heap_offset, len(expected))
    last = max((i for i, (magic, _) in enumerate(found)
                if magic == _ZONE_MAGIC), default=0)
    if found[last] != (_ZONE_MAGIC, expected[last]):
        raise PoolError(f"pool {path!r} has its new size ({new:,} bytes) "
                        f"on the disk, but libpmemobj did not extend its "
                        f"heap to it (zone {last} holds {found[last][1]} "
                        f"chunks, not {expected[last]}): this libpmemobj "
                        f"does not grow pools as libpmemobj 1.12 does")
    return old, new


def _no_shrink(path, new, size):
    return PoolError(f"pool {path!r} has {size:,} bytes; it cannot be "
                     f"{new:,}: a pool does not shrink (give a size of "
                     f"{size:,} bytes or more)")


# --- copy() ------------------------------------------------------------------
#
# What copy() rewrites in the copy's header (libpmemobj 1.12's struct
# pool_hdr, PMDK's src/common/pool_hdr.h and util_header_create() of
# src/common/set.c): the pool set's UUID, from which libpmemobj derives the
# identity of an open pool (pmemobj_get_uuid_lo()), refusing a second pool
# of one identity in a process; the file's UUID, which the links of a
# one-file pool to its previous and next part and replica repeat; the
# shutdown state, which records the device of the file (zeros: the copy's
# first open records its own, shutdown_state_check()); and the header's
# checksum (util_checksum() of src/core/util.c).  Nothing else in a pool
# holds its UUIDs: libpmemobj's lanes and heap, and the objects, hold
# offsets and pointers.
_HDR_SIZE = 4096
_FEATURES_INCOMPAT_AT = 16              # features.incompat (uint32)
_FEAT_CKSUM_2K = 0x0002                 # the checksum covers 2 KiB only
_POOLSET_UUID_AT = 24
_UUID_AT = 40
_UUID_LINKS_AT = (56, 72, 88, 104)      # prev/next part, prev/next replica
_UUID_SIZE = 16
_SDS_AT = 4024                          # struct shutdown_state
_SDS_SIZE = 64
_CHECKSUM_AT = 4088


def _header_checksum(header):
    """util_checksum() of a pool header: a Fletcher64 of its 32-bit
    words, those from the end of its checksummed part on (the checksum
    among them) read as zeros."""
    import struct
    (incompat,) = struct.unpack_from("<I", header, _FEATURES_INCOMPAT_AT)
    end = 2048 if incompat & _FEAT_CKSUM_2K else _CHECKSUM_AT
    lo = hi = 0
    for (word,) in struct.iter_unpack("<I", header[:end]):
        lo = (lo + word) & 0xFFFFFFFF
        hi = (hi + lo) & 0xFFFFFFFF
    hi = (hi + lo * ((_HDR_SIZE - end) // 4)) & 0xFFFFFFFF
    return hi << 32 | lo


def _new_identity(fd, path):
    """Give the copy open as fd, of the pool at path, an identity of its
    own: new UUIDs in its header, no shutdown state, its checksum made
    again.  PoolError, naming path, when the header is not a sound one of
    a one-file pmem-python pool."""
    import struct
    import uuid
    _pool_geometry(fd, path)
    header = bytearray(os.pread(fd, _HDR_SIZE, 0))
    (checksum,) = struct.unpack_from("<Q", header, _CHECKSUM_AT)
    if _header_checksum(header) != checksum:
        raise PoolError(f"pool {path!r} is corrupt: the checksum of its "
                        f"header is wrong")
    own = header[_UUID_AT:_UUID_AT + _UUID_SIZE]
    if any(header[at:at + _UUID_SIZE] != own for at in _UUID_LINKS_AT):
        raise PoolError(f"{path!r} is a part of a libpmemobj pool set (its "
                        f"header links to other files); copy() copies "
                        f"one-file pools")
    header[_POOLSET_UUID_AT:_POOLSET_UUID_AT + _UUID_SIZE] = (
        uuid.uuid4().bytes)
    own = uuid.uuid4().bytes
    for at in (_UUID_AT, *_UUID_LINKS_AT):
        header[at:at + _UUID_SIZE] = own
    header[_SDS_AT:_SDS_AT + _SDS_SIZE] = bytes(_SDS_SIZE)
    struct.pack_into("<Q", header, _CHECKSUM_AT, _header_checksum(header))
    if os.pwrite(fd, header, 0) != _HDR_SIZE:
        raise OSError(f"a short write of the header of a copy of {path!r}")


def _copy_range(src, dst, start, end):
    """Copy [start, end) of file src into dst at the same offsets: in the
    kernel when both are on one file system (copy_file_range(), which
    may share their blocks), else through a buffer."""
    import errno
    while start < end:
        try:
            n = os.copy_file_range(src, dst, end - start, start, start)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                 errno.EOPNOTSUPP, errno.EBADF):
                raise
            break
        if n == 0:
            break
        start += n
    while start < end:
        data = os.pread(src, min(end - start, 1 << 20), start)
        if not data:
            raise OSError(f"the file ended at {start:,} bytes while it "
                          f"was copied")
        start += os.pwrite(dst, data, start)


def _copy_data(src, dst, size):
    """Copy the data of file src (size bytes) into dst, which has its
    room: the holes of src are left out, and read as zeros in dst."""
    import errno
    offset = 0
    while offset < size:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
            end = min(os.lseek(src, start, os.SEEK_HOLE), size)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return                    # a hole to the end
            start, end = offset, size     # no SEEK_DATA: all of it
        _copy_range(src, dst, start, end)
        offset = end


def _allocate(fd, size, src):
    """size bytes of room for the copy of src open as fd, allocated."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        raise PoolError(f"cannot copy pool {src!r}: the file system cannot "
                        f"allocate {size:,} bytes for the copy "
                        f"({exc.strerror})") from exc


def _copy_file(src, out, wait):
    """Copy the file of the pool at src into out, holding the pool's lock
    (shared: readers and other copies go on, a writer cannot open it)
    and waiting up to wait seconds (None: for ever) for a process that
    has the pool open for writing to close it."""
    import fcntl
    import stat
    import time
    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PoolError(f"{src!r} is not a regular file; a pool is one")
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                # libpmemobj holds this lock (flock, exclusive) for as long
                # as a process has the pool open.
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise PoolError(
                        f"pool {src!r} is open for writing in another "
                        f"process, which holds it from its open to its "
                        f"close: copy it from that process (pool.copy(dst), "
                        f"between two transactions), or once that process "
                        f"has closed it (wait= seconds, python -m pmem "
                        f"copy --wait SECONDS)") from None
                time.sleep(0.01)
        _, _, size = _pool_geometry(fd, src)
        _allocate(out, size, src)
        _copy_data(fd, out, size)
    finally:
        os.close(fd)              # and the lock with it


def _copy_target(dst):
    """Where the copy is made: (fd, None) for a file without a name in
    dst's directory (O_TMPFILE), which a crash leaves nothing of, and
    which is linked to dst once complete; else (fd, dst + ".copying"),
    a temporary name, made anew (a crash leaves it behind, and the next
    copy to dst removes it)."""
    import errno
    directory = os.path.dirname(dst) or "."
    if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(directory, os.O_TMPFILE | os.O_RDWR
                           | os.O_CLOEXEC, 0o600), None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR,
                                 errno.EINVAL):
                raise
    tmp = dst + ".copying"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                   0o600), tmp


def copy(src, dst, *, wait=1.0):
    """Copy the pool src (a path, or a Pool) into a new file dst: a pool
    of its own, which opens beside its original (a raw copy, made by cp,
    does not: it has the original's identity).  ``python -m pmem copy SRC
    DST`` does it from the shell.  Returns the copy's size in bytes.

    The copy is consistent: it holds what src held at one instant between
    two transactions.

    * A pool that this process has open is copied from the process, at
      once, between two transactions, as sqlite3's Connection.backup()
      copies from the connection that has the database: it waits for
      another thread's transaction to end, and stops the process's other
      threads while it copies (about a second per gigabyte); inside one
      of the pool's transactions of this thread it raises PoolError.
      pool.copy(dst) is the same.
    * A pool that no process writes is copied from its file, under its
      lock: shared, so that readers (pmem.open(path, readonly=True)) and
      other copies go on, while a writer that opens it meanwhile waits
      as an open does for a second, then gets PoolError.
    * A pool that another process has open for writing is copied once
      that process has closed it.  A process holds the pool's lock from
      its open to its close, not per transaction, and another process
      cannot stop it between two transactions (that would take its
      cooperation: a thread of its own, or a signal, in every process
      that opens a pool); copy() waits up to wait seconds (None: for
      ever) for the lock, then raises PoolError, which says to copy the
      pool from that process.

    dst must not exist (FileExistsError): a copy never replaces a file.
    The copy is made without a name (O_TMPFILE; where the file system
    has none, as dst + ".copying", which a later copy removes), with its
    room allocated first; it gets new UUIDs in its header, is synced,
    checked in a new interpreter as pmem.open() checks a pool before its
    pass over the objects (sys.executable: libpmemobj finishes there what
    a transaction in flight left), synced again, and only then linked to
    dst (which must still not exist), and the directory synced.  A crash
    at any moment leaves no dst, or a complete one.
    """
    import errno
    dst = os.fspath(dst)
    if isinstance(src, _pmem.Pool):
        pool, src = src, src.path
    else:
        src = os.fspath(src)
        pool = _pmem._open_pool_at(src)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "a copy never replaces a "
                              "file: remove it first, or choose another "
                              "name", dst)
    out, tmp = _copy_target(dst)
    linked = False
    try:
        if pool is not None and not pool.closed and not pool.readonly:
            _allocate(out, pool.size, src)
            size = pool._copy_into(out)
        else:
            _copy_file(src, out, wait)
            size = os.fstat(out).st_size
        _new_identity(out, src)
        os.fsync(out)
        checked = tmp or f"/proc/self/fd/{out}"
        try:
            _in_new_interpreter("check", checked, command="copy",
                                pass_fds=() if tmp else (out,))
        except PoolError as exc:
            raise PoolError(f"cannot copy pool {src!r}: its copy fails the "
                            f"checks of an open: "
                            f"{str(exc).replace(checked, src)}") from None
        os.fsync(out)
        directory = os.open(os.path.dirname(dst) or ".",
                            os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # linkat(), following the link of /proc/self/fd (link() makes
            # a link to the link).
            os.link(tmp or f"/proc/self/fd/{out}", os.path.basename(dst),
                    dst_dir_fd=directory)
            linked = True
            if tmp is not None:
                os.unlink(tmp)
            os.fsync(directory)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "made while the copy was "
                                  "made: a copy never replaces a file",
                                  dst) from None
        finally:
            os.close(directory)
    except BaseException:
        if tmp is not None and not linked:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
    finally:
        os.close(out)
    return size
