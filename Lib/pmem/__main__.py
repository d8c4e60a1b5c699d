"""Look at a pool from the shell.

    python -m pmem info PATH     size, free space, objects and bytes by type
    python -m pmem check PATH    open it (the open pass checks every pointer)
    python -m pmem dump PATH     the namespace, pretty-printed

Opening a pool repairs what a crash left (an interrupted transaction, an
interrupted open, unreachable objects): check and info do that too.
"""

import argparse
import pprint
import sys

import pmem


def info(pool):
    stats = pool.stats()
    print(f"pool:      {pool.path}")
    print(f"format:    {pmem.FORMAT_VERSION}")
    print(f"size:      {stats['pool_size']:,} bytes "
          f"({stats['bytes_used']:,} in use, at most "
          f"{stats['bytes_free']:,} free)")
    print(f"objects:   {stats['objects']:,} (and {stats['tables']:,} tables)")
    print(f"names:     {', '.join(dir(pool.ns)) or '(none)'}")
    for name, (count, size) in sorted(stats["by_type"].items()):
        print(f"  {name:<12s} {count:>10,} {size:>14,} bytes")


def check(pool):
    stats = pool.stats()
    print(f"{pool.path}: ok, {stats['objects']:,} objects reachable")


def dump(pool):
    pprint.pprint(vars(pool.ns))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pmem",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("info", "check", "dump"))
    parser.add_argument("path")
    args = parser.parse_args(argv)
    try:
        pool = pmem.open(args.path, create=False)
    except (pmem.PoolError, OSError) as exc:
        print(f"python -m pmem {args.command}: {exc}", file=sys.stderr)
        return 1
    {"info": info, "check": check, "dump": dump}[args.command](pool)
    return 0


if __name__ == "__main__":
    sys.exit(main())
