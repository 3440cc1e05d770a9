/* The live-kernel side of benchmarks/bench_ops.py: replays an op file with real syscalls.
 *
 * Compiled at first use by bench_ops.py (cc -O2) and cached under ~/.cache/vmalab/ by a hash of this file.
 *
 *   replay ops FILE      set up the VMAs of FILE (not timed), time its op loop, print the result
 *   replay fault write|read PAGES REPEATS
 *                        time touching every page of a fresh PAGES-page private anonymous mapping, one
 *                        volatile store (write: a fresh anonymous page each) or load (read: the zero page)
 *                        per page; the best of REPEATS fresh mappings
 *
 * OP FILE (text, numbers in hex):
 *   vmalab-ops 1
 *   workload NAME
 *   setup S
 *   ops M
 *   S setup lines, then M op lines, each one of:
 *     m ADDR LEN PROT    mmap(ADDR, LEN, PROT, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED): must return ADDR
 *     p ADDR LEN PROT    mprotect(ADDR, LEN, PROT): 0, or ENOMEM when the range has a hole
 *     u ADDR LEN         munmap(ADDR, LEN): 0
 *     n LEN PROT         mmap(NULL, LEN, PROT, MAP_PRIVATE|MAP_ANONYMOUS): any address; appended to the
 *                        table of addresses (setup lines too, in order)
 *     x IDX LEN          munmap(table[IDX], LEN): 0
 *   end
 *
 * OUTPUT (one record a line):
 *   vmas BASE SETUP END       lines of /proc/self/maps before the setup, after it, after the ops
 *   time OPS SECONDS          the op loop, timed with clock_gettime(CLOCK_MONOTONIC)
 *   fail PHASE KIND ERRNO N   N calls of KIND (m p u n x) in PHASE (setup|ops) failed with ERRNO
 *                             (ERRNO 0: returned an unexpected address)
 *   unexpected N              failures that a correct replay never has (all but mprotect's ENOMEM)
 *   fault KIND PAGES SECONDS BAD   (fault mode) BAD: pages whose value read back was wrong
 * A fatal problem prints "err MESSAGE" and exits with status 2.
 *
 * The op loop neither allocates nor uses stdio, so the address space holds only what the file asks for.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct op {
    char kind;
    int prot;
    uint64_t a;   /* address (m p u) or table index (x) */
    uint64_t len;
};

#define NKINDS 5
#define MAXERR 134
static const char KINDS[NKINDS + 1] = "mpunx";
static unsigned long fails[2][NKINDS][MAXERR + 1];
static char mapsbuf[1 << 16];

static void die(const char *msg)
{
    printf("err %s\n", msg);
    exit(2);
}

static int kind_index(char k)
{
    const char *p = strchr(KINDS, k);
    return p && k ? (int)(p - KINDS) : -1;
}

static long count_vmas(void)
{
    int fd = open("/proc/self/maps", O_RDONLY);
    long lines = 0;
    ssize_t n;
    if (fd < 0)
        die("cannot open /proc/self/maps");
    while ((n = read(fd, mapsbuf, sizeof mapsbuf)) > 0)
        for (ssize_t i = 0; i < n; i++)
            lines += mapsbuf[i] == '\n';
    close(fd);
    return lines;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Runs ops[0..n) and counts failures in fails[phase]. */
static void run(const struct op *ops, long n, int phase, uint64_t *table, long *ntable, long tablemax)
{
    const int anon = MAP_PRIVATE | MAP_ANONYMOUS;
    for (long i = 0; i < n; i++) {
        const struct op *o = &ops[i];
        long r;
        int bad = 0, err = 0;
        switch (o->kind) {
        case 'm': {
            void *p = mmap((void *)o->a, o->len, o->prot, anon | MAP_FIXED, -1, 0);
            if (p == MAP_FAILED)
                bad = 1, err = errno;
            else if ((uint64_t)p != o->a)
                bad = 1;
            break;
        }
        case 'p':
            r = mprotect((void *)o->a, o->len, o->prot);
            if (r)
                bad = 1, err = errno;
            break;
        case 'u':
            r = munmap((void *)o->a, o->len);
            if (r)
                bad = 1, err = errno;
            break;
        case 'n': {
            void *p = mmap(NULL, o->len, o->prot, anon, -1, 0);
            if (p == MAP_FAILED)
                bad = 1, err = errno;
            if (*ntable < tablemax)
                table[(*ntable)++] = p == MAP_FAILED ? 0 : (uint64_t)p;
            break;
        }
        case 'x':
            if (o->a >= (uint64_t)*ntable || !table[o->a]) {
                bad = 1, err = EINVAL;
                break;
            }
            r = munmap((void *)table[o->a], o->len);
            if (r)
                bad = 1, err = errno;
            break;
        }
        if (bad)
            fails[phase][kind_index(o->kind)][err > MAXERR ? MAXERR : err]++;
    }
}

static int replay_ops(const char *path)
{
    FILE *f = fopen(path, "r");
    char word[32], name[64];
    int version;
    unsigned long nsetup, nops;
    if (!f)
        die("cannot open the op file");
    if (fscanf(f, "%31s %d", word, &version) != 2 || strcmp(word, "vmalab-ops") || version != 1)
        die("not a vmalab-ops 1 file");
    if (fscanf(f, " workload %63s setup %lx ops %lx", name, &nsetup, &nops) != 3 || nsetup > (1UL << 28) || nops > (1UL << 28))
        die("bad op file header");
    long total = (long)(nsetup + nops);
    struct op *ops = calloc(total ? total : 1, sizeof *ops);
    uint64_t *table = calloc(total ? total : 1, sizeof *table);
    long ntable = 0;
    if (!ops || !table)
        die("out of memory");
    for (long i = 0; i < total; i++) {
        struct op *o = &ops[i];
        char k[2];
        unsigned long a = 0, len = 0, prot = 0;
        int ok;
        if (fscanf(f, "%1s", k) != 1)
            die("op file ends early");
        o->kind = k[0];
        switch (o->kind) {
        case 'm': case 'p': ok = fscanf(f, "%lx %lx %lx", &a, &len, &prot) == 3; break;
        case 'u': case 'x': ok = fscanf(f, "%lx %lx", &a, &len) == 2; break;
        case 'n': ok = fscanf(f, "%lx %lx", &len, &prot) == 2; break;
        default: ok = 0;
        }
        if (!ok)
            die("bad op line");
        o->a = a, o->len = len, o->prot = (int)prot;
    }
    if (fscanf(f, "%31s", word) != 1 || strcmp(word, "end"))
        die("op file does not end with 'end'");
    fclose(f);

    long base = count_vmas();
    base = count_vmas(); /* the first read may have set up what reading needs */
    run(ops, (long)nsetup, 0, table, &ntable, total);
    long after_setup = count_vmas();
    double t0 = now();
    run(ops + nsetup, (long)nops, 1, table, &ntable, total);
    double t1 = now();
    long end = count_vmas();

    printf("vmas %ld %ld %ld\n", base, after_setup, end);
    printf("time %lu %.9f\n", nops, t1 - t0);
    unsigned long unexpected = 0;
    for (int ph = 0; ph < 2; ph++)
        for (int k = 0; k < NKINDS; k++)
            for (int e = 0; e <= MAXERR; e++)
                if (fails[ph][k][e]) {
                    printf("fail %s %c %d %lu\n", ph ? "ops" : "setup", KINDS[k], e, fails[ph][k][e]);
                    if (!(ph == 1 && KINDS[k] == 'p' && e == ENOMEM))
                        unexpected += fails[ph][k][e];
                }
    printf("unexpected %lu\n", unexpected);
    return 0;
}

static int fault(const char *kind, long pages, long repeats)
{
    const long psz = sysconf(_SC_PAGESIZE);
    int write = !strcmp(kind, "write");
    double best = -1;
    unsigned long bad = 0;
    if (!write && strcmp(kind, "read"))
        die("fault kind must be write or read");
    if (pages <= 0 || repeats <= 0)
        die("pages and repeats must be positive");
    for (long r = 0; r < repeats; r++) {
        char *p = mmap(NULL, pages * psz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            die("mmap of the fault region failed");
        madvise(p, pages * psz, MADV_NOHUGEPAGE); /* one fault per page, whatever THP's mode */
        volatile char *v = p;
        unsigned long sum = 0;
        double t0 = now();
        if (write)
            for (long i = 0; i < pages; i++)
                v[i * psz] = 1;
        else
            for (long i = 0; i < pages; i++)
                sum += v[i * psz];
        double t = now() - t0;
        for (long i = 0; i < pages; i++) /* not timed: the values are what the loop left */
            bad += v[i * psz] != (write ? 1 : 0);
        bad += sum != 0;
        munmap(p, pages * psz);
        if (best < 0 || t < best)
            best = t;
    }
    printf("fault %s %ld %.9f %lu\n", kind, pages, best, bad);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "ops"))
        return replay_ops(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "fault"))
        return fault(argv[2], strtol(argv[3], NULL, 0), strtol(argv[4], NULL, 0));
    fprintf(stderr, "usage: %s ops FILE | %s fault write|read PAGES REPEATS\n", argv[0], argv[0]);
    return 2;
}
