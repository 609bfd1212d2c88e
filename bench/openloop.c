/* An open-loop HTTP/1.1 load generator for bench/decision.py: a Python client's own latency (≈ 1–2 ms at p99 at
 * 2,000 requests/s on two shared cores) was larger than what it measured.
 *
 *   openloop HOST PORT RATE CONNECTIONS REQUESTS_FILE OUT_FILE
 *
 * REQUESTS_FILE: records of [uint32 length][request bytes]. Request i is due at start + i / RATE; it waits for a
 * free connection (one request in flight per kept-alive connection) and its latency runs from when it was due,
 * so a stall is charged for every request it delayed (no coordinated omission). OUT_FILE: N int64 latencies in
 * nanoseconds, then N int32 statuses (0: no answer). A connection the server closes (Connection: close, or
 * nginx's keepalive_requests) is reopened; a request in flight on it is sent again. Waits with epoll_pwait2, so
 * it sleeps between requests rather than spinning on a core the servers need. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    long req;        /* request in flight, -1 when idle */
    char buf[65536];
    size_t have;
} conn_t;

static struct sockaddr_in addr;
static int ep;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) { perror(what); exit(1); }

static void open_conn(conn_t *c, long idx) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)idx};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    c->have = 0;
}

static void send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; die("write"); }
        p += w; n -= (size_t)w;
    }
}

/* A whole response in buf: its length, status and whether the server closes; 0 while incomplete. */
static size_t parse(conn_t *c, int *status, int *closing) {
    c->buf[c->have] = 0;
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end) return 0;
    size_t head = (size_t)(end - c->buf) + 4, length = 0;
    *status = atoi(c->buf + 9);
    *closing = 0;
    for (char *line = strstr(c->buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        if (!strncasecmp(line, "content-length:", 15)) length = strtoul(line + 15, NULL, 10);
        else if (!strncasecmp(line, "connection:", 11)) {
            char *eol = strstr(line, "\r\n"), *word = strcasestr(line, "close");
            if (word && word < eol) *closing = 1;
        }
    }
    return c->have >= head + length ? head + length : 0;
}

int main(int argc, char **argv) {
    if (argc != 7) { fprintf(stderr, "usage: %s HOST PORT RATE CONNECTIONS REQUESTS OUT\n", argv[0]); return 2; }
    double rate = atof(argv[3]);
    int nconn = atoi(argv[4]);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &addr.sin_addr);

    FILE *f = fopen(argv[5], "rb");
    if (!f) die("requests file");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)size);
    if (fread(data, 1, (size_t)size, f) != (size_t)size) die("read");
    fclose(f);
    long n = 0;
    for (long off = 0; off < size; n++) { uint32_t len; memcpy(&len, data + off, 4); off += 4 + len; }
    char **req = malloc(sizeof(char *) * (size_t)n);
    uint32_t *len = malloc(sizeof(uint32_t) * (size_t)n);
    for (long i = 0, off = 0; i < n; i++) { memcpy(&len[i], data + off, 4); req[i] = data + off + 4; off += 4 + len[i]; }

    int64_t *lat = calloc((size_t)n, sizeof(int64_t));
    int32_t *status = calloc((size_t)n, sizeof(int32_t));
    long *queue = malloc(sizeof(long) * (size_t)n);
    long qhead = 0, qtail = 0, next = 0, done = 0;

    ep = epoll_create1(0);
    conn_t *conns = calloc((size_t)nconn, sizeof(conn_t));
    for (int i = 0; i < nconn; i++) { open_conn(&conns[i], i); conns[i].req = -1; }

    int64_t start = now_ns() + 50000000LL, period = (int64_t)(1e9 / rate);
    struct epoll_event evs[256];
    while (done < n) {
        int64_t t = now_ns();
        while (next < n && start + next * period <= t) queue[qtail++] = next++;
        for (int i = 0; i < nconn && qhead < qtail; i++) {
            if (conns[i].req >= 0) continue;
            conns[i].req = queue[qhead++];
            send_all(conns[i].fd, req[conns[i].req], len[conns[i].req]);
        }
        int64_t wait = next < n ? start + next * period - now_ns() : 100000000LL;
        if (wait < 0 || qhead < qtail) wait = 0;
        struct timespec to = {.tv_sec = wait / 1000000000LL, .tv_nsec = wait % 1000000000LL};
        int k = epoll_pwait2(ep, evs, 256, &to, NULL);
        if (k < 0) { if (errno == EINTR) continue; die("epoll_pwait2"); }
        for (int e = 0; e < k; e++) {
            conn_t *c = &conns[evs[e].data.u64];
            ssize_t r = read(c->fd, c->buf + c->have, sizeof c->buf - 1 - c->have);
            if (r <= 0) {  /* closed by the server: reopen, and send what was in flight again */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                open_conn(c, (long)evs[e].data.u64);
                if (c->req >= 0) send_all(c->fd, req[c->req], len[c->req]);
                continue;
            }
            c->have += (size_t)r;
            int st, closing;
            size_t used = parse(c, &st, &closing);
            if (!used) continue;
            lat[c->req] = now_ns() - (start + c->req * period);
            status[c->req] = st;
            done++;
            c->req = -1;
            memmove(c->buf, c->buf + used, c->have - used);
            c->have -= used;
            if (closing) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                open_conn(c, (long)evs[e].data.u64);
            }
        }
    }
    FILE *out = fopen(argv[6], "wb");
    if (!out) die("out file");
    fwrite(lat, sizeof(int64_t), (size_t)n, out);
    fwrite(status, sizeof(int32_t), (size_t)n, out);
    fclose(out);
    return 0;
}
