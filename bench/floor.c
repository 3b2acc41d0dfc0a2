/*
 * bench/floor.c - the machine's floor for fan-out: the CPU one write() per
 * delivery costs.
 *
 * Opens N TCP connections on 127.0.0.1, forks a reader process that accepts
 * them and drains them with epoll, then writes a SIZE-byte message to each of
 * the N sockets ROUNDS times (one write() per delivery, as a server that makes
 * one system call per delivery would) and reports the writer's CPU time
 * (user + system, from getrusage) per write. A round waits until the reader
 * has drained it, so socket buffers never fill and no write is partial.
 *
 *   floor [-n CONNS] [-r ROUNDS] [-s SIZE]
 *
 * Prints one line: "floor conns=N rounds=R size=S writes=W cpu_us_per_write=X".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static double cpu_us(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) die("getrusage");
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* The reader: accept n connections, drain them, and after every `per_round`
 * bytes in total write one byte on `ack` so the writer starts the next round. */
static void reader(int lfd, int n, long per_round, int ack)
{
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < n; i++) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) die("accept");
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
    }
    char buf[65536];
    struct epoll_event evs[256];
    long got = 0;
    for (;;) {
        int k = epoll_wait(ep, evs, 256, -1);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) die("epoll_wait");
        for (int i = 0; i < k; i++) {
            ssize_t r = read(evs[i].data.fd, buf, sizeof(buf));
            if (r == 0) _exit(0);
            if (r > 0) got += r;
        }
        while (got >= per_round) {
            got -= per_round;
            if (write(ack, "x", 1) != 1) _exit(1);
        }
    }
}

int main(int argc, char **argv)
{
    int n = 1000, rounds = 200, size = 200, opt;
    while ((opt = getopt(argc, argv, "n:r:s:h")) != -1) {
        switch (opt) {
        case 'n':
            n = atoi(optarg);
            break;
        case 'r':
            rounds = atoi(optarg);
            break;
        case 's':
            size = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: floor [-n CONNS] [-r ROUNDS] [-s SIZE]\n");
            return 2;
        }
    }
    if (n < 1 || rounds < 1 || size < 1 || size > 65536) {
        fprintf(stderr, "floor: bad arguments\n");
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, n) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
        die("listen");
    int acks[2];
    if (pipe(acks) != 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        close(acks[0]);
        reader(lfd, n, (long)n * size, acks[1]);
        _exit(0);
    }
    close(acks[1]);
    int *fds = calloc((size_t)n, sizeof(int));
    if (!fds) die("calloc");
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&a, sizeof(a)) != 0) die("connect");
        int one = 1;
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    char *msg = malloc((size_t)size);
    if (!msg) die("malloc");
    memset(msg, 'm', (size_t)size);
    double c0 = cpu_us();
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < n; i++)
            if (write(fds[i], msg, (size_t)size) != size) die("write");
        char c;
        if (read(acks[0], &c, 1) != 1) die("read ack");
    }
    double c1 = cpu_us();
    long writes = (long)n * rounds;
    printf("floor conns=%d rounds=%d size=%d writes=%ld cpu_us_per_write=%.2f\n", n, rounds, size,
           writes, (c1 - c0) / (double)writes);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    int st;
    waitpid(pid, &st, 0);
    free(fds);
    free(msg);
    return 0;
}
