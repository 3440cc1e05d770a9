/* fork-and-exec: the child unmaps a page of its copy of the parent's mapping, then execs /bin/true */
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    void *p = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pid_t c = fork();
    if (c == 0) {
        munmap(p, 4096);
        execl("/bin/true", "true", (char *)0);
        _exit(9);
    }
    int st;
    waitpid(c, &st, 0);
    mprotect(p, 8192, PROT_READ);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
