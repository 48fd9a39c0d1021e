/*
 * bazaar: the launcher. `bazaar up` starts a whole local cluster from one
 * config file (catalog, every [order.N], front-end), waits until each is
 * ready, prints where the API is, and stops them all on Ctrl-C or SIGTERM.
 * It never restarts a service by surprise: an unexpected exit is reported
 * with the command that restarts it. `bazaar status` prints each service's
 * health.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "http_client.h"
#include "log.h"
#include "service.h"

#define LAUNCHER__MAX_CHILDREN (CONFIG_MAX_REPLICAS + 2)
#define LAUNCHER__READY_MS     30000
#define LAUNCHER__STOP_MS      5000

struct launcher__child {
    char name[32]; /* "catalog", "order.2", "frontend" */
    char listen[CONFIG_ADDR_MAX];
    char *argv[80];
    pid_t pid; /* 0 once reaped */
};

struct launcher {
    struct bz_config cfg;
    struct launcher__child children[LAUNCHER__MAX_CHILDREN];
    int n;
};

/* The directory of this executable: the service binaries sit beside it. */
static int launcher__bin_dir(char *buf, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n <= 0)
        return BZ_EIO;
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (!slash)
        return BZ_EIO;
    *slash = '\0';
    return 0;
}

/* Builds argv: binary, the launcher's own flags (minus the subcommand), and --id. */
static void launcher__add(struct launcher *l, const char *name, const char *bin_dir,
                          const char *binary, const char *listen, int id, int argc, char **argv)
{
    struct launcher__child *c = &l->children[l->n++];
    char path[PATH_MAX + 64];
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->listen, sizeof c->listen, "%s", listen);
    snprintf(path, sizeof path, "%s/%s", bin_dir, binary);
    int k = 0;
    c->argv[k++] = xstrdup(path);
    for (int i = 2; i < argc && k < 76; i++)
        c->argv[k++] = xstrdup(argv[i]);
    if (id > 0) {
        char idbuf[16];
        snprintf(idbuf, sizeof idbuf, "%d", id);
        c->argv[k++] = xstrdup("--id");
        c->argv[k++] = xstrdup(idbuf);
    }
    c->argv[k] = NULL;
}

static int launcher__spawn(struct launcher__child *c)
{
    pid_t pid = fork();
    if (pid < 0)
        return BZ_EIO;
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        execv(c->argv[0], c->argv);
        fprintf(stderr, "bazaar: cannot run %s: %s\n", c->argv[0], strerror(errno));
        _exit(127);
    }
    c->pid = pid;
    return 0;
}

/* 1 when GET /health answers 200. */
static int launcher__healthy(const char *listen)
{
    char url[CONFIG_ADDR_MAX + 32];
    struct http_reply reply;
    snprintf(url, sizeof url, "http://%s/health", listen);
    if (http_client_request("GET", url, NULL, NULL, 0, 500, &reply) != 0)
        return 0;
    int ok = reply.status == 200;
    http_reply_free(&reply);
    return ok;
}

/* Reaps exited children without blocking; reports each unexpected exit. */
static void launcher__reap(struct launcher *l, bool expected)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < l->n; i++) {
            struct launcher__child *c = &l->children[i];
            if (c->pid != pid)
                continue;
            c->pid = 0;
            if (expected)
                break;
            if (WIFSIGNALED(status))
                LOG_ERROR("%s exited on signal %d; not restarting it. Restart by hand:", c->name,
                          WTERMSIG(status));
            else
                LOG_ERROR("%s exited with status %d; not restarting it. Restart by hand:", c->name,
                          WEXITSTATUS(status));
            struct strbuf cmd;
            strbuf_init(&cmd, 4096);
            for (char **a = c->argv; *a; a++)
                strbuf_appendf(&cmd, "%s%s", a == c->argv ? "" : " ", *a);
            LOG_ERROR("  %s", cmd.data ? cmd.data : "");
            strbuf_free(&cmd);
        }
    }
}

/* Waits for a child's /health, failing early if it exits. 0 or BZ_EUNAVAIL. */
static int launcher__await_ready(struct launcher *l, struct launcher__child *c)
{
    uint64_t deadline = clock_now_ms() + LAUNCHER__READY_MS;
    while (clock_now_ms() < deadline) {
        if (launcher__healthy(c->listen))
            return 0;
        launcher__reap(l, false);
        if (c->pid == 0)
            return BZ_EUNAVAIL;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    LOG_ERROR("%s did not become ready within %d s", c->name, LAUNCHER__READY_MS / 1000);
    return BZ_EUNAVAIL;
}

/* SIGTERM in reverse start order, then SIGKILL for any that linger. */
static void launcher__stop_all(struct launcher *l)
{
    for (int i = l->n - 1; i >= 0; i--) {
        struct launcher__child *c = &l->children[i];
        if (c->pid > 0)
            kill(c->pid, SIGTERM);
    }
    uint64_t deadline = clock_now_ms() + LAUNCHER__STOP_MS;
    for (;;) {
        launcher__reap(l, true);
        int alive = 0;
        for (int i = 0; i < l->n; i++)
            alive += l->children[i].pid > 0;
        if (alive == 0)
            return;
        if (clock_now_ms() > deadline) {
            for (int i = 0; i < l->n; i++) {
                if (l->children[i].pid > 0) {
                    LOG_WARN("%s did not stop in time: SIGKILL", l->children[i].name);
                    kill(l->children[i].pid, SIGKILL);
                }
            }
            deadline = UINT64_MAX;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int launcher__up(struct launcher *l, int argc, char **argv)
{
    char bin_dir[PATH_MAX];
    if (launcher__bin_dir(bin_dir, sizeof bin_dir) != 0) {
        LOG_ERROR("cannot find my own directory");
        return 1;
    }
    /* SIGCHLD is taken synchronously too (service_init blocked INT and TERM). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    launcher__add(l, "catalog", bin_dir, "bazaar-catalog", l->cfg.catalog_listen, 0, argc, argv);
    for (int i = 0; i < l->cfg.replica_count; i++) {
        char name[32];
        snprintf(name, sizeof name, "order.%d", l->cfg.replicas[i].id);
        launcher__add(l, name, bin_dir, "bazaar-order", l->cfg.replicas[i].listen,
                      l->cfg.replicas[i].id, argc, argv);
    }
    launcher__add(l, "frontend", bin_dir, "bazaar-frontend", l->cfg.frontend_listen, 0, argc, argv);

    for (int i = 0; i < l->n; i++) {
        struct launcher__child *c = &l->children[i];
        if (launcher__healthy(c->listen)) {
            LOG_ERROR("something already answers on %s (%s): is a cluster already running?",
                      c->listen, c->name);
            launcher__stop_all(l);
            return 1;
        }
        if (launcher__spawn(c) != 0 || launcher__await_ready(l, c) != 0) {
            LOG_ERROR("%s failed to start; stopping the cluster", c->name);
            launcher__stop_all(l);
            return 1;
        }
        LOG_INFO("%s ready on %s (pid %d)", c->name, c->listen, (int)c->pid);
    }
    printf("\nStock Bazaar is up. API: http://%s\n"
           "  curl http://%s/stocks/GameStart\n"
           "  curl -X POST http://%s/orders -d '{\"name\":\"GameStart\",\"type\":\"buy\","
           "\"quantity\":1}'\n"
           "  curl http://%s/orders/0\n"
           "Data in %s. Press Ctrl-C to stop.\n\n",
           l->cfg.frontend_listen, l->cfg.frontend_listen, l->cfg.frontend_listen,
           l->cfg.frontend_listen, l->cfg.data_dir);
    fflush(stdout);

    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGCHLD) {
            launcher__reap(l, false);
            continue;
        }
        LOG_INFO("signal %d: stopping the cluster", sig);
        break;
    }
    launcher__stop_all(l);
    LOG_INFO("stopped");
    return 0;
}

static int launcher__status(struct launcher *l)
{
    int down = 0;
    printf("%-10s %-22s %s\n", "service", "address", "health");
    struct {
        const char *name;
        const char *listen;
    } rows[LAUNCHER__MAX_CHILDREN];
    int n = 0;
    rows[n].name = "catalog";
    rows[n++].listen = l->cfg.catalog_listen;
    char names[CONFIG_MAX_REPLICAS][16];
    for (int i = 0; i < l->cfg.replica_count; i++) {
        snprintf(names[i], sizeof names[i], "order.%d", l->cfg.replicas[i].id);
        rows[n].name = names[i];
        rows[n++].listen = l->cfg.replicas[i].listen;
    }
    rows[n].name = "frontend";
    rows[n++].listen = l->cfg.frontend_listen;
    for (int i = 0; i < n; i++) {
        int ok = launcher__healthy(rows[i].listen);
        down += !ok;
        printf("%-10s %-22s %s\n", rows[i].name, rows[i].listen, ok ? "ready" : "DOWN");
    }
    return down ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct launcher l = {0};
    int id;
    if (argc < 2 || (strcmp(argv[1], "up") != 0 && strcmp(argv[1], "status") != 0)) {
        fprintf(stderr, "usage: bazaar up --config FILE [--set section.key=value]...\n"
                        "       bazaar status --config FILE\n");
        return 2;
    }
    const char *cmd = argv[1];
    /* service_init parses the flags after the subcommand. */
    if (service_init(argc - 1, argv + 1, "bazaar", false, &l.cfg, &id) != 0)
        return 2;
    return strcmp(cmd, "up") == 0 ? launcher__up(&l, argc, argv) : launcher__status(&l);
}
