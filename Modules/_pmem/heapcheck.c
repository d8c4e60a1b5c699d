/* heapcheck.c: the part of libpmemobj's heap metadata (and of its lanes'
 * undo logs) that pmemobj_check() leaves unchecked.
 *
 * pmemobj_check() verifies the heap header and, in every zone, the header
 * of each chunk that starts a block: its type, its flags, and that the
 * blocks' sizes add up to the zone's.  It does not read the headers of a
 * run's further chunks (type RUN_DATA, each holding its distance back to
 * the run's first chunk), nor a run's block size and alignment.
 * libpmemobj reads them when it frees or allocates in the run, and trusts
 * them: a corrupt one makes it index outside the heap or divide by zero
 * (both found by Tools/pmem/crash/fuzz.py, inside the first commit after
 * the open).  The checker child of file.c (check_metadata()) runs this
 * check after pmemobj_open() has replayed the logs, so that such a pool is
 * refused with PoolError before the interpreter uses it.
 *
 * What it knows of the file is the on-media format of PMDK 1.12: the pool
 * descriptor after the 4 KiB pool header (the layout name, then the lanes'
 * and the heap's offsets), and heap format 1.0 (src/libpmemobj/
 * heap_layout.h): a 1 KiB heap header, then zones of a 64-byte header, an
 * array of MAX_CHUNK 8-byte chunk headers and up to MAX_CHUNK chunks of
 * 256 KiB.  The check is stricter than libpmemobj only where libpmemobj
 * itself never writes the value refused.  Headers that libpmemobj rebuilds
 * before it reads them are not checked: a multi-chunk block's footer, the
 * interior headers of free and used blocks, a zone that is not yet
 * initialised (magic 0).
 */

#include "heapcheck.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define POOL_HDR_SIZE 4096
#define DESC_LAYOUT_SIZE 1024             /* PMEMOBJ_MAX_LAYOUT */
#define DESC_LANES_OFFSET (POOL_HDR_SIZE + DESC_LAYOUT_SIZE)
#define DESC_NLANES (DESC_LANES_OFFSET + 8)
#define DESC_HEAP_OFFSET (POOL_HDR_SIZE + DESC_LAYOUT_SIZE + 16)

/* A lane (src/libpmemobj/lane.h): two redo logs, then the undo log, each
   a 64-byte header and its first capacity of entries; a log that needs
   more continues in blocks of the heap (next). */
#define ULOG_HEADER_SIZE 64
#define LANE_UNDO_OFFSET (ULOG_HEADER_SIZE + 192 + ULOG_HEADER_SIZE + 640)
#define LANE_UNDO_SIZE 2048
#define LANE_TOTAL_SIZE (LANE_UNDO_OFFSET + ULOG_HEADER_SIZE + LANE_UNDO_SIZE)
#define ULOG_MAX_LINKS 65536              /* more is a cycle */

struct ulog_header {
    uint64_t checksum;
    uint64_t next;                        /* offset of the next part, or 0 */
    uint64_t capacity;                    /* bytes of entries */
    uint64_t gen_num;
    uint64_t flags;
};

#define HEAP_SIGNATURE "MEMORY_HEAP_HDR"  /* 16 bytes with its NUL */
#define HEAP_MAJOR 1
#define HEAP_HEADER_SIZE 1024
#define ZONE_HEADER_MAGIC 0xC3F0A2D2u
#define ZONE_HEADER_SIZE 64
#define MAX_CHUNK _PyPmem_ZONE_CHUNKS
#define CHUNKSIZE _PyPmem_CHUNK_SIZE
#define ZONE_META_SIZE ((uint64_t)ZONE_HEADER_SIZE + 8 * (uint64_t)MAX_CHUNK)
#define ZONE_MIN_SIZE (ZONE_META_SIZE + CHUNKSIZE)
#define ZONE_MAX_SIZE (ZONE_META_SIZE + CHUNKSIZE * MAX_CHUNK)
_Static_assert(ZONE_MAX_SIZE == _PyPmem_ZONE_SIZE, "the zones' size");

enum {
    CHUNK_TYPE_FREE = 2,
    CHUNK_TYPE_USED = 3,
    CHUNK_TYPE_RUN = 4,
    CHUNK_TYPE_RUN_DATA = 5,
};
#define CHUNK_FLAG_ALIGNED 0x4
#define CHUNK_FLAG_FLEX_BITMAP 0x8
#define CHUNK_FLAGS_ALL_VALID 0xF

/* A run starts with its block size and alignment; its bitmap follows. */
#define RUN_HEADER_SIZE 16
#define RUN_CONTENT_SIZE(size_idx) \
    (CHUNKSIZE - RUN_HEADER_SIZE + ((uint64_t)(size_idx) - 1) * CHUNKSIZE)
#define RUN_DEFAULT_BITMAP_SIZE (38 * 8)

struct heap_header {
    char signature[16];
    uint64_t major;
    uint64_t minor;
    uint64_t unused;
    uint64_t chunksize;
    uint64_t chunks_per_zone;
};

struct zone_header {
    uint32_t magic;
    uint32_t size_idx;
};

struct chunk_header {
    uint16_t type;
    uint16_t flags;
    uint32_t size_idx;
};

struct run_header {
    uint64_t block_size;
    uint64_t alignment;
};

/* The number of blocks libpmemobj finds in a run, computed as it does
   (memblock_run_bitmap()), with 0 for none: a run whose count would be
   negative makes it walk a bitmap of 2**32 bits. */
static uint64_t
run_nblocks(const struct chunk_header *hdr, const struct run_header *run)
{
    uint64_t aligned = (hdr->flags & CHUNK_FLAG_ALIGNED) != 0;
    uint64_t n;
    if (hdr->flags & CHUNK_FLAG_FLEX_BITMAP) {
        uint64_t content = RUN_CONTENT_SIZE(hdr->size_idx);
        uint64_t nvalues = (content / run->block_size + 63) / 64;
        /* The bitmap and the run header end on a cache line. */
        nvalues = ((nvalues + 2 + 7) & ~(uint64_t)7) - 2;
        if (nvalues * 8 >= content) {
            return 0;
        }
        n = (content - nvalues * 8) / run->block_size;
    }
    else {
        n = (RUN_CONTENT_SIZE(hdr->size_idx) - RUN_DEFAULT_BITMAP_SIZE)
            / run->block_size;
    }
    return n > aligned ? n - aligned : 0;
}

/* The blocks of zone z, which holds size_idx chunks: 0, or -1 with what is
   wrong in why. */
static int
check_zone(const char *zone, unsigned int z, uint32_t size_idx,
           char *why, size_t whylen)
{
    const struct chunk_header *hdrs =
        (const struct chunk_header *)(zone + ZONE_HEADER_SIZE);
    const char *chunks = zone + ZONE_META_SIZE;
    uint32_t i = 0;
    while (i < size_idx) {
        const struct chunk_header *hdr = &hdrs[i];
        if (hdr->type != CHUNK_TYPE_FREE && hdr->type != CHUNK_TYPE_USED
            && hdr->type != CHUNK_TYPE_RUN)
        {
            snprintf(why, whylen, "chunk %u of zone %u starts a block "
                     "but has type %u", i, z, hdr->type);
            return -1;
        }
        if (hdr->flags & ~CHUNK_FLAGS_ALL_VALID) {
            snprintf(why, whylen, "chunk %u of zone %u has unknown flags "
                     "0x%x", i, z, hdr->flags);
            return -1;
        }
        if (hdr->size_idx == 0 || hdr->size_idx > size_idx - i) {
            snprintf(why, whylen, "the block at chunk %u of zone %u is "
                     "%" PRIu32 " chunks long; the zone has %" PRIu32,
                     i, z, hdr->size_idx, size_idx);
            return -1;
        }
        if (hdr->type == CHUNK_TYPE_RUN) {
            const struct run_header *run =
                (const struct run_header *)(chunks + i * CHUNKSIZE);
            /* libpmemobj counts a run's blocks in 32 bits. */
            if (run->block_size == 0
                || run->block_size > RUN_CONTENT_SIZE(hdr->size_idx)
                || RUN_CONTENT_SIZE(hdr->size_idx) / run->block_size
                   > UINT32_MAX)
            {
                snprintf(why, whylen, "the run at chunk %u of zone %u has "
                         "blocks of %" PRIu64 " bytes", i, z,
                         run->block_size);
                return -1;
            }
            if ((hdr->flags & CHUNK_FLAG_ALIGNED)
                && (run->alignment == 0
                    || (run->alignment & (run->alignment - 1)) != 0
                    || run->alignment > CHUNKSIZE))
            {
                snprintf(why, whylen, "the run at chunk %u of zone %u is "
                         "aligned to %" PRIu64 " bytes", i, z,
                         run->alignment);
                return -1;
            }
            if (run_nblocks(hdr, run) == 0) {
                snprintf(why, whylen, "the run at chunk %u of zone %u has "
                         "room for no block", i, z);
                return -1;
            }
            /* libpmemobj finds a run from any of its chunks through
               these headers. */
            for (uint32_t j = 1; j < hdr->size_idx; j++) {
                const struct chunk_header *data = &hdrs[i + j];
                if (data->type != CHUNK_TYPE_RUN_DATA || data->size_idx != j) {
                    snprintf(why, whylen, "chunk %u of zone %u is chunk "
                             "%u of a run, but its header says type %u, "
                             "%" PRIu32 " chunks from the run's start",
                             i + j, z, j, data->type, data->size_idx);
                    return -1;
                }
            }
        }
        i += hdr->size_idx;
    }
    return 0;
}

/* Every lane's undo log: libpmemobj's first transaction writes into it,
   trusting its capacity and its chain of further parts (a zeroed capacity
   made it copy past the log: found by fuzz.py).  lane_init() makes each
   first part LANE_UNDO_SIZE bytes, and nothing changes that. */
static int
check_lanes(const char *pool, uint64_t size, char *why, size_t whylen)
{
    uint64_t lanes_offset, nlanes;
    memcpy(&lanes_offset, pool + DESC_LANES_OFFSET, sizeof(lanes_offset));
    memcpy(&nlanes, pool + DESC_NLANES, sizeof(nlanes));
    if (lanes_offset % 8 != 0 || lanes_offset > size
        || nlanes > (size - lanes_offset) / LANE_TOTAL_SIZE)
    {
        snprintf(why, whylen, "%" PRIu64 " lanes at offset %" PRIu64
                 " do not fit in %" PRIu64 " bytes", nlanes, lanes_offset,
                 size);
        return -1;
    }
    for (uint64_t i = 0; i < nlanes; i++) {
        uint64_t at = lanes_offset + i * LANE_TOTAL_SIZE + LANE_UNDO_OFFSET;
        struct ulog_header h;
        memcpy(&h, pool + at, sizeof(h));
        if (h.capacity != LANE_UNDO_SIZE) {
            snprintf(why, whylen, "lane %" PRIu64 "'s undo log has a "
                     "capacity of %" PRIu64 " bytes, not %d", i,
                     h.capacity, LANE_UNDO_SIZE);
            return -1;
        }
        for (int links = 0; h.next != 0; links++) {
            if (links == ULOG_MAX_LINKS || h.next % 8 != 0
                || h.next > size - ULOG_HEADER_SIZE)
            {
                snprintf(why, whylen, "lane %" PRIu64 "'s undo log goes "
                         "on at offset %" PRIu64 ", outside the pool", i,
                         h.next);
                return -1;
            }
            uint64_t part = h.next;
            memcpy(&h, pool + part, sizeof(h));
            if (h.capacity > size - part - ULOG_HEADER_SIZE) {
                snprintf(why, whylen, "lane %" PRIu64 "'s undo log has a "
                         "part of %" PRIu64 " bytes at offset %" PRIu64
                         ", past the pool's end", i, h.capacity, part);
                return -1;
            }
        }
    }
    return 0;
}

/* The heap of the pool at pool (size bytes, the descriptor in it): its
   start, and its size in *psize; NULL when its offset does not leave
   room for a heap (*bad_header 0) or its header is not one of heap format
   1.0 with 256 KiB chunks (*bad_header 1). */
static const char *
find_heap(const char *pool, size_t size, uint64_t *psize, int *bad_header)
{
    uint64_t heap_offset;
    *bad_header = 0;
    if (size < DESC_HEAP_OFFSET + sizeof(heap_offset)) {
        return NULL;
    }
    memcpy(&heap_offset, pool + DESC_HEAP_OFFSET, sizeof(heap_offset));
    if (heap_offset % 8 != 0 || heap_offset > size
        || size - heap_offset < HEAP_HEADER_SIZE + ZONE_MIN_SIZE)
    {
        return NULL;
    }
    const char *heap = pool + heap_offset;
    const struct heap_header *hh = (const struct heap_header *)heap;
    if (memcmp(hh->signature, HEAP_SIGNATURE, sizeof(HEAP_SIGNATURE)) != 0
        || hh->major != HEAP_MAJOR || hh->chunksize != CHUNKSIZE
        || hh->chunks_per_zone != MAX_CHUNK)
    {
        *bad_header = 1;
        return NULL;
    }
    *psize = size - heap_offset;
    return heap;
}

const char *
_PyPmem_HeapChunks(const void *base, size_t size)
{
    uint64_t heap_size;
    int bad_header;
    const char *heap = find_heap(base, size, &heap_size, &bad_header);
    return heap == NULL ? NULL : heap + HEAP_HEADER_SIZE + ZONE_META_SIZE;
}

/* The zones, laid out as libpmemobj does (heap_max_zone(),
   get_zone_size_idx()): every zone but the last holds MAX_CHUNK chunks;
   the last holds those that fit.  Zone z of heap, of which *left bytes
   are left (from the zones' start: heap_size - HEAP_HEADER_SIZE), with
   room for *room chunks; *left is what follows it.  NULL past the last. */
static const char *
next_zone(const char *heap, unsigned int z, uint64_t *left, uint64_t *room)
{
    if (*left < ZONE_MIN_SIZE) {
        return NULL;
    }
    *room = *left >= ZONE_MAX_SIZE ? MAX_CHUNK
                                   : (*left - ZONE_META_SIZE) / CHUNKSIZE;
    *left -= *left >= ZONE_MAX_SIZE ? ZONE_MAX_SIZE : *left;
    return heap + HEAP_HEADER_SIZE + z * ZONE_MAX_SIZE;
}

int
_PyPmem_CheckHeap(const void *base, size_t size, char *why, size_t whylen)
{
    const char *pool = base;
    uint64_t heap_offset;
    if (size < DESC_HEAP_OFFSET + sizeof(heap_offset)) {
        snprintf(why, whylen, "the pool is too small for its descriptor");
        return -1;
    }
    if (check_lanes(pool, size, why, whylen) < 0) {
        return -1;
    }
    uint64_t heap_size;
    int bad_header;
    const char *heap = find_heap(pool, size, &heap_size, &bad_header);
    if (heap == NULL && !bad_header) {
        memcpy(&heap_offset, pool + DESC_HEAP_OFFSET, sizeof(heap_offset));
        snprintf(why, whylen, "the heap's offset %" PRIu64 " does not "
                 "leave room for a heap in %zu bytes", heap_offset, size);
        return -1;
    }
    if (heap == NULL) {
        snprintf(why, whylen, "the heap header is not one of heap format "
                 "%d with chunks of %" PRIu64 " bytes", HEAP_MAJOR,
                 CHUNKSIZE);
        return -1;
    }
    uint64_t left = heap_size - HEAP_HEADER_SIZE, room;
    const char *zone;
    for (unsigned int z = 0; (zone = next_zone(heap, z, &left, &room));
         z++)
    {
        const struct zone_header *zh = (const struct zone_header *)zone;
        if (zh->magic == 0) {
            continue;       /* libpmemobj initialises it when it needs it */
        }
        if (zh->magic != ZONE_HEADER_MAGIC) {
            snprintf(why, whylen, "zone %u has a bad magic number", z);
            return -1;
        }
        if (zh->size_idx == 0 || zh->size_idx > room) {
            snprintf(why, whylen, "zone %u says it holds %" PRIu32
                     " chunks; it has room for %" PRIu64,
                     z, zh->size_idx, room);
            return -1;
        }
        if (check_zone(zone, z, zh->size_idx, why, whylen) < 0) {
            return -1;
        }
    }
    return 0;
}

/* --- the allocations, read from the metadata ------------------------------

   pmemobj_first() and pmemobj_next() find each allocation through the
   heap's runtime structures, taking locks: about 300 ns an object, a
   third of the open of a pool of two million objects.  The walk below
   reads the same metadata directly, in the same order: the zones, in
   each the chunks that start a block, a huge block (type USED) whole, a
   run's blocks from its bitmap (memblock_run_bitmap(), run_get_data_
   start() and run_iterate_used() of libpmemobj 1.12's memblock.c); each
   block's header gives its size (a block of a run may be several units)
   and its type number, and marks libpmemobj's internal objects (the
   logs' extensions: OBJ_INTERNAL_OBJECT_MASK), which pmemobj_next()
   skips.  It runs on metadata that _PyPmem_CheckHeap() checked when the
   pool was opened and that only libpmemobj has written since; it still
   checks every bound it reads through. */

#define RUN_BITS_PER_VALUE 64
#define ALLOC_HDR_SIZE_SHIFT 48
#define ALLOC_HDR_SIZE_MASK (((uint64_t)1 << ALLOC_HDR_SIZE_SHIFT) - 1)
#define OBJ_INTERNAL_OBJECT_MASK ((uint64_t)1 << 15)
#define CHUNK_FLAG_COMPACT_HEADER 0x1
#define CHUNK_FLAG_HEADER_NONE 0x2
#define HEADER_LEGACY_SIZE 64
#define HEADER_COMPACT_SIZE 16

/* A block whose header (of the kind that the chunk's flags say) starts
   at real, of unit bytes a unit: its user data and type number for
   visit, unless it is an internal object.  The number of units it spans
   in *units.  The visitor's result, or -1 for a size that does not fit
   in [real, end). */
static int
walk_block(const char *real, const char *end, uint16_t chunk_flags,
           uint64_t unit, _PyPmem_BlockVisitor visit, void *arg,
           uint64_t *units)
{
    uint64_t size, type_num, flags;
    size_t hsize;
    if (chunk_flags & CHUNK_FLAG_COMPACT_HEADER) {
        uint64_t hdr[2];
        memcpy(hdr, real, sizeof(hdr));
        size = hdr[0] & ALLOC_HDR_SIZE_MASK;
        flags = hdr[0] >> ALLOC_HDR_SIZE_SHIFT;
        type_num = hdr[1];
        hsize = HEADER_COMPACT_SIZE;
    }
    else if (chunk_flags & CHUNK_FLAG_HEADER_NONE) {
        size = unit;
        flags = 0;
        type_num = 0;
        hsize = 0;
    }
    else {
        /* unused[8], size, unused[32], root_size (with the flags),
           type_num */
        uint64_t root_size;
        memcpy(&size, real + 8, sizeof(size));
        memcpy(&root_size, real + 48, sizeof(root_size));
        memcpy(&type_num, real + 56, sizeof(type_num));
        flags = root_size >> ALLOC_HDR_SIZE_SHIFT;
        hsize = HEADER_LEGACY_SIZE;
    }
    if (size < hsize || size > (uint64_t)(end - real)) {
        return -1;
    }
    *units = size == 0 ? 1 : (size - 1) / unit + 1;
    if (flags & OBJ_INTERNAL_OBJECT_MASK) {
        return 0;
    }
    return visit((char *)real + hsize, type_num, arg);
}

/* The used blocks of the run at chunk (of hdr). */
static int
walk_run(const char *chunk, const struct chunk_header *hdr,
         _PyPmem_BlockVisitor visit, void *arg)
{
    const struct run_header *run = (const struct run_header *)chunk;
    const char *content = chunk + RUN_HEADER_SIZE;
    const char *end = chunk + (uint64_t)hdr->size_idx * CHUNKSIZE;
    uint64_t nbits = run_nblocks(hdr, run);
    uint64_t bitmap;
    if (hdr->flags & CHUNK_FLAG_FLEX_BITMAP) {
        uint64_t values = (RUN_CONTENT_SIZE(hdr->size_idx) / run->block_size
                           + RUN_BITS_PER_VALUE - 1) / RUN_BITS_PER_VALUE;
        values = ((values + 2 + 7) & ~(uint64_t)7) - 2;
        bitmap = values * 8;
    }
    else {
        bitmap = RUN_DEFAULT_BITMAP_SIZE;
    }
    const char *data = content + bitmap;
    if (hdr->flags & CHUNK_FLAG_ALIGNED) {
        size_t hsize = (hdr->flags & CHUNK_FLAG_COMPACT_HEADER)
                       ? HEADER_COMPACT_SIZE
                       : (hdr->flags & CHUNK_FLAG_HEADER_NONE)
                       ? 0 : HEADER_LEGACY_SIZE;
        uintptr_t start = (uintptr_t)data + hsize;
        uintptr_t mask = (uintptr_t)run->alignment - 1;
        start = (start + mask) & ~mask;
        data = (const char *)(start - hsize);
    }
    if (nbits == 0 || (uint64_t)(end - data) / run->block_size < nbits) {
        return -1;
    }
    uint64_t u = 0;
    while (u < nbits) {
        uint64_t word;
        memcpy(&word, content + (u / RUN_BITS_PER_VALUE) * 8, sizeof(word));
        word >>= u % RUN_BITS_PER_VALUE;
        if (word == 0) {
            u += RUN_BITS_PER_VALUE - u % RUN_BITS_PER_VALUE;
            continue;
        }
        if (!(word & 1)) {
            u++;
            continue;
        }
        uint64_t units;
        int r = walk_block(data + u * run->block_size, end, hdr->flags,
                           run->block_size, visit, arg, &units);
        if (r != 0) {
            return r;
        }
        u += units;
    }
    return 0;
}

int
_PyPmem_WalkHeap(const void *base, size_t size, _PyPmem_BlockVisitor visit,
                 void *arg)
{
    uint64_t heap_size;
    int bad_header;
    const char *heap = find_heap(base, size, &heap_size, &bad_header);
    if (heap == NULL) {
        return -1;
    }
    uint64_t left = heap_size - HEAP_HEADER_SIZE, room;
    const char *zone;
    for (unsigned int z = 0; (zone = next_zone(heap, z, &left, &room));
         z++)
    {
        const struct zone_header *zh = (const struct zone_header *)zone;
        if (zh->magic == 0) {
            continue;
        }
        if (zh->magic != ZONE_HEADER_MAGIC || zh->size_idx > room) {
            return -1;
        }
        const struct chunk_header *hdrs =
            (const struct chunk_header *)(zone + ZONE_HEADER_SIZE);
        const char *chunks = zone + ZONE_META_SIZE;
        uint32_t i = 0;
        while (i < zh->size_idx) {
            const struct chunk_header *hdr = &hdrs[i];
            if (hdr->size_idx == 0 || hdr->size_idx > zh->size_idx - i) {
                return -1;
            }
            const char *chunk = chunks + (uint64_t)i * CHUNKSIZE;
            int r = 0;
            if (hdr->type == CHUNK_TYPE_USED) {
                uint64_t units;
                r = walk_block(chunk, chunk + (uint64_t)hdr->size_idx
                                              * CHUNKSIZE,
                               hdr->flags, CHUNKSIZE, visit, arg, &units);
            }
            else if (hdr->type == CHUNK_TYPE_RUN) {
                const struct run_header *run =
                    (const struct run_header *)chunk;
                if (run->block_size == 0
                    || ((hdr->flags & CHUNK_FLAG_ALIGNED)
                        && (run->alignment == 0
                            || (run->alignment & (run->alignment - 1)))))
                {
                    return -1;
                }
                r = walk_run(chunk, hdr, visit, arg);
            }
            else if (hdr->type != CHUNK_TYPE_FREE) {
                return -1;
            }
            if (r != 0) {
                return r;
            }
            i += hdr->size_idx;
        }
    }
    return 0;
}
