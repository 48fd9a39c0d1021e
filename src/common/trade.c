#include "trade.h"

#include <stdio.h>
#include <string.h>

#include "error.h"

const char *trade_type_name(enum trade_type type)
{
    return type == TRADE_BUY ? "buy" : "sell";
}

int trade_type_parse(const char *s, enum trade_type *out)
{
    if (strcmp(s, "buy") == 0)
        *out = TRADE_BUY;
    else if (strcmp(s, "sell") == 0)
        *out = TRADE_SELL;
    else
        return BZ_EINVAL;
    return 0;
}

static bool trade__printable(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

bool idempotency_key_valid(const char *key)
{
    /* HTTP strips spaces around header values, so they cannot be part of a key. */
    size_t n = strlen(key);
    return trade__printable(key, 1, IDEMPOTENCY_KEY_MAX) && key[0] != ' ' && key[n - 1] != ' ';
}

bool request_id_valid(const char *id)
{
    return trade__printable(id, 1, TRADE_REQUEST_ID_MAX);
}

int trade_check_fields(const json_t *obj, const char *const *keys, size_t nkeys, char *errmsg,
                       size_t errlen)
{
    const char *key;
    json_t *value;
    if (!json_is_object(obj)) {
        snprintf(errmsg, errlen, "expected a JSON object");
        return BZ_EINVAL;
    }
    json_object_foreach((json_t *)obj, key, value)
    {
        size_t i = 0;
        while (i < nkeys && strcmp(key, keys[i]) != 0)
            i++;
        if (i == nkeys) {
            snprintf(errmsg, errlen, "unknown field '%.40s'", key);
            return BZ_EINVAL;
        }
    }
    return 0;
}

int trade_from_json(const json_t *obj, bool with_request_id, struct trade *out, char *errmsg,
                    size_t errlen)
{
    static const char *const fields[] = {"name", "type", "quantity", "request_id"};
    memset(out, 0, sizeof *out);
    if (trade_check_fields(obj, fields, with_request_id ? 4 : 3, errmsg, errlen) != 0)
        return BZ_EINVAL;
    return trade_from_members(obj, with_request_id, out, errmsg, errlen);
}

int trade_from_members(const json_t *obj, bool with_request_id, struct trade *out, char *errmsg,
                       size_t errlen)
{
    memset(out, 0, sizeof *out);
    const json_t *name = json_object_get(obj, "name");
    const json_t *type = json_object_get(obj, "type");
    const json_t *qty = json_object_get(obj, "quantity");
    if (!name || !type || !qty) {
        snprintf(errmsg, errlen, "missing field '%s'",
                 !name   ? "name"
                 : !type ? "type"
                         : "quantity");
        return BZ_EINVAL;
    }
    if (!json_is_string(name) ||
        !stock_name_valid(json_string_value(name), json_string_length(name))) {
        snprintf(errmsg, errlen, "name must be a string of 1-64 characters [A-Za-z0-9_.-]");
        return BZ_EINVAL;
    }
    if (!json_is_string(type) || json_string_length(type) != strlen(json_string_value(type)) ||
        trade_type_parse(json_string_value(type), &out->type) != 0) {
        snprintf(errmsg, errlen, "type must be \"buy\" or \"sell\"");
        return BZ_EINVAL;
    }
    /* json_is_integer is false for 3.0 and for numbers written with an exponent. */
    if (!json_is_integer(qty) || json_integer_value(qty) < 1 ||
        json_integer_value(qty) > TRADE_QUANTITY_MAX) {
        snprintf(errmsg, errlen, "quantity must be an integer in 1..%d", TRADE_QUANTITY_MAX);
        return BZ_EINVAL;
    }
    if (with_request_id) {
        const json_t *rid = json_object_get(obj, "request_id");
        if (!json_is_string(rid) || json_string_length(rid) != strlen(json_string_value(rid)) ||
            !request_id_valid(json_string_value(rid))) {
            snprintf(errmsg, errlen, "request_id must be 1-%d printable characters",
                     TRADE_REQUEST_ID_MAX);
            return BZ_EINVAL;
        }
        memcpy(out->request_id, json_string_value(rid), json_string_length(rid) + 1);
    }
    memcpy(out->name, json_string_value(name), json_string_length(name) + 1);
    out->quantity = json_integer_value(qty);
    return 0;
}

json_t *trade_to_json(const struct trade *t)
{
    json_t *obj = json_pack("{s:s,s:s,s:I}", "name", t->name, "type", trade_type_name(t->type),
                            "quantity", (json_int_t)t->quantity);
    if (t->request_id[0])
        json_object_set_new(obj, "request_id", json_string(t->request_id));
    return obj;
}

bool trade_same(const struct trade *a, const struct trade *b)
{
    return strcmp(a->request_id, b->request_id) == 0 && strcmp(a->name, b->name) == 0 &&
           a->type == b->type && a->quantity == b->quantity;
}
