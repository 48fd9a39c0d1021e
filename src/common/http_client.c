#include "http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "http_server.h"
#include "log.h"

#define HTTP_CLIENT__MAXCONNECTS 16

static pthread_key_t http_client__key;
static pthread_once_t http_client__once = PTHREAD_ONCE_INIT;

static void http_client__handle_free(void *handle)
{
    curl_easy_cleanup(handle);
}

static void http_client__init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_key_create(&http_client__key, http_client__handle_free);
}

void http_client_global_init(void)
{
    pthread_once(&http_client__once, http_client__init_once);
}

/* The calling thread's handle, created on first use. */
static CURL *http_client__handle(void)
{
    http_client_global_init();
    CURL *h = pthread_getspecific(http_client__key);
    if (!h) {
        h = curl_easy_init();
        if (!h) {
            fprintf(stderr, "curl_easy_init failed\n");
            abort();
        }
        pthread_setspecific(http_client__key, h);
    }
    return h;
}

static size_t http_client__write_cb(char *data, size_t size, size_t nmemb, void *user)
{
    struct strbuf *b = user;
    size_t n = size * nmemb;
    return strbuf_append(b, data, n) == 0 ? n : 0; /* 0 aborts the transfer */
}

/* The BZ_E* code of a libcurl result. */
static int http_client__error(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return 0;
    case CURLE_OPERATION_TIMEDOUT:
        return BZ_ETIMEDOUT;
    case CURLE_WRITE_ERROR: /* the write callback refused: over the reply ceiling */
        return BZ_EUPSTREAM;
    default:
        return BZ_EUNAVAIL;
    }
}

int http_client_request(const char *method, const char *url, const char *secret, const char *body,
                        size_t body_len, int timeout_ms, struct http_reply *out)
{
    return http_client_request_headers(method, url, secret, NULL, body, body_len, timeout_ms, out);
}

int http_client_request_headers(const char *method, const char *url, const char *secret,
                                const char *const *extra, const char *body, size_t body_len,
                                int timeout_ms, struct http_reply *out)
{
    CURL *h = http_client__handle();
    struct curl_slist *headers = NULL;
    char secret_header[200];

    memset(out, 0, sizeof *out);
    strbuf_init(&out->body, HTTP_CLIENT_REPLY_MAX);

    /* Options that do not persist between calls are set every time; the handle keeps
     * only its connection cache. */
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms < 1000 ? timeout_ms : 1000));
    curl_easy_setopt(h, CURLOPT_MAXCONNECTS, (long)HTTP_CLIENT__MAXCONNECTS);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_client__write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &out->body);
    if (secret) {
        snprintf(secret_header, sizeof secret_header, "%s: %s", HTTP_SECRET_HEADER, secret);
        headers = curl_slist_append(headers, secret_header);
    }
    bool typed = false; /* the caller names the body's type (a binary one) */
    for (const char *const *line = extra; line && *line; line++) {
        headers = curl_slist_append(headers, *line);
        typed = typed || strncasecmp(*line, "Content-Type:", 13) == 0;
    }
    if (body) {
        if (!typed)
            headers = curl_slist_append(headers, "Content-Type: application/json");
        /* No "Expect: 100-continue" round trip. */
        headers = curl_slist_append(headers, "Expect:");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)body_len);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    else if (strcmp(method, "POST") == 0 && !body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
    if (headers)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);

    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(headers);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);

    int rv = http_client__error(rc);
    if (rv == 0) {
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        out->status = (int)status;
    }
    if (rv) {
        LOG_DEBUG("%s %s: %s", method, url, curl_easy_strerror(rc));
        strbuf_free(&out->body);
    }
    return rv;
}

void http_reply_free(struct http_reply *reply)
{
    strbuf_free(&reply->body);
}

void http_reply_from_json(struct http_reply *out, int status, const json_t *body)
{
    out->status = status;
    strbuf_init(&out->body, HTTP_CLIENT_REPLY_MAX);
    if (body) {
        char *text = xjson_dumps(body, JSON_COMPACT);
        strbuf_append(&out->body, text, strlen(text));
        free(text);
    }
}

json_t *http_reply_data_json(const struct http_reply *reply, int *err, char *msg, size_t msglen)
{
    return http_data_json(reply->status, reply->body.data, reply->body.len, err, msg, msglen);
}

json_t *http_data_json(int status, const char *body, size_t len, int *err, char *msg, size_t msglen)
{
    json_t *root = json_loadb(body ? body : "", len, 0, NULL);
    json_t *data = NULL;
    *err = 0;
    if (status >= 200 && status < 300) {
        data = root ? json_object_get(root, "data") : NULL;
        if (data) {
            json_incref(data);
        } else {
            *err = BZ_EUPSTREAM;
            snprintf(msg, msglen, "reply without data");
        }
    } else {
        const char *m = NULL;
        json_unpack(root, "{s:{s:s}}", "error", "message", &m);
        *err = bz_error_from_status(status);
        snprintf(msg, msglen, "%s", m ? m : bz_strerror(*err));
    }
    json_decref(root);
    return data;
}

json_t *http_client_call_json(const char *url, const char *secret, const json_t *body,
                              int timeout_ms, int *err, char *msg, size_t msglen)
{
    char *payload = body ? xjson_dumps(body, JSON_COMPACT) : NULL;
    struct http_reply reply;
    *err = http_client_request(payload ? "POST" : "GET", url, secret, payload,
                               payload ? strlen(payload) : 0, timeout_ms, &reply);
    free(payload);
    if (*err) {
        snprintf(msg, msglen, "%s", bz_strerror(*err));
        return NULL;
    }
    json_t *data = http_reply_data_json(&reply, err, msg, msglen);
    http_reply_free(&reply);
    return data;
}

int http_client_call_binary(const char *url, const char *secret, const char *body, size_t len,
                            int timeout_ms, struct http_reply *out, char *msg, size_t msglen)
{
    static const char *const headers[] = {"Content-Type: " HTTP_BINARY_TYPE, NULL};
    int err = http_client_request_headers(body ? "POST" : "GET", url, secret, body ? headers : NULL,
                                          body, len, timeout_ms, out);
    if (err) {
        snprintf(msg, msglen, "%s", bz_strerror(err));
        return err;
    }
    return http_reply_check_binary(out, msg, msglen);
}

int http_reply_check_binary(struct http_reply *reply, char *msg, size_t msglen)
{
    if (reply->status == 200)
        return 0;
    int err;
    json_t *data = http_reply_data_json(reply, &err, msg, msglen); /* the error's code, message */
    json_decref(data);
    if (err == 0) {
        snprintf(msg, msglen, "unexpected status %d", reply->status);
        err = BZ_EUPSTREAM;
    }
    http_reply_free(reply);
    return err;
}
