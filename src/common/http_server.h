/*
 * http_server.h - the one HTTP server of every Stock Bazaar service, on
 * libmicrohttpd (epoll; one daemon per event thread, run from our own loop).
 *
 * A service declares a table of routes and handlers; this module does
 * everything else once: routing (404/405), the body limit (413), header
 * limits, idle-connection timeouts, the cluster-secret check on internal
 * routes (401, constant-time), JSON error bodies, per-route request counts
 * and latency histograms, and GET /metrics. Handlers receive a parsed
 * request and fill a response; they never touch libmicrohttpd.
 *
 * Three kinds of handlers: a `fast` one runs on the event thread that read the
 * request and must not block (a cache hit, /health); an `async` one starts work
 * that ends later (an outbound call on the event thread's own http_async client,
 * http_request_async) while the connection is suspended; a blocking `handler` (SQLite, a blocking
 * outbound call) runs on a worker pool while the connection is suspended, so a slow request never
 * holds up the other connections of its event thread, and idle keep-alive connections never hold a
 * worker or a call.
 */
#ifndef BZ_HTTP_SERVER_H
#define BZ_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "metrics.h"
#include "util.h"

struct http_async;

#define HTTP_BODY_MAX      4096 /* SPEC §2: larger bodies get 413 */
#define HTTP_SECRET_HEADER "X-Bazaar-Secret"
/*
 * Open connections one client address may hold (waiting for their first
 * request or owned by libmicrohttpd); more are closed at accept. The global
 * limit is 4096, so one address can never take more than a quarter of it
 * (docs/security.md).
 */
#define HTTP_CONN_PER_CLIENT_MAX 1024

struct http_request {
    const char *method;
    const char *path;
    const char *param; /* the path segment matched by `{}`, NUL-terminated; NULL if none */
    size_t param_len;
    const char *body; /* NUL-terminated; "" when there is none */
    size_t body_len;
    uint64_t start_us; /* clock_now_us() when its head was read: "now" for a fast handler */
    void *conn_;       /* private: the libmicrohttpd connection */
};

struct http_response {
    int status;
    struct strbuf body;       /* owned by the server; handlers append or use the helpers */
    const char *content_type; /* defaults to application/json */
    int retry_after_s;        /* > 0 adds a Retry-After header */
    const char *allow;        /* set by the server on 405: the Allow header */
};

typedef void (*http_handler_fn)(void *svc, const struct http_request *req,
                                struct http_response *resp);
/* A handler that must not block; returns false to pass the request to the blocking one. */
typedef bool (*http_fast_fn)(void *svc, const struct http_request *req, struct http_response *resp);
/*
 * Starts a request's work without blocking (an outbound call on an event loop) and
 * returns true, or returns false to pass the request to the blocking handler. After
 * true, req and resp stay valid until whoever finishes the work fills resp and calls
 * http_request_resume(req), exactly once, from any thread (also from within this call).
 */
typedef bool (*http_async_fn)(void *svc, const struct http_request *req,
                              struct http_response *resp);

#define HTTP_STATUS_MIN 100
#define HTTP_STATUS_MAX 599

struct http_route_stats {
    atomic_uint_fast64_t by_code[HTTP_STATUS_MAX - HTTP_STATUS_MIN + 1]; /* index = status - 100 */
    struct metrics_hist latency;
};

struct http_route {
    const char *method;            /* "GET", "POST" */
    const char *pattern;           /* literal path; a "{}" segment matches one non-empty segment */
    http_fast_fn fast;             /* runs on an event thread, must not block; may be NULL */
    http_async_fn async;           /* when fast declines: starts non-blocking work; may be NULL */
    http_handler_fn handler;       /* may block: runs on the worker pool; NULL if fast or async
                                      always answers (an async one that the stopping server
                                      cannot start then answers 503) */
    bool internal;                 /* requires the cluster secret */
    size_t body_max;               /* request body ceiling; 0 means HTTP_BODY_MAX */
    struct http_route_stats stats; /* zero-initialised; updated by the server */
};

/* Appends service-specific metrics (Prometheus text) for GET /metrics. */
typedef void (*http_metrics_fn)(void *svc, struct strbuf *out);

struct http_server_opts {
    const char *listen;         /* "host:port" */
    int listen_fd;              /* > 0: a socket from http_server_bind(), used instead of
                                   binding `listen` (so a process binds before anything else) */
    int threads;                /* event threads (one libmicrohttpd daemon each), >= 1 */
    bool async_clients;         /* each event thread drives an http_async client of its own
                                   (http_request_async) for its async handlers */
    int workers;                /* threads running blocking handlers, >= 1 */
    int idle_timeout_s;         /* idle connections are closed after this */
    int conns_per_client;       /* 0 means HTTP_CONN_PER_CLIENT_MAX */
    const char *secret;         /* for internal routes; must outlive the server */
    const char *metrics_prefix; /* e.g. "bazaar_frontend" */
    http_metrics_fn metrics;    /* may be NULL */
    void *svc;                  /* passed to handlers and metrics */
};

struct http_server;

/*
 * Binds and listens on "host:port" without serving yet, so that a process can
 * fail on a busy port before it changes anything else. Returns 0 with *fd
 * set (pass it as opts.listen_fd), or BZ_EINVAL/BZ_EUNAVAIL with errmsg set.
 */
int http_server_bind(const char *listen, int *fd, char *errmsg, size_t errlen);

/*
 * Starts serving. Besides the routes, every server answers GET /metrics
 * (Prometheus text, with process_* and bazaar_build_info), GET /livez (200
 * while the process runs) and GET /readyz (the service's GET /health route). `routes` must outlive
 * the server (the server writes stats into it). Returns 0 or BZ_EINVAL/BZ_EUNAVAIL with errmsg set.
 */
int http_server_start(struct http_server **out, const struct http_server_opts *opts,
                      struct http_route *routes, size_t nroutes, char *errmsg, size_t errlen);
/* Stops accepting, finishes in-flight handlers and frees the server. NULL is a no-op. */
void http_server_stop(struct http_server *srv);

/*
 * A request header, or NULL. A value with an embedded NUL byte is returned
 * as "\x01" (never valid anywhere) rather than silently cut short. Valid
 * during the handler.
 */
const char *http_request_header(const struct http_request *req, const char *name);

/*
 * Sends the reply of a request whose async handler returned true (resp filled). The
 * request and its response must not be touched after this call.
 */
void http_request_resume(const struct http_request *req);

/*
 * For an async request's work that must block after all (a retry loop after a
 * failed call): instead of http_request_resume, queues fn(arg) on the worker
 * pool; fn fills the response and the worker sends it. false, with nothing
 * queued, when the pool is full or stopping: the caller still owns the request
 * and must resume it.
 */
bool http_request_defer(const struct http_request *req, void (*fn)(void *arg), void *arg);

/*
 * For an async handler: the http_async client of the event thread running it
 * (opts.async_clients), whose calls and callbacks run on that thread; NULL
 * without clients. Used on the event thread only.
 */
struct http_async *http_request_async(const struct http_request *req);

/* The content type of the internal binary messages (msg.h), both ways. */
#define HTTP_BINARY_TYPE "application/octet-stream"

/*
 * true when the request's body is HTTP_BINARY_TYPE; otherwise replies 400
 * "<what> is application/octet-stream (src/common/msg.h)" and returns false.
 */
bool http_request_binary(const struct http_request *req, struct http_response *resp,
                         const char *what);
/* Replaces the body with exactly these bytes and sets the status. */
void http_reply_bytes(struct http_response *resp, int status, const void *data, size_t len);
/* http_reply_bytes of a binary message: status 200, content type HTTP_BINARY_TYPE. */
void http_reply_binary(struct http_response *resp, const void *data, size_t len);
/* Serialises `json` (and takes the reference) as the body. */
void http_reply_json(struct http_response *resp, int status, json_t *json);
/* 200 {"data": data}; takes the reference. */
void http_reply_data(struct http_response *resp, json_t *data);
/*
 * The one error shape: {"error":{"code":<status>,"message":"..."}} where the
 * status comes from the BZ_E* code. A NULL message uses the code's default.
 */
void http_reply_error(struct http_response *resp, int err, const char *message);
/* That error body alone (its status is bz_error_status(err)); new reference. */
json_t *http_error_json(int err, const char *message);

/*
 * Parses a request body as one JSON object, with duplicate keys rejected.
 * Returns the object (caller owns) or NULL with a 400 already written into
 * resp.
 */
json_t *http_request_json_object(const struct http_request *req, struct http_response *resp);

#endif
