/* libFuzzer target: every internal message decoder: the JSON ones (invalidation, leader
 * notice) and the binary ones of the trade path (append, its reply, log pages, the catalog's
 * batch and its reply, the front-end's lookup batch and its reply). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"

static void fuzz_binary(const uint8_t *data, size_t size)
{
    char msg[160];
    struct msg_append append;
    struct msg_append_reply reply;
    struct order *entries;
    size_t n;

    if (msg_append_decode(data, size, &append, msg, sizeof msg) == 0) {
        /* Decoded appends obey the protocol's shape, and encode back to the same bytes. */
        for (size_t i = 0; i < append.n; i++)
            if (append.entries[i].number != append.prev + 1 + (int64_t)i ||
                append.entries[i].epoch < 1 || append.entries[i].epoch > append.epoch)
                __builtin_trap();
        char *again;
        size_t len;
        if (msg_append_encode(&append, &again, &len) != 0)
            __builtin_trap();
        struct msg_append back;
        if (msg_append_decode(again, len, &back, msg, sizeof msg) != 0 || back.n != append.n)
            __builtin_trap();
        msg_append_free(&back);
        free(again);
        msg_append_free(&append);
    }
    if (msg_append_reply_decode(data, size, &reply, msg, sizeof msg) == 0) {
        uint8_t again[MSG_APPEND_REPLY_SIZE];
        msg_append_reply_encode(&reply, again);
        if (memcmp(again, data, sizeof again) != 0)
            __builtin_trap();
    }
    if (msg_log_page_decode(data, size, &entries, &n, msg, sizeof msg) == 0) {
        for (size_t i = 1; i < n; i++)
            if (entries[i].number != entries[i - 1].number + 1)
                __builtin_trap();
        free(entries);
    }
    struct msg_exec exec;
    if (msg_exec_decode(data, size, &exec, msg, sizeof msg) == 0) {
        /* A decoded batch encodes back to the same bytes. */
        char *again;
        size_t len;
        if (msg_exec_encode(&exec, &again, &len) != 0 || len != size ||
            memcmp(again, data, size) != 0)
            __builtin_trap();
        free(again);
        msg_exec_free(&exec);
    }
    /* A reply to a batch of 0..2 trades from cursor 0. */
    for (size_t ntrades = 0; ntrades < 3; ntrades++) {
        struct msg_exec_reply er;
        if (msg_exec_reply_decode(data, size, ntrades, 0, &er, msg, sizeof msg) != 0)
            continue;
        if (er.nresults != ntrades || er.end < (int64_t)er.njournal)
            __builtin_trap();
        for (size_t i = 0; i < er.njournal; i++)
            if (er.journal[i].number != (int64_t)i || er.journal[i].epoch != 0)
                __builtin_trap();
        char *again;
        size_t len;
        struct msg_exec_reply back;
        if (msg_exec_reply_encode(&er, &again, &len) != 0 ||
            msg_exec_reply_decode(again, len, ntrades, 0, &back, msg, sizeof msg) != 0 ||
            back.njournal != er.njournal)
            __builtin_trap();
        msg_exec_reply_free(&back);
        free(again);
        msg_exec_reply_free(&er);
    }
    struct msg_lookups lookups;
    if (msg_lookups_decode(data, size, &lookups, msg, sizeof msg) == 0) {
        /* Decoded names are stock names, and encode back to the same bytes. */
        const char *names[MSG_LOOKUP_BATCH_MAX];
        for (size_t i = 0; i < lookups.n; i++)
            names[i] = lookups.names[i];
        struct strbuf again;
        strbuf_init(&again, MSG_LOOKUPS_BYTES_MAX);
        if (msg_lookups_encode(names, lookups.n, &again) != 0 || again.len != size ||
            memcmp(again.data, data, size) != 0)
            __builtin_trap();
        strbuf_free(&again);
    }
    /* A reply to 1..3 names: answers within the buffer, re-encoded to the same bytes. */
    for (size_t nnames = 1; nnames <= 3; nnames++) {
        struct msg_lookup_result r[3];
        if (msg_lookup_reply_decode(data, size, nnames, r, msg, sizeof msg) != 0)
            continue;
        struct strbuf again;
        strbuf_init(&again, MSG_LOOKUP_REPLY_BYTES_MAX);
        msg_lookup_reply_start(&again, nnames);
        for (size_t i = 0; i < nnames; i++)
            if ((const uint8_t *)r[i].body < data ||
                (const uint8_t *)r[i].body + r[i].len > data + size ||
                msg_lookup_reply_put(&again, r[i].status, r[i].body, r[i].len) != 0)
                __builtin_trap();
        if (again.len != size || memcmp(again.data, data, size) != 0)
            __builtin_trap();
        strbuf_free(&again);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_binary(data, size);
    json_t *obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!obj)
        return 0;
    char msg[160];
    struct msg_inval inval;
    struct msg_notice notice;
    msg_inval_from_json(obj, &inval, msg, sizeof msg);
    msg_notice_from_json(obj, &notice, msg, sizeof msg);
    json_decref(obj);
    return 0;
}
