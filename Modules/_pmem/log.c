/* _pmem's undo log: what makes a transaction atomic in the pool.
 *
 * Before a transaction's first change to a range of the pool, the range
 * is copied, as it was, into the pool's log (_PyPmem_LogAppend()); the
 * commit makes the changed ranges durable, then moves the log's
 * generation on (_PyPmem_LogCommit()), which makes every entry of the
 * transaction void at once.  A transaction that fails writes its entries
 * back, newest first (_PyPmem_LogUndo()); so does the next open after a
 * crash (_PyPmem_LogOpen()).
 *
 * libpmemobj's transactions did the same with about 13 persist points
 * for a transaction of one dict store: a memset and a drain for each
 * range logged, and five at the commit, with its redo log.  This log
 * needs one drain per range and two at the commit, and none at all with
 * durability="process".  The heap's own changes (blocks made and freed)
 * stay libpmemobj's, atomic by its redo logs.  When the transaction made
 * or freed blocks, the commit point goes in the same redo log as their
 * publication (pmemobj_set_value() of the generation, with the
 * reservations and pmemobj_defer_free()s, in one pmemobj_publish()): up
 * to POOL_RESERVE_BATCH actions.  The blocks made past those are
 * published before the commit point (unreachable until it, freed by the
 * next open if the process dies first), the blocks freed past them
 * after it (garbage until then, freed by the next open likewise).
 *
 * The log.  The root's `log` field holds the offset of the first chunk,
 * a block of type POOL_LOG (never listed with the pool's allocations);
 * a transaction that logs more than it holds links more chunks, which
 * its end frees.  A chunk starts with a log_chunk header; its entries
 * follow one another:
 *
 *   offset, size     the range, from the pool's base
 *   generation       the first chunk's generation while the entry's
 *                    transaction was open
 *   checksum         of the four words and of the data
 *   data             size bytes, zero-padded to 8
 *
 * An entry is valid when its generation is the log's and its checksum
 * holds.  The valid entries are a prefix of the log: an entry is made
 * durable (its one drain) before the range it saves is written, and
 * before the next entry is written; an entry torn by a crash fails its
 * checksum, and so do the older generations' entries that the log's
 * space still holds.  An entry that does not fit the rest of a chunk
 * goes to the start of the next, so that reading goes on there when the
 * rest of a chunk is not valid.  Writing the entries back twice (a crash
 * during recovery) gives the same result.
 *
 * Durability.  On persistent memory (or PMEM_IS_PMEM_FORCE=1) a flush
 * is a cache-line flush, and the commit flushes each range that the
 * transaction logged, and each block it made.  On any other file
 * libpmemobj flushes with msync(), one system call, and for a file
 * system a journal commit, each: the commit then makes one msync() of
 * the span of everything the transaction changed.  With
 * durability="process" nothing is flushed: the kernel's page cache has
 * every write in the order it was made, which a process killed at any
 * point leaves consistent, but a power loss or a crash of the system
 * can lose the last transactions, or leave the pool inconsistent
 * (sqlite's synchronous=OFF).
 *
 * The journal of stores.  A change that one store outside any transaction
 * makes (-X pmem's `n += 1` at module level: a number of the pool given a
 * new value, the pointer of a binding to a static object) would need a
 * drain of its own to be durable in its order.  Its store goes into the
 * journal instead (_PyPmem_JournalStore()): an entry as the log's, with
 * the new bytes, written with cached stores, neither flushed nor drained,
 * into a chunk of its own (the first chunk's `journal` field, made when
 * first needed).  The object itself is left as it was until the journal
 * is applied (_PyPmem_JournalApply()): the entries are made durable,
 * written in place, flushed and drained, then the journal's generation
 * moves on.  The next open after a crash applies the valid entries,
 * oldest first, after the log has undone what it holds: the valid ones
 * are a prefix (an entry is checked as the log's are, and reading stops
 * at the first that is not valid), and any change that the process made
 * after them is made durable after them: the first entry of the undo log
 * flushes them, and its drain makes them durable (with msync(), they are
 * synced first), and so does any other store made durable outside a
 * transaction (_PyPmem_JournalFlush() before it).  So after a power loss the
 * pool holds the stores of a prefix of the program's statements, and
 * after a kill all of them, as it would with a drain each.  Applying the
 * entries twice gives the same memory.
 */

#include "pool.h"

struct log_chunk {
    uint64_t next;                /* offset of the next chunk, or 0 */
    uint64_t capacity;            /* bytes of entries that follow */
    uint64_t generation;          /* first chunk: the log's generation;
                                     the journal's: the journal's */
    uint64_t journal;             /* first chunk: offset of the journal's
                                     chunk, or 0 (none made yet) */
};

struct log_entry {
    uint64_t offset;              /* of the range, from the pool's base */
    uint64_t size;
    uint64_t generation;
    uint64_t checksum;
};

#define LOG_ROUND(n) (((n) + 7) & ~(size_t)7)
#define LOG_FIRST_SIZE ((size_t)64 << 10)
#define LOG_EXTEND_SIZE ((size_t)1 << 20)
/* A chunk linked doubles the last one, so that the chunks of any log fit
   in the one redo log that frees them. */
#define LOG_MAX_CHUNKS (POOL_RESERVE_BATCH - 1)

static inline struct log_chunk *
chunk_at(PoolObject *p, uint64_t offset)
{
    return (struct log_chunk *)((char *)p->pop + offset);
}

static inline char *
entries_of(struct log_chunk *c)
{
    return (char *)(c + 1);
}

/* A chunk offset that can be one: inside the pool, aligned, with its
   capacity inside the pool too. */
static int
valid_chunk(PoolObject *p, uint64_t offset)
{
    if (offset == 0 || offset % 8 != 0
        || offset > p->size - sizeof(struct log_chunk))
    {
        return 0;
    }
    struct log_chunk *c = chunk_at(p, offset);
    return c->capacity <= p->size - offset - sizeof(struct log_chunk)
           && c->capacity % 8 == 0;
}

/* --- checksums ----------------------------------------------------------- */

#define LOG_PRIME1 0x9E3779B185EBCA87ULL
#define LOG_PRIME2 0xC2B2AE3D27D4EB4FULL

static inline uint64_t
mix(uint64_t h, uint64_t w)
{
    h ^= w * LOG_PRIME2;
    h = (h << 31) | (h >> 33);
    return h * LOG_PRIME1;
}

static inline uint64_t
finish(uint64_t h)
{
    h ^= h >> 33;
    h *= LOG_PRIME2;
    h ^= h >> 29;
    return h;
}

/* The checksum of entry e, its data at data (size bytes, then zeros up
   to 8). */
static uint64_t
checksum(const struct log_entry *e, const char *data)
{
    uint64_t h = mix(mix(mix(LOG_PRIME1, e->offset), e->size),
                     e->generation);
    size_t n = e->size / 8;
    for (size_t i = 0; i < n; i++) {
        uint64_t w;
        memcpy(&w, data + 8 * i, 8);
        h = mix(h, w);
    }
    if (e->size % 8 != 0) {
        /* Assembled in a register: a load of a word that byte stores
           just wrote would wait for every store before them. */
        const unsigned char *rest = (const unsigned char *)data + 8 * n;
        uint64_t w = 0;
        for (size_t k = 0; k < e->size % 8; k++) {
            w |= (uint64_t)rest[k] << (8 * k);
        }
        h = mix(h, w);
    }
    return finish(h);
}

/* --- flushing ------------------------------------------------------------ */

static inline void
flush(PoolObject *p, const void *addr, size_t size)
{
    if (!p->nosync) {
        pmemobj_flush(p->pop, addr, size);
    }
}

static inline void
drain(PoolObject *p)
{
    if (!p->nosync) {
        pmemobj_drain(p->pop);
    }
}

/* Is the pool's file persistent memory, flushed from the CPU's caches,
   rather than with msync()?  As libpmem decides (PMEM_IS_PMEM_FORCE, a
   device DAX, a mapping that MAP_SYNC accepts). */
static int
is_pmem(PoolObject *p)
{
    const char *force = getenv("PMEM_IS_PMEM_FORCE");
    if (force != NULL && (force[0] == '0' || force[0] == '1')
        && force[1] == '\0')
    {
        return force[0] == '1';
    }
    int fd = open(p->cpath, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    struct stat st;
    int pmem = fstat(fd, &st) == 0 && S_ISCHR(st.st_mode);
#if defined(MAP_SYNC) && defined(MAP_SHARED_VALIDATE)
    if (!pmem) {
        void *m = mmap(NULL, 4096, PROT_READ, MAP_SHARED_VALIDATE | MAP_SYNC,
                       fd, 0);
        if (m != MAP_FAILED) {
            munmap(m, 4096);
            pmem = 1;
        }
    }
#endif
    close(fd);
    return pmem;
}

/* --- the set of ranges logged -------------------------------------------

   A range logged once needs no second entry in the same transaction: the
   first has what it held before the transaction.  A bulk load changes
   the same fields of its container at each item. */

#define SEEN_FIRST 1024
#define SEEN_MAX ((size_t)1 << 22)

static inline size_t
seen_hash(const char *addr)
{
    return (size_t)(((uintptr_t)addr >> 3) * 0x9E3779B97F4A7C15ULL >> 20);
}

/* The slot of [addr, addr + size) in the set of ranges that the
   transaction logged: *found when it is there, else the free slot where
   it goes once logged; NULL when the set has no room (then the range is
   logged again: correct, if slower). */
static struct pool_seen *
seen_slot(PoolObject *p, const char *addr, size_t size, int *found)
{
    *found = 0;
    if (p->seen == NULL) {
        p->seen = PyMem_RawCalloc(SEEN_FIRST, sizeof(*p->seen));
        if (p->seen == NULL) {
            return NULL;
        }
        p->seen_mask = SEEN_FIRST - 1;
    }
    if (2 * (p->nseen + 1) > p->seen_mask + 1) {
        size_t n = 2 * (p->seen_mask + 1);
        struct pool_seen *grown = n > SEEN_MAX ? NULL
            : PyMem_RawCalloc(n, sizeof(*grown));
        if (grown == NULL) {
            return NULL;
        }
        for (size_t i = 0; i <= p->seen_mask; i++) {
            struct pool_seen *s = &p->seen[i];
            if (s->stamp == p->seen_stamp && s->addr != NULL) {
                size_t j = seen_hash(s->addr) & (n - 1);
                while (grown[j].addr != NULL) {
                    j = (j + 1) & (n - 1);
                }
                grown[j] = *s;
            }
        }
        PyMem_RawFree(p->seen);
        p->seen = grown;
        p->seen_mask = n - 1;
    }
    for (size_t i = seen_hash(addr) & p->seen_mask; ;
         i = (i + 1) & p->seen_mask)
    {
        struct pool_seen *s = &p->seen[i];
        if (s->stamp != p->seen_stamp || s->addr == NULL) {
            return s;
        }
        if (s->addr == addr && s->size >= size) {
            *found = 1;
            return s;
        }
    }
}

/* The transaction ended: the set is empty again. */
static void
seen_clear(PoolObject *p)
{
    p->nseen = 0;
    if (++p->seen_stamp == 0 && p->seen != NULL) {
        memset(p->seen, 0, (p->seen_mask + 1) * sizeof(*p->seen));
    }
}

/* --- writing ------------------------------------------------------------- */

/* Entries of up to this many bytes of data are copied whole. */
#define LOG_SMALL 224

/* Write size bytes from src at dst in the log, flushed, not drained:
   with non-temporal stores, which need not read the lines first (the
   lines of the log that the last transaction flushed are evicted). */
static inline void
write_flushed(PoolObject *p, void *dst, const void *src, size_t size)
{
    if (p->nosync) {
        memcpy(dst, src, size);
    }
    else {
        pmemobj_memcpy(p->pop, dst, src, size,
                       PMEMOBJ_F_MEM_NONTEMPORAL | PMEMOBJ_F_MEM_NODRAIN);
    }
}

/* Room for one more entry in p's index of them.  0, or -1 with
   MemoryError set. */
static int
index_room(PoolObject *p)
{
    if (_PyPmem_RESERVE(p->log_index, p->log_index_allocated,
                        p->log_entries + 1, 64) < 0)
    {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* A chunk of size bytes for p's log, of the generation given, made with
   *link (a field of the pool) pointing to it, in one redo log: all or
   none.  NULL with *full set when the pool has no room for it, else with
   PoolError set. */
static struct log_chunk *
new_chunk(PoolObject *p, size_t size, uint64_t generation, uint64_t *link,
          int *full)
{
    struct pobj_action acts[2];
    PMEMoid oid = pmemobj_xreserve(p->pop, &acts[0], size, POOL_LOG,
                                   _PyPmem_ClassFlags(p, size));
    *full = OID_IS_NULL(oid);
    if (*full) {
        return NULL;
    }
    struct log_chunk *c = pmemobj_direct(oid);
    c->next = 0;
    c->capacity = (pmemobj_alloc_usable_size(oid) - sizeof(*c)) & ~(size_t)7;
    c->generation = generation;
    c->journal = 0;
    /* The first entry void, whatever the block held. */
    memset(c + 1, 0, sizeof(struct log_entry));
    pmemobj_persist(p->pop, c, sizeof(*c) + sizeof(struct log_entry));
    pmemobj_set_value(p->pop, &acts[1], link, oid.off);
    if (pmemobj_publish(p->pop, acts, 2) != 0) {
        pmemobj_cancel(p->pop, acts, 2);
        _PyPmem_SetError(p->error, p->path, "cannot make the log of pool");
        return NULL;
    }
    return c;
}

/* Free the chunks linked after the first, and unlink them, in one redo
   log: all or none. */
static void
free_extensions(PoolObject *p)
{
    struct pobj_action acts[LOG_MAX_CHUNKS + 1];
    size_t n = 0;
    for (uint64_t off = p->log->next; off != 0 && n < LOG_MAX_CHUNKS; ) {
        struct log_chunk *c = chunk_at(p, off);
        off = c->next;
        pmemobj_defer_free(p->pop, pmemobj_oid(c), &acts[n++]);
    }
    pmemobj_set_value(p->pop, &acts[n++], &p->log->next, 0);
    if (pmemobj_publish(p->pop, acts, n) != 0) {
        /* Cannot happen for so few actions; they stay linked, and are
           used again. */
        pmemobj_cancel(p->pop, acts, n);
        return;
    }
    p->log_chunks = 1;
}

/* Go on in the next chunk, with room for need bytes of entries: linked,
   when the current one is the last.  0, or -1 with MemoryError set (the
   pool is full: failed_size remembered). */
static int
next_chunk(PoolObject *p, size_t need)
{
    struct log_chunk *cur = p->log_chunk;
    if (cur->next != 0 && chunk_at(p, cur->next)->capacity >= need) {
        p->log_chunk = chunk_at(p, cur->next);
        p->log_capacity = p->log_chunk->capacity;
        p->log_pos = 0;
        return 0;
    }
    if (cur->next != 0 || p->log_chunks >= LOG_MAX_CHUNKS) {
        PyErr_Format(PyExc_MemoryError, "the log of the transaction on "
                     "pool %R is too big: change less in one transaction",
                     p->path);
        return -1;
    }
    size_t size = Py_MAX(LOG_EXTEND_SIZE << (p->log_chunks - 1),
                         need + sizeof(struct log_chunk));
    int full;
    struct log_chunk *c = new_chunk(p, size, 0, &cur->next, &full);
    if (c == NULL) {
        if (full) {
            p->failed_size = size;
            PyErr_NoMemory();
        }
        return -1;
    }
    p->log_chunks++;
    p->log_chunk = c;
    p->log_capacity = c->capacity;
    p->log_pos = 0;
    return 0;
}

int
_PyPmem_LogAppend(PoolObject *p, const void *addr, size_t size)
{
    if (size == 0) {
        return 0;                 /* nothing to save */
    }
    int found;
    struct pool_seen *slot = seen_slot(p, addr, size, &found);
    if (found) {
        return 0;
    }
    /* The journal's entries durable first: flushed, the entry's drain
       below makes them durable too. */
    _PyPmem_JournalFlush(p);
    size_t need = sizeof(struct log_entry) + LOG_ROUND(size);
    if (index_room(p) < 0
        || (p->log_pos + need > p->log_capacity
            && next_chunk(p, need) < 0))
    {
        return -1;
    }
    struct log_entry *e = (struct log_entry *)(entries_of(p->log_chunk)
                                               + p->log_pos);
    struct log_entry head = {
        .offset = (uint64_t)((const char *)addr - (char *)p->pop),
        .size = size,
        .generation = p->log_generation,
    };
    head.checksum = checksum(&head, addr);
    if (size <= LOG_SMALL) {
        /* Written at once from a copy. */
        uint64_t buf[(sizeof(head) + LOG_SMALL) / 8];
        buf[(need - 1) / 8] = 0;  /* the data's padding (size > 0) */
        memcpy((char *)buf + sizeof(head), addr, size);
        memcpy(buf, &head, sizeof(head));
        write_flushed(p, e, buf, need);
    }
    else {
        size_t whole = size & ~(size_t)7;
        write_flushed(p, e + 1, addr, whole);
        if (whole < size) {
            uint64_t last = 0;
            memcpy(&last, (const char *)addr + whole, size - whole);
            write_flushed(p, (char *)(e + 1) + whole, &last, 8);
        }
        write_flushed(p, e, &head, sizeof(head));
    }
    if (p->log_batch) {
        p->log_undrained = 1;     /* _PyPmem_LogDrain() */
    }
    else {
        drain(p);
    }
    p->log_pos += need;
    p->log_index[p->log_entries++] = (struct pool_logged){
        (char *)addr, size, e};
    if (slot != NULL) {
        *slot = (struct pool_seen){addr, size, p->seen_stamp};
        p->nseen++;
    }
    if (p->log_msync) {
        const char *end = (const char *)addr + size;
        p->span_lo = Py_MIN(p->span_lo, (const char *)addr);
        p->span_hi = Py_MAX(p->span_hi, end);
    }
    return 0;
}

void
_PyPmem_LogDrain(PoolObject *p)
{
    if (p->log_undrained) {
        p->log_undrained = 0;
        drain(p);
    }
}

/* Index the valid entries of the log, oldest first: those whose
   generation is the log's and whose checksum holds, one after another,
   going on at the start of the next chunk when the rest of one is not
   an entry.  0, or -1 with MemoryError set. */
static int
index_valid_entries(PoolObject *p)
{
    uint64_t generation = p->log_generation;
    struct log_chunk *c = p->log;
    size_t pos = 0;
    size_t chunks = 1;
    p->log_entries = 0;
    for (;;) {
        struct log_entry *e = (struct log_entry *)(entries_of(c) + pos);
        if (pos + sizeof(*e) <= c->capacity
            && e->generation == generation
            && e->size <= c->capacity - pos - sizeof(*e)
            && e->offset <= p->size && e->size <= p->size - e->offset
            && checksum(e, (char *)(e + 1)) == e->checksum)
        {
            if (index_room(p) < 0) {
                return -1;
            }
            p->log_index[p->log_entries++] = (struct pool_logged){
                (char *)p->pop + e->offset, e->size, e};
            pos += sizeof(*e) + LOG_ROUND(e->size);
            continue;
        }
        /* Also at the start of a chunk: a first entry bigger than the
           first chunk starts the next. */
        if (c->next == 0 || !valid_chunk(p, c->next)
            || ++chunks > LOG_MAX_CHUNKS)
        {
            return 0;
        }
        c = chunk_at(p, c->next);
        pos = 0;
    }
}

/* The transaction is over: the log starts again, in its first chunk. */
static void
log_reset(PoolObject *p)
{
    p->log_chunk = p->log;
    p->log_capacity = p->log_first_capacity;
    p->log_pos = 0;
    p->log_entries = 0;
    p->span_lo = (const char *)UINTPTR_MAX;
    p->span_hi = NULL;
    seen_clear(p);
    if (p->log->next != 0) {
        free_extensions(p);
    }
}

/* Make the log's entries void: its generation moves on. */
static void
next_generation(PoolObject *p)
{
    p->log->generation = ++p->log_generation;
    _PyPmem_Persist(p, &p->log->generation, sizeof(p->log->generation));
}

/* Write back the indexed entries, newest first, make that durable, then
   void them. */
static void
write_back(PoolObject *p)
{
    for (size_t i = p->log_entries; i-- > 0; ) {
        struct pool_logged *l = &p->log_index[i];
        memcpy(l->addr, l->entry + 1, l->size);
    }
    for (size_t i = 0; i < p->log_entries; i++) {
        flush(p, p->log_index[i].addr, p->log_index[i].size);
    }
    drain(p);
    next_generation(p);
}

/* Flush what the transaction changed: each range it logged and each
   block it made; on a file whose flushes are msync()s, their span at
   once. */
static void
flush_changes(PoolObject *p)
{
    if (p->nosync) {
        return;
    }
    if (!p->log_msync) {
        for (size_t i = 0; i < p->log_entries; i++) {
            pmemobj_flush(p->pop, p->log_index[i].addr,
                          p->log_index[i].size);
        }
        uintptr_t line = 0;       /* the codes' last line flushed */
        for (size_t i = 0; i < p->ntxmade; i++) {
            char *b = p->txmade[i];
            run_state *r = _PyPmem_RunOf(p, b);
            if (r != NULL) {
                _PyPmem_FlushSlot(p, r, b, &line);
            }
            else {
                pmemobj_flush(p->pop, b,
                              pmemobj_alloc_usable_size(pmemobj_oid(b)));
            }
        }
        return;
    }
    for (size_t i = 0; i < p->ntxmade; i++) {
        char *b = p->txmade[i];
        run_state *r = _PyPmem_RunOf(p, b);
        const char *lo = b, *hi = b + _PyPmem_BlockSize(p, b);
        if (r != NULL) {
            lo = (const char *)&r->codes[_PyPmem_SlotOf(r, b)];
        }
        p->span_lo = Py_MIN(p->span_lo, lo);
        p->span_hi = Py_MAX(p->span_hi, hi);
    }
    if (p->span_hi != NULL) {
        pmemobj_flush(p->pop, p->span_lo,
                      (size_t)(p->span_hi - p->span_lo));
    }
}

void
_PyPmem_LogCommit(PoolObject *p, struct pobj_action *acts, size_t before,
                  size_t after)
{
    flush_changes(p);
    if (before + after > 0) {
        /* The commit point in the redo log of the heap's actions. */
        drain(p);
        pmemobj_set_value(p->pop, &acts[before], &p->log->generation,
                          ++p->log_generation);
        _PyPmem_Publish(p, acts, before + 1 + after);
    }
    else if (p->log_entries > 0 || p->ntxmade > 0) {
        drain(p);
        /* The commit point. */
        next_generation(p);
    }
    log_reset(p);
}

void
_PyPmem_LogUndo(PoolObject *p)
{
    if (p->log_entries > 0) {
        write_back(p);
    }
    log_reset(p);
}

/* The bytes that the log's chunks take, and the journal's. */
size_t
_PyPmem_LogSize(PoolObject *p)
{
    size_t size = 0;
    for (struct log_chunk *c = p->log; c != NULL;
         c = c->next == 0 ? NULL : chunk_at(p, c->next))
    {
        size += pmemobj_alloc_usable_size(pmemobj_oid(c));
    }
    if (p->journal != NULL) {
        size += pmemobj_alloc_usable_size(pmemobj_oid(p->journal));
    }
    return size;
}

/* --- the journal of stores ----------------------------------------------- */

#define JOURNAL_SIZE ((size_t)64 << 10)
/* The journal's generations have the top bit set, the log's never: an
   entry of the log that a chunk freed by the log left where the journal
   was made is not valid in the journal. */
#define JOURNAL_FIRST_GENERATION (((uint64_t)1 << 63) | 1)

static inline struct log_entry *
journal_entry(PoolObject *p, size_t pos)
{
    return (struct log_entry *)(entries_of(p->journal) + pos);
}

/* Is the journal's entry at pos valid: of its generation, inside the
   pool and the chunk, its checksum right? */
static int
journal_valid(PoolObject *p, size_t pos)
{
    struct log_entry *e = journal_entry(p, pos);
    return (pos + sizeof(*e) <= p->journal->capacity
            && e->generation == p->journal_generation
            && e->size > 0 && e->size <= POOL_JOURNAL_MAX_STORE
            && e->size <= p->journal->capacity - pos - sizeof(*e)
            && e->offset % 4 == 0 && e->offset <= p->size
            && e->size <= p->size - e->offset
            && checksum(e, (char *)(e + 1)) == e->checksum);
}

int
_PyPmem_JournalStore(PoolObject *p, void *addr, const void *data,
                     size_t size)
{
    assert(size > 0 && size <= POOL_JOURNAL_MAX_STORE);
    if (p->journal == NULL) {
        int full;
        p->journal = new_chunk(p, JOURNAL_SIZE, JOURNAL_FIRST_GENERATION,
                               &p->log->journal, &full);
        if (p->journal == NULL) {
            if (full) {
                return 1;         /* stored in place, the usual way */
            }
            return -1;
        }
        p->journal_generation = JOURNAL_FIRST_GENERATION;
        p->journal_pos = p->journal_synced = 0;
    }
    size_t need = sizeof(struct log_entry) + LOG_ROUND(size);
    if (p->journal_pos + need > p->journal->capacity) {
        return 1;                 /* full: applied first */
    }
    struct log_entry head = {
        .offset = (uint64_t)((char *)addr - (char *)p->pop),
        .size = size,
        .generation = p->journal_generation,
    };
    uint64_t buf[(sizeof(head) + POOL_JOURNAL_MAX_STORE) / 8];
    memcpy(buf + sizeof(head) / 8, data, LOG_ROUND(size));
    head.checksum = checksum(&head, data);
    memcpy(buf, &head, sizeof(head));
    /* Cached stores, flushed when the entries must be durable: a
       flush, or a non-temporal store, would make the next locked
       instruction wait for the line to reach memory. */
    memcpy(journal_entry(p, p->journal_pos), buf, need);
    p->journal_pos += need;
    return 0;
}

void
_PyPmem_JournalFlush(PoolObject *p)
{
    if (p->journal_synced != p->journal_pos) {
        flush(p, journal_entry(p, p->journal_synced),
              p->journal_pos - p->journal_synced);
        p->journal_synced = p->journal_pos;
    }
}

/* Write the stores of the valid entries, oldest first, and flush them,
   not drained.  Whether there were any. */
static int
journal_redo(PoolObject *p)
{
    const char *lo = (const char *)UINTPTR_MAX, *hi = NULL;
    size_t pos = 0;
    for (; journal_valid(p, pos);
         pos += sizeof(struct log_entry)
                + LOG_ROUND(journal_entry(p, pos)->size))
    {
        struct log_entry *e = journal_entry(p, pos);
        char *to = (char *)p->pop + e->offset;
        memcpy(to, e + 1, e->size);
        if (!p->log_msync) {
            flush(p, to, e->size);
        }
        lo = Py_MIN(lo, (const char *)to);
        hi = Py_MAX(hi, (const char *)to + e->size);
    }
    if (p->log_msync && hi != NULL) {
        flush(p, lo, (size_t)(hi - lo));
    }
    return pos > 0;
}

/* The journal is empty again: its generation moves on, durably. */
static void
journal_reset(PoolObject *p)
{
    p->journal->generation = ++p->journal_generation;
    _PyPmem_Persist(p, &p->journal->generation,
                    sizeof(p->journal->generation));
    p->journal_pos = p->journal_synced = 0;
}

void
_PyPmem_JournalApply(PoolObject *p)
{
    if (p->journal == NULL || p->journal_pos == 0) {
        return;
    }
    /* The entries durable before the objects change. */
    _PyPmem_JournalFlush(p);
    drain(p);
    (void)journal_redo(p);
    drain(p);
    journal_reset(p);
}

/* The journal that the open finds: its chunk checked, its valid entries
   applied.  0, or -1 with an exception set. */
static int
journal_open(PoolObject *p)
{
    uint64_t off = p->log->journal;
    p->journal = NULL;
    if (off == 0) {
        return 0;
    }
    if (!valid_chunk(p, off)
        || pmemobj_type_num(pmemobj_oid(chunk_at(p, off))) != POOL_LOG)
    {
        PyErr_Format(p->error, "pool %R is corrupt: its log does not hold "
                     "its journal", p->path);
        return -1;
    }
    p->journal = chunk_at(p, off);
    p->journal_generation = p->journal->generation;
    if (journal_redo(p)) {
        drain(p);
        journal_reset(p);
    }
    p->journal_pos = p->journal_synced = 0;
    return 0;
}


/* --- opening ------------------------------------------------------------- */

/* A first chunk for p, made with the root's field pointing to it, in one
   redo log.  0, or -1 with an exception set. */
static int
make_log(PoolObject *p)
{
    int full;
    if (new_chunk(p, LOG_FIRST_SIZE, 1, &p->root->log, &full) == NULL) {
        if (full) {
            PyErr_Format(p->error, "pool %R is full: there is no room for "
                         "its log (%zu bytes); make it bigger with "
                         "python -m pmem grow PATH SIZE", p->path,
                         LOG_FIRST_SIZE);
        }
        return -1;
    }
    return 0;
}

int
_PyPmem_LogOpen(PoolObject *p, int nosync)
{
    if (p->root->log == 0 && make_log(p) < 0) {
        return -1;
    }
    if (!valid_chunk(p, p->root->log)
        || pmemobj_type_num(pmemobj_oid(chunk_at(p, p->root->log)))
           != POOL_LOG)
    {
        PyErr_Format(p->error, "pool %R is corrupt: its root does not hold "
                     "its log", p->path);
        return -1;
    }
    p->log = chunk_at(p, p->root->log);
    p->log_chunks = 1;
    for (uint64_t off = p->log->next; off != 0; off = chunk_at(p, off)->next) {
        if (!valid_chunk(p, off) || ++p->log_chunks > LOG_MAX_CHUNKS) {
            PyErr_Format(p->error, "pool %R is corrupt: the chunks of its "
                         "log do not follow one another", p->path);
            return -1;
        }
    }
    p->log_generation = p->log->generation;
    p->log_first_capacity = p->log->capacity;
    p->log_msync = !is_pmem(p);
    /* A transaction that a crash stopped: undone, durably. */
    p->nosync = 0;
    if (index_valid_entries(p) < 0) {
        return -1;
    }
    if (p->log_entries > 0) {
        write_back(p);
    }
    log_reset(p);
    /* Then the stores made outside transactions, before the transaction
       that the log undid (if any) began. */
    if (journal_open(p) < 0) {
        return -1;
    }
    p->nosync = nosync;
    return 0;
}
