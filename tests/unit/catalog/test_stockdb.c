/*
 * Unit tests for src/catalog/stockdb.c: seeding, trades applied exactly once
 * per request id, overflow checks, durability, restocking. Every test gets
 * its own temporary directory with catalog.db and stocks.csv.
 */
#include "unit.h"

#include <pthread.h>

#include "error.h"
#include "stockdb.h"

static const char default_csv[] = "name,price,quantity\n"
                                  "GameStart,15.99,100\n"
                                  "RottenFishCo,4.25,100\n"
                                  "BoarCo,0,5\n";

struct fixture {
    char dir[256];
    char db_path[512];
    char csv_path[512];
    struct stockdb *db;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    unit_tmpdir_make(f->dir, sizeof f->dir);
    snprintf(f->db_path, sizeof f->db_path, "%s/catalog.db", f->dir);
    unit_write_file(f->dir, "stocks.csv", default_csv, f->csv_path, sizeof f->csv_path);
    char errmsg[256] = "";
    if (stockdb_open(&f->db, f->db_path, f->csv_path, errmsg, sizeof errmsg) != 0)
        fail_msg("stockdb_open: %s", errmsg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    stockdb_close(f->db);
    unit_tmpdir_remove(f->dir);
    free(f);
    return 0;
}

/* Reopens the database, with a different CSV that must not be read again. */
static void reopen(struct fixture *f)
{
    char csv[512], errmsg[256] = "";
    unit_write_file(f->dir, "other.csv", "name,price,quantity\nOther,1,1\n", csv, sizeof csv);
    stockdb_close(f->db);
    f->db = NULL;
    if (stockdb_open(&f->db, f->db_path, csv, errmsg, sizeof errmsg) != 0)
        fail_msg("reopen: %s", errmsg);
}

static struct trade mk(const char *rid, const char *name, enum trade_type type, int64_t qty)
{
    struct trade t = {.type = type, .quantity = qty};
    snprintf(t.request_id, sizeof t.request_id, "%s", rid);
    snprintf(t.name, sizeof t.name, "%s", name);
    return t;
}

static int64_t qty(struct fixture *f, const char *name)
{
    struct stock s;
    assert_int_equal(stockdb_lookup(f->db, name, &s), 0);
    return s.quantity;
}

/* ---------------------------------------------------------------- seeding */

static void test_seed_from_csv(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(stockdb_count(f->db), 3);
    static const struct {
        const char *name;
        double price;
        int64_t quantity;
    } want[] = {{"GameStart", 15.99, 100}, {"RottenFishCo", 4.25, 100}, {"BoarCo", 0, 5}};
    for (size_t i = 0; i < UNIT_COUNT(want); i++) {
        struct stock s;
        assert_int_equal(stockdb_lookup(f->db, want[i].name, &s), 0);
        assert_string_equal(s.name, want[i].name);
        assert_true(s.price == want[i].price);
        assert_int_equal(s.quantity, want[i].quantity);
    }
    struct stock s;
    assert_int_equal(stockdb_lookup(f->db, "gamestart", &s), BZ_ENOTFOUND); /* case-sensitive */
    assert_int_equal(stockdb_lookup(f->db, "Nope", &s), BZ_ENOTFOUND);
    assert_int_equal(stockdb_lookup(f->db, "", &s), BZ_ENOTFOUND);
    /* stockdb_index: the name-order position that stockdb_get_at takes. */
    size_t i = 99;
    assert_int_equal(stockdb_index(f->db, "RottenFishCo", &i), 0);
    assert_int_equal(i, 2); /* BoarCo, GameStart, RottenFishCo */
    stockdb_get_at(f->db, i, &s);
    assert_string_equal(s.name, "RottenFishCo");
    assert_int_equal(stockdb_index(f->db, "BoarCo", &i), 0);
    assert_int_equal(i, 0);
    assert_int_equal(stockdb_index(f->db, "Nope", &i), BZ_ENOTFOUND);
    assert_int_equal(i, 0); /* untouched on failure */
}

static void test_seed_tolerates_crlf_comments_blank_lines(void **state)
{
    struct fixture *f = *state;
    char csv[512], path[512], errmsg[256] = "";
    struct stockdb *db = NULL;
    unit_write_file(f->dir, "crlf.csv",
                    "name,price,quantity\r\n# a comment\r\n\r\nA,1.5,10\r\nB,2,0\r\n\nC,3,1", csv,
                    sizeof csv);
    snprintf(path, sizeof path, "%s/crlf.db", f->dir);
    if (stockdb_open(&db, path, csv, errmsg, sizeof errmsg) != 0)
        fail_msg("CSV refused: %s", errmsg);
    assert_int_equal(stockdb_count(db), 3);
    struct stock s;
    assert_int_equal(stockdb_lookup(db, "C", &s), 0);
    assert_int_equal(s.quantity, 1);
    assert_int_equal(stockdb_lookup(db, "B", &s), 0);
    assert_int_equal(s.quantity, 0);
    stockdb_close(db);
}

static void test_seed_bad_csv(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *what, *csv;
        int line; /* 0: no line expected in the message */
    } cases[] = {
        {"bad name", "name,price,quantity\nA,1,1\nGame Start,1,100\n", 3},
        {"name too long",
         "name,price,quantity\n"
         "N2345678901234567890123456789012345678901234567890123456789012345,1,1\n",
         2},
        {"missing column", "name,price,quantity\nA,1\n", 2},
        {"only a name", "name,price,quantity\nA\n", 2},
        {"empty price", "name,price,quantity\nA,,5\n", 2},
        {"extra column", "name,price,quantity\nA,1,5,6\n", 2},
        {"negative quantity", "name,price,quantity\nA,1,-5\n", 2},
        {"quantity not an integer", "name,price,quantity\nA,1,5.0\n", 2},
        {"quantity with junk", "name,price,quantity\nA,1,5x\n", 2},
        {"quantity too large", "name,price,quantity\nA,1,1000000001\n", 2},
        {"price not a number", "name,price,quantity\nA,cheap,5\n", 2},
        {"negative price", "name,price,quantity\nA,-1,5\n", 2},
        {"price nan", "name,price,quantity\nA,nan,5\n", 2},
        {"price with junk", "name,price,quantity\nA,1.5$,5\n", 2},
        {"duplicate name", "name,price,quantity\nA,1,5\nA,2,6\n", 3},
        {"header only", "name,price,quantity\n", 0},
        {"empty file", "", 0},
        /* Issue 12 finding 10: the header is checked, not skipped blindly. */
        {"no header", "A,1,5\nB,2,6\n", 1},
        {"wrong header", "stock,price,qty\nA,1,5\n", 1},
        {"empty name", "name,price,quantity\n,1,5\n", 2},
        {"empty quantity", "name,price,quantity\nA,1,\n", 2},
        {"hex price", "name,price,quantity\nA,0x10,5\n", 2},
        {"exponent price", "name,price,quantity\nA,1e3,5\n", 2},
        {"inf price", "name,price,quantity\nA,inf,5\n", 2},
        {"price with sign", "name,price,quantity\nA,+1,5\n", 2},
        {"price with space", "name,price,quantity\nA, 1,5\n", 2},
        {"price dot only", "name,price,quantity\nA,1.,5\n", 2},
        {"price 10^12", "name,price,quantity\nA,1000000000000,5\n", 2},
        /* Used to be cut at 255 bytes and read as two stocks (X, then Y). */
        {"long line split in two",
         "name,price,quantity\nX,"
         "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
         "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
         "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
         "0000001,7Y,2,3\n",
         2},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        char name[32], csv[512], path[512], errmsg[512] = "", want[64];
        struct stockdb *db = NULL;
        snprintf(name, sizeof name, "bad%zu.csv", i);
        unit_write_file(f->dir, name, cases[i].csv, csv, sizeof csv);
        snprintf(path, sizeof path, "%s/bad%zu.db", f->dir, i);
        int rv = stockdb_open(&db, path, csv, errmsg, sizeof errmsg);
        if (rv == 0) {
            stockdb_close(db);
            fail_msg("%s: CSV accepted", cases[i].what);
        }
        assert_int_equal(rv, BZ_EINVAL);
        assert_null(db);
        snprintf(want, sizeof want, "%s:%d", name, cases[i].line);
        if (cases[i].line && !strstr(errmsg, want))
            fail_msg("%s: message \"%s\" does not name line %d", cases[i].what, errmsg,
                     cases[i].line);
        if (!cases[i].line && errmsg[0] == '\0')
            fail_msg("%s: refused without a message", cases[i].what);
    }
}

static void test_seed_missing_csv(void **state)
{
    struct fixture *f = *state;
    char path[512], csv[512], errmsg[256] = "";
    struct stockdb *db = NULL;
    snprintf(path, sizeof path, "%s/nocsv.db", f->dir);
    snprintf(csv, sizeof csv, "%s/missing.csv", f->dir);
    assert_int_equal(stockdb_open(&db, path, csv, errmsg, sizeof errmsg), BZ_EINVAL);
    assert_non_null(strstr(errmsg, "missing.csv"));
    /* A failed seed leaves nothing behind that blocks a later, good seed. */
    assert_int_equal(stockdb_open(&db, path, f->csv_path, errmsg, sizeof errmsg), 0);
    assert_int_equal(stockdb_count(db), 3);
    stockdb_close(db);
}

/* Issue 12 finding 10: 100,001 stocks are refused before anything is written. */
static void test_seed_stock_limit_checked_first(void **state)
{
    struct fixture *f = *state;
    char csv[512], path[512], errmsg[256] = "";
    struct stockdb *db = NULL;
    snprintf(csv, sizeof csv, "%s/many.csv", f->dir);
    FILE *out = fopen(csv, "w");
    assert_non_null(out);
    fputs("name,price,quantity\n", out);
    for (int i = 0; i <= 100000; i++)
        fprintf(out, "S%06d,1.25,%d\n", i, i % 7);
    assert_int_equal(fclose(out), 0);
    snprintf(path, sizeof path, "%s/many.db", f->dir);
    assert_int_equal(stockdb_open(&db, path, csv, errmsg, sizeof errmsg), BZ_EINVAL);
    assert_non_null(strstr(errmsg, "100000"));
    assert_non_null(strstr(errmsg, "many.csv:100002"));
    /* Nothing was written: the same database then seeds from a good CSV. */
    assert_int_equal(stockdb_open(&db, path, f->csv_path, errmsg, sizeof errmsg), 0);
    assert_int_equal(stockdb_count(db), 3);
    stockdb_close(db);

    /* Exactly 100,000 is allowed. */
    out = fopen(csv, "w");
    assert_non_null(out);
    fputs("name,price,quantity\n", out);
    for (int i = 0; i < 100000; i++)
        fprintf(out, "S%06d,1.25,%d\n", i, i % 7);
    assert_int_equal(fclose(out), 0);
    snprintf(path, sizeof path, "%s/max.db", f->dir);
    if (stockdb_open(&db, path, csv, errmsg, sizeof errmsg) != 0)
        fail_msg("100000 stocks refused: %s", errmsg);
    assert_int_equal(stockdb_count(db), 100000);
    stockdb_close(db);
}

/* ---------------------------------------------------------------- trades */

static void test_buy_and_sell(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *rid;
        enum trade_type type;
        int64_t q, after;
    } steps[] = {
        {"r:1", TRADE_BUY, 3, 97}, {"r:2", TRADE_SELL, 5, 102}, {"r:3", TRADE_BUY, 102, 0},
        {"r:4", TRADE_SELL, 1, 1}, {"r:5", TRADE_BUY, 1, 0},
    };
    uint64_t version = stockdb_version(f->db);
    for (size_t i = 0; i < UNIT_COUNT(steps); i++) {
        struct trade t = mk(steps[i].rid, "GameStart", steps[i].type, steps[i].q);
        struct stock out;
        int rv = stockdb_trade(f->db, &t, &out);
        if (rv != 0)
            fail_msg("step %zu: rv %d", i, rv);
        assert_int_equal(out.quantity, steps[i].after);
        assert_string_equal(out.name, "GameStart");
        assert_true(out.version > version); /* every change gets a new catalog version */
        version = out.version;
        assert_true(stockdb_version(f->db) == version);
        struct stock s;
        assert_int_equal(stockdb_lookup(f->db, "GameStart", &s), 0);
        assert_int_equal(s.quantity, steps[i].after);
        assert_true(s.version == version);
    }
    assert_int_equal(qty(f, "RottenFishCo"), 100); /* others untouched */
}

static void test_unknown_stock(void **state)
{
    struct fixture *f = *state;
    struct trade t = mk("r:1", "Nope", TRADE_BUY, 1);
    struct stock out;
    assert_int_equal(stockdb_trade(f->db, &t, &out), BZ_ENOTFOUND);
    assert_true(stockdb_version(f->db) == 0);
}

static void test_buy_too_many_refused_and_recorded(void **state)
{
    struct fixture *f = *state;
    struct stock out;
    struct trade big = mk("r:big", "BoarCo", TRADE_BUY, 6); /* only 5 */
    assert_int_equal(stockdb_trade(f->db, &big, &out), BZ_ECONFLICT);
    assert_int_equal(qty(f, "BoarCo"), 5);
    uint64_t v = stockdb_version(f->db);
    /* A sell makes the shares available... */
    struct trade sell = mk("r:sell", "BoarCo", TRADE_SELL, 10);
    assert_int_equal(stockdb_trade(f->db, &sell, &out), 0);
    assert_int_equal(out.quantity, 15);
    assert_true(stockdb_version(f->db) > v);
    /* ...but the retry of the refused request is refused the same way. */
    assert_int_equal(stockdb_trade(f->db, &big, &out), BZ_ECONFLICT);
    assert_int_equal(qty(f, "BoarCo"), 15);
    /* A new request id for the same trade goes through. */
    struct trade again = mk("r:big2", "BoarCo", TRADE_BUY, 6);
    assert_int_equal(stockdb_trade(f->db, &again, &out), 0);
    assert_int_equal(qty(f, "BoarCo"), 9);
}

static void test_same_request_applied_once(void **state)
{
    struct fixture *f = *state;
    struct trade t = mk("r:once", "GameStart", TRADE_BUY, 7);
    struct stock first, second;
    assert_int_equal(stockdb_trade(f->db, &t, &first), 0);
    assert_int_equal(first.quantity, 93);
    uint64_t v = stockdb_version(f->db);
    /* Other trades happen in between. */
    struct trade other = mk("r:other", "GameStart", TRADE_SELL, 50);
    assert_int_equal(stockdb_trade(f->db, &other, &second), 0);
    for (int i = 0; i < 3; i++) {
        memset(&second, 0, sizeof second);
        assert_int_equal(stockdb_trade(f->db, &t, &second), 0);
        assert_int_equal(second.quantity, first.quantity); /* the first outcome */
        assert_true(second.version == first.version);
    }
    assert_int_equal(qty(f, "GameStart"), 143); /* 100 - 7 + 50: moved once */
    assert_true(stockdb_version(f->db) == v + 1);
}

static void test_same_request_different_body(void **state)
{
    struct fixture *f = *state;
    struct trade t = mk("r:x", "GameStart", TRADE_BUY, 3);
    struct stock out;
    assert_int_equal(stockdb_trade(f->db, &t, &out), 0);
    const struct trade changed[] = {
        mk("r:x", "GameStart", TRADE_BUY, 4),
        mk("r:x", "GameStart", TRADE_SELL, 3),
        mk("r:x", "RottenFishCo", TRADE_BUY, 3),
    };
    for (size_t i = 0; i < UNIT_COUNT(changed); i++) {
        if (stockdb_trade(f->db, &changed[i], &out) != BZ_EMISMATCH)
            fail_msg("changed body %zu not refused as a mismatch", i);
    }
    assert_int_equal(qty(f, "GameStart"), 97);
    assert_int_equal(qty(f, "RottenFishCo"), 100);
    /* A refused request id reused with another body is a mismatch too. */
    struct trade big = mk("r:big", "BoarCo", TRADE_BUY, 6);
    assert_int_equal(stockdb_trade(f->db, &big, &out), BZ_ECONFLICT);
    struct trade smaller = mk("r:big", "BoarCo", TRADE_BUY, 1);
    assert_int_equal(stockdb_trade(f->db, &smaller, &out), BZ_EMISMATCH);
    assert_int_equal(qty(f, "BoarCo"), 5);
}

static void test_sell_overflow_refused(void **state)
{
    struct fixture *f = *state;
    char csv[512], path[512], errmsg[256] = "";
    struct stockdb *db = NULL;
    unit_write_file(f->dir, "huge.csv", "name,price,quantity\nHuge,1,1000000000\n", csv,
                    sizeof csv);
    snprintf(path, sizeof path, "%s/huge.db", f->dir);
    assert_int_equal(stockdb_open(&db, path, csv, errmsg, sizeof errmsg), 0);
    struct stock out, s;
    static const int64_t wrapping[] = {INT64_MAX, INT64_MAX - 1000000000 + 1, INT64_MAX / 2};
    for (size_t i = 0; i < UNIT_COUNT(wrapping); i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "r:wrap%zu", i);
        struct trade t = mk(rid, "Huge", TRADE_SELL, wrapping[i]);
        if (stockdb_trade(db, &t, &out) != BZ_ECONFLICT)
            fail_msg("sell of %lld on 1e9 shares not refused", (long long)wrapping[i]);
        assert_int_equal(stockdb_lookup(db, "Huge", &s), 0);
        assert_int_equal(s.quantity, 1000000000);
    }
    /* An ordinary sell on the same stock still works. */
    struct trade ok = mk("r:ok", "Huge", TRADE_SELL, 1000000);
    assert_int_equal(stockdb_trade(db, &ok, &out), 0);
    assert_int_equal(out.quantity, 1001000000);
    stockdb_close(db);
}

/* ---------------------------------------------------------------- durability */

static void test_reopen_keeps_quantities_and_records(void **state)
{
    struct fixture *f = *state;
    struct stock out;
    struct trade buy = mk("r:buy", "GameStart", TRADE_BUY, 30);
    struct trade sell = mk("r:sell", "RottenFishCo", TRADE_SELL, 12);
    struct trade refused = mk("r:refused", "BoarCo", TRADE_BUY, 50);
    assert_int_equal(stockdb_trade(f->db, &buy, &out), 0);
    assert_int_equal(stockdb_trade(f->db, &sell, &out), 0);
    assert_int_equal(stockdb_trade(f->db, &refused, &out), BZ_ECONFLICT);
    uint64_t v = stockdb_version(f->db);

    reopen(f);
    assert_int_equal(stockdb_count(f->db), 3); /* not re-seeded from the other CSV */
    assert_int_equal(qty(f, "GameStart"), 70);
    assert_int_equal(qty(f, "RottenFishCo"), 112);
    assert_int_equal(qty(f, "BoarCo"), 5);
    assert_true(stockdb_version(f->db) == v);
    struct stock s;
    assert_int_equal(stockdb_lookup(f->db, "Other", &s), BZ_ENOTFOUND);

    /* The applied records survived: retries return the first outcome and move nothing. */
    assert_int_equal(stockdb_trade(f->db, &buy, &out), 0);
    assert_int_equal(out.quantity, 70);
    assert_int_equal(stockdb_trade(f->db, &refused, &out), BZ_ECONFLICT);
    struct trade mismatch = mk("r:sell", "RottenFishCo", TRADE_SELL, 13);
    assert_int_equal(stockdb_trade(f->db, &mismatch, &out), BZ_EMISMATCH);
    assert_int_equal(qty(f, "GameStart"), 70);
    assert_int_equal(qty(f, "RottenFishCo"), 112);

    /* New trades get versions above everything before the restart. */
    struct trade next = mk("r:next", "BoarCo", TRADE_BUY, 1);
    assert_int_equal(stockdb_trade(f->db, &next, &out), 0);
    assert_true(out.version > v);
}

/* ---------------------------------------------------------------- restock */

struct restock_log {
    int calls;
    struct stock seen[8];
};

static void restock_cb(void *arg, const struct stock *s)
{
    struct restock_log *log = arg;
    if (log->calls < 8)
        log->seen[log->calls] = *s;
    log->calls++;
}

static void test_restock(void **state)
{
    struct fixture *f = *state;
    struct stock out;
    struct trade drain_boar = mk("r:1", "BoarCo", TRADE_BUY, 5);
    struct trade drain_fish = mk("r:2", "RottenFishCo", TRADE_BUY, 100);
    assert_int_equal(stockdb_trade(f->db, &drain_boar, &out), 0);
    assert_int_equal(stockdb_trade(f->db, &drain_fish, &out), 0);
    uint64_t v = stockdb_version(f->db);

    struct restock_log log = {0};
    assert_int_equal(stockdb_restock(f->db, 50, restock_cb, &log), 2);
    assert_int_equal(log.calls, 2);
    bool boar = false, fish = false;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(log.seen[i].quantity, 50);
        assert_true(log.seen[i].version > v);
        assert_true(log.seen[i].version <= stockdb_version(f->db));
        boar |= strcmp(log.seen[i].name, "BoarCo") == 0;
        fish |= strcmp(log.seen[i].name, "RottenFishCo") == 0;
    }
    assert_true(boar && fish);
    assert_true(log.seen[0].version != log.seen[1].version);
    assert_int_equal(qty(f, "BoarCo"), 50);
    assert_int_equal(qty(f, "RottenFishCo"), 50);
    assert_int_equal(qty(f, "GameStart"), 100);

    /* Nothing at zero: nothing refilled, no callback, no new version. */
    uint64_t v2 = stockdb_version(f->db);
    memset(&log, 0, sizeof log);
    assert_int_equal(stockdb_restock(f->db, 50, restock_cb, &log), 0);
    assert_int_equal(log.calls, 0);
    assert_true(stockdb_version(f->db) == v2);

    /* A retried buy from before the restock keeps its first outcome. */
    assert_int_equal(stockdb_trade(f->db, &drain_boar, &out), 0);
    assert_int_equal(out.quantity, 0);
    assert_int_equal(qty(f, "BoarCo"), 50);

    /* The refill is durable, and a NULL callback is allowed. */
    struct trade drain_game = mk("r:3", "GameStart", TRADE_BUY, 100);
    assert_int_equal(stockdb_trade(f->db, &drain_game, &out), 0);
    assert_int_equal(stockdb_restock(f->db, 7, NULL, NULL), 1);
    reopen(f);
    assert_int_equal(qty(f, "GameStart"), 7);
    assert_int_equal(qty(f, "BoarCo"), 50);
}

/* ---------------------------------------------------------------- threads */

#define TRADE_THREADS 4
#define TRADE_EACH    40

struct trader {
    struct stockdb *db;
    int id, failures;
};

static void *trade_thread(void *p)
{
    struct trader *t = p;
    char rid[32];
    struct stock out, s;
    for (int i = 0; i < TRADE_EACH; i++) {
        snprintf(rid, sizeof rid, "t%d:%d", t->id, i);
        struct trade tr = mk(rid, "GameStart", TRADE_BUY, 1);
        if (i % 2 == 0) /* and a sell on another stock, retried */
            tr = mk(rid, "RottenFishCo", TRADE_SELL, 2);
        if (stockdb_trade(t->db, &tr, &out) != 0 || stockdb_trade(t->db, &tr, &out) != 0)
            t->failures++;
        if (stockdb_lookup(t->db, "GameStart", &s) != 0)
            t->failures++;
    }
    return NULL;
}

static void test_concurrent_trades(void **state)
{
    struct fixture *f = *state;
    pthread_t th[TRADE_THREADS];
    struct trader tr[TRADE_THREADS];
    for (int i = 0; i < TRADE_THREADS; i++) {
        tr[i] = (struct trader){f->db, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, trade_thread, &tr[i]), 0);
    }
    for (int i = 0; i < TRADE_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(tr[i].failures, 0);
    }
    assert_int_equal(qty(f, "GameStart"), 100 - TRADE_THREADS * TRADE_EACH / 2);
    assert_int_equal(qty(f, "RottenFishCo"), 100 + 2 * TRADE_THREADS * TRADE_EACH / 2);
    assert_true(stockdb_version(f->db) == TRADE_THREADS * TRADE_EACH);
}

/* ---------------------------------------------------------------- batches and the journal */

static void test_batch_numbers_follow_execution(void **state)
{
    struct fixture *f = *state;
    /* BoarCo starts at 5. */
    struct trade batch[] = {
        mk("r:1", "BoarCo", TRADE_BUY, 3),  mk("r:2", "BoarCo", TRADE_BUY, 3),
        mk("r:3", "BoarCo", TRADE_SELL, 1), mk("r:4", "Nope", TRADE_BUY, 1),
        mk("r:5", "BoarCo", TRADE_BUY, 3),  mk("r:1", "BoarCo", TRADE_BUY, 3),
    };
    static const struct {
        int status;
        int64_t number, quantity;
    } want[] = {{0, 0, 2}, {BZ_ECONFLICT, -1, 0}, {0, 1, 3}, {BZ_ENOTFOUND, -1, 0}, {0, 2, 0},
                {0, 0, 2}};
    struct stockdb_outcome out[UNIT_COUNT(batch)];
    assert_int_equal(stockdb_execute(f->db, batch, UNIT_COUNT(batch), out, 0), 0);
    for (size_t i = 0; i < UNIT_COUNT(batch); i++) {
        if (out[i].status != want[i].status || out[i].number != want[i].number)
            fail_msg("trade %zu: status %d number %lld, want %d %lld", i, out[i].status,
                     (long long)out[i].number, want[i].status, (long long)want[i].number);
        if (want[i].status == 0)
            assert_int_equal(out[i].stock.quantity, want[i].quantity);
    }
    assert_int_equal(qty(f, "BoarCo"), 0);

    /* The journal holds the applied trades in execution order, gap-free from 0. */
    struct order *j;
    size_t n;
    int64_t end;
    char errmsg[200];
    assert_int_equal(stockdb_journal(f->db, 0, 8, &j, &n, &end, errmsg, sizeof errmsg), 0);
    assert_int_equal(n, 3);
    assert_int_equal(end, 3);
    static const char *const rids[] = {"r:1", "r:3", "r:5"};
    int64_t replay = 5;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(j[i].number, (int64_t)i);
        assert_string_equal(j[i].trade.request_id, rids[i]);
        replay += j[i].trade.type == TRADE_BUY ? -j[i].trade.quantity : j[i].trade.quantity;
        assert_true(replay >= 0);
    }
    assert_int_equal(replay, 0);
    free(j);

    /* A cursor at the end reads nothing; past it is refused (foreign data). */
    assert_int_equal(stockdb_journal(f->db, 3, 8, &j, &n, &end, errmsg, sizeof errmsg), 0);
    assert_int_equal(n, 0);
    assert_null(j);
    assert_int_equal(stockdb_journal(f->db, 4, 8, &j, &n, &end, errmsg, sizeof errmsg), BZ_ESTALE);
    assert_null(j);
    /* A page starts anywhere and is bounded. */
    assert_int_equal(stockdb_journal(f->db, 1, 1, &j, &n, &end, errmsg, sizeof errmsg), 0);
    assert_int_equal(n, 1);
    assert_string_equal(j[0].trade.request_id, "r:3");
    free(j);

    /* Numbers survive a restart and continue. */
    reopen(f);
    struct trade more = mk("r:6", "GameStart", TRADE_SELL, 1);
    struct stockdb_outcome o;
    assert_int_equal(stockdb_execute(f->db, &more, 1, &o, 0), 0);
    assert_int_equal(o.status, 0);
    assert_int_equal(o.number, 3);
}

static void test_request_ids_forgotten_after_window(void **state)
{
    struct fixture *f = *state;
    /* 200 refused orders with fresh ids and 10 applied ones. */
    for (int i = 0; i < 200; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "k:refused-%d", i);
        struct trade t = mk(rid, "BoarCo", TRADE_BUY, 1000);
        struct stockdb_outcome o;
        assert_int_equal(stockdb_execute(f->db, &t, 1, &o, 0), 0);
        assert_int_equal(o.status, BZ_ECONFLICT);
    }
    for (int i = 0; i < 10; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "k:applied-%d", i);
        struct trade t = mk(rid, "GameStart", TRADE_BUY, 1);
        struct stockdb_outcome o;
        assert_int_equal(stockdb_execute(f->db, &t, 1, &o, 0), 0);
        assert_int_equal(o.number, i);
    }
    assert_int_equal(stockdb_applied_rows(f->db), 210);

    /* Within the window a retry is still answered from the record. */
    struct trade retry = mk("k:refused-7", "BoarCo", TRADE_BUY, 1000);
    struct stockdb_outcome o;
    assert_int_equal(stockdb_execute(f->db, &retry, 1, &o, 0), 0);
    assert_int_equal(o.status, BZ_ECONFLICT);
    assert_int_equal(stockdb_applied_rows(f->db), 210);

    /* Past it, refusals are forgotten; journal entries only once committed (below 6). */
    stockdb_set_window(f->db, 0);
    assert_int_equal(stockdb_execute(f->db, NULL, 0, &o, 6), 0);
    assert_int_equal(stockdb_applied_rows(f->db), 4);
    struct order *j;
    size_t n;
    int64_t end;
    char errmsg[200];
    assert_int_equal(stockdb_journal(f->db, 6, 8, &j, &n, &end, errmsg, sizeof errmsg), 0);
    assert_int_equal(n, 4);
    assert_int_equal(end, 10);
    free(j);
    assert_int_equal(stockdb_journal(f->db, 5, 8, &j, &n, &end, errmsg, sizeof errmsg), BZ_ESTALE);
    free(j);
    /* Numbering goes on after the clean-up, and across a restart. */
    reopen(f);
    assert_int_equal(stockdb_applied_rows(f->db), 4);
    struct trade next = mk("k:after", "GameStart", TRADE_SELL, 1);
    assert_int_equal(stockdb_execute(f->db, &next, 1, &o, 0), 0);
    assert_int_equal(o.number, 10);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_seed_from_csv),
        T(test_seed_tolerates_crlf_comments_blank_lines),
        T(test_seed_bad_csv),
        T(test_seed_missing_csv),
        T(test_seed_stock_limit_checked_first),
        T(test_buy_and_sell),
        T(test_unknown_stock),
        T(test_buy_too_many_refused_and_recorded),
        T(test_same_request_applied_once),
        T(test_same_request_different_body),
        T(test_sell_overflow_refused),
        T(test_reopen_keeps_quantities_and_records),
        T(test_restock),
        T(test_concurrent_trades),
        T(test_batch_numbers_follow_execution),
        T(test_request_ids_forgotten_after_window),
    };
    return cmocka_run_group_tests_name("unit.catalog.stockdb", tests, NULL, NULL);
}
