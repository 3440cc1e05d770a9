/* brk up and down: the heap VMA, its contents, a request below the start. */
#include "emu.h"

int main(void)
{
    long start = CALL(brk, 0);
    char *h = (char *)start;
    CALL(brk, start + 3 * PG + 100);
    h[0] = 11;
    h[3 * PG + 99] = 12;
    dump_maps();
    CALL(brk, start + PG);                  /* down: the pages above go */
    CALL(brk, start + 4 * PG);              /* up again: fresh zero pages */
    say("h[0] = %d h[3*PG+99] = %d\n", h[0], h[3 * PG + 99]);
    CALL(brk, start - 64 * PG);             /* below start_brk: refused, the break stays */
    CALL(brk, 0);
    CALL(brk, start);
    dump_maps();
    return 0;
}
