/*
 * http_async.h - outbound GETs that do not block the caller: a small
 * non-blocking HTTP/1.1 client with keep-alive connections, on one
 * event-loop thread (epoll).
 *
 * For a server's event thread that must answer from another service without
 * handing the request to a worker (a front-end's cache miss): it queues a GET
 * and returns; the loop thread sends it on an idle keep-alive connection to
 * the peer (or a new one), reads the reply and calls back. Why not libcurl's
 * multi interface for this one hop: docs/design.md, "Misses without a
 * worker". Everything else calls through http_client.h (libcurl).
 *
 * Limits: every call has a deadline (connect included); reply heads are at
 * most HTTP_ASYNC_HEAD_MAX bytes and bodies HTTP_ASYNC_REPLY_MAX; at most
 * HTTP_ASYNC_CALLS_MAX calls are queued or in flight and
 * HTTP_ASYNC_CONNS_MAX connections open per peer; chunked replies are refused
 * (our servers send Content-Length). A reused keep-alive connection that the
 * peer closed before answering is retried once on a new one (GET is
 * idempotent). Plain http:// only, at most HTTP_ASYNC_PEERS_MAX peers.
 */
#ifndef BZ_HTTP_ASYNC_H
#define BZ_HTTP_ASYNC_H

#include <stddef.h>

#include "http_client.h"

#define HTTP_ASYNC_CALLS_MAX 4096        /* queued + in flight; more are refused */
#define HTTP_ASYNC_CONNS_MAX 256         /* open connections per peer; more calls wait */
#define HTTP_ASYNC_PEERS_MAX 8           /* distinct host:port */
#define HTTP_ASYNC_HEAD_MAX  (8 * 1024)  /* status line + headers of a reply */
#define HTTP_ASYNC_REPLY_MAX (64 * 1024) /* reply body */
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
 * Waits for the calls queued or in flight to end (each has its deadline),
 * then stops the loop thread, closes the connections and frees a. NULL is a
 * no-op.
 */
void http_async_stop(struct http_async *a);

/*
 * Queues GET url ("http://host:port/path") with a total deadline of
 * timeout_ms. Returns 0 (cb will be called on the loop thread), or
 * BZ_EUNAVAIL when HTTP_ASYNC_CALLS_MAX calls are pending or a is stopping,
 * or BZ_EINVAL for a url that is not of that form or too long; then cb is
 * never called.
 */
int http_async_get(struct http_async *a, const char *url, int timeout_ms, http_async_done_cb cb,
                   void *arg);

/* Calls accepted and connections opened so far (for metrics and tests). */
unsigned long long http_async_calls(struct http_async *a);
unsigned long long http_async_connects(struct http_async *a);

#endif
