/* grows a buffer with realloc from 256 KiB to 64 MiB: glibc moves mmapped chunks with mremap */
#include <stdlib.h>
#include <string.h>
int main(void) {
    size_t n = 256 << 10;
    char *p = malloc(n);
    for (int i = 0; i < 8; i++) {
        n *= 2;
        p = realloc(p, n);
        memset(p + n / 2, 1, n / 2);
    }
    free(p);
    return 0;
}
