#include "http_async.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "http_server.h"
#include "log.h"

#define HTTP_ASYNC__AUTH_MAX   160 /* "host:port" */
#define HTTP_ASYNC__TYPE_MAX   64  /* a POST body's Content-Type */
#define HTTP_ASYNC__SWEEP_MS   10  /* deadline resolution while calls are in flight */
#define HTTP_ASYNC__EVENTS     128
#define HTTP_ASYNC__READ_CHUNK 16384

/* A connection's state (a small explicit state machine, STYLE §8). */
enum http_async__state {
    HTTP_ASYNC__CONNECTING, /* non-blocking connect in progress, a call attached */
    HTTP_ASYNC__SENDING,    /* request partly written */
    HTTP_ASYNC__RECEIVING,  /* request written, reading the reply */
    HTTP_ASYNC__IDLE,       /* keep-alive, no call, on its peer's idle list */
};

/* One call, from http_async_request until its callback has run. */
struct http_async__call {
    char authority[HTTP_ASYNC__AUTH_MAX]; /* "host:port" */
    struct strbuf req;                    /* the whole request, head and body */
    uint64_t deadline_ms;
    http_async_done_cb cb;
    void *arg;
    bool idempotent;               /* may be sent again after a stale keep-alive close */
    size_t reply_max;              /* the reply body's ceiling */
    struct http_async__call *next; /* the submission queue or a peer's waiting list */
};

struct http_async__peer;

struct http_async__conn {
    int fd;
    enum http_async__state state;
    struct http_async__peer *peer;
    struct http_async__call *call; /* NULL when idle */
    bool reused;                   /* has answered a call: a close before any byte is stale */
    size_t req_sent;               /* bytes of call->req written */
    struct strbuf in;              /* reply bytes, head and body; bounded */
    /* The reply head once parsed (head_len > 0). */
    size_t head_len;
    int status;
    bool until_close; /* no Content-Length: the body ends when the peer closes */
    bool close_after; /* Connection: close, HTTP/1.0 or extra bytes */
    uint64_t body_len;
    struct http_async__conn *prev, *next; /* a->busy or peer->idle */
};

struct http_async__peer {
    char authority[HTTP_ASYNC__AUTH_MAX];
    struct sockaddr_in addr;
    size_t open;                                      /* connections open to it */
    struct http_async__conn idle;                     /* sentinel */
    struct http_async__call *waiting, **waiting_tail; /* calls waiting for a connection */
};

struct http_async {
    pthread_t thread;
    int epfd, wake;
    bool embedded;       /* no thread: driven by its owner's loop (http_async_embed) */
    uint64_t next_sweep; /* loop thread (or owner) only */
    /* Loop thread only. */
    struct http_async__peer peers[HTTP_ASYNC_PEERS_MAX];
    size_t npeers;
    struct http_async__conn busy; /* sentinel: connections carrying a call */
    size_t live;                  /* calls taken from the queue whose callback has not run */

    pthread_mutex_t lock; /* guards the fields below */
    struct http_async__call *queue, **queue_tail;
    size_t pending; /* queued + live */
    bool stopping;
    atomic_ullong calls, connects, stale_retries;
};

static void http_async__dispatch(struct http_async *a, struct http_async__call *call);

/* ---------------------------------------------------------------- lists */

static void http_async__list_init(struct http_async__conn *sentinel)
{
    sentinel->prev = sentinel->next = sentinel;
}

static void http_async__unlink(struct http_async__conn *c)
{
    c->prev->next = c->next;
    c->next->prev = c->prev;
    c->prev = c->next = c;
}

static void http_async__push(struct http_async__conn *sentinel, struct http_async__conn *c)
{
    c->next = sentinel->next;
    c->prev = sentinel;
    sentinel->next->prev = c;
    sentinel->next = c;
}

/* ---------------------------------------------------------------- calls */

/* Ends a call: runs its callback. The call is freed; reply is NULL unless rv == 0. */
static void http_async__end(struct http_async *a, struct http_async__call *call, int rv,
                            struct http_reply *reply)
{
    struct http_reply none = {0};
    call->cb(call->arg, rv, rv == 0 ? reply : &none);
    strbuf_free(&call->req);
    free(call);
    a->live--;
    pthread_mutex_lock(&a->lock);
    a->pending--;
    pthread_mutex_unlock(&a->lock);
}

/* The peer of authority, resolved on first use; NULL (unknown host, too many peers). */
static struct http_async__peer *http_async__peer(struct http_async *a, const char *authority)
{
    for (size_t i = 0; i < a->npeers; i++)
        if (strcmp(a->peers[i].authority, authority) == 0)
            return &a->peers[i];
    if (a->npeers == HTTP_ASYNC_PEERS_MAX)
        return NULL;
    char host[HTTP_ASYNC__AUTH_MAX];
    uint16_t port;
    if (parse_host_port(authority, host, sizeof host, &port) != 0)
        return NULL;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return NULL;
    struct http_async__peer *p = &a->peers[a->npeers++];
    memset(p, 0, sizeof *p);
    memcpy(&p->addr, res->ai_addr, sizeof p->addr);
    freeaddrinfo(res);
    p->addr.sin_port = htons(port);
    snprintf(p->authority, sizeof p->authority, "%s", authority);
    http_async__list_init(&p->idle);
    p->waiting_tail = &p->waiting;
    return p;
}

/* ---------------------------------------------------------------- connections */

/* Closes c; its call (if any) must have been detached or ended. Starts a waiting call. */
static void http_async__close(struct http_async *a, struct http_async__conn *c)
{
    struct http_async__peer *p = c->peer;
    http_async__unlink(c);
    close(c->fd); /* also leaves the epoll set */
    strbuf_free(&c->in);
    free(c);
    p->open--;
    struct http_async__call *next = p->waiting;
    if (next) {
        p->waiting = next->next;
        if (!p->waiting)
            p->waiting_tail = &p->waiting;
        http_async__dispatch(a, next);
    }
}

/*
 * Ends c's call with rv and closes c. A stale keep-alive close (a reused connection closed
 * before any reply byte) sends an idempotent call again instead, on the next idle connection or
 * a new one. Not just once: after an upstream's idle timeout every pooled connection is stale,
 * and an embedded client, which runs only while it has calls open, has not seen those closes
 * (the bench saw 503s on cache misses after each pause). Each retry closes the connection it
 * failed on, and a new connection is never stale, so the retries end.
 */
static void http_async__fail(struct http_async *a, struct http_async__conn *c, int rv)
{
    struct http_async__call *call = c->call;
    bool stale = rv == BZ_EUNAVAIL && c->reused && c->in.len == 0 && call->idempotent;
    c->call = NULL;
    http_async__close(a, c);
    if (stale) {
        atomic_fetch_add_explicit(&a->stale_retries, 1, memory_order_relaxed);
        http_async__dispatch(a, call);
    } else {
        http_async__end(a, call, rv, NULL);
    }
}

/* Writes what is left of the request. 0, or BZ_EUNAVAIL. */
static int http_async__send(struct http_async__conn *c)
{
    const struct strbuf *req = &c->call->req;
    while (c->req_sent < req->len) {
        ssize_t n = send(c->fd, req->data + c->req_sent, req->len - c->req_sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->req_sent += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0; /* EPOLLOUT (edge-triggered) says when to go on */
        } else {
            return BZ_EUNAVAIL;
        }
    }
    c->state = HTTP_ASYNC__RECEIVING;
    return 0;
}

/* Puts call on connection c (idle or just connected) and starts sending. */
static void http_async__start(struct http_async *a, struct http_async__conn *c,
                              struct http_async__call *call)
{
    http_async__unlink(c);
    http_async__push(&a->busy, c);
    c->call = call;
    strbuf_reset(&c->in);
    c->in.max = HTTP_ASYNC_HEAD_MAX + call->reply_max;
    c->head_len = 0;
    c->until_close = c->close_after = false;
    c->req_sent = 0;
    if (c->state == HTTP_ASYNC__CONNECTING)
        return; /* sent once connected */
    c->state = HTTP_ASYNC__SENDING;
    if (http_async__send(c) != 0)
        http_async__fail(a, c, BZ_EUNAVAIL);
}

/* A new non-blocking connection to p with call attached; false if it cannot even start. */
static bool http_async__connect(struct http_async *a, struct http_async__peer *p,
                                struct http_async__call *call)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&p->addr, sizeof p->addr) != 0 && errno != EINPROGRESS) {
        close(fd);
        return false;
    }
    struct http_async__conn *c = xcalloc(1, sizeof *c);
    c->fd = fd;
    c->peer = p;
    c->state = HTTP_ASYNC__CONNECTING;
    strbuf_init(&c->in, HTTP_ASYNC_HEAD_MAX + HTTP_ASYNC_REPLY_MAX);
    http_async__list_init(c);
    /* Registered once for its whole life, edge-triggered: no epoll_ctl per call. */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        strbuf_free(&c->in);
        free(c);
        return false;
    }
    p->open++;
    atomic_fetch_add_explicit(&a->connects, 1, memory_order_relaxed);
    http_async__start(a, c, call);
    return true;
}

/* Sends call on an idle connection to its peer, a new one, or queues it for one. */
static void http_async__dispatch(struct http_async *a, struct http_async__call *call)
{
    struct http_async__peer *p = http_async__peer(a, call->authority);
    if (!p) {
        http_async__end(a, call, BZ_EUNAVAIL, NULL);
        return;
    }
    if (p->idle.next != &p->idle) {
        http_async__start(a, p->idle.next, call);
    } else if (p->open < HTTP_ASYNC_CONNS_MAX) {
        if (!http_async__connect(a, p, call))
            http_async__end(a, call, BZ_EUNAVAIL, NULL);
    } else {
        call->next = NULL;
        *p->waiting_tail = call;
        p->waiting_tail = &call->next;
    }
}

/* ---------------------------------------------------------------- replies */

/* The value of a header line "name: value" if its name is `name` (case-insensitive). */
static bool http_async__header(const char *line, size_t len, const char *name, const char **value,
                               size_t *vlen)
{
    size_t n = strlen(name);
    if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0)
        return false;
    const char *v = line + n + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *value = v;
    *vlen = (size_t)(end - v);
    return true;
}

/*
 * Parses the reply head once it is complete. 0 with c->head_len set (or still 0:
 * incomplete), or BZ_EUPSTREAM for a head over the limit or not HTTP/1.x as we take it.
 */
static int http_async__parse_head(struct http_async__conn *c)
{
    const char *buf = c->in.data;
    const char *end = memmem(buf, c->in.len, "\r\n\r\n", 4);
    if (!end)
        return c->in.len > HTTP_ASYNC_HEAD_MAX ? BZ_EUPSTREAM : 0;
    size_t head = (size_t)(end - buf) + 4;
    if (head > HTTP_ASYNC_HEAD_MAX || head < 14 || memcmp(buf, "HTTP/1.", 7) != 0 ||
        (buf[7] != '0' && buf[7] != '1') || buf[8] != ' ')
        return BZ_EUPSTREAM;
    uint64_t status;
    if (parse_u64(buf + 9, 3, 999, &status) != 0 || status < 200 || status > 599 ||
        (buf[12] != ' ' && buf[12] != '\r'))
        return BZ_EUPSTREAM; /* 1xx: never sent, we send no Expect header */
    c->status = (int)status;
    c->close_after = buf[7] == '0';
    bool has_length = false;
    uint64_t length = 0;
    const char *line = memchr(buf, '\n', head) + 1;
    while (line < end) {
        const char *eol = memchr(line, '\r', (size_t)(end + 2 - line));
        size_t len = (size_t)(eol - line), vlen;
        const char *v;
        if (http_async__header(line, len, "Content-Length", &v, &vlen)) {
            uint64_t n;
            if (parse_u64(v, vlen, c->call->reply_max, &n) != 0 || (has_length && n != length))
                return BZ_EUPSTREAM; /* over the limit, not a number, or ambiguous */
            has_length = true;
            length = n;
        } else if (http_async__header(line, len, "Transfer-Encoding", &v, &vlen)) {
            return BZ_EUPSTREAM; /* chunked: not sent by our servers */
        } else if (http_async__header(line, len, "Connection", &v, &vlen)) {
            if (vlen == 5 && strncasecmp(v, "close", 5) == 0)
                c->close_after = true;
        }
        line = eol + 2;
    }
    c->head_len = head;
    if (c->status == 204 || c->status == 304)
        c->body_len = 0;
    else if (has_length)
        c->body_len = length;
    else
        c->until_close = c->close_after = true;
    return 0;
}

/* The reply on c is complete: hands it to its call, keeps c for the next call. */
static void http_async__complete(struct http_async *a, struct http_async__conn *c)
{
    struct http_async__call *call = c->call;
    size_t body = c->in.len - c->head_len;
    if (!c->until_close && body > c->body_len) {
        c->close_after = true; /* bytes nobody asked for: the connection cannot be trusted */
        body = (size_t)c->body_len;
    }
    if (c->req_sent < call->req.len)
        c->close_after = true; /* answered before the whole request left: not reusable */
    struct http_reply reply = {.status = c->status};
    strbuf_init(&reply.body, call->reply_max);
    if (strbuf_append(&reply.body, c->in.data + c->head_len, body) != 0) {
        strbuf_free(&reply.body);
        http_async__fail(a, c, BZ_EUPSTREAM);
        return;
    }
    c->call = NULL;
    c->reused = true;
    if (c->close_after) {
        http_async__close(a, c);
    } else {
        c->state = HTTP_ASYNC__IDLE;
        http_async__unlink(c);
        http_async__push(&c->peer->idle, c);
        struct http_async__peer *p = c->peer;
        struct http_async__call *next = p->waiting;
        if (next) {
            p->waiting = next->next;
            if (!p->waiting)
                p->waiting_tail = &p->waiting;
            http_async__start(a, c, next);
        }
    }
    http_async__end(a, call, 0, &reply);
}

/* Reads what arrived on c (edge-triggered: until EAGAIN) and acts on it. */
static void http_async__read(struct http_async *a, struct http_async__conn *c)
{
    char chunk[HTTP_ASYNC__READ_CHUNK];
    for (;;) {
        ssize_t n = recv(c->fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (c->state == HTTP_ASYNC__IDLE) {
            /* The peer closed an idle connection (or sent what nobody asked for). */
            http_async__close(a, c);
            return;
        }
        if (n <= 0) {
            if (n == 0 && c->head_len && c->until_close) {
                http_async__complete(a, c);
                return;
            }
            http_async__fail(a, c, c->in.len ? BZ_EUPSTREAM : BZ_EUNAVAIL);
            return;
        }
        if (strbuf_append(&c->in, chunk, (size_t)n) != 0) {
            http_async__fail(a, c, BZ_EUPSTREAM);
            return;
        }
        int rv = c->head_len ? 0 : http_async__parse_head(c);
        if (rv) {
            http_async__fail(a, c, rv);
            return;
        }
        if (c->head_len && !c->until_close && c->in.len - c->head_len >= c->body_len) {
            http_async__complete(a, c);
            return; /* any later bytes make the idle connection close on its next event */
        }
    }
}

static void http_async__event(struct http_async *a, struct http_async__conn *c, uint32_t events)
{
    if (c->state == HTTP_ASYNC__CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if ((events & (EPOLLERR | EPOLLHUP)) ||
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            http_async__fail(a, c, BZ_EUNAVAIL);
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        c->state = HTTP_ASYNC__SENDING;
    }
    if (c->state == HTTP_ASYNC__SENDING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        if (http_async__send(c) != 0) {
            http_async__fail(a, c, BZ_EUNAVAIL);
            return;
        }
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        http_async__read(a, c);
}

/* Ends the calls past their deadline (on a connection, or waiting for one). */
static void http_async__sweep(struct http_async *a, uint64_t now)
{
    for (struct http_async__conn *c = a->busy.next, *next; c != &a->busy; c = next) {
        next = c->next;
        if (c->call && now >= c->call->deadline_ms) {
            /* A close may start a waiting call on a new connection: it goes to the front
             * of the list, so the walk continues safely from `next`. */
            http_async__fail(a, c, BZ_ETIMEDOUT);
        }
    }
    for (size_t i = 0; i < a->npeers; i++) {
        struct http_async__peer *p = &a->peers[i];
        for (struct http_async__call **pp = &p->waiting; *pp;) {
            struct http_async__call *call = *pp;
            if (now < call->deadline_ms) {
                pp = &call->next;
                continue;
            }
            *pp = call->next;
            if (!*pp)
                p->waiting_tail = pp;
            http_async__end(a, call, BZ_ETIMEDOUT, NULL);
        }
    }
}

/* Handles the connections' events, waiting up to timeout_ms for them (0: none ready). */
static void http_async__events(struct http_async *a, int timeout_ms)
{
    struct epoll_event evs[HTTP_ASYNC__EVENTS];
    int n = epoll_wait(a->epfd, evs, HTTP_ASYNC__EVENTS, timeout_ms);
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr != &a->wake) {
            http_async__event(a, evs[i].data.ptr, evs[i].events);
            continue;
        }
        uint64_t count;
        if (read(a->wake, &count, sizeof count) < 0 && errno != EAGAIN)
            LOG_WARN("http_async: wake-up read: %s", strerror(errno));
    }
}

/* Ends the calls past their deadline, at most every HTTP_ASYNC__SWEEP_MS. */
static void http_async__deadlines(struct http_async *a)
{
    if (!a->live)
        return;
    uint64_t now = clock_now_ms();
    if (now >= a->next_sweep) {
        http_async__sweep(a, now);
        a->next_sweep = now + HTTP_ASYNC__SWEEP_MS;
    }
}

static void *http_async__main(void *arg)
{
    struct http_async *a = arg;
    for (;;) {
        http_async__events(a, a->live ? HTTP_ASYNC__SWEEP_MS : -1);
        /* New calls: after the events, so that connections freed just now are reused. */
        pthread_mutex_lock(&a->lock);
        struct http_async__call *list = a->queue;
        a->queue = NULL;
        a->queue_tail = &a->queue;
        bool done = a->stopping && a->pending == 0;
        pthread_mutex_unlock(&a->lock);
        if (done)
            break;
        while (list) {
            struct http_async__call *call = list;
            list = list->next;
            a->live++;
            http_async__dispatch(a, call);
        }
        http_async__deadlines(a);
    }
    return NULL;
}

/* ---------------------------------------------------------------- API */

/* A client without its loop thread (its epoll set and wake-up eventfd made). */
static struct http_async *http_async__new(bool embedded)
{
    struct http_async *a = xcalloc(1, sizeof *a);
    a->embedded = embedded;
    a->epfd = epoll_create1(EPOLL_CLOEXEC);
    a->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &a->wake};
    if (a->epfd < 0 || a->wake < 0 || epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->wake, &ev) != 0) {
        LOG_ERROR("http_async: cannot create its epoll set: %s", strerror(errno));
        abort();
    }
    http_async__list_init(&a->busy);
    a->queue_tail = &a->queue;
    pthread_mutex_init(&a->lock, NULL);
    return a;
}

struct http_async *http_async_embed(void)
{
    return http_async__new(true);
}

int http_async_fd(const struct http_async *a)
{
    return a->epfd;
}

int http_async_timeout_ms(const struct http_async *a)
{
    return a->live ? HTTP_ASYNC__SWEEP_MS : -1;
}

void http_async_run(struct http_async *a)
{
    http_async__events(a, 0);
    http_async__deadlines(a);
}

struct http_async *http_async_start(void)
{
    struct http_async *a = http_async__new(false);
    int rv = pthread_create(&a->thread, NULL, http_async__main, a);
    if (rv) {
        LOG_ERROR("cannot start the outbound call thread: %s", strerror(rv));
        abort();
    }
    return a;
}

static void http_async__wake(struct http_async *a)
{
    uint64_t one = 1;
    if (write(a->wake, &one, sizeof one) != sizeof one)
        LOG_WARN("http_async: cannot wake the loop: %s", strerror(errno));
}

void http_async_stop(struct http_async *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    a->stopping = true;
    pthread_mutex_unlock(&a->lock);
    if (a->embedded) {
        /* The owner's loop has stopped: run the calls still open to their deadlines. */
        while (a->live) {
            http_async__events(a, HTTP_ASYNC__SWEEP_MS);
            http_async__deadlines(a);
        }
    } else {
        http_async__wake(a);
        pthread_join(a->thread, NULL);
    }
    for (size_t i = 0; i < a->npeers; i++)
        while (a->peers[i].idle.next != &a->peers[i].idle)
            http_async__close(a, a->peers[i].idle.next);
    close(a->wake);
    close(a->epfd);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

int http_async_request(struct http_async *a, const struct http_async_req *r, http_async_done_cb cb,
                       void *arg)
{
    static const char scheme[] = "http://";
    bool post = strcmp(r->method, "POST") == 0;
    if ((!post && strcmp(r->method, "GET") != 0) || strncmp(r->url, scheme, sizeof scheme - 1) != 0)
        return BZ_EINVAL;
    const char *auth = r->url + sizeof scheme - 1;
    size_t auth_len = strcspn(auth, "/");
    const char *path = auth + auth_len;
    size_t path_len = strlen(path);
    if (auth_len == 0 || auth_len >= HTTP_ASYNC__AUTH_MAX || path_len == 0 ||
        path_len >= HTTP_ASYNC_URL_MAX || strpbrk(r->url, " \r\n") ||
        (r->secret && (strlen(r->secret) > 256 || strpbrk(r->secret, "\r\n"))) ||
        (post && r->body_len > HTTP_ASYNC_BODY_MAX) || (!post && r->body_len))
        return BZ_EINVAL;
    const char *type = r->content_type ? r->content_type : "application/json";
    size_t type_len = strlen(type);
    if (type_len > HTTP_ASYNC__TYPE_MAX || strpbrk(type, "\r\n"))
        return BZ_EINVAL;
    struct http_async__call *call = xcalloc(1, sizeof *call);
    memcpy(call->authority, auth, auth_len);
    /* Built here, on the caller's thread: the loop thread only sends bytes. */
    strbuf_init(&call->req, HTTP_ASYNC_URL_MAX + 1024 + HTTP_ASYNC_BODY_MAX);
    /* The head in pieces on the stack, not through a format: this is every cache miss's
     * request (vfprintf, which strbuf_appendf runs twice, was 1% of a miss). Every piece was
     * bounded above, so the head fits. */
    static const char version[] = " HTTP/1.1\r\nHost: ", secret[] = "\r\n" HTTP_SECRET_HEADER ": ",
                      ctype[] = "\r\nContent-Type: ", clen[] = "\r\nContent-Length: ";
    char head[16 + HTTP_ASYNC_URL_MAX + sizeof version + HTTP_ASYNC__AUTH_MAX + sizeof secret +
              256 + sizeof ctype + HTTP_ASYNC__TYPE_MAX + sizeof clen + 24 + 4];
    size_t n = 0;
#define HTTP_ASYNC__PUT(s, l) (memcpy(head + n, (s), (l)), n += (l))
    HTTP_ASYNC__PUT(r->method, strlen(r->method));
    HTTP_ASYNC__PUT(" ", 1);
    HTTP_ASYNC__PUT(path, path_len);
    HTTP_ASYNC__PUT(version, sizeof version - 1);
    HTTP_ASYNC__PUT(auth, auth_len);
    if (r->secret) {
        HTTP_ASYNC__PUT(secret, sizeof secret - 1);
        HTTP_ASYNC__PUT(r->secret, strlen(r->secret));
    }
    if (post) {
        HTTP_ASYNC__PUT(ctype, sizeof ctype - 1);
        HTTP_ASYNC__PUT(type, type_len);
        HTTP_ASYNC__PUT(clen, sizeof clen - 1);
        n += (size_t)snprintf(head + n, 24, "%zu", r->body_len);
    }
    HTTP_ASYNC__PUT("\r\n\r\n", 4);
#undef HTTP_ASYNC__PUT
    strbuf_append(&call->req, head, n);
    if (r->body_len)
        strbuf_append(&call->req, r->body, r->body_len);
    call->deadline_ms = clock_now_ms() + (uint64_t)(r->timeout_ms > 0 ? r->timeout_ms : 0);
    call->cb = cb;
    call->arg = arg;
    call->idempotent = !post || r->idempotent;
    call->reply_max = r->reply_max ? r->reply_max : HTTP_ASYNC_REPLY_MAX;
    /* Admitted under the lock; an embedded client's owner then sends it at once (no queue, no
     * wake-up), a loop thread's call is queued for that thread. */
    bool embedded = a->embedded, wake = false;
    pthread_mutex_lock(&a->lock);
    bool ok = !a->stopping && a->pending < HTTP_ASYNC_CALLS_MAX;
    if (ok) {
        a->pending++;
        if (!embedded) {
            wake = a->queue == NULL; /* else a wake-up is already on its way */
            *a->queue_tail = call;
            a->queue_tail = &call->next;
        }
    }
    pthread_mutex_unlock(&a->lock);
    if (!ok) {
        strbuf_free(&call->req);
        free(call);
        return BZ_EUNAVAIL;
    }
    atomic_fetch_add_explicit(&a->calls, 1, memory_order_relaxed);
    if (embedded) {
        a->live++;
        http_async__dispatch(a, call);
    } else if (wake) {
        http_async__wake(a);
    }
    return 0;
}

int http_async_get(struct http_async *a, const char *url, int timeout_ms, http_async_done_cb cb,
                   void *arg)
{
    struct http_async_req r = {.method = "GET", .url = url, .timeout_ms = timeout_ms};
    return http_async_request(a, &r, cb, arg);
}

unsigned long long http_async_calls(struct http_async *a)
{
    return atomic_load_explicit(&a->calls, memory_order_relaxed);
}

unsigned long long http_async_connects(struct http_async *a)
{
    return atomic_load_explicit(&a->connects, memory_order_relaxed);
}

unsigned long long http_async_stale_retries(struct http_async *a)
{
    return atomic_load_explicit(&a->stale_retries, memory_order_relaxed);
}
