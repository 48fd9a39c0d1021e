#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "error.h"
#include "http_async.h"
#include "http_head.h"
#include "log.h"
#include "service.h"

/* Per-connection pool: caps request line + headers. libmicrohttpd clears the whole pool for
 * every request on a keep-alive connection, so it is kept small (measured: 32 KiB spent
 * about 3 % of the front-end's CPU in memset on cache hits). */
#define HTTP__CONN_MEMORY (16 * 1024)
#define HTTP__CONN_LIMIT  4096
#define HTTP__REPLY_MAX   (4 * 1024 * 1024) /* replies: /metrics, log pages */
#define HTTP__PARAM_MAX   256
/* Finished requests' state an event thread keeps for its next ones, and the buffer capacity
 * each keeps: bounds what recycling (http__req_new) holds per thread. */
#define HTTP__SPARE_MAX   64
#define HTTP__SPARE_BYTES 4096
#define HTTP__JOBS_MAX    4096 /* requests waiting for a worker; more get 503 */
#define HTTP__PENDING_MAX 4096 /* accepted sockets whose first request head is not complete */
#define HTTP__IP_BUCKETS  1024

/*
 * One per open socket. libmicrohttpd's own timeout only measures inactivity, so a
 * client sending one byte per second would hold a connection forever. Each
 * connection therefore gets a deadline instead: idle_timeout_s from accept, or from
 * the moment a reply is queued, to read that reply and send its next complete request
 * (none while a handler runs). A sweeper thread shuts down sockets past it, and
 * libmicrohttpd then closes them as usual. libmicrohttpd's timeout is off: it read the
 * clock and took a daemon-wide mutex on every receive and send (perf on cache hits).
 */
struct http__conn {
    int fd;
    uint32_t ip; /* client IPv4 address (network order), counted in the per-address table */
    atomic_uint_fast64_t deadline_ms; /* reply read, next request in by then; 0 while handled */
    struct http__conn *prev, *next;
};

/* A socket held by the door until its first request head is complete. */
struct http__pending {
    int fd;
    struct sockaddr_in addr;
    uint64_t deadline_ms;
    struct http__pending *prev, *next; /* accept order, which is deadline order */
};

/* A socket the door passed to an event thread, which hands it to its daemon. */
struct http__add {
    int fd;
    struct sockaddr_in addr;
    struct http__add *next;
};

/*
 * One event thread: a libmicrohttpd daemon driven from our own epoll loop (libmicrohttpd's
 * "external" epoll mode) instead of libmicrohttpd's thread pool, so that the thread can also
 * drive an outbound client (opts.async_clients): a cache miss then sends its call, reads the
 * reply and answers its client on the one thread that read the request, with no hand-off to
 * another thread and back (docs/design.md, "Misses without a worker").
 */
struct http__loop {
    struct http_server *srv;
    struct MHD_Daemon *daemon;
    pthread_t thread;
    int wake;                  /* eventfd: other threads wake the loop (in the daemon's set) */
    struct http_async *client; /* NULL unless opts.async_clients */
    pthread_mutex_t lock;      /* guards adds and stop */
    struct http__add *adds;    /* sockets from the door, not given to the daemon yet */
    bool stop;
    atomic_bool woken; /* set by another thread before it writes `wake` */
    bool resumed;      /* loop thread only: a connection was resumed, run the daemon again */
    /* Loop thread only: finished requests' state, kept for the next ones (http__req_new). */
    struct http__req *spare;
    size_t nspare;
};

/* Open connections of one client address (pending in the door or owned by libmicrohttpd). */
struct http__ip {
    uint32_t ip;
    unsigned count;
    struct http__ip *next;
};

struct http_server {
    struct http__loop *loops; /* the event threads, opts.threads of them */
    size_t nloops, next_loop; /* next_loop: the door's round robin */
    /* The door: our own listening socket and acceptor thread (see "the door" below). */
    int listen_fd, door_epoll, door_wake;
    pthread_t door;
    struct http__pending pending; /* sentinel */
    size_t npending;
    pthread_mutex_t ip_lock;
    struct http__ip *ips[HTTP__IP_BUCKETS];
    atomic_uint_fast64_t door_refused; /* not HTTP/1.x, bad framing or over limits */
    atomic_uint_fast64_t ip_refused;   /* over the per-address limit */
    pthread_mutex_t conns_lock;
    struct http__conn conns; /* sentinel of the list of open sockets */
    pthread_t sweeper;
    pthread_cond_t sweeper_cond;
    bool stopping;
    atomic_uint_fast64_t slow_closed;

    /* Worker pool for blocking handlers. */
    pthread_mutex_t jobs_lock;
    pthread_cond_t jobs_cond;
    struct http__req *jobs_head, **jobs_tail;
    size_t jobs_count;
    bool jobs_stopping;
    pthread_t *workers;
    int nworkers;
    atomic_uint_fast64_t jobs_refused;
    /* Requests started by an async handler and not resumed yet; stop waits for them. */
    atomic_uint_fast64_t async_pending;
    atomic_bool async_closed; /* stopping: async handlers are no longer started */
    pthread_key_t memo_key;   /* each event thread's struct http__memo */
    atomic_uint_fast64_t async_started;
    struct http_server_opts opts;
    struct http_route *routes;
    size_t nroutes;
    struct http_route metrics_route; /* GET /metrics, built in */
    struct http_route livez_route;   /* GET /livez, built in */
    struct http_route readyz_route;  /* GET /readyz: the service's GET /health */
    struct http_route *health_route; /* NULL when the service has none */
};

/* Per-request state, created on the first access-handler call. */
struct http__req {
    struct http_server *srv;
    struct http__loop *loop; /* the event thread whose daemon owns the connection */
    uint64_t start_us;
    struct http_route *route; /* NULL when the path or method matched nothing */
    int route_err;            /* BZ_ENOTFOUND or BZ_EMETHOD when route is NULL */
    char param[HTTP__PARAM_MAX];
    char allow[48]; /* methods of the path when the method matched no route (405) */
    size_t param_len;
    bool has_param;
    struct strbuf body;
    bool too_big;
    bool replied; /* an early reply was queued: discard the rest of the request */
    /* Set while the request runs on the worker pool (the connection is suspended). */
    struct http_request req;
    struct http_response resp;
    bool queued, done;
    struct http__req *next_job;
    /* An async request finished on a worker (http_request_defer); NULL otherwise. */
    void (*defer_fn)(void *arg);
    void *defer_arg;
};

static _Thread_local struct http__loop *http__current; /* the event thread's own loop */

/* Wakes loop l from another thread (it then looks at its adds, stop flag and resumes). */
static void http__loop_poke(struct http__loop *l)
{
    atomic_store(&l->woken, true);
    uint64_t one = 1;
    if (write(l->wake, &one, sizeof one) != sizeof one)
        LOG_WARN("http: cannot wake an event thread: %s", strerror(errno));
}

/*
 * A request's state, for the event thread's next request: the last one's when the thread
 * has one spare (with its buffers, so a small reply allocates nothing), else a new one.
 * perf on cache hits put calloc, the reply buffer's malloc and their frees at about 1 % of
 * the front-end's CPU. Every field but the buffers' bytes is reset here.
 */
static struct http__req *http__req_new(struct http_server *srv)
{
    struct http__loop *l = http__current;
    struct http__req *st = l ? l->spare : NULL;
    struct strbuf body, reply;
    if (st) {
        l->spare = st->next_job;
        l->nspare--;
        body = st->body;
        reply = st->resp.body;
        strbuf_reset(&body);
        strbuf_reset(&reply);
        body.max = HTTP_BODY_MAX; /* a route may have lowered it */
        reply.max = HTTP__REPLY_MAX;
    } else {
        st = xmalloc(sizeof *st);
        strbuf_init(&body, HTTP_BODY_MAX);
        strbuf_init(&reply, HTTP__REPLY_MAX);
    }
    *st = (struct http__req){.srv = srv, .loop = l, .body = body, .resp = {.body = reply}};
    return st;
}

static void http__req_free(struct http__req *st)
{
    strbuf_free(&st->body);
    strbuf_free(&st->resp.body);
    free(st);
}

/* Done with st: kept by its event thread (called on it) within the bounds, else freed. */
static void http__req_release(struct http__req *st)
{
    struct http__loop *l = http__current;
    if (!l || l != st->loop || l->nspare >= HTTP__SPARE_MAX) {
        http__req_free(st);
        return;
    }
    if (st->body.cap > HTTP__SPARE_BYTES)
        strbuf_free(&st->body);
    if (st->resp.body.cap > HTTP__SPARE_BYTES)
        strbuf_free(&st->resp.body);
    st->next_job = l->spare;
    l->spare = st;
    l->nspare++;
}

static bool http__ip_take(struct http_server *srv, uint32_t ip, bool force);
static time_t http__date(const char **text);
static void http__ip_release(struct http_server *srv, uint32_t ip);

/* ---------------------------------------------------------------- slow clients */

static struct http__conn *http__conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

/* Arms (from now) or disarms the connection's deadline (struct http__conn). */
static void http__conn_deadline(struct http_server *srv, struct MHD_Connection *conn, bool arm)
{
    struct http__conn *c = http__conn_of(conn);
    if (!c)
        return;
    /* An atomic store, not the list lock, and the coarse clock: this runs twice per request
     * on the hot path, and the sweeper looks once a second. */
    atomic_store_explicit(&c->deadline_ms,
                          arm ? clock_coarse_ms() + (uint64_t)srv->opts.idle_timeout_s * 1000u : 0,
                          memory_order_relaxed);
}

static void http__notify_conn(void *cls, struct MHD_Connection *conn, void **socket_context,
                              enum MHD_ConnectionNotificationCode toe)
{
    struct http_server *srv = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct http__conn *c = xcalloc(1, sizeof *c);
        c->fd = info ? info->connect_fd : -1;
        const union MHD_ConnectionInfo *addr =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (addr && addr->client_addr && addr->client_addr->sa_family == AF_INET)
            c->ip = ((const struct sockaddr_in *)(const void *)addr->client_addr)->sin_addr.s_addr;
        http__ip_take(srv, c->ip, true); /* the door already applied the limit */
        pthread_mutex_lock(&srv->conns_lock);
        c->deadline_ms = clock_now_ms() + (uint64_t)srv->opts.idle_timeout_s * 1000u;
        c->next = srv->conns.next;
        c->prev = &srv->conns;
        srv->conns.next->prev = c;
        srv->conns.next = c;
        pthread_mutex_unlock(&srv->conns_lock);
        *socket_context = c;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        struct http__conn *c = *socket_context;
        pthread_mutex_lock(&srv->conns_lock);
        c->prev->next = c->next;
        c->next->prev = c->prev;
        pthread_mutex_unlock(&srv->conns_lock);
        http__ip_release(srv, c->ip);
        free(c);
        *socket_context = NULL;
    }
}

static void *http__sweeper_main(void *arg)
{
    struct http_server *srv = arg;
    pthread_mutex_lock(&srv->conns_lock);
    while (!srv->stopping) {
        uint64_t now = clock_now_ms();
        for (struct http__conn *c = srv->conns.next; c != &srv->conns; c = c->next) {
            if (c->deadline_ms && now > c->deadline_ms && c->fd >= 0) {
                /* Shutting down (not closing) the socket is safe from this thread:
                 * libmicrohttpd sees end-of-stream and closes it itself. */
                shutdown(c->fd, SHUT_RDWR);
                c->deadline_ms = 0;
                atomic_fetch_add_explicit(&srv->slow_closed, 1, memory_order_relaxed);
            }
        }
        struct timespec ts;
        clock_deadline(&ts, 1000);
        pthread_cond_timedwait(&srv->sweeper_cond, &srv->conns_lock, &ts);
    }
    pthread_mutex_unlock(&srv->conns_lock);
    return NULL;
}

/* ---------------------------------------------------------------- per-address limit */

static struct http__ip **http__ip_slot(struct http_server *srv, uint32_t ip)
{
    struct http__ip **pp = &srv->ips[(ip * 2654435761u) % HTTP__IP_BUCKETS];
    while (*pp && (*pp)->ip != ip)
        pp = &(*pp)->next;
    return pp;
}

/* Counts one more connection of ip; unless forced, refuses (false) one over the limit. */
static bool http__ip_take(struct http_server *srv, uint32_t ip, bool force)
{
    unsigned max = srv->opts.conns_per_client > 0 ? (unsigned)srv->opts.conns_per_client
                                                  : HTTP_CONN_PER_CLIENT_MAX;
    bool ok = true;
    pthread_mutex_lock(&srv->ip_lock);
    struct http__ip **pp = http__ip_slot(srv, ip);
    if (!*pp) {
        *pp = xcalloc(1, sizeof **pp);
        (*pp)->ip = ip;
    }
    if ((*pp)->count >= max && !force)
        ok = false;
    else
        (*pp)->count++;
    if ((*pp)->count == 0) {
        free(*pp);
        *pp = NULL;
    }
    pthread_mutex_unlock(&srv->ip_lock);
    return ok;
}

static void http__ip_release(struct http_server *srv, uint32_t ip)
{
    pthread_mutex_lock(&srv->ip_lock);
    struct http__ip **pp = http__ip_slot(srv, ip);
    if (*pp && --(*pp)->count == 0) {
        struct http__ip *dead = *pp;
        *pp = dead->next;
        free(dead);
    }
    pthread_mutex_unlock(&srv->ip_lock);
}

/* ---------------------------------------------------------------- the door */

/*
 * libmicrohttpd 0.9.75 answers some bad requests itself (HTML bodies, headers sent
 * twice for a bad Content-Length), waits for a line end that a TLS ClientHello never
 * sends, and runs out of its connection pool on a few hundred query parameters. So we
 * own the listening socket: a door thread accepts, applies the per-address limit and
 * waits (epoll, edge-triggered, MSG_PEEK) until the first request head is complete.
 * http_head_check() then either hands the socket to libmicrohttpd with the bytes
 * still unread, or answers with our JSON error and closes at once. Later requests
 * on a keep-alive connection are checked in the access handler (framing) and the
 * URI callback (query size); what is left to libmicrohttpd is in docs/security.md.
 */

/* Writes a complete JSON error reply with Connection: close on a socket we own. */
static void http__send_error_raw(int fd, int err, const char *why)
{
    struct http_response resp = {0};
    strbuf_init(&resp.body, HTTP__REPLY_MAX);
    http_reply_error(&resp, err, why);
    char head[256];
    const char *date;
    http__date(&date);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     resp.status, MHD_get_reason_phrase_for((unsigned)resp.status), date,
                     resp.body.len);
    struct iovec iov[2] = {{head, (size_t)n}, {resp.body.data, resp.body.len}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    if (sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        LOG_DEBUG("http: error reply not sent: %s", strerror(errno));
    strbuf_free(&resp.body);
}

static void http__door_unlink(struct http_server *srv, struct http__pending *p)
{
    epoll_ctl(srv->door_epoll, EPOLL_CTL_DEL, p->fd, NULL);
    p->prev->next = p->next;
    p->next->prev = p->prev;
    srv->npending--;
    http__ip_release(srv, p->addr.sin_addr.s_addr);
}

/* Closes a pending socket; `drain` reads what the client sent so the close is not a reset. */
static void http__door_close(struct http_server *srv, struct http__pending *p, bool drain)
{
    http__door_unlink(srv, p);
    if (drain) {
        char sink[4096];
        for (int i = 0; i < 16 && recv(p->fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
            ;
        shutdown(p->fd, SHUT_WR);
    }
    close(p->fd);
    free(p);
}

static void http__door_accept(struct http_server *srv)
{
    for (;;) {
        struct sockaddr_in addr;
        socklen_t alen = sizeof addr;
        int fd =
            accept4(srv->listen_fd, (struct sockaddr *)&addr, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: back off instead of spinning on the ready socket. */
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            return;
        }
        if (alen != sizeof addr || addr.sin_family != AF_INET) {
            close(fd);
            continue;
        }
        if (srv->npending >= HTTP__PENDING_MAX ||
            !http__ip_take(srv, addr.sin_addr.s_addr, false)) {
            atomic_fetch_add_explicit(&srv->ip_refused, 1, memory_order_relaxed);
            close(fd);
            continue;
        }
        struct http__pending *p = xcalloc(1, sizeof *p);
        p->fd = fd;
        p->addr = addr;
        p->deadline_ms = clock_now_ms() + (uint64_t)srv->opts.idle_timeout_s * 1000u;
        p->next = &srv->pending;
        p->prev = srv->pending.prev;
        srv->pending.prev->next = p;
        srv->pending.prev = p;
        srv->npending++;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = p};
        if (epoll_ctl(srv->door_epoll, EPOLL_CTL_ADD, fd, &ev) != 0)
            http__door_close(srv, p, false);
    }
}

static void http__door_read(struct http_server *srv, struct http__pending *p, uint32_t events,
                            char *buf)
{
    ssize_t n = recv(p->fd, buf, HTTP_HEAD_MAX, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            http__door_close(srv, p, false);
        return;
    }
    if (n <= 0) {
        http__door_close(srv, p, false);
        return;
    }
    size_t head_len = 0;
    const char *why = NULL;
    int rv = http_head_check(buf, (size_t)n, &head_len, &why);
    if (rv == 0) {
        /* Incomplete: a client that stopped sending will never complete it. */
        if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            http__door_close(srv, p, false);
        return;
    }
    if (rv < 0) {
        atomic_fetch_add_explicit(&srv->door_refused, 1, memory_order_relaxed);
        http__send_error_raw(p->fd, rv, why);
        http__door_close(srv, p, true);
        return;
    }
    /* A complete, acceptable head: libmicrohttpd reads it (still unread) from here on.
     * It sets TCP_NODELAY only on sockets it accepts itself; without it a keep-alive reply
     * sent in two writes waits for the peer's delayed ACK (measured: 0.44 -> 1.35 ms per
     * cached lookup). */
    int one = 1;
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    http__door_unlink(srv, p);
    int fd = p->fd;
    struct sockaddr_in addr = p->addr;
    free(p);
    /* To an event thread, round robin: a daemon is only ever called from its own thread. */
    struct http__loop *l = &srv->loops[srv->next_loop++ % srv->nloops];
    struct http__add *add = xmalloc(sizeof *add);
    add->fd = fd;
    add->addr = addr;
    pthread_mutex_lock(&l->lock);
    add->next = l->adds;
    bool wake = l->adds == NULL;
    l->adds = add;
    pthread_mutex_unlock(&l->lock);
    if (wake)
        http__loop_poke(l);
}

static void *http__door_main(void *arg)
{
    struct http_server *srv = arg;
    char *buf = xmalloc(HTTP_HEAD_MAX);
    struct epoll_event evs[64];
    bool stop = false;
    while (!stop) {
        int n = epoll_wait(srv->door_epoll, evs, 64, 250);
        for (int i = 0; i < n; i++) {
            void *ptr = evs[i].data.ptr;
            if (ptr == &srv->listen_fd)
                http__door_accept(srv);
            else if (ptr == &srv->door_wake)
                stop = true;
            else
                http__door_read(srv, ptr, evs[i].events, buf);
        }
        uint64_t now = clock_now_ms();
        while (srv->pending.next != &srv->pending && srv->pending.next->deadline_ms <= now) {
            atomic_fetch_add_explicit(&srv->slow_closed, 1, memory_order_relaxed);
            http__door_close(srv, srv->pending.next, false);
        }
    }
    while (srv->pending.next != &srv->pending)
        http__door_close(srv, srv->pending.next, false);
    free(buf);
    return NULL;
}

/* Binds the listening socket and the door's epoll set. 0 or BZ_EUNAVAIL. */
/*
 * The listening socket (opts.listen_fd from http_server_bind(), owned from here on, or
 * one bound now) made non-blocking, and the door's epoll set. 0 or BZ_EUNAVAIL.
 */
static int http__door_open(struct http_server *srv, char *errmsg, size_t errlen)
{
    srv->pending.next = srv->pending.prev = &srv->pending;
    srv->listen_fd = srv->opts.listen_fd > 0 ? srv->opts.listen_fd : -1;
    srv->door_epoll = epoll_create1(EPOLL_CLOEXEC);
    srv->door_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (srv->listen_fd < 0 &&
        http_server_bind(srv->opts.listen, &srv->listen_fd, errmsg, errlen) != 0)
        return BZ_EUNAVAIL;
    int flags = fcntl(srv->listen_fd, F_GETFL);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &srv->listen_fd};
    struct epoll_event wake = {.events = EPOLLIN, .data.ptr = &srv->door_wake};
    if (flags < 0 || fcntl(srv->listen_fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
        srv->door_epoll < 0 || srv->door_wake < 0 ||
        epoll_ctl(srv->door_epoll, EPOLL_CTL_ADD, srv->listen_fd, &ev) != 0 ||
        epoll_ctl(srv->door_epoll, EPOLL_CTL_ADD, srv->door_wake, &wake) != 0) {
        snprintf(errmsg, errlen, "cannot listen on %s: %s", srv->opts.listen, strerror(errno));
        return BZ_EUNAVAIL;
    }
    return 0;
}

static void http__door_close_fds(struct http_server *srv)
{
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    if (srv->door_epoll >= 0)
        close(srv->door_epoll);
    if (srv->door_wake >= 0)
        close(srv->door_wake);
}

/* ---------------------------------------------------------------- responses */

void http_reply_bytes(struct http_response *resp, int status, const void *data, size_t len)
{
    resp->status = status;
    strbuf_reset(&resp->body);
    /* The body ceiling is sized for our largest replies; a failure here is a bug. */
    if (strbuf_append(&resp->body, data, len) != 0) {
        resp->status = 500;
        strbuf_reset(&resp->body);
    }
}

void http_reply_binary(struct http_response *resp, const void *data, size_t len)
{
    resp->content_type = HTTP_BINARY_TYPE;
    http_reply_bytes(resp, 200, data, len);
}

bool http_request_binary(const struct http_request *req, struct http_response *resp,
                         const char *what)
{
    const char *type = http_request_header(req, "Content-Type");
    if (type && strcasecmp(type, HTTP_BINARY_TYPE) == 0)
        return true;
    char msg[128];
    snprintf(msg, sizeof msg, "%s is " HTTP_BINARY_TYPE " (src/common/msg.h)", what);
    http_reply_error(resp, BZ_EINVAL, msg);
    return false;
}

void http_reply_json(struct http_response *resp, int status, json_t *json)
{
    char *s = json_dumps(json, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(json);
    if (!s) {
        http_reply_error(resp, BZ_ENOMEM, NULL);
        return;
    }
    http_reply_bytes(resp, status, s, strlen(s));
    free(s);
}

void http_reply_data(struct http_response *resp, json_t *data)
{
    http_reply_json(resp, 200, json_pack("{s:o}", "data", data));
}

json_t *http_error_json(int err, const char *message)
{
    /* Messages may quote client input, cut by snprintf: never let that make a 5xx. */
    char safe[512];
    util_utf8_copy(safe, sizeof safe, message ? message : bz_strerror(err));
    return json_pack("{s:{s:i,s:s}}", "error", "code", bz_error_status(err), "message", safe);
}

void http_reply_error(struct http_response *resp, int err, const char *message)
{
    http_reply_json(resp, bz_error_status(err), http_error_json(err, message));
}

json_t *http_request_json_object(const struct http_request *req, struct http_response *resp)
{
    json_error_t jerr;
    json_t *obj = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) {
        char msg[200];
        snprintf(msg, sizeof msg, "malformed JSON: %s", jerr.text);
        http_reply_error(resp, BZ_EINVAL, msg);
        return NULL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        http_reply_error(resp, BZ_EINVAL, "body must be a JSON object");
        return NULL;
    }
    return obj;
}

const char *http_request_header(const struct http_request *req, const char *name)
{
    const char *value = NULL;
    size_t len = 0;
    if (MHD_lookup_connection_value_n(req->conn_, MHD_HEADER_KIND, name, strlen(name), &value,
                                      &len) != MHD_YES)
        return NULL;
    return strlen(value) == len ? value : "\x01";
}

/* ---------------------------------------------------------------- routing */

/* Matches path against pattern; on a "{}" match stores the segment in param. */
static bool http__match(const char *pattern, const char *path, char *param, size_t paramlen,
                        size_t *param_len, bool *has_param)
{
    *has_param = false;
    while (*pattern && *path) {
        if (pattern[0] == '{' && pattern[1] == '}') {
            const char *end = strchr(path, '/');
            size_t n = end ? (size_t)(end - path) : strlen(path);
            if (n == 0)
                return false;
            /* Over-long segments still match (so the handler answers 400), truncated to a
             * length no valid parameter has. */
            size_t keep = n < paramlen - 1 ? n : paramlen - 1;
            memcpy(param, path, keep);
            param[keep] = '\0';
            *param_len = n;
            *has_param = true;
            path += n;
            pattern += 2;
            continue;
        }
        if (*pattern != *path)
            return false;
        pattern++;
        path++;
    }
    return *pattern == '\0' && *path == '\0';
}

static void http__observe(struct http_route *route, int status, uint64_t start_us)
{
    if (status < HTTP_STATUS_MIN || status > HTTP_STATUS_MAX)
        status = 500;
    atomic_fetch_add_explicit(&route->stats.by_code[status - HTTP_STATUS_MIN], 1,
                              memory_order_relaxed);
    metrics_hist_observe(&route->stats.latency, clock_now_us() - start_us);
}

/* The routes in /metrics: the service's, then the built-in ones. */
static struct http_route *http__route_at(struct http_server *srv, size_t i)
{
    if (i < srv->nroutes)
        return &srv->routes[i];
    i -= srv->nroutes;
    struct http_route *builtin[] = {&srv->metrics_route, &srv->livez_route, &srv->readyz_route};
    if (i == 2 && !srv->health_route)
        return NULL;
    return i < 3 ? builtin[i] : NULL;
}

static void http__render_metrics(struct http_server *srv, struct strbuf *out)
{
    char name[128], labels[192];
    struct http_route *r;

    snprintf(name, sizeof name, "%s_http_requests_total", srv->opts.metrics_prefix);
    metrics_render_header(out, name, "counter", "HTTP requests by route, method and status code.");
    for (size_t i = 0; (r = http__route_at(srv, i)) != NULL; i++) {
        bool any = false;
        for (int c = 0; c <= HTTP_STATUS_MAX - HTTP_STATUS_MIN; c++) {
            uint64_t v = atomic_load_explicit(&r->stats.by_code[c], memory_order_relaxed);
            if (v == 0 && (any || c != 200 - HTTP_STATUS_MIN))
                continue;
            any = any || v;
            snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\",code=\"%d\"", r->pattern,
                     r->method, c + HTTP_STATUS_MIN);
            metrics_render_value(out, name, labels, v);
        }
    }
    snprintf(name, sizeof name, "%s_http_request_duration_seconds", srv->opts.metrics_prefix);
    metrics_render_header(out, name, "histogram", "HTTP request latency by route and method.");
    for (size_t i = 0; (r = http__route_at(srv, i)) != NULL; i++) {
        snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\"", r->pattern, r->method);
        metrics_render_hist(out, name, labels, &r->stats.latency);
    }
    metrics_render_process(out);
    metrics_render_header(out, "bazaar_build_info", "gauge",
                          "Always 1; the labels say which build and service this is.");
    snprintf(labels, sizeof labels, "version=\"%s\",service=\"%s\"", service_version(),
             srv->opts.metrics_prefix);
    metrics_render_value(out, "bazaar_build_info", labels, 1);
    snprintf(name, sizeof name, "%s_http_busy_refused_total", srv->opts.metrics_prefix);
    metrics_render_simple(
        out, name, "counter",
        "Requests refused with 503 because every worker was busy and the queue full.",
        atomic_load(&srv->jobs_refused));
    snprintf(name, sizeof name, "%s_http_async_started_total", srv->opts.metrics_prefix);
    metrics_render_simple(out, name, "counter",
                          "Requests handed to an async handler (no worker) after the fast one.",
                          atomic_load(&srv->async_started));
    snprintf(name, sizeof name, "%s_http_slow_connections_closed_total", srv->opts.metrics_prefix);
    metrics_render_simple(out, name, "counter",
                          "Connections cut off for not completing a request within idle_timeout_s.",
                          atomic_load(&srv->slow_closed));
    snprintf(name, sizeof name, "%s_http_refused_before_parse_total", srv->opts.metrics_prefix);
    metrics_render_simple(out, name, "counter",
                          "Connections answered 4xx/5xx and closed on their first request head "
                          "(not HTTP/1.x, ambiguous framing, over the head limits).",
                          atomic_load(&srv->door_refused));
    snprintf(name, sizeof name, "%s_http_per_client_refused_total", srv->opts.metrics_prefix);
    metrics_render_simple(out, name, "counter",
                          "Connections closed at accept: over the per-address limit or the "
                          "pending-connection cap.",
                          atomic_load(&srv->ip_refused));
    if (srv->opts.metrics)
        srv->opts.metrics(srv->opts.svc, out);
}

/* Adds method to the comma-separated Allow list (once; GET brings HEAD along). */
static void http__allow_add(char *allow, size_t len, const char *method)
{
    for (int pass = 0; pass < 2; pass++) {
        const char *m = pass == 0 ? method : "HEAD";
        if (pass == 1 && strcmp(method, "GET") != 0)
            break;
        size_t mlen = strlen(m);
        bool present = false;
        for (const char *p = allow; *p; p += strcspn(p, ",")) {
            p += strspn(p, ", ");
            if (strncmp(p, m, mlen) == 0 && (p[mlen] == ',' || p[mlen] == '\0'))
                present = true;
        }
        size_t used = strlen(allow);
        if (!present && used + mlen + 3 < len)
            snprintf(allow + used, len - used, "%s%s", used ? ", " : "", m);
    }
}

/*
 * Finds the route for method and path; on failure sets st->route_err (and st->allow
 * for 405). HEAD is served by the GET route of the path (RFC 9110 §9.3.2);
 * libmicrohttpd sends the headers of the reply without its body.
 */
static void http__route(struct http_server *srv, const char *method, const char *path,
                        struct http__req *st)
{
    bool path_known = false;
    const char *want = strcmp(method, "HEAD") == 0 ? "GET" : method;
    st->allow[0] = '\0';
    for (size_t i = 0; i < srv->nroutes; i++) {
        struct http_route *r = &srv->routes[i];
        if (!http__match(r->pattern, path, st->param, sizeof st->param, &st->param_len,
                         &st->has_param))
            continue;
        path_known = true;
        if (strcmp(r->method, want) == 0) {
            st->route = r;
            return;
        }
        http__allow_add(st->allow, sizeof st->allow, r->method);
    }
    struct http_route *builtin = strcmp(path, "/metrics") == 0 ? &srv->metrics_route
                                 : strcmp(path, "/livez") == 0 ? &srv->livez_route
                                 : strcmp(path, "/readyz") == 0 && srv->health_route
                                     ? &srv->readyz_route
                                     : NULL;
    if (builtin) {
        path_known = true;
        if (strcmp(want, "GET") == 0) {
            st->route = builtin;
            return;
        }
        http__allow_add(st->allow, sizeof st->allow, "GET");
    }
    st->route_err = path_known ? BZ_EMETHOD : BZ_ENOTFOUND;
}

/*
 * Answers what needs no handler (no route, /metrics, a missing secret) and runs the
 * route's fast handler. Returns true when resp is complete; false when the blocking
 * handler must run (on the worker pool).
 */
static bool http__dispatch_fast(struct http_server *srv, struct http__req *st,
                                struct http_request *req, struct http_response *resp)
{
    struct http_route *r = st->route;
    if (!r) {
        http_reply_error(resp, st->route_err,
                         st->route_err == BZ_EMETHOD ? "method not allowed" : "no such route");
        if (st->route_err == BZ_EMETHOD)
            resp->allow = st->allow;
        return true;
    }
    if (r == &srv->metrics_route) {
        resp->status = 200;
        resp->content_type = "text/plain; version=0.0.4";
        http__render_metrics(srv, &resp->body);
        return true;
    }
    if (r == &srv->livez_route) {
        http_reply_json(
            resp, 200,
            json_pack("{s:s,s:s}", "status", "alive", "service", srv->opts.metrics_prefix));
        return true;
    }
    if (r == &srv->readyz_route)
        r = srv->health_route; /* the same answer as GET /health (SPEC §2) */
    req->param = st->has_param ? st->param : NULL;
    req->param_len = st->param_len;
    if (r->internal) {
        const char *given = http_request_header(req, HTTP_SECRET_HEADER);
        if (!given || !util_secret_equal(given, srv->opts.secret)) {
            http_reply_error(resp, BZ_EAUTH, NULL);
            return true;
        }
    }
    if (r->fast && r->fast(srv->opts.svc, req, resp))
        return true;
    if (!r->handler && !r->async) {
        http_reply_error(resp, BZ_EINTERNAL, "route has no handler");
        return true;
    }
    return false;
}

/* ---------------------------------------------------------------- async handlers */

/* Runs the route's async handler on the suspended request st: true if it took it. */
static bool http__async_start(struct http_server *srv, struct http__req *st)
{
    if (!st->route->async)
        return false;
    /* Counted before the check, so http_server_stop either sees this request or this
     * request sees the server closing (both are sequentially consistent). */
    atomic_fetch_add(&srv->async_pending, 1);
    if (atomic_load(&srv->async_closed) || !st->route->async(srv->opts.svc, &st->req, &st->resp)) {
        atomic_fetch_sub(&srv->async_pending, 1);
        return false;
    }
    atomic_fetch_add_explicit(&srv->async_started, 1, memory_order_relaxed);
    return true;
}

/*
 * Resumes st's suspended connection, from any thread. libmicrohttpd only marks it (a daemon
 * without its own thread is not woken): the event thread runs its daemon again after this
 * round, or, from another thread, is woken through its eventfd. st may be freed from here on.
 */
static void http__resume(struct http__req *st, struct MHD_Connection *conn)
{
    struct http__loop *l = st->loop;
    MHD_resume_connection(conn);
    if (l == http__current) {
        l->resumed = true;
        return;
    }
    http__loop_poke(l);
}

void http_request_resume(const struct http_request *req)
{
    struct http__req *st = (struct http__req *)((char *)req - offsetof(struct http__req, req));
    struct http_server *srv = st->srv;
    struct MHD_Connection *conn = st->req.conn_;
    st->done = true;
    http__resume(st, conn); /* st may be freed from here on */
    atomic_fetch_sub(&srv->async_pending, 1);
}

/* ---------------------------------------------------------------- worker pool */

static bool http__job_push(struct http_server *srv, struct http__req *st);

bool http_request_defer(const struct http_request *req, void (*fn)(void *arg), void *arg)
{
    struct http__req *st = (struct http__req *)((char *)req - offsetof(struct http__req, req));
    st->defer_fn = fn;
    st->defer_arg = arg;
    if (http__job_push(st->srv, st))
        return true;
    st->defer_fn = NULL;
    return false;
}

/* Queues st for a worker. false when the queue is full (the caller answers 503). */
static bool http__job_push(struct http_server *srv, struct http__req *st)
{
    pthread_mutex_lock(&srv->jobs_lock);
    bool ok = srv->jobs_count < HTTP__JOBS_MAX && !srv->jobs_stopping;
    if (ok) {
        st->next_job = NULL;
        *srv->jobs_tail = st;
        srv->jobs_tail = &st->next_job;
        srv->jobs_count++;
        pthread_cond_signal(&srv->jobs_cond);
    }
    pthread_mutex_unlock(&srv->jobs_lock);
    return ok;
}

static void *http__worker_main(void *arg)
{
    struct http_server *srv = arg;
    pthread_mutex_lock(&srv->jobs_lock);
    for (;;) {
        while (!srv->jobs_head && !srv->jobs_stopping)
            pthread_cond_wait(&srv->jobs_cond, &srv->jobs_lock);
        if (!srv->jobs_head)
            break; /* stopping and drained */
        struct http__req *st = srv->jobs_head;
        srv->jobs_head = st->next_job;
        if (!srv->jobs_head)
            srv->jobs_tail = &srv->jobs_head;
        srv->jobs_count--;
        pthread_mutex_unlock(&srv->jobs_lock);

        /* The connection is suspended: libmicrohttpd does not touch it (or its headers)
         * until it is resumed, so the handler may read them from this thread. */
        if (st->defer_fn) {
            st->defer_fn(st->defer_arg);
            http_request_resume(&st->req);
        } else {
            st->route->handler(srv->opts.svc, &st->req, &st->resp);
            struct MHD_Connection *conn = st->req.conn_;
            st->done = true;
            http__resume(st, conn);
        }

        pthread_mutex_lock(&srv->jobs_lock);
    }
    pthread_mutex_unlock(&srv->jobs_lock);
    return NULL;
}

/*
 * The last small 200 reply an event thread queued, kept as a libmicrohttpd response so that
 * the same reply again (a hot cache hit) is queued without building a response: perf on cache
 * hits put creating, filling and destroying one (an allocation and a mutex per response, one
 * per header) at several percent of the front-end's CPU. libmicrohttpd responses are immutable
 * and reference-counted, made to be queued on many connections.
 */
#define HTTP__MEMO_MAX 512
struct http__memo {
    struct MHD_Response *r; /* our reference; NULL until the first small 200 */
    time_t date;            /* the second of its Date header */
    char content_type[64];
    size_t len;
    char bytes[HTTP__MEMO_MAX];
};

/* Thread exit (libmicrohttpd's threads end in MHD_stop_daemon). */
static void http__memo_free(void *arg)
{
    struct http__memo *m = arg;
    if (m->r)
        MHD_destroy_response(m->r);
    free(m);
}

/* The calling event thread's memo when resp may use one (srv NULL: never), else NULL. */
static struct http__memo *http__memo_of(struct http_server *srv, const struct http_response *resp,
                                        const char *content_type)
{
    if (!srv || resp->status != 200 || resp->retry_after_s > 0 || resp->allow ||
        resp->body.len > HTTP__MEMO_MAX ||
        strlen(content_type) >= sizeof(((struct http__memo *)0)->content_type))
        return NULL;
    struct http__memo *m = pthread_getspecific(srv->memo_key);
    if (!m) {
        m = xcalloc(1, sizeof *m);
        pthread_setspecific(srv->memo_key, m);
    }
    return m;
}

/*
 * The Date header's value (RFC 9110 §5.6.7, IMF-fixdate) and its second. libmicrohttpd
 * formats one per reply (gmtime_r, about 2 % of the front-end's CPU on cache hits, perf);
 * each thread formats it once a second instead, and we add it to every reply
 * (MHD_USE_SUPPRESS_DATE_NO_CLOCK), as nginx does with its cached time.
 */
static time_t http__date(const char **text)
{
    static _Thread_local struct {
        time_t sec;
        char text[32];
    } d;
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != d.sec || !d.text[0]) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(d.text, sizeof d.text, "%s, %02u %s %04u %02u:%02u:%02u GMT",
                 days[(unsigned)tm.tm_wday % 7u], (unsigned)tm.tm_mday % 100u,
                 months[(unsigned)tm.tm_mon % 12u], (unsigned)(tm.tm_year + 1900) % 10000u,
                 (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u,
                 (unsigned)tm.tm_sec % 100u);
        d.sec = now;
    }
    *text = d.text;
    return now;
}

/*
 * Builds and queues the libmicrohttpd response; consumes resp->body unless a memo's response
 * is queued. `close` adds Connection: close (framing errors: nothing after this request can
 * be trusted).
 */
static enum MHD_Result http__queue_ex(struct http_server *srv, struct MHD_Connection *conn,
                                      struct http_response *resp, bool close)
{
    const char *content_type = resp->content_type ? resp->content_type : "application/json";
    const char *date;
    time_t date_sec = http__date(&date);
    struct http__memo *memo = close ? NULL : http__memo_of(srv, resp, content_type);
    if (memo && memo->r && memo->date == date_sec && memo->len == resp->body.len &&
        (memo->len == 0 || memcmp(memo->bytes, resp->body.data, memo->len) == 0) &&
        strcmp(memo->content_type, content_type) == 0)
        return MHD_queue_response(conn, 200, memo->r);
    size_t len;
    char *body = strbuf_steal(&resp->body, &len);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_DATE, date);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (resp->retry_after_s > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", resp->retry_after_s);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    if (resp->allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, resp->allow);
    if (close)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
    if (memo) {
        /* Keep r (our reference) for the next identical reply; the one it replaces is freed
         * once the connections sending it are done with it. */
        if (memo->r)
            MHD_destroy_response(memo->r);
        memo->r = r;
        memo->date = date_sec;
        memo->len = len;
        if (len)
            memcpy(memo->bytes, body, len); /* r owns body and lives on */
        snprintf(memo->content_type, sizeof memo->content_type, "%s", content_type);
    } else {
        MHD_destroy_response(r);
    }
    return ret;
}

static enum MHD_Result http__queue(struct http_server *srv, struct MHD_Connection *conn,
                                   struct http_response *resp)
{
    return http__queue_ex(srv, conn, resp, false);
}

/* An error reply queued before the body is read; the connection is closed after it. */
static enum MHD_Result http__reply_error_now(struct MHD_Connection *conn, int err, const char *msg)
{
    struct http_response resp = {0};
    strbuf_init(&resp.body, HTTP__REPLY_MAX);
    http_reply_error(&resp, err, msg);
    return http__queue_ex(NULL, conn, &resp, true);
}

static enum MHD_Result http__framing_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                        size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    http_framing_add(cls, key, key_size, value ? value : "", value ? value_size : 0);
    return MHD_YES;
}

/* RFC 9112 framing of the request libmicrohttpd parsed: 0 or a BZ_E* code with *why. */
static int http__check_framing(struct MHD_Connection *conn, const char *version, const char **why)
{
    struct http_framing f;
    http_framing_init(&f, strcmp(version, MHD_HTTP_VERSION_1_0) == 0);
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, http__framing_cb, &f);
    return http_framing_verdict(&f, why);
}

static enum MHD_Result http__access(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    struct http_server *srv = cls;
    struct http__req *st = *con_cls;

    if (!st) {
        /* First call: headers only. Queueing a reply here would force Connection: close,
         * except for a declared oversize body, which we refuse before reading it. */
        st = http__req_new(srv);
        st->start_us = clock_now_us();
        *con_cls = st;
        /* Framing first: an ambiguous body length means the rest of the connection cannot
         * be read safely (request smuggling, RFC 9112 §6.3), so answer and close. */
        const char *why = NULL;
        int bad = http__check_framing(conn, version, &why);
        if (bad) {
            st->replied = true;
            return http__reply_error_now(conn, bad, why);
        }
        http__route(srv, method, url, st);
        /* The secret before the body: an unauthenticated client costs us its headers only. */
        if (st->route && st->route->internal) {
            struct http_request hreq = {.conn_ = conn};
            const char *given = http_request_header(&hreq, HTTP_SECRET_HEADER);
            if (!given || !util_secret_equal(given, srv->opts.secret)) {
                st->replied = true;
                http__observe(st->route, bz_error_status(BZ_EAUTH), st->start_us);
                return http__reply_error_now(conn, BZ_EAUTH, NULL);
            }
        }
        size_t limit = st->route && st->route->body_max ? st->route->body_max : HTTP_BODY_MAX;
        st->body.max = limit;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        uint64_t declared;
        if (cl && parse_u64_str(cl, UINT64_MAX, &declared) == 0 && declared > limit) {
            st->replied = true;
            return http__reply_error_now(conn, BZ_ETOOBIG, NULL);
        }
        return MHD_YES;
    }
    if (st->replied) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!st->too_big && strbuf_append(&st->body, upload_data, *upload_data_size) != 0)
            st->too_big = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (st->too_big)
        return http__reply_error_now(conn, BZ_ETOOBIG, NULL);

    if (st->queued) {
        if (!st->done)
            return MHD_YES; /* spurious call while suspended */
        int status = st->resp.status;
        enum MHD_Result ret = http__queue(srv, conn, &st->resp);
        http__conn_deadline(srv, conn, true); /* the client's turn: read it, send the next */
        http__observe(st->route, status, st->start_us);
        return ret;
    }

    http__conn_deadline(srv, conn, false); /* a running handler is not a slow client */
    st->req = (struct http_request){
        .method = method,
        .path = url,
        .start_us = st->start_us,
        .body = st->body.data ? st->body.data : "",
        .body_len = st->body.len,
        .conn_ = conn,
    };
    st->resp.status = 200; /* the rest of resp is as http__req_new left it */
    if (!http__dispatch_fast(srv, st, &st->req, &st->resp)) {
        st->queued = true;
        MHD_suspend_connection(conn);
        if (http__async_start(srv, st) || (st->route->handler && http__job_push(srv, st)))
            return MHD_YES;
        /* Overloaded (or stopping, for a route with only an async handler): answer now
         * rather than queue without bound. */
        http__resume(st, conn);
        atomic_fetch_add_explicit(&srv->jobs_refused, 1, memory_order_relaxed);
        st->resp.retry_after_s = 1;
        http_reply_error(&st->resp, BZ_EUNAVAIL, "server busy");
        st->done = true;
        return MHD_YES;
    }
    int status = st->resp.status;
    enum MHD_Result ret = http__queue(srv, conn, &st->resp);
    http__conn_deadline(srv, conn, true);
    if (st->route)
        http__observe(st->route, status, st->start_us);
    return ret;
}

static void http__completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    (void)toe, (void)cls, (void)conn;
    struct http__req *st = *con_cls;
    if (!st)
        return;
    http__req_release(st);
    *con_cls = NULL;
}

/*
 * Percent-decoding that never produces a NUL byte or a path separator: "%00"
 * and "%2F" stay literally in the path (and then fail name validation)
 * instead of cutting the path short or changing which route it matches.
 */
static size_t http__unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls, (void)conn;
    char *w = strchr(s, '%'); /* the bytes before the first '%' stay where they are */
    if (!w)
        return strlen(s);
    for (const char *r = w; *r; r++) {
        if (r[0] == '%' && r[1] && r[2]) {
            char hex[3] = {r[1], r[2], 0};
            char *end;
            unsigned long v = strtoul(hex, &end, 16);
            if (*end == '\0' && v != 0 && v != '/' && hex[0] != '-' && hex[0] != '+' &&
                hex[0] != ' ') {
                *w++ = (char)v;
                r += 2;
                continue;
            }
        }
        *w++ = *r;
    }
    *w = '\0';
    return (size_t)(w - s);
}

/*
 * Called by libmicrohttpd with the raw target of every request, before it splits the
 * query (a few hundred parameters exhaust its connection pool: no reply, then a hang).
 * The door checks first requests; this catches later ones on a keep-alive connection:
 * our 414 is written on the socket (nothing else is being sent on it at this point:
 * the previous reply is complete) and the socket shut down, so libmicrohttpd then
 * finds it closed. The returned state marks the request as answered.
 */
static void *http__uri_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    if (http_query_param_count(uri, strlen(uri)) <= HTTP_QUERY_PARAMS_MAX)
        return NULL;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info) {
        http__send_error_raw(info->connect_fd, BZ_EURI, "too many query parameters");
        shutdown(info->connect_fd, SHUT_RDWR);
    }
    struct http__req *st = http__req_new(cls);
    st->start_us = clock_now_us();
    st->replied = true;
    return st;
}

/* libmicrohttpd's format strings; the attribute tells the compiler fmt is one (clang's
 * -Wformat-nonliteral otherwise refuses to build). */
__attribute__((format(printf, 2, 0))) static void http__mhd_log(void *cls, const char *fmt,
                                                                va_list ap)
{
    (void)cls;
    if (!log_enabled(LOG_LEVEL_DEBUG))
        return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    if (n && msg[n - 1] == '\n')
        msg[n - 1] = '\0';
    LOG_DEBUG("http: %s", msg);
}

static int http__resolve(const char *listen, struct sockaddr_storage *ss, char *errmsg,
                         size_t errlen)
{
    char host[128];
    uint16_t port;
    if (parse_host_port(listen, host, sizeof host, &port)) {
        snprintf(errmsg, errlen, "listen address '%s' is not host:port", listen);
        return BZ_EINVAL;
    }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(errmsg, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return BZ_EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    ((struct sockaddr_in *)ss)->sin_port = htons(port);
    freeaddrinfo(res);
    return 0;
}

int http_server_bind(const char *addr, int *fd, char *errmsg, size_t errlen)
{
    struct sockaddr_storage ss = {0};
    int rv = http__resolve(addr, &ss, errmsg, errlen);
    if (rv)
        return rv;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        snprintf(errmsg, errlen, "socket: %s", strerror(errno));
        return BZ_EUNAVAIL;
    }
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)) != 0 ||
        listen(s, SOMAXCONN) != 0) {
        snprintf(errmsg, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        close(s);
        return BZ_EUNAVAIL;
    }
    *fd = s;
    return 0;
}

/*
 * Starts one of the server's threads. A process that cannot create the threads it was
 * configured with at start-up cannot serve as configured (a blocking request would wait for
 * a worker that does not exist): it says why and aborts, like an allocation failure.
 */
static void http__thread_start(pthread_t *t, void *(*fn)(void *), void *arg, const char *what)
{
    int rv = pthread_create(t, NULL, fn, arg);
    if (rv) {
        LOG_ERROR("http: cannot start %s thread: %s (lower [*] workers?)", what, strerror(rv));
        abort();
    }
}

/* ---------------------------------------------------------------- event threads */

struct http_async *http_request_async(const struct http_request *req)
{
    (void)req; /* async handlers run on the event thread that read the request */
    return http__current ? http__current->client : NULL;
}

/* Gives the daemon the sockets the door passed; true when the loop is to stop. */
static bool http__loop_wake(struct http__loop *l)
{
    uint64_t count;
    if (read(l->wake, &count, sizeof count) < 0 && errno != EAGAIN)
        LOG_WARN("http: wake-up read: %s", strerror(errno));
    pthread_mutex_lock(&l->lock);
    struct http__add *adds = l->adds;
    l->adds = NULL;
    bool stop = l->stop;
    pthread_mutex_unlock(&l->lock);
    while (adds) {
        struct http__add *next = adds->next;
        /* On failure libmicrohttpd has closed the socket (and told no one: it never started). */
        if (MHD_add_connection(l->daemon, adds->fd, (struct sockaddr *)&adds->addr,
                               sizeof adds->addr) != MHD_YES)
            LOG_DEBUG("http: connection refused by libmicrohttpd (limit reached?)");
        free(adds);
        adds = next;
    }
    return stop;
}

/*
 * One thread, one wait: the loop sleeps in the daemon's own epoll_wait (MHD_run_wait), in
 * whose set we put the loop's wake-up eventfd and its client's epoll set, edge-triggered,
 * with a NULL pointer: libmicrohttpd skips events without a pointer (its own marker for a
 * shutdown signal), so they only end its wait. A second, outer epoll set around the
 * daemon's cost one more epoll_wait per round (measured on cache hits: 3.3x the
 * epoll_wait calls per request and 3-7 % more CPU). What woke the loop is then known
 * without a system call: another thread sets `woken` before it writes the eventfd, and
 * the client is run whenever it has calls open.
 */
static void *http__loop_main(void *arg)
{
    struct http__loop *l = arg;
    http__current = l;
    for (;;) {
        /* Without calls open the client needs no turn; with some it waits at most its
         * deadline resolution. A resume on this thread asks for a turn at once. */
        int timeout = l->client ? http_async_timeout_ms(l->client) : -1;
        if (l->resumed)
            timeout = 0;
        l->resumed = false;
        MHD_run_wait(l->daemon, timeout);
        if (atomic_exchange(&l->woken, false) && http__loop_wake(l))
            break;
        if (l->client && http_async_timeout_ms(l->client) >= 0)
            http_async_run(l->client); /* replies resume connections: l->resumed */
    }
    MHD_run(l->daemon); /* the last resumes reach the daemon */
    return NULL;
}

/* Creates loop l's daemon, epoll set and client (no thread yet). 0 or BZ_EUNAVAIL. */
static int http__loop_open(struct http_server *srv, struct http__loop *l)
{
    const struct http_server_opts *opts = &srv->opts;
    l->srv = srv;
    l->wake = -1;
    pthread_mutex_init(&l->lock, NULL);
    /* No listening socket (the door hands over every connection) and no thread: run from
     * http__loop_main. Without a thread of its own the daemon is not woken by a resume
     * from another thread: http__resume wakes the loop. */
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC | MHD_USE_SUPPRESS_DATE_NO_CLOCK;
    unsigned limit = HTTP__CONN_LIMIT / (unsigned)srv->nloops;
    l->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, http__access, srv, MHD_OPTION_CONNECTION_TIMEOUT,
        0u /* ours: struct http__conn */, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)HTTP__CONN_MEMORY, MHD_OPTION_CONNECTION_LIMIT, limit ? limit : 1u,
        MHD_OPTION_STRICT_FOR_CLIENT, (int)1, MHD_OPTION_NOTIFY_CONNECTION, http__notify_conn, srv,
        MHD_OPTION_NOTIFY_COMPLETED, http__completed, srv, MHD_OPTION_UNESCAPE_CALLBACK,
        http__unescape, srv, MHD_OPTION_URI_LOG_CALLBACK, http__uri_cb, srv,
        MHD_OPTION_EXTERNAL_LOGGER, http__mhd_log, srv, MHD_OPTION_END);
    const union MHD_DaemonInfo *info =
        l->daemon ? MHD_get_daemon_info(l->daemon, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (!info)
        return BZ_EUNAVAIL;
    /* Our descriptors in the daemon's set, without a pointer (see http__loop_main). */
    int mhd_fd = info->epoll_fd;
    struct epoll_event ours = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
    l->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->wake < 0 || epoll_ctl(mhd_fd, EPOLL_CTL_ADD, l->wake, &ours) != 0)
        return BZ_EUNAVAIL;
    if (opts->async_clients) {
        l->client = http_async_embed();
        if (epoll_ctl(mhd_fd, EPOLL_CTL_ADD, http_async_fd(l->client), &ours) != 0)
            return BZ_EUNAVAIL;
    }
    return 0;
}

/* Frees what http__loop_open made (its thread, if any, has ended). */
static void http__loop_close(struct http__loop *l)
{
    while (l->adds) { /* passed by the door after the loop's last round */
        struct http__add *next = l->adds->next;
        close(l->adds->fd);
        free(l->adds);
        l->adds = next;
    }
    if (l->client)
        http_async_stop(l->client);
    if (l->daemon)
        MHD_stop_daemon(l->daemon);
    while (l->spare) { /* MHD_stop_daemon ran on this thread: nothing is added meanwhile */
        struct http__req *next = l->spare->next_job;
        http__req_free(l->spare);
        l->spare = next;
    }
    if (l->wake >= 0)
        close(l->wake);
    pthread_mutex_destroy(&l->lock);
}

int http_server_start(struct http_server **out, const struct http_server_opts *opts,
                      struct http_route *routes, size_t nroutes, char *errmsg, size_t errlen)
{
    struct sockaddr_storage ss = {0};
    int rv = http__resolve(opts->listen, &ss, errmsg, errlen);
    if (rv)
        return rv;
    struct http_server *srv = xcalloc(1, sizeof *srv);
    srv->opts = *opts;
    srv->routes = routes;
    srv->nroutes = nroutes;
    srv->metrics_route.method = "GET";
    srv->metrics_route.pattern = "/metrics";
    srv->livez_route.method = "GET";
    srv->livez_route.pattern = "/livez";
    srv->readyz_route.method = "GET";
    srv->readyz_route.pattern = "/readyz";
    for (size_t i = 0; i < nroutes; i++)
        if (!strcmp(routes[i].method, "GET") && !strcmp(routes[i].pattern, "/health") &&
            routes[i].fast)
            srv->health_route = &routes[i];
    srv->conns.next = srv->conns.prev = &srv->conns;
    srv->jobs_tail = &srv->jobs_head;
    if (pthread_key_create(&srv->memo_key, http__memo_free) != 0) {
        snprintf(errmsg, errlen, "cannot create a thread key");
        free(srv);
        return BZ_EUNAVAIL;
    }
    pthread_mutex_init(&srv->jobs_lock, NULL);
    pthread_cond_init(&srv->jobs_cond, NULL);
    pthread_mutex_init(&srv->conns_lock, NULL);
    pthread_mutex_init(&srv->ip_lock, NULL);
    clock_cond_init(&srv->sweeper_cond);
    if (http__door_open(srv, errmsg, errlen) != 0) {
        http__door_close_fds(srv);
        pthread_mutex_destroy(&srv->conns_lock);
        pthread_mutex_destroy(&srv->ip_lock);
        pthread_cond_destroy(&srv->sweeper_cond);
        pthread_key_delete(srv->memo_key);
        free(srv);
        return BZ_EUNAVAIL;
    }

    srv->nloops = opts->threads > 0 ? (size_t)opts->threads : 1;
    srv->loops = xcalloc(srv->nloops, sizeof *srv->loops);
    bool opened = true;
    for (size_t i = 0; i < srv->nloops && opened; i++)
        opened = http__loop_open(srv, &srv->loops[i]) == 0;
    if (!opened) {
        snprintf(errmsg, errlen, "cannot start the HTTP server on %s", opts->listen);
        for (size_t i = 0; i < srv->nloops; i++)
            if (srv->loops[i].srv)
                http__loop_close(&srv->loops[i]);
        free(srv->loops);
        http__door_close_fds(srv);
        pthread_mutex_destroy(&srv->ip_lock);
        pthread_mutex_destroy(&srv->conns_lock);
        pthread_cond_destroy(&srv->sweeper_cond);
        pthread_key_delete(srv->memo_key);
        free(srv);
        return BZ_EUNAVAIL;
    }
    for (size_t i = 0; i < srv->nloops; i++)
        http__thread_start(&srv->loops[i].thread, http__loop_main, &srv->loops[i], "an event");
    http__thread_start(&srv->sweeper, http__sweeper_main, srv, "the idle sweeper");
    http__thread_start(&srv->door, http__door_main, srv, "the acceptor");
    srv->nworkers = opts->workers > 0 ? opts->workers : 1;
    srv->workers = xcalloc((size_t)srv->nworkers, sizeof *srv->workers);
    for (int i = 0; i < srv->nworkers; i++)
        http__thread_start(&srv->workers[i], http__worker_main, srv, "a worker");
    *out = srv;
    return 0;
}

void http_server_stop(struct http_server *srv)
{
    if (!srv)
        return;
    pthread_mutex_lock(&srv->conns_lock);
    srv->stopping = true;
    pthread_cond_signal(&srv->sweeper_cond);
    pthread_mutex_unlock(&srv->conns_lock);
    pthread_join(srv->sweeper, NULL);
    /* Workers finish the queued requests and resume their connections, then the daemon
     * stops. The door stops first, so no new connection is accepted meanwhile. */
    uint64_t one = 1;
    if (write(srv->door_wake, &one, sizeof one) != sizeof one)
        LOG_WARN("http: cannot wake the acceptor thread");
    pthread_join(srv->door, NULL);
    http__door_close_fds(srv);
    pthread_mutex_lock(&srv->jobs_lock);
    srv->jobs_stopping = true;
    pthread_cond_broadcast(&srv->jobs_cond);
    pthread_mutex_unlock(&srv->jobs_lock);
    for (int i = 0; i < srv->nworkers; i++)
        pthread_join(srv->workers[i], NULL);
    free(srv->workers);
    /* libmicrohttpd must not be stopped with suspended connections: wait for the async
     * requests to be resumed (each one's work has a deadline; the event threads run it). */
    atomic_store(&srv->async_closed, true);
    while (atomic_load(&srv->async_pending) > 0) {
        struct timespec pause = {.tv_nsec = 5 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    /* Each event thread ends after one more round (the last resumes reach its daemon); its
     * exit frees its memo. Then the daemons stop, closing their connections. */
    for (size_t i = 0; i < srv->nloops; i++) {
        struct http__loop *l = &srv->loops[i];
        pthread_mutex_lock(&l->lock);
        l->stop = true;
        pthread_mutex_unlock(&l->lock);
        http__loop_poke(l);
        pthread_join(l->thread, NULL);
        http__loop_close(l);
    }
    free(srv->loops);
    pthread_key_delete(srv->memo_key);
    pthread_mutex_destroy(&srv->jobs_lock);
    pthread_cond_destroy(&srv->jobs_cond);
    pthread_mutex_destroy(&srv->conns_lock);
    pthread_cond_destroy(&srv->sweeper_cond);
    for (size_t i = 0; i < HTTP__IP_BUCKETS; i++) {
        while (srv->ips[i]) {
            struct http__ip *next = srv->ips[i]->next;
            free(srv->ips[i]);
            srv->ips[i] = next;
        }
    }
    pthread_mutex_destroy(&srv->ip_lock);
    free(srv);
}
