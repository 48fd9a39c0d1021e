#include "service.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "http_client.h"
#include "log.h"
#include "util.h"

static const char *service__id_synopsis(int id_kind)
{
    return id_kind == SERVICE_ID_REPLICA    ? " --id N"
           : id_kind == SERVICE_ID_FRONTEND ? " [--id N]"
                                            : "";
}

static void service__usage(FILE *out, const char *prog, int id_kind)
{
    fprintf(out,
            "usage: %s --config FILE%s [--set section.key=value]... [--log-level LEVEL]\n"
            "  --config FILE       cluster configuration (INI, see config/bazaar.conf)\n"
            "%s"
            "  --set S.K=V         override one option, e.g. --set frontend.cache=off\n"
            "  --log-level LEVEL   debug, info, warn or error\n"
            "  --version           print the version and exit\n"
            "  --help              print this help and exit\n"
            "BAZAAR_SECRET in the environment overrides [cluster] secret.\n",
            prog, service__id_synopsis(id_kind),
            id_kind == SERVICE_ID_REPLICA
                ? "  --id N              which [order.N] replica this process is\n"
            : id_kind == SERVICE_ID_FRONTEND
                ? "  --id N              which [frontend.N] this process is (needed when "
                  "there are several)\n"
                : "");
}

/* The one-line answer to a bad command line. */
static void service__short_usage(const char *prog, int id_kind)
{
    fprintf(stderr, "usage: %s --config FILE%s [--set S.K=V]... (--help for more)\n", prog,
            service__id_synopsis(id_kind));
}

const char *service_version(void)
{
    return BAZAAR_VERSION " (commit " BAZAAR_COMMIT ")";
}

void service_print_version(const char *prog)
{
    const char *slash = strrchr(prog, '/');
    printf("%s %s\n", slash ? slash + 1 : prog, service_version());
}

static uint64_t service__started_ms;

json_t *service_status_json(const struct bz_config *cfg, const char *role, int id)
{
    struct strbuf dump;
    strbuf_init(&dump, 64 * 1024);
    config_dump_json(cfg, &dump);
    json_t *config = json_loads(dump.data ? dump.data : "{}", 0, NULL);
    strbuf_free(&dump);
    uint64_t now = clock_wall_ms();
    return json_pack("{s:s,s:i,s:s,s:i,s:I,s:I,s:o}", "service", role, "id", id, "version",
                     service_version(), "pid", (int)getpid(), "started_at_ms",
                     (json_int_t)service__started_ms, "uptime_s",
                     (json_int_t)((now - service__started_ms) / 1000), "config",
                     config ? config : json_object());
}

/* Thousands of client connections need more descriptors than the usual soft limit (1024). */
static void service__raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int service_init(int argc, char **argv, const char *role, int id_kind, struct bz_config *cfg,
                 int *id)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"id", required_argument, NULL, 'i'},
        {"set", required_argument, NULL, 's'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    bool needs_id = id_kind == SERVICE_ID_REPLICA;
    service__started_ms = clock_wall_ms();
    const char *config_path = NULL, *level = NULL;
    const char *sets[64];
    int nsets = 0;
    uint64_t idv = 0;
    char err[512];
    int c;

    opterr = 0; /* our own one-line message instead of getopt's */
    while ((c = getopt_long(argc, argv, "c:i:s:l:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'i':
            if (parse_u64_str(optarg, 1000000, &idv) || idv == 0) {
                fprintf(stderr, "%s: --id must be a positive integer\n", argv[0]);
                return 1;
            }
            break;
        case 's':
            if (nsets == (int)(sizeof sets / sizeof sets[0])) {
                fprintf(stderr, "%s: too many --set flags\n", argv[0]);
                return 1;
            }
            sets[nsets++] = optarg;
            break;
        case 'l':
            level = optarg;
            break;
        case 'h':
            service__usage(stdout, argv[0], id_kind);
            exit(0);
        case 'V':
            service_print_version(argv[0]);
            exit(0);
        default:
            if (optopt)
                fprintf(stderr, "%s: option '-%c' is unknown or needs a value\n", argv[0], optopt);
            else
                fprintf(stderr, "%s: unknown option '%s'\n", argv[0], argv[optind - 1]);
            service__short_usage(argv[0], id_kind);
            return 1;
        }
    }
    if (id_kind == SERVICE_ID_NONE && idv != 0) {
        fprintf(stderr, "%s: --id is not an option of this program\n", argv[0]);
        service__short_usage(argv[0], id_kind);
        return 1;
    }
    if (!config_path || optind != argc || (needs_id && idv == 0)) {
        if (!config_path)
            fprintf(stderr, "%s: --config FILE is required\n", argv[0]);
        else if (optind != argc)
            fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], argv[optind]);
        else
            fprintf(stderr, "%s: --id N is required\n", argv[0]);
        service__short_usage(argv[0], id_kind);
        return 1;
    }

    config_init_defaults(cfg);
    if (config_load_file(cfg, config_path, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        return 1;
    }
    if (config_apply_env(cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        return 1;
    }
    for (int i = 0; i < nsets; i++) {
        if (config_set_option(cfg, sets[i], err, sizeof err) != 0) {
            fprintf(stderr, "%s: %s\n", argv[0], err);
            return 1;
        }
    }
    if (level && config_set(cfg, "cluster", "log_level", level, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        return 1;
    }
    if (config_validate(cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], config_path, err);
        return 1;
    }
    if (needs_id && !config_replica_find(cfg, (int)idv)) {
        fprintf(stderr, "%s: no [order.%llu] section in %s\n", argv[0], (unsigned long long)idv,
                config_path);
        return 1;
    }
    if (id_kind == SERVICE_ID_FRONTEND) {
        if (idv == 0 && cfg->frontend_count > 1) {
            fprintf(stderr, "%s: %s has %d [frontend.N] sections: pass --id N\n", argv[0],
                    config_path, cfg->frontend_count);
            return 1;
        }
        if (idv == 0 && cfg->frontend_count == 1)
            idv = (uint64_t)cfg->frontends[0].id;
        if (idv != 0 && !config_frontend_listen(cfg, (int)idv)) {
            fprintf(stderr, "%s: no [frontend.%llu] section in %s\n", argv[0],
                    (unsigned long long)idv, config_path);
            return 1;
        }
    }
    *id = (int)idv;

    enum log_level lvl;
    log_parse_level(cfg->log_level, &lvl);
    log_set_level(lvl);
    log_set_json(cfg->log_format == CONFIG_LOG_JSON);
    log_init(role, *id);

    /* Only the main thread takes SIGINT/SIGTERM (every thread inherits this mask);
     * a peer closing a socket must not kill us. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    service__raise_fd_limit();
    http_client_global_init();
    return 0;
}

int service_wait_for_signal(void)
{
    sigset_t set;
    int sig = 0;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    while (sigwait(&set, &sig) != 0)
        ;
    return sig;
}

int service_data_path(const struct bz_config *cfg, const char *name, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/%s", cfg->data_dir, name);
    return (n < 0 || (size_t)n >= len) ? BZ_EINVAL : 0;
}

int service_make_data_dir(const struct bz_config *cfg)
{
    char path[CONFIG_PATH_MAX];
    snprintf(path, sizeof path, "%s", cfg->data_dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return BZ_EIO;
        *p = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return BZ_EIO;
    return 0;
}

int service_lock_data(const char *db_path)
{
    char path[CONFIG_PATH_MAX + 48];
    snprintf(path, sizeof path, "%s.lock", db_path);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return BZ_EIO;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return BZ_ECONFLICT;
    }
    return 0; /* the descriptor stays open (and locked) until the process exits */
}
