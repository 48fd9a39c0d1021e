/*
 * test_http_async.c - src/common/http_async.c against a scripted peer on
 * 127.0.0.1 (an ephemeral port): replies, keep-alive reuse, a peer that
 * closes idle connections, deadlines, refused connections, replies that
 * break the limits or HTTP/1.1, and POSTs (head, body, and the retry after a
 * stale keep-alive close only when the caller says the POST is idempotent).
 */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "http_async.h"

/* ---------------------------------------------------------------- the peer */

/* What the peer answers to every request (NULL: never answers), and whether it closes after. */
struct peer {
    int listen_fd;
    uint16_t port;
    const char *reply;
    size_t split; /* > 0: send the first `split` bytes, pause, then the rest */
    bool close_after;
    bool drop_second; /* the second request on a connection is met with a close, unanswered */
    pthread_t thread;
    pthread_mutex_t lock;
    int accepts, requests;
    char last[8192]; /* the last request received, head and body (Content-Length) */
};

/* The Content-Length of a request head (0 without one). */
static size_t peer_content_length(const char *head)
{
    const char *v = strstr(head, "Content-Length: ");
    return v ? (size_t)strtoul(v + 16, NULL, 10) : 0;
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    for (;;) {
        int fd = accept(p->listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL; /* listening socket shut down: the test is over */
        pthread_mutex_lock(&p->lock);
        p->accepts++;
        pthread_mutex_unlock(&p->lock);
        char buf[8192];
        size_t have = 0;
        int on_conn = 0;
        for (;;) {
            ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
            if (n <= 0)
                break;
            have += (size_t)n;
            buf[have] = '\0';
            char *end = strstr(buf, "\r\n\r\n");
            if (!end)
                continue;
            size_t used = (size_t)(end + 4 - buf);
            *end = '\0';
            size_t body = peer_content_length(buf);
            *end = '\r';
            if (have < used + body)
                continue; /* the body is still on its way */
            /* One request: record and answer it, keep what follows. */
            used += body;
            pthread_mutex_lock(&p->lock);
            p->requests++;
            memcpy(p->last, buf, used);
            p->last[used] = '\0';
            pthread_mutex_unlock(&p->lock);
            memmove(buf, buf + used, have - used);
            have -= used;
            if (p->drop_second && ++on_conn == 2)
                break;
            if (!p->reply)
                continue; /* a peer that never answers */
            size_t len = strlen(p->reply);
            if (p->split && p->split < len) {
                assert_int_equal(send(fd, p->reply, p->split, MSG_NOSIGNAL), (ssize_t)p->split);
                usleep(20 * 1000);
                send(fd, p->reply + p->split, len - p->split, MSG_NOSIGNAL);
            } else {
                send(fd, p->reply, len, MSG_NOSIGNAL);
            }
            if (p->close_after)
                break;
        }
        close(fd);
    }
}

static void peer_start(struct peer *p, const char *reply, bool close_after)
{
    memset(p, 0, sizeof *p);
    p->reply = reply;
    p->close_after = close_after;
    pthread_mutex_init(&p->lock, NULL);
    p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(p->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(p->listen_fd, 16), 0);
    socklen_t len = sizeof a;
    getsockname(p->listen_fd, (struct sockaddr *)&a, &len);
    p->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&p->thread, NULL, peer_main, p), 0);
}

static void peer_stop(struct peer *p)
{
    shutdown(p->listen_fd, SHUT_RDWR);
    close(p->listen_fd);
    pthread_join(p->thread, NULL);
}

/* ---------------------------------------------------------------- calls */

struct result {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int rv, status;
    char body[256];
    size_t body_len; /* the whole body's, of which body holds the start */
};

static void result_cb(void *arg, int rv, struct http_reply *reply)
{
    struct result *r = arg;
    pthread_mutex_lock(&r->lock);
    r->rv = rv;
    if (rv == 0) {
        r->status = reply->status;
        r->body_len = reply->body.len;
        snprintf(r->body, sizeof r->body, "%.*s", (int)reply->body.len,
                 reply->body.data ? reply->body.data : "");
        http_reply_free(reply);
    }
    r->done = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

/* One call through a; returns rv (status and body in *r). Fails the test after 5 s. */
static int call(struct http_async *a, uint16_t port, struct http_async_req *req, struct result *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    clock_cond_init(&r->cond);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, req->url);
    req->url = url;
    assert_int_equal(http_async_request(a, req, result_cb, r), 0);
    struct timespec ts;
    clock_deadline(&ts, 5000);
    pthread_mutex_lock(&r->lock);
    while (!r->done && pthread_cond_timedwait(&r->cond, &r->lock, &ts) == 0)
        ;
    bool done = r->done;
    pthread_mutex_unlock(&r->lock);
    assert_true(done);
    return r->rv;
}

/* A GET of path through a. */
static int get(struct http_async *a, uint16_t port, const char *path, int timeout_ms,
               struct result *r)
{
    struct http_async_req req = {.method = "GET", .url = path, .timeout_ms = timeout_ms};
    return call(a, port, &req, r);
}

#define OK_REPLY                                                                                   \
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello"

/* ---------------------------------------------------------------- tests */

static void test_replies_reuse_one_connection(void **state)
{
    (void)state;
    struct peer p;
    peer_start(&p, OK_REPLY, false);
    struct http_async *a = http_async_start();
    struct result r;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(get(a, p.port, "/stocks/A", 2000, &r), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello");
    }
    assert_int_equal(http_async_connects(a), 1);
    assert_int_equal(http_async_calls(a), 3);
    http_async_stop(a);
    peer_stop(&p);
    assert_int_equal(p.accepts, 1);
    assert_int_equal(p.requests, 3);
}

/* The status and body of an error reply pass through; a split reply is reassembled. */
static void test_error_status_and_split_reply(void **state)
{
    (void)state;
    struct peer p;
    peer_start(&p, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found", false);
    p.split = 20;
    struct http_async *a = http_async_start();
    struct result r;
    assert_int_equal(get(a, p.port, "/x", 2000, &r), 0);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "not found");
    http_async_stop(a);
    peer_stop(&p);
}

/*
 * A peer that closes after every reply (without saying so, like a keep-alive
 * timeout racing the next call): every call still succeeds, on a new connection.
 */
static void test_peer_closing_idle_connections(void **state)
{
    (void)state;
    struct peer p;
    peer_start(&p, OK_REPLY, true);
    struct http_async *a = http_async_start();
    struct result r;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(get(a, p.port, "/s", 2000, &r), 0);
        assert_int_equal(r.status, 200);
    }
    assert_int_equal(http_async_connects(a), 4);
    http_async_stop(a);
    peer_stop(&p);
}

/* Connection: close and a body delimited by the close (no Content-Length). */
static void test_connection_close_and_body_until_close(void **state)
{
    (void)state;
    struct peer p;
    peer_start(&p, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close", true);
    struct http_async *a = http_async_start();
    struct result r;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(get(a, p.port, "/s", 2000, &r), 0);
        assert_string_equal(r.body, "until-close");
    }
    assert_int_equal(http_async_connects(a), 2);
    http_async_stop(a);
    peer_stop(&p);
}

/* A peer that never answers: the call ends at its deadline, not later. */
static void test_deadline(void **state)
{
    (void)state;
    struct peer p;
    peer_start(&p, NULL, false);
    struct http_async *a = http_async_start();
    struct result r;
    uint64_t t0 = clock_now_ms();
    assert_int_equal(get(a, p.port, "/s", 150, &r), BZ_ETIMEDOUT);
    uint64_t took = clock_now_ms() - t0;
    assert_true(took >= 150 && took < 1500);
    http_async_stop(a);
    peer_stop(&p);
}

static void test_refused_connection(void **state)
{
    (void)state;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s, (struct sockaddr *)&addr, sizeof addr), 0);
    socklen_t len = sizeof addr;
    getsockname(s, (struct sockaddr *)&addr, &len);
    close(s); /* bound, never listened: nothing there */
    struct http_async *a = http_async_start();
    struct result r;
    assert_int_equal(get(a, ntohs(addr.sin_port), "/s", 2000, &r), BZ_EUNAVAIL);
    http_async_stop(a);
}

/* Replies that break the limits or HTTP/1.1 as we take it: BZ_EUPSTREAM, never a crash. */
static void test_bad_replies(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n", /* over the body limit */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", /* ambiguous */
        "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\n",
        "SMTP ready hello there\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", /* then the peer closes */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct peer p;
        peer_start(&p, bad[i], true);
        struct http_async *a = http_async_start();
        struct result r;
        assert_int_equal(get(a, p.port, "/s", 2000, &r), BZ_EUPSTREAM);
        http_async_stop(a);
        peer_stop(&p);
    }
    /* A head that never ends, over the head limit. */
    static char huge[HTTP_ASYNC_HEAD_MAX + 512];
    memset(huge, 'a', sizeof huge - 1);
    memcpy(huge, "HTTP/1.1 200 OK\r\nX: ", 20);
    struct peer p;
    peer_start(&p, huge, true);
    struct http_async *a = http_async_start();
    struct result r;
    assert_int_equal(get(a, p.port, "/s", 2000, &r), BZ_EUPSTREAM);
    http_async_stop(a);
    peer_stop(&p);
}

/* A call's own reply ceiling replaces HTTP_ASYNC_REPLY_MAX, up or down (a replica's log pages). */
static void test_reply_ceiling_per_call(void **state)
{
    (void)state;
    size_t body = HTTP_ASYNC_REPLY_MAX + 1000;
    char *reply = malloc(body + 128);
    int head = snprintf(reply, 128, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", body);
    memset(reply + head, 'x', body);
    reply[head + (int)body] = '\0';
    struct peer p;
    peer_start(&p, reply, false);
    struct http_async *a = http_async_start();
    struct result r;
    assert_int_equal(get(a, p.port, "/big", 2000, &r), BZ_EUPSTREAM); /* the default ceiling */
    struct http_async_req req = {
        .method = "GET", .url = "/big", .timeout_ms = 2000, .reply_max = body};
    assert_int_equal(call(a, p.port, &req, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, body);
    req = (struct http_async_req){
        .method = "GET", .url = "/big", .timeout_ms = 2000, .reply_max = body - 1};
    assert_int_equal(call(a, p.port, &req, &r), BZ_EUPSTREAM);
    http_async_stop(a);
    peer_stop(&p);

    peer_start(&p, OK_REPLY, false); /* 5 bytes of body */
    a = http_async_start();
    req = (struct http_async_req){.method = "GET", .url = "/s", .timeout_ms = 2000, .reply_max = 4};
    assert_int_equal(call(a, p.port, &req, &r), BZ_EUPSTREAM);
    req = (struct http_async_req){.method = "GET", .url = "/s", .timeout_ms = 2000, .reply_max = 5};
    assert_int_equal(call(a, p.port, &req, &r), 0);
    assert_string_equal(r.body, "hello");
    http_async_stop(a);
    peer_stop(&p);
    free(reply);
}

/* A POST carries its secret, content type, length and body; the reply comes back. */
static void test_post_sends_head_and_body(void **state)
{
    (void)state;
    struct peer p;
    peer_start(&p, OK_REPLY, false);
    struct http_async *a = http_async_start();
    struct result r;
    const char body[] = "{\"orders\":[{\"name\":\"A\"}]}";
    struct http_async_req req = {.method = "POST",
                                 .url = "/orders/batch",
                                 .secret = "s3cret",
                                 .body = body,
                                 .body_len = strlen(body),
                                 .timeout_ms = 2000};
    assert_int_equal(call(a, p.port, &req, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    pthread_mutex_lock(&p.lock);
    static const char line[] = "POST /orders/batch HTTP/1.1\r\n";
    assert_true(strncmp(p.last, line, sizeof line - 1) == 0);
    assert_non_null(strstr(p.last, "\r\nX-Bazaar-Secret: s3cret\r\n"));
    assert_non_null(strstr(p.last, "\r\nContent-Type: application/json\r\n"));
    char *sep = strstr(p.last, "\r\n\r\n");
    assert_non_null(sep);
    assert_string_equal(sep + 4, body);
    pthread_mutex_unlock(&p.lock);
    /* The next call reuses the connection: the body was framed exactly. */
    assert_int_equal(get(a, p.port, "/s", 2000, &r), 0);
    assert_int_equal(http_async_connects(a), 1);
    /* A binary body (a lookup batch) says so, and its bytes (a NUL among them) go as they are. */
    static const char bin[] = {'B', 'Z', 'L', '1', 1, 0, 0, 0, 1, 'A'};
    req.url = "/lookups";
    req.content_type = "application/octet-stream";
    req.body = bin;
    req.body_len = sizeof bin;
    assert_int_equal(call(a, p.port, &req, &r), 0);
    pthread_mutex_lock(&p.lock);
    assert_non_null(strstr(p.last, "\r\nContent-Type: application/octet-stream\r\n"));
    assert_non_null(strstr(p.last, "\r\nContent-Length: 10\r\n\r\nBZL1"));
    pthread_mutex_unlock(&p.lock);
    assert_int_equal(http_async_connects(a), 1);
    http_async_stop(a);
    peer_stop(&p);
}

/*
 * A reused connection closed under a call before any reply byte: a GET or an idempotent POST
 * is sent again on a new connection; any other POST fails (it may have been executed).
 */
static void test_stale_close_retries_only_idempotent_calls(void **state)
{
    (void)state;
    struct peer p;
    peer_start(&p, OK_REPLY, false);
    p.drop_second = true;
    struct http_async *a = http_async_start();
    struct result r;
    struct http_async_req post = {
        .method = "POST", .url = "/o", .body = "{}", .body_len = 2, .timeout_ms = 2000};
    for (int idempotent = 1; idempotent >= 0; idempotent--) {
        assert_int_equal(get(a, p.port, "/s", 2000, &r), 0); /* leaves an idle connection */
        unsigned long long connects = http_async_connects(a);
        post.url = "/o";
        post.idempotent = idempotent;
        int rv = call(a, p.port, &post, &r);
        if (idempotent) {
            assert_int_equal(rv, 0);
            assert_int_equal(r.status, 200);
            assert_int_equal(http_async_connects(a), connects + 1);
        } else {
            assert_int_equal(rv, BZ_EUNAVAIL);
            assert_int_equal(http_async_connects(a), connects);
        }
    }
    /* A body over the limit, a body on a GET, other methods: refused without a call. */
    static char big[HTTP_ASYNC_BODY_MAX + 1];
    struct http_async_req bad[] = {
        {.method = "POST", .url = "http://127.0.0.1:1/o", .body = big, .body_len = sizeof big},
        {.method = "GET", .url = "http://127.0.0.1:1/o", .body = "x", .body_len = 1},
        {.method = "PUT", .url = "http://127.0.0.1:1/o"},
        {.method = "GET", .url = "http://127.0.0.1:1/o", .secret = "a\r\nInjected: 1"},
        {.method = "POST", .url = "http://127.0.0.1:1/o", .content_type = "a/b\r\nInjected: 1"},
        {.method = "POST",
         .url = "http://127.0.0.1:1/o",
         .content_type = "application/x-a-content-type-longer-than-sixty-four-bytes-is-refused"},
    };
    unsigned long long calls = http_async_calls(a);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(http_async_request(a, &bad[i], result_cb, &r), BZ_EINVAL);
    assert_int_equal(http_async_calls(a), calls);
    http_async_stop(a);
    peer_stop(&p);
}

static void test_bad_urls_are_refused_without_a_call(void **state)
{
    (void)state;
    struct http_async *a = http_async_start();
    struct result r = {0};
    static const char *const urls[] = {"https://127.0.0.1:1/s", "http:///s", "http://127.0.0.1:1",
                                       "http://127.0.0.1:1/a b", "ftp://x/y"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++)
        assert_int_equal(http_async_get(a, urls[i], 100, result_cb, &r), BZ_EINVAL);
    char longurl[HTTP_ASYNC_URL_MAX + 64];
    snprintf(longurl, sizeof longurl, "http://127.0.0.1:1/%0*d", HTTP_ASYNC_URL_MAX, 0);
    assert_int_equal(http_async_get(a, longurl, 100, result_cb, &r), BZ_EINVAL);
    assert_false(r.done);
    assert_int_equal(http_async_calls(a), 0);
    http_async_stop(a);
}

/* An embedded client: driven by the test's own loop (poll on its fd), callbacks on this thread. */
static int embedded_get(struct http_async *a, uint16_t port, int timeout_ms, struct result *r)
{
    memset(r, 0, sizeof *r);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/stocks/A", port);
    assert_int_equal(http_async_get(a, url, timeout_ms, result_cb, r), 0);
    uint64_t give_up = clock_now_ms() + 5000;
    while (!r->done && clock_now_ms() < give_up) {
        struct pollfd pfd = {.fd = http_async_fd(a), .events = POLLIN};
        int wait = http_async_timeout_ms(a);
        assert_true(wait >= 0 && wait <= 1000); /* a call is open: bounded for its deadline */
        poll(&pfd, 1, wait);
        http_async_run(a);
    }
    assert_true(r->done);
    assert_int_equal(http_async_timeout_ms(a), -1); /* nothing open: the loop may sleep */
    return r->rv;
}

static void test_embedded_client_runs_on_its_loop(void **state)
{
    (void)state;
    struct peer p;
    peer_start(&p, OK_REPLY, false);
    struct http_async *a = http_async_embed();
    assert_int_equal(http_async_timeout_ms(a), -1);
    struct result r;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(embedded_get(a, p.port, 2000, &r), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello");
    }
    assert_int_equal(http_async_connects(a), 1); /* keep-alive, as with the loop thread */
    http_async_stop(a);
    peer_stop(&p);
    assert_int_equal(p.requests, 3);

    /* A peer that never answers: the deadline ends the call from the owner's loop. */
    peer_start(&p, NULL, false);
    a = http_async_embed();
    uint64_t t0 = clock_now_ms();
    assert_int_equal(embedded_get(a, p.port, 100, &r), BZ_ETIMEDOUT);
    assert_true(clock_now_ms() - t0 >= 100);
    /* Stopping with a call open runs it to its deadline: its callback still comes. */
    struct result open = {0};
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/stocks/B", p.port);
    assert_int_equal(http_async_get(a, url, 100, result_cb, &open), 0);
    http_async_stop(a);
    assert_true(open.done);
    assert_int_equal(open.rv, BZ_ETIMEDOUT);
    peer_stop(&p);
}

/*
 * An upstream's idle timeout striking as requests arrive: a peer that answers one request on
 * each of n connections, then closes each of those, unanswered, when its next request comes
 * (they all expire together), and serves later connections normally.
 */
struct idle_peer {
    int listen_fd;
    uint16_t port;
    int n;
    atomic_int requests, dropped;
    pthread_t thread;
};

/* Reads one request head from fd; false at EOF. */
static bool idle_peer_read(int fd)
{
    char buf[4096];
    size_t have = 0;
    while (have < sizeof buf - 1) {
        ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (n <= 0)
            return false;
        have += (size_t)n;
        buf[have] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            return true;
    }
    return false;
}

static void *idle_peer_main(void *arg)
{
    struct idle_peer *p = arg;
    int fds[8];
    for (int i = 0; i < p->n; i++) {
        fds[i] = accept(p->listen_fd, NULL, NULL);
        if (fds[i] < 0 || !idle_peer_read(fds[i]))
            return NULL;
        atomic_fetch_add(&p->requests, 1);
        send(fds[i], OK_REPLY, strlen(OK_REPLY), MSG_NOSIGNAL);
    }
    struct pollfd pfds[8];
    for (int i = 0; i < p->n; i++)
        pfds[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    for (int left = p->n; left > 0;) {
        if (poll(pfds, (nfds_t)p->n, 5000) <= 0)
            break;
        for (int i = 0; i < p->n; i++)
            if (pfds[i].fd >= 0 && pfds[i].revents) {
                close(pfds[i].fd); /* the request, unread and unanswered */
                pfds[i].fd = -1;
                atomic_fetch_add(&p->dropped, 1);
                left--;
            }
    }
    for (int i = 0; i < p->n; i++)
        if (pfds[i].fd >= 0)
            close(pfds[i].fd);
    for (;;) {
        int fd = accept(p->listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        while (idle_peer_read(fd)) {
            atomic_fetch_add(&p->requests, 1);
            send(fd, OK_REPLY, strlen(OK_REPLY), MSG_NOSIGNAL);
        }
        close(fd);
    }
}

/*
 * Every pooled connection goes stale at once (the front-end's catalog connections, idle since a
 * pause as long as the catalog's idle timeout): the next GET is sent again past every stale
 * connection and answered on a new one. It was a 503 when a call was retried only once (the
 * bench's cache misses after each pause).
 */
static void test_embedded_client_after_idle_closes(void **state)
{
    (void)state;
    struct idle_peer p = {.n = 3};
    atomic_init(&p.requests, 0);
    atomic_init(&p.dropped, 0);
    p.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(p.listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(p.listen_fd, 16), 0);
    socklen_t len = sizeof sa;
    getsockname(p.listen_fd, (struct sockaddr *)&sa, &len);
    p.port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&p.thread, NULL, idle_peer_main, &p), 0);

    /* Three calls at once: three connections, each answered and then idle in the pool. */
    struct http_async *a = http_async_embed();
    struct result r[3];
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/stocks/A", p.port);
    for (int i = 0; i < 3; i++) {
        memset(&r[i], 0, sizeof r[i]);
        assert_int_equal(http_async_get(a, url, 2000, result_cb, &r[i]), 0);
    }
    uint64_t give_up = clock_now_ms() + 5000;
    while (!(r[0].done && r[1].done && r[2].done) && clock_now_ms() < give_up) {
        struct pollfd pfd = {.fd = http_async_fd(a), .events = POLLIN};
        poll(&pfd, 1, 50);
        http_async_run(a);
    }
    for (int i = 0; i < 3; i++) {
        assert_true(r[i].done);
        assert_int_equal(r[i].status, 200);
    }
    assert_int_equal(http_async_connects(a), 3);

    /* One GET: it meets the three closes in turn, then a new connection answers. */
    struct result one;
    assert_int_equal(embedded_get(a, p.port, 2000, &one), 0);
    assert_int_equal(one.status, 200);
    assert_int_equal(http_async_stale_retries(a), 3);
    assert_int_equal(atomic_load(&p.dropped), 3);
    assert_int_equal(http_async_connects(a), 4);
    http_async_stop(a);
    shutdown(p.listen_fd, SHUT_RDWR);
    close(p.listen_fd);
    pthread_join(p.thread, NULL);
    assert_int_equal(atomic_load(&p.requests), 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replies_reuse_one_connection),
        cmocka_unit_test(test_error_status_and_split_reply),
        cmocka_unit_test(test_peer_closing_idle_connections),
        cmocka_unit_test(test_connection_close_and_body_until_close),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_refused_connection),
        cmocka_unit_test(test_bad_replies),
        cmocka_unit_test(test_reply_ceiling_per_call),
        cmocka_unit_test(test_post_sends_head_and_body),
        cmocka_unit_test(test_stale_close_retries_only_idempotent_calls),
        cmocka_unit_test(test_bad_urls_are_refused_without_a_call),
        cmocka_unit_test(test_embedded_client_runs_on_its_loop),
        cmocka_unit_test(test_embedded_client_after_idle_closes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
