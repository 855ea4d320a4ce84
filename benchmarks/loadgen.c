/*
 * loadgen.c - the benchmark's load generator: one thread, epoll, thousands of
 * event-stream connections on 127.0.0.0/8.
 *
 * It opens --clients streams (GET --path), optionally waits for a line on
 * stdin (so the harness can measure the server's memory), then triggers
 * events itself with HTTP POSTs to /knock (the Bottle example's form post:
 * the view calls broadcast("<name> knocked")) and timestamps, per client,
 * when each event arrives.  Events are recognised by the bytes "knocked\n"
 * in the stream, whatever the framing (chunked or not).  Every latency is
 * measured from the moment the POST's connect() was issued (CLOCK_MONOTONIC).
 *
 * Phases (each optional, in this order):
 *   connect   open all streams; a stream counts as accepted at its first byte
 *             (servers that send nothing before the first event get one POST
 *             once every GET is written: see --no-greeting)
 *   lockstep  --events E: POST one event, wait until every reading client has
 *             it (or --event-timeout), pause --gap-ms, repeat; with --step,
 *             print "EVENT k last" after each event and wait for a line on
 *             stdin before the next, or for stdin's end after the last (the
 *             harness takes turns between servers)
 *   burst     --burst E --posters K: K connections POST back to back, E events
 *             in all; deliveries per second until every reader has all E
 *   page      --page-gets M: M sequential GETs of --page-path on fresh
 *             connections while a POST is sent every --page-event-ms
 * Clients listed by --slow K (the first K) set a small receive buffer and
 * never read; at the end they are checked for having been dropped.
 *
 * Streams connect from the source addresses 127.0.0.2 onwards (--src-ips N
 * of them, --src-offset K addresses further on: a run that follows another
 * against the same server then finds no connection of its own in TIME_WAIT).
 *
 * Output: one JSON object on stdout.  Build: gcc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum kind { K_STREAM = 1, K_POST = 2, K_PAGE = 3 };

typedef struct conn {
    int fd;
    int kind;
    int idx;          /* stream index */
    int connected;    /* connect() completed and request written */
    int got_byte;
    int closed;
    int slow;
    int match;        /* KMP state for "knocked\n" */
    int events;       /* events seen */
    double t_start;   /* POST/PAGE: when connect() was issued */
    int ev;           /* POST: event number */
    const char *req;  /* request to send */
    int req_len, req_off;
} conn;

static const char PAT[] = "knocked\n";
static int PATLEN = 8;
static int fail_tab[16];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int port = 0, nclients = 100, nsrc = 8, nevents = 0, gap_ms = 50, nburst = 0, posters = 4;
static int npage = 0, page_event_ms = 200, nslow = 0, payload = 0, window = 200, no_greeting = 0;
static int wait_go = 0, step = 0, src_offset = 0;
static double event_timeout = 10.0, total_timeout = 300.0;
static const char *path = "/sse", *page_path = "/";
static int ep;
static conn *streams;
static double t_begin;

static void die(const char *m) { perror(m); exit(2); }

static int make_socket(int src, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (rcvbuf) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (src > 0) {
        struct sockaddr_in s = {0};
        s.sin_family = AF_INET;
        s.sin_addr.s_addr = htonl(0x7f000002 + src_offset + (src - 1)); /* 127.0.0.2 ... */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&s, sizeof s) < 0) die("bind");
    }
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(0x7f000001);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) die("connect");
    return fd;
}

static void watch(conn *c, unsigned ev, int op) {
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &e) < 0) die("epoll_ctl");
}

static char stream_req[512];
static int stream_req_len;

static int streams_opened = 0, streams_greeted = 0, streams_ready = 0, streams_failed = 0, slow_ready = 0;

static void open_stream(int i) {
    conn *c = &streams[i];
    memset(c, 0, sizeof *c);
    c->idx = i;
    c->kind = K_STREAM;
    c->slow = i < nslow;
    c->fd = make_socket(nsrc ? 1 + i % nsrc : 0, c->slow ? 4096 : 0);
    c->req = stream_req;
    c->req_len = stream_req_len;
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
    streams_opened++;
}

/* --- POST / page requests --- */
static char *post_bufs;   /* one request per event */
static int post_sent = 0, post_done = 0, post_failed = 0;
static double *post_t0, *post_rtt;
static int page_done = 0, page_inflight = 0, page_failed = 0;
static double *page_lat;
static char page_req[256];

static void start_post(int ev) {
    conn *c = calloc(1, sizeof *c);
    c->kind = K_POST;
    c->ev = ev;
    c->t_start = now();
    post_t0[ev] = c->t_start;
    c->fd = make_socket(0, 0);
    c->req = post_bufs + (size_t)ev * (payload + 256);
    c->req_len = strlen(c->req);
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
    post_sent++;
}

static void start_page(void) {
    conn *c = calloc(1, sizeof *c);
    c->kind = K_PAGE;
    c->t_start = now();
    c->fd = make_socket(0, 0);
    c->req = page_req;
    c->req_len = strlen(page_req);
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
    page_inflight = 1;
}

/* --- per-event arrival times (lockstep) --- */
static double *arrive;    /* [event][client] */
static int *ev_count;     /* clients that have event k */
static long total_deliveries = 0;
static double last_delivery = 0;
static int readers;

static void on_event(conn *c) {
    int k = c->events++;
    total_deliveries++;
    last_delivery = now();
    if (arrive && k < nevents) {
        arrive[(size_t)k * nclients + c->idx] = last_delivery;
        ev_count[k]++;
    }
}

static void close_conn(conn *c) {
    if (c->closed) return;
    c->closed = 1;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static char rbuf[1 << 16];

static void handle(conn *c, unsigned evs) {
    if (!c->connected) {
        if (evs & (EPOLLERR | EPOLLHUP)) {
            if (c->kind == K_STREAM) streams_failed++;
            else if (c->kind == K_POST) post_failed++, post_done++;
            else page_failed++, page_inflight = 0;
            close_conn(c);
            return;
        }
        while (c->req_off < c->req_len) {
            ssize_t n = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN) return;
                if (c->kind == K_STREAM) streams_failed++;
                else if (c->kind == K_POST) post_failed++, post_done++;
                else page_failed++, page_inflight = 0;
                close_conn(c);
                return;
            }
            c->req_off += n;
        }
        c->connected = 1;
        if (c->kind == K_STREAM) streams_ready++;
        if (c->kind == K_STREAM && c->slow) {
            /* never read: stop watching it at all */
            slow_ready++;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            return;
        }
        watch(c, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_MOD);
        return;
    }
    for (;;) {
        ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (n < 0) {
            if (errno == EAGAIN) return;
            n = 0;
        }
        if (n == 0) {
            if (c->kind == K_POST) {
                post_rtt[c->ev] = now() - c->t_start;
                post_done++;
                close_conn(c);
                free(c);
            } else if (c->kind == K_PAGE) {
                page_lat[page_done++] = now() - c->t_start;
                page_inflight = 0;
                close_conn(c);
                free(c);
            } else {
                streams_failed++;
                close_conn(c);
            }
            return;
        }
        if (c->kind != K_STREAM) continue;
        if (!c->got_byte) {
            c->got_byte = 1;
            streams_greeted++;
        }
        int m = c->match;
        for (ssize_t i = 0; i < n; i++) {
            char ch = rbuf[i];
            while (m > 0 && PAT[m] != ch) m = fail_tab[m - 1];
            if (PAT[m] == ch) m++;
            if (m == PATLEN) {
                on_event(c);
                m = 0;
            }
        }
        c->match = m;
    }
}

static void pump(double timeout_s) {
    struct epoll_event evs[1024];
    int ms = timeout_s <= 0 ? 0 : (int)(timeout_s * 1000) + 1;
    int n = epoll_wait(ep, evs, 1024, ms);
    for (int i = 0; i < n; i++) handle(evs[i].data.ptr, evs[i].events);
    if (now() - t_begin > total_timeout) {
        fprintf(stderr, "loadgen: total timeout\n");
    }
}

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p) {
    if (n == 0) return -1;
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

static int overdue(void) { return now() - t_begin > total_timeout; }

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : "0";
#define OPT(name, var, conv) if (!strcmp(a, name)) { var = conv(v); i++; continue; }
        OPT("--port", port, atoi)
        OPT("--clients", nclients, atoi)
        OPT("--src-ips", nsrc, atoi)
        OPT("--src-offset", src_offset, atoi)
        OPT("--events", nevents, atoi)
        OPT("--gap-ms", gap_ms, atoi)
        OPT("--burst", nburst, atoi)
        OPT("--posters", posters, atoi)
        OPT("--page-gets", npage, atoi)
        OPT("--page-event-ms", page_event_ms, atoi)
        OPT("--slow", nslow, atoi)
        OPT("--payload", payload, atoi)
        OPT("--window", window, atoi)
        OPT("--event-timeout", event_timeout, atof)
        OPT("--timeout", total_timeout, atof)
        if (!strcmp(a, "--path")) { path = v; i++; continue; }
        if (!strcmp(a, "--page-path")) { page_path = v; i++; continue; }
        if (!strcmp(a, "--no-greeting")) { no_greeting = 1; continue; }
        if (!strcmp(a, "--wait-go")) { wait_go = 1; continue; }
        if (!strcmp(a, "--step")) { wait_go = step = 1; continue; }
        fprintf(stderr, "unknown option %s\n", a);
        return 2;
    }
    if (!port) { fprintf(stderr, "--port is required\n"); return 2; }
    fail_tab[0] = 0;
    for (int i = 1, k = 0; i < PATLEN; i++) {
        while (k > 0 && PAT[i] != PAT[k]) k = fail_tab[k - 1];
        if (PAT[i] == PAT[k]) k++;
        fail_tab[i] = k;
    }
    ep = epoll_create1(0);
    if (ep < 0) die("epoll");
    t_begin = now();
    stream_req_len = snprintf(stream_req, sizeof stream_req,
        "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n\r\n", path, port);
    snprintf(page_req, sizeof page_req,
        "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", page_path, port);

    int total_posts = 1 + nevents + nburst + (npage ? npage * 200 / (page_event_ms ? page_event_ms : 1) + 100 : 0);
    post_t0 = calloc(total_posts + 1, sizeof(double));
    post_rtt = calloc(total_posts + 1, sizeof(double));
    post_bufs = calloc((size_t)(total_posts + 1), payload + 256);
    char *pad = malloc(payload + 1);
    memset(pad, 'x', payload);
    pad[payload] = 0;
    for (int e = 0; e <= total_posts; e++) {
        char body[64];
        char *req = post_bufs + (size_t)e * (payload + 256);
        int blen = snprintf(body, sizeof body, "name=e%d", e);
        snprintf(req, payload + 256,
                 "POST /knock HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                 "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n"
                 "Connection: close\r\n\r\n%s%s",
                 port, blen + payload, body, pad);
    }
    int next_post = 0;
    streams = calloc(nclients, sizeof(conn));
    readers = nclients - nslow;

    /* ---- connect phase ---- */
    double t0 = now();
    int opened = 0, greeting_post = 0;
    double t_connected = 0;
    while (!overdue()) {
        int inflight = opened - (no_greeting ? streams_ready : streams_greeted + slow_ready) - streams_failed;
        while (opened < nclients && inflight < window) {
            open_stream(opened++);
            inflight++;
        }
        if (opened == nclients) {
            if (no_greeting && !greeting_post && streams_ready + streams_failed == nclients) {
                start_post(next_post++);
                greeting_post = 1;
            }
            /* slow clients never read: they count once their request is written */
            if (streams_greeted + slow_ready + streams_failed >= nclients) break;
        }
        pump(0.05);
    }
    t_connected = now();
    double connect_s = t_connected - t0;
    if (greeting_post) {
        /* the greeting event counted as an event: forget it */
        while (post_done < post_sent && !overdue()) pump(0.05);
        for (int i = 0; i < nclients; i++) streams[i].events = 0;
        total_deliveries = 0;
    }

    if (wait_go) {
        printf("READY %d\n", streams_greeted);
        fflush(stdout);
        char line[64];
        if (!fgets(line, sizeof line, stdin)) return 3;
        /* drain whatever arrived meanwhile (heartbeats) */
        pump(0.0);
    }

    /* ---- lockstep events ---- */
    double (*ev_stats)[6] = calloc(nevents + 1, sizeof *ev_stats);
    int lock_incomplete = 0;
    if (nevents) {
        arrive = calloc((size_t)nevents * nclients, sizeof(double));
        ev_count = calloc(nevents, sizeof(int));
        for (int i = 0; i < nclients; i++) streams[i].events = 0;
        double *lat = malloc(sizeof(double) * nclients);
        for (int k = 0; k < nevents && !overdue(); k++) {
            int pid = next_post++;
            start_post(pid);
            double start = now();
            int alive = 0;
            for (;;) {
                alive = 0;
                for (int i = nslow; i < nclients; i++) alive += !streams[i].closed;
                if (ev_count[k] >= alive) break;
                if (now() - start > event_timeout) { lock_incomplete++; break; }
                pump(0.02);
            }
            int n = 0;
            for (int i = nslow; i < nclients; i++) {
                double t = arrive[(size_t)k * nclients + i];
                if (t > 0) lat[n++] = t - post_t0[pid];
            }
            qsort(lat, n, sizeof(double), cmpd);
            ev_stats[k][0] = n ? lat[0] : -1;
            ev_stats[k][1] = pct(lat, n, 0.5);
            ev_stats[k][2] = pct(lat, n, 0.99);
            ev_stats[k][3] = n ? lat[n - 1] : -1;
            ev_stats[k][4] = n;
            /* let the POST finish and the server settle */
            double until = now() + gap_ms / 1000.0;
            while ((post_done < post_sent || now() < until) && !overdue()) pump(0.005);
            ev_stats[k][5] = post_rtt[pid];
            if (step) {
                /* one event per line on stdin, so that the harness can take
                   turns between servers event by event */
                printf("EVENT %d %.6f\n", k, ev_stats[k][3]);
                fflush(stdout);
                /* after the last event, wait too: the harness ends this
                   run (closing stdin) only once every server is done */
                char line[64];
                if (!fgets(line, sizeof line, stdin) && k + 1 < nevents) return 3;
                pump(0.0);
            }
        }
        free(lat);
    }

    /* ---- burst ---- */
    double burst_s = 0;
    long burst_deliveries = 0;
    int burst_first = next_post;
    if (nburst) {
        for (int i = 0; i < nclients; i++) streams[i].events = 0;
        total_deliveries = 0;
        arrive = NULL;
        double start = now();
        int started = 0;
        long want = (long)readers * nburst;
        while (!overdue()) {
            while (started < nburst && post_sent - post_done < posters) {
                start_post(next_post++);
                started++;
            }
            if (total_deliveries >= want) break;
            if (started == nburst && post_done == post_sent && now() - last_delivery > event_timeout)
                break;
            pump(0.01);
        }
        burst_s = last_delivery - start;
        burst_deliveries = total_deliveries;
    }
    (void)burst_first;

    /* ---- page GETs while events flow ---- */
    if (npage) {
        page_lat = calloc(npage, sizeof(double));
        double next_ev = now();
        double next_page = now();
        while (page_done + page_failed < npage && !overdue()) {
            double t = now();
            if (t >= next_ev && next_post < total_posts) {
                start_post(next_post++);
                next_ev = t + page_event_ms / 1000.0;
            }
            if (!page_inflight && t >= next_page) {
                start_page();
                next_page = t + 0.02;
            }
            pump(0.002);
        }
        while (post_done < post_sent && !overdue()) pump(0.01);
    }

    /* ---- slow clients: were they dropped? ---- */
    int slow_dropped = 0;
    long slow_bytes = 0;
    for (int i = 0; i < nslow; i++) {
        conn *c = &streams[i];
        for (;;) {
            ssize_t n = recv(c->fd, rbuf, sizeof rbuf, MSG_DONTWAIT);
            if (n > 0) { slow_bytes += n; continue; }
            if (n == 0 || errno != EAGAIN) slow_dropped++;
            break;
        }
    }
    int readers_closed = 0;
    for (int i = nslow; i < nclients; i++) readers_closed += streams[i].closed;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double wall = now() - t_begin;
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;

    printf("{\"clients\": %d, \"connected\": %d, \"failed\": %d, \"connect_s\": %.6f, "
           "\"connect_rate\": %.1f, \"no_greeting\": %d,\n",
           nclients, streams_greeted + 0, streams_failed, connect_s,
           connect_s > 0 ? (nclients - streams_failed) / connect_s : 0, no_greeting);
    printf(" \"events\": [");
    for (int k = 0; k < nevents; k++)
        printf("%s{\"first\": %.6f, \"median\": %.6f, \"p99\": %.6f, \"last\": %.6f, "
               "\"received\": %d, \"post_rtt\": %.6f}",
               k ? ", " : "", ev_stats[k][0], ev_stats[k][1], ev_stats[k][2], ev_stats[k][3],
               (int)ev_stats[k][4], ev_stats[k][5]);
    printf("], \"lockstep_incomplete\": %d,\n", lock_incomplete);
    printf(" \"burst\": {\"events\": %d, \"posters\": %d, \"deliveries\": %ld, \"expected\": %ld, "
           "\"seconds\": %.6f, \"per_second\": %.1f},\n",
           nburst, posters, burst_deliveries, (long)readers * nburst, burst_s,
           burst_s > 0 ? burst_deliveries / burst_s : 0);
    if (npage) qsort(page_lat, page_done, sizeof(double), cmpd);
    printf(" \"page\": {\"n\": %d, \"failed\": %d, \"median\": %.6f, \"p99\": %.6f, \"max\": %.6f},\n",
           page_done, page_failed, npage ? pct(page_lat, page_done, 0.5) : -1,
           npage ? pct(page_lat, page_done, 0.99) : -1,
           npage && page_done ? page_lat[page_done - 1] : -1);
    printf(" \"slow\": {\"clients\": %d, \"dropped\": %d, \"bytes_read_at_end\": %ld}, "
           "\"readers_closed\": %d, \"posts\": %d, \"posts_failed\": %d,\n",
           nslow, slow_dropped, slow_bytes, readers_closed, post_sent, post_failed);
    printf(" \"loadgen_cpu_s\": %.3f, \"wall_s\": %.3f, \"loadgen_cpu_share\": %.3f}\n", cpu, wall,
           wall > 0 ? cpu / wall : 0);
    return 0;
}
