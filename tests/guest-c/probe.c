/* Guest probe for tests/boundary_tty.rs: tries, from inside the guest,
   what issue #13 classes 1, 3 and 6 say must fail, and prints one line
   per attempt ("WHAT: ok" or "WHAT: <errno name>"). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <unistd.h>

static void report(const char *what, int rc) {
    if (rc < 0) printf("%s: %s\n", what, strerrorname_np(errno));
    else printf("%s: ok\n", what);
    fflush(stdout);
}

static int sti(int fd, const char *s) {
    for (; *s; s++) if (ioctl(fd, TIOCSTI, s) < 0) return -1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *m = argv[1];
    char what[64];
    if (!strcmp(m, "sti")) {
        /* Types a command into every terminal it can find: fds 0-2 and
           /dev/tty, first plainly, then after trying to make it our
           controlling terminal (TIOCSCTTY, stealing with arg 1). */
        const char *text = "echo XROOT-INJECTED\n";
        int tty = open("/dev/tty", O_RDWR);
        snprintf(what, sizeof what, "open /dev/tty");
        report(what, tty);
        int fds[4] = {0, 1, 2, tty};
        for (int i = 0; i < 4; i++) {
            if (fds[i] < 0) continue;
            snprintf(what, sizeof what, "TIOCSTI fd %d", fds[i]);
            report(what, sti(fds[i], text));
            snprintf(what, sizeof what, "TIOCSCTTY fd %d", fds[i]);
            report(what, ioctl(fds[i], TIOCSCTTY, 1));
            snprintf(what, sizeof what, "TIOCSTI after TIOCSCTTY fd %d", fds[i]);
            report(what, sti(fds[i], text));
            char sel[2] = {2 /* TIOCL_SETSEL */, 0};
            snprintf(what, sizeof what, "TIOCLINUX fd %d", fds[i]);
            report(what, ioctl(fds[i], TIOCLINUX, sel));
        }
        return 0;
    }
    if (!strcmp(m, "fds")) {
        /* Every descriptor above 2 it holds, and what reading it gives. */
        for (int fd = 3; fd < 1024; fd++) {
            if (fcntl(fd, F_GETFD) < 0) continue;
            char p[64], link[256] = "";
            snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
            ssize_t n = readlink(p, link, sizeof link - 1);
            if (n > 0) link[n] = 0;
            char buf[128] = "";
            /* Nonblocking: an inherited pipe or terminal must not hang us. */
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            int r = open(p, O_RDONLY | O_NONBLOCK);
            n = r >= 0 ? read(r, buf, sizeof buf - 1) : pread(fd, buf, sizeof buf - 1, 0);
            if (n > 0) buf[n] = 0;
            if (r >= 0) close(r);
            char *nl = strchr(buf, '\n');
            if (nl) *nl = 0;
            printf("OPEN %d %s: %s\n", fd, link, buf);
        }
        printf("fds done\n");
        return 0;
    }
    if (!strcmp(m, "keys") && argc > 2) {
        /* The session keyring: whose is it, does it hold the caller's
           secret, and can we leave a key in it. */
        long id = syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* SESSION */, 0);
        printf("session %ld\n", id);
        long k = syscall(SYS_keyctl, 10 /* SEARCH */, -3, "user", argv[2], 0);
        report("search caller's key", k);
        if (k >= 0) {
            char buf[64] = "";
            long n = syscall(SYS_keyctl, 11 /* READ */, k, buf, sizeof buf - 1);
            if (n > 0) printf("read: %.*s\n", (int)n, buf);
        }
        long a = syscall(SYS_add_key, "user", "xroot-guest-key", "from-guest", 10, -3);
        report("add_key", a);
        return 0;
    }
    if (!strcmp(m, "scope") && argc > 2) {
        /* An abstract unix socket the test listens on outside, and
           signals to PID 1, which is xroot's, outside the guest. */
        signal(SIGUSR2, SIG_IGN);
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        size_t len = strlen(argv[2]);
        memcpy(a.sun_path + 1, argv[2], len);
        report("connect abstract", connect(s, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + len));
        report("kill 1 0", kill(1, 0));
        report("kill 1 SIGUSR2", kill(1, SIGUSR2));
        if (argc > 3) {
            int t = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
            in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            report("connect tcp 127.0.0.1", connect(t, (struct sockaddr *)&in, sizeof in));
        }
        char ns[64] = "";
        ssize_t n = readlink("/proc/self/ns/net", ns, sizeof ns - 1);
        if (n > 0) printf("net %.*s\n", (int)n, ns);
        return 0;
    }
    if (!strcmp(m, "sleep") && argc > 2) {
        printf("sleeping\n");
        fflush(stdout);
        sleep(atoi(argv[2]));
        return 0;
    }
    if (!strcmp(m, "cat")) {
        /* stdin to stdout until end-of-file. */
        char buf[256];
        ssize_t n;
        printf("reading\n");
        fflush(stdout);
        while ((n = read(0, buf, sizeof buf)) > 0) write(1, buf, n);
        printf("cat done\n");
        return 0;
    }
    if (!strcmp(m, "exit") && argc > 2) return atoi(argv[2]);
    return 2;
}
