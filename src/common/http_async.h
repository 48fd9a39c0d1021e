/*
 * http_async.h - outbound calls that do not block the caller: a small
 * non-blocking HTTP/1.1 client with keep-alive connections, on one
 * event-loop thread (epoll).
 *
 * For a server's event thread that must answer from another service without
 * handing the request to a worker (a front-end's cache miss, its order
 * batches), or a loop that must never wait for a peer (a primary-backup
 * replica's calls to its peers and the catalog): it queues a GET or POST and returns; the loop
 * thread sends it on an idle keep-alive connection to the peer (or a new one), reads the reply and
 * calls back. Why not libcurl's multi interface for these hops: docs/design.md, "Misses without a
 * worker". Blocking calls go through http_client.h (libcurl).
 *
 * Limits: every call has a deadline (connect included); reply heads are at
 * most HTTP_ASYNC_HEAD_MAX bytes and bodies HTTP_ASYNC_REPLY_MAX (or the call's own ceiling); at
 * most HTTP_ASYNC_CALLS_MAX calls are queued or in flight and HTTP_ASYNC_CONNS_MAX connections open
 * per peer; chunked replies are refused (our servers send Content-Length); request bodies are at
 * most HTTP_ASYNC_BODY_MAX. A reused keep-alive connection that the peer closed before answering is
 * retried once on a new one, for a GET or a POST the caller declares idempotent. Plain http://
 * only, at most HTTP_ASYNC_PEERS_MAX peers.
 */
#ifndef BZ_HTTP_ASYNC_H
#define BZ_HTTP_ASYNC_H

#include <stdbool.h>
#include <stddef.h>

#include "http_client.h"

#define HTTP_ASYNC_CALLS_MAX 4096         /* queued + in flight; more are refused */
#define HTTP_ASYNC_CONNS_MAX 256          /* open connections per peer; more calls wait */
#define HTTP_ASYNC_PEERS_MAX 32           /* distinct host:port: a catalog and every replica */
#define HTTP_ASYNC_HEAD_MAX  (8 * 1024)   /* status line + headers of a reply */
#define HTTP_ASYNC_REPLY_MAX (256 * 1024) /* reply body (an order batch's answers) */
#define HTTP_ASYNC_BODY_MAX  (256 * 1024) /* request body */
#define HTTP_ASYNC_URL_MAX   512

struct http_async;

/*
 * How a call ended, on the loop thread, exactly once per accepted call. rv is
 * 0 (a reply arrived, whatever its status), BZ_EUNAVAIL (the peer could not
 * be reached or closed the connection), BZ_ETIMEDOUT (the deadline passed) or
 * BZ_EUPSTREAM (a reply that breaks the limits or HTTP/1.1). On 0 the callback
 * owns *reply (http_reply_free); otherwise *reply holds nothing to free. It
 * must not block.
 */
typedef void (*http_async_done_cb)(void *arg, int rv, struct http_reply *reply);

/* Starts the loop thread (aborts, like an allocation failure, if it cannot). */
struct http_async *http_async_start(void);

/*
 * A client without a thread of its own, for one event loop that drives it (an
 * HTTP server's event thread, so that a call and its reply never cross threads):
 * the loop watches http_async_fd() for input and calls http_async_run() when it
 * is ready or after http_async_timeout_ms(). http_async_request() and
 * http_async_run() must then be called on that loop's thread only, and
 * callbacks run on it (a call that fails at once calls back from within
 * http_async_request, which still returns 0). http_async_stop() runs the calls
 * still open to their end before it frees the client.
 */
struct http_async *http_async_embed(void);
/* The descriptor an embedding loop watches for input (an epoll set). */
int http_async_fd(const struct http_async *a);
/* How long the embedding loop may wait at most (ms; -1: no call open). */
int http_async_timeout_ms(const struct http_async *a);
/* Handles what is ready without waiting: replies, closes, deadlines; runs callbacks. */
void http_async_run(struct http_async *a);

/*
 * Waits for the calls queued or in flight to end (each has its deadline),
 * then stops the loop thread, closes the connections and frees a. NULL is a
 * no-op.
 */
void http_async_stop(struct http_async *a);

/* One call. The strings and the body are copied: they need not outlive the call. */
struct http_async_req {
    const char *method;       /* "GET" or "POST" */
    const char *url;          /* "http://host:port/path" */
    const char *secret;       /* sent as X-Bazaar-Secret; NULL: none */
    const char *body;         /* POST: body_len bytes */
    const char *content_type; /* POST: the body's type, at most 64 bytes; NULL: JSON */
    size_t body_len;
    int timeout_ms;   /* total deadline, connect included */
    bool idempotent;  /* a POST that may be sent twice (GETs always may) */
    size_t reply_max; /* the reply body's ceiling; 0: HTTP_ASYNC_REPLY_MAX */
};

/*
 * Queues a call. Returns 0 (cb will be called on the loop thread), or
 * BZ_EUNAVAIL when HTTP_ASYNC_CALLS_MAX calls are pending or a is stopping,
 * or BZ_EINVAL for a url that is not of that form or too long, a body over
 * HTTP_ASYNC_BODY_MAX or a bad secret; then cb is never called.
 */
int http_async_request(struct http_async *a, const struct http_async_req *r, http_async_done_cb cb,
                       void *arg);
/* http_async_request of a GET. */
int http_async_get(struct http_async *a, const char *url, int timeout_ms, http_async_done_cb cb,
                   void *arg);

/* Calls accepted, connections opened, and calls sent again after a stale keep-alive close, so
 * far (for metrics and tests). */
unsigned long long http_async_calls(struct http_async *a);
unsigned long long http_async_connects(struct http_async *a);
unsigned long long http_async_stale_retries(struct http_async *a);

#endif
