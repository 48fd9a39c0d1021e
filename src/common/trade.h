/*
 * trade.h - the order/trade request that travels front-end -> order leader
 * -> catalog, and its strict validation (SPEC §2).
 *
 * One parser serves all three services so a body means the same thing
 * everywhere: exactly the fields name, type and quantity (plus request_id on
 * internal hops), a valid stock name, type "buy" or "sell", and an integer
 * quantity in 1..1000000. Not for order numbering or storage.
 */
#ifndef BZ_TRADE_H
#define BZ_TRADE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "util.h"

#define TRADE_QUANTITY_MAX   1000000
#define TRADE_REQUEST_ID_MAX 80 /* "k:" + a 64-byte Idempotency-Key fits */
#define IDEMPOTENCY_KEY_MAX  64

enum trade_type { TRADE_BUY = 0, TRADE_SELL = 1 };

struct trade {
    char request_id[TRADE_REQUEST_ID_MAX + 1]; /* "" on the public API */
    char name[STOCK_NAME_MAX + 1];
    enum trade_type type;
    int64_t quantity;
};

/* An entry of the order log: a trade with its transaction number. */
struct order {
    int64_t number;
    uint64_t epoch; /* epoch of the leader that created the entry */
    struct trade trade;
};

/*
 * What became of an order submitted to the leader: status 0 with its
 * transaction number, or a BZ_E* code with a message for the client (and,
 * for BZ_ENOTLEADER, the leader's id when known, else 0).
 */
struct trade_outcome {
    int status;
    int64_t number;
    int leader;
    char message[200];
};

/*
 * How orders handed in together ended: out[0..n-1], one outcome per order in
 * their order. Called exactly once, on whatever thread finished them; must not
 * block.
 */
typedef void (*trade_outcomes_fn)(void *arg, const struct trade_outcome *out, size_t n);

/*
 * Validates a decoded JSON body. With `with_request_id`, a "request_id"
 * string field is required; without it, it is refused like any other extra
 * field. Returns 0, or BZ_EINVAL with a message for the client in errmsg.
 */
int trade_from_json(const json_t *obj, bool with_request_id, struct trade *out, char *errmsg,
                    size_t errlen);

/*
 * The strict-shape check shared by every decoder: obj must be a JSON object with
 * no members other than keys[0..nkeys-1]. 0, or BZ_EINVAL with errmsg set.
 */
int trade_check_fields(const json_t *obj, const char *const *keys, size_t nkeys, char *errmsg,
                       size_t errlen);

/*
 * trade_from_json without the check for unknown members, for messages that carry
 * a trade among members of their own (a replication entry). The caller checks
 * the members.
 */
int trade_from_members(const json_t *obj, bool with_request_id, struct trade *out, char *errmsg,
                       size_t errlen);

/* The trade as JSON (with request_id when it is non-empty). New reference. */
json_t *trade_to_json(const struct trade *t);

const char *trade_type_name(enum trade_type type);
/* "buy" or "sell" -> type; 0 or BZ_EINVAL. */
int trade_type_parse(const char *s, enum trade_type *out);

/* 1-64 printable ASCII bytes (0x21..0x7e, and spaces only inside). */
bool idempotency_key_valid(const char *key);
/* Printable ASCII, 1..TRADE_REQUEST_ID_MAX bytes. */
bool request_id_valid(const char *id);

/* Same request id, stock, type and quantity. */
bool trade_same(const struct trade *a, const struct trade *b);

#endif
