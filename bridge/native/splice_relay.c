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
// Also origDst(fd) for the bridge's --transparent listener: the destination a connection had
// before nftables `redirect` sent it here (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST, conntrack).
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define PIPE_WANT (1024 * 1024)  // asked with F_SETPIPE_SZ; the kernel may give less
#define POOL_MAX 64              // idle pipes kept for reuse
#define BURST 32                 // splice rounds per direction before other tunnels get a turn

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
  struct tunnel *prev, *next;   // all live tunnels (idle sweep)
  struct tunnel *rnext;         // ready list (burst limit hit)
  struct tunnel *dnext;         // finished, to free at the end of the loop turn
} tunnel_t;

// epoll data: the tunnel pointer with the low bit telling which socket (a=0, b=1); NULL = wake fd
typedef struct ctl {
  int kind;  // 0 add, 1 cancel
  tunnel_t *t;
  uint32_t id;
  struct ctl *next;
} ctl_t;

typedef struct done_msg {
  uint32_t id;
  double up, down;
  const char *end;
} done_msg_t;

static int g_ep = -1, g_wake = -1;
static pthread_t g_thread;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static ctl_t *g_ctl_head, *g_ctl_tail;
static napi_threadsafe_function g_tsfn;
static napi_env g_env;
static int g_started;
static size_t g_pipe_cap = 65536;
// main thread only
static uint32_t g_active;
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

static void finish(tunnel_t *t, const char *end) {
  if (t->finished) return;
  t->finished = 1;
  epoll_ctl(g_ep, EPOLL_CTL_DEL, t->fa, NULL);
  epoll_ctl(g_ep, EPOLL_CTL_DEL, t->fb, NULL);
  pipe_put(&t->up);
  pipe_put(&t->down);
  if (t->owned) {
    close(t->fa);
    close(t->fb);
  }
  t->prev->next = t->next;
  t->next->prev = t->prev;
  g_tab[t->id] = NULL;
  done_msg_t *m = malloc(sizeof *m);
  if (m) {
    m->id = t->id;
    m->up = (double)t->up.bytes;
    m->down = (double)t->down.bytes;
    m->end = end;
    napi_call_threadsafe_function(g_tsfn, m, napi_tsfn_nonblocking);
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
  struct epoll_event eb = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = (char *)t + 1};
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, t->fa, &ea) < 0 || epoll_ctl(g_ep, EPOLL_CTL_ADD, t->fb, &eb) < 0) {
    int e = errno;
    finish(t, code_name(e));
    return;
  }
  run(t);
}

static void sweep(uint64_t now) {
  uint64_t next = UINT64_MAX;
  for (tunnel_t *t = g_all.next, *nx; t != &g_all; t = nx) {
    nx = t->next;
    if (!t->idle_ms) continue;
    uint64_t dl = t->last + t->idle_ms;
    if (dl <= now) finish(t, "idle");
    else if (dl < next) next = dl;
  }
  // no sweep more often than every 20 ms, however the deadlines are spread
  g_next_sweep = next == UINT64_MAX ? next : (next < now + 20 ? now + 20 : next);
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
          else if (c->id < g_tab_cap && g_tab[c->id]) finish(g_tab[c->id], "closed");
          free(c);
          c = nx;
        }
        continue;
      }
      uintptr_t u = (uintptr_t)p;
      on_event((tunnel_t *)(u & ~(uintptr_t)1), (int)(u & 1), evs[i].events);
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
    while (g_dead) {
      tunnel_t *nx = g_dead->dnext;
      if (g_dead->queued) {  // still on the ready list: unlink it first
        tunnel_t **pp = &g_ready;
        while (*pp && *pp != g_dead) pp = &(*pp)->rnext;
        if (*pp) *pp = g_dead->rnext;
      }
      free(g_dead);
      g_dead = nx;
    }
  }
  return NULL;
}

// ---- JavaScript side (main thread) ----

static void call_js(napi_env env, napi_value cb, void *ctx, void *data) {
  done_msg_t *m = data;
  if (env && cb) {
    g_active--;
    if (g_active == 0) napi_unref_threadsafe_function(env, g_tsfn);
    if (g_free_n == g_free_cap) {
      size_t cap = g_free_cap ? g_free_cap * 2 : 1024;
      uint32_t *f = realloc(g_free_ids, cap * sizeof *f);
      if (f) {
        g_free_ids = f;
        g_free_cap = cap;
      }
    }
    if (g_free_n < g_free_cap) g_free_ids[g_free_n++] = m->id;
    napi_value argv[4], undef;
    napi_create_uint32(env, m->id, &argv[0]);
    napi_create_double(env, m->up, &argv[1]);
    napi_create_double(env, m->down, &argv[2]);
    napi_create_string_utf8(env, m->end, NAPI_AUTO_LENGTH, &argv[3]);
    napi_get_undefined(env, &undef);
    napi_call_function(env, undef, cb, 4, argv, NULL);
  }
  free(m);
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
  if (g_active++ == 0) napi_ref_threadsafe_function(env, g_tsfn);
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
  };
  napi_define_properties(env, exports, 4, d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
