/* _pmem's pool file: creating it, the checks before libpmemobj opens it
 * (its identity, its header, its heap's metadata in a child, the lock of
 * another process), its root, the private copy that a forked child and a
 * closed pool read instead of the file, and read-only opens.
 */

#include "pool.h"

#include <sys/sendfile.h>         // sendfile()

/* --- fork() and close() --------------------------------------------------

   A pool is mapped shared, and the mapping holds the file open, and with
   it the pool's lock.  A forked child inherits the mapping: every write
   of the child (reference counts included) would reach the parent's
   objects and the file behind the parent's back, and the child would
   keep the pool locked after the parent is gone.  So the child gets each
   pool as it was at the fork, as a private copy at the same addresses,
   and the pool is marked forked there: its objects can be read, and any
   change raises PoolError (_PyPmem_RefuseChange()).  The parent waits for the
   copies to be made, so that none of its later writes reaches them.
   close() replaces the mapping the same way, which releases the lock
   while the objects stay readable.

   The copy takes the pages of the file that hold data; its holes stay
   zero pages, which are not allocated until written. */

PoolObject *_PyPmem_OpenPools = NULL;   /* linked by next_open */
static int checker_forking = 0;         /* check_metadata()'s fork */
static int fork_pipe[2] = {-1, -1};     /* the parent waits for its EOF */

/* Copy the data of the file behind [base, base + size) into copy.  fd is
   the file, opened again, or -1 (then everything is copied). */
static void
copy_data(char *copy, const char *base, size_t size, int fd)
{
    size_t pos = 0;
    while (fd >= 0 && pos < size) {
        off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) {
                return;           /* a hole up to the end */
            }
            break;                /* no SEEK_DATA here: copy the rest */
        }
        if ((size_t)data >= size) {
            return;
        }
        off_t hole = lseek(fd, data, SEEK_HOLE);
        size_t end = hole < 0 || (size_t)hole > size ? size : (size_t)hole;
        memcpy(copy + data, base + data, end - (size_t)data);
        pos = end;
    }
    if (pos < size) {
        memcpy(copy + pos, base + pos, size - pos);
    }
}

/* Replace p's shared mapping by a private copy at the same addresses,
   which holds neither the file nor its lock.  Only async-signal-safe
   calls: this runs in a forked child.  0; or -1 when there is no memory
   for the copy: then the mapping is a private mapping of the file, which
   the parent's later writes can still reach, or, failing that, left
   unreadable. */
int
_PyPmem_MakePrivate(PoolObject *p)
{
    char *base = (char *)p->pop;
    size_t size = p->size;
    /* A read-only pool maps a copy of its file, which has the data. */
    int fd = p->memfd >= 0 ? dup(p->memfd)
                           : open(p->cpath, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && p->memfd < 0
        && (fstat(fd, &st) < 0 || st.st_dev != p->dev
            || st.st_ino != p->ino))
    {
        close(fd);                /* another file has the name now */
        fd = -1;
    }
    int r = -1;
    char *copy = mmap(NULL, size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (copy != MAP_FAILED) {
        copy_data(copy, base, size, fd);
        if (mremap(copy, size, size, MREMAP_MAYMOVE | MREMAP_FIXED,
                   base) != MAP_FAILED)
        {
            r = 0;
        }
        else {
            (void)munmap(copy, size);
        }
    }
    if (r < 0 && (fd < 0 || mmap(base, size, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_FIXED, fd,
                                 0) == MAP_FAILED))
    {
        (void)mmap(base, size, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    }
    if (fd >= 0) {
        close(fd);
    }
    return r;
}

static void
before_fork(void)
{
    if (checker_forking) {
        return;
    }
    for (PoolObject *p = _PyPmem_OpenPools; p != NULL; p = p->next_open) {
        if ((!p->forked && !p->closed) || p->memfd >= 0) {
            if (pipe2(fork_pipe, O_CLOEXEC) < 0) {
                fork_pipe[0] = fork_pipe[1] = -1;
            }
            return;
        }
    }
}

static void
after_fork_in_parent(void)
{
    if (fork_pipe[1] < 0) {
        return;
    }
    close(fork_pipe[1]);
    char c;
    while (read(fork_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    close(fork_pipe[0]);
    fork_pipe[0] = fork_pipe[1] = -1;
}

static void
after_fork_in_child(void)
{
    if (checker_forking) {
        return;                   /* the checker maps nothing of ours */
    }
    for (PoolObject *p = _PyPmem_OpenPools; p != NULL; p = p->next_open) {
        if ((!p->forked && !p->closed) || p->memfd >= 0) {
            /* A read-only pool's copy is shared with the parent too. */
            (void)_PyPmem_MakePrivate(p);
        }
        /* The parent's read-only open holds the file's lock: the child's
           copy of the descriptor would hold it after the parent lets it
           go. */
        _PyPmem_CloseFiles(p);
        p->readonly = 0;
        /* The parent's transaction, if one was going on, stays the
           parent's: nothing of it is the child's to end. */
        p->forked = 1;
        p->depth = 0;
        p->owner = 0;
        p->held = 0;
        p->nsavepoints = 0;
        p->ntxfreed = 0;
        p->ntxmade = 0;
        p->ntouched = 0;
        p->touch_mark = 0;
        p->nranges = 0;
        p->overflow = 0;
        p->nreserved = 0;
        p->nmade = 0;
        p->undo_len = 0;
        p->doomed = 0;
        p->log_entries = 0;
    }
    _PyPmem_MyTransaction = NULL;
    if (fork_pipe[1] >= 0) {
        close(fork_pipe[0]);
        close(fork_pipe[1]);      /* the parent goes on */
        fork_pipe[0] = fork_pipe[1] = -1;
    }
}

/* The fork handlers, installed with the first pool.  0, or -1 with an
   exception set. */
int
_PyPmem_WatchForks(void)
{
    static int installed = 0;
    if (!installed) {
        int err = pthread_atfork(before_fork, after_fork_in_parent,
                                 after_fork_in_child);
        if (err != 0) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        installed = 1;
    }
    return 0;
}

/* Raise PoolError: p can be read, not changed, in this process. */
void
_PyPmem_RefuseChange(PoolObject *p)
{
    if (p->readonly && !p->closed) {
        PyErr_Format(p->error, "pool %R is open read-only: its objects can "
                     "be read, not changed (close it, and open it without "
                     "readonly=True once no other process reads it, to "
                     "change it)", p->path);
    }
    else if (p->forked && !p->readonly) {
        PyErr_Format(p->error, "pool %R belongs to process %d, which "
                     "opened it: a forked child sees the pool as it was at "
                     "the fork and can read it, not change it (return what "
                     "to store to the parent, or open the pool in a new "
                     "process once the parent has closed it)", p->path,
                     (int)p->opener);
    }
    else {
        PyErr_Format(p->error, "pool %R is closed: its objects can be "
                     "read, not changed", p->path);
    }
}

/* Raise PoolError when p is closed. */
int
_PyPmem_CheckOpen(PoolObject *self)
{
    if (self->closed) {
        PyErr_Format(self->error, "pool %R is closed", self->path);
        return -1;
    }
    return 0;
}

/* --- creating and opening ------------------------------------------------ */

/* Create a pool at path: under a temporary name, renamed into place
   once complete.  0, or -1 with an exception set. */
int
_PyPmem_CreatePool(PyObject *error, PyObject *path, const char *cpath,
                   size_t size)
{
    PyObject *tmp = PyUnicode_FromFormat("%U.creating", path);
    if (tmp == NULL) {
        return -1;
    }
    PyObject *tmp_bytes = PyUnicode_EncodeFSDefault(tmp);
    Py_DECREF(tmp);
    if (tmp_bytes == NULL) {
        return -1;
    }
    const char *ctmp = PyBytes_AS_STRING(tmp_bytes);
    int r = -1;
    /* What a crash during an earlier creation left. */
    (void)unlink(ctmp);
    PMEMobjpool *pop = pmemobj_create(ctmp, POOL_LAYOUT, size, 0600);
    if (pop == NULL) {
        _PyPmem_SetError(error, path, "cannot create pool");
        goto done;
    }
    PMEMoid root_oid = pmemobj_root(pop, sizeof(struct pool_root));
    if (OID_IS_NULL(root_oid)) {
        _PyPmem_SetError(error, path, "cannot create pool");
        pmemobj_close(pop);
        (void)unlink(ctmp);
        goto done;
    }
    struct pool_root *root = pmemobj_direct(root_oid);
    memcpy(root->magic, POOL_MAGIC, sizeof(root->magic));
    root->format = POOL_FORMAT;
    root->root_size = sizeof(struct pool_root);
    pmemobj_persist(pop, root, sizeof(*root));
    pmemobj_close(pop);
    if (rename(ctmp, cpath) < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        (void)unlink(ctmp);
        goto done;
    }
    /* The rename itself must reach the disk before the pool is used. */
    PyObject *dir = NULL;
    const char *slash = strrchr(cpath, '/');
    dir = slash == NULL ? PyBytes_FromString(".")
                        : PyBytes_FromStringAndSize(cpath, slash - cpath + 1);
    if (dir == NULL) {
        goto done;
    }
    int fd = open(PyBytes_AS_STRING(dir), O_RDONLY | O_DIRECTORY);
    Py_DECREF(dir);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    r = 0;
done:
    Py_DECREF(tmp_bytes);
    return r;
}

/* Whether the lock of the file at path, which libpmemobj could not take,
   is held shared: by readers (read-only opens, copies), not a writer. */
static int
read_by_others(PyObject *path)
{
    PyObject *bytes = PyUnicode_EncodeFSDefault(path);
    if (bytes == NULL) {
        PyErr_Clear();
        return 0;
    }
    int fd = open(PyBytes_AS_STRING(bytes), O_RDONLY | O_CLOEXEC);
    Py_DECREF(bytes);
    if (fd < 0) {
        return 0;
    }
    int shared = flock(fd, LOCK_SH | LOCK_NB) == 0;
    close(fd);                    /* and the lock with it */
    return shared;
}

/* Why libpmemobj refused to open path, as a PoolError. */
void
_PyPmem_OpenError(PyObject *error, PyObject *path, int err, const char *msg)
{
    if (err == EAGAIN || err == EWOULDBLOCK) {
        if (read_by_others(path)) {
            PyErr_Format(error, "pool %R is open read-only in another "
                         "process (or being copied): it opens for writing "
                         "once every process that reads it has closed it "
                         "(a pool has one writer, or any number of "
                         "readers)", path);
        }
        else {
            PyErr_Format(error, "pool %R is open in another process; a "
                         "pool has one writer at a time", path);
        }
    }
    else if (err == ENOENT) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_FileNotFoundError, path);
    }
    else if (msg != NULL && strstr(msg, "layout") != NULL) {
        PyErr_Format(error, "%R is a libpmemobj pool of another program "
                     "(another layout), not a pmem-python pool: %s",
                     path, msg);
    }
    else {
        PyErr_Format(error, "%R is not a valid pmem-python pool (foreign, "
                     "truncated or corrupt file): %s", path,
                     msg != NULL && msg[0] != '\0' ? msg : strerror(err));
    }
}

/* The time the check of a pool of size bytes may take: 5 seconds, and 1
   more per 16 MiB (here it checks 64 MiB in a tenth of a second). */
#define CHECK_SECONDS(size) (5u + (unsigned int)((size) >> 24))

#ifndef Py_DEBUG
static int
walked(char *Py_UNUSED(block), uint64_t Py_UNUSED(type_num),
       void *Py_UNUSED(arg))
{
    return 0;
}
#endif

/* Does the heap walk (heapcheck.c) list pop's allocations?  The open
   lists them so, or with libpmemobj's pmemobj_next() where the walk does
   not know the metadata (and with both in the debug build): the checker
   walks as the open will. */
static int
heap_walks(PMEMobjpool *pop, size_t size)
{
#ifdef Py_DEBUG
    return 0;
#else
    return _PyPmem_WalkHeap(pop, size, walked, NULL) == 0;
#endif
}

/* The checker child: pmemobj_check(), then (the pool opened, so its logs
   replayed) _PyPmem_CheckHeap() and a walk of every allocation; errno and
   a message written to fd, the verdict in the exit status. */
static void _Py_NO_RETURN
run_checker(int fd, pid_t parent, const char *cpath, size_t size)
{
    /* The check holds the pool's lock: it must not outlive the process
       that asked for it (killed while opening, that one would leave the
       pool locked until the check ends). */
#ifdef __linux__
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    if (getppid() != parent) {
        _exit(2);                 /* the parent died before the prctl() */
    }
    /* A crash is an answer here, not for faulthandler to report. */
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    signal(SIGABRT, SIG_DFL);
    signal(SIGFPE, SIG_DFL);
    /* Nor is a check that never ends (a cycle in corrupt metadata): a
       generous time for the pool's size. */
    signal(SIGALRM, SIG_DFL);
    alarm(CHECK_SECONDS(size));
    int ok = pmemobj_check(cpath, POOL_LAYOUT);
    int err = errno;
    const char *msg = ok < 0 ? pmemobj_errormsg() : "";
    int status = ok == 1 ? 0 : ok == 0 ? 1 : 2;
    char why[256];
    if (ok == 1) {
        /* The open will walk every allocation, and the first commit will
           read chunk headers and logs that the check leaves out: corrupt
           ones can make libpmemobj loop or crash, so first here.  A
           failure to open is for the parent to report. */
        PMEMobjpool *pop = pmemobj_open(cpath, POOL_LAYOUT);
        if (pop != NULL) {
            if (_PyPmem_CheckHeap(pop, size, why, sizeof(why)) < 0) {
                msg = why;
                status = 3;
            }
            else if (!heap_walks(pop, size)) {
                PMEMoid oid;
                POBJ_FOREACH(pop, oid) {
                    (void)pmemobj_alloc_usable_size(oid);
                }
            }
            pmemobj_close(pop);
        }
    }
    (void)!write(fd, &err, sizeof(err));
    (void)!write(fd, msg, strlen(msg));
    _exit(status);
}

/* What the checker child wrote to fd, up to its end (bufsize - 1 bytes
   at most); the number of bytes read. */
static size_t
read_report(int fd, char *buf, size_t bufsize)
{
    size_t got = 0;
    ssize_t n;
    while (got < bufsize - 1
           && (n = read(fd, buf + got, bufsize - 1 - got)) != 0)
    {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        got += (size_t)n;
    }
    return got;
}

/* The checker's verdict (its wait status, and its report of got bytes in
   buf) as PoolError.  0 for a consistent pool, or -1. */
static int
checker_verdict(PyObject *error, PyObject *path, size_t size, int status,
                char *buf, size_t got)
{
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
        PyErr_Format(error, "pool %R is corrupt: checking its metadata "
                     "did not end in %u seconds", path, CHECK_SECONDS(size));
        return -1;
    }
    if (WIFSIGNALED(status)) {
        PyErr_Format(error, "pool %R is corrupt: checking its metadata "
                     "crashed libpmemobj (signal %d)", path,
                     WTERMSIG(status));
        return -1;
    }
    int err = 0;
    if (got >= sizeof(err)) {
        memcpy(&err, buf, sizeof(err));
    }
    buf[got] = '\0';
    const char *msg = got > sizeof(err) ? buf + sizeof(err) : "";
    switch (WEXITSTATUS(status)) {
    case 0:
        return 0;
    case 1:
        PyErr_Format(error, "pool %R is corrupt: libpmemobj found its "
                     "metadata inconsistent", path);
        return -1;
    case 3:
        PyErr_Format(error, "pool %R is corrupt: its heap metadata is "
                     "inconsistent (%s)", path, msg);
        return -1;
    default:
        _PyPmem_OpenError(error, path, err, msg);
        return -1;
    }
}

/* libpmemobj's check of a pool's metadata, in a child process: on some
   corrupt heaps pmemobj_check() itself crashes, and that must not kill
   the interpreter.  The child reports pmemobj_check()'s result in its
   exit status (0 consistent, 1 inconsistent, 2 an error), or 3 when
   _PyPmem_CheckHeap() finds what the check leaves out inconsistent, and
   errno and a message (libpmemobj's or that check's) through a pipe.
   0, or -1 with an exception set. */
static int
check_metadata(PyObject *error, PyObject *path, const char *cpath,
               size_t size)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    pid_t parent = getpid();
    checker_forking = 1;
    pid_t pid = fork();
    checker_forking = 0;
    if (pid == 0) {
        close(fds[0]);
        run_checker(fds[1], parent, cpath, size);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    char buf[512];
    size_t got = read_report(fds[0], buf, sizeof(buf));
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    return checker_verdict(error, path, size, status, buf, got);
}

/* A process that held the pool's lock and was killed (or whose open's
   checker was killed with it) lets it go as it exits, which can take a
   moment after its parent sees it dead: the open waits up to LOCK_WAIT
   milliseconds for the lock, as libpmemobj takes it (flock()), before it
   tries; a pool that stays locked is open in another process. */
#define LOCK_WAIT 1000

void
_PyPmem_WaitForLock(const char *cpath)
{
    int fd = open(cpath, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;                   /* for the open to report */
    }
    Py_BEGIN_ALLOW_THREADS
    for (int waited = 0; ; waited += 10) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            (void)flock(fd, LOCK_UN);
            break;
        }
        if ((errno != EWOULDBLOCK && errno != EINTR) || waited >= LOCK_WAIT) {
            break;
        }
        struct timespec ten_ms = {0, 10 * 1000 * 1000};
        (void)nanosleep(&ten_ms, NULL);
    }
    Py_END_ALLOW_THREADS
    close(fd);
}

/* Before libpmemobj maps a file, which it does not expect to be foreign:
   the file must be as large as a pool and start with a pool header's
   signature, and libpmemobj's own check of its metadata must pass.
   0, or -1 with an exception set. */
int
_PyPmem_CheckFile(PyObject *error, PyObject *path, const char *cpath)
{
    static const char signature[8] = "PMEMOBJ";   /* with its NUL */
    char head[sizeof(signature)];
    int fd = open(cpath, O_RDONLY);
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(
            errno == ENOENT ? PyExc_FileNotFoundError : PyExc_OSError, path);
        return -1;
    }
    struct stat st;
    ssize_t n = fstat(fd, &st) == 0 ? read(fd, head, sizeof(head)) : -1;
    close(fd);
    if (n < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        return -1;
    }
    if (n < (ssize_t)sizeof(head)
        || memcmp(head, signature, sizeof(signature)) != 0)
    {
        PyErr_Format(error, "%R is not a pmem-python pool: it does not "
                     "start with a libpmemobj pool header", path);
        return -1;
    }
    if ((size_t)st.st_size < PMEMOBJ_MIN_POOL) {
        PyErr_Format(error, "pool %R is truncated: %lld bytes, a pool has "
                     "%zu at least", path, (long long)st.st_size,
                     (size_t)PMEMOBJ_MIN_POOL);
        return -1;
    }
    return check_metadata(error, path, cpath, (size_t)st.st_size);
}

/* The identity of the pool file at cpath: its status in *st and its
   header's pool set UUID in uuid (POOL_HDR_UUID_SIZE bytes).  1, or 0
   when the file cannot be read or is too short for a pool header (for
   the open's checks to report). */
int
_PyPmem_ReadIdentity(const char *cpath, struct stat *st, unsigned char *uuid)
{
    int fd = open(cpath, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    ssize_t n = fstat(fd, st) == 0
                ? pread(fd, uuid, POOL_HDR_UUID_SIZE, POOL_HDR_POOLSET_UUID)
                : -1;
    close(fd);
    return n == POOL_HDR_UUID_SIZE;
}

/* Whether the file of identity (st, uuid) is pool p, which this process
   has mapped: 1 when it is p's file (under another name), 2 when it has
   p's identity (a raw copy: cp copies the header), else 0. */
int
_PyPmem_SamePool(PoolObject *p, const struct stat *st,
                 const unsigned char *uuid)
{
    if (p->pop == NULL) {
        return 0;                 /* let go: libpmemobj closed it */
    }
    if (st->st_dev == p->dev && st->st_ino == p->ino) {
        return 1;
    }
    return memcmp(uuid, p->uuid, POOL_HDR_UUID_SIZE) == 0 ? 2 : 0;
}

/* Refuse the file at cpath when it is a pool that this process has
   mapped already: the same file under another name, or a raw copy of one
   (cp copies the header, and with it the pool set UUID by which
   libpmemobj identifies an open pool: it refuses a second pool of that
   identity in the process, and reports it as an invalid file).  0, or -1
   with PoolError set. */
int
_PyPmem_CheckIdentity(PyObject *error, PyObject *path, const char *cpath)
{
    struct stat st;
    unsigned char uuid[POOL_HDR_UUID_SIZE];
    if (!_PyPmem_ReadIdentity(cpath, &st, uuid)) {
        return 0;
    }
    for (PoolObject *p = _PyPmem_OpenPools; p != NULL; p = p->next_open) {
        int same = _PyPmem_SamePool(p, &st, uuid);
        if (!same) {
            continue;
        }
        const char *state = p->forked && !p->readonly
            ? "which this process has from its parent (a forked child "
              "keeps its parent's pools until it exits)"
            : p->readonly && !p->closed
            ? "which is open read-only in this process"
            : p->closed
            ? "which this process has closed but still holds objects of "
              "(a closed pool is let go once none of its objects is held)"
            : "which is open in this process";
        if (same == 1) {
            PyErr_Format(error, "%R is pool %R, %s, under another name "
                         "(a link to the same file): use that pool",
                         path, p->path, state);
        }
        else {
            PyErr_Format(error, "%R is a raw copy of pool %R, %s: a copy "
                         "made by copying the file (cp) keeps its "
                         "original's identity, and a process can open one "
                         "pool of an identity at a time.  Make copies that "
                         "open beside their original with pmem.copy(src, "
                         "dst) or python -m pmem copy SRC DST; open this "
                         "one in another process, or close the original "
                         "here first", path, p->path, state);
        }
        return -1;
    }
    return 0;
}

/* The pool file at cpath opened by libpmemobj, after the checks that
   come before (another process's lock, the same pool mapped here, a
   foreign file) and with its root checked against the file's size: what
   pmem.open() does before its pass over the objects.  NULL with
   PoolError set. */
PMEMobjpool *
_PyPmem_OpenFile(PyObject *error, PyObject *path, const char *cpath,
                 size_t size)
{
    if (_PyPmem_CheckIdentity(error, path, cpath) < 0) {
        return NULL;
    }
    _PyPmem_WaitForLock(cpath);
    if (_PyPmem_CheckFile(error, path, cpath) < 0) {
        return NULL;
    }
    PMEMobjpool *pop = pmemobj_open(cpath, POOL_LAYOUT);
    if (pop == NULL) {
        _PyPmem_OpenError(error, path, errno, pmemobj_errormsg());
        return NULL;
    }
    if (_PyPmem_CheckRoot(error, path, pop, size) < 0) {
        pmemobj_close(pop);
        return NULL;
    }
    return pop;
}

/* --- read-only opens ------------------------------------------------------

   libpmemobj locks a pool's file exclusively (flock) for as long as it
   maps it, copy-on-write opens (PMEMOBJ_COW) included, so that two
   processes cannot map it at once.  A read-only open takes the lock
   shared, with a descriptor of its own that it keeps until close():
   readers share the file, and a writer's open (libpmemobj's exclusive
   lock) fails while they read.  Under that lock it copies the file's
   data into an unnamed memory file (memfd) and lets libpmemobj open the
   copy through /proc/self/fd: what the open changes -- the recovery of a
   transaction that a crash left, the open pass's pointers and counts --
   is the copy's, and the file is never written.  Then the pool is marked
   forked: every change is refused (_PyPmem_RefuseChange()), as in a
   forked child.  The copy costs memory for the file's data, and a second
   or so per gigabyte. */

/* The file at cpath, open with its lock taken shared (waited for up to
   LOCK_WAIT milliseconds, as an open waits for a process that exits).
   A descriptor, or -1 with an exception set. */
static int
lock_shared(PyObject *error, PyObject *path, const char *cpath)
{
    int fd = open(cpath, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(
            errno == ENOENT ? PyExc_FileNotFoundError : PyExc_OSError, path);
        return -1;
    }
    int locked, err = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int waited = 0; ; waited += 10) {
        locked = flock(fd, LOCK_SH | LOCK_NB) == 0;
        err = errno;
        if (locked || (err != EWOULDBLOCK && err != EINTR)
            || waited >= LOCK_WAIT)
        {
            break;
        }
        struct timespec ten_ms = {0, 10 * 1000 * 1000};
        (void)nanosleep(&ten_ms, NULL);
    }
    Py_END_ALLOW_THREADS
    if (locked) {
        return fd;
    }
    close(fd);
    if (err == EWOULDBLOCK || err == EINTR) {
        PyErr_Format(error, "pool %R is open for writing in another "
                     "process: it can be read once that process has "
                     "closed it (a pool has one writer, or any number of "
                     "readers)", path);
    }
    else {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    }
    return -1;
}

/* Copy the data of the file fd (size bytes) into the file out, which is
   as large: its holes are left out.  0, or -1 with errno set. */
static int
copy_file_data(int fd, int out, size_t size)
{
    size_t pos = 0;
    while (pos < size) {
        off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
        off_t hole;
        if (data < 0 && errno == ENXIO) {
            return 0;             /* a hole to the end */
        }
        if (data < 0) {
            data = (off_t)pos;    /* no SEEK_DATA: copy the rest */
            hole = (off_t)size;
        }
        else {
            hole = lseek(fd, data, SEEK_HOLE);
            if (hole < 0 || (size_t)hole > size) {
                hole = (off_t)size;
            }
        }
        off_t at = data;
        if (lseek(out, data, SEEK_SET) < 0) {
            return -1;
        }
        while (at < hole) {
            ssize_t n = sendfile(out, fd, &at, (size_t)(hole - at));
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                if (n == 0) {
                    errno = EIO;  /* the file is shorter than it was */
                }
                return -1;
            }
        }
        pos = (size_t)hole;
    }
    return 0;
}

/* The pool file at cpath (size bytes) opened read-only: its lock taken
   shared, its data copied into a memory file, which libpmemobj opens
   after the checks of an open (_PyPmem_OpenFile()).  The descriptors of
   the file (holding its lock) and of the copy go to *plock_fd and
   *pmemfd.  NULL with an exception set. */
PMEMobjpool *
_PyPmem_OpenSnapshot(PyObject *error, PyObject *path, const char *cpath,
                     size_t size, int *plock_fd, int *pmemfd)
{
    if (_PyPmem_CheckIdentity(error, path, cpath) < 0) {
        return NULL;
    }
    int lock_fd = lock_shared(error, path, cpath);
    if (lock_fd < 0) {
        return NULL;
    }
    PMEMobjpool *pop = NULL;
    struct stat st;
    int memfd = memfd_create("pmem-python read-only pool", MFD_CLOEXEC);
    if (memfd < 0 || fstat(lock_fd, &st) < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        goto fail;
    }
    if ((size_t)st.st_size != size) {
        PyErr_Format(error, "pool %R changed size while it was opened "
                     "(a grow): open it again", path);
        goto fail;
    }
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = ftruncate(memfd, (off_t)size) == 0
        ? copy_file_data(lock_fd, memfd, size) : -1;
    Py_END_ALLOW_THREADS
    if (r < 0) {
        PyErr_Format(error, "cannot open pool %R read-only: its copy in "
                     "memory (%zu bytes) failed: %s", path, size,
                     strerror(errno));
        goto fail;
    }
    char copy[64];
    PyOS_snprintf(copy, sizeof(copy), "/proc/self/fd/%d", memfd);
    if (_PyPmem_CheckFile(error, path, copy) < 0) {
        goto fail;
    }
    pop = pmemobj_open(copy, POOL_LAYOUT);
    if (pop == NULL) {
        _PyPmem_OpenError(error, path, errno, pmemobj_errormsg());
        goto fail;
    }
    if (_PyPmem_CheckRoot(error, path, pop, size) < 0) {
        pmemobj_close(pop);
        pop = NULL;
        goto fail;
    }
    *plock_fd = lock_fd;
    *pmemfd = memfd;
    return pop;
fail:
    if (memfd >= 0) {
        close(memfd);
    }
    close(lock_fd);
    return NULL;
}

/* Close what a read-only open keeps open: the file, which lets its lock
   go, and the copy's memory file (its mapping stays, private to this
   process, which nothing but a fork() would share). */
void
_PyPmem_CloseFiles(PoolObject *p)
{
    if (p->lock_fd >= 0) {
        close(p->lock_fd);
        p->lock_fd = -1;
    }
    if (p->memfd >= 0) {
        close(p->memfd);
        p->memfd = -1;
    }
}

/* Check the root of an open pool: 0, or -1 with PoolError set. */
int
_PyPmem_CheckRoot(PyObject *error, PyObject *path, PMEMobjpool *pop,
                  size_t size)
{
    size_t root_size = pmemobj_root_size(pop);
    if (root_size < offsetof(struct pool_root, namespace)) {
        PyErr_Format(error, "%R is not a pmem-python pool: it has no root "
                     "(a crash while it was created, or another program)",
                     path);
        return -1;
    }
    struct pool_root *root = pmemobj_direct(pmemobj_root(pop, root_size));
    /* The root's place is not under the header's checksum. */
    if ((char *)root < (char *)pop || root_size > size
        || (size_t)((char *)root - (char *)pop) > size - root_size)
    {
        PyErr_Format(error, "pool %R is corrupt: its root lies outside it",
                     path);
        return -1;
    }
    if (memcmp(root->magic, POOL_MAGIC, sizeof(root->magic)) != 0) {
        PyErr_Format(error, "%R is not a pmem-python pool: bad magic in "
                     "its root", path);
        return -1;
    }
    if (root->format == POOL_FORMAT_PY311) {
        PyErr_Format(error, "pool %R has format version %d, written by "
                     "pmem-python on CPython 3.11, whose objects have "
                     "other layouts; this interpreter (CPython %s) reads "
                     "format %d only.  Export its data with the 3.11 "
                     "build ('python -m pmem dump --json %U') and load "
                     "it here", path, POOL_FORMAT_PY311, PY_VERSION,
                     POOL_FORMAT, path);
        return -1;
    }
    if (root->format == POOL_FORMAT_3 || root->format == POOL_FORMAT_4
        || root->format == POOL_FORMAT_5 || root->format == POOL_FORMAT_6
        || root->format == POOL_FORMAT_7)
    {
        root->format = POOL_FORMAT;
        pmemobj_persist(pop, &root->format, sizeof(root->format));
    }
    if (root->format != POOL_FORMAT) {
        PyErr_Format(error, "pool %R has format version %u; this "
                     "interpreter reads version %d only", path,
                     (unsigned int)root->format, POOL_FORMAT);
        return -1;
    }
    if (root->root_size != root_size || root_size != sizeof(*root)) {
        PyErr_Format(error, "pool %R is corrupt: its root has %zu bytes, "
                     "format %d has %zu", path, root_size, POOL_FORMAT,
                     sizeof(*root));
        return -1;
    }
    return 0;
}

/* A container that the root holds (the namespace, the type table), made
   on first use.  A new reference, or NULL with an exception set. */
PyObject *
_PyPmem_RootContainer(PoolObject *self, uint64_t *field,
                      PyObject *(*make)(void))
{
    if (_PyPmem_CheckOpen(self) < 0) {
        return NULL;
    }
    char *base = (char *)self->pop;
    if (*field != 0) {
        return Py_NewRef((PyObject *)(base + *field));
    }
    if (self->sm.begin(&self->sm, NULL) < 0) {
        return NULL;
    }
    PyObject *obj = NULL;
    if (PyStorage_PushPlacement(&self->sm) == 0) {
        obj = make();
        (void)PyStorage_PopPlacement(&self->sm);
    }
    if (obj != NULL
        && self->sm.modify(&self->sm, field, sizeof(*field)) == 0)
    {
        /* The root's reference: it lives as long as the pool. */
        *field = (uint64_t)((char *)obj - base);
        Py_INCREF(obj);
    }
    else {
        Py_CLEAR(obj);
    }
    if (self->sm.end(&self->sm, obj != NULL) < 0) {
        Py_CLEAR(obj);
    }
    return obj;
}
