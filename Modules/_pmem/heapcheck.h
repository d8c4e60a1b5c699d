#ifndef PMEM_HEAPCHECK_H
#define PMEM_HEAPCHECK_H

#include <stddef.h>               // size_t
#include <stdint.h>               // uint64_t

/* Check the zone and chunk headers of the heap of a libpmemobj pool mapped
   at base, size bytes long, after libpmemobj's recovery (Modules/_pmem/
   heapcheck.c).  0 if they are consistent; -1 otherwise, with what is
   wrong written into why (whylen bytes, NUL-terminated).  Sets no Python
   exception: it runs in the checker child, which must not touch the
   interpreter. */
extern int _PyPmem_CheckHeap(const void *base, size_t size,
                             char *why, size_t whylen);

/* Call visit(block, type_num, arg) for each allocation of the pool at
   base (size bytes), as pmemobj_first() and pmemobj_next() list them: in
   the order of their addresses, without libpmemobj's internal objects;
   block is the allocation's data (what pmemobj_direct() gives).  0; the
   first nonzero result of visit; or -1 when the metadata is not what this
   reader knows (the caller asks libpmemobj then).  It reads libpmemobj
   1.12's heap format, which _PyPmem_CheckHeap() checked at the open. */
typedef int (*_PyPmem_BlockVisitor)(char *block, uint64_t type_num,
                                    void *arg);
extern int _PyPmem_WalkHeap(const void *base, size_t size,
                            _PyPmem_BlockVisitor visit, void *arg);

/* The heap's chunks (of _PyPmem_CHUNK_SIZE bytes): zone z's first one is
   _PyPmem_ZONE_SIZE * z bytes after zone 0's, which _PyPmem_HeapChunks()
   finds (NULL when the pool at base, size bytes, has no heap that this
   reader knows). */
#define _PyPmem_CHUNK_SIZE ((uint64_t)256 << 10)
#define _PyPmem_ZONE_CHUNKS ((uint64_t)UINT16_MAX - 7)
#define _PyPmem_ZONE_SIZE \
    (64 + (8 + _PyPmem_CHUNK_SIZE) * _PyPmem_ZONE_CHUNKS)
extern const char *_PyPmem_HeapChunks(const void *base, size_t size);

#endif /* !PMEM_HEAPCHECK_H */
