/* The native side of tests/emu: run PROG with ASLR off (personality(ADDR_NO_RANDOMIZE), what `setarch -R`
 * does) and an empty environment, argv as given, under ptrace.  Its stdout and stderr pass through.
 * REPORT gets one line per synchronous fault signal the program takes, as the kernel delivers it --
 * `signal 11 code 2 addr 0x7ffff7ff5010 rip 0x401234` (si_signo, si_code, si_addr, the faulting
 * instruction's address) -- and a last line `exit N` or `killed N` (the signal the process died of).
 *
 * usage: native_run REPORT PROG [ARGS...] */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: native_run REPORT PROG [ARGS...]\n");
        return 2;
    }
    FILE *report = fopen(argv[1], "w");
    if (!report) {
        perror(argv[1]);
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        char *envp[] = {NULL};
        if (personality(ADDR_NO_RANDOMIZE) < 0 || ptrace(PTRACE_TRACEME, 0, 0, 0) < 0) {
            perror("native_run: personality/ptrace");
            _exit(127);
        }
        execve(argv[2], argv + 2, envp);
        perror(argv[2]);
        _exit(127);
    }
    int status, execed = 0;
    for (;;) {
        if (waitpid(pid, &status, 0) < 0) {
            perror("waitpid");
            return 2;
        }
        if (WIFEXITED(status)) {
            fprintf(report, "exit %d\n", WEXITSTATUS(status));
            break;
        }
        if (WIFSIGNALED(status)) {
            fprintf(report, "killed %d\n", WTERMSIG(status));
            break;
        }
        int sig = WSTOPSIG(status);
        if (sig == SIGTRAP && !execed) {  /* the stop after execve */
            execed = 1;
            sig = 0;
        } else if (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE) {
            struct user_regs_struct regs;
            siginfo_t si;
            if (ptrace(PTRACE_GETREGS, pid, 0, &regs) == 0 && ptrace(PTRACE_GETSIGINFO, pid, 0, &si) == 0)
                fprintf(report, "signal %d code %d addr %#lx rip %#llx\n", si.si_signo, si.si_code,
                        (unsigned long)si.si_addr, regs.rip);
        }
        ptrace(PTRACE_CONT, pid, 0, (void *)(long)sig);
    }
    fclose(report);
    return 0;
}
