// Native fast path for bridge/relay.ts (Linux only): moves the bytes of many tunnels between
// pairs of connected TCP sockets with splice(2), socket -> pipe -> socket, on ONE background
// thread running an epoll loop over all tunnels. Node stops reading the two sockets and hands
// their descriptors over; the thread reports each tunnel's end (byte counts and reason) back
// through a threadsafe function. Either JavaScript keeps the sockets and closes them after the
// end, or (release) the thread works on duplicates that it closes itself, so that JavaScript
// can free the sockets at once and an idle tunnel costs only its small record here.
//
// Per direction: edge-triggered readiness flags, a pipe taken from a pool only while bytes are
// in flight (an idle tunnel holds no pipe, so thousands of idle tunnels cost two descriptors
// each, as in JavaScript), EAGAIN on the writer leaves the bytes in the pipe and stops reading
// (the pipe is the only buffer: backpressure), EOF on the reader -> drain the pipe ->
// shutdown(SHUT_WR) on the writer while the other direction keeps flowing (half-close).
// Both directions done -> "closed"; a socket error -> its code; no byte either way for the
// tunnel's idle timeout -> "idle"; a cancel from JavaScript -> "closed".
//
// The front (the gateway's fast path): the same thread also accepts on the gateway's listening
// sockets, reads each client's SOCKS5 greeting and request, answers the greeting, and for a
// CONNECT that JavaScript grants to one address, dials it, sends the reply and relays: no Node
// socket is made for such a connection. Only framing is checked here; whatever is not the plain
// case (another version, no NO_AUTH offered, another command, a client outside --clients, an
// early end) is adopted by JavaScript with the bytes read so far, and its SOCKS5 session decides.
//
// Also origDst(fd) for the bridge's --transparent listener: the destination a connection had
// before nftables `redirect` sent it here (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST, conntrack).
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define PIPE_WANT (1024 * 1024)  // asked with F_SETPIPE_SZ; the kernel may give less
#define POOL_MAX 64              // idle pipes kept for reuse
#define BURST 32                 // splice rounds per direction before other tunnels get a turn
#define COPY_BELOW 65536         // bytes a direction copies (recv/send) before it splices
#define COPY_CHUNK 16384

typedef struct dir {
  int src, dst;
  int pr, pw;      // pipe, -1 when none is held
  size_t n;        // bytes in the pipe
  uint64_t bytes;  // bytes written to dst
  uint8_t in_ready, out_ready, eof, done;
} dir_t;

typedef struct tunnel {
  uint32_t id;
  int fa, fb;           // a = client, b = remote
  dir_t up, down;       // up: a -> b, down: b -> a
  uint64_t idle_ms, last;
  uint8_t finished, queued, owned;  // owned: fa/fb are our duplicates, closed at the end
  uint8_t sole;  // fa/fb are the only descriptors of their sockets: close() takes them out of epoll
  // a tunnel the front dialed: its BND and how long the dial took, for its DONE message
  char *bound;
  uint16_t bport, win;  // win: which of the dial's addresses
  double dial_ms;
  struct tunnel *prev, *next;   // all live tunnels (idle sweep)
  struct tunnel *rnext;         // ready list (burst limit hit)
  struct tunnel *dnext;         // finished, to free at the end of the loop turn
} tunnel_t;

// epoll data (NULL: the wake fd): a pointer with its kind in the low 3 bits (allocations are 16-byte aligned)
#define TAG_TUN_A 0
#define TAG_TUN_B 1
#define TAG_HS 2      // a client in its handshake
#define TAG_DIAL_C 3  // a dialing connection's client
#define TAG_DIAL_R 4  // a dialing connection's remote
#define TAG_LISTEN 5
#define TAG_MASK ((uintptr_t)7)
typedef struct ctl {
  int kind;  // 0 add, 1 cancel, 2 dial, 3 listen, 4 unlisten
  tunnel_t *t;
  void *p;     // dial: front_t, listen: listener_t
  uint32_t id;
  struct ctl *next;
} ctl_t;

// to JavaScript, in the one queue of the threadsafe function
enum { M_DONE = 0, M_REQUEST = 1, M_ADOPT = 2, M_ENDED = 3, M_DIALED = 4 };
typedef struct done_msg {
  uint8_t kind;
  uint32_t id;
  double up, down;
  const char *end;
  // front messages
  uint32_t lid;
  int fd;
  uint8_t *bytes;
  size_t n;
  uint32_t a, b, flags;
  double ms;
  char peer[INET6_ADDRSTRLEN];
  uint16_t pport;
  struct done_msg *next;  // messages go to JavaScript in batches, one per loop turn
} done_msg_t;

static int g_ep = -1, g_wake = -1;
static pthread_t g_thread;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static ctl_t *g_ctl_head, *g_ctl_tail;
static napi_threadsafe_function g_tsfn;
static napi_env g_env;
static napi_ref g_front_cb;  // the front's JavaScript callback, null until frontStart
static int g_started;
static size_t g_pipe_cap = 65536;
// main thread only
static uint32_t g_active;     // tunnels and dials whose end JavaScript still awaits
static uint32_t g_listeners;  // front listeners open
static uint32_t *g_free_ids;
static size_t g_free_n, g_free_cap;
static uint32_t g_next_id;
// loop thread only
static tunnel_t **g_tab;
static size_t g_tab_cap;
static tunnel_t g_all;  // list head
static tunnel_t *g_ready;
static tunnel_t *g_dead;
static int g_pool[POOL_MAX][2];
static int g_pool_n;
static uint64_t g_next_sweep = UINT64_MAX;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *code_name(int e) {
  switch (e) {
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EHOSTDOWN: return "EHOSTDOWN";
    case ENETDOWN: return "ENETDOWN";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EADDRINUSE: return "EADDRINUSE";
    case EINVAL: return "EINVAL";
    case EPIPE: return "EPIPE";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECONNABORTED: return "ECONNABORTED";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case ENOTCONN: return "ENOTCONN";
    case ENOMEM: return "ENOMEM";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOENT: return "ENOENT";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EBADF: return "EBADF";
    case ENOTSOCK: return "ENOTSOCK";
    default: return "EIO";
  }
}

static int pipe_get(dir_t *d) {
  if (g_pool_n > 0) {
    g_pool_n--;
    d->pr = g_pool[g_pool_n][0];
    d->pw = g_pool[g_pool_n][1];
    return 0;
  }
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) return -errno;
  if (g_pipe_cap != 65536) fcntl(p[1], F_SETPIPE_SZ, (int)g_pipe_cap);
  d->pr = p[0];
  d->pw = p[1];
  return 0;
}

static void pipe_put(dir_t *d) {
  if (d->pr < 0) return;
  if (d->n == 0 && g_pool_n < POOL_MAX) {
    g_pool[g_pool_n][0] = d->pr;
    g_pool[g_pool_n][1] = d->pw;
    g_pool_n++;
  } else {
    close(d->pr);
    close(d->pw);
  }
  d->pr = d->pw = -1;
  d->n = 0;
}

// loop thread: this turn's messages, sent as one call at its end (one lock, one wake-up)
static done_msg_t *g_out_head, *g_out_tail;

static void emit(done_msg_t *m) {
  m->next = NULL;
  if (g_out_tail) g_out_tail->next = m;
  else g_out_head = m;
  g_out_tail = m;
}

static void free_msgs(done_msg_t *m) {
  while (m) {
    done_msg_t *nx = m->next;
    if (m->fd >= 0) close(m->fd);
    free(m->bytes);
    free(m);
    m = nx;
  }
}

static void flush_out(void) {
  done_msg_t *m = g_out_head;
  g_out_head = g_out_tail = NULL;
  if (m && napi_call_threadsafe_function(g_tsfn, m, napi_tsfn_nonblocking) != napi_ok) free_msgs(m);
}

static void finish(tunnel_t *t, const char *end) {
  if (t->finished) return;
  t->finished = 1;
  if (!t->sole) {
    epoll_ctl(g_ep, EPOLL_CTL_DEL, t->fa, NULL);
    epoll_ctl(g_ep, EPOLL_CTL_DEL, t->fb, NULL);
  }
  pipe_put(&t->up);
  pipe_put(&t->down);
  if (t->owned) {
    close(t->fa);
    close(t->fb);
  }
  t->prev->next = t->next;
  t->next->prev = t->prev;
  g_tab[t->id] = NULL;
  done_msg_t *m = calloc(1, sizeof *m);
  if (m) {
    m->kind = M_DONE;
    m->id = t->id;
    m->up = (double)t->up.bytes;
    m->down = (double)t->down.bytes;
    m->end = end;
    m->fd = -1;
    if (t->bound) memcpy(m->peer, t->bound, strlen(t->bound) + 1);
    m->pport = t->bport;
    m->a = t->win;
    m->ms = t->dial_ms;
    emit(m);
  }
  t->dnext = g_dead;
  g_dead = t;
}

// 0: keep going; 1: burst used up (call again); <0: -errno
static int pump(tunnel_t *t, dir_t *d) {
  for (int round = 0; !d->done; round++) {
    if (round == BURST) return 1;
    int progress = 0;
    if (d->n > 0 && d->out_ready) {
      ssize_t r = splice(d->pr, NULL, d->dst, NULL, d->n, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
      if (r > 0) {
        d->n -= (size_t)r;
        d->bytes += (uint64_t)r;
        progress = 1;
      } else if (r < 0 && errno == EAGAIN) {
        d->out_ready = 0;
      } else if (r < 0 && errno == EINTR) {
        continue;
      } else {
        return r < 0 ? -errno : -EPIPE;
      }
    }
    if (d->n == 0 && d->pr >= 0) pipe_put(d);
    if (d->n == 0 && !d->eof && d->in_ready && d->out_ready && d->bytes < COPY_BELOW) {
      // a tunnel's first bytes (a request, a reply, often all a short connection carries) are
      // copied: recv and send cost less than two splices through a pipe
      uint8_t buf[COPY_CHUNK];
      ssize_t r = recv(d->src, buf, sizeof buf, MSG_DONTWAIT);
      if (r > 0) {
        ssize_t w = send(d->dst, buf, (size_t)r, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) return -errno;
        if (w < 0) w = 0;
        d->bytes += (uint64_t)w;
        if (w < r) {
          // the rest waits in the pipe, the one buffer (an empty pipe takes COPY_CHUNK whole)
          d->out_ready = 0;
          int e = pipe_get(d);
          if (e < 0) return e;
          ssize_t q = write(d->pw, buf + w, (size_t)(r - w));
          if (q != r - w) return -EIO;
          d->n = (size_t)q;
        }
        t->last = 0;
        continue;
      }
      if (r == 0) {
        d->eof = 1;
        progress = 1;
      } else if (errno == EAGAIN) {
        d->in_ready = 0;
      } else if (errno != EINTR) {
        return -errno;
      }
    }
    if (!d->eof && d->in_ready && d->n < g_pipe_cap) {
      if (d->pr < 0) {
        int e = pipe_get(d);
        if (e < 0) return e;
      }
      ssize_t r = splice(d->src, NULL, d->pw, NULL, g_pipe_cap - d->n, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
      if (r > 0) {
        d->n += (size_t)r;
        progress = 1;
      } else if (r == 0) {
        d->eof = 1;
        progress = 1;
      } else if (errno == EAGAIN) {
        // with bytes in the pipe, EAGAIN may mean the pipe (out of slots), not the socket
        if (d->n == 0) d->in_ready = 0;
      } else if (errno != EINTR) {
        return -errno;
      }
    }
    if (d->eof && d->n == 0) {
      pipe_put(d);
      shutdown(d->dst, SHUT_WR);
      d->done = 1;
      break;
    }
    if (progress) t->last = 0;  // stamped by the caller
    else break;
  }
  return 0;
}

static void run(tunnel_t *t) {
  if (t->finished) return;
  int busy = 0;
  dir_t *ds[2] = {&t->up, &t->down};
  for (int i = 0; i < 2; i++) {
    uint64_t before = ds[i]->bytes;
    uint8_t eof = ds[i]->eof;
    size_t n = ds[i]->n;
    int r = pump(t, ds[i]);
    if (r < 0) {
      finish(t, code_name(-r));
      return;
    }
    if (r == 1) busy = 1;
    if (ds[i]->bytes != before || ds[i]->eof != eof || ds[i]->n != n) t->last = now_ms();
  }
  if (t->up.done && t->down.done) {
    finish(t, "closed");
    return;
  }
  if (busy && !t->queued) {
    t->queued = 1;
    t->rnext = g_ready;
    g_ready = t;
  }
}

static void on_event(tunnel_t *t, int which, uint32_t ev) {
  if (t->finished) return;
  dir_t *from = which ? &t->down : &t->up;  // reads this socket
  dir_t *to = which ? &t->up : &t->down;    // writes this socket
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) from->in_ready = 1;
  if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) to->out_ready = 1;
  if (ev & EPOLLERR) {
    int fd = which ? t->fb : t->fa, err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err) {
      finish(t, code_name(err));
      return;
    }
  }
  run(t);
}

static void add_tunnel(tunnel_t *t) {
  if (t->id >= g_tab_cap) {
    size_t cap = g_tab_cap ? g_tab_cap : 1024;
    while (cap <= t->id) cap *= 2;
    tunnel_t **tab = realloc(g_tab, cap * sizeof *tab);
    if (!tab) abort();
    memset(tab + g_tab_cap, 0, (cap - g_tab_cap) * sizeof *tab);
    g_tab = tab;
    g_tab_cap = cap;
  }
  g_tab[t->id] = t;
  t->next = g_all.next;
  t->prev = &g_all;
  g_all.next->prev = t;
  g_all.next = t;
  t->last = now_ms();
  if (t->idle_ms && t->last + t->idle_ms < g_next_sweep) g_next_sweep = t->last + t->idle_ms;
  struct epoll_event ea = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = t};
  struct epoll_event eb = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = (char *)t + TAG_TUN_B};
  // the front's sockets are registered already (the dial's entries): repointed, not re-added
  int op = t->sole ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  int ok = epoll_ctl(g_ep, op, t->fa, &ea) == 0;
  // a dial that connected at once never registered its socket
  if (ok) ok = epoll_ctl(g_ep, op, t->fb, &eb) == 0 || (op == EPOLL_CTL_MOD && errno == ENOENT && epoll_ctl(g_ep, EPOLL_CTL_ADD, t->fb, &eb) == 0);
  if (!ok) {
    int e = errno;
    finish(t, code_name(e));
    return;
  }
  run(t);
}

static uint64_t front_sweep(uint64_t now);

static void sweep(uint64_t now) {
  uint64_t next = UINT64_MAX;
  for (tunnel_t *t = g_all.next, *nx; t != &g_all; t = nx) {
    nx = t->next;
    if (!t->idle_ms) continue;
    uint64_t dl = t->last + t->idle_ms;
    if (dl <= now) finish(t, "idle");
    else if (dl < next) next = dl;
  }
  uint64_t fn = front_sweep(now);
  if (fn < next) next = fn;
  // no sweep more often than every 20 ms, however the deadlines are spread
  g_next_sweep = next == UINT64_MAX ? next : (next < now + 20 ? now + 20 : next);
}


// ---- the front: accept, SOCKS5 handshake, dial (loop thread) ----

#define FRONT_BUF 1024     // a greeting (<= 257) and a request (<= 262), and early data after them
#define ACCEPT_BURST 64    // accepts per wake-up, so that tunnels get their turn
#define ACCEPT_PAUSE_MS 100  // out of descriptors: accepting waits this long

typedef struct cidr {
  uint8_t ip[16];  // IPv4 as ::ffff:a.b.c.d, as shared/net/address.ts keeps it
  uint8_t bits;
} cidr_t;

typedef struct listener {
  uint32_t lid;
  int fd;
  uint64_t hs_ms;         // handshake timeout
  uint32_t budget, n;     // handshakes at once: the most, and now (read by the main thread too)
  cidr_t *clients;        // NULL: everyone
  size_t nclients;
  uint64_t resume_at;     // accepting paused (out of descriptors) until then; 0: not paused
  uint8_t dead;
  struct listener *next;
} listener_t;

#define DIAL_MAX 16          // addresses a dial tries at most
#define ATTEMPT_DELAY_MS 250 // RFC 8305 §5: the next attempt starts after this, or when one fails
#define IDX_DEADLINE 0xffff  // a dial's failure index: its deadline passed

typedef union {
  struct sockaddr sa;
  struct sockaddr_in v4;
  struct sockaddr_in6 v6;
} sockaddr_any_t;

typedef struct attempt {
  struct front *f;
  int fd;
  uint16_t idx;
} attempt_t;

typedef struct front {
  int fd, rfd;            // client; remote while dialing (-1 before)
  listener_t *l;          // handshake only
  uint32_t lid, id;       // id: the tunnel's, from the dial on
  uint8_t method_sent, eof, dead;
  uint16_t len;           // bytes in buf
  uint64_t started, deadline, idle_ms;
  // dialing: the addresses in the order to try them, the attempts in flight (RFC 8305), the
  // most telling failure so far
  sockaddr_any_t *to;
  uint16_t naddr, tried, win, best_idx;  // tried: addresses started
  uint8_t active;
  int best_err, best_rank;
  uint64_t next_at;
  struct attempt *att[DIAL_MAX];
  uint8_t *early;         // dialing: client bytes for the remote
  size_t early_n;
  char peer[INET6_ADDRSTRLEN];
  uint16_t pport;
  struct front *prev, *next;  // g_hs (handshakes, oldest first) or g_dials
  uint8_t buf[FRONT_BUF];
} front_t;

static listener_t *g_listen;
static front_t g_hs = {.prev = &g_hs, .next = &g_hs};
static front_t g_dials = {.prev = &g_dials, .next = &g_dials};

// freed at the end of the loop turn: an event for it may still wait in this turn's batch
static void **g_trash;
static size_t g_trash_n, g_trash_cap;

static void trash(void *p) {
  if (g_trash_n == g_trash_cap) {
    size_t cap = g_trash_cap ? g_trash_cap * 2 : 256;
    void **t = realloc(g_trash, cap * sizeof *t);
    if (!t) return;  // leaked rather than freed under a pending event
    g_trash = t;
    g_trash_cap = cap;
  }
  g_trash[g_trash_n++] = p;
}

static void empty_trash(void) {
  for (size_t i = 0; i < g_trash_n; i++) free(g_trash[i]);
  g_trash_n = 0;
}

static void bury(front_t *f) {
  f->dead = 1;
  free(f->early);
  f->early = NULL;
  free(f->to);
  f->to = NULL;
  trash(f);
}

static void *tag(void *p, uintptr_t t) { return (void *)((uintptr_t)p | t); }

static void link_front(front_t *head, front_t *f) {  // at the tail: the list stays oldest first
  f->next = head;
  f->prev = head->prev;
  head->prev->next = f;
  head->prev = f;
}

static void unlink_front(front_t *f) {
  f->prev->next = f->next;
  f->next->prev = f->prev;
  f->prev = f->next = f;
}

static void want_sweep(uint64_t at) {
  if (at < g_next_sweep) g_next_sweep = at;
}


static done_msg_t *front_msg(int kind, front_t *f) {
  done_msg_t *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->kind = (uint8_t)kind;
  m->lid = f->lid;
  m->fd = -1;
  memcpy(m->peer, f->peer, sizeof m->peer);
  m->pport = f->pport;
  m->ms = (double)(now_ms() - f->started);
  return m;
}

// the end of a handshake that never reached JavaScript: the descriptor is closed here
static void hs_drop(front_t *f, const char *result) {
  epoll_ctl(g_ep, EPOLL_CTL_DEL, f->fd, NULL);
  close(f->fd);
  unlink_front(f);
  __atomic_fetch_sub(&f->l->n, 1, __ATOMIC_RELAXED);
  done_msg_t *m = front_msg(M_ENDED, f);
  if (m) {
    m->end = result;
    m->a = f->method_sent;  // the phase: 0 greeting, 1 request
    emit(m);
  }
  bury(f);
}

// the connection goes to JavaScript (kind M_REQUEST or M_ADOPT) with the bytes read so far
static void hs_handoff(front_t *f, int kind, uint32_t a, uint32_t b) {
  epoll_ctl(g_ep, EPOLL_CTL_DEL, f->fd, NULL);
  unlink_front(f);
  __atomic_fetch_sub(&f->l->n, 1, __ATOMIC_RELAXED);
  done_msg_t *m = front_msg(kind, f);
  uint8_t *bytes = f->len ? malloc(f->len) : NULL;
  if (!m || (f->len && !bytes)) {
    free(m);
    free(bytes);
    close(f->fd);
    bury(f);
    return;
  }
  if (bytes) memcpy(bytes, f->buf, f->len);
  m->fd = f->fd;
  m->bytes = bytes;
  m->n = f->len;
  m->a = a;
  m->b = b;
  m->flags = f->eof | (kind == M_ADOPT ? (uint32_t)f->method_sent << 1 : 0);
  emit(m);
  bury(f);
}

// Framing only. 0: more bytes needed; 1: greeting and CONNECT request whole (lengths out);
// -1: not the plain case, JavaScript's session takes it
static int hs_parse(front_t *f, uint32_t *glen, uint32_t *rlen, int *errcodes) {
  const uint8_t *b = f->buf;
  size_t n = f->len;
  if (n < 1) return 0;
  if (b[0] != 5) return -1;
  if (n < 2) return 0;
  size_t nm = b[1];
  if (nm == 0) return -1;
  if (n < 2 + nm) return 0;
  int no_auth = 0;
  *errcodes = 0;
  for (size_t i = 0; i < nm; i++) {
    if (b[2 + i] == 0x00) no_auth = 1;
    if (b[2 + i] == 0xD5) *errcodes = 1;
  }
  if (!no_auth) return -1;
  *glen = (uint32_t)(2 + nm);
  const uint8_t *r = b + *glen;
  size_t rn = n - *glen;
  if (rn >= 1 && r[0] != 5) return -1;
  if (rn >= 2 && r[1] != 1) return -1;  // CONNECT only
  if (rn >= 3 && r[2] != 0) return -1;
  if (rn < 4) return 0;
  size_t need;
  if (r[3] == 1) need = 10;
  else if (r[3] == 4) need = 22;
  else if (r[3] == 3) {
    if (rn < 5) return 0;
    if (r[4] == 0) return -1;
    need = 7 + (size_t)r[4];
  } else return -1;
  if (rn < need) return 0;
  *rlen = (uint32_t)need;
  return 1;
}

static void hs_read(front_t *f) {
  if (f->dead) return;
  for (;;) {
    if (f->len == FRONT_BUF) break;  // past any greeting and request: hs_parse has decided
    ssize_t r = recv(f->fd, f->buf + f->len, FRONT_BUF - f->len, 0);
    if (r > 0) {
      f->len += (uint16_t)r;
      continue;
    }
    if (r == 0) {
      f->eof = 1;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) break;
    hs_drop(f, code_name(errno));
    return;
  }
  uint32_t glen = 0, rlen = 0;
  int errcodes = 0;
  int p = hs_parse(f, &glen, &rlen, &errcodes);
  if (p < 0) {
    hs_handoff(f, M_ADOPT, 0, 0);
    return;
  }
  if (glen && !f->method_sent) {
    // RFC 1928 §3: NO_AUTH, the one method this gateway takes without --users
    static const uint8_t sel[2] = {5, 0};
    if (send(f->fd, sel, 2, MSG_NOSIGNAL) != 2) {
      hs_drop(f, code_name(errno ? errno : EIO));
      return;
    }
    f->method_sent = 1;
  }
  if (p == 1) {
    hs_handoff(f, M_REQUEST, glen, rlen | (uint32_t)errcodes << 16);
    return;
  }
  if (f->eof) {
    // ended before its request: nothing said, nothing to judge; anything else, the session judges
    if (f->len == 0) hs_drop(f, "ERR_CLIENT_CLOSED");
    else hs_handoff(f, M_ADOPT, 0, 0);
  }
}

static int cidr_has(const listener_t *l, const uint8_t ip[16]) {
  for (size_t i = 0; i < l->nclients; i++) {
    const cidr_t *c = &l->clients[i];
    size_t full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->ip, ip, full) != 0) continue;
    if (rest && ((c->ip[full] ^ ip[full]) & (uint8_t)(0xff << (8 - rest)))) continue;
    return 1;
  }
  return 0;
}

static void on_accept(listener_t *l) {
  if (l->dead) return;
  for (int i = 0; i < ACCEPT_BURST; i++) {
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    int fd = accept4(l->fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // level-triggered: left alone it would spin; the backlog waits instead (DEL, not MOD:
        // an EPOLLEXCLUSIVE entry cannot be modified)
        epoll_ctl(g_ep, EPOLL_CTL_DEL, l->fd, NULL);
        l->resume_at = now_ms() + ACCEPT_PAUSE_MS;
        want_sweep(l->resume_at);
      }
      return;
    }
    front_t *f = malloc(sizeof *f);
    if (!f) {
      close(fd);
      continue;
    }
    memset(f, 0, offsetof(front_t, buf));
    f->fd = fd;
    f->rfd = -1;
    f->l = l;
    f->lid = l->lid;
    f->started = now_ms();
    f->deadline = f->started + l->hs_ms;
    f->prev = f->next = f;
    uint8_t ip[16] = {0};
    if (sa.ss_family == AF_INET6) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sa;
      memcpy(ip, &a->sin6_addr, 16);
      f->pport = ntohs(a->sin6_port);
    } else {
      struct sockaddr_in *a = (struct sockaddr_in *)&sa;
      ip[10] = ip[11] = 0xff;
      memcpy(ip + 12, &a->sin_addr, 4);
      f->pport = ntohs(a->sin_port);
    }
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(ip, mapped, 12) == 0) inet_ntop(AF_INET, ip + 12, f->peer, sizeof f->peer);
    else inet_ntop(AF_INET6, ip, f->peer, sizeof f->peer);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    link_front(&g_hs, f);
    __atomic_fetch_add(&l->n, 1, __ATOMIC_RELAXED);
    if (l->clients && !cidr_has(l, ip)) {
      // outside --clients: JavaScript refuses it, with its log line
      hs_handoff(f, M_ADOPT, 0, 0);
      continue;
    }
    if (l->n > l->budget) {
      // the oldest handshake of this listener makes room (a slowloris only evicts itself)
      for (front_t *o = g_hs.next; o != &g_hs; o = o->next)
        if (o->l == l) {
          hs_drop(o, "ERR_CONNECTION_CAP");
          break;
        }
    }
    want_sweep(f->deadline);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = tag(f, TAG_HS)};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
      hs_drop(f, code_name(errno));
      continue;
    }
    hs_read(f);  // the greeting often came with the connection
  }
}

// the attempts still in flight, closed (all, or all but the winner)
static void attempts_close(front_t *f, attempt_t *keep) {
  for (int i = 0; i < DIAL_MAX; i++) {
    attempt_t *a = f->att[i];
    if (!a || a == keep) continue;
    epoll_ctl(g_ep, EPOLL_CTL_DEL, a->fd, NULL);
    close(a->fd);
    a->fd = -1;
    f->att[i] = NULL;
    trash(a);
  }
  f->active = keep ? 1 : 0;
}

// a failed dial's end for JavaScript, the client's descriptor handed back for the failure reply
// (give_fd), or closed (fd -1); idx: the address whose failure is reported
static void dial_end(front_t *f, const char *err, uint16_t idx, int give_fd) {
  attempts_close(f, NULL);
  if (f->rfd >= 0) {  // a winner whose reply could not be sent
    close(f->rfd);
    f->rfd = -1;
  }
  epoll_ctl(g_ep, EPOLL_CTL_DEL, f->fd, NULL);
  unlink_front(f);
  done_msg_t *m = front_msg(M_DIALED, f);
  if (!give_fd) close(f->fd);
  if (m) {
    m->id = f->id;
    m->end = err;
    m->a = idx;
    m->fd = give_fd ? f->fd : -1;
    emit(m);
  } else if (give_fd) {
    close(f->fd);
  }
  bury(f);
}

// RFC 8305 §5 leaves the choice to the client; this reports what dialDirect in JavaScript does
static int err_rank(int e) {
  switch (e) {
    case ECONNREFUSED:
    case ECONNRESET: return 0;
    case ETIMEDOUT: return 1;
    case EHOSTUNREACH:
    case EHOSTDOWN: return 2;
    case ENETUNREACH:
    case EADDRNOTAVAIL:
    case EAFNOSUPPORT: return 3;
    default: return 4;
  }
}

static void dial_fail_all(front_t *f) {
  if (f->best_err) dial_end(f, code_name(f->best_err), f->best_idx, 1);
  else dial_end(f, "ETIMEDOUT", IDX_DEADLINE, 1);
}

static void dial_ok(front_t *f, int rfd) {
  struct sockaddr_storage local;
  socklen_t len = sizeof local;
  uint8_t reply[22] = {5, 0, 0};
  size_t n;
  char text[INET6_ADDRSTRLEN];
  uint16_t bport;
  f->rfd = rfd;
  if (getsockname(rfd, (struct sockaddr *)&local, &len) < 0) {
    dial_end(f, code_name(errno), f->win, 1);
    return;
  }
  if (local.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&local;
    reply[3] = 4;
    memcpy(reply + 4, &a->sin6_addr, 16);
    memcpy(reply + 20, &a->sin6_port, 2);
    n = 22;
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
    bport = ntohs(a->sin6_port);
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&local;
    reply[3] = 1;
    memcpy(reply + 4, &a->sin_addr, 4);
    memcpy(reply + 8, &a->sin_port, 2);
    n = 10;
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
    bport = ntohs(a->sin_port);
  }
  tunnel_t *t = calloc(1, sizeof *t);
  char *bound = strdup(text);
  if (!t || !bound) {
    free(t);
    free(bound);
    dial_end(f, "ENOMEM", f->win, 1);
    return;
  }
  // both socket buffers are empty: at most FRONT_BUF early bytes and a reply go in whole. The
  // early bytes first: if the destination already failed, the client still gets a failure reply
  if (f->early_n && send(rfd, f->early, f->early_n, MSG_NOSIGNAL) != (ssize_t)f->early_n) {
    int e = errno ? errno : EIO;
    free(t);
    free(bound);
    dial_end(f, code_name(e), f->win, 1);
    return;
  }
  if (send(f->fd, reply, n, MSG_NOSIGNAL) != (ssize_t)n) {
    int e = errno ? errno : EIO;
    free(t);
    free(bound);
    // the client's own error (it may have part of its reply: no other is sent)
    dial_end(f, code_name(e), f->win, 0);
    return;
  }
  attempts_close(f, NULL);  // the winner's descriptor is the tunnel's now
  unlink_front(f);
  // no message now: the tunnel's DONE carries what JavaScript logs (one wake-up, not two)
  t->id = f->id;
  t->owned = 1;
  t->sole = 1;
  t->bound = bound;
  t->bport = bport;
  t->win = f->win;
  t->dial_ms = (double)(now_ms() - f->started);
  t->fa = f->fd;
  t->fb = rfd;
  t->idle_ms = f->idle_ms;
  dir_t *ds[2] = {&t->up, &t->down};
  for (int i = 0; i < 2; i++) {
    ds[i]->pr = ds[i]->pw = -1;
    ds[i]->in_ready = ds[i]->out_ready = 1;
  }
  t->up.src = t->down.dst = f->fd;
  t->up.dst = t->down.src = rfd;
  t->up.eof = f->eof;
  t->up.bytes = f->early_n;
  bury(f);
  add_tunnel(t);
}

static void attempt_next(front_t *f);

// one address failed: the next starts at once (RFC 8305 §5); none left and none in flight: the end
static void attempt_failed(front_t *f, attempt_t *a, uint16_t idx, int err) {
  int rank = err_rank(err);
  if (!f->best_err || rank < f->best_rank) {
    f->best_err = err;
    f->best_rank = rank;
    f->best_idx = idx;
  }
  if (a) {
    epoll_ctl(g_ep, EPOLL_CTL_DEL, a->fd, NULL);
    close(a->fd);
    a->fd = -1;
    for (int i = 0; i < DIAL_MAX; i++)
      if (f->att[i] == a) f->att[i] = NULL;
    trash(a);
    f->active--;
  }
  if (f->tried < f->naddr) attempt_next(f);
  else if (f->active == 0) dial_fail_all(f);
}

static void attempt_won(front_t *f, attempt_t *a) {
  int fd = a->fd;  // stays registered: the tunnel repoints its entry
  f->win = a->idx;
  for (int i = 0; i < DIAL_MAX; i++)
    if (f->att[i] == a) f->att[i] = NULL;
  a->fd = -1;
  trash(a);
  f->active--;
  dial_ok(f, fd);
}

static void attempt_next(front_t *f) {
  uint16_t idx = f->tried++;
  const sockaddr_any_t *to = &f->to[idx];
  f->next_at = f->tried < f->naddr ? now_ms() + ATTEMPT_DELAY_MS : UINT64_MAX;
  if (f->next_at != UINT64_MAX) want_sweep(f->next_at);
  int fd = socket(to->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    attempt_failed(f, NULL, idx, errno);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  socklen_t len = to->sa.sa_family == AF_INET6 ? sizeof to->v6 : sizeof to->v4;
  int r = connect(fd, &to->sa, len);
  int e = r == 0 ? 0 : errno;
  if (r < 0 && e != EINPROGRESS) {
    close(fd);
    attempt_failed(f, NULL, idx, e);
    return;
  }
  attempt_t *a = malloc(sizeof *a);
  if (!a) {
    close(fd);
    attempt_failed(f, NULL, idx, ENOMEM);
    return;
  }
  a->f = f;
  a->fd = fd;
  a->idx = idx;
  if (r == 0) {
    f->win = idx;
    free(a);
    dial_ok(f, fd);
    return;
  }
  struct pollfd pf = {.fd = fd, .events = POLLOUT};
  int err = 0;
  socklen_t elen = sizeof err;
  if (poll(&pf, 1, 0) == 1 && pf.revents) {
    // on loopback the handshake (or the refusal) is often done before connect() returns; reading
    // SO_ERROR clears it, so the answer is taken here either way
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0) err = errno;
    if (!err && !(pf.revents & (POLLERR | POLLHUP))) {
      f->win = idx;
      free(a);
      dial_ok(f, fd);
      return;
    }
    close(fd);
    free(a);
    attempt_failed(f, NULL, idx, err ? err : ECONNREFUSED);
    return;
  }
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLET, .data.ptr = tag(a, TAG_DIAL_R)};
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    e = errno;
    close(fd);
    free(a);
    attempt_failed(f, NULL, idx, e);
    return;
  }
  for (int i = 0; i < DIAL_MAX; i++)
    if (!f->att[i]) {
      f->att[i] = a;
      break;
    }
  f->active++;
}

static void dial_start(front_t *f) {
  link_front(&g_dials, f);
  // the client is watched for a reset only: a FIN after its request still gets its reply
  struct epoll_event ec = {.events = EPOLLET, .data.ptr = tag(f, TAG_DIAL_C)};
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, f->fd, &ec) < 0) {
    dial_end(f, code_name(errno), 0, 1);
    return;
  }
  want_sweep(f->deadline);
  attempt_next(f);
}

static void on_dial_client(front_t *f, uint32_t ev) {
  if (f->dead || !(ev & (EPOLLHUP | EPOLLERR))) return;
  // its error (a reset) is logged as the session logs it (clientError)
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = 0;
  dial_end(f, err ? code_name(err) : "ERR_CLIENT_CLOSED", 0, 0);
}

static void on_attempt(attempt_t *a, uint32_t ev) {
  if (a->fd < 0 || a->f->dead) return;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  if (err) attempt_failed(a->f, a, a->idx, err);
  else if (ev & EPOLLOUT) attempt_won(a->f, a);
}

static void front_listen(listener_t *l) {
  l->next = g_listen;
  g_listen = l;
  // several processes may accept on this socket (--workers): one is woken per connection
  struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = tag(l, TAG_LISTEN)};
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, l->fd, &ev) < 0) {
    // no connection is accepted: the caller saw the descriptor valid, so this is out of memory
    l->resume_at = now_ms() + ACCEPT_PAUSE_MS;
    want_sweep(l->resume_at);
  }
}

// closes the listener and the handshakes it accepted (the gateway is closing: no messages)
static void front_unlisten(uint32_t lid) {
  for (listener_t **pp = &g_listen; *pp; pp = &(*pp)->next) {
    listener_t *l = *pp;
    if (l->lid != lid) continue;
    *pp = l->next;
    epoll_ctl(g_ep, EPOLL_CTL_DEL, l->fd, NULL);
    close(l->fd);
    for (front_t *f = g_hs.next, *nx; f != &g_hs; f = nx) {
      nx = f->next;
      if (f->l != l) continue;
      epoll_ctl(g_ep, EPOLL_CTL_DEL, f->fd, NULL);
      close(f->fd);
      unlink_front(f);
      bury(f);
    }
    free(l->clients);
    l->clients = NULL;
    l->dead = 1;
    trash(l);
    return;
  }
}

// handshake and dial deadlines, paused listeners; returns the next deadline
static uint64_t front_sweep(uint64_t now) {
  uint64_t next = UINT64_MAX;
  for (front_t *f = g_hs.next, *nx; f != &g_hs; f = nx) {
    nx = f->next;
    if (f->deadline <= now) hs_drop(f, "ERR_HANDSHAKE_TIMEOUT");
    else if (f->deadline < next) next = f->deadline;
  }
  for (front_t *f = g_dials.next, *nx; f != &g_dials; f = nx) {
    nx = f->next;
    if (f->deadline <= now) {
      // RANK in direct.ts: a refusal still says more than the deadline
      if (f->best_err && f->best_rank == 0) dial_fail_all(f);
      else dial_end(f, "ETIMEDOUT", IDX_DEADLINE, 1);
      continue;
    }
    if (f->tried < f->naddr && f->next_at <= now) {
      attempt_next(f);
      if (f->dead) continue;
    }
    if (f->deadline < next) next = f->deadline;
    if (f->tried < f->naddr && f->next_at < next) next = f->next_at;
  }
  for (listener_t *l = g_listen; l; l = l->next) {
    if (!l->resume_at) continue;
    if (l->resume_at <= now) {
      l->resume_at = 0;
      struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = tag(l, TAG_LISTEN)};
      if (epoll_ctl(g_ep, EPOLL_CTL_ADD, l->fd, &ev) < 0 && errno != EEXIST) {
        l->resume_at = now + ACCEPT_PAUSE_MS;
        if (l->resume_at < next) next = l->resume_at;
      }
    } else if (l->resume_at < next) next = l->resume_at;
  }
  return next;
}

static void front_cancel(uint32_t id) {
  for (front_t *f = g_dials.next; f != &g_dials; f = f->next)
    if (f->id == id) {
      dial_end(f, "ERR_CLIENT_CLOSED", 0, 0);
      return;
    }
}

static void *loop(void *arg) {
  struct epoll_event evs[256];
  for (;;) {
    int timeout = -1;
    if (g_ready) timeout = 0;
    else if (g_next_sweep != UINT64_MAX) {
      uint64_t now = now_ms();
      timeout = g_next_sweep <= now ? 0 : (int)(g_next_sweep - now);
    }
    int n = epoll_wait(g_ep, evs, 256, timeout);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; i++) {
      void *p = evs[i].data.ptr;
      if (!p) {
        uint64_t v;
        while (read(g_wake, &v, sizeof v) > 0) {}
        pthread_mutex_lock(&g_mu);
        ctl_t *c = g_ctl_head;
        g_ctl_head = g_ctl_tail = NULL;
        pthread_mutex_unlock(&g_mu);
        while (c) {
          ctl_t *nx = c->next;
          if (c->kind == 0) add_tunnel(c->t);
          else if (c->kind == 2) dial_start(c->p);
          else if (c->kind == 3) front_listen(c->p);
          else if (c->kind == 4) front_unlisten(c->id);
          else if (c->id < g_tab_cap && g_tab[c->id]) finish(g_tab[c->id], "closed");
          else front_cancel(c->id);
          free(c);
          c = nx;
        }
        continue;
      }
      uintptr_t u = (uintptr_t)p;
      void *obj = (void *)(u & ~TAG_MASK);
      switch (u & TAG_MASK) {
        case TAG_TUN_A:
        case TAG_TUN_B:
          on_event(obj, (int)(u & 1), evs[i].events);
          break;
        case TAG_HS:
          hs_read(obj);
          break;
        case TAG_DIAL_C:
          on_dial_client(obj, evs[i].events);
          break;
        case TAG_DIAL_R:
          on_attempt(obj, evs[i].events);
          break;
        case TAG_LISTEN:
          on_accept(obj);
          break;
      }
    }
    tunnel_t *r = g_ready;
    g_ready = NULL;
    while (r) {
      tunnel_t *nx = r->rnext;
      r->queued = 0;
      run(r);
      r = nx;
    }
    if (g_next_sweep != UINT64_MAX) {
      uint64_t now = now_ms();
      if (now >= g_next_sweep) sweep(now);
    }
    flush_out();
    empty_trash();
    while (g_dead) {
      tunnel_t *nx = g_dead->dnext;
      if (g_dead->queued) {  // still on the ready list: unlink it first
        tunnel_t **pp = &g_ready;
        while (*pp && *pp != g_dead) pp = &(*pp)->rnext;
        if (*pp) *pp = g_dead->rnext;
      }
      free(g_dead->bound);
      free(g_dead);
      g_dead = nx;
    }
  }
  return NULL;
}

// ---- JavaScript side (main thread) ----

// the thread's queue keeps the process alive while tunnels, dials or listeners are open
static void hold_on(napi_env env, uint32_t *count, int delta) {
  uint32_t before = g_active + g_listeners;
  if (delta > 0) (*count)++;
  else (*count)--;
  uint32_t after = g_active + g_listeners;
  if (before == 0 && after > 0) napi_ref_threadsafe_function(env, g_tsfn);
  if (before > 0 && after == 0) napi_unref_threadsafe_function(env, g_tsfn);
}

static void hold(napi_env env, int delta) { hold_on(env, &g_active, delta); }

static void free_id(uint32_t id) {
  if (g_free_n == g_free_cap) {
    size_t cap = g_free_cap ? g_free_cap * 2 : 1024;
    uint32_t *f = realloc(g_free_ids, cap * sizeof *f);
    if (f) {
      g_free_ids = f;
      g_free_cap = cap;
    }
  }
  if (g_free_n < g_free_cap) g_free_ids[g_free_n++] = id;
}

// onFront(kind, lid, fd, peer, port, bytes, a, b, flags, ms, text, id)
static napi_status call_front(napi_env env, done_msg_t *m) {
  napi_value cb, argv[12], undef;
  if (!g_front_cb || napi_get_reference_value(env, g_front_cb, &cb) != napi_ok || !cb) {
    if (m->fd >= 0) close(m->fd);
    return napi_ok;
  }
  napi_create_uint32(env, m->kind, &argv[0]);
  napi_create_uint32(env, m->lid, &argv[1]);
  napi_create_int32(env, m->fd, &argv[2]);
  napi_create_string_utf8(env, m->peer, NAPI_AUTO_LENGTH, &argv[3]);
  napi_create_uint32(env, m->pport, &argv[4]);
  if (m->n) napi_create_buffer_copy(env, m->n, m->bytes, NULL, &argv[5]);
  else napi_get_null(env, &argv[5]);
  napi_create_uint32(env, m->a, &argv[6]);
  napi_create_uint32(env, m->b, &argv[7]);
  napi_create_uint32(env, m->flags, &argv[8]);
  napi_create_double(env, m->ms, &argv[9]);
  napi_create_string_utf8(env, m->end ? m->end : "", NAPI_AUTO_LENGTH, &argv[10]);
  napi_create_uint32(env, m->id, &argv[11]);
  napi_get_undefined(env, &undef);
  return napi_call_function(env, undef, cb, 12, argv, NULL);
}

// one loop turn's messages, in order; a callback that throws does not stop the rest (their
// descriptors would leak), its exception is raised after them
static void call_js(napi_env env, napi_value cb, void *ctx, void *data) {
  napi_ref thrown = NULL;
  for (done_msg_t *m = data, *nx; m; m = nx) {
    nx = m->next;
    napi_handle_scope scope = NULL;
    if (!env || !cb) {
      // the environment is going away: nothing will adopt the descriptor
      if (m->fd >= 0) close(m->fd);
    } else {
      napi_open_handle_scope(env, &scope);
      napi_status st = napi_ok;
      if (m->kind == M_DONE) {
        hold(env, -1);
        free_id(m->id);
        napi_value argv[8], undef;
        napi_create_uint32(env, m->id, &argv[0]);
        napi_create_double(env, m->up, &argv[1]);
        napi_create_double(env, m->down, &argv[2]);
        napi_create_string_utf8(env, m->end, NAPI_AUTO_LENGTH, &argv[3]);
        napi_create_string_utf8(env, m->peer, NAPI_AUTO_LENGTH, &argv[4]);
        napi_create_uint32(env, m->pport, &argv[5]);
        napi_create_double(env, m->ms, &argv[6]);
        napi_create_uint32(env, m->a, &argv[7]);
        napi_get_undefined(env, &undef);
        st = napi_call_function(env, undef, cb, 8, argv, NULL);
      } else {
        // a dial that failed has no DONE to follow (one that succeeded sends no DIALED)
        if (m->kind == M_DIALED) {
          hold(env, -1);
          free_id(m->id);
        }
        st = call_front(env, m);
      }
      bool pending = false;
      if (st == napi_pending_exception || (napi_is_exception_pending(env, &pending) == napi_ok && pending)) {
        napi_value e;
        if (napi_get_and_clear_last_exception(env, &e) == napi_ok && !thrown) {
          // kept past this message's scope
          napi_create_reference(env, e, 1, &thrown);
        }
      }
      napi_close_handle_scope(env, scope);
    }
    free(m->bytes);
    free(m);
  }
  if (thrown) {
    napi_value e;
    if (napi_get_reference_value(env, thrown, &e) == napi_ok) napi_throw(env, e);
    napi_delete_reference(env, thrown);
  }
}

static void post(ctl_t *c) {
  c->next = NULL;
  pthread_mutex_lock(&g_mu);
  if (g_ctl_tail) g_ctl_tail->next = c;
  else g_ctl_head = c;
  g_ctl_tail = c;
  pthread_mutex_unlock(&g_mu);
  uint64_t one = 1;
  ssize_t w = write(g_wake, &one, sizeof one);
  (void)w;
}

#define THROW(msg) do { napi_throw_error(env, NULL, msg); return NULL; } while (0)

// init(onDone(id, up, down, end)): starts the loop thread; once per process
static napi_value js_init(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (g_started) THROW("splice relay already started in this process");
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  g_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (g_ep < 0 || g_wake < 0) THROW("epoll/eventfd failed");
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, g_wake, &ev) < 0) THROW("epoll_ctl failed");
  // the pipe size every pipe gets: probe once
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) THROW("pipe failed");
  int sz = fcntl(p[1], F_SETPIPE_SZ, PIPE_WANT);
  if (sz < 0) sz = fcntl(p[1], F_GETPIPE_SZ);
  g_pipe_cap = sz > 0 ? (size_t)sz : 65536;
  close(p[0]);
  close(p[1]);
  g_all.next = g_all.prev = &g_all;
  napi_create_string_utf8(env, "splice-relay", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &g_tsfn) != napi_ok)
    THROW("napi_create_threadsafe_function failed");
  napi_unref_threadsafe_function(env, g_tsfn);
  g_env = env;
  if (pthread_create(&g_thread, NULL, loop, NULL) != 0) THROW("pthread_create failed");
  pthread_detach(g_thread);
  g_started = 1;
  napi_value r;
  napi_create_uint32(env, (uint32_t)g_pipe_cap, &r);
  return r;
}

// add(fdClient, fdRemote, idleMs, release, ended) -> id. Without release the loop uses both
// descriptors until onDone(id), and the caller closes them after it. With release it relays on
// duplicates that it closes itself before onDone(id); the caller may close its own at once.
// ended: bit 0 the client, bit 1 the remote has already sent its FIN (Node read it before the
// hand-over, with the request): that direction starts at EOF, so the FIN is passed on at once.
static napi_value js_add(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!g_started) THROW("not started");
  int32_t fa, fb;
  uint32_t ended = 0;
  double idle;
  bool release = false;
  if (argc < 4 || napi_get_value_int32(env, argv[0], &fa) != napi_ok || napi_get_value_int32(env, argv[1], &fb) != napi_ok ||
      napi_get_value_double(env, argv[2], &idle) != napi_ok || napi_get_value_bool(env, argv[3], &release) != napi_ok || fa < 0 || fb < 0 ||
      (argc >= 5 && napi_get_value_uint32(env, argv[4], &ended) != napi_ok))
    THROW("add(fdClient, fdRemote, idleMs, release, ended)");
  int da = release ? fcntl(fa, F_DUPFD_CLOEXEC, 0) : fa;
  int db = da < 0 ? -1 : release ? fcntl(fb, F_DUPFD_CLOEXEC, 0) : fb;
  if (db < 0) {
    int e = errno;
    if (da >= 0) close(da);
    napi_throw_error(env, code_name(e), "cannot duplicate the tunnel's descriptors");
    return NULL;
  }
  tunnel_t *t = calloc(1, sizeof *t);
  ctl_t *c = calloc(1, sizeof *c);
  if (!t || !c) {
    free(t);
    free(c);
    if (release) {
      close(da);
      close(db);
    }
    THROW("out of memory");
  }
  t->owned = release;
  t->id = g_free_n ? g_free_ids[--g_free_n] : g_next_id++;
  t->fa = da;
  t->fb = db;
  t->idle_ms = idle > 0 ? (uint64_t)idle : 0;
  dir_t *ds[2] = {&t->up, &t->down};
  for (int i = 0; i < 2; i++) {
    ds[i]->pr = ds[i]->pw = -1;
    ds[i]->in_ready = ds[i]->out_ready = 1;
  }
  t->up.src = t->down.dst = da;
  t->up.dst = t->down.src = db;
  t->up.eof = (ended & 1) != 0;
  t->down.eof = (ended & 2) != 0;
  hold(env, 1);
  c->kind = 0;
  c->t = t;
  // read before post(): from then on the loop owns t, and a tunnel that ends at once (both
  // sides already at EOF) may be freed before this returns
  uint32_t id = t->id;
  post(c);
  napi_value r;
  napi_create_uint32(env, id, &r);
  return r;
}

// cancel(id): ends the tunnel as "closed"; onDone still follows (unless it already has)
static napi_value js_cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint32_t id;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (napi_get_value_uint32(env, argv[0], &id) != napi_ok) THROW("cancel(id)");
  ctl_t *c = calloc(1, sizeof *c);
  if (!c) THROW("out of memory");
  c->kind = 1;
  c->id = id;
  post(c);
  return NULL;
}


// main thread: the open listeners, for frontHandshakes (the loop frees one only after frontUnlisten)
static listener_t **g_open;
static size_t g_open_n, g_open_cap;

static listener_t *open_find(uint32_t lid, int remove) {
  for (size_t i = 0; i < g_open_n; i++)
    if (g_open[i]->lid == lid) {
      listener_t *l = g_open[i];
      if (remove) g_open[i] = g_open[--g_open_n];
      return l;
    }
  return NULL;
}

// frontStart(onFront): the callback for the front's messages (see call_front); once
static napi_value js_front_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_valuetype t;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!g_started) THROW("not started");
  if (argc < 1 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function) THROW("frontStart(onFront)");
  if (g_front_cb) napi_delete_reference(env, g_front_cb);
  napi_create_reference(env, argv[0], 1, &g_front_cb);
  return NULL;
}

// frontListen(fd, lid, clients, handshakeMs, budget): accepts on a duplicate of the listening
// socket fd (the caller closes its own); clients: null, or 17 bytes per CIDR (address as 16,
// prefix length)
static napi_value js_front_listen(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int32_t fd;
  uint32_t lid, budget;
  double hs;
  napi_valuetype vt;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!g_started || !g_front_cb) THROW("front not started");
  if (argc < 5 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_uint32(env, argv[1], &lid) != napi_ok ||
      napi_get_value_double(env, argv[3], &hs) != napi_ok || napi_get_value_uint32(env, argv[4], &budget) != napi_ok || fd < 0 ||
      napi_typeof(env, argv[2], &vt) != napi_ok)
    THROW("frontListen(fd, lid, clients, handshakeMs, budget)");
  cidr_t *clients = NULL;
  size_t nclients = 0;
  if (vt != napi_null && vt != napi_undefined) {
    void *data;
    size_t len;
    bool isbuf = false;
    napi_is_typedarray(env, argv[2], &isbuf);
    napi_typedarray_type tt;
    napi_value ab;
    size_t off;
    if (!isbuf || napi_get_typedarray_info(env, argv[2], &tt, &len, &data, &ab, &off) != napi_ok || tt != napi_uint8_array || len % 17)
      THROW("frontListen: clients must be a Uint8Array of 17-byte entries");
    nclients = len / 17;
    clients = calloc(nclients ? nclients : 1, sizeof *clients);
    if (!clients) THROW("out of memory");
    for (size_t i = 0; i < nclients; i++) {
      memcpy(clients[i].ip, (uint8_t *)data + i * 17, 16);
      uint8_t bits = ((uint8_t *)data)[i * 17 + 16];
      clients[i].bits = bits > 128 ? 128 : bits;
    }
  }
  int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  listener_t *l = calloc(1, sizeof *l);
  ctl_t *c = calloc(1, sizeof *c);
  if (dfd < 0 || !l || !c) {
    int e = errno;
    if (dfd >= 0) close(dfd);
    free(l);
    free(c);
    free(clients);
    napi_throw_error(env, code_name(e), "cannot take the listening socket");
    return NULL;
  }
  l->lid = lid;
  l->fd = dfd;
  l->hs_ms = hs > 0 ? (uint64_t)hs : 0;
  l->budget = budget ? budget : 1;
  l->clients = clients;
  l->nclients = nclients;
  if (g_open_n == g_open_cap) {
    size_t cap = g_open_cap ? g_open_cap * 2 : 8;
    listener_t **o = realloc(g_open, cap * sizeof *o);
    if (!o) {
      close(dfd);
      free(l);
      free(c);
      free(clients);
      THROW("out of memory");
    }
    g_open = o;
    g_open_cap = cap;
  }
  g_open[g_open_n++] = l;
  hold_on(env, &g_listeners, 1);
  c->kind = 3;
  c->p = l;
  post(c);
  return NULL;
}

// frontHandshakes(lid) -> handshakes the front holds there now
static napi_value js_front_handshakes(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], r;
  uint32_t lid;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &lid) != napi_ok) THROW("frontHandshakes(lid)");
  listener_t *l = open_find(lid, 0);
  napi_create_uint32(env, l ? __atomic_load_n(&l->n, __ATOMIC_RELAXED) : 0, &r);
  return r;
}

// bindListen(address, port, reusePort, listen) -> {fd, port}: a TCP socket bound there (IPv6 ones
// v6-only, as bridge/listen.ts makes them), listening if asked. With reusePort several processes
// (--workers) listen on one port, the kernel spreading connections over them; a socket only bound
// keeps the port (port 0: the one the kernel chose) without taking connections. Throws with the
// errno's name as code.
static napi_value js_bind_listen(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  char addr[INET6_ADDRSTRLEN + 1];
  size_t alen;
  uint32_t port;
  bool reuse = false, listening = false;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4 || napi_get_value_string_utf8(env, argv[0], addr, sizeof addr, &alen) != napi_ok || napi_get_value_uint32(env, argv[1], &port) != napi_ok ||
      napi_get_value_bool(env, argv[2], &reuse) != napi_ok || napi_get_value_bool(env, argv[3], &listening) != napi_ok || port > 65535)
    THROW("bindListen(address, port, reusePort, listen)");
  sockaddr_any_t sa;
  memset(&sa, 0, sizeof sa);
  socklen_t len;
  if (inet_pton(AF_INET, addr, &sa.v4.sin_addr) == 1) {
    sa.v4.sin_family = AF_INET;
    sa.v4.sin_port = htons((uint16_t)port);
    len = sizeof sa.v4;
  } else if (inet_pton(AF_INET6, addr, &sa.v6.sin6_addr) == 1) {
    sa.v6.sin6_family = AF_INET6;
    sa.v6.sin6_port = htons((uint16_t)port);
    len = sizeof sa.v6;
  } else {
    THROW("bindListen: address must be an IP literal");
  }
  int fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1, e = 0;
  if (fd < 0) e = errno;
  else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) e = errno;
  else if (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) e = errno;
  else if (sa.sa.sa_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) e = errno;
  else if (bind(fd, &sa.sa, len) < 0) e = errno;
  else if (listening && listen(fd, 511) < 0) e = errno;
  if (e) {
    if (fd >= 0) close(fd);
    napi_throw_error(env, code_name(e), "cannot listen");
    return NULL;
  }
  sockaddr_any_t got;
  socklen_t glen = sizeof got;
  getsockname(fd, &got.sa, &glen);
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_int32(env, fd, &v);
  napi_set_named_property(env, out, "fd", v);
  napi_create_uint32(env, ntohs(got.sa.sa_family == AF_INET6 ? got.v6.sin6_port : got.v4.sin_port), &v);
  napi_set_named_property(env, out, "port", v);
  return out;
}

// frontUnlisten(lid): stops accepting there and closes its handshakes
static napi_value js_front_unlisten(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint32_t lid;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &lid) != napi_ok) THROW("frontUnlisten(lid)");
  ctl_t *c = calloc(1, sizeof *c);
  if (!c) THROW("out of memory");
  c->kind = 4;
  c->id = lid;
  if (open_find(lid, 1)) hold_on(env, &g_listeners, -1);
  post(c);
  return NULL;
}

// frontDial(fd, lid, addresses, port, timeoutMs, idleMs, early, eof) -> id: the loop dials the
// addresses (IP literals, in the order to try them, RFC 8305 attempts 250 ms apart) for the client
// fd (from a REQUEST message: the loop owns it again). A failure ends in M_DIALED (the client's fd
// given back for the failure reply, or closed; a = the address whose error it is, or
// IDX_DEADLINE); a success relays as tunnel id until its M_DONE, which carries BND, the address
// that answered and the dial's duration.
static napi_value js_front_dial(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  int32_t fd;
  uint32_t lid, port, naddr = 0;
  double timeout, idle;
  bool eof = false, isarr = false;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!g_started) THROW("not started");
  if (argc < 8 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_uint32(env, argv[1], &lid) != napi_ok ||
      napi_is_array(env, argv[2], &isarr) != napi_ok || !isarr || napi_get_array_length(env, argv[2], &naddr) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &port) != napi_ok || napi_get_value_double(env, argv[4], &timeout) != napi_ok ||
      napi_get_value_double(env, argv[5], &idle) != napi_ok || napi_get_value_bool(env, argv[7], &eof) != napi_ok || fd < 0 || port == 0 ||
      port > 65535 || naddr == 0)
    THROW("frontDial(fd, lid, addresses, port, timeoutMs, idleMs, early, eof)");
  if (naddr > DIAL_MAX) naddr = DIAL_MAX;
  front_t *f = malloc(sizeof *f);
  ctl_t *c = calloc(1, sizeof *c);
  sockaddr_any_t *to = calloc(naddr, sizeof *to);
  if (!f || !c || !to) {
    free(f);
    free(c);
    free(to);
    THROW("out of memory");
  }
  memset(f, 0, offsetof(front_t, buf));
  f->prev = f->next = f;
  for (uint32_t i = 0; i < naddr; i++) {
    napi_value v;
    char addr[INET6_ADDRSTRLEN + 1];
    size_t alen = 0;
    int ok = napi_get_element(env, argv[2], i, &v) == napi_ok && napi_get_value_string_utf8(env, v, addr, sizeof addr, &alen) == napi_ok;
    if (ok && inet_pton(AF_INET, addr, &to[i].v4.sin_addr) == 1) {
      to[i].v4.sin_family = AF_INET;
      to[i].v4.sin_port = htons((uint16_t)port);
    } else if (ok && inet_pton(AF_INET6, addr, &to[i].v6.sin6_addr) == 1) {
      to[i].v6.sin6_family = AF_INET6;
      to[i].v6.sin6_port = htons((uint16_t)port);
    } else {
      free(f);
      free(c);
      free(to);
      THROW("frontDial: addresses must be IP literals");
    }
  }
  napi_valuetype vt;
  napi_typeof(env, argv[6], &vt);
  if (vt != napi_null && vt != napi_undefined) {
    void *data;
    size_t len;
    napi_typedarray_type tt;
    napi_value ab;
    size_t off;
    bool is = false;
    napi_is_typedarray(env, argv[6], &is);
    if (!is || napi_get_typedarray_info(env, argv[6], &tt, &len, &data, &ab, &off) != napi_ok || tt != napi_uint8_array) {
      free(f);
      free(c);
      free(to);
      THROW("frontDial: early must be a Uint8Array");
    }
    if (len) {
      f->early = malloc(len);
      if (!f->early) {
        free(f);
        free(c);
        free(to);
        THROW("out of memory");
      }
      memcpy(f->early, data, len);
      f->early_n = len;
    }
  }
  f->to = to;
  f->naddr = (uint16_t)naddr;
  f->fd = fd;
  f->rfd = -1;
  f->lid = lid;
  f->eof = eof;
  f->started = now_ms();
  f->deadline = f->started + (timeout > 0 ? (uint64_t)timeout : 10000);
  f->idle_ms = idle > 0 ? (uint64_t)idle : 0;
  f->id = g_free_n ? g_free_ids[--g_free_n] : g_next_id++;
  hold(env, 1);
  c->kind = 2;
  c->p = f;
  uint32_t id = f->id;
  post(c);
  napi_value r;
  napi_create_uint32(env, id, &r);
  return r;
}

// linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h: both 80, at SOL_IP and SOL_IPV6
#define DS_SO_ORIGINAL_DST 80
#define DS_IP6T_SO_ORIGINAL_DST 80

// origDst(fd) -> {address, port, family}: the original destination of an accepted TCP
// connection that conntrack tracked (a redirected one, or an ordinary one: then it is the
// local end). Throws with the errno's name as code (ENOENT: conntrack knows no such connection).
static napi_value js_orig_dst(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) THROW("origDst(fd)");
  struct sockaddr_storage local;
  socklen_t len = sizeof local;
  if (getsockname(fd, (struct sockaddr *)&local, &len) < 0) {
    napi_throw_error(env, code_name(errno), "getsockname failed");
    return NULL;
  }
  struct sockaddr_storage dst;
  memset(&dst, 0, sizeof dst);
  len = sizeof dst;
  int family = local.ss_family;
  int r = family == AF_INET6 ? getsockopt(fd, IPPROTO_IPV6, DS_IP6T_SO_ORIGINAL_DST, &dst, &len)
                             : getsockopt(fd, IPPROTO_IP, DS_SO_ORIGINAL_DST, &dst, &len);
  if (r < 0) {
    napi_throw_error(env, code_name(errno), family == AF_INET6 ? "getsockopt(IP6T_SO_ORIGINAL_DST) failed" : "getsockopt(SO_ORIGINAL_DST) failed");
    return NULL;
  }
  char text[INET6_ADDRSTRLEN];
  uint16_t port;
  if (dst.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&dst;
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
    port = ntohs(a->sin6_port);
  } else if (dst.ss_family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&dst;
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
    port = ntohs(a->sin_port);
  } else {
    napi_throw_error(env, "EAFNOSUPPORT", "original destination of an unknown address family");
    return NULL;
  }
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, out, "address", v);
  napi_create_uint32(env, port, &v);
  napi_set_named_property(env, out, "port", v);
  napi_create_uint32(env, dst.ss_family == AF_INET6 ? 6 : 4, &v);
  napi_set_named_property(env, out, "family", v);
  return out;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
      {"init", NULL, js_init, NULL, NULL, NULL, napi_default, NULL},
      {"add", NULL, js_add, NULL, NULL, NULL, napi_default, NULL},
      {"cancel", NULL, js_cancel, NULL, NULL, NULL, napi_default, NULL},
      {"origDst", NULL, js_orig_dst, NULL, NULL, NULL, napi_default, NULL},
      {"frontStart", NULL, js_front_start, NULL, NULL, NULL, napi_default, NULL},
      {"frontListen", NULL, js_front_listen, NULL, NULL, NULL, napi_default, NULL},
      {"frontUnlisten", NULL, js_front_unlisten, NULL, NULL, NULL, napi_default, NULL},
      {"frontDial", NULL, js_front_dial, NULL, NULL, NULL, napi_default, NULL},
      {"frontHandshakes", NULL, js_front_handshakes, NULL, NULL, NULL, napi_default, NULL},
      {"bindListen", NULL, js_bind_listen, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
