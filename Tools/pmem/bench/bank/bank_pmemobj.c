/* The bank transfer benchmark in C on libpmemobj: the reference that
   Tools/pmem/bench/bank/run.py compares pmem-python's pool with.

       bank_pmemobj POOLFILE TRANSFERS SEED

   creates POOLFILE (which must not exist), whose root holds 1000 int64
   balances of 1000 each, and makes TRANSFERS transfers, one transaction
   each: TX_BEGIN, both balances added to the undo log with
   pmemobj_tx_add_range_direct(), the two updates, TX_END -- the
   idiomatic libpmemobj transaction.  The pairs and amounts come from the
   same generator as run.py's (see next_random), computed before the
   clock starts.  It prints, one per line:

       cpu_ns N        process CPU time of the transfers
       wall_ns N       their wall-clock time
       balances B0 B1 ... B999

   Run it with PMEM_IS_PMEM_FORCE=1 on /dev/shm, as run.py does.  Under
   callgrind, --toggle-collect=run_transfers counts the transfers alone. */

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpmemobj.h>

#define ACCOUNTS 1000
#define START_BALANCE 1000
#define MAX_AMOUNT 100
#define POOL_SIZE ((size_t)16 << 20)

struct bank {
    int64_t balance[ACCOUNTS];
};

struct transfer {
    uint32_t from;
    uint32_t to;
    int64_t amount;
};

/* The generator that all variants share: a 32-bit linear congruential
   generator (Numerical Recipes' constants), its upper 24 bits used. */
static uint32_t
next_random(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return *state >> 8;
}

static void
make_transfers(struct transfer *t, size_t n, uint32_t seed)
{
    uint32_t state = seed;
    for (size_t i = 0; i < n; i++) {
        t[i].from = next_random(&state) % ACCOUNTS;
        t[i].to = (t[i].from + 1 + next_random(&state) % (ACCOUNTS - 1))
                  % ACCOUNTS;
        t[i].amount = 1 + next_random(&state) % MAX_AMOUNT;
    }
}

static int64_t
elapsed_ns(const struct timespec *start, const struct timespec *stop)
{
    return (int64_t)(stop->tv_sec - start->tv_sec) * 1000000000
           + (stop->tv_nsec - start->tv_nsec);
}

/* One transfer, one transaction. */
static void
transfer(PMEMobjpool *pop, int64_t *from, int64_t *to, int64_t amount)
{
    TX_BEGIN(pop) {
        pmemobj_tx_add_range_direct(from, sizeof(*from));
        pmemobj_tx_add_range_direct(to, sizeof(*to));
        *from -= amount;
        *to += amount;
    } TX_ONABORT {
        fprintf(stderr, "bank_pmemobj: a transfer aborted: %s\n",
                pmemobj_errormsg());
        exit(1);
    } TX_END
}

/* The timed loop; not inlined, so that callgrind can toggle on it. */
static __attribute__((noinline)) void
run_transfers(PMEMobjpool *pop, struct bank *bank,
              const struct transfer *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        transfer(pop, &bank->balance[t[i].from], &bank->balance[t[i].to],
                 t[i].amount);
    }
}

int
main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s POOLFILE TRANSFERS SEED\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    size_t n = strtoull(argv[2], NULL, 10);
    uint32_t seed = (uint32_t)strtoul(argv[3], NULL, 10);

    struct transfer *transfers = malloc((n ? n : 1) * sizeof(*transfers));
    if (transfers == NULL) {
        perror("bank_pmemobj");
        return 1;
    }
    make_transfers(transfers, n, seed);

    PMEMobjpool *pop = pmemobj_create(path, "bank", POOL_SIZE, 0600);
    if (pop == NULL) {
        fprintf(stderr, "bank_pmemobj: %s: %s\n", path, pmemobj_errormsg());
        return 1;
    }
    PMEMoid root = pmemobj_root(pop, sizeof(struct bank));
    if (OID_IS_NULL(root)) {
        fprintf(stderr, "bank_pmemobj: root: %s\n", pmemobj_errormsg());
        pmemobj_close(pop);
        return 1;
    }
    struct bank *bank = pmemobj_direct(root);
    for (size_t i = 0; i < ACCOUNTS; i++) {
        bank->balance[i] = START_BALANCE;
    }
    pmemobj_persist(pop, bank, sizeof(*bank));

    struct timespec cpu0, cpu1, wall0, wall1;
    clock_gettime(CLOCK_MONOTONIC, &wall0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu0);
    run_transfers(pop, bank, transfers, n);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu1);
    clock_gettime(CLOCK_MONOTONIC, &wall1);

    printf("cpu_ns %" PRId64 "\n", elapsed_ns(&cpu0, &cpu1));
    printf("wall_ns %" PRId64 "\n", elapsed_ns(&wall0, &wall1));
    printf("balances");
    for (size_t i = 0; i < ACCOUNTS; i++) {
        printf(" %" PRId64, bank->balance[i]);
    }
    printf("\n");
    pmemobj_close(pop);
    free(transfers);
    return 0;
}
