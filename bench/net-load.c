/*
 * The load client of bench/net.ts, compiled with `cc -O2` at bench time: one thread, one epoll
 * loop, so the client costs a few microseconds of CPU per request and is never the thing
 * measured. Prints one JSON line on stdout.
 *
 *   net-load ping PORT CONNS MS MSGBYTES   each connection sends MSGBYTES (the last one '\n')
 *                                          and waits for all of them to come back, again and
 *                                          again, for MS milliseconds
 *   net-load bulk PORT CONNS MS CHUNK      each connection keeps 4 chunks of CHUNK bytes in
 *                                          flight and counts the bytes echoed
 *   net-load idle PORT CONNS               opens CONNS connections that send nothing, prints
 *                                          {"opened":CONNS}, holds them until stdin closes
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define WINDOW 4
#define HIST_US 200000 /* latency histogram: 1 us buckets up to 200 ms, then one overflow */

struct conn {
  int fd;
  long got;      /* ping: bytes of the current echo received */
  long inflight; /* bulk: bytes sent and not yet echoed */
  long unsent;   /* bulk: bytes due to be sent that the kernel has not taken yet */
  double sent_at;
  int want_out;
};

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void die(const char *what) {
  fprintf(stderr, "net-load: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int dial(int port, int nonblock) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (nonblock) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static unsigned hist[HIST_US + 1];

static double percentile(long total, double p) {
  long want = (long)(total * p / 100.0), seen = 0;
  for (int i = 0; i <= HIST_US; i++) {
    seen += hist[i];
    if (seen > want) return i / 1000.0;
  }
  return HIST_US / 1000.0;
}

static void set_out(int ep, struct conn *c, int on) {
  if (c->want_out == on) return;
  c->want_out = on;
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void flush_bulk(int ep, struct conn *c, const char *buf, long chunk) {
  while (c->unsent > 0) {
    long n = c->unsent < chunk ? c->unsent : chunk;
    ssize_t w = write(c->fd, buf, n);
    if (w < 0) {
      if (errno == EAGAIN) break;
      die("write");
    }
    c->unsent -= w;
  }
  set_out(ep, c, c->unsent > 0);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: net-load ping|bulk|idle PORT CONNS [MS BYTES]\n");
    return 2;
  }
  const char *mode = argv[1];
  int port = atoi(argv[2]);
  int n = atoi(argv[3]);
  struct conn *cs = calloc(n, sizeof *cs);
  if (strcmp(mode, "idle") == 0) {
    for (int i = 0; i < n; i++) cs[i].fd = dial(port, 0);
    printf("{\"opened\":%d}\n", n);
    fflush(stdout);
    char b[64];
    while (read(0, b, sizeof b) > 0) {
    }
    for (int i = 0; i < n; i++) close(cs[i].fd);
    return 0;
  }
  if (argc < 6) die("ping and bulk take MS and BYTES");
  double ms = atof(argv[4]);
  long bytes = atol(argv[5]);
  int bulk = strcmp(mode, "bulk") == 0;
  char *msg = malloc(bytes);
  memset(msg, 'x', bytes);
  msg[bytes - 1] = '\n';
  char *in = malloc(1 << 16);
  int ep = epoll_create1(0);
  for (int i = 0; i < n; i++) {
    cs[i].fd = dial(port, 1);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0) die("epoll_ctl");
  }
  long requests = 0, echoed = 0;
  double t0 = now_ms(), end = t0 + ms;
  for (int i = 0; i < n; i++) {
    struct conn *c = &cs[i];
    if (bulk) {
      c->unsent = c->inflight = WINDOW * bytes;
      flush_bulk(ep, c, msg, bytes);
    } else {
      c->sent_at = now_ms();
      if (write(c->fd, msg, bytes) != bytes) die("write");
    }
  }
  int active = n, stopping = 0;
  struct epoll_event evs[256];
  while (active > 0) {
    int k = epoll_wait(ep, evs, 256, 100);
    if (k < 0 && errno != EINTR) die("epoll_wait");
    double t = now_ms();
    if (t >= end) stopping = 1;
    if (t >= end + 2000) break; /* a server that stopped answering: give up on the rest */
    for (int j = 0; j < k; j++) {
      struct conn *c = evs[j].data.ptr;
      if (c->fd < 0) continue;
      if (bulk && (evs[j].events & EPOLLOUT)) flush_bulk(ep, c, msg, bytes);
      if (!(evs[j].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
      ssize_t r = read(c->fd, in, 1 << 16);
      if (r < 0 && errno == EAGAIN) continue;
      if (r <= 0) {
        fprintf(stderr, "net-load: connection %ld closed by the server\n", (long)(c - cs));
        close(c->fd);
        c->fd = -1;
        active--;
        continue;
      }
      if (bulk) {
        echoed += r;
        c->inflight -= r;
        if (!stopping) {
          c->inflight += r;
          c->unsent += r;
          flush_bulk(ep, c, msg, bytes);
        } else if (c->inflight <= 0) {
          close(c->fd);
          c->fd = -1;
          active--;
        }
        continue;
      }
      c->got += r;
      if (c->got < bytes) continue;
      c->got -= bytes;
      long us = (long)((t - c->sent_at) * 1000.0);
      hist[us < 0 ? 0 : us > HIST_US ? HIST_US : us]++;
      requests++;
      if (stopping) {
        close(c->fd);
        c->fd = -1;
        active--;
      } else {
        c->sent_at = t;
        if (write(c->fd, msg, bytes) != bytes) die("write");
      }
    }
  }
  double elapsed = now_ms() - t0;
  for (int i = 0; i < n; i++)
    if (cs[i].fd >= 0) close(cs[i].fd);
  if (bulk)
    printf("{\"bytes\":%ld,\"ms\":%.3f}\n", echoed, elapsed);
  else
    printf("{\"requests\":%ld,\"ms\":%.3f,\"p50\":%.3f,\"p99\":%.3f}\n", requests, elapsed,
           percentile(requests, 50), percentile(requests, 99));
  return 0;
}
