/* vmalab-tracer: record a real program's memory syscalls under ptrace (vmalab.oracle.record_program).
 *
 * Usage: vmalab-tracer PARENT_PID LOG STDOUT_TO_STDERR PATH ARGV0 [ARGS...]
 *
 * The tracer asks for SIGKILL when PARENT_PID (the Python process that started it) dies, forks the
 * command with ASLR off (personality ADDR_NO_RANDOMIZE), PTRACE_TRACEME and a SIGSTOP before execv(PATH),
 * then follows it and every task it creates (PTRACE_O_TRACEFORK|VFORK|CLONE|EXEC|EXIT|TRACESYSGOOD|
 * EXITKILL: when the tracer dies, every tracee is killed) through syscall-entry and -exit stops
 * (PTRACE_GET_SYSCALL_INFO).  It writes line RECORDS to LOG (numbers decimal, strings as hex):
 *
 *   start PID
 *   task TID TGID PARENT_TID EVENT          a new task (EVENT fork|vfork|clone), written at the parent's event stop
 *   sys TID TGID NAME RET A0 A1 A2 A3 A4 A5 [KEY=HEX]...   a recorded syscall at its exit (exit_group: at
 *                                           its entry, RET "-"); KEY: path (the string argument), fdpath
 *                                           (readlink /proc/TID/fd/N of the fd argument at entry, or of the
 *                                           returned fd at exit), cflags/cmode (clone3's flags;
 *                                           openat2's open_how flags and mode), decimal; seq=ENTRY,EXIT
 *                                           (the global stop counter at its entry and exit stops);
 *                                           file=DEV,INO,SIZE,FSMAGIC (decimal; stat and statfs of
 *                                           /proc/TID/fd/N: the fd an mmap maps at entry, the new fd of an
 *                                           open or memfd_create at exit; for an execve the path at entry)
 *   xpath TID HEX / xarg TID HEX / xenv TID HEX    an execve's path, argv and envp, read at its entry
 *   exec TGID OLD_TID                       the PTRACE_EVENT_EXEC stop, followed by the new image's blobs
 *   blob TGID KIND LEN\n<LEN bytes>\n       KIND exec_maps|exec_smaps|final_maps|final_smaps
 *   exit TID TGID code|signal N             a task ended (waitpid)
 *   warn TEXT / err TEXT                    a note / a fatal problem (exit status 2)
 *   end STATUS                              the root process's wait status
 *
 * Final maps are captured at the PTRACE_EVENT_EXIT stop of the first thread of a group that exits after
 * an exit_group or a fatal signal, or of its last thread: the mm is still whole there.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_mseal
#define SYS_mseal 462
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif

#define INFO_ENTRY 1
#define INFO_EXIT 2
struct sysinfo_ {
	uint8_t op;
	uint8_t pad[3];
	uint32_t arch;
	uint64_t ip, sp;
	union {
		struct { uint64_t nr, args[6]; } entry;
		struct { int64_t rval; uint8_t is_error; } exit;
		struct { uint64_t nr, args[6]; uint32_t ret_data; } seccomp;
	};
};

enum { K_MEM = 1, K_FD_PATH, K_FD, K_FD_RET, K_CLONE, K_EXEC, K_EXIT_GROUP, K_FCNTL, K_MEMFD };

struct sysdesc { long nr; const char *name; int kind; int path_arg; int fd_arg; };
static const struct sysdesc SYSCALLS[] = {
	{SYS_mmap, "mmap", K_MEM, -1, 4},        {SYS_munmap, "munmap", K_MEM, -1, -1},
	{SYS_mprotect, "mprotect", K_MEM, -1, -1}, {SYS_mremap, "mremap", K_MEM, -1, -1},
	{SYS_brk, "brk", K_MEM, -1, -1},          {SYS_madvise, "madvise", K_MEM, -1, -1},
	{SYS_mlock, "mlock", K_MEM, -1, -1},      {SYS_mlock2, "mlock2", K_MEM, -1, -1},
	{SYS_munlock, "munlock", K_MEM, -1, -1},  {SYS_mlockall, "mlockall", K_MEM, -1, -1},
	{SYS_munlockall, "munlockall", K_MEM, -1, -1}, {SYS_mseal, "mseal", K_MEM, -1, -1},
	{SYS_msync, "msync", K_MEM, -1, -1},      {SYS_mincore, "mincore", K_MEM, -1, -1},
	{SYS_open, "open", K_FD_PATH, 0, -1},     {SYS_openat, "openat", K_FD_PATH, 1, -1},
	{SYS_openat2, "openat2", K_FD_PATH, 1, -1}, {SYS_creat, "creat", K_FD_PATH, 0, -1},
	{SYS_memfd_create, "memfd_create", K_MEMFD, 0, -1},
	{SYS_close, "close", K_FD, -1, 0},        {SYS_close_range, "close_range", K_FD, -1, -1},
	{SYS_dup, "dup", K_FD_RET, -1, 0},        {SYS_dup2, "dup2", K_FD_RET, -1, 0},
	{SYS_dup3, "dup3", K_FD_RET, -1, 0},      {SYS_fcntl, "fcntl_dupfd", K_FCNTL, -1, 0},
	{SYS_ftruncate, "ftruncate", K_FD, -1, 0},
	{SYS_clone, "clone", K_CLONE, -1, -1},    {SYS_clone3, "clone3", K_CLONE, -1, -1},
	{SYS_fork, "fork", K_CLONE, -1, -1},      {SYS_vfork, "vfork", K_CLONE, -1, -1},
	{SYS_execve, "execve", K_EXEC, 0, -1},    {SYS_execveat, "execveat", K_EXEC, 1, -1},
	{SYS_exit_group, "exit_group", K_EXIT_GROUP, -1, -1},
};
#define NSYS (sizeof(SYSCALLS) / sizeof(SYSCALLS[0]))

#define STR_MAX 4096
#define MAX_TASKS 8192
struct task {
	int tid, tgid;
	unsigned long long entry_seq;  /* the stop counter at the recorded syscall's entry */
	char file[128];                /* " file=..." of the file the call names, or "" */
	int used, fresh;          /* fresh: its first (attach) SIGSTOP is still to come */
	int insys;                /* a recorded syscall's entry was seen */
	const struct sysdesc *d;
	uint64_t args[6];
	char path[STR_MAX], fdpath[STR_MAX];
	uint64_t cflags, cmode;
	int has_cflags;
};
static struct task tasks[MAX_TASKS];

#define MAX_GROUPS 8192
struct group { int tgid, used, exiting, final_done; };
static struct group groups[MAX_GROUPS];

static FILE *logf;
static int root_pid;
static unsigned long long seq;  /* incremented at every syscall-entry and syscall-exit stop */

static void fatal(const char *fmt, const char *arg)
{
	if (logf) {
		fprintf(logf, "err ");
		fprintf(logf, fmt, arg ? arg : "");
		fprintf(logf, "\n");
		fflush(logf);
	} else {
		fprintf(stderr, "vmalab-tracer: ");
		fprintf(stderr, fmt, arg ? arg : "");
		fprintf(stderr, "\n");
	}
	exit(2);  /* PTRACE_O_EXITKILL kills every tracee */
}

static struct task *task_find(int tid)
{
	for (int i = 0; i < MAX_TASKS; i++)
		if (tasks[i].used && tasks[i].tid == tid)
			return &tasks[i];
	return NULL;
}

static int read_tgid(int tid)
{
	char p[64], buf[4096];
	snprintf(p, sizeof p, "/proc/%d/status", tid);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tid;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return tid;
	buf[n] = 0;
	char *t = strstr(buf, "\nTgid:");
	return t ? atoi(t + 6) : tid;
}

static struct task *task_add(int tid, int tgid, int fresh)
{
	for (int i = 0; i < MAX_TASKS; i++)
		if (!tasks[i].used) {
			memset(&tasks[i], 0, sizeof tasks[i]);
			tasks[i].used = 1;
			tasks[i].tid = tid;
			tasks[i].tgid = tgid;
			tasks[i].fresh = fresh;
			return &tasks[i];
		}
	fatal("more than %s live tasks", "8192");
	return NULL;
}

static struct group *group_get(int tgid)
{
	struct group *free_slot = NULL;
	for (int i = 0; i < MAX_GROUPS; i++) {
		if (groups[i].used && groups[i].tgid == tgid)
			return &groups[i];
		if (!groups[i].used && !free_slot)
			free_slot = &groups[i];
	}
	if (!free_slot)
		fatal("more than %s live processes", "8192");
	memset(free_slot, 0, sizeof *free_slot);
	free_slot->used = 1;
	free_slot->tgid = tgid;
	return free_slot;
}

static int live_threads(int tgid)
{
	int n = 0;
	for (int i = 0; i < MAX_TASKS; i++)
		n += tasks[i].used && tasks[i].tgid == tgid;
	return n;
}

/* a NUL-terminated string of the tracee, at most max-1 bytes, read page by page */
static int read_string(int tid, uint64_t addr, char *out, size_t max)
{
	size_t got = 0;
	out[0] = 0;
	if (!addr)
		return -1;
	while (got < max - 1) {
		size_t chunk = 4096 - ((addr + got) & 4095);
		if (chunk > max - 1 - got)
			chunk = max - 1 - got;
		struct iovec local = {out + got, chunk}, remote = {(void *)(uintptr_t)(addr + got), chunk};
		ssize_t n = process_vm_readv(tid, &local, 1, &remote, 1, 0);
		if (n <= 0)
			break;
		void *z = memchr(out + got, 0, (size_t)n);
		if (z)
			return 0;
		got += (size_t)n;
	}
	out[got] = 0;
	return got ? 0 : -1;
}

static void put_hex(const char *s)
{
	static const char digits[] = "0123456789abcdef";
	if (!*s) {
		fputc('-', logf);
		return;
	}
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		fputc(digits[c >> 4], logf);
		fputc(digits[c & 15], logf);
	}
}

static void fd_path(int tid, long fd, char *out)
{
	char p[64];
	out[0] = 0;
	if (fd < 0 || fd > 0x7fffffff)
		return;
	snprintf(p, sizeof p, "/proc/%d/fd/%ld", tid, fd);
	ssize_t n = readlink(p, out, STR_MAX - 1);
	out[n > 0 ? n : 0] = 0;
}

/* the identity of a file as the tracee sees it: device, inode, size, file-system magic */
static void file_id(const char *path, char *out, size_t max)
{
	struct stat st;
	struct statfs sf;
	out[0] = 0;
	if (stat(path, &st) != 0)
		return;
	if (statfs(path, &sf) != 0)
		sf.f_type = 0;
	snprintf(out, max, " file=%llu,%llu,%lld,%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
		 (long long)st.st_size, (unsigned long long)(unsigned long)sf.f_type);
}

static void fd_file_id(int tid, long fd, char *out, size_t max)
{
	char p[64];
	out[0] = 0;
	if (fd < 0 || fd > 0x7fffffff)
		return;
	snprintf(p, sizeof p, "/proc/%d/fd/%ld", tid, fd);
	file_id(p, out, max);
}

/* an execve's file, as the tracee names it: through its root, its working directory or its dirfd */
static void exec_file_id(int tid, const struct sysdesc *d, const uint64_t *args, const char *path, char *out,
			 size_t max)
{
	static char p[STR_MAX + 64];
	long dirfd = d->nr == SYS_execveat ? (long)(int)args[0] : AT_FDCWD;
	if (path[0] == '/')
		snprintf(p, sizeof p, "/proc/%d/root%s", tid, path);
	else if (!path[0] && d->nr == SYS_execveat && (args[4] & AT_EMPTY_PATH))
		snprintf(p, sizeof p, "/proc/%d/fd/%ld", tid, dirfd);
	else if (dirfd == AT_FDCWD)
		snprintf(p, sizeof p, "/proc/%d/cwd/%s", tid, path);
	else
		snprintf(p, sizeof p, "/proc/%d/fd/%ld/%s", tid, dirfd, path);
	file_id(p, out, max);
}

static void blob(int tgid, const char *kind, const char *file)
{
	char p[64];
	snprintf(p, sizeof p, "/proc/%d/%s", tgid, file);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	static char *buf;
	static size_t cap;
	size_t len = 0;
	if (!buf) {
		cap = 1 << 20;
		buf = malloc(cap);
		if (!buf)
			fatal("out of memory%s", "");
	}
	if (fd >= 0) {
		for (;;) {
			if (len == cap) {
				cap *= 2;
				buf = realloc(buf, cap);
				if (!buf)
					fatal("out of memory%s", "");
			}
			ssize_t n = read(fd, buf + len, cap - len);
			if (n <= 0)
				break;
			len += (size_t)n;
		}
		close(fd);
	}
	fprintf(logf, "blob %d %s %zu\n", tgid, kind, len);
	fwrite(buf, 1, len, logf);
	fputc('\n', logf);
}

/* argv or envp of an execve at its entry: one line per string */
static void exec_vector(int tid, const char *tag, uint64_t vec)
{
	static char s[131072];
	for (int i = 0; vec && i < 65536; i++) {
		uint64_t p = 0;
		struct iovec local = {&p, 8}, remote = {(void *)(uintptr_t)(vec + 8 * (uint64_t)i), 8};
		if (process_vm_readv(tid, &local, 1, &remote, 1, 0) != 8 || !p)
			break;
		if (read_string(tid, p, s, sizeof s) != 0)
			s[0] = 0;
		fprintf(logf, "%s %d ", tag, tid);
		if (s[0])
			put_hex(s);
		else
			fputc('-', logf);
		fputc('\n', logf);
	}
}

static const struct sysdesc *lookup(uint64_t nr)
{
	for (size_t i = 0; i < NSYS; i++)
		if ((uint64_t)SYSCALLS[i].nr == nr)
			return &SYSCALLS[i];
	return NULL;
}

static void on_entry(struct task *t, const struct sysinfo_ *si)
{
	const struct sysdesc *d = lookup(si->entry.nr);
	t->insys = 0;
	if (!d)
		return;
	if (d->kind == K_FCNTL && si->entry.args[1] != F_DUPFD && si->entry.args[1] != F_DUPFD_CLOEXEC)
		return;
	t->d = d;
	t->insys = 1;
	t->entry_seq = seq;
	memcpy(t->args, si->entry.args, sizeof t->args);
	t->path[0] = t->fdpath[0] = t->file[0] = 0;
	t->has_cflags = 0;
	if (d->path_arg >= 0)
		read_string(t->tid, si->entry.args[d->path_arg], t->path, STR_MAX);
	if (d->fd_arg >= 0 && !(d->nr == SYS_mmap && (si->entry.args[3] & 0x20 /* MAP_ANONYMOUS */))) {
		fd_path(t->tid, (long)si->entry.args[d->fd_arg], t->fdpath);
		if (d->nr == SYS_mmap)
			fd_file_id(t->tid, (long)(int)si->entry.args[d->fd_arg], t->file, sizeof t->file);
	}
	if (d->nr == SYS_clone3 || d->nr == SYS_openat2) { /* clone_args.flags, open_how.flags / .mode */
		uint64_t w[2] = {0, 0};
		int at = d->nr == SYS_clone3 ? 0 : 2;
		struct iovec local = {w, 16}, remote = {(void *)(uintptr_t)si->entry.args[at], 16};
		t->has_cflags = process_vm_readv(t->tid, &local, 1, &remote, 1, 0) == 16;
		t->cflags = w[0];
		t->cmode = w[1];
	}
	if (d->kind == K_EXEC) {
		fprintf(logf, "xpath %d ", t->tid);
		put_hex(t->path);
		fputc('\n', logf);
		exec_vector(t->tid, "xarg", si->entry.args[d->path_arg + 1]);
		exec_vector(t->tid, "xenv", si->entry.args[d->path_arg + 2]);
		exec_file_id(t->tid, d, si->entry.args, t->path, t->file, sizeof t->file);
		struct stat st;
		if (geteuid() != 0 && stat(t->path, &st) == 0 && (st.st_mode & (S_ISUID | S_ISGID)))
			fprintf(logf, "warn setid %s\n", t->path);
	}
	if (d->kind == K_EXIT_GROUP) {
		group_get(t->tgid)->exiting = 1;
		fprintf(logf, "sys %d %d exit_group - %llu 0 0 0 0 0 seq=%llu,%llu\n", t->tid, t->tgid,
			(unsigned long long)si->entry.args[0], seq, seq);
		t->insys = 0;
	}
}

static void on_exit_(struct task *t, const struct sysinfo_ *si)
{
	if (!t->insys)
		return;
	t->insys = 0;
	const struct sysdesc *d = t->d;
	int64_t ret = si->exit.rval;
	if ((d->kind == K_FD_PATH || d->kind == K_MEMFD || d->kind == K_FD_RET || d->kind == K_FCNTL) && ret >= 0)
		fd_path(t->tid, (long)ret, t->fdpath);
	if ((d->kind == K_FD_PATH || d->kind == K_MEMFD) && ret >= 0)
		fd_file_id(t->tid, (long)ret, t->file, sizeof t->file);
	fprintf(logf, "sys %d %d %s %lld", t->tid, t->tgid, d->name, (long long)ret);
	for (int i = 0; i < 6; i++)
		fprintf(logf, " %llu", (unsigned long long)t->args[i]);
	if (t->path[0] && d->kind != K_EXEC) {
		fputs(" path=", logf);
		put_hex(t->path);
	}
	if (t->fdpath[0]) {
		fputs(" fdpath=", logf);
		put_hex(t->fdpath);
	}
	if (t->has_cflags)
		fprintf(logf, " cflags=%llu cmode=%llu", (unsigned long long)t->cflags, (unsigned long long)t->cmode);
	if (t->file[0] && (d->kind != K_EXEC || ret == 0))
		fputs(t->file, logf);
	fprintf(logf, " seq=%llu,%llu\n", t->entry_seq, seq);
}

static void final_maps(int tgid)
{
	struct group *g = group_get(tgid);
	if (g->final_done)
		return;
	g->final_done = 1;
	blob(tgid, "final_maps", "maps");
	blob(tgid, "final_smaps", "smaps");
}

static void restart(int tid, int sig)
{
	if (ptrace(PTRACE_SYSCALL, tid, 0, (void *)(long)sig) != 0 && errno != ESRCH)
		fatal("PTRACE_SYSCALL failed: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: vmalab-tracer PARENT_PID LOG STDOUT_TO_STDERR PATH ARGV0 [ARGS...]\n");
		return 2;
	}
	int parent = atoi(argv[1]);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || (parent > 0 && getppid() != parent))
		return 3;
	logf = fopen(argv[2], "we");
	if (!logf) {
		fprintf(stderr, "vmalab-tracer: cannot open %s: %s\n", argv[2], strerror(errno));
		return 2;
	}
	setvbuf(logf, NULL, _IOFBF, 1 << 20);
	int errpipe[2];
	if (pipe2(errpipe, O_CLOEXEC) != 0)
		fatal("pipe: %s", strerror(errno));
	pid_t tracer = getpid();
	pid_t child = fork();
	if (child < 0)
		fatal("fork: %s", strerror(errno));
	if (child == 0) {
		char msg[256];
		close(errpipe[0]);
		/* until PTRACE_O_EXITKILL is set, a dying tracer must not leave this child stopped */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != tracer)
			_exit(127);
		if (atoi(argv[3]) && dup2(2, 1) < 0)
			_exit(127);
		int p = personality(0xffffffff);
		if (p == -1 || personality((unsigned long)p | ADDR_NO_RANDOMIZE) == -1) {
			snprintf(msg, sizeof msg, "personality(ADDR_NO_RANDOMIZE) failed: %s", strerror(errno));
		} else if (ptrace(PTRACE_TRACEME, 0, 0, 0) != 0) {
			snprintf(msg, sizeof msg, "ptrace refused: PTRACE_TRACEME: %s", strerror(errno));
		} else {
			raise(SIGSTOP);
			execv(argv[4], argv + 5);
			snprintf(msg, sizeof msg, "cannot execute %s: %s", argv[4], strerror(errno));
		}
		if (write(errpipe[1], msg, strlen(msg)) < 0)
			_exit(126);
		_exit(127);
	}
	close(errpipe[1]);
	root_pid = child;
	int status;
	if (waitpid(child, &status, __WALL) != child)
		fatal("waitpid: %s", strerror(errno));
	if (!WIFSTOPPED(status)) {
		char msg[300] = "";
		ssize_t n = read(errpipe[0], msg, sizeof msg - 1);
		msg[n > 0 ? n : 0] = 0;
		fatal("%s", msg[0] ? msg : "the command could not be started");
	}
	long opts = PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC |
		PTRACE_O_TRACEEXIT | PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL;
	if (ptrace(PTRACE_SETOPTIONS, child, 0, (void *)opts) != 0)
		fatal("ptrace refused: PTRACE_SETOPTIONS: %s", strerror(errno));
	fprintf(logf, "start %d\n", child);
	task_add(child, child, 0);
	group_get(child);
	restart(child, 0);
	int root_status = -1;
	for (;;) {
		int tid = waitpid(-1, &status, __WALL);
		if (tid < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECHILD)
				break;
			fatal("waitpid: %s", strerror(errno));
		}
		struct task *t = task_find(tid);
		if (WIFEXITED(status) || WIFSIGNALED(status)) {
			int tgid = t ? t->tgid : tid;
			if (WIFEXITED(status))
				fprintf(logf, "exit %d %d code %d\n", tid, tgid, WEXITSTATUS(status));
			else
				fprintf(logf, "exit %d %d signal %d\n", tid, tgid, WTERMSIG(status));
			if (t)
				t->used = 0;
			if (tid == root_pid)
				root_status = status;
			if (live_threads(tgid) == 0)
				group_get(tgid)->used = 0;
			continue;
		}
		if (!WIFSTOPPED(status))
			continue;
		if (!t) /* a new task whose attach stop came before its parent's event */
			t = task_add(tid, read_tgid(tid), 1);
		int sig = WSTOPSIG(status), event = status >> 16;
		if (sig == (SIGTRAP | 0x80)) {
			struct sysinfo_ si;
			memset(&si, 0, sizeof si);
			if (ptrace(PTRACE_GET_SYSCALL_INFO, tid, (void *)sizeof si, &si) <= 0)
				fatal("PTRACE_GET_SYSCALL_INFO failed: %s", strerror(errno));
			seq++;
			if (si.arch != AUDIT_ARCH_X86_64) {
				static int warned;
				if (!warned++)
					fprintf(logf, "warn a syscall of another architecture (32-bit) is not recorded\n");
			} else if (si.op == INFO_ENTRY) {
				on_entry(t, &si);
			} else if (si.op == INFO_EXIT) {
				on_exit_(t, &si);
			}
			restart(tid, 0);
		} else if (sig == SIGTRAP && event) {
			unsigned long msg = 0;
			ptrace(PTRACE_GETEVENTMSG, tid, 0, &msg);
			if (event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK || event == PTRACE_EVENT_CLONE) {
				int ctid = (int)msg, ctgid = read_tgid(ctid);
				struct task *c = task_find(ctid);
				if (!c)
					c = task_add(ctid, ctgid, 1);
				else
					c->tgid = ctgid;
				if (ctgid != t->tgid)
					group_get(ctgid);
				fprintf(logf, "task %d %d %d %s\n", ctid, ctgid, tid,
					event == PTRACE_EVENT_FORK ? "fork" : event == PTRACE_EVENT_VFORK ? "vfork" : "clone");
			} else if (event == PTRACE_EVENT_EXEC) {
				int old = (int)msg;
				if (old != tid) { /* a non-leader thread exec'd: it now has the leader's tid */
					struct task *o = task_find(old);
					if (o) {
						struct task keep = *o;
						o->used = 0;
						keep.tid = tid;
						*t = keep;
					}
				}
				struct group *g = group_get(t->tgid);
				g->exiting = 0;
				g->final_done = 0;
				fprintf(logf, "exec %d %d\n", t->tgid, old);
				blob(t->tgid, "exec_maps", "maps");
				blob(t->tgid, "exec_smaps", "smaps");
			} else if (event == PTRACE_EVENT_EXIT) {
				struct group *g = group_get(t->tgid);
				int st = (int)msg;
				if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL)
					g->exiting = 1;
				if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL && t->tid == t->tgid)
					g->exiting = 1;  /* killed (or a sibling's exec: the exec event replaces this) */
				if (g->exiting || live_threads(t->tgid) == 1)
					final_maps(t->tgid);
			}
			restart(tid, 0);
		} else {
			siginfo_t info;
			if (t->fresh && sig == SIGSTOP) {
				t->fresh = 0;  /* the attach stop of a new task */
				restart(tid, 0);
			} else if (ptrace(PTRACE_GETSIGINFO, tid, 0, &info) != 0 && errno == EINVAL) {
				restart(tid, 0);  /* a group-stop: resume (the tracer does not keep it stopped) */
			} else {
				restart(tid, sig);  /* a signal-delivery stop: deliver it */
			}
		}
	}
	fprintf(logf, "end %d\n", root_status);
	if (fflush(logf) != 0 || ferror(logf))
		fatal("cannot write the log: %s", strerror(errno));
	return 0;
}
