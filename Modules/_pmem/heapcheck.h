#ifndef PMEM_HEAPCHECK_H
#define PMEM_HEAPCHECK_H

#include <stddef.h>               // size_t

/* Check the zone and chunk headers of the heap of a libpmemobj pool mapped
   at base, size bytes long, after libpmemobj's recovery (Modules/_pmem/
   heapcheck.c).  0 if they are consistent; -1 otherwise, with what is
   wrong written into why (whylen bytes, NUL-terminated).  Sets no Python
   exception: it runs in the checker child, which must not touch the
   interpreter. */
extern int _PyPmem_CheckHeap(const void *base, size_t size,
                             char *why, size_t whylen);

#endif /* !PMEM_HEAPCHECK_H */
