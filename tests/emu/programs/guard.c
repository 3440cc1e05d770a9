/* A guard page hit: the store into the PROT_NONE middle page ends the program with SIGSEGV. */
#include "emu.h"

int main(void)
{
    char *a = (char *)CALL(mmap, 0, 3 * PG, RW, ANON, -1, 0);
    CALL(mprotect, a + PG, PG, PROT_NONE);
    a[0] = 1;
    a[2 * PG] = 2;
    dump_maps();
    say("storing to %p\n", (void *)(a + PG + 16));
    *(volatile char *)(a + PG + 16) = 3;     /* SIGSEGV (SEGV_ACCERR) */
    say("not reached\n");
    return 0;
}
