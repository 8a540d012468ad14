/* Load for bench/bench_agent.py, in C so that the generator does not starve the agent on a
 * 2-core machine (a Python client tops out near the rates being measured).
 *
 *   agent_load server IP PORT SECONDS      accept, read one request, answer, close (the
 *                                          server closes first: TIME_WAIT on its side)
 *   agent_load tcp IP PORT RATE SECONDS    open RATE short connections a second, paced
 *                                          every millisecond: connect, send a request,
 *                                          read the answer until EOF, close; "on_time"
 *                                          counts those opened within SECONDS
 *   agent_load dns IP NAME RATE SECONDS    RATE A queries for NAME a second from one UDP
 *                                          socket; counts the answers (RCODE 0, ANCOUNT>0)
 *
 * Each prints one line of key=value counts and stops by itself (a client waits at most
 * 5 s past SECONDS for its last answers).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 65536
#define MAX_INFLIGHT 8192
static const char REQUEST[] = "GET / HTTP/1.0\r\n\r\n";
static const char ANSWER[] = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static struct sockaddr_in address(const char *ip, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", ip);
        exit(2);
    }
    return a;
}

static void more_files(void) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0) {
        r.rlim_cur = r.rlim_max < MAX_FDS ? r.rlim_max : MAX_FDS;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static int server(const char *ip, int port, double seconds) {
    struct sockaddr_in a = address(ip, port);
    int one = 1, ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) {
        perror("bind/listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}, evs[512];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    long served = 0;
    char buf[4096];
    printf("listening\n");
    fflush(stdout);
    double end = now() + seconds;
    while (now() < end) {
        int n = epoll_wait(ep, evs, 512, 100);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r > 0 && write(fd, ANSWER, sizeof ANSWER - 1) > 0)
                served++;
            close(fd);
        }
    }
    printf("served=%ld\n", served);
    return 0;
}

enum { IDLE, CONNECTING, READING };

static int tcp_client(const char *ip, int port, double rate, double seconds) {
    static unsigned char state[MAX_FDS];
    struct sockaddr_in a = address(ip, port);
    int ep = epoll_create1(0);
    struct epoll_event evs[1024];
    long opened = 0, completed = 0, failed = 0, inflight = 0, late = 0, on_time = -1;
    long total = (long)(seconds * rate);
    char buf[4096];
    double start = now(), t;
    while ((t = now() - start) < seconds + 5) {
        if (t >= seconds && on_time < 0)
            on_time = opened;  /* what was opened within SECONDS: short of total if slow */
        long want = t < seconds ? (long)(t * rate) : total;
        if (want - opened > MAX_INFLIGHT)  /* far behind: the rest counts as not offered */
            late += want - opened - MAX_INFLIGHT, opened = want - MAX_INFLIGHT;
        while (opened < want && inflight < MAX_INFLIGHT) {
            int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            opened++;
            if (s < 0 || s >= MAX_FDS) {
                failed++;
                if (s >= 0)
                    close(s);
                continue;
            }
            if (connect(s, (struct sockaddr *)&a, sizeof a) && errno != EINPROGRESS) {
                failed++;
                close(s);
                continue;
            }
            struct epoll_event ce = {.events = EPOLLOUT, .data.fd = s};
            epoll_ctl(ep, EPOLL_CTL_ADD, s, &ce);
            state[s] = CONNECTING;
            inflight++;
        }
        if (t >= seconds && inflight == 0)
            break;
        int n = epoll_wait(ep, evs, 1024, 1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd, err = 0;
            socklen_t len = sizeof err;
            if (state[fd] == CONNECTING) {
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || write(fd, REQUEST, sizeof REQUEST - 1) <= 0) {
                    failed++, inflight--, state[fd] = IDLE;
                    close(fd);
                    continue;
                }
                struct epoll_event ce = {.events = EPOLLIN, .data.fd = fd};
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ce);
                state[fd] = READING;
                continue;
            }
            ssize_t r;
            while ((r = read(fd, buf, sizeof buf)) > 0) {
            }
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r == 0)
                completed++;
            else
                failed++;
            inflight--, state[fd] = IDLE;
            close(fd);
        }
    }
    printf("opened=%ld on_time=%ld completed=%ld failed=%ld unfinished=%ld late=%ld "
           "seconds=%.3f\n", opened, on_time, completed, failed, inflight, late, now() - start);
    return 0;
}

static size_t dns_query(unsigned char *q, const char *name) {
    static const unsigned char head[] = {0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    size_t n = sizeof head;
    memcpy(q, head, n);
    for (const char *p = name; *p;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        q[n++] = (unsigned char)len;
        memcpy(q + n, p, len);
        n += len;
        p += len + (dot != NULL);
    }
    q[n++] = 0;
    memcpy(q + n, "\0\1\0\1", 4);  /* QTYPE A, QCLASS IN */
    return n + 4;
}

static int dns_client(const char *ip, const char *name, double rate, double seconds) {
    struct sockaddr_in a = address(ip, 53);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), big = 4 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) {
        perror("connect");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = s}, evs[4];
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    unsigned char q[512], r[1500];
    size_t qlen = dns_query(q, name);
    long sent = 0, answered = 0, other = 0;
    double start = now(), t, quiet = 0;
    while ((t = now() - start) < seconds + 5) {
        long want = t < seconds ? (long)(t * rate) : sent;
        while (sent < want) {
            q[0] = (unsigned char)(sent >> 8), q[1] = (unsigned char)sent;
            if (send(s, q, qlen, 0) < 0)
                break;
            sent++;
        }
        if (epoll_wait(ep, evs, 4, 1) <= 0) {
            if (t >= seconds && (quiet += 0.001) > 1.0)
                break;  /* a second without answers after the last query */
            continue;
        }
        ssize_t n;
        while ((n = recv(s, r, sizeof r, 0)) >= 12) {
            int ok = (r[3] & 0x0f) == 0 && (r[6] | r[7]) != 0;
            answered += ok, other += !ok;
        }
        quiet = 0;
    }
    printf("sent=%ld answered=%ld other=%ld seconds=%.3f\n", sent, answered, other,
           now() - start);
    return 0;
}

int main(int argc, char **argv) {
    more_files();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && !strcmp(argv[1], "server"))
        return server(argv[2], atoi(argv[3]), atof(argv[4]));
    if (argc == 6 && !strcmp(argv[1], "tcp"))
        return tcp_client(argv[2], atoi(argv[3]), atof(argv[4]), atof(argv[5]));
    if (argc == 6 && !strcmp(argv[1], "dns"))
        return dns_client(argv[2], argv[3], atof(argv[4]), atof(argv[5]));
    fprintf(stderr, "usage: agent_load server IP PORT SECONDS | tcp IP PORT RATE SECONDS | "
                    "dns IP NAME RATE SECONDS\n");
    return 2;
}
