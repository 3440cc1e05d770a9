/* mremap: grow in place, shrink, a blocked grow, a move with MREMAP_MAYMOVE, MREMAP_FIXED, DONTUNMAP;
 * the contents move with the pages. */
#include "emu.h"

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

int main(void)
{
    char *a = (char *)CALL(mmap, 0, 4 * PG, RW, ANON, -1, 0);
    fill(a, 4 * PG, 5);
    unsigned long s = sum(a, 4 * PG);
    CALL(munmap, a + 2 * PG, 2 * PG);
    CALL(mremap, a, 2 * PG, 4 * PG, 0);                      /* grows in place into the freed pages */
    CALL(mremap, a, 4 * PG, PG, 0);                          /* shrinks */
    char *b = (char *)CALL(mmap, a + PG, PG, PROT_READ, ANON | MAP_FIXED_NOREPLACE, -1, 0);
    CALL(mremap, a, PG, 3 * PG, 0);                          /* ENOMEM: b is in the way */
    char *m = (char *)CALL(mremap, a, PG, 3 * PG, MREMAP_MAYMOVE);
    say("moved first page sum %#lx (was %#lx), new pages %d\n", sum(m, PG), sum(a == m ? a : m, PG), m[2 * PG]);
    say("whole sum before the moves %#lx\n", s);
    char *dst = (char *)CALL(mmap, 0, 8 * PG, PROT_NONE, ANON, -1, 0);
    char *f = (char *)CALL(mremap, m, 3 * PG, 3 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst + 4 * PG);
    say("after MREMAP_FIXED sum %#lx\n", sum(f, PG));
    char *d = (char *)CALL(mremap, f, PG, PG, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
    say("after DONTUNMAP new %#lx old %d\n", sum(d, PG), f[0]);
    CALL(mremap, b, PG, 0, MREMAP_MAYMOVE);                  /* EINVAL: new_len 0 */
    CALL(mremap, b + 1, PG, PG, 0);                          /* EINVAL */
    CALL(mremap, (char *)0x10000, PG, 2 * PG, 0);            /* EFAULT: nothing mapped there */
    dump_maps();
    return 0;
}
