/*
 * bazaar: the launcher and operator's tool.
 *
 *   bazaar up --config F        starts the catalog, every [order.N] and every
 *                               front-end, waits until each is ready, prints
 *                               where the API is, and stops them all on
 *                               Ctrl-C or SIGTERM. It never restarts a process
 *                               by surprise: an unexpected exit is reported
 *                               with the command that restarts it.
 *   bazaar restart NAME --config F
 *                               asks the running `bazaar up` (over a Unix
 *                               socket in data_dir) to restart one process;
 *                               it stays that supervisor's child, so Ctrl-C
 *                               stops it too.
 *   bazaar status --config F [--json]
 *                               each process's role, leader, epoch, last
 *                               number and lag, read from its /status.
 *   bazaar check --config F     validates a configuration without starting
 *                               anything (like `nginx -t`).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "error.h"
#include "http_client.h"
#include "log.h"
#include "service.h"

#define LAUNCHER__MAX_CHILDREN (CONFIG_MAX_REPLICAS + CONFIG_MAX_FRONTENDS + 1)
#define LAUNCHER__READY_MS     30000
#define LAUNCHER__STOP_MS      5000
#define LAUNCHER__STATUS_MS    1000 /* deadline of one /status call of `bazaar status` */
#define LAUNCHER__CONTROL_MS   60000

struct launcher__child {
    char name[32]; /* "catalog", "order.2", "frontend" or "frontend.1" */
    char listen[CONFIG_ADDR_MAX];
    char *argv[80];
    pid_t pid; /* 0 once reaped */
};

struct launcher {
    struct bz_config cfg;
    const char *config_path;
    struct launcher__child children[LAUNCHER__MAX_CHILDREN];
    int n;
    int sigfd;   /* SIGCHLD, SIGINT, SIGTERM */
    int control; /* listening Unix socket of `bazaar up`, -1 when none */
    char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static void launcher__usage(FILE *out)
{
    fprintf(out,
            "usage: bazaar up      --config FILE [--set section.key=value]...\n"
            "       bazaar restart NAME --config FILE   (NAME: catalog, order.N, frontend[.N])\n"
            "       bazaar status  --config FILE [--json]\n"
            "       bazaar check   --config FILE\n"
            "       bazaar --version | --help\n");
}

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

static void launcher__sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------------- the process table */

/* Does this argument carry the secret ("cluster.secret=..." as --set's value)? */
static bool launcher__secret_arg(const char *a)
{
    return strstr(a, "cluster.secret=") != NULL;
}

/*
 * Builds argv: binary, the launcher's own flags (minus the subcommand and any
 * --set cluster.secret=..., which children get as BAZAAR_SECRET instead: argv
 * is world-readable in ps), and --id.
 */
static void launcher__add(struct launcher *l, const char *name, const char *bin_dir,
                          const char *binary, const char *listen, int id, char **flags, int nflags)
{
    struct launcher__child *c = &l->children[l->n++];
    char path[PATH_MAX + 64];
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->listen, sizeof c->listen, "%s", listen);
    snprintf(path, sizeof path, "%s/%s", bin_dir, binary);
    int k = 0;
    c->argv[k++] = xstrdup(path);
    for (int i = 0; i < nflags && k < 76; i++) {
        if (launcher__secret_arg(flags[i])) {
            /* Also drop a separate "--set"/"-s" flag that preceded the value. */
            if (flags[i][0] != '-' && k > 1 && c->argv[k - 1][0] == '-' &&
                !strchr(c->argv[k - 1], '='))
                free(c->argv[--k]);
            continue;
        }
        c->argv[k++] = xstrdup(flags[i]);
    }
    if (id > 0) {
        char idbuf[16];
        snprintf(idbuf, sizeof idbuf, "%d", id);
        c->argv[k++] = xstrdup("--id");
        c->argv[k++] = xstrdup(idbuf);
    }
    c->argv[k] = NULL;
}

/* Every process of the cluster, in start order: catalog, replicas, front-ends. */
static void launcher__plan(struct launcher *l, const char *bin_dir, char **flags, int nflags)
{
    launcher__add(l, "catalog", bin_dir, "bazaar-catalog", l->cfg.catalog_listen, 0, flags, nflags);
    for (int i = 0; i < l->cfg.replica_count; i++) {
        char name[32];
        snprintf(name, sizeof name, "order.%d", l->cfg.replicas[i].id);
        launcher__add(l, name, bin_dir, "bazaar-order", l->cfg.replicas[i].listen,
                      l->cfg.replicas[i].id, flags, nflags);
    }
    struct config_frontend fes[CONFIG_MAX_FRONTENDS];
    int nfe = config_frontends(&l->cfg, fes);
    for (int i = 0; i < nfe; i++) {
        char name[32];
        if (fes[i].id > 0)
            snprintf(name, sizeof name, "frontend.%d", fes[i].id);
        else
            snprintf(name, sizeof name, "frontend");
        launcher__add(l, name, bin_dir, "bazaar-frontend", fes[i].listen, fes[i].id, flags, nflags);
    }
}

static struct launcher__child *launcher__find(struct launcher *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->children[i].name, name) == 0)
            return &l->children[i];
    /* "frontend" also names the only front-end when it has an id. */
    if (strcmp(name, "frontend") == 0) {
        struct launcher__child *only = NULL;
        for (int i = 0; i < l->n; i++) {
            if (strncmp(l->children[i].name, "frontend", 8) != 0)
                continue;
            if (only)
                return NULL;
            only = &l->children[i];
        }
        return only;
    }
    return NULL;
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
                LOG_ERROR("%s exited on signal %d; not restarting it. Restart it with: bazaar "
                          "restart %s --config %s",
                          c->name, WTERMSIG(status), c->name, l->config_path);
            else
                LOG_ERROR("%s exited with status %d; not restarting it. Restart it with: bazaar "
                          "restart %s --config %s",
                          c->name, WEXITSTATUS(status), c->name, l->config_path);
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
        launcher__sleep_ms(50);
    }
    LOG_ERROR("%s did not become ready within %d s", c->name, LAUNCHER__READY_MS / 1000);
    return BZ_EUNAVAIL;
}

/* SIGTERM, then SIGKILL after LAUNCHER__STOP_MS, for the children in `which` (NULL: all). */
static void launcher__stop(struct launcher *l, struct launcher__child *which)
{
    for (int i = l->n - 1; i >= 0; i--) {
        struct launcher__child *c = &l->children[i];
        if (c->pid > 0 && (!which || which == c))
            kill(c->pid, SIGTERM);
    }
    uint64_t deadline = clock_now_ms() + LAUNCHER__STOP_MS;
    for (;;) {
        int status;
        pid_t pid;
        if (which && which->pid > 0 && waitpid(which->pid, &status, WNOHANG) == which->pid)
            which->pid = 0; /* only this one: others' exits are reported by launcher__reap */
        while (!which && (pid = waitpid(-1, &status, WNOHANG)) > 0)
            for (int i = 0; i < l->n; i++)
                if (l->children[i].pid == pid)
                    l->children[i].pid = 0;
        int alive = 0;
        for (int i = 0; i < l->n; i++)
            alive += l->children[i].pid > 0 && (!which || which == &l->children[i]);
        if (alive == 0)
            return;
        if (clock_now_ms() > deadline) {
            for (int i = 0; i < l->n; i++) {
                struct launcher__child *c = &l->children[i];
                if (c->pid > 0 && (!which || which == c)) {
                    LOG_WARN("%s did not stop in time: SIGKILL", c->name);
                    kill(c->pid, SIGKILL);
                }
            }
            deadline = UINT64_MAX;
        }
        launcher__sleep_ms(20);
    }
}

/* ---------------------------------------------------------------- control socket */

static int launcher__sock_path(const struct bz_config *cfg, char *buf, size_t len)
{
    return service_data_path(cfg, "bazaar-up.sock", buf, len);
}

static int launcher__control_listen(struct launcher *l)
{
    if (launcher__sock_path(&l->cfg, l->sock_path, sizeof l->sock_path) != 0) {
        LOG_WARN("data_dir is too long for a control socket: `bazaar restart` will not work");
        return 0;
    }
    unlink(l->sock_path); /* a stale one from a crashed run; the catalog's lock guards the rest */
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", l->sock_path);
    if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(s, 4) != 0) {
        LOG_WARN("cannot open the control socket %s: %s", l->sock_path, strerror(errno));
        if (s >= 0)
            close(s);
        l->sock_path[0] = '\0';
        return 0;
    }
    chmod(l->sock_path, 0600);
    l->control = s;
    return 0;
}

/* Restarts one child (stopping it first if it runs) and waits until it is ready. */
static int launcher__restart(struct launcher *l, struct launcher__child *c, char *msg, size_t len)
{
    if (c->pid > 0) {
        LOG_INFO("restart %s: stopping pid %d", c->name, (int)c->pid);
        launcher__stop(l, c);
    }
    if (launcher__spawn(c) != 0 || launcher__await_ready(l, c) != 0) {
        snprintf(msg, len, "error %s did not come back; see the log of bazaar up\n", c->name);
        return BZ_EUNAVAIL;
    }
    LOG_INFO("%s restarted and ready on %s (pid %d)", c->name, c->listen, (int)c->pid);
    snprintf(msg, len, "ok %s ready on %s pid %d\n", c->name, c->listen, (int)c->pid);
    return 0;
}

/* One request on the control socket: "restart NAME\n". */
static void launcher__control_serve(struct launcher *l)
{
    int fd = accept4(l->control, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char line[128], reply[256];
    ssize_t n = recv(fd, line, sizeof line - 1, 0);
    line[n > 0 ? n : 0] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    struct launcher__child *c = NULL;
    if (strncmp(line, "restart ", 8) == 0 && (c = launcher__find(l, line + 8)) != NULL)
        launcher__restart(l, c, reply, sizeof reply);
    else if (strncmp(line, "restart ", 8) == 0)
        snprintf(reply, sizeof reply, "error no process named '%.64s' in this cluster\n", line + 8);
    else
        snprintf(reply, sizeof reply, "error unknown request\n");
    if (send(fd, reply, strlen(reply), MSG_NOSIGNAL) < 0)
        LOG_WARN("control client went away before the reply");
    close(fd);
}

/* ---------------------------------------------------------------- bazaar up */

static int launcher__up(struct launcher *l, char **flags, int nflags)
{
    char bin_dir[PATH_MAX];
    if (launcher__bin_dir(bin_dir, sizeof bin_dir) != 0) {
        LOG_ERROR("cannot find my own directory");
        return 1;
    }
    /* Signals are read from a signalfd next to the control socket (service_init blocked
     * INT and TERM; CHLD too, below). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    l->sigfd = signalfd(-1, &set, SFD_CLOEXEC);
    l->control = -1;

    /* The secret in force (file, environment or --set) reaches the children through the
     * environment, which overrides their config file and is not shown by ps. */
    if (setenv("BAZAAR_SECRET", l->cfg.secret, 1) != 0) {
        LOG_ERROR("cannot pass the secret to the services");
        return 1;
    }
    launcher__plan(l, bin_dir, flags, nflags);
    /* The order replicas start together and are then awaited: in raft mode none is ready
     * before a majority runs and has elected a leader. The others start one by one. */
    int pending[CONFIG_MAX_REPLICAS], npending = 0;
    for (int i = 0; i <= l->n; i++) {
        struct launcher__child *c = i < l->n ? &l->children[i] : NULL;
        bool replica = c && strncmp(c->name, "order.", 6) == 0;
        if (!replica) {
            for (int k = 0; k < npending; k++) {
                struct launcher__child *p = &l->children[pending[k]];
                if (launcher__await_ready(l, p) != 0) {
                    LOG_ERROR("%s failed to start; stopping the cluster", p->name);
                    launcher__stop(l, NULL);
                    return 1;
                }
                LOG_INFO("%s ready on %s (pid %d)", p->name, p->listen, (int)p->pid);
            }
            npending = 0;
        }
        if (!c)
            break;
        if (launcher__healthy(c->listen)) {
            LOG_ERROR("something already answers on %s (%s): is a cluster already running?",
                      c->listen, c->name);
            launcher__stop(l, NULL);
            return 1;
        }
        if (launcher__spawn(c) != 0 || (!replica && launcher__await_ready(l, c) != 0)) {
            LOG_ERROR("%s failed to start; stopping the cluster", c->name);
            launcher__stop(l, NULL);
            return 1;
        }
        if (replica && npending < CONFIG_MAX_REPLICAS)
            pending[npending++] = i;
        else
            LOG_INFO("%s ready on %s (pid %d)", c->name, c->listen, (int)c->pid);
    }
    launcher__control_listen(l);

    struct launcher__child *fe = &l->children[l->n - 1];
    for (int i = l->n - 1; i >= 0; i--)
        if (strncmp(l->children[i].name, "frontend", 8) == 0)
            fe = &l->children[i]; /* the first front-end */
    printf("\nStock Bazaar is up. API: http://%s (status page: http://%s/)\n", fe->listen,
           fe->listen);
    for (int i = 0; i < l->n; i++)
        if (strncmp(l->children[i].name, "frontend", 8) == 0 && &l->children[i] != fe)
            printf("  also %s: http://%s\n", l->children[i].name, l->children[i].listen);
    printf("  curl http://%s/stocks/GameStart\n"
           "  curl -X POST http://%s/orders -d '{\"name\":\"GameStart\",\"type\":\"buy\","
           "\"quantity\":1}'\n"
           "  bazaar status --config %s      bazaar restart order.2 --config %s\n"
           "Data in %s. Press Ctrl-C to stop.\n\n",
           fe->listen, fe->listen, l->config_path, l->config_path, l->cfg.data_dir);
    fflush(stdout);

    for (;;) {
        struct pollfd pfd[2] = {{.fd = l->sigfd, .events = POLLIN},
                                {.fd = l->control, .events = POLLIN}};
        if (poll(pfd, l->control >= 0 ? 2 : 1, -1) < 0)
            continue;
        if (pfd[1].revents & POLLIN)
            launcher__control_serve(l);
        if (!(pfd[0].revents & POLLIN))
            continue;
        struct signalfd_siginfo si;
        if (read(l->sigfd, &si, sizeof si) != (ssize_t)sizeof si)
            continue;
        if (si.ssi_signo == SIGCHLD) {
            launcher__reap(l, false);
            continue;
        }
        LOG_INFO("signal %u: stopping the cluster", si.ssi_signo);
        break;
    }
    if (l->control >= 0) {
        close(l->control);
        unlink(l->sock_path);
    }
    launcher__stop(l, NULL);
    LOG_INFO("stopped");
    return 0;
}

/* ---------------------------------------------------------------- bazaar restart */

static int launcher__restart_cmd(struct launcher *l, const char *name)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if (launcher__sock_path(&l->cfg, path, sizeof path) != 0) {
        fprintf(stderr, "bazaar: data_dir is too long for the control socket\n");
        return 1;
    }
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr,
                "bazaar: no `bazaar up` is running for this config (%s: %s); start the cluster "
                "with bazaar up\n",
                path, strerror(errno));
        if (s >= 0)
            close(s);
        return 1;
    }
    struct timeval tv = {LAUNCHER__CONTROL_MS / 1000, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[96], reply[256];
    snprintf(req, sizeof req, "restart %.64s\n", name);
    ssize_t n = -1;
    if (send(s, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req))
        n = recv(s, reply, sizeof reply - 1, MSG_WAITALL);
    close(s);
    if (n <= 0) {
        fprintf(stderr, "bazaar: no answer from bazaar up\n");
        return 1;
    }
    reply[n] = '\0';
    bool ok = strncmp(reply, "ok ", 3) == 0;
    fputs(ok ? reply + 3 : reply + (strncmp(reply, "error ", 6) == 0 ? 6 : 0),
          ok ? stdout : stderr);
    return ok ? 0 : 1;
}

/* ---------------------------------------------------------------- bazaar status */

/* GET url: the parsed JSON body (any status) or NULL when unreachable. */
static json_t *launcher__get_json(const char *listen, const char *path, int *status)
{
    char url[CONFIG_ADDR_MAX + 32];
    struct http_reply reply;
    snprintf(url, sizeof url, "http://%s%s", listen, path);
    *status = 0;
    if (http_client_request("GET", url, NULL, NULL, 0, LAUNCHER__STATUS_MS, &reply) != 0)
        return NULL;
    *status = reply.status;
    json_t *j = json_loadb(reply.body.data ? reply.body.data : "", reply.body.len, 0, NULL);
    http_reply_free(&reply);
    return j;
}

static json_t *launcher__copy(json_t *from, const char *key)
{
    json_t *v = from ? json_object_get(from, key) : NULL;
    return v ? json_incref(v) : json_null();
}

/* One row per process: {"name","address","up","ready","role","leader","epoch","last","lag",...}. */
static json_t *launcher__collect(struct launcher *l)
{
    char bin_dir[PATH_MAX] = ".";
    launcher__bin_dir(bin_dir, sizeof bin_dir);
    launcher__plan(l, bin_dir, NULL, 0);
    json_t *rows = json_array();
    json_int_t leader_last = 0;
    int leader_id = 0;
    for (int i = 0; i < l->n; i++) {
        struct launcher__child *c = &l->children[i];
        int hstatus, sstatus;
        json_t *health = launcher__get_json(c->listen, "/health", &hstatus);
        json_t *st = launcher__get_json(c->listen, "/status", &sstatus);
        json_t *row = json_pack("{s:s,s:s,s:b,s:b}", "name", c->name, "address", c->listen, "up",
                                hstatus != 0, "ready", hstatus == 200);
        bool is_order = strncmp(c->name, "order.", 6) == 0;
        json_object_set_new(row, "role", st ? launcher__copy(st, "role") : json_string("down"));
        json_object_set_new(row, "leader", launcher__copy(st, "leader"));
        json_object_set_new(row, "epoch", launcher__copy(st, "epoch"));
        json_object_set_new(row, "last", is_order ? launcher__copy(st, "last") : json_null());
        json_object_set_new(row, "pid", launcher__copy(st, "pid"));
        json_object_set_new(row, "version", launcher__copy(st, "version"));
        if (hstatus != 200 && health)
            json_object_set_new(row, "reason", launcher__copy(health, "reason"));
        if (is_order && st && json_is_string(json_object_get(st, "role")) &&
            strcmp(json_string_value(json_object_get(st, "role")), "leader") == 0) {
            leader_last = json_integer_value(json_object_get(st, "last"));
            leader_id = (int)json_integer_value(json_object_get(st, "id"));
        }
        json_decref(health);
        json_decref(st);
        json_array_append_new(rows, row);
    }
    /* Lag: how many orders each replica is behind the replica that leads. */
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        json_t *last = json_object_get(row, "last");
        bool lag_known = json_is_integer(last) && leader_id != 0;
        json_object_set_new(row, "lag",
                            lag_known ? json_integer(leader_last - json_integer_value(last))
                                      : json_null());
    }
    return json_pack("{s:o,s:o}", "leader", leader_id ? json_integer(leader_id) : json_null(),
                     "processes", rows);
}

static void launcher__cell(char *buf, size_t len, json_t *v)
{
    if (json_is_integer(v))
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
    else if (json_is_string(v))
        snprintf(buf, len, "%s", json_string_value(v));
    else
        snprintf(buf, len, "-");
}

static int launcher__status(struct launcher *l, bool as_json)
{
    json_t *all = launcher__collect(l);
    json_t *rows = json_object_get(all, "processes");
    int down = 0;
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) down += !json_is_true(json_object_get(row, "ready"));
    if (as_json) {
        char *s = xjson_dumps(all, JSON_INDENT(2));
        printf("%s\n", s);
        free(s);
    } else {
        printf("%-12s %-22s %-8s %-9s %-6s %-6s %-7s %-5s\n", "process", "address", "state", "role",
               "leader", "epoch", "last", "lag");
        json_array_foreach(rows, i, row)
        {
            char role[16], leader[12], epoch[24], last[24], lag[24];
            launcher__cell(role, sizeof role, json_object_get(row, "role"));
            launcher__cell(leader, sizeof leader, json_object_get(row, "leader"));
            launcher__cell(epoch, sizeof epoch, json_object_get(row, "epoch"));
            launcher__cell(last, sizeof last, json_object_get(row, "last"));
            launcher__cell(lag, sizeof lag, json_object_get(row, "lag"));
            const char *state = json_is_true(json_object_get(row, "ready")) ? "ready"
                                : json_is_true(json_object_get(row, "up"))  ? "NOTREADY"
                                                                            : "DOWN";
            printf("%-12s %-22s %-8s %-9s %-6s %-6s %-7s %-5s",
                   json_string_value(json_object_get(row, "name")),
                   json_string_value(json_object_get(row, "address")), state, role, leader, epoch,
                   last, lag);
            json_t *reason = json_object_get(row, "reason");
            if (json_is_string(reason))
                printf(" (%s)", json_string_value(reason));
            printf("\n");
        }
    }
    json_decref(all);
    return down ? 1 : 0;
}

/* ---------------------------------------------------------------- bazaar check */

static int launcher__check(struct launcher *l)
{
    int bad = 0;
    launcher__plan(l, ".", NULL, 0);
    for (int i = 0; i < l->n; i++)
        for (int j = i + 1; j < l->n; j++)
            if (strcmp(l->children[i].listen, l->children[j].listen) == 0) {
                fprintf(stderr, "bazaar: %s and %s both listen on %s\n", l->children[i].name,
                        l->children[j].name, l->children[i].listen);
                bad = 1;
            }
    char db[CONFIG_PATH_MAX + 32];
    if (service_data_path(&l->cfg, "catalog.db", db, sizeof db) == 0 && access(db, F_OK) != 0 &&
        access(l->cfg.stocks_csv, R_OK) != 0) {
        fprintf(stderr, "bazaar: %s does not exist yet and the stock list %s cannot be read\n", db,
                l->cfg.stocks_csv);
        bad = 1;
    }
    if (bad) {
        fprintf(stderr, "bazaar: configuration %s is NOT valid\n", l->config_path);
        return 1;
    }
    struct config_frontend fes[CONFIG_MAX_FRONTENDS];
    printf("configuration %s is valid: catalog on %s, %d order replica(s), %d front-end(s), "
           "mode %s, write_quorum %s, data in %s\n",
           l->config_path, l->cfg.catalog_listen, l->cfg.replica_count,
           config_frontends(&l->cfg, fes),
           l->cfg.mode == CONFIG_MODE_RAFT ? "raft" : "primary-backup",
           l->cfg.write_quorum == CONFIG_QUORUM_ONE ? "1" : "majority", l->cfg.data_dir);
    return 0;
}

/* ---------------------------------------------------------------- main */

/* The value of --config in argv, for messages. */
static const char *launcher__config_arg(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            return argv[i + 1];
        if (strncmp(argv[i], "--config=", 9) == 0)
            return argv[i] + 9;
    }
    return "?";
}

int main(int argc, char **argv)
{
    static struct launcher l;
    int id;
    if (argc >= 2 &&
        (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))) {
        launcher__usage(stdout);
        return 0;
    }
    if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version"))) {
        service_print_version(argv[0]);
        return 0;
    }
    const char *cmd = argc >= 2 ? argv[1] : "";
    bool up = !strcmp(cmd, "up"), status = !strcmp(cmd, "status"), check = !strcmp(cmd, "check"),
         restart = !strcmp(cmd, "restart");
    if (!up && !status && !check && !restart) {
        if (argc >= 2)
            fprintf(stderr, "bazaar: unknown command '%s'\n", cmd);
        launcher__usage(stderr);
        return 2;
    }
    /* Flags after the subcommand (and after NAME for restart) are the services' flags. */
    int skip = 1;
    const char *name = NULL;
    if (restart) {
        if (argc < 3 || argv[2][0] == '-') {
            fprintf(stderr,
                    "bazaar: restart needs a process name (catalog, order.N, frontend[.N])\n");
            launcher__usage(stderr);
            return 2;
        }
        name = argv[2];
        skip = 2;
    }
    char *args[128];
    int nargs = 0;
    bool as_json = false;
    args[nargs++] = argv[skip];
    for (int i = skip + 1; i < argc && nargs < 127; i++) {
        if (status && strcmp(argv[i], "--json") == 0)
            as_json = true;
        else
            args[nargs++] = argv[i];
    }
    args[nargs] = NULL;
    if (service_init(nargs, args, "bazaar", SERVICE_ID_NONE, &l.cfg, &id) != 0)
        return 2;
    l.config_path = launcher__config_arg(argc, argv);
    if (up)
        return launcher__up(&l, args + 1, nargs - 1);
    if (restart)
        return launcher__restart_cmd(&l, name);
    if (check)
        return launcher__check(&l);
    return launcher__status(&l, as_json);
}
