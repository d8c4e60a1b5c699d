"""pmem-python's demo: a bank whose accounts live in a pool.

    ./python Tools/pmem/demo.py SRC DST AMOUNT [POOL]

moves AMOUNT from account SRC to account DST in one transaction.  The
accounts live in a pool file (accounts.pool unless POOL is given), so
each run starts from the balances the last one left.  `make demo` runs
it twice on a fresh pool.
"""

import sys
import pmem

src, dst, delta = sys.argv[1].lower(), sys.argv[2].lower(), float(sys.argv[3])
pop = pmem.open(sys.argv[4] if len(sys.argv) > 4 else "accounts.pool")
if not hasattr(pop.ns, "accounts"):
    pop.ns.accounts = dict()                 # a plain dict: moved into the pool
for acct in (src, dst):
    if acct not in pop.ns.accounts:
        pop.ns.accounts[acct] = 0.0          # immutable: copied into the pool
with pop:                                    # one transaction
    pop.ns.accounts[src] -= delta
    pop.ns.accounts[dst] += delta
print(f"{src:<10s} {pop.ns.accounts[src]:10.2f} {dst:<10s} {pop.ns.accounts[dst]:10.2f}")
