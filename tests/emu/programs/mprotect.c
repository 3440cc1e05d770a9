/* mprotect splits and merges, a range running into a hole, PROT_EXEC. */
#include "emu.h"

int main(void)
{
    char *a = (char *)CALL(mmap, 0, 6 * PG, RW, ANON, -1, 0);
    CALL(mprotect, a + 2 * PG, PG, PROT_READ);           /* split in three */
    dump_maps();
    CALL(mprotect, a + 2 * PG, PG, RW);                  /* merged back */
    dump_maps();
    a[0] = 1;                                             /* the written part gets an anon_vma */
    CALL(mprotect, a, 3 * PG, PROT_READ);
    CALL(mprotect, a + 3 * PG, 3 * PG, PROT_READ);        /* merges with the left part */
    CALL(mprotect, a + PG, PG, PROT_READ | PROT_EXEC);
    CALL(munmap, a + 4 * PG, PG);
    CALL(mprotect, a + 3 * PG, 3 * PG, RW);               /* ENOMEM at the hole, after changing a+3 */
    CALL(mprotect, a + 1, PG, PROT_READ);                 /* EINVAL */
    CALL(mprotect, a, PG, 0x10);                          /* EINVAL: unknown bit */
    say("a[0] = %d\n", a[0]);
    dump_maps();
    return 0;
}
