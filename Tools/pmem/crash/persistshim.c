/* persistshim.c -- kill a process at its k-th persist point, and say what
 * a power cut at that point would have left on the media.
 *
 * An LD_PRELOAD library over the entry points through which libpmemobj
 * makes a pool durable.  libpmemobj.so.1 imports libpmem's functions and
 * libc's msync()/mmap()/munmap()/fsync() through the dynamic linker, so the
 * definitions below take their place; each one calls the real function
 * (found with dlsym()) and does its own bookkeeping around it.
 *
 * Persist points.  A persist point is a call after which the caller may
 * rely on some stores being durable, and so on an order between what went
 * before and what comes after:
 *
 *   pmem_drain(), pmem_persist(), pmem_msync(), pmem_deep_drain(),
 *   pmem_deep_persist(), msync() with MS_SYNC, fsync() and fdatasync() of a
 *   tracked pool file, and pmem_memcpy()/pmem_memmove()/pmem_memset() (and
 *   their _persist forms) unless the flags hold PMEM_F_MEM_NODRAIN or
 *   PMEM_F_MEM_NOFLUSH.
 *
 * pmem_flush(), pmem_deep_flush() and the _nodrain copies only start
 * lines on their way (nothing is promised until the next drain): they are
 * not points.  A call made by the shim's real functions themselves (libpmem's
 * pmem_msync() calls libc's msync()) is part of the outer call, not another
 * point.  Points are counted in the process that loaded the shim only: a
 * forked child (the pool's open runs pmemobj_check() in one) neither counts
 * nor kills nor writes images.  What a child makes durable is durable all
 * the same: the flushes, drains and syncs of the pool files that it maps
 * reach the process's shadows (below), which are shared memory.  (The
 * open's checker child replays libpmemobj's logs, and extends a grown
 * heap, before the process maps the pool.)  A process that exec()s starts
 * afresh.
 *
 * Killing.  With PERSISTSHIM_KILL_AT=k the process kills itself with
 * SIGKILL at its k-th point, by default right AFTER the point has been
 * performed: everything that the program made durable up to and including
 * point k is durable, and nothing after it was done.  PERSISTSHIM_WHEN=before
 * kills just before the k-th point is performed instead (for the copying
 * functions this is before the copy).
 *
 * Power loss.  After SIGKILL, whatever the process stored in a shared
 * mapping is still in the page cache, flushed or not: a kill proves the
 * program's recovery from a process crash only.  With PERSISTSHIM_POOL and
 * PERSISTSHIM_IMAGE set, the shim also keeps, for every mapped file whose
 * path starts with PERSISTSHIM_POOL, a shadow of what the media holds:
 *
 *   - when the file is first mapped (mmap() with MAP_SHARED) or synced
 *     (fsync(), fdatasync()), the shadow is the file's contents then; a
 *     file found larger than its shadow at a mapping or a sync (a pool
 *     made larger: pmem.grow()) has its shadow grown, the new part as the
 *     file holds it then;
 *   - pmem_flush() of a range makes its 64-byte cache lines pending, each
 *     with its contents as they are at the time of the flush (a store to a
 *     line after its flush is not covered by it);
 *   - a drain (pmem_drain(), and the drain inside pmem_persist() and the
 *     draining copies) makes every pending line durable: copied into the
 *     shadow as it was flushed;
 *   - msync() and pmem_msync() make the range's whole pages durable as they
 *     are at the call (msync works on pages); fsync()/fdatasync() of the
 *     file make all of it durable.
 *
 * At the kill, the shadow is written to PERSISTSHIM_IMAGE (a second
 * tracked file, if any, to PERSISTSHIM_IMAGE.1 and so on): the file as the
 * media would hold it if the power had failed at that point and no line
 * that the program did not flush and drain had reached the media.  That is
 * the strictest outcome a power loss may have; hardware may also write any
 * other line back early, which this does not try.  File-system metadata
 * (the file's existence, name and size) is taken to be durable at once.
 *
 * Environment (read once, when the shim is loaded):
 *
 *   PERSISTSHIM_KILL_AT=k      SIGKILL at the k-th persist point (1 is the
 *                              first); unset or 0: never
 *   PERSISTSHIM_WHEN=after     kill after performing point k (default), or
 *                    before    before performing it
 *   PERSISTSHIM_COUNT=file     write the number of points counted to file
 *                              when the process exits normally (how a
 *                              driver learns N)
 *   PERSISTSHIM_ARMED=0        count nothing until the program calls
 *                              persist_shim_start() (for instance through
 *                              ctypes.CDLL(None)), so that only the
 *                              operation under test is counted; the
 *                              default is to count from the start
 *   PERSISTSHIM_POOL=prefix    the pool file(s) to shadow: every file whose
 *                              absolute path starts with prefix (so that
 *                              "p.pool" covers "p.pool.creating" too)
 *   PERSISTSHIM_IMAGE=file     power-loss mode: where the shadow goes at
 *                              the kill (needs PERSISTSHIM_POOL)
 *   PERSISTSHIM_TRACE=file     append a line for every counted point
 *                              (number, function, address, length) and
 *                              its call stack, to tell points apart
 *   PERSISTSHIM_TRACE_FLUSHES=1  and a line for every flush too
 *
 * The shim exports persist_shim_start(), persist_shim_stop() and
 * persist_shim_count() for a program that wants to count one stretch only.
 *
 * What the hooks themselves do is kept small: no stdio, no malloc (the
 * shadows are anonymous mappings made with the real mmap()), a spin lock
 * around the shared tables, and a per-thread flag so that a hook never
 * runs inside another hook (the real pmem_msync() calls msync(), our
 * mmap() calls the real one).  The kill path uses open(), write(), close()
 * and raise() only.  libpmem is looked up lazily, when libpmemobj first
 * calls it: a Python extension module loads it with RTLD_LOCAL, out of
 * dlsym(RTLD_NEXT)'s reach, so the shim asks for "libpmem.so.1" by name.
 *
 * Build: cc -O2 -shared -fPIC -o persistshim.so persistshim.c -ldl
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* libpmem's flags (libpmem.h), not included so that the shim builds
   without libpmem's headers. */
#define PMEM_F_MEM_NODRAIN (1U << 0)
#define PMEM_F_MEM_NOFLUSH (1U << 5)

#define LINE 64                   /* bytes of a cache line */
#define MAX_FILES 8               /* shadowed files */
#define MAX_MAPS 64               /* mappings of them */
#define MAX_PENDING ((size_t)1 << 24)   /* lines flushed, not drained */

#define EXPORT __attribute__((visibility("default")))

/* What the media holds of one file. */
typedef struct {
    dev_t dev;
    ino_t ino;
    size_t size;                  /* bytes shadowed */
    char *media;                  /* the durable contents */
    char *staged;                 /* pending lines as they were flushed */
    uint64_t *pending;            /* bitmap of the pending lines */
} shadow;

/* A mapping of a shadowed file: [addr, addr + len) is the file's bytes
   from off on. */
typedef struct {
    uintptr_t addr;
    size_t len;                   /* whole pages */
    uint64_t off;
    int file;                     /* index in files[] */
} mapping;

typedef struct {
    uint32_t file;
    uint64_t line;
} pending_line;

static shadow files[MAX_FILES];
static int nfiles;
static mapping maps[MAX_MAPS];
static int nmaps;
static pending_line *pendq;       /* the pending lines, in flush order */
static size_t npending;

static int shim_lock;             /* a spin lock over the tables above */
static __thread int inside __attribute__((tls_model("initial-exec")));

static int in_child;              /* a forked child: counts no point */
static int armed = 1;             /* counting */
static long count;                /* points counted */
static long kill_at;              /* 0: never */
static int kill_before;           /* kill before performing the point */
static int powerloss;             /* shadows kept */
static const char *pool_prefix;
static size_t pool_prefix_len;
static const char *image_path;
static const char *count_path;
static int trace_fd = -1;
static int trace_flushes;
static size_t page_size = 4096;

/* The real functions. */
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static int (*real_munmap)(void *, size_t);
static int (*real_msync)(void *, size_t, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static void (*real_pmem_persist)(const void *, size_t);
static int (*real_pmem_msync)(const void *, size_t);
static void (*real_pmem_flush)(const void *, size_t);
static void (*real_pmem_deep_flush)(const void *, size_t);
static int (*real_pmem_deep_drain)(const void *, size_t);
static int (*real_pmem_deep_persist)(const void *, size_t);
static void (*real_pmem_drain)(void);
static void *(*real_pmem_memcpy)(void *, const void *, size_t, unsigned);
static void *(*real_pmem_memmove)(void *, const void *, size_t, unsigned);
static void *(*real_pmem_memset)(void *, int, size_t, unsigned);


/* --- small helpers ------------------------------------------------------- */

/* Write a message to stderr without stdio. */
static void
say(const char *msg)
{
    size_t n = strlen(msg);
    while (n > 0) {
        ssize_t w = write(2, msg, n);
        if (w <= 0) {
            return;
        }
        msg += w;
        n -= (size_t)w;
    }
}

static void
fatal(const char *msg)
{
    say("persistshim: ");
    say(msg);
    say("\n");
    abort();
}

static void
lock(void)
{
    while (__atomic_test_and_set(&shim_lock, __ATOMIC_ACQUIRE)) {
        /* spin: the holder is another thread, never this one */
    }
}

static void
unlock(void)
{
    __atomic_clear(&shim_lock, __ATOMIC_RELEASE);
}

/* The bytes of a shadow's bitmap of pending lines. */
static size_t
bitmap_size(size_t size)
{
    return (size / LINE + 63) / 64 * sizeof(uint64_t);
}

/* Anonymous memory, from the real mmap(), given back only when a shadow
   grows; shared with forked children when share is true. */
static void *
anon_mapping(size_t size, int share)
{
    void *p;
    int flags = (share ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS
                | MAP_NORESERVE;
    size = (size + page_size - 1) & ~(page_size - 1);
    if (real_mmap != NULL) {
        p = real_mmap(NULL, size, PROT_READ | PROT_WRITE, flags, -1, 0);
    }
    else {
        p = (void *)syscall(SYS_mmap, NULL, size, PROT_READ | PROT_WRITE,
                            flags, -1, 0);
    }
    if (p == MAP_FAILED) {
        fatal("out of memory for a shadow");
    }
    return p;
}

static void *
anon(size_t size)
{
    return anon_mapping(size, 0);
}

/* libpmem's function name.  libpmem is loaded by the time libpmemobj calls
   any of these: by name, since it may be out of RTLD_NEXT's scope. */
static void *
pmem_symbol(const char *name)
{
    static void *handle;
    if (handle == NULL) {
        handle = dlopen("libpmem.so.1", RTLD_NOW | RTLD_NOLOAD);
        if (handle == NULL) {
            handle = dlopen("libpmem.so.1", RTLD_NOW);
        }
        if (handle == NULL) {
            fatal("cannot find libpmem.so.1");
        }
    }
    void *sym = dlsym(handle, name);
    if (sym == NULL) {
        fatal("libpmem.so.1 lacks a function");
    }
    return sym;
}

#define REAL(name) \
    (*({ if (real_##name == NULL) { \
             real_##name = (__typeof__(real_##name))pmem_symbol(#name); \
         } \
         real_##name; }))

/* Enter a hook that does its own work: not inside another hook.  1 if so
   (then leave() must follow), else 0. */
static inline int
enter(void)
{
    if (inside) {
        return 0;
    }
    inside = 1;
    return 1;
}

static inline void
leave(void)
{
    inside = 0;
}

/* A forked child models only what it makes durable itself: through the
   mappings that it makes (not those it inherited), with lines that it
   flushes (not those its parent flushed and did not drain), into the
   media that it shares with its parent.  It counts no point. */
static void
after_fork_in_child(void)
{
    in_child = 1;
    shim_lock = 0;                /* one thread here: nobody holds it */
    nmaps = 0;
    npending = 0;
    for (int i = 0; i < nfiles; i++) {
        memset(files[i].pending, 0, bitmap_size(files[i].size));
    }
}

static long
env_long(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? strtol(v, NULL, 0) : 0;
}

__attribute__((constructor)) static void
shim_init(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    if (ps > 0) {
        page_size = (size_t)ps;
    }
    real_mmap = (__typeof__(real_mmap))dlsym(RTLD_NEXT, "mmap");
    real_munmap = (__typeof__(real_munmap))dlsym(RTLD_NEXT, "munmap");
    real_msync = (__typeof__(real_msync))dlsym(RTLD_NEXT, "msync");
    real_fsync = (__typeof__(real_fsync))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (__typeof__(real_fdatasync))dlsym(RTLD_NEXT,
                                                        "fdatasync");
    pthread_atfork(NULL, NULL, after_fork_in_child);

    kill_at = env_long("PERSISTSHIM_KILL_AT");
    const char *when = getenv("PERSISTSHIM_WHEN");
    kill_before = when != NULL && strcmp(when, "before") == 0;
    const char *a = getenv("PERSISTSHIM_ARMED");
    armed = !(a != NULL && strcmp(a, "0") == 0);
    count_path = getenv("PERSISTSHIM_COUNT");
    pool_prefix = getenv("PERSISTSHIM_POOL");
    image_path = getenv("PERSISTSHIM_IMAGE");
    if (pool_prefix != NULL) {
        pool_prefix_len = strlen(pool_prefix);
    }
    if (pool_prefix_len > 0 && image_path != NULL && *image_path != '\0') {
        powerloss = 1;
        pendq = anon(MAX_PENDING * sizeof(pending_line));
    }
    const char *trace = getenv("PERSISTSHIM_TRACE");
    if (trace != NULL && *trace != '\0') {
        trace_fd = open(trace, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                        0600);
        trace_flushes = env_long("PERSISTSHIM_TRACE_FLUSHES") != 0;
    }
}

__attribute__((destructor)) static void
shim_fini(void)
{
    if (in_child || count_path == NULL || *count_path == '\0') {
        return;
    }
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%ld\n", count);
    int fd = open(count_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                  0600);
    if (fd >= 0) {
        (void)!write(fd, buf, (size_t)n);
        close(fd);
    }
}


/* --- the shadow (power-loss mode) ---------------------------------------- */

/* Read the file's bytes [from, to) into dst. */
static void
read_file(int fd, char *dst, size_t from, size_t to)
{
    while (from < to) {
        ssize_t n = pread(fd, dst + from, to - from, (off_t)from);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;                /* past the end: zeros, as mapped */
        }
        from += (size_t)n;
    }
}

/* The file open as fd has grown past its shadow s: the shadow grows to
   size bytes, the new part as the file holds it now. */
static void
grow_shadow(shadow *s, int fd, size_t size)
{
    size_t old = s->size;
    size = (size + LINE - 1) & ~(size_t)(LINE - 1);
    char *media = anon_mapping(size, 1), *staged = anon(size);
    uint64_t *pending = anon(bitmap_size(size));
    memcpy(media, s->media, old);
    memcpy(staged, s->staged, old);
    memcpy(pending, s->pending, bitmap_size(old));
    read_file(fd, media, old, size);
    real_munmap(s->media, old);
    real_munmap(s->staged, old);
    real_munmap(s->pending, bitmap_size(old));
    s->media = media;
    s->staged = staged;
    s->pending = pending;
    s->size = size;
}

/* The shadow of the file open as fd, made (from the file's contents) if
   this is its first mapping or sync, and grown with the file when make is
   true; -1 if the file is not a pool file. */
static int
file_of_fd(int fd, int make)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        return -1;
    }
    if (in_child) {
        make = 0;                 /* it would be the child's own */
    }
    for (int i = 0; i < nfiles; i++) {
        if (files[i].dev == st.st_dev && files[i].ino == st.st_ino) {
            if (make && (size_t)st.st_size > files[i].size) {
                grow_shadow(&files[i], fd, (size_t)st.st_size);
            }
            return i;
        }
    }
    if (!make) {
        return -1;
    }
    char link[64], path[4096];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n < 0 || (size_t)n < pool_prefix_len
        || memcmp(path, pool_prefix, pool_prefix_len) != 0)
    {
        return -1;
    }
    if (nfiles == MAX_FILES) {
        fatal("too many pool files");
    }
    shadow *s = &files[nfiles];
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->size = ((size_t)st.st_size + LINE - 1) & ~(size_t)(LINE - 1);
    s->media = anon_mapping(s->size, 1);   /* a forked child's too */
    s->staged = anon(s->size);
    s->pending = anon(bitmap_size(s->size));
    read_file(fd, s->media, 0, (size_t)st.st_size);
    return nfiles++;
}

/* Forget the mappings of [addr, addr + len), which was unmapped or mapped
   over: cut the records that overlap it. */
static void
forget(uintptr_t addr, size_t len)
{
    uintptr_t end = addr + len;
    for (int i = 0; i < nmaps; i++) {
        mapping m = maps[i];
        uintptr_t mend = m.addr + m.len;
        if (mend <= addr || end <= m.addr) {
            continue;
        }
        /* What is left of it: a part below, a part above, or none. */
        int left = m.addr < addr, right = mend > end;
        if (left) {
            maps[i].len = addr - m.addr;
        }
        if (right) {
            mapping r = {end, mend - end, m.off + (end - m.addr), m.file};
            if (left) {
                if (nmaps == MAX_MAPS) {
                    fatal("too many mappings");
                }
                maps[nmaps++] = r;
            }
            else {
                maps[i] = r;
            }
        }
        if (!left && !right) {
            maps[i--] = maps[--nmaps];
        }
    }
}

static void
track(void *addr, size_t len, int fd, off_t off)
{
    int f = file_of_fd(fd, 1);
    if (f < 0) {
        return;
    }
    if (nmaps == MAX_MAPS) {
        fatal("too many mappings");
    }
    len = (len + page_size - 1) & ~(page_size - 1);
    maps[nmaps++] = (mapping){(uintptr_t)addr, len, (uint64_t)off, f};
}

/* Call fn(file, file offset, address, length) for each piece of
   [addr, addr + len) that maps a shadowed file, clipped to the shadow. */
typedef void (*piece_fn)(shadow *s, uint64_t off, char *p, size_t n);

static void
for_pieces(uintptr_t addr, size_t len, piece_fn fn)
{
    uintptr_t end = addr + len;
    for (int i = 0; i < nmaps; i++) {
        mapping *m = &maps[i];
        uintptr_t lo = addr > m->addr ? addr : m->addr;
        uintptr_t hi = end < m->addr + m->len ? end : m->addr + m->len;
        if (lo >= hi) {
            continue;
        }
        shadow *s = &files[m->file];
        uint64_t off = m->off + (lo - m->addr);
        if (off >= s->size) {
            continue;
        }
        size_t n = hi - lo;
        if (off + n > s->size) {
            n = (size_t)(s->size - off);
        }
        fn(s, off, (char *)lo, n);
    }
}

/* Lines flushed: pending, as they are now.  Pieces are whole lines. */
static void
stage_piece(shadow *s, uint64_t off, char *p, size_t n)
{
    memcpy(s->staged + off, p, n);
    for (uint64_t line = off / LINE; line < (off + n) / LINE; line++) {
        uint64_t bit = (uint64_t)1 << (line % 64);
        if (!(s->pending[line / 64] & bit)) {
            s->pending[line / 64] |= bit;
            if (npending == MAX_PENDING) {
                fatal("too many lines flushed and not drained");
            }
            pendq[npending++] = (pending_line){(uint32_t)(s - files), line};
        }
    }
}

/* Pages synced: durable as they are now (a pending line too). */
static void
sync_piece(shadow *s, uint64_t off, char *p, size_t n)
{
    memcpy(s->media + off, p, n);
    for (uint64_t line = off / LINE; line < (off + n) / LINE; line++) {
        if (s->pending[line / 64] & ((uint64_t)1 << (line % 64))) {
            memcpy(s->staged + line * LINE, p + (line * LINE - off), LINE);
        }
    }
}

static void
model_flush(const void *addr, size_t len)
{
    if (trace_flushes && armed && !in_child && trace_fd >= 0) {
        char buf[80];
        int n = snprintf(buf, sizeof(buf), "flush %p %zu\n", addr, len);
        (void)!write(trace_fd, buf, (size_t)n);
    }
    if (!powerloss || nmaps == 0 || len == 0) {
        return;
    }
    uintptr_t lo = (uintptr_t)addr & ~(uintptr_t)(LINE - 1);
    uintptr_t hi = ((uintptr_t)addr + len + LINE - 1)
                   & ~(uintptr_t)(LINE - 1);
    lock();
    for_pieces(lo, hi - lo, stage_piece);
    unlock();
}

static void
model_drain(void)
{
    if (!powerloss) {
        return;
    }
    lock();
    for (size_t i = 0; i < npending; i++) {
        shadow *s = &files[pendq[i].file];
        uint64_t line = pendq[i].line;
        memcpy(s->media + line * LINE, s->staged + line * LINE, LINE);
        s->pending[line / 64] &= ~((uint64_t)1 << (line % 64));
    }
    npending = 0;
    unlock();
}

static void
model_sync_pages(const void *addr, size_t len)
{
    if (!powerloss || nmaps == 0 || len == 0) {
        return;
    }
    uintptr_t lo = (uintptr_t)addr & ~(uintptr_t)(page_size - 1);
    uintptr_t hi = ((uintptr_t)addr + len + page_size - 1)
                   & ~(uintptr_t)(page_size - 1);
    lock();
    for_pieces(lo, hi - lo, sync_piece);
    unlock();
}

/* fsync() of fd, a pool file: all of it is durable (its shadow made, if
   this is the file's first sync and it was never mapped). */
static void
model_sync_file(int fd)
{
    if (!powerloss) {
        return;
    }
    lock();
    int f = file_of_fd(fd, 1);
    if (f >= 0) {
        shadow *s = &files[f];
        read_file(fd, s->media, 0, s->size);
        for (size_t i = 0; i < npending; i++) {
            if (pendq[i].file == (uint32_t)f) {
                uint64_t at = pendq[i].line * LINE;
                memcpy(s->staged + at, s->media + at, LINE);
            }
        }
    }
    unlock();
}

/* The shadows, written where PERSISTSHIM_IMAGE says. */
static void
write_images(void)
{
    for (int i = 0; i < nfiles; i++) {
        char path[4096];
        if (i == 0) {
            snprintf(path, sizeof(path), "%s", image_path);
        }
        else {
            snprintf(path, sizeof(path), "%s.%d", image_path, i);
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
            say("persistshim: cannot write the image\n");
            continue;
        }
        const char *p = files[i].media;
        size_t n = files[i].size;
        while (n > 0) {
            ssize_t w = write(fd, p, n);
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                say("persistshim: cannot write the image\n");
                break;
            }
            p += w;
            n -= (size_t)w;
        }
        close(fd);
    }
}


/* --- persist points ------------------------------------------------------ */

static void
trace_point(long k, const char *what, const void *addr, size_t len)
{
    if (trace_fd < 0) {
        return;
    }
    char buf[160];
    int n = snprintf(buf, sizeof(buf), "point %ld %s %p %zu\n", k, what,
                     addr, len);
    (void)!write(trace_fd, buf, (size_t)n);
    void *frames[16];
    int depth = backtrace(frames, 16);
    /* Frame 0 is this function, 1 the point's bookkeeping, 2 the hook. */
    if (depth > 3) {
        backtrace_symbols_fd(frames + 3, depth - 3, trace_fd);
    }
}

static void
die(void)
{
    if (powerloss) {
        write_images();
    }
    raise(SIGKILL);
    _exit(137);                   /* not reached */
}

/* Before a point is performed: kill here if asked to. */
static void
point_before(const char *what, const void *addr, size_t len)
{
    if (armed && !in_child && kill_before && count + 1 == kill_at) {
        count++;
        trace_point(count, what, addr, len);
        die();
    }
}

/* After a point was performed: count it, kill here if asked to. */
static void
point_after(const char *what, const void *addr, size_t len)
{
    if (!armed || in_child) {
        return;
    }
    count++;
    trace_point(count, what, addr, len);
    if (!kill_before && count == kill_at) {
        die();
    }
}

EXPORT void
persist_shim_start(void)
{
    armed = 1;
}

EXPORT void
persist_shim_stop(void)
{
    armed = 0;
}

EXPORT long
persist_shim_count(void)
{
    return count;
}


/* --- libpmem ------------------------------------------------------------- */

EXPORT void
pmem_flush(const void *addr, size_t len)
{
    REAL(pmem_flush)(addr, len);
    if (enter()) {
        model_flush(addr, len);
        leave();
    }
}

/* Not a point: it flushes to a deeper domain, and orders nothing. */
EXPORT void
pmem_deep_flush(const void *addr, size_t len)
{
    REAL(pmem_deep_flush)(addr, len);
    if (enter()) {
        model_flush(addr, len);
        leave();
    }
}

EXPORT void
pmem_drain(void)
{
    if (!enter()) {
        REAL(pmem_drain)();
        return;
    }
    point_before("pmem_drain", NULL, 0);
    REAL(pmem_drain)();
    model_drain();
    point_after("pmem_drain", NULL, 0);
    leave();
}

EXPORT int
pmem_deep_drain(const void *addr, size_t len)
{
    if (!enter()) {
        return REAL(pmem_deep_drain)(addr, len);
    }
    point_before("pmem_deep_drain", addr, len);
    int r = REAL(pmem_deep_drain)(addr, len);
    model_drain();
    point_after("pmem_deep_drain", addr, len);
    leave();
    return r;
}

EXPORT void
pmem_persist(const void *addr, size_t len)
{
    if (!enter()) {
        REAL(pmem_persist)(addr, len);
        return;
    }
    point_before("pmem_persist", addr, len);
    REAL(pmem_persist)(addr, len);
    model_flush(addr, len);
    model_drain();
    point_after("pmem_persist", addr, len);
    leave();
}

EXPORT int
pmem_deep_persist(const void *addr, size_t len)
{
    if (!enter()) {
        return REAL(pmem_deep_persist)(addr, len);
    }
    point_before("pmem_deep_persist", addr, len);
    int r = REAL(pmem_deep_persist)(addr, len);
    model_flush(addr, len);
    model_drain();
    point_after("pmem_deep_persist", addr, len);
    leave();
    return r;
}

EXPORT int
pmem_msync(const void *addr, size_t len)
{
    if (!enter()) {
        return REAL(pmem_msync)(addr, len);
    }
    point_before("pmem_msync", addr, len);
    int r = REAL(pmem_msync)(addr, len);   /* its msync() is not a point */
    if (r == 0) {
        model_sync_pages(addr, len);
    }
    point_after("pmem_msync", addr, len);
    leave();
    return r;
}

/* The copies: the data flushed unless NOFLUSH, drained (a point) unless
   NODRAIN or NOFLUSH. */
static inline int
drains(unsigned flags)
{
    return !(flags & (PMEM_F_MEM_NODRAIN | PMEM_F_MEM_NOFLUSH));
}

static void
copied(void *dest, size_t len, unsigned flags, const char *what)
{
    if (!(flags & PMEM_F_MEM_NOFLUSH)) {
        model_flush(dest, len);
    }
    if (drains(flags)) {
        model_drain();
        point_after(what, dest, len);
    }
}

EXPORT void *
pmem_memcpy(void *dest, const void *src, size_t len, unsigned flags)
{
    if (!enter()) {
        return REAL(pmem_memcpy)(dest, src, len, flags);
    }
    if (drains(flags)) {
        point_before("pmem_memcpy", dest, len);
    }
    void *r = REAL(pmem_memcpy)(dest, src, len, flags);
    copied(dest, len, flags, "pmem_memcpy");
    leave();
    return r;
}

EXPORT void *
pmem_memmove(void *dest, const void *src, size_t len, unsigned flags)
{
    if (!enter()) {
        return REAL(pmem_memmove)(dest, src, len, flags);
    }
    if (drains(flags)) {
        point_before("pmem_memmove", dest, len);
    }
    void *r = REAL(pmem_memmove)(dest, src, len, flags);
    copied(dest, len, flags, "pmem_memmove");
    leave();
    return r;
}

EXPORT void *
pmem_memset(void *dest, int c, size_t len, unsigned flags)
{
    if (!enter()) {
        return REAL(pmem_memset)(dest, c, len, flags);
    }
    if (drains(flags)) {
        point_before("pmem_memset", dest, len);
    }
    void *r = REAL(pmem_memset)(dest, c, len, flags);
    copied(dest, len, flags, "pmem_memset");
    leave();
    return r;
}

/* The older fixed-flag forms, in terms of the above. */
EXPORT void *
pmem_memcpy_persist(void *dest, const void *src, size_t len)
{
    return pmem_memcpy(dest, src, len, 0);
}

EXPORT void *
pmem_memcpy_nodrain(void *dest, const void *src, size_t len)
{
    return pmem_memcpy(dest, src, len, PMEM_F_MEM_NODRAIN);
}

EXPORT void *
pmem_memmove_persist(void *dest, const void *src, size_t len)
{
    return pmem_memmove(dest, src, len, 0);
}

EXPORT void *
pmem_memmove_nodrain(void *dest, const void *src, size_t len)
{
    return pmem_memmove(dest, src, len, PMEM_F_MEM_NODRAIN);
}

EXPORT void *
pmem_memset_persist(void *dest, int c, size_t len)
{
    return pmem_memset(dest, c, len, 0);
}

EXPORT void *
pmem_memset_nodrain(void *dest, int c, size_t len)
{
    return pmem_memset(dest, c, len, PMEM_F_MEM_NODRAIN);
}


/* --- libc ---------------------------------------------------------------- */

static void *
do_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    void *r = real_mmap != NULL
              ? real_mmap(addr, len, prot, flags, fd, off)
              : (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
    if (r == MAP_FAILED || !powerloss || !enter()) {
        return r;
    }
    lock();
    if (nmaps > 0) {
        forget((uintptr_t)r, len);          /* mapped over */
    }
    if (fd >= 0 && !(flags & MAP_ANONYMOUS)
        && (flags & MAP_TYPE) != MAP_PRIVATE)
    {
        track(r, len, fd, off);
    }
    unlock();
    leave();
    return r;
}

EXPORT void *
mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return do_mmap(addr, len, prot, flags, fd, off);
}

EXPORT void *
mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return do_mmap(addr, len, prot, flags, fd, off);
}

EXPORT int
munmap(void *addr, size_t len)
{
    int r = real_munmap != NULL ? real_munmap(addr, len)
                                : (int)syscall(SYS_munmap, addr, len);
    if (r == 0 && powerloss && nmaps > 0 && enter()) {
        lock();
        forget((uintptr_t)addr, len);
        unlock();
        leave();
    }
    return r;
}

EXPORT int
msync(void *addr, size_t len, int flags)
{
    if (real_msync == NULL) {
        real_msync = (__typeof__(real_msync))dlsym(RTLD_NEXT, "msync");
    }
    if (!(flags & MS_SYNC) || !enter()) {
        return real_msync(addr, len, flags);
    }
    point_before("msync", addr, len);
    int r = real_msync(addr, len, flags);
    if (r == 0) {
        model_sync_pages(addr, len);
    }
    point_after("msync", addr, len);
    leave();
    return r;
}

/* Is fd open on a pool file (its path starts with PERSISTSHIM_POOL, or
   it is a file shadowed under an earlier name)? */
static int
is_pool_fd(int fd)
{
    if (pool_prefix_len == 0) {
        return 0;
    }
    char link[64], path[4096];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n >= 0 && (size_t)n >= pool_prefix_len
        && memcmp(path, pool_prefix, pool_prefix_len) == 0)
    {
        return 1;
    }
    if (!powerloss) {
        return 0;
    }
    lock();
    int f = file_of_fd(fd, 0);
    unlock();
    return f >= 0;
}

/* fsync() and fdatasync() are points for a pool file only (the pool's
   creation fsyncs a directory, which is no point of the pool's).  Without
   PERSISTSHIM_POOL, no file is a pool file. */
static int
do_fsync(int fd, int (*real)(int), const char *what)
{
    if (!enter()) {
        return real(fd);
    }
    int pool = is_pool_fd(fd);
    if (pool) {
        point_before(what, NULL, 0);
    }
    int r = real(fd);
    if (pool) {
        if (r == 0) {
            model_sync_file(fd);
        }
        point_after(what, NULL, 0);
    }
    leave();
    return r;
}

EXPORT int
fsync(int fd)
{
    if (real_fsync == NULL) {
        real_fsync = (__typeof__(real_fsync))dlsym(RTLD_NEXT, "fsync");
    }
    return do_fsync(fd, real_fsync, "fsync");
}

EXPORT int
fdatasync(int fd)
{
    if (real_fdatasync == NULL) {
        real_fdatasync = (__typeof__(real_fdatasync))dlsym(RTLD_NEXT,
                                                            "fdatasync");
    }
    return do_fsync(fd, real_fdatasync, "fdatasync");
}
