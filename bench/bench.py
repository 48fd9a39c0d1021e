#!/usr/bin/env python3
"""bench.py - the front-end's lookup path against nginx, for cache hits and cache misses.

One run measures, with the same wrk command line each time (ours and nginx alternate for
--rounds rounds; the medians are reported):
  hit:   bazaar-frontend (cache on, 2 MHD threads) serving a cached GET /stocks/GameStart
         vs nginx (2 workers) answering `return 200 '<the same bytes>'`
  miss:  bazaar-frontend (cache off, 2 threads) asking bazaar-catalog (2 threads) every time
         vs nginx (2 workers) proxy_pass with upstream keepalive to a second nginx (2 workers)
         that answers `return 200 '<the same bytes>'`
  c=1:   one connection, one thread, for each of the four: the latency floor, where a
         Nagle/delayed-ACK stall would show as ~40 ms.
It prints the figures and ratios (ours / nginx) and rewrites bench/README.md.

Every process it starts (cluster services, nginx masters, wrk) is stopped by PID on
every exit path: normal end, exception, SIGINT or SIGTERM.

Usage: python3 bench/bench.py [--bin-dir build/bin] [--duration 10] [--rounds 3] [--no-readme]
Normally run through bench/run.sh (`make bench`).
"""

import argparse
import datetime
import http.client
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "lib"))

import bazaar  # noqa: E402

STOCK = "GameStart"
PATH = f"/stocks/{STOCK}"
SERVER_THREADS = 2          # front-end MHD threads = catalog threads = nginx workers per tier
WRK_THREADS = 2
WRK_CONNECTIONS = 64
WARMUP_S = 2
NAGLE_MS = 40.0

# ---------------------------------------------------------------------------
# Processes we start (besides the cluster, which bazaar.Cluster stops itself)
# ---------------------------------------------------------------------------

_children = []  # Popen objects, stopped by PID in stop_children()


def spawn(argv, **kw):
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=bazaar._die_with_parent, **kw)
    _children.append(proc)
    return proc


def stop_child(proc, sig=signal.SIGTERM, grace=5.0):
    """Signal one child by PID, wait, SIGKILL after grace seconds, reap."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in _children:
        _children.remove(proc)


def stop_children():
    for proc in list(reversed(_children)):
        stop_child(proc)


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------
# nginx with a private prefix
# ---------------------------------------------------------------------------

NGINX_MAIN = """\
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 100000000;   # our front-end never closes a busy keep-alive connection
    keepalive_timeout 30s;          # as our idle_timeout_s
{body}
}}
"""

NGINX_RETURN = """\
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            default_type application/json;
            return 200 '{reply}';
        }}
    }}
"""

NGINX_PROXY = """\
    upstream bazaar_upstream {{
        server 127.0.0.1:{upstream};
        keepalive {keepalive};
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://bazaar_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


def nginx_literal(text):
    """text as the inside of a single-quoted nginx string (no variables in JSON we serve)."""
    if "$" in text:
        raise ValueError("the reply contains '$', which nginx would expand")
    return text.replace("\\", "\\\\").replace("'", "\\'")


class Nginx:
    """One nginx master with its own prefix, config and log, started in the foreground."""

    def __init__(self, root, name, server_blocks, workers=SERVER_THREADS):
        self.prefix = os.path.join(root, name)
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        with open(self.conf, "w", encoding="utf-8") as f:
            f.write(NGINX_MAIN.format(workers=workers, prefix=self.prefix, body=server_blocks))
        self.proc = None

    def start(self, port):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        check = subprocess.run([nginx, "-t", "-q", "-p", self.prefix, "-c", self.conf,
                                "-e", os.path.join(self.prefix, "error.log")],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {check.stderr.strip()}")
        log = open(os.path.join(self.prefix, "stderr.log"), "ab")
        self.proc = spawn([nginx, "-p", self.prefix, "-c", self.conf,
                           "-e", os.path.join(self.prefix, "error.log")],
                          stdout=log, stderr=subprocess.STDOUT)
        log.close()
        bazaar.wait_for(lambda: self._answers(port), timeout=10, what=f"nginx on port {port}")
        return self

    def _answers(self, port):
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {self.error_tail()}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", PATH)
            return conn.getresponse().status == 200
        finally:
            conn.close()

    def error_tail(self):
        try:
            with open(os.path.join(self.prefix, "error.log"), encoding="utf-8", errors="replace") as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None:
            stop_child(self.proc, signal.SIGQUIT)  # graceful: the master stops its workers
            self.proc = None


# ---------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out):
    """Requests/s, latency percentiles (ms), max (ms), requests, errors from wrk --latency output."""
    res = {"errors": 0, "non2xx": 0}
    for line in out.splitlines():
        s = line.strip()
        if s.startswith("Requests/sec:"):
            res["rps"] = float(s.split()[1])
        elif s.startswith("Latency ") and "Distribution" not in s:
            parts = s.split()
            res["avg_ms"], res["max_ms"] = _ms(parts[1]), _ms(parts[3])
        elif re.fullmatch(r"(50|75|90|99)%\s+\S+", s):
            pct, val = s.split()
            res[f"p{pct[:-1]}_ms"] = _ms(val)
        elif re.match(r"\d+ requests in", s):
            res["requests"] = int(s.split()[0])
        elif s.startswith("Socket errors:"):
            res["errors"] = sum(int(n) for n in re.findall(r"\d+", s))
        elif s.startswith("Non-2xx or 3xx responses:"):
            res["non2xx"] = int(s.split(":")[1])
    missing = {"rps", "p50_ms", "p99_ms", "max_ms", "requests"} - set(res)
    if missing:
        raise RuntimeError(f"could not parse wrk output (missing {missing}):\n{out}")
    return res


def wrk_argv(url, duration, threads=WRK_THREADS, connections=WRK_CONNECTIONS):
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]


def run_wrk(url, duration, threads=WRK_THREADS, connections=WRK_CONNECTIONS):
    proc = spawn(wrk_argv(url, duration, threads, connections), stdout=subprocess.PIPE,
                 stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=duration + 60)
    finally:
        stop_child(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}")
    return parse_wrk(out)


def process_tree(pid):
    """pid and every descendant (an nginx master's workers), from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def cpu_seconds(pids):
    """User + system CPU time used so far by these processes."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(label, url, duration, pids, warmup=True):
    """One wrk measurement; `pids` are the server-side processes whose CPU time per request
    is recorded (a figure much less sensitive to other load on the machine than req/s)."""
    warm = run_wrk(url, WARMUP_S)["requests"] if warmup else 0
    cpu0 = cpu_seconds(pids)
    res = run_wrk(url, duration)
    res["cpu_us"] = (cpu_seconds(pids) - cpu0) * 1e6 / max(res["requests"], 1)
    one = run_wrk(url, max(3, duration // 3), threads=1, connections=1)
    res["all_requests"] = warm + res["requests"] + one["requests"]  # what the server answered
    res["c1_p50_ms"], res["c1_p99_ms"], res["c1_max_ms"] = one["p50_ms"], one["p99_ms"], one["max_ms"]
    res["c1_rps"] = one["rps"]
    print(f"  {label:<34} {res['rps']:>10.0f} req/s  {res['cpu_us']:5.2f} us CPU/req  "
          f"p50 {res['p50_ms']:.3f} ms  "
          f"p99 {res['p99_ms']:.3f} ms  max {res['max_ms']:.1f} ms  "
          f"errors {res['errors']} non-2xx {res['non2xx']} | c=1: {one['rps']:.0f} req/s "
          f"p50 {one['p50_ms']:.3f} ms p99 {one['p99_ms']:.3f} ms", flush=True)
    return res


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def fetch(url):
    """(status, headers as list, body bytes) of one GET on a fresh connection."""
    host, port, target = bazaar._split_url(url)
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def start_cluster(root, name, cache, bin_dir):
    os.environ["BAZAAR_BIN_DIR"] = bin_dir
    cluster = bazaar.Cluster(os.path.join(root, name), replicas=1, log_level="warn",
                             overrides={"frontend": {"cache": cache, "threads": SERVER_THREADS},
                                        "catalog": {"threads": SERVER_THREADS}})
    return cluster.start()


def loadavg():
    with open("/proc/loadavg", encoding="utf-8") as f:
        return " ".join(f.read().split()[:3])


def machine():
    model = bazaar.cpu_model()
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    nginx_version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    return {"load": loadavg(), "nproc": os.cpu_count(), "model": model, "kernel": platform.release(),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "wrk": (wrk_version.split(" [")[0] or "wrk").strip(),
            "nginx": nginx_version.strip().replace("nginx version: ", "")}


def median_of(runs):
    """The run with the median req/s (its latencies come with it), plus every run's req/s."""
    ranked = sorted(runs, key=lambda r: r["rps"])
    res = dict(ranked[len(ranked) // 2])
    res["all_rps"] = [r["rps"] for r in runs]
    res["cpu_us"] = sorted(r["cpu_us"] for r in runs)[len(runs) // 2]
    res["all_cpu_us"] = [r["cpu_us"] for r in runs]
    res["all_requests"] = sum(r["all_requests"] for r in runs)
    return res


def compare(args, label, ours_url, nginx_url, ours_label, nginx_label, ours_pids, nginx_pids):
    """Alternate ours and nginx for args.rounds rounds; medians of each."""
    ours, ref = [], []
    for rnd in range(1, args.rounds + 1):
        print(f"{label} round {rnd}/{args.rounds}", flush=True)
        ours.append(measure(ours_label, ours_url, args.duration, ours_pids))
        ref.append(measure(nginx_label, nginx_url, args.duration, nginx_pids))
    return median_of(ours), median_of(ref)


def run(args):
    root = tempfile.mkdtemp(prefix="bazaar-bench-")
    results = {}
    clusters = []
    nginxes = []
    try:
        print(f"bench: {args.rounds} x {args.duration}s per case, wrk -t{WRK_THREADS} "
              f"-c{WRK_CONNECTIONS}, {SERVER_THREADS} server threads/workers per tier, "
              f"load average {loadavg()}, temp {root}", flush=True)
        # --- hits: ours (cache on) vs nginx return 200 --------------------------
        cluster = start_cluster(root, "hit", "on", args.bin_dir)
        clusters.append(cluster)
        ours_url = cluster.frontend_url(PATH)
        status, ours_headers, reply = fetch(ours_url)  # the miss that fills the cache
        if status != 200:
            raise RuntimeError(f"front-end answered {status}: {reply!r}")
        port = bazaar.free_port()
        ngx = Nginx(root, "nginx-return",
                    NGINX_RETURN.format(port=port, reply=nginx_literal(reply.decode())))
        nginxes.append(ngx)
        ngx.start(port)
        nginx_url = f"http://127.0.0.1:{port}{PATH}"
        _, nginx_headers, nginx_reply = fetch(nginx_url)
        if nginx_reply != reply:
            raise RuntimeError(f"nginx serves other bytes: {nginx_reply!r} != {reply!r}")
        before = cluster.status()["cache"]
        results["hit_ours"], results["hit_nginx"] = compare(
            args, "hits", ours_url, nginx_url, "ours  (cache hit, 2 threads)",
            "nginx (return 200, 2 workers)", [cluster.processes["frontend"].pid],
            process_tree(ngx.proc.pid))
        after = cluster.status()["cache"]
        results["hit_check"] = (after["hits"] - before["hits"], after["misses"] - before["misses"])
        ngx.stop()
        cluster.stop()

        # --- misses: ours (cache off) vs nginx proxy_pass -> nginx return 200 ----
        cluster = start_cluster(root, "miss", "off", args.bin_dir)
        clusters.append(cluster)
        ours_url = cluster.frontend_url(PATH)
        status, _, miss_reply = fetch(ours_url)
        if status != 200 or miss_reply != reply:
            raise RuntimeError(f"cache-off reply differs: {status} {miss_reply!r}")
        up_port, proxy_port = bazaar.free_port(), bazaar.free_port()
        upstream = Nginx(root, "nginx-upstream",
                         NGINX_RETURN.format(port=up_port, reply=nginx_literal(reply.decode())))
        proxy = Nginx(root, "nginx-proxy", NGINX_PROXY.format(port=proxy_port, upstream=up_port,
                                                              keepalive=WRK_CONNECTIONS))
        nginxes += [upstream, proxy]
        upstream.start(up_port)
        proxy.start(proxy_port)
        nginx_url = f"http://127.0.0.1:{proxy_port}{PATH}"
        _, _, proxied = fetch(nginx_url)
        if proxied != reply:
            raise RuntimeError(f"nginx proxy serves other bytes: {proxied!r}")
        prefix = 'bazaar_catalog_http_requests_total{route="GET /stocks/{}"'

        def lookups():
            return sum(v for k, v in cluster.metrics("catalog").items() if k.startswith(prefix))

        catalog_before = lookups()
        results["miss_ours"], results["miss_nginx"] = compare(
            args, "misses", ours_url, nginx_url, "ours  (cache off -> catalog)",
            "nginx (proxy_pass + keepalive)",
            [cluster.processes["frontend"].pid, cluster.processes["catalog"].pid],
            process_tree(proxy.proc.pid) + process_tree(upstream.proc.pid))
        results["miss_check"] = lookups() - catalog_before
        proxy.stop()
        upstream.stop()
        cluster.stop()
    finally:
        for ngx in nginxes:
            ngx.stop()
        for cluster in clusters:
            cluster.stop()
        stop_children()
        if not args.keep_tmp:
            shutil.rmtree(root, ignore_errors=True)
    results["reply"] = reply
    results["rounds"] = args.rounds
    results["ours_headers"] = ours_headers
    results["nginx_headers"] = nginx_headers
    return results


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def header_bytes(headers):
    return sum(len(k) + len(v) + 4 for k, v in headers) + 2


def row(label, ours, ref):
    ratio = ours["rps"] / ref["rps"]
    return (f"| {label} | {ours['rps']:,.0f} | {ref['rps']:,.0f} | **{ratio:.2f}** | "
            f"{ours['cpu_us']:.2f} / {ref['cpu_us']:.2f} | **{ref['cpu_us'] / ours['cpu_us']:.2f}** | "
            f"{ours['p50_ms']:.3f} / {ours['p99_ms']:.3f} | {ref['p50_ms']:.3f} / {ref['p99_ms']:.3f} | "
            f"{ours['c1_p50_ms']:.3f} / {ours['c1_p99_ms']:.3f} | "
            f"{ref['c1_p50_ms']:.3f} / {ref['c1_p99_ms']:.3f} |")


def warnings_of(results):
    out = []
    for key in ("hit_ours", "hit_nginx", "miss_ours", "miss_nginx"):
        r = results[key]
        if r["errors"] or r["non2xx"]:
            out.append(f"{key}: {r['errors']} socket errors, {r['non2xx']} non-2xx replies")
        # With one connection nothing queues: a reply written in two sends stalls ~40 ms on the
        # delayed ACK, so a p50 or p99 that high there means Nagle (or a starved CPU, see load).
        if r["c1_p50_ms"] >= NAGLE_MS / 2 or r["c1_p99_ms"] >= NAGLE_MS * 0.9:
            out.append(f"{key}: one-connection p50 {r['c1_p50_ms']:.2f} ms, p99 {r['c1_p99_ms']:.1f} ms: "
                       f"looks like the {NAGLE_MS:.0f} ms Nagle/delayed-ACK stall (or a starved CPU)")
    hits, misses = results["hit_check"]
    if misses:
        out.append(f"hit run: the cache counted {misses} misses (expected 0)")
    # wrk counts completed replies only: each wrk run may leave one request per connection
    # answered but uncounted (warm-up and main run at 64 connections, the c=1 run at 1).
    sent = results["hit_ours"]["all_requests"]
    if not sent <= hits <= sent + results["rounds"] * (2 * WRK_CONNECTIONS + 1):
        out.append(f"hit run: the cache counted {hits} hits for {sent} replies wrk counted")
    sent = results["miss_ours"]["all_requests"]
    if results["miss_check"] < sent:
        out.append(f"miss run: the catalog counted {results['miss_check']:.0f} lookups for "
                   f"{sent} front-end replies")
    return out


def report(results, mach, args, command):
    hit = results["hit_ours"]["rps"] / results["hit_nginx"]["rps"]
    miss = results["miss_ours"]["rps"] / results["miss_nginx"]["rps"]
    print()
    for key in ("hit_ours", "hit_nginx", "miss_ours", "miss_nginx"):
        print(f"{key:<11} req/s of each round: "
              + ", ".join(f"{v:,.0f}" for v in results[key]["all_rps"]))
    print(f"HIT : ours {results['hit_ours']['rps']:,.0f} req/s, nginx {results['hit_nginx']['rps']:,.0f} "
          f"req/s, ratio {hit:.2f}")
    print(f"MISS: ours {results['miss_ours']['rps']:,.0f} req/s, nginx {results['miss_nginx']['rps']:,.0f} "
          f"req/s, ratio {miss:.2f}")
    for case in ("hit", "miss"):
        o, n = results[f"{case}_ours"]["cpu_us"], results[f"{case}_nginx"]["cpu_us"]
        print(f"{case.upper():<4}: server CPU per request: ours {o:.2f} us, nginx {n:.2f} us, "
              f"nginx / ours {n / o:.2f}")
    warns = warnings_of(results)
    for w in warns:
        print(f"WARNING: {w}")
    if args.no_readme:
        return
    table = "\n".join([
        "| path | ours req/s | nginx req/s | ours / nginx | server CPU us/req ours / nginx "
        "| CPU nginx / ours | ours p50 / p99 ms | nginx p50 / p99 ms "
        "| ours c=1 p50 / p99 ms | nginx c=1 p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        row("cache hit (vs `return 200`)", results["hit_ours"], results["hit_nginx"]),
        row("cache miss (vs `proxy_pass`)", results["miss_ours"], results["miss_nginx"]),
    ])
    text = README.format(
        table=table, date=mach["date"], nproc=mach["nproc"], model=mach["model"],
        kernel=mach["kernel"], load=mach["load"], wrk=mach["wrk"], nginx=mach["nginx"],
        duration=args.duration,
        wrk_cmd=" ".join(wrk_argv("URL", args.duration)), command=command,
        reply=results["reply"].decode(), ours_hdr=header_bytes(results["ours_headers"]),
        nginx_hdr=header_bytes(results["nginx_headers"]),
        hit_check=f"{results['hit_check'][0]} hits / {results['hit_check'][1]} misses",
        miss_check=f"{results['miss_check']:.0f}",
        warnings="\n".join(f"- {w}" for w in warns) or "- none",
        threads=SERVER_THREADS, warmup=WARMUP_S, rounds=args.rounds,
        **{f"r_{k}": ", ".join(f"{v:,.0f}" for v in results[k]["all_rps"])
           for k in ("hit_ours", "hit_nginx", "miss_ours", "miss_nginx")})
    with open(os.path.join(BENCH_DIR, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(os.path.join(BENCH_DIR, 'README.md'), REPO_ROOT)}")


README = """\
# Benchmarks

## Lookup path: front-end vs nginx (`bench/run.sh`, `make bench`)

What it measures: throughput and latency of `GET /stocks/GameStart` through `bazaar-frontend`,
against nginx doing the equivalent work, with the same `wrk` command line and the same reply bytes
(`{reply}`; response headers: ours {ours_hdr} bytes, nginx {nginx_hdr} bytes).

| case | ours | reference |
|---|---|---|
| **cache hit** | front-end, `cache = on`, `[frontend] threads = {threads}`; the entry is filled before measuring | nginx, `worker_processes {threads}`, `return 200 '<same JSON>'`, `default_type application/json` |
| **cache miss** | front-end, `cache = off`, {threads} threads, so every request is a libcurl keep-alive call to `bazaar-catalog` (`[catalog] threads = {threads}`) | nginx ({threads} workers) `proxy_pass` with `upstream keepalive` to a second nginx ({threads} workers) that answers `return 200` with the same bytes |

Method: one cluster (catalog, 1 order replica, front-end; `log_level = warn`) on free loopback
ports below 32768, then nginx with a private prefix, `daemon off`, `access_log off`,
`keepalive_requests` effectively unlimited (as our front-end). Each measurement is a {warmup} s wrk
warm-up, then `{wrk_cmd}` (the throughput and p50/p99 below), then a one-connection run
(`wrk -t1 -c1 --latency`) whose p50/p99 is the latency floor; a ~40 ms value there is the
Nagle/delayed-ACK stall of a reply written in two sends. Ours and nginx alternate for {rounds}
rounds per case and the table shows the median round (by req/s) of each; only one of them is
under load at a time. Alongside req/s the bench records the server side's CPU time per request
(user + system time of the front-end, plus the catalog for misses; of the nginx master and
workers, plus the upstream for misses), read from /proc around the main wrk run: wrk competes
with the servers for the same CPUs, so req/s moves with other load, while CPU per request mostly
does not. "CPU nginx / ours" above 1 means we spend less CPU per request than nginx.
The bench checks that both sides serve identical bytes, that the hit run counted no cache misses,
and that every miss-run request reached the catalog. Everything runs on the same machine as wrk,
so the absolute numbers are CPU-shared; the ratios are the point.

### Latest run

{table}

Req/s of every round: hit ours {r_hit_ours}; hit nginx {r_hit_nginx}; miss ours {r_miss_ours};
miss nginx {r_miss_nginx}.

Sanity checks: hit run counted {hit_check} at the front-end (including warm-up and the c=1 run);
miss run: the catalog answered {miss_check} lookups.
Warnings:
{warnings}

Machine: {nproc} CPUs, {model}, Linux {kernel}; {nginx}; {wrk}; {date};
load average at the start {load} (other work on the machine shows up as noise, mostly in p99).

Reproduce:

    {command}

(`BIN_DIR` defaults to `build/bin`; build with `make build`, which is RelWithDebInfo.
`DURATION=s` changes the {duration} s measuring time, `ROUNDS=n` the {rounds} rounds.)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", default=os.path.join(REPO_ROOT, "build", "bin"))
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating ours/nginx rounds per case; medians are reported")
    parser.add_argument("--no-readme", action="store_true", help="print only, keep README.md")
    parser.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    parser.add_argument("--command", default="make bench", help="reproduce command for README.md")
    args = parser.parse_args()
    args.bin_dir = os.path.abspath(args.bin_dir)
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"bench: {tool} is not installed (scripts/deps.sh installs it)")
    if not os.access(os.path.join(args.bin_dir, "bazaar-frontend"), os.X_OK):
        sys.exit(f"bench: no bazaar-frontend in {args.bin_dir} (make build, or set BIN_DIR)")
    os.environ["PATH"] += os.pathsep + "/usr/sbin"
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    try:
        mach = machine()
        results = run(args)
        report(results, mach, args, args.command)
    finally:
        stop_children()


if __name__ == "__main__":
    main()
