/* A stack that grows: a 1 MiB walk down from the stack pointer, page by page, grows the [stack] VMA. */
#include "emu.h"

static unsigned long deep(int n, volatile char *top)
{
    volatile char buf[8192];
    buf[0] = (char)n;
    buf[sizeof buf - 1] = (char)n;
    if (n == 0)
        return (unsigned long)(top - buf);
    return deep(n - 1, top) + buf[0];
}

int main(int argc, char **argv, char **envp)
{
    volatile char here = 0;
    say("argc %d argv %p argv[0] %s envp %p local %p\n", argc, (void *)argv, argv[0], (void *)envp,
        (void *)&here);
    dump_maps();
    unsigned long d = deep(128, &here);
    say("deep: %lu\n", d);
    dump_maps();
    return 0;
}
