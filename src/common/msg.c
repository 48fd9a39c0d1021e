#include "msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define MSG__EPOCH_MAX  ((json_int_t)1 << 62)
#define MSG__NUMBER_MAX ((json_int_t)1 << 62)

json_t *msg_entry_to_json(const struct order *o)
{
    json_t *obj = trade_to_json(&o->trade);
    json_object_set_new(obj, "number", json_integer(o->number));
    json_object_set_new(obj, "epoch", json_integer((json_int_t)o->epoch));
    return obj;
}

/* An integer member in [lo, hi]; 0 or BZ_EINVAL. */
static int msg__int(const json_t *obj, const char *key, json_int_t lo, json_int_t hi,
                    json_int_t *out, char *errmsg, size_t errlen)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(errmsg, errlen, "'%s' must be an integer in %lld..%lld", key, (long long)lo,
                 (long long)hi);
        return BZ_EINVAL;
    }
    *out = json_integer_value(v);
    return 0;
}

int msg_entry_from_json(const json_t *obj, struct order *out, char *errmsg, size_t errlen)
{
    static const char *const keys[] = {"number", "epoch", "request_id", "name", "type", "quantity"};
    json_int_t number, epoch;
    if (trade_check_fields(obj, keys, 6, errmsg, errlen) ||
        trade_from_members(obj, true, &out->trade, errmsg, errlen) ||
        msg__int(obj, "number", 0, MSG__NUMBER_MAX, &number, errmsg, errlen) ||
        msg__int(obj, "epoch", 1, MSG__EPOCH_MAX, &epoch, errmsg, errlen))
        return BZ_EINVAL;
    out->number = number;
    out->epoch = (uint64_t)epoch;
    return 0;
}

json_t *msg_notice_to_json(const struct msg_notice *m)
{
    return json_pack("{s:i,s:I}", "leader", m->leader, "epoch", (json_int_t)m->epoch);
}

int msg_notice_from_json(const json_t *obj, struct msg_notice *out, char *errmsg, size_t errlen)
{
    static const char *const keys[] = {"leader", "epoch"};
    json_int_t leader, epoch;
    if (trade_check_fields(obj, keys, 2, errmsg, errlen) ||
        msg__int(obj, "leader", 1, 1000000, &leader, errmsg, errlen) ||
        msg__int(obj, "epoch", 1, MSG__EPOCH_MAX, &epoch, errmsg, errlen))
        return BZ_EINVAL;
    out->leader = (int)leader;
    out->epoch = (uint64_t)epoch;
    return 0;
}

json_t *msg_append_to_json(const struct msg_append *m)
{
    json_t *entries = json_array();
    for (size_t i = 0; i < m->n; i++)
        json_array_append_new(entries, msg_entry_to_json(&m->entries[i]));
    return json_pack("{s:I,s:i,s:I,s:I,s:I,s:o}", "epoch", (json_int_t)m->epoch, "leader",
                     m->leader, "prev", (json_int_t)m->prev, "prev_epoch",
                     (json_int_t)m->prev_epoch, "start_last", (json_int_t)m->start_last, "entries",
                     entries);
}

int msg_entries_from_json(const json_t *arr, struct order **entries, size_t *n, char *errmsg,
                          size_t errlen)
{
    if (!json_is_array(arr) || json_array_size(arr) > MSG_MAX_ENTRIES) {
        snprintf(errmsg, errlen, "entries must be an array of at most %d", MSG_MAX_ENTRIES);
        return BZ_EINVAL;
    }
    size_t count = json_array_size(arr);
    struct order *e = xcalloc(count ? count : 1, sizeof *e);
    for (size_t i = 0; i < count; i++) {
        if (msg_entry_from_json(json_array_get(arr, i), &e[i], errmsg, errlen) != 0 ||
            (i > 0 && e[i].number != e[i - 1].number + 1)) {
            if (i > 0 && e[i].number != e[i - 1].number + 1)
                snprintf(errmsg, errlen, "entries must have consecutive numbers");
            free(e);
            return BZ_EINVAL;
        }
    }
    *entries = e;
    *n = count;
    return 0;
}

int msg_append_from_json(const json_t *obj, struct msg_append *out, char *errmsg, size_t errlen)
{
    static const char *const keys[] = {"epoch",      "leader",     "prev",
                                       "prev_epoch", "start_last", "entries"};
    json_int_t epoch, leader, prev, prev_epoch, start_last;
    memset(out, 0, sizeof *out);
    if (trade_check_fields(obj, keys, 6, errmsg, errlen) ||
        msg__int(obj, "epoch", 1, MSG__EPOCH_MAX, &epoch, errmsg, errlen) ||
        msg__int(obj, "leader", 1, 1000000, &leader, errmsg, errlen) ||
        msg__int(obj, "prev", -1, MSG__NUMBER_MAX, &prev, errmsg, errlen) ||
        msg__int(obj, "prev_epoch", 0, MSG__EPOCH_MAX, &prev_epoch, errmsg, errlen) ||
        msg__int(obj, "start_last", -1, MSG__NUMBER_MAX, &start_last, errmsg, errlen))
        return BZ_EINVAL;
    if (msg_entries_from_json(json_object_get(obj, "entries"), &out->entries, &out->n, errmsg,
                              errlen) != 0)
        return BZ_EINVAL;
    if (prev == -1 && prev_epoch != 0) {
        snprintf(errmsg, errlen, "prev_epoch must be 0 when prev is -1");
        msg_append_free(out);
        return BZ_EINVAL;
    }
    if (out->n > 0 && out->entries[0].number != prev + 1) {
        snprintf(errmsg, errlen, "first entry must be number prev+1");
        msg_append_free(out);
        return BZ_EINVAL;
    }
    for (size_t i = 0; i < out->n; i++) {
        if (out->entries[i].epoch > (uint64_t)epoch) {
            snprintf(errmsg, errlen, "entry from a future epoch");
            msg_append_free(out);
            return BZ_EINVAL;
        }
    }
    out->epoch = (uint64_t)epoch;
    out->leader = (int)leader;
    out->prev = prev;
    out->prev_epoch = (uint64_t)prev_epoch;
    out->start_last = start_last;
    return 0;
}

void msg_append_free(struct msg_append *m)
{
    free(m->entries);
    m->entries = NULL;
    m->n = 0;
}

json_t *msg_inval_to_json(const struct msg_inval *m)
{
    return json_pack("{s:s,s:I}", "name", m->name, "version", (json_int_t)m->version);
}

int msg_inval_from_json(const json_t *obj, struct msg_inval *out, char *errmsg, size_t errlen)
{
    static const char *const keys[] = {"name", "version"};
    json_int_t version;
    if (trade_check_fields(obj, keys, 2, errmsg, errlen) ||
        msg__int(obj, "version", 0, MSG__EPOCH_MAX, &version, errmsg, errlen))
        return BZ_EINVAL;
    const json_t *name = json_object_get(obj, "name");
    if (!json_is_string(name) ||
        !stock_name_valid(json_string_value(name), json_string_length(name))) {
        snprintf(errmsg, errlen, "name must be a valid stock name");
        return BZ_EINVAL;
    }
    memcpy(out->name, json_string_value(name), json_string_length(name) + 1);
    out->version = (uint64_t)version;
    return 0;
}
