"""Look at a pool from the shell, make it larger, copy it.

    python -m pmem info PATH [--json]   size, free space, objects by type
    python -m pmem check PATH           open it and read every object
    python -m pmem dump PATH [NAME] [--depth N] [--json]
                                        the namespace (or one name of it)
    python -m pmem grow PATH SIZE       make the pool SIZE bytes large
                                        (1G: 2**30; K, M, G, T)
    python -m pmem copy SRC DST [--wait SECONDS]
                                        a copy of the pool, which opens
                                        beside its original
    python -m pmem gc PATH              free what nothing reaches

    --progress / --no-progress (before the command): show how far the
    long passes (an open, a collection) are, on stderr; by default when
    stderr is a terminal.

info, check and dump never change the file: they read a copy of it.
Opening a pool repairs what a crash left (an interrupted transaction, an
interrupted open, unreachable objects), and moves its pointers when it
maps elsewhere: that happens in the copy, so what the commands show is
what the next program that opens the pool will find.  The copy is made
while holding the pool's lock, in a temporary file (on /dev/shm when it
has room, else in the temporary directory); its holes are not copied.
A pool that another process has open is refused.

check opens the copy, which checks every pointer of every allocation,
and then reads every object that the namespace reaches, as dump does:
a pool that check calls "ok" opens and dumps.  Its exit status is 0 for
a sound pool, 1 for one that is not.

grow changes the file, crash-safely (pmem.grow(), which help(pmem.grow)
describes): the pool keeps everything it holds, and has room for more.
SIZE is in bytes, or with a binary suffix (K, M, G, T: 1G is 2**30
bytes), rounded up to a multiple of 4096; pools do not shrink.  It
prints the old and the new size.

copy makes a new file DST (never replacing one), a pool of its own that
holds what SRC held between two transactions (pmem.copy(), which
help(pmem.copy) describes): a raw copy (cp) has its original's identity,
and a process cannot open it beside the original.  A pool that another
process has open for writing is copied once that process has closed it:
copy waits up to SECONDS for that (1 by default; inf: for ever), and
otherwise fails, saying to copy the pool from that process
(pool.copy(dst)).  A crash leaves no DST, or a complete one.
"""

import argparse
import collections
import contextlib
import enum
import fcntl
import json
import os
import pprint
import shutil
import sys
import tempfile
import types

import _pmem
import pmem


def _temporary_dir(size):
    """Where a copy of size bytes (at most) goes."""
    shm = "/dev/shm"
    try:
        if shutil.disk_usage(shm).free > 2 * size:
            return shm
    except OSError:
        pass
    return None


def _copy_data(src, dst, size):
    """Copy the data of file src into dst (both open), leaving holes."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
        except OSError:               # no data past offset (ENXIO)
            break
        end = os.lseek(src, start, os.SEEK_HOLE)
        while start < end:
            data = os.pread(src, min(end - start, 1 << 20), start)
            if not data:
                break
            os.pwrite(dst, data, start)
            start += len(data)
        offset = end
    os.ftruncate(dst, size)


@contextlib.contextmanager
def read_only_copy(path):
    """A private copy of the pool at path, made under its lock: yields
    the copy's path, and removes it afterwards."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            # libpmemobj holds this lock (flock) while a pool is open.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise pmem.PoolError(f"pool {path!r} is open in another "
                                 f"process; a pool has one process at "
                                 f"a time") from None
        size = os.fstat(fd).st_size
        out, copy = tempfile.mkstemp(prefix="pmem-", suffix=".pool",
                                     dir=_temporary_dir(size))
        try:
            try:
                _copy_data(fd, out, size)
            finally:
                os.close(out)
                fcntl.flock(fd, fcntl.LOCK_UN)
            yield copy
        finally:
            os.unlink(copy)
    finally:
        os.close(fd)


def info(pool, args):
    stats = pool.stats()
    names = dir(pool.ns)
    if args.json:
        json.dump({"path": args.path, "format": pmem.FORMAT_VERSION,
                   **stats, "names": names,
                   "unresolved": pool.unresolved()}, sys.stdout, indent=2)
        print()
        return 0
    print(f"pool:      {args.path}")
    print(f"format:    {pmem.FORMAT_VERSION}")
    other = (stats["pool_size"] - stats["bytes_used"] - stats["bytes_log"]
             - stats["bytes_free"])
    print(f"size:      {stats['pool_size']:,} bytes")
    print(f"in use:    {stats['bytes_used']:,} bytes by objects")
    print(f"log:       {stats['bytes_log']:,} bytes by the undo log and "
          f"the journal")
    print(f"free:      {stats['bytes_free']:,} bytes for blocks of any "
          f"size, at most {stats['largest_free']:,} in one")
    print(f"other:     {other:,} bytes: libpmemobj's metadata, and room "
          f"for small objects only")
    print(f"objects:   {stats['objects']:,} (and {stats['tables']:,} tables)")
    print(f"names:     {', '.join(names) or '(none)'}")
    width = max(map(len, stats["by_type"]), default=12)
    for name, (count, size) in sorted(stats["by_type"].items()):
        print(f"  {name:<{width}s} {count:>10,} {size:>14,} bytes")
    _print_unresolved(pool)
    return 0


def _print_unresolved(pool):
    unresolved = pool.unresolved()
    if unresolved:
        print(f"placeholders for {len(unresolved)} classes that this "
              f"process cannot use (see pmem.Placeholder):")
        for name, reason in sorted(unresolved.items()):
            print(f"  {name}: {reason}")


def _read_all(value):
    """Read every object that value reaches, as dump does; the number of
    objects."""
    seen = set()
    stack = [value]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset,
                              collections.deque)):
            stack.extend(obj)
        else:
            repr(obj)
            stack.extend(getattr(obj, "__dict__", {}).values())
            for cls in type(obj).__mro__:
                slots = cls.__dict__.get("__slots__", ())
                for slot in (slots,) if isinstance(slots, str) else slots:
                    if slot not in ("__dict__", "__weakref__"):
                        try:
                            stack.append(getattr(obj, slot))
                        except AttributeError:
                            pass
    return len(seen)


def check(pool, args):
    count = _read_all(vars(pool.ns))
    pprint.pformat(vars(pool.ns))
    print(f"{args.path}: ok, {count:,} objects read")
    _print_unresolved(pool)
    return 0


def _jsonable(value):
    """value as JSON can show it: sets, tuples and deques as lists (an
    OrderedDict, a defaultdict as a dict), instances as their class and
    attributes, what a pool refers to by name (a class, a function, an
    enum member) as that name, anything else as its repr()."""
    if isinstance(value, (type, types.FunctionType,
                          types.BuiltinFunctionType)):
        return {"__reference__": f"{value.__module__}:{value.__qualname__}"}
    if isinstance(type(value), enum.EnumType):
        cls = type(value)
        return {"__reference__": f"{cls.__module__}:{cls.__qualname__}."
                                 f"{value._name_}"}
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple, collections.deque)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_jsonable(v) for v in sorted(value, key=repr)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return repr(value)
    if isinstance(value, pmem.Placeholder):
        return {"__class__": type(value).__pmem_class__,
                "__placeholder__": True,
                **_jsonable(pmem.placeholder_attributes(value))}
    if isinstance(getattr(value, "__dict__", None), dict):
        cls = type(value)
        return {"__class__": f"{cls.__module__}:{cls.__qualname__}",
                **_jsonable(vars(value))}
    return repr(value)


def dump(pool, args):
    if args.name is None:
        value = vars(pool.ns)
    else:
        try:
            value = getattr(pool.ns, args.name)
        except AttributeError:
            print(f"python -m pmem dump: {args.path} has no name "
                  f"{args.name!r}", file=sys.stderr)
            return 1
    if args.json:
        json.dump(_jsonable(value), sys.stdout, indent=2)
        print()
    else:
        pprint.pprint(value, depth=args.depth)
    return 0


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text):
    """A size in bytes from "4096", "64M", "1G"... (binary suffixes)."""
    number, unit = text, ""
    if number[-1:].upper() in ("K", "M", "G", "T"):
        number, unit = number[:-1], number[-1].upper()
    if not (number.isascii() and number.isdigit()) or int(number) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: a positive number of bytes, or one "
            f"with a binary suffix K, M, G or T (1G is 2**30 bytes)")
    return int(number) * _UNITS[unit]


def gc(args):
    pool = pmem.open(args.path, create=False)
    freed = pool.gc()
    _progress_done()
    print(f"{args.path}: {freed:,} unreachable objects freed")
    return 0


class Progress:
    """What a long pass of the pool has done, on one line of stream,
    rewritten as it goes (_pmem._set_progress() calls it)."""

    def __init__(self, stream):
        self.stream = stream
        self.width = 0

    def __call__(self, what, done, total):
        line = f"{what}: {done:,} of {total:,}"
        if total:
            line += f" ({100 * done // total}%)"
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def close(self):
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


_progress = None


def _progress_done():
    """Clear the progress line, before a command prints."""
    if _progress is not None:
        _progress.close()


def grow(args):
    old, new = pmem.grow(args.path, args.size)
    _progress_done()
    if old == new:
        print(f"{args.path}: already {new:,} bytes, nothing to do")
    else:
        print(f"{args.path}: grown from {old:,} to {new:,} bytes")
    return 0


def copy_pool(args):
    size = pmem.copy(args.src, args.dst, wait=args.wait)
    _progress_done()
    print(f"{args.src}: copied to {args.dst} ({size:,} bytes)")
    return 0


def parse_wait(text):
    """Seconds to wait, from "0", "2.5", "inf"."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time to wait: seconds (0 or more), or inf")
    return None if seconds == float("inf") else seconds


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pmem",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction,
                        help="show how far long passes are, on stderr "
                             "(default: when it is a terminal)")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("info", help="size, free space, objects")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="as JSON")
    p = commands.add_parser("check", help="open and read every object")
    p.add_argument("path")
    p = commands.add_parser("dump", help="the namespace, or one name")
    p.add_argument("path")
    p.add_argument("name", nargs="?", help="one name of the namespace")
    p.add_argument("--depth", type=int, default=None,
                   help="nesting levels to show")
    p.add_argument("--json", action="store_true", help="as JSON")
    p = commands.add_parser("grow", help="make the pool larger")
    p.add_argument("path")
    p.add_argument("size", type=parse_size,
                   help="the new size: bytes, or 64M, 1G... (binary)")
    p = commands.add_parser("copy", help="a copy that opens beside its "
                                         "original")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--wait", type=parse_wait, default=1.0,
                   metavar="SECONDS",
                   help="how long to wait for a process that has SRC open "
                        "for writing to close it (default 1; inf: for "
                        "ever)")
    p = commands.add_parser("gc", help="free what nothing reaches")
    p.add_argument("path")
    args = parser.parse_args(argv)
    global _progress
    show = (args.progress if args.progress is not None
            else sys.stderr.isatty())
    _progress = Progress(sys.stderr) if show else None
    _pmem._set_progress(_progress)
    try:
        return _run(args)
    finally:
        _pmem._set_progress(None)
        _progress_done()


def _run(args):
    if args.command in ("grow", "copy", "gc"):
        try:
            return {"grow": grow, "copy": copy_pool, "gc": gc}[
                args.command](args)
        except (pmem.PoolError, OSError) as exc:
            _progress_done()
            print(f"python -m pmem {args.command}: {exc}", file=sys.stderr)
            return 1
    run = {"info": info, "check": check, "dump": dump}[args.command]
    try:
        with read_only_copy(args.path) as copy:
            try:
                pool = pmem.open(copy, create=False)
                _progress_done()
                return run(pool, args)
            except BrokenPipeError:
                raise
            except Exception as exc:
                _progress_done()
                # What the copy says, said of the pool.
                message = str(exc).replace(copy, args.path)
                if args.command == "check":
                    print(f"{args.path}: not ok: {message}")
                else:
                    print(f"python -m pmem {args.command}: {message}",
                          file=sys.stderr)
                return 1
    except BrokenPipeError:
        raise
    except (pmem.PoolError, OSError) as exc:
        _progress_done()
        print(f"python -m pmem {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # `dump PATH | head`: the reader has gone; end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = 1
    sys.exit(status)
