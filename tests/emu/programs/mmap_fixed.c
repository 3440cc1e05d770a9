/* MAP_FIXED and MAP_FIXED_NOREPLACE over existing mappings. */
#include "emu.h"

int main(void)
{
    char *a = (char *)CALL(mmap, 0, 8 * PG, RW, ANON, -1, 0);
    fill(a, 8 * PG, 3);
    CALL(mmap, a + 2 * PG, 2 * PG, PROT_READ, ANON | MAP_FIXED, -1, 0);   /* replaces the middle */
    say("replaced page reads %d, kept page sum %#lx\n", a[2 * PG], sum(a + 4 * PG, PG));
    CALL(mmap, a + 3 * PG, 2 * PG, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0); /* EEXIST */
    CALL(munmap, a + 6 * PG, PG);
    CALL(mmap, a + 6 * PG, PG, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0);     /* into the hole */
    CALL(mmap, a + 5 * PG, 3 * PG, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0); /* EEXIST: partly over */
    CALL(mmap, a + PG, 6 * PG, RW, ANON | MAP_FIXED, -1, 0);               /* over four VMAs */
    say("a[PG] = %d, a[0] sum %#lx\n", a[PG], sum(a, PG));
    CALL(mmap, a + 1, PG, RW, ANON | MAP_FIXED, -1, 0);                    /* EINVAL */
    CALL(mmap, 0, PG, RW, MAP_ANONYMOUS | MAP_FIXED, -1, 0);               /* EINVAL: no type */
    dump_maps();
    return 0;
}
