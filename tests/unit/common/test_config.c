/* Unit tests for src/common/config.c: defaults, the INI file, --set, the environment. */
#include "unit.h"

#include <jansson.h>

#include "config.h"
#include "error.h"

static char dir[256];

static int group_setup(void **state)
{
    (void)state;
    unit_tmpdir_make(dir, sizeof dir);
    unsetenv("BAZAAR_SECRET");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    unit_tmpdir_remove(dir);
    return 0;
}

/* Writes text to a file named after the test, then loads it over the defaults. */
static int load_text(struct bz_config *cfg, const char *name, const char *text, char *errmsg,
                     size_t errlen)
{
    char path[512];
    unit_write_file(dir, name, text, path, sizeof path);
    config_init_defaults(cfg);
    errmsg[0] = '\0';
    return config_load_file(cfg, path, errmsg, errlen);
}

/* ---------------------------------------------------------------- defaults, full file */

/*
 * The defaults SPEC §5 relies on. Tuning knobs (thread counts, timeouts) are
 * only checked for sanity here; test_shipped_config_documents_defaults pins
 * them to config/bazaar.conf, which documents them.
 */
static void test_defaults(void **state)
{
    (void)state;
    struct bz_config cfg;
    memset(&cfg, 0x5a, sizeof cfg);
    config_init_defaults(&cfg);
    assert_string_equal(cfg.data_dir, "./data");
    assert_string_equal(cfg.secret, "dev-secret");
    assert_string_equal(cfg.log_level, "info");
    assert_string_equal(cfg.catalog_listen, "127.0.0.1:9001"); /* loopback only */
    assert_string_equal(cfg.frontend_listen, "127.0.0.1:8080");
    assert_string_equal(cfg.stocks_csv, "config/stocks.csv");
    assert_int_equal(cfg.restock_interval_s, 0);
    assert_int_equal(cfg.restock_to, 100);
    assert_true(cfg.cache_on);
    assert_int_equal(cfg.cache_size, 8);
    assert_int_equal(cfg.mode, CONFIG_MODE_PRIMARY_BACKUP);
    assert_int_equal(cfg.write_quorum, CONFIG_QUORUM_MAJORITY);
    assert_int_equal(cfg.replica_count, 0);
    assert_null(config_replica_find(&cfg, 1));
    assert_true(cfg.call_timeout_ms >= 10);
    assert_true(cfg.idle_timeout_s >= 1);
    assert_true(cfg.health_interval_ms >= 10);
    assert_true(cfg.catalog_threads >= 1 && cfg.frontend_threads >= 1 && cfg.order_threads >= 1);
}

static const char full_ini[] =
    "; a full file in the shape of SPEC section 5\n"
    "[cluster]\n"
    "data_dir = /var/lib/bazaar     ; catalog.db and order-<id>.db live here\n"
    "secret = s3cret-from-file      ; BAZAAR_SECRET overrides it\n"
    "log_level = debug\n"
    "call_timeout_ms = 1500\n"
    "idle_timeout_s = 5\n"
    "\n"
    "[catalog]\n"
    "listen = 127.0.0.1:9501\n"
    "stocks = /etc/bazaar/stocks.csv ; read only when catalog.db is new\n"
    "restock_interval_s = 10        ; 0 = off\n"
    "restock_to = 250\n"
    "threads = 2\n"
    "[frontend]\n"
    "listen = 0.0.0.0:8088\n"
    "cache = off\n"
    "cache_size = 16                ; entries\n"
    "threads = 3\n"
    "health_interval_ms = 100\n"
    "[replication]\n"
    "mode = raft                    ; or primary-backup\n"
    "write_quorum = 1\n"
    "threads = 6\n"
    "[order.3]\n"
    "listen = 127.0.0.1:9603\n"
    "[order.1]\n"
    "listen = 127.0.0.1:9601\n"
    "[order.2]\n"
    "listen = 127.0.0.1:9602\n";

static void test_full_file(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256];
    int rv = load_text(&cfg, "full.conf", full_ini, errmsg, sizeof errmsg);
    if (rv)
        fail_msg("full file refused: %s", errmsg);
    assert_string_equal(cfg.data_dir, "/var/lib/bazaar");
    assert_string_equal(cfg.secret, "s3cret-from-file");
    assert_string_equal(cfg.log_level, "debug");
    assert_int_equal(cfg.call_timeout_ms, 1500);
    assert_int_equal(cfg.idle_timeout_s, 5);
    assert_string_equal(cfg.catalog_listen, "127.0.0.1:9501");
    assert_string_equal(cfg.stocks_csv, "/etc/bazaar/stocks.csv");
    assert_int_equal(cfg.restock_interval_s, 10);
    assert_int_equal(cfg.restock_to, 250);
    assert_int_equal(cfg.catalog_threads, 2);
    assert_string_equal(cfg.frontend_listen, "0.0.0.0:8088");
    assert_false(cfg.cache_on);
    assert_int_equal(cfg.cache_size, 16);
    assert_int_equal(cfg.frontend_threads, 3);
    assert_int_equal(cfg.health_interval_ms, 100);
    assert_int_equal(cfg.mode, CONFIG_MODE_RAFT);
    assert_int_equal(cfg.write_quorum, CONFIG_QUORUM_ONE);
    assert_int_equal(cfg.order_threads, 6);
    /* [order.N] sections come out sorted by id whatever the file order. */
    assert_int_equal(cfg.replica_count, 3);
    for (int i = 0; i < 3; i++) {
        char want[32];
        snprintf(want, sizeof want, "127.0.0.1:960%d", i + 1);
        assert_int_equal(cfg.replicas[i].id, i + 1);
        assert_string_equal(cfg.replicas[i].listen, want);
        assert_ptr_equal(config_replica_find(&cfg, i + 1), &cfg.replicas[i]);
    }
    assert_null(config_replica_find(&cfg, 4));
    assert_null(config_replica_find(&cfg, 0));
    /* raft mode needs a raft_listen on every replica, which this file does not give. */
    assert_int_equal(config_validate(&cfg, errmsg, sizeof errmsg), BZ_EINVAL);
    assert_non_null(strstr(errmsg, "raft_listen is required"));
    cfg.mode = CONFIG_MODE_PRIMARY_BACKUP;
    assert_int_equal(config_validate(&cfg, errmsg, sizeof errmsg), 0);
}

/* Keys left out of the file keep their defaults. */
static void test_partial_file_keeps_defaults(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256];
    assert_int_equal(
        load_text(&cfg, "partial.conf", "[frontend]\ncache_size = 2\n", errmsg, sizeof errmsg), 0);
    assert_int_equal(cfg.cache_size, 2);
    assert_true(cfg.cache_on);
    assert_string_equal(cfg.secret, "dev-secret");
    assert_int_equal(cfg.replica_count, 0);
}

static void test_shipped_config_loads(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256] = "";
    config_init_defaults(&cfg);
    int rv = config_load_file(&cfg, BAZAAR_SOURCE_DIR "/config/bazaar.conf", errmsg, sizeof errmsg);
    if (rv)
        fail_msg("config/bazaar.conf refused: %s", errmsg);
    assert_int_equal(config_validate(&cfg, errmsg, sizeof errmsg), 0);
    assert_true(cfg.replica_count >= 1);
    assert_string_equal(cfg.data_dir, "./data"); /* the inline comment is not part of the value */
}

/* config/bazaar.conf is the documentation: every value it shows is the built-in default. */
static void test_shipped_config_documents_defaults(void **state)
{
    (void)state;
    struct bz_config defaults, shipped;
    char errmsg[256] = "";
    config_init_defaults(&defaults);
    config_init_defaults(&shipped);
    assert_int_equal(
        config_load_file(&shipped, BAZAAR_SOURCE_DIR "/config/bazaar.conf", errmsg, sizeof errmsg),
        0);
    shipped.replica_count = 0; /* replicas have no defaults */
    struct strbuf a, b;
    strbuf_init(&a, 1 << 16);
    strbuf_init(&b, 1 << 16);
    assert_int_equal(config_dump_json(&defaults, &a), 0);
    assert_int_equal(config_dump_json(&shipped, &b), 0);
    char da[2048], db[2048]; /* copies, so the buffers are freed before a failure jumps out */
    snprintf(da, sizeof da, "%s", a.data);
    snprintf(db, sizeof db, "%s", b.data);
    strbuf_free(&a);
    strbuf_free(&b);
    if (strcmp(da, db) != 0)
        fail_msg("defaults and config/bazaar.conf differ:\n  defaults: %s\n  file:     %s", da, db);
    assert_string_equal(defaults.secret, shipped.secret);
}

/* ---------------------------------------------------------------- errors in the file */

struct bad_file {
    const char *what;
    const char *text;
    int line;           /* the line the message must name */
    const char *needle; /* a piece of the message */
};

static const struct bad_file bad_files[] = {
    {"unknown section", "[cluster]\ndata_dir = x\n\n[bogus]\nkey = 1\n", 5, "bogus"},
    {"unknown key", "[frontend]\ncache = on\ncache_sise = 4\n", 3, "cache_sise"},
    {"key in the wrong section", "[catalog]\ncache_size = 4\n", 2, "cache_size"},
    {"key before any section", "cache_size = 4\n", 1, "cache_size"},
    {"int below range", "[frontend]\ncache_size = 0\n", 2, "cache_size"},
    {"negative int", "[frontend]\ncache_size = -1\n", 2, "cache_size"},
    {"int above range", "[frontend]\nthreads = 257\n", 2, "threads"},
    {"int not a number", "[cluster]\ncall_timeout_ms = soon\n", 2, "call_timeout_ms"},
    {"int with a unit", "[cluster]\ncall_timeout_ms = 100ms\n", 2, "call_timeout_ms"},
    {"int as a float", "[catalog]\nrestock_to = 1e3\n", 2, "restock_to"},
    {"int overflow", "[catalog]\nrestock_to = 99999999999999999999999\n", 2, "restock_to"},
    {"int min bound", "[cluster]\ncall_timeout_ms = 9\n", 2, "call_timeout_ms"},
    {"bad bool", "[frontend]\ncache = maybe\n", 2, "cache"},
    {"bad mode", "[replication]\nmode = paxos\n", 2, "mode"},
    {"bad quorum", "[replication]\nwrite_quorum = 2\n", 2, "write_quorum"},
    {"bad log level", "[cluster]\nlog_level = loud\n", 2, "log_level"},
    {"empty string", "[cluster]\nsecret =\n", 2, "secret"},
    {"replica id 0", "[order.0]\nlisten = 127.0.0.1:1\n", 2, "order.0"},
    {"replica id not a number", "[order.x]\nlisten = 127.0.0.1:1\n", 2, "order.x"},
    {"replica id negative", "[order.-1]\nlisten = 127.0.0.1:1\n", 2, "order.-1"},
    {"replica unknown key", "[order.1]\nlisten = 127.0.0.1:1\nport = 9\n", 3, "port"},
    {"replica empty listen", "[order.1]\nlisten =\n", 2, "listen"},
    {"replica empty raft_listen", "[order.1]\nraft_listen =\n", 2, "raft_listen"},
    {"snapshot threshold too low", "[replication]\nsnapshot_threshold = 15\n", 2,
     "snapshot_threshold"},
    {"snapshot trailing negative", "[replication]\nsnapshot_trailing = -1\n", 2,
     "snapshot_trailing"},
    {"syntax error", "[cluster]\ndata_dir = x\nthis is not ini\n", 3, NULL},
    {"unclosed section", "[cluster\ndata_dir = x\n", 1, NULL},
};

static void test_bad_files(void **state)
{
    (void)state;
    for (size_t i = 0; i < UNIT_COUNT(bad_files); i++) {
        const struct bad_file *b = &bad_files[i];
        struct bz_config cfg;
        char name[32], errmsg[512], want[64];
        snprintf(name, sizeof name, "bad%zu.conf", i);
        int rv = load_text(&cfg, name, b->text, errmsg, sizeof errmsg);
        if (rv != BZ_EINVAL)
            fail_msg("%s: accepted (rv %d)", b->what, rv);
        snprintf(want, sizeof want, "%s:%d:", name, b->line);
        if (!strstr(errmsg, want))
            fail_msg("%s: message \"%s\" does not name line %d", b->what, errmsg, b->line);
        if (b->needle && !strstr(errmsg, b->needle))
            fail_msg("%s: message \"%s\" does not mention %s", b->what, errmsg, b->needle);
    }
}

/*
 * With two mistakes in a file, the message names the first line and that
 * line's problem, not the line of one and the detail of the other.
 */
static void test_two_errors_message_matches_line(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[512];
    int rv = load_text(&cfg, "two.conf", "[frontend]\ncache_sise = 4\n[cluster]\ndata_dirr = /x\n",
                       errmsg, sizeof errmsg);
    assert_int_equal(rv, BZ_EINVAL);
    if (!strstr(errmsg, "two.conf:2:") || !strstr(errmsg, "cache_sise") ||
        strstr(errmsg, "data_dirr"))
        fail_msg("message \"%s\" should name line 2 and cache_sise only", errmsg);
}

static void test_missing_file(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256] = "", path[512];
    snprintf(path, sizeof path, "%s/does-not-exist.conf", dir);
    config_init_defaults(&cfg);
    assert_int_equal(config_load_file(&cfg, path, errmsg, sizeof errmsg), BZ_EINVAL);
    assert_non_null(strstr(errmsg, "does-not-exist.conf"));
}

static void test_string_too_long(void **state)
{
    (void)state;
    char text[600];
    char longdir[CONFIG_PATH_MAX + 1];
    memset(longdir, 'd', sizeof longdir - 1);
    longdir[sizeof longdir - 1] = '\0'; /* 256 bytes: one too many */
    snprintf(text, sizeof text, "[cluster]\ndata_dir = %s\n", longdir);
    struct bz_config cfg;
    char errmsg[512];
    assert_int_equal(load_text(&cfg, "long.conf", text, errmsg, sizeof errmsg), BZ_EINVAL);
    /* The same through --set, which has no line-length limit of its own. */
    config_init_defaults(&cfg);
    assert_int_equal(config_set(&cfg, "cluster", "data_dir", longdir, errmsg, sizeof errmsg),
                     BZ_EINVAL);
    assert_string_equal(cfg.data_dir, "./data");
    longdir[CONFIG_PATH_MAX - 1] = '\0'; /* CONFIG_PATH_MAX - 1 bytes fit */
    assert_int_equal(config_set(&cfg, "cluster", "data_dir", longdir, errmsg, sizeof errmsg), 0);
    assert_int_equal(strlen(cfg.data_dir), CONFIG_PATH_MAX - 1);
}

/*
 * A value of the longest allowed size (CONFIG_PATH_MAX - 1 bytes) must
 * load from the file just as it does through --set, and must not be cut short.
 */
static void test_longest_value_loads_from_file(void **state)
{
    (void)state;
    char text[600];
    char longdir[CONFIG_PATH_MAX];
    memset(longdir, 'd', sizeof longdir - 1);
    longdir[sizeof longdir - 1] = '\0';
    snprintf(text, sizeof text, "[cluster]\ndata_dir = %s\nsecret = x\n", longdir);
    struct bz_config cfg;
    char errmsg[512];
    int rv = load_text(&cfg, "long2.conf", text, errmsg, sizeof errmsg);
    if (rv != 0)
        fail_msg("longest data_dir refused from the file: %s", errmsg);
    assert_int_equal(strlen(cfg.data_dir), CONFIG_PATH_MAX - 1);
    assert_string_equal(cfg.secret, "x");
}

/* ---------------------------------------------------------------- values */

static void test_cache_switch_table(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        int want; /* 1 on, 0 off, -1 refused */
    } cases[] = {
        {"on", 1}, {"true", 1}, {"yes", 1}, {"1", 1}, {"off", 0}, {"false", 0},
        {"no", 0}, {"0", 0},    {"ON", -1}, {"", -1}, {"2", -1},  {"enabled", -1},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        struct bz_config cfg;
        char errmsg[256] = "";
        config_init_defaults(&cfg);
        cfg.cache_on = !cases[i].want;
        int rv = config_set(&cfg, "frontend", "cache", cases[i].value, errmsg, sizeof errmsg);
        if (cases[i].want < 0) {
            if (rv != BZ_EINVAL)
                fail_msg("cache = '%s' accepted", cases[i].value);
            continue;
        }
        if (rv != 0)
            fail_msg("cache = '%s' refused: %s", cases[i].value, errmsg);
        assert_int_equal(cfg.cache_on, cases[i].want);
    }
}

static void test_int_bounds_table(void **state)
{
    (void)state;
    static const struct {
        const char *section, *key, *value;
        int rv;
    } cases[] = {
        {"frontend", "cache_size", "1", 0},
        {"frontend", "cache_size", "10000000", 0},
        {"frontend", "cache_size", "10000001", BZ_EINVAL},
        {"frontend", "cache_size", "0", BZ_EINVAL},
        {"catalog", "restock_interval_s", "0", 0},
        {"catalog", "restock_interval_s", "86400", 0},
        {"catalog", "restock_interval_s", "86401", BZ_EINVAL},
        {"cluster", "call_timeout_ms", "10", 0},
        {"cluster", "call_timeout_ms", "9", BZ_EINVAL},
        {"cluster", "idle_timeout_s", "3600", 0},
        {"cluster", "idle_timeout_s", "3601", BZ_EINVAL},
        {"catalog", "threads", "+4", BZ_EINVAL},
        {"catalog", "threads", " 4", BZ_EINVAL},
        {"catalog", "threads", "4.0", BZ_EINVAL},
        {"catalog", "threads", "0x4", BZ_EINVAL},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        struct bz_config cfg;
        char errmsg[256] = "";
        config_init_defaults(&cfg);
        int rv =
            config_set(&cfg, cases[i].section, cases[i].key, cases[i].value, errmsg, sizeof errmsg);
        if (rv != cases[i].rv)
            fail_msg("[%s] %s = '%s': rv %d want %d (%s)", cases[i].section, cases[i].key,
                     cases[i].value, rv, cases[i].rv, errmsg);
    }
}

static void test_replicas_sorted_by_id(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256];
    int rv = load_text(&cfg, "order.conf",
                       "[order.2]\nlisten = 127.0.0.1:22\n"
                       "[order.10]\nlisten = 127.0.0.1:10\n[order.1]\nlisten = 127.0.0.1:1\n",
                       errmsg, sizeof errmsg);
    assert_int_equal(rv, 0);
    assert_int_equal(cfg.replica_count, 3);
    assert_int_equal(cfg.replicas[0].id, 1);
    assert_int_equal(cfg.replicas[1].id, 2);
    assert_string_equal(cfg.replicas[1].listen, "127.0.0.1:22");
    assert_int_equal(cfg.replicas[2].id, 10); /* numeric order, not string order */
}

/* [frontend.N] (SPEC §5): several front-ends share [frontend] and each has its own listen. */
static void test_several_frontends(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256];
    struct config_frontend fes[CONFIG_MAX_FRONTENDS];
    char targets[CONFIG_MAX_NOTIFY][CONFIG_ADDR_MAX];

    /* The old single form: one front-end, id 0, and it is the one invalidated. */
    assert_int_equal(
        load_text(&cfg, "one.conf", "[frontend]\nlisten = 127.0.0.1:8080\n", errmsg, sizeof errmsg),
        0);
    assert_int_equal(config_frontends(&cfg, fes), 1);
    assert_int_equal(fes[0].id, 0);
    assert_string_equal(config_frontend_listen(&cfg, 0), "127.0.0.1:8080");
    assert_null(config_frontend_listen(&cfg, 1));
    assert_int_equal(config_notify_targets(&cfg, targets, CONFIG_MAX_NOTIFY), 1);
    assert_string_equal(targets[0], "127.0.0.1:8080");

    assert_int_equal(
        load_text(&cfg, "two.conf",
                  "[frontend]\ncache_size = 3\n[frontend.2]\nlisten = 127.0.0.1:8082\n"
                  "[frontend.1]\nlisten = 127.0.0.1:8081\n[order.1]\nlisten = 127.0.0.1:1\n",
                  errmsg, sizeof errmsg),
        0);
    assert_int_equal(config_validate(&cfg, errmsg, sizeof errmsg), 0);
    assert_int_equal(cfg.cache_size, 3);
    assert_int_equal(config_frontends(&cfg, fes), 2);
    assert_int_equal(fes[0].id, 1); /* sorted by id */
    assert_string_equal(config_frontend_listen(&cfg, 2), "127.0.0.1:8082");
    assert_null(config_frontend_listen(&cfg, 0)); /* ambiguous with two */
    assert_null(config_frontend_listen(&cfg, 3));
    assert_int_equal(config_notify_targets(&cfg, targets, CONFIG_MAX_NOTIFY), 2);
    assert_string_equal(targets[0], "127.0.0.1:8081");
    assert_string_equal(targets[1], "127.0.0.1:8082");

    /* With exactly one [frontend.N], id 0 names it. */
    assert_int_equal(load_text(&cfg, "single.conf", "[frontend.4]\nlisten = 127.0.0.1:8084\n",
                               errmsg, sizeof errmsg),
                     0);
    assert_string_equal(config_frontend_listen(&cfg, 0), "127.0.0.1:8084");

    static const char *const bad[] = {
        "[frontend.0]\nlisten = 127.0.0.1:1\n",
        "[frontend.x]\nlisten = 127.0.0.1:1\n",
        "[frontend.1]\ncache = on\n", /* shared settings belong in [frontend] */
        "[frontend.1]\nlisten = \n",
    };
    for (size_t i = 0; i < UNIT_COUNT(bad); i++)
        if (load_text(&cfg, "bad.conf", bad[i], errmsg, sizeof errmsg) == 0)
            fail_msg("accepted: %s", bad[i]);
    assert_int_equal(load_text(&cfg, "badaddr.conf",
                               "[frontend.1]\nlisten = nope\n[order.1]\nlisten = 127.0.0.1:1\n",
                               errmsg, sizeof errmsg),
                     0);
    assert_int_equal(config_validate(&cfg, errmsg, sizeof errmsg), BZ_EINVAL);
    assert_non_null(strstr(errmsg, "frontend.1.listen"));
}

static void test_log_format(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256];
    config_init_defaults(&cfg);
    assert_int_equal(cfg.log_format, CONFIG_LOG_TEXT);
    assert_int_equal(config_set_option(&cfg, "cluster.log_format=json", errmsg, sizeof errmsg), 0);
    assert_int_equal(cfg.log_format, CONFIG_LOG_JSON);
    assert_int_equal(config_set_option(&cfg, "cluster.log_format=xml", errmsg, sizeof errmsg),
                     BZ_EINVAL);
}

/* Issue 12 finding 10: a key or a section given twice is refused, naming the line. */
static void test_duplicates_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *needle;
        int line;
    } cases[] = {
        {"[frontend]\ncache_size = 2\ncache_size = 3\n", "set twice", 3},
        {"[order.2]\nlisten = 127.0.0.1:2\n[order.2]\nlisten = 127.0.0.1:22\n", "twice", 3},
        {"[cluster]\nsecret = a\n[frontend]\ncache = on\n[cluster]\ndata_dir = /x\n", "twice", 5},
        {"[cluster]\n[cluster]\n", "twice", 2},
        {"[catalog]\nlisten = 127.0.0.1:1\n[order.1]\nlisten = 127.0.0.1:2\nlisten = "
         "127.0.0.1:3\n",
         "set twice", 5},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        struct bz_config cfg;
        char errmsg[256];
        if (load_text(&cfg, "dup.conf", cases[i].text, errmsg, sizeof errmsg) != BZ_EINVAL)
            fail_msg("case %zu accepted", i);
        char where[32];
        snprintf(where, sizeof where, ":%d:", cases[i].line);
        if (!strstr(errmsg, cases[i].needle) || !strstr(errmsg, where))
            fail_msg("case %zu: message \"%s\"", i, errmsg);
    }
}

static void test_too_many_replicas(void **state)
{
    (void)state;
    char text[4096] = "";
    size_t off = 0;
    /* Ids in descending order, so every insert also shifts the array. */
    for (int id = CONFIG_MAX_REPLICAS; id >= 1; id--)
        off += (size_t)snprintf(text + off, sizeof text - off,
                                "[order.%d]\nlisten = 127.0.0.1:%d\n", id, 9100 + id);
    struct bz_config cfg;
    char errmsg[512];
    assert_int_equal(load_text(&cfg, "max.conf", text, errmsg, sizeof errmsg), 0);
    assert_int_equal(cfg.replica_count, CONFIG_MAX_REPLICAS);
    for (int i = 0; i < CONFIG_MAX_REPLICAS; i++)
        assert_int_equal(cfg.replicas[i].id, i + 1);

    snprintf(text + off, sizeof text - off, "[order.99]\nlisten = 127.0.0.1:9999\n");
    assert_int_equal(load_text(&cfg, "toomany.conf", text, errmsg, sizeof errmsg), BZ_EINVAL);
    assert_non_null(strstr(errmsg, "too many replicas"));
    assert_non_null(strstr(errmsg, "toomany.conf:34:"));
    assert_int_equal(cfg.replica_count, CONFIG_MAX_REPLICAS);
}

/* ---------------------------------------------------------------- --set */

static void test_set_option_good(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256] = "";
    config_init_defaults(&cfg);
    assert_int_equal(config_set_option(&cfg, "frontend.cache_size=4", errmsg, sizeof errmsg), 0);
    assert_int_equal(cfg.cache_size, 4);
    assert_int_equal(config_set_option(&cfg, "frontend.cache=off", errmsg, sizeof errmsg), 0);
    assert_false(cfg.cache_on);
    assert_int_equal(config_set_option(&cfg, "replication.mode=raft", errmsg, sizeof errmsg), 0);
    assert_int_equal(cfg.mode, CONFIG_MODE_RAFT);
    /* The key is after the last dot before '=', so "order.N" works as a section. */
    assert_int_equal(
        config_set_option(&cfg, "order.7.listen=127.0.0.1:9107", errmsg, sizeof errmsg), 0);
    assert_int_equal(cfg.replica_count, 1);
    assert_int_equal(cfg.replicas[0].id, 7);
    assert_string_equal(cfg.replicas[0].listen, "127.0.0.1:9107");
    /* A value may itself contain '=' and '.'. */
    assert_int_equal(config_set_option(&cfg, "cluster.secret=a.b=c", errmsg, sizeof errmsg), 0);
    assert_string_equal(cfg.secret, "a.b=c");
}

static void test_set_option_bad_forms(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "frontend",
        "frontend.cache_size",
        "cache_size=4",
        "=4",
        ".cache_size=4",
        "frontend.=4",
        "frontend.cache_size=",
        "frontend.cache_size=abc",
        "frontend.cache_size=0",
        "frontend.nosuch=1",
        "nosuch.cache_size=4",
        "frontend..cache_size=4",
        "order.0.listen=127.0.0.1:1",
        "order.1.port=1",
        "a_section_name_that_is_far_too_long_to_fit_in_the_buffer_of_64_bytes.key=1",
        "frontend.a_key_name_that_is_far_too_long_to_fit_in_the_buffer_of_64_bytes=1",
    };
    for (size_t i = 0; i < UNIT_COUNT(bad); i++) {
        struct bz_config cfg, before;
        char errmsg[256] = "";
        config_init_defaults(&cfg);
        before = cfg;
        int rv = config_set_option(&cfg, bad[i], errmsg, sizeof errmsg);
        if (rv != BZ_EINVAL)
            fail_msg("--set '%s' accepted (rv %d)", bad[i], rv);
        if (errmsg[0] == '\0')
            fail_msg("--set '%s' refused without a message", bad[i]);
        assert_int_equal(cfg.cache_size, before.cache_size);
        assert_int_equal(cfg.replica_count, 0);
    }
}

/* ---------------------------------------------------------------- environment */

static void test_env_secret_override(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256];
    assert_int_equal(load_text(&cfg, "env.conf", full_ini, errmsg, sizeof errmsg), 0);
    assert_string_equal(cfg.secret, "s3cret-from-file");

    unsetenv("BAZAAR_SECRET");
    assert_int_equal(config_apply_env(&cfg, errmsg, sizeof errmsg), 0);
    assert_string_equal(cfg.secret, "s3cret-from-file");

    setenv("BAZAAR_SECRET", "", 1); /* empty: unset */
    assert_int_equal(config_apply_env(&cfg, errmsg, sizeof errmsg), 0);
    assert_string_equal(cfg.secret, "s3cret-from-file");

    setenv("BAZAAR_SECRET", "from-the-environment", 1);
    assert_int_equal(config_apply_env(&cfg, errmsg, sizeof errmsg), 0);
    assert_string_equal(cfg.secret, "from-the-environment");

    char longest[CONFIG_SECRET_MAX];
    memset(longest, 'l', sizeof longest - 1);
    longest[sizeof longest - 1] = '\0';
    setenv("BAZAAR_SECRET", longest, 1); /* 127 bytes: fits */
    assert_int_equal(config_apply_env(&cfg, errmsg, sizeof errmsg), 0);
    assert_string_equal(cfg.secret, longest);

    /* Issue 12 finding 9: 128 bytes used to be ignored silently (the cluster ran on the
     * file's secret); now it is an error that names the limit. */
    char toolong[CONFIG_SECRET_MAX + 1];
    memset(toolong, 's', sizeof toolong - 1);
    toolong[sizeof toolong - 1] = '\0';
    setenv("BAZAAR_SECRET", toolong, 1);
    errmsg[0] = '\0';
    assert_int_equal(config_apply_env(&cfg, errmsg, sizeof errmsg), BZ_EINVAL);
    assert_non_null(strstr(errmsg, "127"));
    assert_string_equal(cfg.secret, longest);
    unsetenv("BAZAAR_SECRET");
}

/* ---------------------------------------------------------------- validate, dump */

static void test_validate(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256] = "";
    config_init_defaults(&cfg);
    assert_int_equal(config_validate(&cfg, errmsg, sizeof errmsg), BZ_EINVAL);
    assert_non_null(strstr(errmsg, "replica"));

    assert_int_equal(config_set(&cfg, "order.1", "listen", "127.0.0.1:9101", errmsg, sizeof errmsg),
                     0);
    assert_int_equal(config_validate(&cfg, errmsg, sizeof errmsg), 0);

    static const struct {
        const char *section, *key, *value, *needle;
    } bad[] = {
        {"order.1", "listen", "127.0.0.1", "order.1.listen"},
        {"order.1", "listen", "127.0.0.1:0", "order.1.listen"},
        {"catalog", "listen", "nohost", "catalog.listen"},
        {"frontend", "listen", "127.0.0.1:70000", "frontend.listen"},
    };
    for (size_t i = 0; i < UNIT_COUNT(bad); i++) {
        struct bz_config c = cfg;
        assert_int_equal(
            config_set(&c, bad[i].section, bad[i].key, bad[i].value, errmsg, sizeof errmsg), 0);
        errmsg[0] = '\0';
        if (config_validate(&c, errmsg, sizeof errmsg) != BZ_EINVAL)
            fail_msg("%s.%s = %s validated", bad[i].section, bad[i].key, bad[i].value);
        if (!strstr(errmsg, bad[i].needle))
            fail_msg("message \"%s\" does not name %s", errmsg, bad[i].needle);
    }
}

/* mode = raft: every replica needs a distinct, parseable IPv4 raft_listen. */
static void test_raft_validate(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        const char *raft[3]; /* raft_listen of order.1..3; NULL = not set */
        const char *needle;  /* in the message; NULL = valid */
    } cases[] = {
        {"valid", {"127.0.0.1:9201", "127.0.0.1:9202", "127.0.0.1:9203"}, NULL},
        {"missing", {"127.0.0.1:9201", NULL, "127.0.0.1:9203"}, "order.2.raft_listen is required"},
        {"twice",
         {"127.0.0.1:9201", "127.0.0.1:9201", "127.0.0.1:9203"},
         "'127.0.0.1:9201' is also order.2.raft_listen"},
        {"same as a listen",
         {"127.0.0.1:9101", "127.0.0.1:9202", "127.0.0.1:9203"},
         "is also order.1.listen"},
        {"other replica's listen",
         {"127.0.0.1:9201", "127.0.0.1:9103", "127.0.0.1:9203"},
         "is also order.3.listen"},
        {"no port", {"127.0.0.1", "127.0.0.1:9202", "127.0.0.1:9203"}, "order.1.raft_listen"},
        {"port 0", {"127.0.0.1:0", "127.0.0.1:9202", "127.0.0.1:9203"}, "order.1.raft_listen"},
        {"host name", {"localhost:9201", "127.0.0.1:9202", "127.0.0.1:9203"}, "IPv4"},
        {"junk", {"127.0.0.1:92x1", "127.0.0.1:9202", "127.0.0.1:9203"}, "order.1.raft_listen"},
    };
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        struct bz_config cfg;
        char errmsg[256] = "", sec[16], addr[32];
        config_init_defaults(&cfg);
        assert_int_equal(config_set(&cfg, "replication", "mode", "raft", errmsg, sizeof errmsg), 0);
        for (int r = 0; r < 3; r++) {
            snprintf(sec, sizeof sec, "order.%d", r + 1);
            snprintf(addr, sizeof addr, "127.0.0.1:910%d", r + 1);
            assert_int_equal(config_set(&cfg, sec, "listen", addr, errmsg, sizeof errmsg), 0);
            if (cases[i].raft[r])
                assert_int_equal(
                    config_set(&cfg, sec, "raft_listen", cases[i].raft[r], errmsg, sizeof errmsg),
                    0);
        }
        int rv = config_validate(&cfg, errmsg, sizeof errmsg);
        if (!cases[i].needle && rv != 0)
            fail_msg("%s: refused: %s", cases[i].what, errmsg);
        if (cases[i].needle && (rv != BZ_EINVAL || !strstr(errmsg, cases[i].needle)))
            fail_msg("%s: message '%s' lacks '%s'", cases[i].what, errmsg, cases[i].needle);
        /* In primary-backup mode raft_listen is not needed and not checked. */
        cfg.mode = CONFIG_MODE_PRIMARY_BACKUP;
        if (config_validate(&cfg, errmsg, sizeof errmsg) != 0)
            fail_msg("%s in primary-backup: %s", cases[i].what, errmsg);
    }
}

static void test_raft_defaults_and_shipped_config(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256] = "";
    config_init_defaults(&cfg);
    assert_int_equal(cfg.snapshot_threshold, 32768);
    assert_int_equal(cfg.snapshot_trailing, 2048);
    int rv =
        config_load_file(&cfg, BAZAAR_SOURCE_DIR "/config/bazaar-raft.conf", errmsg, sizeof errmsg);
    if (rv)
        fail_msg("config/bazaar-raft.conf refused: %s", errmsg);
    assert_int_equal(cfg.mode, CONFIG_MODE_RAFT);
    assert_int_equal(cfg.replica_count, 3);
    for (int i = 0; i < 3; i++)
        assert_true(cfg.replicas[i].raft_listen[0] != '\0');
    if (config_validate(&cfg, errmsg, sizeof errmsg) != 0)
        fail_msg("config/bazaar-raft.conf does not validate: %s", errmsg);
    struct strbuf out;
    strbuf_init(&out, 1 << 16);
    assert_int_equal(config_dump_json(&cfg, &out), 0);
    assert_non_null(strstr(out.data, "\"raft_listen\":\"127.0.0.1:9201\""));
    assert_non_null(strstr(out.data, "\"snapshot_threshold\":"));
    strbuf_free(&out);
}

/* Issue 12 finding 9: the public default secret only on addresses no other machine reaches. */
static void test_default_secret_only_on_loopback(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256] = "";
    config_init_defaults(&cfg);
    assert_string_equal(cfg.secret, CONFIG_DEFAULT_SECRET);
    assert_int_equal(config_set(&cfg, "order.1", "listen", "127.0.0.1:9101", errmsg, sizeof errmsg),
                     0);
    assert_int_equal(config_set(&cfg, "frontend", "listen", "127.1.2.3:80", errmsg, sizeof errmsg),
                     0);
    assert_int_equal(config_validate(&cfg, errmsg, sizeof errmsg), 0);
    static const char *const outside[][2] = {
        {"frontend", "0.0.0.0:8080"},    {"catalog", "10.0.0.5:9001"},
        {"order.1", "192.168.1.2:9101"}, {"catalog", "db.example.com:9001"},
        {"catalog", "notify"},
    };
    for (size_t i = 0; i < UNIT_COUNT(outside); i++) {
        struct bz_config c = cfg;
        const char *key = strcmp(outside[i][1], "notify") == 0 ? "notify" : "listen";
        const char *value = strcmp(key, "notify") == 0 ? "127.0.0.1:1,10.1.1.1:2" : outside[i][1];
        assert_int_equal(config_set(&c, outside[i][0], key, value, errmsg, sizeof errmsg), 0);
        errmsg[0] = '\0';
        if (config_validate(&c, errmsg, sizeof errmsg) != BZ_EINVAL)
            fail_msg("%s.%s = %s validated with the default secret", outside[i][0], key, value);
        assert_non_null(strstr(errmsg, "secret"));
        assert_int_equal(config_set(&c, "cluster", "secret", "a-real-one", errmsg, sizeof errmsg),
                         0);
        if (config_validate(&c, errmsg, sizeof errmsg) != 0)
            fail_msg("%s.%s = %s refused with a real secret: %s", outside[i][0], key, value,
                     errmsg);
    }
}

static void test_dump_json_redacts_secret(void **state)
{
    (void)state;
    struct bz_config cfg;
    char errmsg[256];
    assert_int_equal(load_text(&cfg, "dump.conf", full_ini, errmsg, sizeof errmsg), 0);
    setenv("BAZAAR_SECRET", "top-secret-env-value", 1);
    assert_int_equal(config_apply_env(&cfg, errmsg, sizeof errmsg), 0);
    unsetenv("BAZAAR_SECRET");

    struct strbuf out;
    strbuf_init(&out, 1 << 16);
    assert_int_equal(config_dump_json(&cfg, &out), 0);
    assert_null(strstr(out.data, "top-secret-env-value"));
    assert_null(strstr(out.data, "s3cret-from-file"));

    json_t *root = json_loads(out.data, 0, NULL);
    assert_non_null(root);
    json_t *cluster = json_object_get(root, "cluster");
    assert_string_equal(json_string_value(json_object_get(cluster, "secret")), "(redacted)");
    assert_string_equal(json_string_value(json_object_get(cluster, "data_dir")), "/var/lib/bazaar");
    json_t *frontend = json_object_get(root, "frontend");
    assert_int_equal(json_integer_value(json_object_get(frontend, "cache_size")), 16);
    assert_true(json_is_false(json_object_get(frontend, "cache")));
    json_t *repl = json_object_get(root, "replication");
    assert_string_equal(json_string_value(json_object_get(repl, "mode")), "raft");
    assert_string_equal(json_string_value(json_object_get(repl, "write_quorum")), "1");
    json_t *reps = json_object_get(root, "replicas");
    assert_int_equal(json_array_size(reps), 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(reps, i), "id")),
                         (json_int_t)i + 1);
    json_decref(root);
    strbuf_free(&out);
}

static void test_dump_json_respects_buffer_max(void **state)
{
    (void)state;
    struct bz_config cfg;
    config_init_defaults(&cfg);
    struct strbuf out;
    strbuf_init(&out, 16);
    assert_int_equal(config_dump_json(&cfg, &out), BZ_ETOOBIG);
    assert_int_equal(out.len, 0);
    strbuf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_partial_file_keeps_defaults),
        cmocka_unit_test(test_shipped_config_loads),
        cmocka_unit_test(test_shipped_config_documents_defaults),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_two_errors_message_matches_line),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_string_too_long),
        cmocka_unit_test(test_longest_value_loads_from_file),
        cmocka_unit_test(test_cache_switch_table),
        cmocka_unit_test(test_int_bounds_table),
        cmocka_unit_test(test_replicas_sorted_by_id),
        cmocka_unit_test(test_duplicates_refused),
        cmocka_unit_test(test_too_many_replicas),
        cmocka_unit_test(test_several_frontends),
        cmocka_unit_test(test_log_format),
        cmocka_unit_test(test_set_option_good),
        cmocka_unit_test(test_set_option_bad_forms),
        cmocka_unit_test(test_env_secret_override),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_raft_validate),
        cmocka_unit_test(test_raft_defaults_and_shipped_config),
        cmocka_unit_test(test_default_secret_only_on_loopback),
        cmocka_unit_test(test_dump_json_redacts_secret),
        cmocka_unit_test(test_dump_json_respects_buffer_max),
    };
    return cmocka_run_group_tests_name("unit.common.config", tests, group_setup, group_teardown);
}
