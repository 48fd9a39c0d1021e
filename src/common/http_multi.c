#include "http_multi.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"

#define HTTP_MULTI__SPARES     256  /* idle easy handles kept for reuse */
#define HTTP_MULTI__CONNS      256  /* keep-alive connections kept by the multi handle */
#define HTTP_MULTI__POLL_MS    1000 /* longest sleep; curl shortens it to its next deadline */
#define HTTP_MULTI__CONNECT_MS 1000

/* One call, from http_multi_get until its callback has run. */
struct http_multi__call {
    char url[HTTP_MULTI_URL_MAX];
    int timeout_ms;
    http_multi_done_cb cb;
    void *arg;
    struct http_reply reply;
    struct http_multi__call *next; /* the submission queue */
};

struct http_multi {
    pthread_t thread;
    CURLM *multi; /* used by the loop thread only (curl_multi_wakeup excepted) */
    CURL *spares[HTTP_MULTI__SPARES];
    size_t nspares;

    pthread_mutex_t lock; /* guards the fields below */
    struct http_multi__call *queue, **queue_tail;
    size_t pending; /* queued + in flight: accepted calls whose callback has not returned */
    bool stopping;
    atomic_ullong calls;
};

static size_t http_multi__write_cb(char *data, size_t size, size_t nmemb, void *user)
{
    struct strbuf *b = user;
    size_t n = size * nmemb;
    return strbuf_append(b, data, n) == 0 ? n : 0; /* 0 aborts the transfer */
}

/* An easy handle with the options every call shares. */
static CURL *http_multi__easy(struct http_multi *m)
{
    if (m->nspares)
        return m->spares[--m->nspares];
    CURL *h = curl_easy_init();
    if (!h) {
        LOG_ERROR("curl_easy_init failed");
        abort();
    }
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_multi__write_cb);
    return h;
}

static void http_multi__easy_put(struct http_multi *m, CURL *h)
{
    if (m->nspares < HTTP_MULTI__SPARES)
        m->spares[m->nspares++] = h;
    else
        curl_easy_cleanup(h);
}

/* Hands the queued calls to curl. */
static void http_multi__add(struct http_multi *m, struct http_multi__call *list)
{
    while (list) {
        struct http_multi__call *call = list;
        list = list->next;
        CURL *h = http_multi__easy(m);
        curl_easy_setopt(h, CURLOPT_URL, call->url);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)call->timeout_ms);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)(call->timeout_ms < HTTP_MULTI__CONNECT_MS
                                    ? call->timeout_ms
                                    : HTTP_MULTI__CONNECT_MS));
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &call->reply.body);
        curl_easy_setopt(h, CURLOPT_PRIVATE, call);
        CURLMcode mc = curl_multi_add_handle(m->multi, h);
        if (mc != CURLM_OK) {
            /* Only on misuse or out of memory; the call still ends, as unreachable. */
            LOG_ERROR("curl_multi_add_handle: %s", curl_multi_strerror(mc));
            http_multi__easy_put(m, h);
            strbuf_free(&call->reply.body);
            call->cb(call->arg, BZ_EUNAVAIL, &call->reply);
            free(call);
            pthread_mutex_lock(&m->lock);
            m->pending--;
            pthread_mutex_unlock(&m->lock);
        }
    }
}

/* Runs the callbacks of the calls that ended. */
static void http_multi__reap(struct http_multi *m)
{
    CURLMsg *msg;
    int left;
    size_t ended = 0;
    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *h = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct http_multi__call *call = NULL;
        curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&call);
        int rv = http_client_curl_error((int)rc);
        if (rv == 0) {
            long status = 0;
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
            call->reply.status = (int)status;
        } else {
            LOG_DEBUG("GET %s: %s", call->url, curl_easy_strerror(rc));
            strbuf_free(&call->reply.body);
        }
        curl_multi_remove_handle(m->multi, h);
        http_multi__easy_put(m, h);
        call->cb(call->arg, rv, &call->reply);
        free(call);
        ended++;
    }
    if (ended) {
        pthread_mutex_lock(&m->lock);
        m->pending -= ended;
        pthread_mutex_unlock(&m->lock);
    }
}

static void *http_multi__main(void *arg)
{
    struct http_multi *m = arg;
    for (;;) {
        pthread_mutex_lock(&m->lock);
        struct http_multi__call *list = m->queue;
        m->queue = NULL;
        m->queue_tail = &m->queue;
        bool done = m->stopping && m->pending == 0;
        pthread_mutex_unlock(&m->lock);
        if (done)
            break;
        http_multi__add(m, list);
        int running = 0;
        CURLMcode mc = curl_multi_perform(m->multi, &running);
        if (mc != CURLM_OK)
            LOG_ERROR("curl_multi_perform: %s", curl_multi_strerror(mc));
        http_multi__reap(m);
        /* Sleeps until a socket is ready, a call is queued (curl_multi_wakeup) or curl's
         * next deadline (a call's timeout) comes. */
        curl_multi_poll(m->multi, NULL, 0, HTTP_MULTI__POLL_MS, NULL);
    }
    return NULL;
}

struct http_multi *http_multi_start(void)
{
    http_client_global_init();
    struct http_multi *m = xcalloc(1, sizeof *m);
    m->multi = curl_multi_init();
    if (!m->multi) {
        LOG_ERROR("curl_multi_init failed");
        abort();
    }
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, (long)HTTP_MULTI__CONNS);
    m->queue_tail = &m->queue;
    pthread_mutex_init(&m->lock, NULL);
    int rv = pthread_create(&m->thread, NULL, http_multi__main, m);
    if (rv) {
        LOG_ERROR("cannot start the outbound call thread: %s", strerror(rv));
        abort();
    }
    return m;
}

void http_multi_stop(struct http_multi *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->stopping = true;
    pthread_mutex_unlock(&m->lock);
    curl_multi_wakeup(m->multi);
    pthread_join(m->thread, NULL);
    while (m->nspares)
        curl_easy_cleanup(m->spares[--m->nspares]);
    curl_multi_cleanup(m->multi);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

int http_multi_get(struct http_multi *m, const char *url, int timeout_ms, http_multi_done_cb cb,
                   void *arg)
{
    size_t len = strlen(url);
    if (len >= HTTP_MULTI_URL_MAX)
        return BZ_EINVAL;
    struct http_multi__call *call = xcalloc(1, sizeof *call);
    memcpy(call->url, url, len + 1);
    call->timeout_ms = timeout_ms;
    call->cb = cb;
    call->arg = arg;
    strbuf_init(&call->reply.body, HTTP_MULTI_REPLY_MAX);

    pthread_mutex_lock(&m->lock);
    bool ok = !m->stopping && m->pending < HTTP_MULTI_CALLS_MAX;
    bool wake = false;
    if (ok) {
        wake = m->queue == NULL; /* else a wake-up is already on its way */
        *m->queue_tail = call;
        m->queue_tail = &call->next;
        m->pending++;
    }
    pthread_mutex_unlock(&m->lock);
    if (!ok) {
        strbuf_free(&call->reply.body);
        free(call);
        return BZ_EUNAVAIL;
    }
    atomic_fetch_add_explicit(&m->calls, 1, memory_order_relaxed);
    if (wake)
        curl_multi_wakeup(m->multi);
    return 0;
}

unsigned long long http_multi_calls(struct http_multi *m)
{
    return atomic_load_explicit(&m->calls, memory_order_relaxed);
}
