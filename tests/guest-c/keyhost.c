/* Host side of the keyring test (tests/boundary_tty.rs): joins a new
   session keyring, puts a secret "user" key in it, runs the command given
   (xroot ...), then says whether a key the guest added is in its session
   keyring. Exits with the command's status. */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    long s = syscall(SYS_keyctl, 1 /* JOIN_SESSION_KEYRING */, (char *)0);
    long k = syscall(SYS_add_key, "user", "xroot-test-secret", "s3cret", 6, -3);
    printf("host session %ld key %ld\n", s, k);
    fflush(stdout);
    if (s < 0 || k < 0) return 3;
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[1], argv + 1);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    long g = syscall(SYS_keyctl, 10 /* SEARCH */, -3, "user", "xroot-guest-key", 0);
    printf("host sees guest key: %s\n", g >= 0 ? "yes" : "no");
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}
