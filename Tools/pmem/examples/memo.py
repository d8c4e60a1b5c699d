"""A memoizing cache whose results outlive the process.

    python Tools/pmem/examples/memo.py memo.pool 100000 200000

prints, for each LIMIT, the number below LIMIT whose Collatz sequence is
the longest, and how many steps it takes.  The first run computes the
answers (a few seconds; "computing ..." on stderr says when each runs);
the next run, a new process, finds them in the pool memo.pool and prints
them at once.

The cache is a decorator, functools.cache with its dict in a pool::

    pool = pmem.open("memo.pool")

    @persistent_cache(pool)
    def longest_collatz(limit):
        ...

pool.ns.memo[name] is a dict of the pool that maps the arguments of each
call made so far to its result; name is the function's module and
qualified name ("__main__.longest_collatz" here), or name=... .  A call
whose arguments are in it returns the stored result without calling the
function; otherwise the function runs, and its result is stored by one
transaction when it returns: a crash keeps the whole entry or nothing of
it, and a call that raises stores nothing.  Every later process that
opens the pool finds the entries (one process at a time has a pool open
for writing).

What it takes:

* Arguments: hashable values that a pool copies in -- None, bool, int,
  float, str, bytes, tuples and frozensets of them, datetime's values,
  Decimal, Fraction, instances of classes marked with pmem.value (as
  with functools.cache, f(1) and f(1.0) are one entry; f(1) and f(x=1)
  are two).  An unhashable argument (a list, a dict) raises TypeError
  before the call, as with functools.cache; a hashable one that a pool
  does not copy (an instance of another class of one's own, which a
  pool would move) raises TypeError when the result is stored, after
  the call.
* Results: values that a pool holds.  An immutable one is copied in; a
  list or dict that the function made is moved in, and the caller gets
  the pool's object, as every later call does: change it, and the cached
  result changes (each change atomic), so treat it as read-only.  A
  result that the pool refuses (an open file, a generator, a list that
  something else refers to where a store cannot follow: help(pmem))
  raises TypeError and is not cached.
* The cache never forgets: it has no size limit, and changing the
  function's code does not clear it; f.cache_clear() does.
  f.cache_info() gives this process's hits and misses and the number of
  entries.
"""

import argparse
import collections
import functools
import sys
import time

import pmem

CacheInfo = collections.namedtuple("CacheInfo", "hits misses currsize")


def persistent_cache(pool, *, name=None):
    """Decorator: memoize a function in the pool's dict pool.ns.memo[name]
    (name: the function's "module.qualname" by default)."""
    def decorate(func):
        key = name or f"{func.__module__}.{func.__qualname__}"
        with pool:
            if not hasattr(pool.ns, "memo"):
                pool.ns.memo = {}
            cache = pool.ns.memo.setdefault(key, {})
        hits = misses = 0

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            nonlocal hits, misses
            call = (args, tuple(sorted(kwargs.items())))
            try:
                result = cache[call]
            except KeyError:
                pass
            else:
                hits += 1
                return result
            misses += 1
            result = func(*args, **kwargs)
            cache[call] = result            # one transaction
            return result

        def cache_info():
            return CacheInfo(hits, misses, len(cache))

        def cache_clear():
            nonlocal hits, misses
            cache.clear()
            hits = misses = 0

        wrapper.cache_info = cache_info
        wrapper.cache_clear = cache_clear
        return wrapper
    return decorate


def longest_collatz(limit):
    """(n, steps): the n below limit whose Collatz sequence (n -> n / 2
    when even, 3n + 1 when odd) takes the most steps to reach 1."""
    print(f"computing longest_collatz({limit})...", file=sys.stderr,
          flush=True)
    best, best_steps = 1, 0
    for start in range(2, limit):
        n, steps = start, 0
        while n != 1:
            n = n // 2 if n % 2 == 0 else 3 * n + 1
            steps += 1
        if steps > best_steps:
            best, best_steps = start, steps
    return best, best_steps


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="The longest Collatz sequences below each LIMIT, "
                    "memoized in a pool.")
    parser.add_argument("pool", help="the pool file (made if missing)")
    parser.add_argument("limits", nargs="+", type=int, metavar="LIMIT")
    args = parser.parse_args(argv)
    pool = pmem.open(args.pool)
    collatz = persistent_cache(pool)(longest_collatz)
    start = time.perf_counter()
    for limit in args.limits:
        n, steps = collatz(limit)
        print(f"below {limit}: {n} ({steps} steps)")
    info = collatz.cache_info()
    print(f"{info.misses} computed, {info.hits} from the cache, "
          f"{info.currsize} cached, {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
