/* mmap and munmap across holes: placement top-down, partial unmaps, an unmap spanning holes and several
 * VMAs, errors, and the contents of the pages that stay. */
#include "emu.h"

int main(void)
{
    char *a = (char *)CALL(mmap, 0, 16 * PG, RW, ANON, -1, 0);
    fill(a, 16 * PG, 1);
    say("sum = %#lx\n", sum(a, 16 * PG));
    CALL(munmap, a + 2 * PG, 2 * PG);
    CALL(munmap, a + 6 * PG, 3 * PG);
    CALL(mprotect, a + 10 * PG, PG, PROT_READ);
    dump_maps();
    CALL(munmap, a + PG, 11 * PG);               /* spans both holes and three VMAs */
    CALL(munmap, a + PG, 11 * PG);               /* nothing left there: still 0 */
    CALL(munmap, a + 1, PG);                     /* EINVAL */
    CALL(munmap, a, 0);                          /* EINVAL */
    say("first page sum = %#lx, last pages sum = %#lx\n", sum(a, PG), sum(a + 12 * PG, 4 * PG));
    char *b = (char *)CALL(mmap, 0, 2 * PG, RW, ANON, -1, 0);    /* placed by the kernel's rules */
    char *c = (char *)CALL(mmap, 0, 11 * PG, PROT_READ, ANON, -1, 0);
    say("b[0] = %d c[0] = %d\n", b[0], c[0]);
    CALL(mmap, a + 3 * PG, PG, RW, ANON, -1, 0);  /* a hint inside the hole */
    dump_maps();
    return 0;
}
