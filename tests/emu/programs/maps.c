/* The address space of a static program as it starts: /proc/self/maps, and a few libc calls. */
#include "emu.h"
#include <stdlib.h>

int main(void)
{
    dump_maps();
    char *p = malloc(200000);                /* glibc: mmap (above the threshold) */
    char *q = malloc(100);                   /* glibc: brk */
    say("malloc %d %d\n", p != 0, q != 0);
    free(p);
    dump_maps();
    return 0;
}
