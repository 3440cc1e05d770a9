/* Shared helpers of the emulator test programs (tests/emu/test_unicorn.py).
 *
 * Every syscall the test makes is a raw `syscall` instruction (sys() below), so the printed value is what
 * the kernel (or the emulator) returned: an address, 0 or -errno, never libc's -1/errno.  Output goes out
 * through raw write(1) at once, unbuffered, so a program that dies of a signal has printed everything
 * before the fault.  dump_maps() prints /proc/self/maps. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define PG 4096L
#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)

static long sys(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

__attribute__((unused)) static void out(const char *s, size_t n)
{
    while (n) {
        long w = sys(SYS_write, 1, (long)s, (long)n, 0, 0, 0);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

__attribute__((unused)) static void say(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        out(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

__attribute__((unused)) static long report(const char *what, long r)
{
    if (r < 0 && r > -4096)
        say("%s = -%ld\n", what, -r);
    else
        say("%s = %#lx\n", what, (unsigned long)r);
    return r;
}

/* CALL(mmap, 0, PG, RW, ANON, -1, 0): the raw syscall (1 to 6 arguments, each taken as a long), printed
 * as `mmap(0, PG, RW, ANON, -1, 0) = RETURN` */
#define NARGS_(a, b, c, d, e, f, n, ...) n
#define NARGS(...) NARGS_(__VA_ARGS__, 6, 5, 4, 3, 2, 1, 0)
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define ARGS1(a) (long)(a), 0, 0, 0, 0, 0
#define ARGS2(a, b) (long)(a), (long)(b), 0, 0, 0, 0
#define ARGS3(a, b, c) (long)(a), (long)(b), (long)(c), 0, 0, 0
#define ARGS4(a, b, c, d) (long)(a), (long)(b), (long)(c), (long)(d), 0, 0
#define ARGS5(a, b, c, d, e) (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0
#define ARGS6(a, b, c, d, e, f) (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f)
#define CALL(name, ...) \
    report(#name "(" #__VA_ARGS__ ")", sys(SYS_##name, CAT(ARGS, NARGS(__VA_ARGS__))(__VA_ARGS__)))

__attribute__((unused)) static void dump_file(const char *path)
{
    char buf[4096];
    say("== %s\n", path);
    long fd = sys(SYS_openat, AT_FDCWD, (long)path, O_RDONLY, 0, 0, 0);
    if (fd < 0) {
        say("openat(%s) = -%ld\n", path, -fd);
        return;
    }
    long n;
    while ((n = sys(SYS_read, fd, (long)buf, sizeof buf, 0, 0, 0)) > 0)
        out(buf, (size_t)n);
    if (n < 0)
        say("read = -%ld\n", -n);
    sys(SYS_close, fd, 0, 0, 0, 0, 0);
}

__attribute__((unused)) static void dump_maps(void) { dump_file("/proc/self/maps"); }

/* a checksum of n bytes, to show page contents surviving (or not) a call */
__attribute__((unused)) static unsigned long sum(const void *p, long n)
{
    const unsigned char *c = p;
    unsigned long s = 0;
    for (long i = 0; i < n; i++)
        s = s * 31 + c[i];
    return s;
}

__attribute__((unused)) static void fill(void *p, long n, int seed)
{
    unsigned char *c = p;
    for (long i = 0; i < n; i++)
        c[i] = (unsigned char)(seed + i * 7);
}
