/* four threads.  Together (after a barrier, so their calls are in flight at once): each makes its own
 * page of a shared 4 MiB mapping read-only and unmaps another page of it (disjoint ranges: any order
 * gives the same returns and maps).  One at a time (a mutex): each maps, touches and unmaps 3 MiB (the
 * same address every time).  Their stacks are mmaps of the leader's mm. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t barrier;
static char *region;
static void *work(void *a) {
    long i = (long)a;
    pthread_barrier_wait(&barrier);
    mprotect(region + (i << 20), 4096, PROT_READ);
    munmap(region + (i << 20) + 8192, 4096);
    pthread_mutex_lock(&lock);
    void *p = mmap(0, 3 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(p, 1, 4096);
    munmap(p, 3 << 20);
    pthread_mutex_unlock(&lock);
    return a;
}
int main(void) {
    pthread_t t[4];
    region = mmap(0, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pthread_barrier_init(&barrier, 0, 4);
    for (long i = 0; i < 4; i++) pthread_create(&t[i], 0, work, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], 0);
    return 0;
}
