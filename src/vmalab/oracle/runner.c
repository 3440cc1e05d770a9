/*
 * vmalab live-kernel runner.
 *
 * Runs one resolved scenario PROGRAM (read from stdin) against the live kernel and writes line records to
 * stdout.  The Python side (vmalab/oracle/kernel.py) produces the program and parses the records; the
 * formats are documented there.
 *
 * Stage 1 (argv[1] != "run"): turn ASLR off for this process (ADDR_NO_RANDOMIZE) and re-exec
 * /proc/self/exe with a fixed argv and an empty environment, so the initial stack VMA is identical on
 * every run.  Nothing is read from stdin before the re-exec.
 *
 * Stage 2: read the whole program into static storage, create the scenario's files, prove the window
 * [BASE, BASE + 1 GiB) empty, report the initial layout, then execute the ops.  From then on the runner
 * neither allocates memory nor uses stdio: all buffers are static, I/O is read(2)/write(2), numbers are
 * formatted by hand.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#define NR_MLOCK2 325
#define NR_MEMFD_SECRET 447
#define NR_MSEAL 462
#define MADV_HWPOISON_ 100
#define MADV_SOFT_OFFLINE_ 101
#define MCL_CURRENT_ 1
#define MCL_FUTURE_ 2
#define MAP_LOCKED_ 0x2000
#define LINUX_CAPABILITY_VERSION_3 0x20080522

#define WIN_BASE 0x500000000000UL
#define WIN_SIZE (1UL << 30)
#define PAGE 4096UL
#define TASK_TOP 0x7ffffffff000UL

#define PROG_MAX (2u << 20)     /* program text */
#define RBUF_MAX (256u << 10)   /* /proc reading */
#define OBUF_MAX (1u << 16)     /* output buffer */
#define VEC_MAX (256u << 10)    /* mincore pages per call: 1 GiB */
#define MAX_FILES 256
#define MAX_SLOTS 1024
#define MAX_NAMES 1024
#define MAX_READS 4096
#define ALTSTACK_SIZE (64u * 1024u)

/* ---------------------------------------------------------------------------------------------- */
/* static storage                                                                                  */

static char prog[PROG_MAX + 1];
static size_t prog_len;
static char *cur;                   /* next unread line of prog */
static char rbuf[RBUF_MAX + 1];
static char obuf[OBUF_MAX];
static size_t olen;
static unsigned char vec[VEC_MAX];
static char altstack_mem[ALTSTACK_SIZE] __attribute__((aligned(64)));

static int file_fd[MAX_FILES];
static int slot_fd[MAX_SLOTS];
static const char *names[MAX_NAMES];
static int window_mode = 1;
static uint64_t init_brk;
static long cur_op = -1;
static int allow_hwpoison;          /* "allow_hwpoison 1": MADV_HWPOISON / MADV_SOFT_OFFLINE may run */
static int drop_all_caps;           /* "unprivileged 1": drop every capability before the first op */
static uint64_t limit_as;           /* "limit as N": RLIMIT_AS (soft and hard) of the run; 0: none */
static uint64_t limit_locked;       /* "limit locked N": the most the run may lock (bytes); 0: none */
static int mcl_future;              /* mlockall(MCL_FUTURE) is in force */
static int secret_fd[MAX_FILES];    /* memfd_secret descriptors (their mappings are locked) */
static int nsecret;
static int fail_valid;              /* the most recent repeat stopped at an op with an address */
static uint64_t fail_addr;          /* ... and this was that op's first address ("fail+X") */

/* ---------------------------------------------------------------------------------------------- */
/* output                                                                                          */

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			_exit(4);
		}
		p += w;
		n -= (size_t)w;
	}
}

static void out_flush(void)
{
	write_all(1, obuf, olen);
	olen = 0;
}

static void out_mem(const char *p, size_t n)
{
	if (olen + n > OBUF_MAX) {
		out_flush();
		if (n > OBUF_MAX) {
			write_all(1, p, n);
			return;
		}
	}
	memcpy(obuf + olen, p, n);
	olen += n;
}

static void out_str(const char *s)
{
	out_mem(s, strlen(s));
}

static void out_ch(char c)
{
	out_mem(&c, 1);
}

static void out_u64(uint64_t v)
{
	char t[24];
	int i = 24;
	do {
		t[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	out_mem(t + i, (size_t)(24 - i));
}

static void out_i64(int64_t v)
{
	if (v < 0) {
		out_ch('-');
		out_u64((uint64_t)0 - (uint64_t)v);
	} else {
		out_u64((uint64_t)v);
	}
}

static void out_hex(uint64_t v)
{
	char t[20];
	int i = 20;
	do {
		t[--i] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	out_str("0x");
	out_mem(t + i, (size_t)(20 - i));
}

static void err_begin(void)
{
	out_flush();
	out_str("err ");
	if (cur_op >= 0) {
		out_str("op ");
		out_i64(cur_op);
		out_str(": ");
	}
}

/* A fatal error after the program was read: one "err" record, exit status 2. */
static void fatal3(const char *a, const char *b, const char *c)
{
	err_begin();
	out_str(a);
	if (b)
		out_str(b);
	if (c)
		out_str(c);
	out_ch('\n');
	out_flush();
	_exit(2);
}

static void fatal(const char *a)
{
	fatal3(a, NULL, NULL);
}

static void fatal_errno(const char *a, const char *b, int err)
{
	err_begin();
	out_str(a);
	if (b)
		out_str(b);
	out_str(": errno ");
	out_i64(err);
	out_ch('\n');
	out_flush();
	_exit(2);
}

/* ---------------------------------------------------------------------------------------------- */
/* program parsing                                                                                 */

static char *next_line(void)
{
	if (!cur || cur >= prog + prog_len)
		fatal("program: unexpected end");
	char *line = cur;
	char *nl = memchr(cur, '\n', (size_t)(prog + prog_len - cur));
	if (nl) {
		*nl = 0;
		cur = nl + 1;
	} else {
		cur = prog + prog_len;
	}
	return line;
}

static char *word(char **pp)
{
	char *p = *pp;
	while (*p == ' ')
		p++;
	if (!*p)
		fatal("program: missing field");
	char *w = p;
	while (*p && *p != ' ')
		p++;
	if (*p)
		*p++ = 0;
	*pp = p;
	return w;
}

/* The rest of the line after one separating space (names may contain spaces). */
static char *rest(char **pp)
{
	char *p = *pp;
	if (*p == ' ')
		p++;
	*pp = p + strlen(p);
	return p;
}

static uint64_t parse_num(const char *s)
{
	int neg = 0;
	uint64_t v = 0;
	int any = 0;
	if (*s == '-') {
		neg = 1;
		s++;
	}
	if (s[0] == '0' && s[1] == 'x') {
		for (s += 2; *s; s++, any = 1) {
			int d;
			if (*s >= '0' && *s <= '9')
				d = *s - '0';
			else if (*s >= 'a' && *s <= 'f')
				d = *s - 'a' + 10;
			else
				break;
			v = v * 16 + (uint64_t)d;
		}
	} else {
		for (; *s >= '0' && *s <= '9'; s++, any = 1)
			v = v * 10 + (uint64_t)(*s - '0');
	}
	if (!any || *s)
		fatal("program: bad number");
	return neg ? (uint64_t)0 - v : v;
}

static uint64_t num(char **pp)
{
	return parse_num(word(pp));
}

enum { A_NONE, A_ABS, A_BRK, A_MAP, A_MAPEND, A_FAIL };

struct addr {
	int kind;
	int name;
	uint64_t v;
};

static struct addr parse_addr_tok(char *w)
{
	struct addr a = {A_NONE, -1, 0};
	char *colon;
	switch (w[0]) {
	case 'a':
		a.kind = A_ABS;
		a.v = parse_num(w + 1);
		return a;
	case 'b':
		a.kind = A_BRK;
		a.v = parse_num(w + 1);
		return a;
	case 'f':
		a.kind = A_FAIL;
		a.v = parse_num(w + 1);
		return a;
	case 'm':
	case 'e':
		a.kind = w[0] == 'm' ? A_MAP : A_MAPEND;
		colon = strchr(w, ':');
		if (!colon)
			fatal("program: bad map address");
		*colon = 0;
		a.name = (int)parse_num(w + 1);
		if (a.name < 0 || a.name >= MAX_NAMES || !names[a.name])
			fatal("program: bad map name index");
		a.v = parse_num(colon + 1);
		return a;
	default:
		fatal("program: bad address token");
	}
	return a;
}

static struct addr addr_tok(char **pp)
{
	return parse_addr_tok(word(pp));
}

/* fd token: rN (a raw descriptor number) or sN (a slot set up from the file table). */
static long fd_tok(char **pp)
{
	char *w = word(pp);
	if (w[0] == 'r')
		return (long)(int64_t)parse_num(w + 1);
	if (w[0] == 's') {
		uint64_t s = parse_num(w + 1);
		if (s >= MAX_SLOTS || slot_fd[s] < 0)
			fatal("program: bad fd slot");
		return slot_fd[s];
	}
	fatal("program: bad fd token");
	return -1;
}

/* ---------------------------------------------------------------------------------------------- */
/* /proc reading                                                                                   */

typedef int (*line_fn)(char *line, size_t len, void *ctx);

/* Feed every line of a /proc file to fn (NUL-terminated, without '\n'); stop when fn returns nonzero. */
static void scan_file(const char *path, line_fn fn, void *ctx)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fatal_errno("open ", path, errno);
	size_t have = 0;
	int stop = 0;
	for (;;) {
		ssize_t n = read(fd, rbuf + have, RBUF_MAX - have);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fatal_errno("read ", path, errno);
		}
		if (n == 0)
			break;
		have += (size_t)n;
		size_t start = 0;
		for (;;) {
			char *nl = memchr(rbuf + start, '\n', have - start);
			if (!nl)
				break;
			*nl = 0;
			size_t len = (size_t)(nl - (rbuf + start));
			if (fn(rbuf + start, len, ctx)) {
				stop = 1;
				break;
			}
			start += len + 1;
		}
		if (stop)
			break;
		memmove(rbuf, rbuf + start, have - start);
		have -= start;
		if (have == RBUF_MAX)
			fatal3("line too long in ", path, NULL);
	}
	if (!stop && have > 0) {
		rbuf[have] = 0;
		fn(rbuf, have, ctx);
	}
	close(fd);
}

static uint64_t hex_field(const char **pp)
{
	const char *p = *pp;
	uint64_t v = 0;
	for (;; p++) {
		if (*p >= '0' && *p <= '9')
			v = v * 16 + (uint64_t)(*p - '0');
		else if (*p >= 'a' && *p <= 'f')
			v = v * 16 + (uint64_t)(*p - 'a' + 10);
		else
			break;
	}
	*pp = p;
	return v;
}

/* Parse a maps/smaps header line: start, end, and a pointer to the name column ("" when none). */
static void parse_maps_line(const char *line, uint64_t *start, uint64_t *end, const char **name)
{
	const char *p = line;
	*start = hex_field(&p);
	if (*p == '-')
		p++;
	*end = hex_field(&p);
	for (int f = 0; f < 4; f++) {   /* perms, offset, dev, inode */
		while (*p == ' ')
			p++;
		while (*p && *p != ' ')
			p++;
	}
	while (*p == ' ')
		p++;
	*name = p;
}

static int is_header(const char *line)
{
	return (line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f');
}

static int is_vsyscall(const char *name)
{
	return strcmp(name, "[vsyscall]") == 0;
}

struct lookup_ctx {
	const char *name;
	int found;
	uint64_t start, end;
};

static int lookup_line(char *line, size_t len, void *vctx)
{
	struct lookup_ctx *c = vctx;
	uint64_t s, e;
	const char *nm;
	(void)len;
	parse_maps_line(line, &s, &e, &nm);
	if (strcmp(nm, c->name) == 0) {
		c->found = 1;
		c->start = s;
		c->end = e;
		return 1;
	}
	return 0;
}

static int count_line(char *line, size_t len, void *vctx)
{
	uint64_t *n = vctx;
	uint64_t s, e;
	const char *nm;
	if (len == 0)
		return 0;
	parse_maps_line(line, &s, &e, &nm);
	if (!is_vsyscall(nm))
		(*n)++;
	return 0;
}

static uint64_t vma_count(void)
{
	uint64_t n = 0;
	scan_file("/proc/self/maps", count_line, &n);
	return n;
}

static int echo_maps_line(char *line, size_t len, void *vctx)
{
	(void)vctx;
	out_str("maps ");
	out_mem(line, len);
	out_ch('\n');
	return 0;
}

struct snap_ctx {
	int all;
	uint64_t lo, hi;
	int selected;
};

static int prefix(const char *line, const char *p)
{
	return strncmp(line, p, strlen(p)) == 0;
}

static int snap_line(char *line, size_t len, void *vctx)
{
	struct snap_ctx *c = vctx;
	if (len == 0)
		return 0;
	if (is_header(line)) {
		uint64_t s, e;
		const char *nm;
		parse_maps_line(line, &s, &e, &nm);
		if (c->all)
			c->selected = !is_vsyscall(nm);
		else
			c->selected = s < c->hi && e > c->lo;
		if (c->selected) {
			out_str("vma ");
			out_mem(line, len);
			out_ch('\n');
		}
		return 0;
	}
	if (c->selected && (prefix(line, "Rss:") || prefix(line, "Locked:") || prefix(line, "VmFlags:")
			    || prefix(line, "Anonymous:"))) {
		out_str("kv ");
		out_mem(line, len);
		out_ch('\n');
	}
	return 0;
}

static void snapshot(int all, uint64_t lo, uint64_t hi)
{
	struct snap_ctx c = {all, lo, hi, 0};
	out_str("snap_begin\n");
	scan_file("/proc/self/smaps", snap_line, &c);
	out_str("snap_end\n");
}

/* ---------------------------------------------------------------------------------------------- */
/* addresses                                                                                       */

static uint64_t resolve(const struct addr *a)
{
	struct lookup_ctx c;
	switch (a->kind) {
	case A_ABS:
		return a->v;
	case A_BRK:
		return init_brk + a->v;
	case A_FAIL:
		if (!fail_valid)
			fatal("fail+X: the most recent repeat did not stop at an op with an address");
		return fail_addr + a->v;
	case A_MAP:
	case A_MAPEND:
		c.name = names[a->name];
		c.found = 0;
		scan_file("/proc/self/maps", lookup_line, &c);
		if (!c.found)
			fatal3("no VMA named '", names[a->name], "' in /proc/self/maps");
		return (a->kind == A_MAP ? c.start : c.end) + a->v;
	default:
		fatal("program: missing address");
	}
	return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* touching memory                                                                                 */

static sigjmp_buf touch_jb;
static volatile sig_atomic_t in_touch;
static volatile int fault_sig, fault_code;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (!in_touch) {
		/* A fault outside a touch: die of it (the default action runs when the access repeats). */
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = SIG_DFL;
		sigaction(sig, &sa, NULL);
		return;
	}
	in_touch = 0;
	fault_sig = sig;
	fault_code = si ? si->si_code : 0;
	siglongjmp(touch_jb, 1);
}

static void install_fault_handlers(void)
{
	stack_t ss;
	struct sigaction sa;
	ss.ss_sp = altstack_mem;
	ss.ss_size = sizeof(altstack_mem);
	ss.ss_flags = 0;
	if (sigaltstack(&ss, NULL) != 0)
		fatal_errno("sigaltstack", NULL, errno);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, NULL) != 0 || sigaction(SIGBUS, &sa, NULL) != 0)
		fatal_errno("sigaction", NULL, errno);
}

static volatile unsigned char touch_val;

/* Read or write one byte; returns 0, or -1 with fault_sig/fault_code set. */
static int touch(uint64_t addr, int write, unsigned char value)
{
	if (sigsetjmp(touch_jb, 1))
		return -1;
	in_touch = 1;
	if (write)
		*(volatile unsigned char *)addr = value;
	else
		touch_val = *(volatile unsigned char *)addr;
	in_touch = 0;
	return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* /proc/self/status, capabilities                                                                 */

static int emit_status_line(char *line, size_t len, void *vctx)
{
	(void)vctx;
	if (prefix(line, "Vm") || prefix(line, "Rss")) {
		out_str("st ");
		out_mem(line, len);
		out_ch('\n');
	}
	return 0;
}

struct vm_ctx {
	uint64_t size_kb, lck_kb, peak_kb, hwm_kb;
};

static uint64_t kb_value(const char *p)
{
	uint64_t v = 0;
	while (*p && (*p < '0' || *p > '9'))
		p++;
	for (; *p >= '0' && *p <= '9'; p++)
		v = v * 10 + (uint64_t)(*p - '0');
	return v;
}

static int vm_line(char *line, size_t len, void *vctx)
{
	struct vm_ctx *c = vctx;
	(void)len;
	if (prefix(line, "VmSize:"))
		c->size_kb = kb_value(line + 7);
	else if (prefix(line, "VmLck:"))
		c->lck_kb = kb_value(line + 6);
	else if (prefix(line, "VmPeak:"))
		c->peak_kb = kb_value(line + 7);
	else if (prefix(line, "VmHWM:"))
		c->hwm_kb = kb_value(line + 6);
	return 0;
}

static struct vm_ctx vm_now(void)
{
	struct vm_ctx c = {0, 0, 0, 0};
	scan_file("/proc/self/status", vm_line, &c);
	return c;
}

struct cap_header {
	uint32_t version;
	int pid;
};

struct cap_data {
	uint32_t effective, permitted, inheritable;
};

static uint64_t caps_effective(void)
{
	struct cap_header h = {LINUX_CAPABILITY_VERSION_3, 0};
	struct cap_data d[2];
	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &h, d) != 0)
		fatal_errno("capget", NULL, errno);
	return (uint64_t)d[0].effective | ((uint64_t)d[1].effective << 32);
}

/* capset() without capability `cap` (all of them when cap < 0) in the effective, permitted and
 * inheritable sets; returns the syscall's result. */
static long drop_caps(int cap)
{
	struct cap_header h = {LINUX_CAPABILITY_VERSION_3, 0};
	struct cap_data d[2];
	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &h, d) != 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		uint32_t keep = 0;
		if (cap >= 0)
			keep = (cap / 32 == i) ? ~(1u << (cap % 32)) : ~0u;
		d[i].effective &= keep;
		d[i].permitted &= keep;
		d[i].inheritable &= keep;
	}
	h.version = LINUX_CAPABILITY_VERSION_3;
	h.pid = 0;
	return syscall(SYS_capset, &h, d);
}

/* ---------------------------------------------------------------------------------------------- */
/* ops                                                                                             */

enum {
	OP_MMAP, OP_MUNMAP, OP_MUNLOCK, OP_MPROTECT, OP_MREMAP, OP_MADVISE, OP_MLOCK, OP_MLOCK2,
	OP_MLOCKALL, OP_MUNLOCKALL, OP_MSEAL, OP_MSYNC, OP_MINCORE, OP_TOUCH, OP_BRK, OP_FTRUNCATE,
	OP_SETRLIMIT, OP_SETRLIMIT2, OP_FORK, OP_REPEAT, OP_VMA_COUNT, OP_SNAPSHOT, OP_STATUS, OP_CAPDROP,
};

static const char *const op_names[] = {
	"mmap", "munmap", "munlock", "mprotect", "mremap", "madvise", "mlock", "mlock2",
	"mlockall", "munlockall", "mseal", "msync", "mincore", "touch", "brk", "ftruncate",
	"setrlimit", "setrlimit2", "fork", "repeat", "vma_count", "snapshot", "status", "capdrop", NULL,
};

struct op {
	int code;
	struct addr a;      /* addr / old (the address a repeat advances) */
	struct addr a2;     /* mremap new_addr, snapshot range hi */
	uint64_t n[4];
	long fd;
};

static struct addr fork_reads[MAX_READS];
static int fork_nreads;

/* Parse one op line (not the repeat body that follows a repeat line). */
static void parse_op(char *line, struct op *o)
{
	char *p = line;
	char *w = word(&p);
	int code = -1;
	for (int i = 0; op_names[i]; i++)
		if (strcmp(w, op_names[i]) == 0)
			code = i;
	if (code < 0)
		fatal3("program: unknown op '", w, "'");
	memset(o, 0, sizeof(*o));
	o->code = code;
	o->fd = -1;
	switch (code) {
	case OP_MMAP:
		o->a = addr_tok(&p);
		o->n[0] = num(&p);  /* len */
		o->n[1] = num(&p);  /* prot */
		o->n[2] = num(&p);  /* flags */
		o->fd = fd_tok(&p);
		o->n[3] = num(&p);  /* offset */
		break;
	case OP_MUNMAP:
	case OP_MUNLOCK:
	case OP_MLOCK:
	case OP_MINCORE:
		o->a = addr_tok(&p);
		o->n[0] = num(&p);
		break;
	case OP_MPROTECT:
	case OP_MADVISE:
	case OP_MLOCK2:
	case OP_MSEAL:
	case OP_MSYNC:
		o->a = addr_tok(&p);
		o->n[0] = num(&p);
		o->n[1] = num(&p);
		break;
	case OP_MREMAP:
		o->a = addr_tok(&p);
		o->n[0] = num(&p);  /* old_len */
		o->n[1] = num(&p);  /* new_len */
		o->n[2] = num(&p);  /* flags */
		o->a2 = addr_tok(&p);
		break;
	case OP_MLOCKALL:
		o->n[0] = num(&p);
		break;
	case OP_TOUCH:
		o->a = addr_tok(&p);
		o->n[0] = num(&p);  /* write */
		o->n[1] = num(&p);  /* value */
		break;
	case OP_BRK:
		o->a = addr_tok(&p);
		break;
	case OP_FTRUNCATE:
		o->fd = fd_tok(&p);
		o->n[0] = num(&p);
		break;
	case OP_SETRLIMIT:
		o->n[0] = num(&p);
		o->n[1] = num(&p);
		break;
	case OP_SETRLIMIT2:
		o->n[0] = num(&p);
		o->n[1] = num(&p);
		o->n[2] = num(&p);
		break;
	case OP_FORK:
		o->n[0] = num(&p);  /* 1: all VMAs, 0: window */
		o->n[1] = num(&p);  /* number of reads */
		if (o->n[1] > MAX_READS)
			fatal("program: too many fork reads");
		fork_nreads = (int)o->n[1];
		for (int i = 0; i < fork_nreads; i++)
			fork_reads[i] = addr_tok(&p);
		break;
	case OP_REPEAT:
		o->n[0] = num(&p);  /* count */
		o->n[1] = num(&p);  /* step */
		break;
	case OP_SNAPSHOT:
		o->n[0] = num(&p);  /* 0 window, 1 all, 2 range */
		if (o->n[0] == 2) {
			o->a = addr_tok(&p);
			o->a2 = addr_tok(&p);
		}
		break;
	case OP_CAPDROP:
		o->n[0] = num(&p);  /* the capability's number */
		if (o->n[0] > 63)
			fatal("program: bad capability");
		break;
	default:
		break;
	}
	while (*p == ' ')
		p++;
	if (*p)
		fatal("program: trailing fields");
}

struct res {
	uint64_t ret;
	int err;        /* errno, 0 on success */
	int sig;        /* touch: fault signal, 0 if none */
	int code;       /* touch: si_code */
	int value;      /* touch read: the byte */
	int vec_ok;     /* mincore: vec[] holds npages entries (single call) */
	uint64_t npages;
};

static long sys_ret(long r, struct res *out)
{
	if (r == -1) {
		out->err = errno;
		out->ret = (uint64_t)-1;
	} else {
		out->ret = (uint64_t)r;
	}
	return r;
}

static void emit_vec(uint64_t n)
{
	char chunk[4096];
	size_t k = 0;
	out_str("vec ");
	for (uint64_t i = 0; i < n; i++) {
		chunk[k++] = (vec[i] & 1) ? '1' : '0';
		if (k == sizeof(chunk)) {
			out_mem(chunk, k);
			k = 0;
		}
	}
	out_mem(chunk, k);
	out_ch('\n');
}

/* mincore, split into calls of at most VEC_MAX pages for huge (valid) ranges; emits "vec" records
 * when `emit`.  A failing chunk stops; the result is the failing call's. */
static void do_mincore(uint64_t addr, uint64_t len, struct res *r, int emit)
{
	uint64_t pages = (len >> 12) + ((len & (PAGE - 1)) != 0);
	int single = pages <= VEC_MAX || addr + len < addr || addr + len > TASK_TOP || (addr & (PAGE - 1));
	if (single) {
		if (sys_ret(syscall(SYS_mincore, addr, len, vec), r) == 0 && emit)
			emit_vec(pages);
		return;
	}
	while (len > 0) {
		uint64_t chunk = len < (uint64_t)VEC_MAX * PAGE ? len : (uint64_t)VEC_MAX * PAGE;
		uint64_t cp = (chunk >> 12) + ((chunk & (PAGE - 1)) != 0);
		if (sys_ret(syscall(SYS_mincore, addr, chunk, vec), r) != 0)
			return;
		if (emit)
			emit_vec(cp);
		addr += chunk;
		len -= chunk;
	}
}

/* ---------------------------------------------------------------------------------------------- */
/* host limits (see docs/oracle.md)                                                                */

static void fatal_limit(const char *what, uint64_t want, const char *limit_name, uint64_t limit)
{
	err_begin();
	out_str("host limit: ");
	out_str(what);
	out_str(" would reach ");
	out_u64(want >> 20);
	out_str(" MiB, more than the runner allows (");
	out_str(limit_name);
	out_str(" = ");
	out_u64(limit >> 20);
	out_str(" MiB)\n");
	out_flush();
	_exit(2);
}

static int is_secret_fd(long fd)
{
	for (int i = 0; i < nsecret; i++)
		if (secret_fd[i] == fd)
			return 1;
	return 0;
}

/* Before an op that locks memory: refuse it when the locked total could pass limit_locked.  No op can
 * lock more than is mapped, so an mlock's length counts up to VmSize; an op that maps `more` new bytes
 * (`grows`) past RLIMIT_AS fails in may_expand_vm() and locks nothing. */
static void check_locked(uint64_t more, int grows)
{
	if (!limit_locked || !more)
		return;
	struct vm_ctx c = vm_now();
	if (grows && limit_as && (c.size_kb << 10) + more > limit_as)
		return;
	if ((c.lck_kb << 10) + more > limit_locked)
		fatal_limit("locked memory", (c.lck_kb << 10) + more, "VMALAB_LIMIT_LOCKED", limit_locked);
}

struct locked_ctx {
	uint64_t addr;
	int in, locked;
};

static int locked_line(char *line, size_t len, void *vctx)
{
	struct locked_ctx *c = vctx;
	(void)len;
	if (is_header(line)) {
		uint64_t s, e;
		const char *nm;
		parse_maps_line(line, &s, &e, &nm);
		c->in = s <= c->addr && c->addr < e;
	} else if (c->in && prefix(line, "VmFlags:")) {
		c->locked = strstr(line, " lo") != NULL;
		return 1;
	}
	return 0;
}

/* Whether the VMA at addr is VM_LOCKED (smaps VmFlags "lo"). */
static int vma_locked(uint64_t addr)
{
	struct locked_ctx c = {addr, 0, 0};
	scan_file("/proc/self/smaps", locked_line, &c);
	return c.locked;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static void precheck(const struct op *o, uint64_t addr)
{
	struct vm_ctx c;
	(void)addr;
	switch (o->code) {
	case OP_MADVISE:
		if ((o->n[1] == MADV_HWPOISON_ || o->n[1] == MADV_SOFT_OFFLINE_) && !allow_hwpoison)
			fatal("MADV_HWPOISON / MADV_SOFT_OFFLINE would damage this machine's memory: refused");
		break;
	case OP_MLOCK:
	case OP_MLOCK2:
		if (limit_locked && o->n[0]) {
			c = vm_now();
			check_locked(min_u64(o->n[0], c.size_kb << 10), 0);
		}
		break;
	case OP_MLOCKALL:
		if (limit_locked && (o->n[0] & MCL_CURRENT_)) {
			c = vm_now();
			check_locked(c.size_kb << 10, 0);
		}
		break;
	case OP_MMAP:
		if (limit_locked && ((o->n[2] & MAP_LOCKED_) || mcl_future || is_secret_fd(o->fd)))
			check_locked(o->n[0], 1);
		break;
	case OP_MREMAP:
		if (limit_locked && o->n[1] > o->n[0] && vma_locked(addr))
			check_locked(o->n[1] - o->n[0], 1);
		break;
	case OP_BRK:
		if (limit_locked && mcl_future) {
			uint64_t cur = (uint64_t)syscall(SYS_brk, 0);
			/* a break past the largest user address space (56 bits, 5-level paging) fails in
			 * check_brk_limits() and locks nothing */
			if (addr > cur && addr < (1ULL << 56))
				check_locked(addr - cur, 1);
		}
		break;
	default:
		break;
	}
}

struct gap_ctx {
	uint64_t lo, hi;        /* a range: bytes of VMAs inside it go to `inside` */
	uint64_t inside;
	uint64_t prev_end;      /* the gap scan: end of the previous VMA */
	uint64_t largest;       /* the largest gap between VMAs (from 64K to TASK_TOP) */
};

static int gap_line(char *line, size_t len, void *vctx)
{
	struct gap_ctx *c = vctx;
	uint64_t s, e;
	const char *nm;
	if (len == 0)
		return 0;
	parse_maps_line(line, &s, &e, &nm);
	if (is_vsyscall(nm))
		return 0;
	if (s > c->prev_end && s - c->prev_end > c->largest)
		c->largest = s - c->prev_end;
	if (e > c->prev_end)
		c->prev_end = e;
	if (s < c->hi && e > c->lo)
		c->inside += (e < c->hi ? e : c->hi) - (s > c->lo ? s : c->lo);
	return 0;
}

static struct gap_ctx gaps(uint64_t lo, uint64_t hi)
{
	struct gap_ctx c = {lo, hi, 0, 0x10000, 0};
	scan_file("/proc/self/maps", gap_line, &c);
	if (TASK_TOP > c.prev_end && TASK_TOP - c.prev_end > c.largest)
		c.largest = TASK_TOP - c.prev_end;
	return c;
}

/* After an op that failed with ENOMEM (brk: did not move): when RLIMIT_AS is still the runner's limit, the
 * request would have fitted the address space and only the limit stands in its way (may_expand_vm()), the
 * failure is the runner's limit, not the kernel's answer: say so instead of reporting it. */
static void postcheck_as(const struct op *o, uint64_t addr, uint64_t brk_before, const struct res *r)
{
	struct rlimit rl;
	struct gap_ctx g;
	uint64_t grow;
	if (!limit_as || syscall(SYS_getrlimit, RLIMIT_AS, &rl) != 0 || rl.rlim_cur != limit_as)
		return;
	if (o->code == OP_BRK) {
		if (r->ret == addr || addr <= brk_before || addr > TASK_TOP)
			return;
		if (syscall(SYS_getrlimit, RLIMIT_DATA, &rl) != 0 || rl.rlim_cur != RLIM_INFINITY)
			return;
		grow = addr - brk_before;
		g = gaps(brk_before, addr + PAGE + (256 * PAGE));  /* the page and stack guard gap above */
		if (g.inside)
			return;
	} else if (r->err != ENOMEM) {
		return;
	} else if (o->code == OP_MMAP) {
		grow = o->n[0];
		if (grow > TASK_TOP)
			return;
		if (o->n[2] & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
			if (addr > TASK_TOP - grow)
				return;
			g = gaps(addr, addr + grow);
			grow -= g.inside;  /* MAP_FIXED replaces what is there */
		} else {
			g = gaps(0, 0);
			if (g.largest < grow)
				return;  /* no room anywhere: the kernel's own ENOMEM */
		}
	} else if (o->code == OP_MREMAP && o->n[1] > o->n[0]) {
		grow = o->n[1] - o->n[0];
	} else {
		return;
	}
	struct vm_ctx c = vm_now();
	if ((c.size_kb << 10) + grow > limit_as)
		fatal_limit("the address space", (c.size_kb << 10) + grow, "VMALAB_LIMIT_AS", limit_as);
}

/* Execute one op that produces a single return value (everything but fork, repeat and snapshot). */
static void run_basic(const struct op *o, uint64_t addr, struct res *r, int emit)
{
	struct rlimit rl;
	uint64_t brk_before = 0;
	precheck(o, addr);
	if (o->code == OP_BRK && limit_as)
		brk_before = (uint64_t)syscall(SYS_brk, 0);
	memset(r, 0, sizeof(*r));
	errno = 0;
	switch (o->code) {
	case OP_MMAP:
		sys_ret(syscall(SYS_mmap, addr, o->n[0], o->n[1], o->n[2], o->fd, o->n[3]), r);
		break;
	case OP_MUNMAP:
		sys_ret(syscall(SYS_munmap, addr, o->n[0]), r);
		break;
	case OP_MUNLOCK:
		sys_ret(syscall(SYS_munlock, addr, o->n[0]), r);
		break;
	case OP_MPROTECT:
		sys_ret(syscall(SYS_mprotect, addr, o->n[0], o->n[1]), r);
		break;
	case OP_MREMAP:
		sys_ret(syscall(SYS_mremap, addr, o->n[0], o->n[1], o->n[2], resolve(&o->a2)), r);
		break;
	case OP_MADVISE:
		sys_ret(syscall(SYS_madvise, addr, o->n[0], o->n[1]), r);
		break;
	case OP_MLOCK:
		sys_ret(syscall(SYS_mlock, addr, o->n[0]), r);
		break;
	case OP_MLOCK2:
		sys_ret(syscall(NR_MLOCK2, addr, o->n[0], o->n[1]), r);
		break;
	case OP_MLOCKALL:
		if (sys_ret(syscall(SYS_mlockall, o->n[0]), r) == 0)
			mcl_future = (o->n[0] & MCL_FUTURE_) != 0;
		break;
	case OP_MUNLOCKALL:
		if (sys_ret(syscall(SYS_munlockall), r) == 0)
			mcl_future = 0;
		break;
	case OP_MSEAL:
		sys_ret(syscall(NR_MSEAL, addr, o->n[0], o->n[1]), r);
		break;
	case OP_MSYNC:
		sys_ret(syscall(SYS_msync, addr, o->n[0], o->n[1]), r);
		break;
	case OP_MINCORE:
		do_mincore(addr, o->n[0], r, emit);
		break;
	case OP_TOUCH:
		if (touch(addr, o->n[0] != 0, (unsigned char)o->n[1]) != 0) {
			r->ret = (uint64_t)-1;
			r->sig = fault_sig;
			r->code = fault_code;
		} else {
			r->value = touch_val;
		}
		break;
	case OP_BRK:
		r->ret = (uint64_t)syscall(SYS_brk, addr);
		break;
	case OP_FTRUNCATE:
		sys_ret(syscall(SYS_ftruncate, o->fd, o->n[0]), r);
		break;
	case OP_SETRLIMIT:
		if (syscall(SYS_getrlimit, o->n[0], &rl) != 0) {
			sys_ret(-1, r);
			break;
		}
		rl.rlim_cur = o->n[1];
		sys_ret(syscall(SYS_setrlimit, o->n[0], &rl), r);
		break;
	case OP_SETRLIMIT2:
		rl.rlim_cur = o->n[1];
		rl.rlim_max = o->n[2];
		sys_ret(syscall(SYS_setrlimit, o->n[0], &rl), r);
		break;
	case OP_VMA_COUNT:
		r->ret = vma_count();
		break;
	case OP_CAPDROP:
		sys_ret(drop_caps((int)o->n[0]), r);
		break;
	default:
		fatal("internal: not a basic op");
	}
	if (r->err || o->code == OP_BRK)
		postcheck_as(o, addr, brk_before, r);
}

static int has_addr(int code)
{
	switch (code) {
	case OP_MMAP: case OP_MUNMAP: case OP_MUNLOCK: case OP_MPROTECT: case OP_MREMAP: case OP_MADVISE:
	case OP_MLOCK: case OP_MLOCK2: case OP_MSEAL: case OP_MSYNC: case OP_MINCORE: case OP_TOUCH:
	case OP_BRK:
		return 1;
	default:
		return 0;
	}
}

static void emit_ret(const struct res *r)
{
	out_str("ret ");
	out_hex(r->ret);
	out_ch(' ');
	out_i64(r->err);
	out_ch('\n');
}

static void emit_touch(const char *tag, const struct res *r)
{
	out_str(tag);
	out_ch(' ');
	out_i64(r->sig ? -1 : 0);
	out_ch(' ');
	out_i64(r->value);
	out_ch(' ');
	out_i64(r->sig);
	out_ch(' ');
	out_i64(r->code);
	out_ch('\n');
}

static void run_fork(const struct op *o)
{
	struct res r;
	memset(&r, 0, sizeof(r));
	out_flush();
	long pid = syscall(SYS_fork);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		out_str("child_begin\n");
		if (o->n[0])
			snapshot(1, 0, 0);
		else
			snapshot(0, WIN_BASE, WIN_BASE + WIN_SIZE);
		for (int i = 0; i < fork_nreads; i++) {
			struct res rr;
			memset(&rr, 0, sizeof(rr));
			if (touch(resolve(&fork_reads[i]), 0, 0) != 0) {
				rr.sig = fault_sig;
				rr.code = fault_code;
			} else {
				rr.value = touch_val;
			}
			emit_touch("read", &rr);
		}
		out_str("child_end\n");
		out_flush();
		_exit(0);
	}
	if (pid < 0) {
		sys_ret(-1, &r);
		emit_ret(&r);
		return;
	}
	int status = 0;
	while (waitpid((pid_t)pid, &status, 0) < 0) {
		if (errno != EINTR)
			fatal_errno("waitpid", NULL, errno);
	}
	out_str("fork_status ");
	out_i64(status);
	out_ch('\n');
	r.ret = 0;
	emit_ret(&r);
}

static void run_repeat(const struct op *o)
{
	struct op body;
	parse_op(next_line(), &body);
	if (body.code == OP_REPEAT || body.code == OP_FORK || body.code == OP_SNAPSHOT || body.code == OP_STATUS)
		fatal("program: bad repeat body");
	uint64_t count = o->n[0], step = o->n[1];
	uint64_t base = has_addr(body.code) ? resolve(&body.a) : 0;
	uint64_t done = 0;
	int64_t failed_at = -1;
	struct res r;
	memset(&r, 0, sizeof(r));
	for (uint64_t i = 0; i < count; i++) {
		run_basic(&body, base + i * step, &r, 0);
		if (r.err || r.sig) {
			failed_at = (int64_t)i;
			break;
		}
		done++;
	}
	out_str("rep ");
	out_u64(done);
	out_ch(' ');
	out_i64(failed_at >= 0 ? r.err : 0);
	out_ch(' ');
	out_i64(failed_at);
	out_ch(' ');
	out_i64(failed_at >= 0 ? r.sig : 0);
	/* format 1.1: fail_addr, the stopped iteration's first address (for "fail+X") */
	fail_valid = failed_at >= 0 && has_addr(body.code);
	fail_addr = fail_valid ? base + (uint64_t)failed_at * step : 0;
	out_ch(' ');
	out_i64(fail_valid);
	out_ch(' ');
	out_hex(fail_addr);
	out_ch('\n');
}

static void run_op(char *line)
{
	struct op o;
	struct res r;
	parse_op(line, &o);
	switch (o.code) {
	case OP_FORK:
		run_fork(&o);
		break;
	case OP_REPEAT:
		run_repeat(&o);
		break;
	case OP_STATUS:
		scan_file("/proc/self/status", emit_status_line, NULL);
		r.ret = 0;
		r.err = 0;
		emit_ret(&r);
		break;
	case OP_SNAPSHOT:
		if (o.n[0] == 1)
			snapshot(1, 0, 0);
		else if (o.n[0] == 2)
			snapshot(0, resolve(&o.a), resolve(&o.a2));
		else
			snapshot(0, WIN_BASE, WIN_BASE + WIN_SIZE);
		break;
	default:
		run_basic(&o, has_addr(o.code) ? resolve(&o.a) : 0, &r, 1);
		if (o.code == OP_TOUCH)
			emit_touch("touch", &r);
		else
			emit_ret(&r);
		break;
	}
	out_str("done\n");
	out_flush();
}

/* ---------------------------------------------------------------------------------------------- */
/* setup                                                                                           */

static void setup_file(char *p)
{
	uint64_t idx = num(&p);
	char *kind = word(&p);
	uint64_t has_size = num(&p);
	uint64_t size = num(&p);
	char *name = rest(&p);
	int fd;
	if (idx >= MAX_FILES)
		fatal("program: too many files");
	if (strcmp(kind, "memfd") == 0)
		fd = memfd_create(name, 0);
	else if (strcmp(kind, "secretmem") == 0)
		fd = (int)syscall(NR_MEMFD_SECRET, 0);
	else if (strcmp(kind, "disk") == 0 || strcmp(kind, "tmpfs") == 0)
		fd = open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	else if (strcmp(kind, "devzero") == 0)
		fd = open("/dev/zero", O_RDWR);
	else
		fatal3("program: unknown file kind '", kind, "'");
	if (fd < 0)
		fatal_errno("cannot create file ", name, errno);
	if (strcmp(kind, "secretmem") == 0 && nsecret < MAX_FILES)
		secret_fd[nsecret++] = fd;
	if (has_size && ftruncate(fd, (off_t)size) != 0)
		fatal_errno("cannot ftruncate ", name, errno);
	file_fd[idx] = fd;
}

static void setup_slot(char *p)
{
	uint64_t slot = num(&p);
	uint64_t idx = num(&p);
	char *mode = word(&p);
	char path[64];
	int fd, flags;
	if (slot >= MAX_SLOTS || idx >= MAX_FILES || file_fd[idx] < 0)
		fatal("program: bad slot");
	if (strcmp(mode, "rw") == 0) {
		slot_fd[slot] = file_fd[idx];
		return;
	}
	flags = strcmp(mode, "ro") == 0 ? O_RDONLY : O_WRONLY;
	/* /proc/self/fd/N reopens memfds as well as regular files */
	memcpy(path, "/proc/self/fd/", 14);
	{
		char t[16];
		int i = 16, v = file_fd[idx];
		do {
			t[--i] = (char)('0' + v % 10);
			v /= 10;
		} while (v);
		memcpy(path + 14, t + i, (size_t)(16 - i));
		path[14 + 16 - i] = 0;
	}
	fd = open(path, flags);
	if (fd < 0)
		fatal_errno("cannot reopen ", path, errno);
	slot_fd[slot] = fd;
}

static void prove_window_empty(void)
{
	long r = syscall(SYS_mmap, WIN_BASE, WIN_SIZE, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
	if (r == -1)
		fatal_errno("window not empty: mmap(MAP_FIXED_NOREPLACE) of [0x500000000000, +1G) failed",
			    NULL, errno);
	if ((uint64_t)r != WIN_BASE) {
		syscall(SYS_munmap, r, WIN_SIZE);
		fatal("window not empty: MAP_FIXED_NOREPLACE was not honoured");
	}
	if (syscall(SYS_munmap, WIN_BASE, WIN_SIZE) != 0)
		fatal_errno("munmap of the window", NULL, errno);
}

static void read_program(void)
{
	for (;;) {
		if (prog_len == PROG_MAX)
			fatal("program too large");
		ssize_t n = read(0, prog + prog_len, PROG_MAX - prog_len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fatal_errno("read program", NULL, errno);
		}
		if (n == 0)
			break;
		prog_len += (size_t)n;
	}
	prog[prog_len] = 0;
	cur = prog;
}

/* Stage 1.  argv[1], when given, is the pid of the process that started the runner: the runner asks for
 * SIGKILL when that parent dies (PR_SET_PDEATHSIG survives the re-exec below) and exits at once if the
 * parent is already gone, so that killing vmalab never leaves a runner behind. */
static void stage1(const char *parent)
{
	static char *const nargv[] = {"vmalab-runner", "run", NULL};
	static char *const nenv[] = {NULL};
	if (parent) {
		uint64_t want = 0;
		for (const char *q = parent; *q >= '0' && *q <= '9'; q++)
			want = want * 10 + (uint64_t)(*q - '0');
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
			write_all(2, "vmalab-runner: prctl(PR_SET_PDEATHSIG) failed\n", 47);
			_exit(3);
		}
		if ((uint64_t)getppid() != want)
			_exit(3);  /* the parent died before the prctl */
	}
	int p = personality(0xffffffff);
	if (p == -1 || (!(p & ADDR_NO_RANDOMIZE) && personality((unsigned long)p | ADDR_NO_RANDOMIZE) == -1)) {
		write_all(2, "vmalab-runner: personality failed\n", 34);
		_exit(3);
	}
	execve("/proc/self/exe", nargv, nenv);
	write_all(2, "vmalab-runner: re-exec failed\n", 30);
	_exit(3);
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "run") != 0)
		stage1(argc >= 2 ? argv[1] : NULL);
	if (!(personality(0xffffffff) & ADDR_NO_RANDOMIZE))
		fatal("ADDR_NO_RANDOMIZE is not set after the re-exec");

	read_program();
	for (int i = 0; i < MAX_FILES; i++)
		file_fd[i] = -1;
	for (int i = 0; i < MAX_SLOTS; i++)
		slot_fd[i] = -1;

	char *line = next_line();
	if (strcmp(line, "vmalab-program 1") != 0)
		fatal("program: bad header");
	uint64_t nops = 0;
	for (;;) {
		char *p = next_line();
		char *w = word(&p);
		if (strcmp(w, "window") == 0) {
			window_mode = (int)num(&p);
		} else if (strcmp(w, "allow_hwpoison") == 0) {
			allow_hwpoison = (int)num(&p);
		} else if (strcmp(w, "unprivileged") == 0) {
			drop_all_caps = (int)num(&p);
		} else if (strcmp(w, "limit") == 0) {
			char *what = word(&p);
			uint64_t v = num(&p);
			if (strcmp(what, "as") == 0) {
				struct rlimit rl;
				if (syscall(SYS_getrlimit, RLIMIT_AS, &rl) != 0)
					fatal_errno("getrlimit", NULL, errno);
				if (v < rl.rlim_max)
					rl.rlim_max = v;
				if (rl.rlim_cur > rl.rlim_max)
					rl.rlim_cur = rl.rlim_max;
				if (syscall(SYS_setrlimit, RLIMIT_AS, &rl) != 0)
					fatal_errno("setrlimit(RLIMIT_AS)", NULL, errno);
				/* a lower limit inherited from the parent is the parent's, not the runner's */
				limit_as = rl.rlim_cur == v ? v : 0;
			} else if (strcmp(what, "locked") == 0) {
				limit_locked = v;
			} else {
				fatal3("program: unknown limit '", what, "'");
			}
		} else if (strcmp(w, "file") == 0) {
			setup_file(p);
		} else if (strcmp(w, "slot") == 0) {
			setup_slot(p);
		} else if (strcmp(w, "name") == 0) {
			uint64_t idx = num(&p);
			if (idx >= MAX_NAMES)
				fatal("program: too many names");
			names[idx] = rest(&p);
		} else if (strcmp(w, "premap") == 0) {
			/* test hook: occupy [A, A + LEN) before the window check */
			uint64_t a = num(&p), len = num(&p);
			if (syscall(SYS_mmap, a, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
				    -1, 0) == -1)
				fatal_errno("premap", NULL, errno);
		} else if (strcmp(w, "ops") == 0) {
			nops = num(&p);
			break;
		} else {
			fatal3("program: unknown line '", w, "'");
		}
	}

	if (drop_all_caps && drop_caps(-1) != 0)
		fatal_errno("capset (dropping every capability)", NULL, errno);
	install_fault_handlers();
	if (window_mode)
		prove_window_empty();
	init_brk = (uint64_t)syscall(SYS_brk, 0);
	out_str("init brk ");
	out_hex(init_brk);
	out_ch('\n');
	out_str("init caps ");
	out_hex(caps_effective());
	out_ch('\n');
	out_str("init count ");
	out_u64(vma_count());
	out_ch('\n');
	scan_file("/proc/self/maps", echo_maps_line, NULL);
	out_str("ready\n");
	out_flush();

	for (uint64_t i = 0; i < nops; i++) {
		cur_op = (long)i;
		run_op(next_line());
	}
	cur_op = -1;
	if (strcmp(next_line(), "end") != 0)
		fatal("program: missing end");
	{
		struct vm_ctx c = vm_now();
		out_str("fin ");
		out_u64(c.peak_kb);
		out_ch(' ');
		out_u64(c.hwm_kb);
		out_ch('\n');
	}
	out_str("end\n");
	out_flush();
	return 0;
}
