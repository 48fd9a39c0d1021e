/*
 * http_multi.h - outbound HTTP calls that do not block the caller: libcurl's
 * multi interface driven by one event-loop thread.
 *
 * For a server's event thread that must answer from another service without
 * handing the request to a worker (a front-end's cache miss): it queues a
 * call and returns; the loop thread runs every call in flight on a shared
 * pool of keep-alive connections and calls back when each ends. Same
 * guarantees as http_client.h: a connect and a total deadline on every call,
 * bounded reply bodies, at most HTTP_MULTI_CALLS_MAX calls queued or in
 * flight. Not for calls that may wait on the caller's own server.
 */
#ifndef BZ_HTTP_MULTI_H
#define BZ_HTTP_MULTI_H

#include <stddef.h>

#include "http_client.h"

#define HTTP_MULTI_CALLS_MAX 4096        /* queued + in flight; more are refused */
#define HTTP_MULTI_REPLY_MAX (64 * 1024) /* reply body ceiling */
#define HTTP_MULTI_URL_MAX   512

struct http_multi;

/*
 * How a call ended, on the loop thread, exactly once per accepted call. rv and
 * *reply as for http_client_request: on rv == 0 the callback owns *reply
 * (http_reply_free); otherwise *reply holds nothing to free. Must not block.
 */
typedef void (*http_multi_done_cb)(void *arg, int rv, struct http_reply *reply);

/* Starts the loop thread (aborts, like an allocation failure, if it cannot). */
struct http_multi *http_multi_start(void);

/*
 * Waits for the calls queued or in flight to end (each has its deadline),
 * then stops the loop thread and frees m. NULL is a no-op.
 */
void http_multi_stop(struct http_multi *m);

/*
 * Queues GET url with a total deadline of timeout_ms. Returns 0 (cb will be
 * called on the loop thread), or BZ_EUNAVAIL when HTTP_MULTI_CALLS_MAX calls
 * are pending or m is stopping, or BZ_EINVAL for a url over HTTP_MULTI_URL_MAX;
 * then cb is never called.
 */
int http_multi_get(struct http_multi *m, const char *url, int timeout_ms, http_multi_done_cb cb,
                   void *arg);

/* Calls accepted so far (for metrics and tests). */
unsigned long long http_multi_calls(struct http_multi *m);

#endif
