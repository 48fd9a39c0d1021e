/*
 * http_client.h - outbound HTTP calls between services, on libcurl.
 *
 * Every call has a deadline (connect and total). Each thread keeps its own
 * curl handle, so connections to the same peer are kept alive and reused
 * across calls without any locking; the handle is freed when the thread
 * exits. Reply bodies are bounded. Not a general-purpose client: no
 * redirects, no TLS options; bodies are JSON unless the caller names another
 * type (replication's binary messages, msg.h).
 */
#ifndef BZ_HTTP_CLIENT_H
#define BZ_HTTP_CLIENT_H

#include <stddef.h>

#include <jansson.h>

#include "util.h"

#define HTTP_CLIENT_REPLY_MAX (8u * 1024 * 1024)

struct http_reply {
    int status;         /* HTTP status of the reply */
    struct strbuf body; /* reply bytes; freed by http_reply_free */
};

/* Once per process, before any thread makes a call. */
void http_client_global_init(void);

/*
 * One request. `secret` (may be NULL) is sent as the cluster-secret header;
 * `body` (may be NULL) is sent as application/json.
 * Returns 0 when a reply arrived (whatever its status), BZ_EUNAVAIL when the
 * peer could not be reached, BZ_ETIMEDOUT when the deadline passed, and
 * BZ_EUPSTREAM for a reply over HTTP_CLIENT_REPLY_MAX. On success the caller
 * frees `out` with http_reply_free; on failure `out` holds nothing to free.
 */
int http_client_request(const char *method, const char *url, const char *secret, const char *body,
                        size_t body_len, int timeout_ms, struct http_reply *out);

/*
 * The same with extra request headers: `headers` is a NULL-terminated array
 * of "Name: value" lines (e.g. an Idempotency-Key), or NULL. A Content-Type
 * line among them replaces application/json.
 */
int http_client_request_headers(const char *method, const char *url, const char *secret,
                                const char *const *headers, const char *body, size_t body_len,
                                int timeout_ms, struct http_reply *out);

void http_reply_free(struct http_reply *reply);

/* A reply of this status whose body is `body` serialised (empty when NULL); free it as above. */
void http_reply_from_json(struct http_reply *out, int status, const json_t *body);

/*
 * Parses a reply of the form {"data": ...} or {"error": {...}}. Returns the
 * "data" member (a new reference) on a 2xx, or NULL; in the NULL case *err is
 * the BZ_E* code of the status and msg receives the peer's message.
 */
json_t *http_reply_data_json(const struct http_reply *reply, int *err, char *msg, size_t msglen);
/* The same for a reply given as its status and body bytes (one answer of a lookup batch). */
json_t *http_data_json(int status, const char *body, size_t len, int *err, char *msg,
                       size_t msglen);

/*
 * The one way services call each other with binary bodies (the trade path's
 * messages, msg.h): POSTs `body` as application/octet-stream, or GETs when it
 * is NULL. 0 with *out holding the 200 reply (free it with http_reply_free),
 * or the BZ_E* code of the transport or of the peer's error status (its JSON
 * error shape), with msg the reason.
 */
int http_client_call_binary(const char *url, const char *secret, const char *body, size_t len,
                            int timeout_ms, struct http_reply *out, char *msg, size_t msglen);
/*
 * The verdict on a binary call's reply, however it was made (above, or an
 * http_async call): 0 for a 200 (reply kept), else the BZ_E* code of the
 * peer's error status with msg its reason, and the reply freed.
 */
int http_reply_check_binary(struct http_reply *reply, char *msg, size_t msglen);

/*
 * The one way services call each other with JSON: encodes `body` (NULL makes
 * it a GET, otherwise a POST), calls url with the secret and a deadline, and
 * decodes the reply. Returns the "data" member (a new reference) of a 2xx
 * reply. Otherwise NULL, with *err the transport error of
 * http_client_request or the BZ_E* code of the reply's status, and msg the
 * reason (the peer's message when it sent one).
 */
json_t *http_client_call_json(const char *url, const char *secret, const json_t *body,
                              int timeout_ms, int *err, char *msg, size_t msglen);

#endif
