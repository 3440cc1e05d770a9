/* the descriptor calls the recorder follows: open, creat and openat2 (recorded as openat), ftruncate, a
 * shared mmap of the file, fcntl(F_DUPFD_CLOEXEC), memfd_create, close_range.  argv[1]: a file to create. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	int a = (int)syscall(SYS_open, "/etc/passwd", O_RDONLY, 0);
	int b = (int)syscall(SYS_creat, argv[1], 0600);
	struct open_how how = {.flags = O_RDWR, .mode = 0};
	int c = (int)syscall(SYS_openat2, AT_FDCWD, argv[1], &how, sizeof how);
	if (a < 0 || b < 0 || c < 0 || ftruncate(c, 8192) != 0)
		return 1;
	void *p = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, c, 0);
	int d = fcntl(c, F_DUPFD_CLOEXEC, 10);
	int m = memfd_create("vmalab", MFD_CLOEXEC);
	syscall(SYS_close_range, 20, 30, 0);
	return p == MAP_FAILED || d < 10 || m < 0;
}
