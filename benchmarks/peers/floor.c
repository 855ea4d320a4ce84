/*
 * floor.c - the speed limit: a minimal single-threaded epoll SSE server.
 *
 * GET /sse    -> response headers, then the connection is kept as a stream
 * POST /knock -> "data: <name> knocked\n\n" sent to every stream with one
 *                send() each (a stream whose socket is full loses the event:
 *                this server only exists to show the cost of the syscalls)
 * GET /       -> a small HTML page
 * No chunked encoding, no ids, no history, no heartbeats: the least work a
 * server can do per delivered event.  Build: gcc -O2 -o floor floor.c
 * Usage: floor PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXFD 70000
#define BUFMAX 65536
typedef struct { int stream; size_t len, cap; char *buf; } conn;
static conn *conns[MAXFD];
static int streams[MAXFD], nstreams = 0;

static const char SSE_HEAD[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    "Cache-Control: no-cache\r\nConnection: close\r\n\r\n: connected\n\n";
static const char PAGE[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 44\r\n"
    "Connection: close\r\n\r\n<!doctype html><title>floor</title><p>hi</p>";
static const char POSTED[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    "Connection: close\r\n\r\nok\n";

static void drop(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    if (conns[fd] && conns[fd]->stream) {
        for (int i = 0; i < nstreams; i++)
            if (streams[i] == fd) { streams[i] = streams[--nstreams]; break; }
    }
    if (conns[fd]) free(conns[fd]->buf);
    free(conns[fd]);
    conns[fd] = NULL;
}

static void broadcast(const char *name, size_t nlen) {
    static char ev[BUFMAX];
    if (nlen > sizeof ev - 32) nlen = sizeof ev - 32;
    size_t n = 0;
    memcpy(ev, "data: ", 6); n = 6;
    memcpy(ev + n, name, nlen); n += nlen;
    memcpy(ev + n, " knocked\n\n", 10); n += 10;
    for (int i = 0; i < nstreams; i++) send(streams[i], ev, n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8090;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(0x7f000001);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
    listen(ls, 4096);
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &e);
    fprintf(stderr, "floor listening on %d\n", port);
    struct epoll_event evs[1024];
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAXFD) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conns[c] = calloc(1, sizeof(conn));
                    conns[c]->cap = 1024;
                    conns[c]->buf = malloc(conns[c]->cap);
                    struct epoll_event ce = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            conn *c = conns[fd];
            if (!c) continue;
            if (c->stream) { /* a stream sends nothing more: EOF or junk ends it */
                char tmp[512];
                ssize_t r = recv(fd, tmp, sizeof tmp, 0);
                if (r <= 0 && !(r < 0 && errno == EAGAIN)) drop(ep, fd);
                continue;
            }
            if (c->cap - c->len < 512 && c->cap < BUFMAX) {
                c->cap *= 4;
                c->buf = realloc(c->buf, c->cap);
            }
            ssize_t r = recv(fd, c->buf + c->len, c->cap - 1 - c->len, 0);
            if (r <= 0) { if (!(r < 0 && errno == EAGAIN)) drop(ep, fd); continue; }
            c->len += r;
            c->buf[c->len] = 0;
            char *end = strstr(c->buf, "\r\n\r\n");
            if (!end) { if (c->len >= BUFMAX - 1) drop(ep, fd); continue; }
            if (!strncmp(c->buf, "GET /sse", 8)) {
                send(fd, SSE_HEAD, sizeof SSE_HEAD - 1, MSG_NOSIGNAL);
                c->stream = 1;
                streams[nstreams++] = fd;
            } else if (!strncmp(c->buf, "POST /knock", 11)) {
                char *cl = strcasestr(c->buf, "content-length:");
                size_t want = cl ? strtoul(cl + 15, NULL, 10) : 0;
                char *body = end + 4;
                if ((size_t)(c->buf + c->len - body) < want) {
                    if (c->len >= BUFMAX - 1) drop(ep, fd);
                    continue;
                }
                char *name = strstr(body, "name=");
                size_t nlen = 0;
                if (name) { name += 5; nlen = strcspn(name, "&"); if (nlen > (size_t)(c->buf + c->len - name)) nlen = c->buf + c->len - name; }
                broadcast(name ? name : "Someone", name ? nlen : 7);
                send(fd, POSTED, sizeof POSTED - 1, MSG_NOSIGNAL);
                drop(ep, fd);
            } else {
                send(fd, PAGE, sizeof PAGE - 1, MSG_NOSIGNAL);
                drop(ep, fd);
            }
        }
    }
}
