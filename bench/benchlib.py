"""benchlib.py - what the benchmarks in bench/ share, written once.

  - processes: spawn() children that die with us, stop_child()/stop_children() by PID, and
    install_signal_handlers() so SIGINT/SIGTERM/SIGHUP unwind through every `finally`;
  - wrk: wrk_argv(), run_wrk(), parse_wrk(), and write_wrk_script(): a Lua script cycling
    through a fixed list of requests (trade bodies, etcd PUTs, order paths);
  - measure() one wrk run with the server side's CPU per request, round_robin() of several
    targets for n rounds, median_of() the rounds;
  - references with private prefixes on free loopback ports: Nginx (return 200, proxy_pass with
    a keep-alive upstream, a map of exact replies) and Etcd (a 3-member cluster, fsync on);
  - trade clusters: trade_stocks_csv(), trade_bodies(), start_trade_cluster(), and
    check_trade_log(): the replicas' `orders` tables identical after a benchmark;
  - the machine: loadavg(), machine(), process_tree(), cpu_seconds(), peak_rss_kib().

Not a test library: the product's harness is tests/lib/bazaar.py, which this builds on.
"""

import base64
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "lib"))

import bazaar  # noqa: E402

WRK_THREADS = 2
NAGLE_MS = 40.0

# ---------------------------------------------------------------------------
# Processes we start (bazaar.Cluster stops its own)
# ---------------------------------------------------------------------------

_children = []  # Popen objects, stopped by PID in stop_children()


def spawn(argv, **kw):
    """Popen that SIGKILLs the child if we die, remembered so stop_children() stops it."""
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


def install_signal_handlers():
    """SIGINT/SIGTERM/SIGHUP raise SystemExit, so every `finally` stops what it started."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)


# ---------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------


def loadavg():
    """The 1, 5 and 15 minute load averages as a string."""
    with open("/proc/loadavg", encoding="utf-8") as f:
        return " ".join(f.read().split()[:3])


def _version(argv, pattern):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1).strip() if m else "unknown"


def source_commit():
    """The repository's commit (short), with "+ local changes" when the tree differs from it."""
    def git(*argv):
        out = subprocess.run(["git", "-C", REPO_ROOT, *argv], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None
    head = git("rev-parse", "--short", "HEAD")
    if head is None:
        return "unknown"
    return head + (" + local changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine(path):
    """What the figures were measured on; `path` names the filesystem the data dirs are on."""
    fs = subprocess.run(["df", "-T", path], capture_output=True, text=True).stdout.splitlines()
    return {"commit": source_commit(), "load": loadavg(), "nproc": os.cpu_count(), "model": bazaar.cpu_model(),
            "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "wrk": _version(["wrk", "--version"], r"(wrk \S+)"),
            "nginx": _version(["nginx", "-v"], r"nginx version: (\S+)"),
            "etcd": "etcd " + _version(["etcd", "--version"], r"etcd Version: (\S+)"),
            "fs": fs[-1].split()[1] if len(fs) > 1 else "unknown"}


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


def peak_rss_kib(pid):
    """The peak resident set size (VmHWM) of a live process in KiB, None when unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


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


def wrk_argv(url, duration, threads, connections, script=None):
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    return argv + (["-s", script] if script else []) + [url]


def run_wrk(url, duration, threads, connections, script=None):
    """One wrk run, stopped by PID on every exit path; its parse_wrk() figures."""
    proc = spawn(wrk_argv(url, duration, threads, connections, script), stdout=subprocess.PIPE,
                 stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=duration + 60)
    finally:
        stop_child(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}")
    return parse_wrk(out)


# One wrk script for every request mix: each request is built once per thread in init(), and
# each thread starts at its own offset in the list so threads do not send the same request at
# the same moment. `setup` runs in wrk's main Lua state and numbers the threads.
_WRK_SCRIPT = """\
-- generated by bench/benchlib.py write_wrk_script(): cycles through {count} requests
local method = "{method}"
local items = {{
{items}
}}
local threads = {threads}
local counter = 0
local reqs = {{}}
local n = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  for i, item in ipairs(items) do
    if method == "GET" then
      reqs[i] = wrk.format("GET", item)
    else
      reqs[i] = wrk.format(method, "{path}", {{["Content-Type"] = "application/json"}}, item)
    end
  end
  n = math.floor((id or 0) * #reqs / threads) % #reqs
end

function request()
  n = n % #reqs + 1
  return reqs[n]
end
"""


def _lua_string(text):
    if "]==]" in text or "\n" in text:
        raise ValueError(f"cannot quote {text!r} as a Lua long string")
    return f"[==[{text}]==]"


def write_wrk_script(path, method, items, target="/", threads=WRK_THREADS):
    """A wrk script cycling through items: request paths for GET, JSON bodies POSTed to
    `target` otherwise."""
    if method not in ("GET", "POST") or not items:
        raise ValueError(f"write_wrk_script: {method} with {len(items)} items")
    text = _WRK_SCRIPT.format(count=len(items), method=method, threads=threads,
                              items=",\n".join("  " + _lua_string(i) for i in items),
                              path=target)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------


class Target:
    """Something to measure: a URL, an optional wrk script, and the server-side processes whose
    CPU time per request is recorded (much less sensitive to other load than req/s)."""

    def __init__(self, name, url, pids, script=None):
        self.name, self.url, self.pids, self.script = name, url, pids, script


def measure(target, duration, connections, threads=None, warmup_s=0, c1=False):
    """A warm-up (warmup_s > 0), one measured wrk run, and with c1 a one-connection run whose
    p50/p99 is the latency floor (a ~40 ms value there is the Nagle/delayed-ACK stall).
    Returns parse_wrk() figures plus cpu_us (server CPU per request), all_requests (what the
    server answered in all, warm-up included), acked (2xx replies) and the c1_* figures."""
    threads = threads or min(connections, WRK_THREADS)
    warm = run_wrk(target.url, warmup_s, threads, connections, target.script) if warmup_s else None
    cpu0 = cpu_seconds(target.pids)
    res = run_wrk(target.url, duration, threads, connections, target.script)
    res["cpu_us"] = (cpu_seconds(target.pids) - cpu0) * 1e6 / max(res["requests"], 1)
    runs = [r for r in (warm, res) if r]
    line = (f"  {target.name:<30} c={connections:<3} {res['rps']:>10,.0f} req/s  "
            f"{res['cpu_us']:7.2f} us CPU/req  p50 {res['p50_ms']:.3f} ms  "
            f"p99 {res['p99_ms']:.3f} ms  max {res['max_ms']:.1f} ms  "
            f"errors {res['errors']} non-2xx {res['non2xx']}")
    if c1:
        one = run_wrk(target.url, max(3, duration // 3), 1, 1, target.script)
        runs.append(one)
        res["c1_p50_ms"], res["c1_p99_ms"], res["c1_max_ms"] = one["p50_ms"], one["p99_ms"], one["max_ms"]
        res["c1_rps"] = one["rps"]
        line += f" | c=1: {one['rps']:,.0f} req/s p50 {one['p50_ms']:.3f} ms p99 {one['p99_ms']:.3f} ms"
    res["all_requests"] = sum(r["requests"] for r in runs)
    res["acked"] = sum(r["requests"] - r["non2xx"] for r in runs)
    res["all_non2xx"] = sum(r["non2xx"] for r in runs)
    res["all_errors"] = sum(r["errors"] for r in runs)
    print(line, flush=True)
    return res


def round_robin(targets, rounds, measure_one, label=""):
    """measure_one(target) for every target, round after round: machine noise hits them all
    alike. Returns {target name: [result of each round]}."""
    out = {t.name: [] for t in targets}
    for rnd in range(1, rounds + 1):
        print(f"{label} round {rnd}/{rounds} (load {loadavg()})", flush=True)
        for t in targets:
            out[t.name].append(measure_one(t))
    return out


def median_of(runs):
    """The run with the median req/s (its latencies come with it), the median CPU per request,
    every run's req/s and the totals over all runs."""
    ranked = sorted(runs, key=lambda r: r["rps"])
    res = dict(ranked[len(ranked) // 2])
    res["all_rps"] = [r["rps"] for r in runs]
    res["cpu_us"] = sorted(r["cpu_us"] for r in runs)[len(runs) // 2]
    for key in ("all_requests", "acked", "all_non2xx", "all_errors"):
        res[key] = sum(r[key] for r in runs)
    return res


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

# Exact replies by URI (GET /orders/{n}): a hashed map lookup, then `return 200`.
NGINX_MAP = """\
    map_hash_max_size {hash_size};
    map_hash_bucket_size 128;
    map $uri $bazaar_reply {{
        default "";
{entries}
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            default_type application/json;
            if ($bazaar_reply = "") {{
                return 404 '{{"error":{{"code":404,"message":"order not found"}}}}';
            }}
            return 200 $bazaar_reply;
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


def nginx_map_entries(replies):
    """NGINX_MAP entries for {uri: reply bytes}."""
    return "\n".join(f"        '{nginx_literal(uri)}' '{nginx_literal(body.decode())}';"
                     for uri, body in sorted(replies.items()))


class Nginx:
    """One nginx master with its own prefix, config and log, started in the foreground."""

    def __init__(self, root, name, server_blocks, workers=2):
        self.prefix = os.path.join(root, name)
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        with open(self.conf, "w", encoding="utf-8") as f:
            f.write(NGINX_MAIN.format(workers=workers, prefix=self.prefix, body=server_blocks))
        self.proc = None
        self.port = None

    def start(self, port):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        argv = [nginx, "-p", self.prefix, "-c", self.conf, "-e", os.path.join(self.prefix, "error.log")]
        check = subprocess.run(argv[:1] + ["-t", "-q"] + argv[1:], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {check.stderr.strip()}")
        with open(os.path.join(self.prefix, "stderr.log"), "ab") as log:
            self.proc = spawn(argv, stdout=log, stderr=subprocess.STDOUT)
        self.port = port
        bazaar.wait_for(self._answers, timeout=10, what=f"nginx on port {port}")
        return self

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def pids(self):
        return process_tree(self.proc.pid)

    def _answers(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {self.error_tail()}")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return True
        except OSError:
            return False
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


def start_nginx_proxy(root, name, upstream_template, keepalive, **fields):
    """An upstream nginx of `upstream_template` (NGINX_RETURN or NGINX_MAP, formatted with
    `fields` and its port) and an nginx proxy_pass in front of it with `keepalive` idle upstream
    connections. Returns (proxy, upstream), both started."""
    up_port, proxy_port = bazaar.free_port(), bazaar.free_port()
    upstream = Nginx(root, f"{name}-upstream", upstream_template.format(port=up_port, **fields))
    proxy = Nginx(root, f"{name}-proxy", NGINX_PROXY.format(port=proxy_port, upstream=up_port,
                                                            keepalive=keepalive))
    try:
        upstream.start(up_port)
        proxy.start(proxy_port)
    except BaseException:
        proxy.stop()
        upstream.stop()
        raise
    return proxy, upstream


# ---------------------------------------------------------------------------
# etcd: a 3-member cluster on loopback, fsync on (its defaults)
# ---------------------------------------------------------------------------


class Etcd:
    """An etcd cluster of `members` processes, each with its own data dir under root, client
    and peer URLs on free loopback ports; PUTs go through its v3 JSON gateway."""

    def __init__(self, root, members=3):
        self.root = os.path.join(root, "etcd")
        self.members = members
        self.procs = []
        self.client_ports = []

    def start(self, attempts=3):
        for attempt in range(1, attempts + 1):
            shutil.rmtree(self.root, ignore_errors=True)
            os.makedirs(self.root)
            self.client_ports = [bazaar.free_port() for _ in range(self.members)]
            peers = [bazaar.free_port() for _ in range(self.members)]
            initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(peers, 1))
            for i, (client, peer) in enumerate(zip(self.client_ports, peers), 1):
                argv = ["etcd", "--name", f"m{i}", "--data-dir", os.path.join(self.root, f"m{i}"),
                        "--listen-client-urls", f"http://127.0.0.1:{client}",
                        "--advertise-client-urls", f"http://127.0.0.1:{client}",
                        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                        "--initial-cluster", initial, "--initial-cluster-state", "new",
                        "--initial-cluster-token", "bazaar-bench",
                        "--logger", "zap", "--log-level", "warn"]
                with open(os.path.join(self.root, f"m{i}.log"), "ab") as log:
                    self.procs.append(spawn(argv, stdout=log, stderr=subprocess.STDOUT))
            try:
                bazaar.wait_for(self._healthy, timeout=30, what="etcd members healthy")
                return self
            except (AssertionError, RuntimeError) as exc:
                self.stop()
                if attempt == attempts:
                    raise RuntimeError(f"etcd did not start: {exc}\n{self.log_tail()}") from None
        return self

    def _call(self, port, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _healthy(self):
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"etcd member exited with {proc.returncode}")
        try:
            return all(self._call(p, "GET", "/health")[0] == 200 for p in self.client_ports)
        except OSError:
            return False

    def status(self, port):
        """POST /v3/maintenance/status of one member, as JSON."""
        code, body = self._call(port, "POST", "/v3/maintenance/status", b"{}")
        if code != 200:
            raise RuntimeError(f"etcd status answered {code}: {body[:200]!r}")
        return json.loads(body)

    def leader_port(self):
        """The client port of the current leader (a follower would forward every PUT to it)."""
        def find():
            for port in self.client_ports:
                st = self.status(port)
                if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                    return port
            return None
        return bazaar.wait_for(find, timeout=10, what="an etcd leader")

    def revision(self):
        """The store's revision: one more per successful PUT."""
        return int(self.status(self.leader_port())["header"]["revision"])

    def pids(self):
        return [p.pid for p in self.procs if p.poll() is None]

    def log_tail(self):
        out = []
        for i in range(1, self.members + 1):
            try:
                with open(os.path.join(self.root, f"m{i}.log"), encoding="utf-8", errors="replace") as f:
                    out.append(f"--- etcd m{i} ---\n" + f.read()[-800:])
            except OSError:
                pass
        return "\n".join(out)

    def stop(self):
        for proc in self.procs:
            stop_child(proc)
        self.procs = []


def etcd_put_bodies(count=24):
    """`count` v3 gateway PUT bodies over as many keys as trades use stocks (base64 key and
    value), alternating two values as trades alternate buy and sell."""
    names = list(bazaar.parse_stocks_csv(bazaar.default_stocks_csv()))
    out = []
    for k in range(count):
        key = f"stock/{names[k % len(names)]}".encode()
        value = b"buy" if (k // len(names)) % 2 == 0 else b"sell"
        out.append(json.dumps({"key": base64.b64encode(key).decode(),
                               "value": base64.b64encode(value).decode()}, separators=(",", ":")))
    return out


# ---------------------------------------------------------------------------
# Trade clusters
# ---------------------------------------------------------------------------


def trade_stocks_csv():
    """The default stocks, each with 100,000 shares, so buy/sell traffic never meets a 409."""
    stocks = bazaar.parse_stocks_csv(bazaar.default_stocks_csv())
    return "name,price,quantity\n" + "".join(f"{n},{p},100000\n" for n, (p, _) in stocks.items())


def trade_bodies():
    """POST /orders bodies: 1 share of each default stock in turn, buys for one pass over the
    stocks, sells for the next (so quantities stay where they were)."""
    names = list(bazaar.parse_stocks_csv(bazaar.default_stocks_csv()))
    return [json.dumps({"name": names[k % len(names)],
                        "type": "buy" if (k // len(names)) % 2 == 0 else "sell", "quantity": 1},
                       separators=(",", ":"))
            for k in range(2 * len(names))]


def write_trade_script(path):
    return write_wrk_script(path, "POST", trade_bodies(), "/orders")


def parse_variants(specs):
    """--variant name=BIN_DIR:MODE arguments as (name, bin_dir, mode) tuples, in order."""
    variants = []
    for v in specs:
        name, rest = v.split("=", 1)
        bindir, mode = rest.rsplit(":", 1)
        variants.append((name, bindir, mode))
    return variants


def start_trade_cluster(root, name, mode, bin_dir, overrides=None):
    """A 3-replica cluster (majority acks) of `mode` from bin_dir, with trade_stocks_csv()."""
    os.environ["BAZAAR_BIN_DIR"] = os.path.abspath(bin_dir)
    cluster = bazaar.Cluster(os.path.join(root, name), replicas=3, mode=mode, overrides=overrides,
                             stocks_csv=trade_stocks_csv(), log_level="warn")
    return cluster.start()


def stop_clusters(clusters, root):
    """The end of a run, however it ends: every cluster in the dict stopped, any child process
    left stopped by PID, the temporary root removed."""
    for c in clusters.values():
        c.stop()
    stop_children()
    shutil.rmtree(root, ignore_errors=True)


def cluster_pids(cluster):
    return [p.pid for p in cluster.processes.values() if p.pid is not None]


def check_trade_log(cluster, acked, name):
    """After a trade benchmark: once the replicas are idle, their `orders` tables are identical
    (bazaar.find_invariant_violations: every column, numbers dense from 0, no request id twice,
    the log replays to the catalog's quantities) and hold at least the `acked` orders wrk
    counted as 2xx. Raises RuntimeError naming every violation; returns the number of orders."""
    idle = bazaar.wait_replicas_idle(cluster, timeout=120)
    orders = idle["last"] + 1
    problems = bazaar.find_invariant_violations(cluster, [], cluster.initial_stocks, query=False)
    if orders < acked:
        problems.append(f"the log holds {orders} orders but wrk counted {acked} acknowledged")
    if problems:
        raise RuntimeError(f"{name}: replicas are not consistent after the benchmark:\n  "
                           + "\n  ".join(problems))
    return orders
