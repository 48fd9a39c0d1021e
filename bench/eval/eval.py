#!/usr/bin/env python3
"""bench/eval/eval.py - the evaluation behind docs/eval.md (run it through bench/eval.sh).

Three experiments on local clusters started with tests/lib/bazaar.py (free ports below 32768):

  1. latency vs p: 5 bazaar-client sessions, p = 0 .. 0.8, cache on and off, a fresh cluster
     for every point, repeated REPS times in interleaved order;
  2. cache replacement: cache_size 4 of 12 stocks, /status sampled every 100 ms while the
     client's working set moves, then trades start;
  3. crash experiments: 5 sessions at p = 0.5 while order replicas are SIGKILLed and restarted;
     client errors, latency around each kill, replica order logs and catalog conservation.

Writes CSV files, gnuplot PNGs and eval.md into --out (a staging directory that bench/eval.sh
moves into docs/ only when everything succeeded). Python 3 standard library + gnuplot only.
Every process it starts is stopped on every exit path (Cluster.stop, Popen.kill by PID; the
harness also gives each service PR_SET_PDEATHSIG).
"""

import argparse
import csv
import gzip
import hashlib
import json
import math
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

import bazaar  # noqa: E402  (the test harness, used read-only)

# ----------------------------------------------------------------------------- parameters

PS = [0.0, 0.2, 0.4, 0.6, 0.8]
SESSIONS = 5


def env_int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


REPS = env_int("EVAL_REPS", 5)              # repetitions of every (p, cache) point
ITERATIONS = env_int("EVAL_ITERATIONS", 600)  # per session and point
CRASH_RUNS = env_int("EVAL_CRASH_RUNS", 2)
CRASH_DURATION = env_int("EVAL_CRASH_DURATION", 30)
KILLS = env_int("EVAL_KILLS", 6)
SEED = env_int("EVAL_SEED", 1)
PHASE_S = env_int("EVAL_PHASE_S", 4)

# ----------------------------------------------------------------------------- helpers

_children = set()  # Popen objects of bazaar-client runs, killed by PID on exit
_children_lock = threading.Lock()


def log(msg):
    print(f"[eval {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def on_term(signum, _frame):
    raise SystemExit(128 + signum)


def kill_children():
    with _children_lock:
        procs = list(_children)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def start_client(bin_dir, url, stocks_path, csv_path, p, seed, iterations=0, duration=None,
                 stocks=None):
    """Start bazaar-client; returns (Popen, monotonic time just before the start)."""
    argv = [os.path.join(bin_dir, "bazaar-client"), "--url", url, "--sessions", str(SESSIONS),
            "--iterations", str(iterations), "--p", str(p), "--seed", str(seed), "--json",
            "--quiet"]
    argv += ["--stocks", ",".join(stocks)] if stocks else ["--stocks-file", stocks_path]
    if csv_path:
        argv += ["--csv", csv_path]
    if duration is not None:
        argv += ["--duration-s", str(duration)]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    with _children_lock:
        _children.add(proc)
    return proc, t0


def finish_client(proc, timeout):
    """Wait (bounded) for a client started by start_client; returns (exit code, JSON summary or
    None, stderr). Kills it by PID on timeout or any other exception."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        with _children_lock:
            _children.discard(proc)
    summary = None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                summary = json.loads(line)
            except ValueError:
                pass
    if proc.returncode == 2:
        raise RuntimeError(f"bazaar-client refused its flags: {err.strip()[:300]}")
    if proc.returncode != 0:
        log(f"bazaar-client exited {proc.returncode}: {err.strip()[-800:]}")
    return proc.returncode, summary, err


def run_client(bin_dir, url, stocks_path, csv_path, p, seed, iterations=0, duration=None,
               stocks=None, timeout=180):
    """Run bazaar-client to completion; returns (exit code, JSON summary or None, t0, stderr)."""
    proc, t0 = start_client(bin_dir, url, stocks_path, csv_path, p, seed, iterations, duration,
                            stocks)
    rc, summary, err = finish_client(proc, timeout)
    return rc, summary, t0, err


def read_client_csv(path):
    """Rows of a client CSV as tuples (session, type, start_s, latency_ms, status)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows.append((int(r["session"]), r["type"], int(r["start_us"]) / 1e6,
                         int(r["latency_us"]) / 1e3, int(r["status"])))
    return rows


def ok_status(kind, status):
    return status == 200 or (kind == "trade" and status == 409)


def pct(values, q):
    """Nearest-rank percentile of a list (q in 0..100); NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


def mean(values):
    return sum(values) / len(values) if values else float("nan")


def fmt(x, digits=3):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return float("nan")
    return a / b


def new_cluster(tmp, name, overrides):
    os.makedirs(os.path.join(tmp, name), exist_ok=True)
    c = bazaar.Cluster(os.path.join(tmp, name), replicas=3, overrides=overrides, log_level="warn",
                       startup_timeout=30.0)
    c.start()
    return c


def nan_csv(x):
    return "NaN" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


# ----------------------------------------------------------------------------- experiment 1


def experiment_latency(args, tmp, out):
    log(f"experiment 1: latency vs p, {REPS} repetitions x {len(PS)} p x cache on/off, "
        f"{SESSIONS} sessions x {ITERATIONS} iterations")
    runs = []  # dicts: rep, p, cache, rc, hits, misses, samples{type: [ms]}, errors{type: n}
    order_rng = random.Random(SEED)
    for rep in range(REPS):
        points = [(p, cache) for p in PS for cache in ("on", "off")]
        order_rng.shuffle(points)  # interleave so drift on a shared machine hits both sides
        for p, cache in points:
            name = f"lat-r{rep}-p{int(p * 10)}-{cache}"
            overrides = {"frontend": {"cache": cache, "cache_size": "12"}}
            c = new_cluster(tmp, name, overrides)
            try:
                csv_path = os.path.join(tmp, name, "client.csv")
                seed = SEED * 1000 + rep * 10 + int(p * 10)  # same workload for on and off
                rc, summary, _, _ = run_client(args.bin_dir, c.frontend_url(), c.stocks_path,
                                               csv_path, p, seed, iterations=ITERATIONS)
                st = c.status()["cache"]
            finally:
                c.stop()
            rows = read_client_csv(csv_path)
            samples = {"lookup": [], "trade": [], "query": []}
            errors = {"lookup": 0, "trade": 0, "query": 0}
            for _, kind, _, lat, status in rows:
                if kind not in samples:
                    continue
                if ok_status(kind, status):
                    samples[kind].append(lat)
                else:
                    errors[kind] += 1
            runs.append({"rep": rep, "p": p, "cache": cache, "rc": rc, "hits": st.get("hits") or 0,
                         "misses": st.get("misses") or 0, "samples": samples, "errors": errors,
                         "verified": (summary or {}).get("orders_verified"),
                         "recorded": (summary or {}).get("orders_recorded")})
            log(f"  rep {rep} p={p} cache={cache}: rc={rc} lookup mean "
                f"{fmt(mean(samples['lookup']))} ms, trade {fmt(mean(samples['trade']))} ms, "
                f"hits {st.get('hits')} misses {st.get('misses')}")
            shutil_rm(os.path.join(tmp, name))

    # per-run table
    with open(os.path.join(out, "eval", "latency_runs.csv"), "w", encoding="utf-8") as f:
        f.write("rep,p,cache,type,count,errors,mean_ms,p50_ms,p99_ms,max_ms,hits,misses,client_rc\n")
        for r in runs:
            for kind, vals in r["samples"].items():
                f.write(f"{r['rep']},{r['p']},{r['cache']},{kind},{len(vals)},{r['errors'][kind]},"
                        f"{nan_csv(mean(vals))},{nan_csv(pct(vals, 50))},{nan_csv(pct(vals, 99))},"
                        f"{nan_csv(max(vals) if vals else float('nan'))},{r['hits']},{r['misses']},"
                        f"{r['rc']}\n")

    # aggregate: pooled samples over repetitions; min/max of the repetition means as a spread
    agg = {}
    for p in PS:
        for cache in ("on", "off"):
            sel = [r for r in runs if r["p"] == p and r["cache"] == cache]
            entry = {"hits": sum(r["hits"] for r in sel), "misses": sum(r["misses"] for r in sel),
                     "rc": [r["rc"] for r in sel],
                     "errors": sum(sum(r["errors"].values()) for r in sel)}
            for kind in ("lookup", "trade", "query"):
                pooled = [v for r in sel for v in r["samples"][kind]]
                rep_means = [mean(r["samples"][kind]) for r in sel if r["samples"][kind]]
                rep_p99 = [pct(r["samples"][kind], 99) for r in sel if r["samples"][kind]]
                entry[kind] = {"n": len(pooled), "mean": mean(pooled), "p50": pct(pooled, 50),
                               "p99": pct(pooled, 99),
                               "mean_lo": min(rep_means) if rep_means else float("nan"),
                               "mean_hi": max(rep_means) if rep_means else float("nan"),
                               "p99_lo": min(rep_p99) if rep_p99 else float("nan"),
                               "p99_hi": max(rep_p99) if rep_p99 else float("nan")}
            total = entry["hits"] + entry["misses"]
            entry["hit_rate"] = entry["hits"] / total if total else float("nan")
            agg[(p, cache)] = entry

    with open(os.path.join(out, "eval", "latency.csv"), "w", encoding="utf-8") as f:
        cols = ["p"]
        for kind in ("lookup", "trade", "query"):
            for cache in ("on", "off"):
                for stat in ("mean", "mean_lo", "mean_hi", "p99", "p99_lo", "p99_hi"):
                    cols.append(f"{kind}_{cache}_{stat}")
        cols += ["hitrate_on", "hitrate_off"]
        f.write(",".join(cols) + "\n")
        for p in PS:
            vals = [f"{p}"]
            for kind in ("lookup", "trade", "query"):
                for cache in ("on", "off"):
                    e = agg[(p, cache)][kind]
                    for stat in ("mean", "mean_lo", "mean_hi", "p99", "p99_lo", "p99_hi"):
                        vals.append(nan_csv(e[stat]))
            vals += [nan_csv(agg[(p, "on")]["hit_rate"]), nan_csv(agg[(p, "off")]["hit_rate"])]
            f.write(",".join(vals) + "\n")
    return runs, agg


def shutil_rm(path):
    import shutil
    shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------- experiment 2


class StatusSampler(threading.Thread):
    """Polls the front-end's /status every `interval` s; keeps (t, status json) pairs."""

    def __init__(self, cluster, t0, interval=0.1):
        super().__init__(daemon=True)
        self.cluster, self.t0, self.interval = cluster, t0, interval
        self.samples = []
        self.stop_event = threading.Event()
        self.failures = 0

    def run(self):
        nxt = time.monotonic()
        while not self.stop_event.is_set():
            try:
                st = bazaar.get(self.cluster.frontend_url("/status"), timeout=2.0)
                t = time.monotonic() - self.t0
                if st.status == 200 and st.json:
                    self.samples.append((t, st.json))
                else:
                    self.failures += 1
            except Exception:  # noqa: BLE001 - a failed sample is recorded as a gap
                self.failures += 1
            nxt += self.interval
            delay = nxt - time.monotonic()
            if delay < 0:
                nxt = time.monotonic()
                delay = 0
            self.stop_event.wait(delay)
        bazaar.close_connections()

    def stop(self):
        self.stop_event.set()
        self.join(timeout=10)


def experiment_lru(args, tmp, out):
    log("experiment 2: cache replacement (cache_size 4 of 12 stocks)")
    c = new_cluster(tmp, "lru", {"frontend": {"cache": "on", "cache_size": "4"}})
    stocks = list(c.initial_stocks)
    a, b = stocks[0:4], stocks[4:8]
    phases = [
        ("1: 4 stocks A, p=0", a, 0.0),
        ("2: 4 other stocks B, p=0", b, 0.0),
        ("3: all 12 stocks, p=0", stocks, 0.0),
        ("4: 4 stocks A, p=0.5", a, 0.5),
    ]
    phase_rows = []
    t0 = time.monotonic()
    sampler = StatusSampler(c, t0, 0.1)
    sampler.start()
    try:
        time.sleep(0.5)
        for i, (label, names, p) in enumerate(phases):
            start = time.monotonic() - t0
            rc, summary, _, _ = run_client(args.bin_dir, c.frontend_url(), c.stocks_path, None, p,
                                           SEED * 7 + i, duration=PHASE_S, stocks=names)
            end = time.monotonic() - t0
            phase_rows.append({"label": label, "start": start, "end": end, "rc": rc,
                               "stocks": names, "p": p, "summary": summary})
            time.sleep(0.5)
    finally:
        sampler.stop()
        c.stop()
    samples = sampler.samples
    index = {n: i for i, n in enumerate(stocks)}
    with open(os.path.join(out, "eval", "lru_timeline.csv"), "w", encoding="utf-8") as f:
        f.write("t_s,stock_index,stock,lru_rank\n")
        for t, st in samples:
            for rank, e in enumerate(st["cache"]["entries"], start=1):
                f.write(f"{t:.3f},{index.get(e['name'], -1)},{e['name']},{rank}\n")
    with open(os.path.join(out, "eval", "lru_counters.csv"), "w", encoding="utf-8") as f:
        f.write("t_s,hits,misses,evictions,invalidations,entries\n")
        for t, st in samples:
            ca = st["cache"]
            f.write(f"{t:.3f},{ca.get('hits', 0)},{ca.get('misses', 0)},{ca.get('evictions', 0)},"
                    f"{ca.get('invalidations', 0)},{len(ca.get('entries', []))}\n")
    with open(os.path.join(out, "eval", "lru_phases.csv"), "w", encoding="utf-8") as f:
        f.write("start_s,end_s,label\n")
        for ph in phase_rows:
            f.write(f"{ph['start']:.3f},{ph['end']:.3f},\"{ph['label']}\"\n")
    with open(os.path.join(out, "eval", "lru_stocks.gp"), "w", encoding="utf-8") as f:
        tics = ", ".join(f'"{n}" {i}' for i, n in enumerate(stocks))
        f.write(f"set ytics ({tics})\n")
        f.write(f"set yrange [-0.7:{len(stocks) - 0.3}]\n")
        for i, ph in enumerate(phase_rows):
            f.write(f"set arrow {i + 1} from {ph['start']:.3f}, graph 0 to {ph['start']:.3f}, graph 1 "
                    "nohead dt 2 lc rgb '#888888'\n")
            f.write(f"set label {i + 1} \"{ph['label']}\" at {ph['start'] + 0.1:.3f}, graph 1.04 "
                    "left font ',9'\n")

    # per-phase counter deltas from the samples nearest the phase boundaries
    def at(t):
        best = None
        for ts, st in samples:
            if ts <= t:
                best = st["cache"]
        return best or {"hits": 0, "misses": 0, "evictions": 0, "invalidations": 0}

    for ph in phase_rows:
        s0, s1 = at(ph["start"]), at(ph["end"] + 0.45)
        ph["delta"] = {k: s1.get(k, 0) - s0.get(k, 0)
                       for k in ("hits", "misses", "evictions", "invalidations")}
        cached = set()
        for ts, st in samples:
            if ph["start"] + 1.0 <= ts <= ph["end"]:
                cached |= {e["name"] for e in st["cache"]["entries"]}
        ph["seen_cached"] = sorted(cached, key=lambda n: index.get(n, 99))
    log(f"  {len(samples)} /status samples ({sampler.failures} failed)")
    return {"phases": phase_rows, "samples": len(samples), "failures": sampler.failures,
            "stocks": stocks, "a": a, "b": b,
            "interval_ms": 1000 * (samples[-1][0] - samples[0][0]) / max(1, len(samples) - 1)
            if len(samples) > 1 else float("nan")}


# ----------------------------------------------------------------------------- experiment 3


class QueryProber(threading.Thread):
    """GET /orders/{n} for an n well below the leader's last number, every 50 ms, no retries:
    what a client reading its orders during the crashes sees."""

    def __init__(self, cluster, t0ref):
        super().__init__(daemon=True)
        self.cluster, self.t0ref = cluster, t0ref
        self.rows = []  # (t_s, n, status, latency_ms)
        self.stop_event = threading.Event()
        self.rng = random.Random(SEED)

    def run(self):
        top, refreshed = -1, 0.0
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now - refreshed > 0.5:
                refreshed = now
                try:
                    st = bazaar.get(self.cluster.frontend_url("/status"), timeout=2.0).json or {}
                    lasts = [r.get("last") for r in st.get("replicas", [])
                             if r.get("role") == "leader" and isinstance(r.get("last"), int)]
                    if lasts:
                        top = max(top, lasts[0] - 50)
                except Exception:  # noqa: BLE001
                    pass
            if top >= 0 and self.t0ref[0] is not None:
                n = self.rng.randint(0, top)
                t = time.monotonic()
                try:
                    status = bazaar.get(self.cluster.frontend_url(f"/orders/{n}"), timeout=10.0).status
                except Exception:  # noqa: BLE001 - a timeout or reset is a visible failure
                    status = 0
                self.rows.append((t - self.t0ref[0], n, status, 1000 * (time.monotonic() - t)))
            self.stop_event.wait(0.05)
        bazaar.close_connections()

    def stop(self):
        self.stop_event.set()
        self.join(timeout=15)


def orders_digest(path):
    """(rows, sha256 of every orders row in number order, last number) read with sqlite3."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(orders)")]
        want = [c for c in ("number", "request_id", "name", "type", "quantity", "epoch") if c in cols]
        h = hashlib.sha256()
        n, last = 0, None
        for row in conn.execute(f"SELECT {','.join(want)} FROM orders ORDER BY number"):
            h.update(repr(row).encode())
            n += 1
            last = row[0]
        return n, h.hexdigest()[:16], last, want
    finally:
        conn.close()


def experiment_crash(args, tmp, out, run_no):
    log(f"experiment 3, run {run_no}: {KILLS} SIGKILLs during {CRASH_DURATION} s of trading")
    name = f"crash{run_no}"
    c = new_cluster(tmp, name, {"frontend": {"cache": "on", "cache_size": "8"}})
    rng = random.Random(SEED * 100 + run_no)
    kills = []
    t0ref = [None]
    prober = QueryProber(c, t0ref)
    leaders = []  # (t, leader, epoch)
    stop_leader_poll = threading.Event()

    def poll_leader():
        while not stop_leader_poll.is_set():
            try:
                st = bazaar.get(c.frontend_url("/status"), timeout=2.0).json or {}
                if t0ref[0] is not None:
                    leaders.append((time.monotonic() - t0ref[0], st.get("leader"), st.get("epoch")))
            except Exception:  # noqa: BLE001
                pass
            stop_leader_poll.wait(0.2)
        bazaar.close_connections()

    leader_thread = threading.Thread(target=poll_leader, daemon=True)
    # Kills and restarts run on the main thread: the harness starts services with
    # PR_SET_PDEATHSIG, which Linux ties to the *thread* that forked them, so a replica
    # restarted from a helper thread would be SIGKILLed when that thread ends.
    def kill_loop(t0):
        first = 3.0
        spacing = (CRASH_DURATION - 6.0) / (KILLS - 1) if KILLS > 1 else 0.0
        for k in range(KILLS):
            at = t0 + first + k * spacing
            while time.monotonic() < at:
                if client.poll() is not None:
                    return
                time.sleep(0.02)
            leader = c.leader()
            if k % 2 == 0 and isinstance(leader, int):
                victim, role = leader, "leader"
            else:
                victim = rng.choice([r for r in c.replica_ids() if r != leader])
                role = "follower"
            t_kill = time.monotonic() - t0
            c.kill_process(f"order{victim}")
            time.sleep(2.0)  # the replica stays down a while; this pause is not catch-up time
            t_restart = time.monotonic() - t0
            # Ready = /health 200, polled every 20 ms: the restart, the database open and the
            # catch-up from the peers, not the harness's pause above.
            c.start_process(f"order{victim}", wait=False)
            bazaar.wait_for(lambda: c.is_ready(f"order{victim}"), c.startup_timeout,
                            f"order{victim} ready", interval=0.02)
            t_ready = time.monotonic() - t0
            kills.append({"k": k + 1, "victim": victim, "role": role, "leader_before": leader,
                          "t_kill": t_kill, "t_restart": t_restart, "t_ready": t_ready})
            log(f"  kill {k + 1}: order{victim} ({role}) at {t_kill:.2f}s, restarted "
                f"{t_restart:.2f}s, ready {t_ready:.2f}s")

    try:
        csv_path = os.path.join(tmp, name, "client.csv")
        client, t0 = start_client(args.bin_dir, c.frontend_url(), c.stocks_path, csv_path, 0.5,
                                  SEED * 10 + run_no, duration=CRASH_DURATION)
        t0ref[0] = t0
        prober.start()
        leader_thread.start()
        try:
            kill_loop(t0)
        except BaseException:
            client.kill()
            raise
        finally:
            rc_wait = max(30.0, t0 + CRASH_DURATION + 120 - time.monotonic())
        rc, summary, client_err = finish_client(client, rc_wait)
        prober.stop()
        stop_leader_poll.set()
        leader_thread.join(timeout=5)
        idle = bazaar.wait_replicas_idle(c, timeout=30.0)
        digests = {rid: orders_digest(c.order_db(rid)) for rid in c.replica_ids()}
        violations = bazaar.find_invariant_violations(c, [], c.initial_stocks, query=False)
        # conservation, spelled out
        initial = {n: q for n, (_, q) in c.initial_stocks.items()}
        buys = {n: 0 for n in initial}
        sells = {n: 0 for n in initial}
        for r in bazaar.db_orders(c, idle["leader"]):
            (sells if r["type"] == "sell" else buys)[r["name"]] += r["quantity"]
        catalog = bazaar.db_quantities(c)
        conservation = [(n, initial[n], sells[n], buys[n], catalog.get(n)) for n in initial]
        status_end = c.status()
    finally:
        prober.stop()
        stop_leader_poll.set()
        c.stop()

    rows = read_client_csv(csv_path)
    # client CSV
    # every client request (~100k rows): gzipped to keep docs/eval small; gnuplot reads it
    # through `gzip -dc`
    with gzip.open(os.path.join(out, "eval", f"crash{run_no}_latency.csv.gz"), "wt",
                   encoding="utf-8", compresslevel=9) as f:
        f.write("t_s,type,latency_ms,status\n")
        for _, kind, t, lat, status in rows:
            f.write(f"{t:.4f},{kind},{lat:.3f},{status}\n")
    with open(os.path.join(out, "eval", f"crash{run_no}_kills.csv"), "w", encoding="utf-8") as f:
        f.write("kill,victim,role,leader_before,t_kill_s,t_restart_s,t_ready_s\n")
        for k in kills:
            f.write(f"{k['k']},order{k['victim']},{k['role']},{k['leader_before']},{k['t_kill']:.3f},"
                    f"{k['t_restart']:.3f},{k['t_ready']:.3f}\n")
    with open(os.path.join(out, "eval", f"crash{run_no}_queries.csv"), "w", encoding="utf-8") as f:
        f.write("t_s,number,status,latency_ms\n")
        for t, n, status, lat in prober.rows:
            f.write(f"{t:.4f},{n},{status},{lat:.3f}\n")
    with open(os.path.join(out, "eval", f"crash{run_no}_leader.csv"), "w", encoding="utf-8") as f:
        f.write("t_s,leader,epoch\n")
        for t, leader, epoch in leaders:
            f.write(f"{t:.3f},{leader if leader is not None else 'NaN'},{epoch}\n")
    # p99 of client requests (lookups and trades) per 1-second window, for the p99-over-time line
    by_second = {}
    for _, kind, t, lat, status in rows:
        if kind in ("lookup", "trade") and ok_status(kind, status):
            by_second.setdefault(int(t), []).append(lat)
    with open(os.path.join(out, "eval", f"crash{run_no}_p99.csv"), "w", encoding="utf-8") as f:
        f.write("t_s,p99_ms,requests\n")
        for sec in sorted(by_second):
            f.write(f"{sec + 0.5:.1f},{pct(by_second[sec], 99):.3f},{len(by_second[sec])}\n")
    with open(os.path.join(out, "eval", f"crash{run_no}_marks.gp"), "w", encoding="utf-8") as f:
        for i, k in enumerate(kills):
            # `back`: the lines stay behind the latency points
            f.write(f"set arrow {2 * i + 1} from {k['t_kill']:.3f}, graph 0 to {k['t_kill']:.3f}, "
                    "graph 1 nohead back lw 1.5 lc rgb '#d62728'\n")
            f.write(f"set arrow {2 * i + 2} from {k['t_ready']:.3f}, graph 0 to {k['t_ready']:.3f}, "
                    "graph 1 nohead back dt 2 lc rgb '#2ca02c'\n")
            tag = "L" if k["role"] == "leader" else "F"
            f.write(f"set label {i + 1} \"kill order{k['victim']} ({tag})\" at {k['t_kill']:.3f}, "
                    "graph 1.03 center font ',8' tc rgb '#d62728'\n")

    # analysis
    errors_attempt = {"lookup": 0, "trade": 0, "query": 0}
    statuses = {}
    for _, kind, t, lat, status in rows:
        if kind in errors_attempt and not ok_status(kind, status):
            errors_attempt[kind] += 1
            statuses[status] = statuses.get(status, 0) + 1
    for k in kills:
        win = [r for r in rows if abs(r[2] - k["t_kill"]) <= 1.0]
        for kind in ("lookup", "trade", "query"):
            lats = [r[3] for r in win if r[1] == kind]
            k[f"max_{kind}"] = max(lats) if lats else float("nan")
        k["max_all"] = max((r[3] for r in win), default=float("nan"))
        pw = [q for q in prober.rows if abs(q[0] - k["t_kill"]) <= 1.0]
        k["max_probe"] = max((q[3] for q in pw), default=float("nan"))
        k["probe_err_window"] = sum(1 for q in pw if q[2] != 200)
        k["n_window"] = len(win)
        k["err_window"] = sum(1 for r in win if not ok_status(r[1], r[4]))
        # restart window too: catch-up may also disturb
        rwin = [r for r in rows if abs(r[2] - k["t_ready"]) <= 1.0]
        k["max_ready"] = max((r[3] for r in rwin), default=float("nan"))
        lw = [(t, ld) for t, ld, _ in leaders if k["t_kill"] <= t <= k["t_ready"] + 1.0]
        k["leader_after"] = lw[-1][1] if lw else None
    baseline = [r[3] for r in rows if r[1] == "trade" and ok_status("trade", r[4])
                and all(abs(r[2] - k["t_kill"]) > 1.0 for k in kills)]
    q_err = [q for q in prober.rows if q[2] != 200]
    q_lat = [q[3] for q in prober.rows]
    result = {
        "run": run_no, "rc": rc, "summary": summary or {}, "kills": kills,
        "errors_attempt": errors_attempt, "statuses": statuses, "idle": idle,
        "digests": digests, "violations": violations, "conservation": conservation,
        "trade_mean": mean(baseline), "trade_max": max(baseline, default=float("nan")), "trade_p50": pct(baseline, 50), "trade_p99": pct(baseline, 99),
        "probe_n": len(prober.rows), "probe_err": len(q_err),
        "probe_err_status": sorted({q[2] for q in q_err}),
        "probe_max": max(q_lat) if q_lat else float("nan"), "probe_p99": pct(q_lat, 99),
        "probe_err_rows": q_err[:10], "epoch_end": status_end.get("epoch"),
        "leader_end": status_end.get("leader"), "client_err": client_err.strip()[-1500:],
        "epochs": sorted({e for _, _, e in leaders if e is not None}),
    }
    log(f"  client rc={rc}, attempt errors {errors_attempt}, replicas identical: "
        f"{len({d[1] for d in digests.values()}) == 1}, violations: {len(violations)}")
    return result


# ----------------------------------------------------------------------------- plots


def gnuplot(out, script, **vars_):
    defs = "; ".join(f"{k}='{v}'" for k, v in vars_.items())
    subprocess.run(["gnuplot", "-e", defs, os.path.join(HERE, script)], check=True,
                   cwd=os.path.join(out, "eval"), timeout=120)


# ----------------------------------------------------------------------------- report


def machine_info():
    model = bazaar.cpu_model()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                                capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO, text=True,
                               capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", ""
    return {"nproc": os.cpu_count(), "model": model, "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": commit + (" (with uncommitted changes under src/)" if dirty else ""),
            "load": open("/proc/loadavg", encoding="utf-8").read().split()[:3]}


def write_report(out, args, info, lat, lru, crashes, runtime_s, load_end):
    runs, agg = lat
    L = []
    w = L.append
    w("# Stock Bazaar — evaluation")
    w("")
    w("Generated by `bench/eval.sh`; every number and figure on this page comes from one run of it.")
    w("Regenerate with:")
    w("")
    w("```sh")
    w(args.command)
    w("```")
    w("")
    w(f"(`make eval` builds `build/bin` first; `BIN_DIR=build-dev/bin bash bench/eval.sh` uses another "
      f"build. Knobs, all optional: `EVAL_REPS` ({REPS}), `EVAL_ITERATIONS` ({ITERATIONS}), "
      f"`EVAL_CRASH_RUNS` ({CRASH_RUNS}), `EVAL_CRASH_DURATION` ({CRASH_DURATION}), `EVAL_KILLS` "
      f"({KILLS}), `EVAL_SEED` ({SEED}).) This run took {runtime_s / 60:.1f} minutes.")
    w("")
    w("## Machine")
    w("")
    w(f"* {info['nproc']} CPUs, `{info['model']}`, Linux {info['kernel']}, {info['date']}, commit "
      f"`{info['commit']}`.")
    w(f"* Load average at start {' '.join(info['load'])}, at the end {' '.join(load_end)} (1/5/15 min).")
    w("* This is a shared machine: other work ran beside the benchmark, and client, front-end, "
      "catalog and three replicas all share its CPUs. **Absolute times are only indicative**; the "
      "ratios between cache on and off (measured interleaved, on the same workload seeds) and the "
      "shapes of the curves are what to read.")
    w("")

    # ---- summary
    on8, off8 = agg[(0.8, "on")], agg[(0.8, "off")]
    on0, off0 = agg[(0.0, "on")], agg[(0.0, "off")]
    n_kills = sum(len(cr["kills"]) for cr in crashes)
    n_lkills = sum(1 for cr in crashes for k in cr["kills"] if k["role"] == "leader")
    w("## Summary")
    w("")
    w(f"* Caching lookups: at p = 0 a lookup takes {fmt(ratio(on0['lookup']['mean'], off0['lookup']['mean']), 2)}× "
      f"the time with the cache on ({fmt(on0['lookup']['mean'])} vs {fmt(off0['lookup']['mean'])} ms); "
      f"at p = 0.8 {fmt(ratio(on8['lookup']['mean'], off8['lookup']['mean']), 2)}× "
      f"({fmt(on8['lookup']['mean'])} vs {fmt(off8['lookup']['mean'])} ms, hit rate "
      f"{fmt(100 * on8['hit_rate'], 0)} %). Trades ({fmt(on8['trade']['mean'], 2)} vs "
      f"{fmt(off8['trade']['mean'], 2)} ms at p = 0.8) and order queries ({fmt(on8['query']['mean'], 2)} vs "
      f"{fmt(off8['query']['mean'], 2)} ms) do not use the cache.")
    w(f"* LRU with 4 slots for 12 stocks: a working set that fits stays put; one that does not "
      f"evicts on about every miss; trades empty entries by invalidation without evictions.")
    w(f"* {n_kills} SIGKILLs of order replicas ({n_lkills} of the leader) under load: "
      f"{sum(sum(cr['errors_attempt'].values()) for cr in crashes)} failed client requests, "
      f"{sum(cr['probe_err'] for cr in crashes)} failed order queries, clients exit "
      f"{'/'.join(str(cr['rc']) for cr in crashes)}, worst trade latency around a kill "
      f"{fmt(max((k['max_trade'] for cr in crashes for k in cr['kills'] if not math.isnan(k['max_trade'])), default=float('nan')), 1)} ms; "
      f"replica order logs {'identical' if all(len({d[1] for d in cr['digests'].values()}) == 1 for cr in crashes) else 'NOT identical'} "
      f"and catalog conservation "
      f"{'holds' if all(all(i + s_ - b_ == q for _, i, s_, b_, q in cr['conservation']) for cr in crashes) else 'VIOLATED'} "
      f"after every run.")
    w("")

    # ---- experiment 1
    w("## 1. Latency vs trade probability p, cache on and off")
    w("")
    w(f"Setup: for every point a fresh 3-replica cluster (catalog, front-end, 3 order replicas, "
      f"`write_quorum = majority`) with the 12-stock default catalog; `bazaar-client --sessions "
      f"{SESSIONS} --iterations {ITERATIONS} --p P` (each session: look up a random stock, trade it "
      f"with probability p, and at the end query every order it made). Cache on uses "
      f"`cache_size = 12`, large enough for every stock, so every miss is a cold miss or the result of "
      f"an invalidation; cache off is `cache = off`. Each of the {len(PS) * 2} points ran {REPS} "
      f"times in a shuffled order with the same seed for on and off; latencies are pooled over the "
      f"repetitions (error bars: lowest and highest repetition mean/p99). Latency is the "
      f"client-side time of one HTTP request on a keep-alive connection.")
    w("")
    w("![mean latency vs p](eval/latency_mean.png)")
    w("")
    w("![p99 latency vs p](eval/latency_p99.png)")
    w("")
    w("![cache hit rate vs p](eval/hitrate.png)")
    w("")
    w("| p | lookup on (ms) | lookup off (ms) | **on/off** | lookup p99 on/off (ms) | hit rate on | "
      "trade on/off (ms) | query on/off (ms) |")
    w("|---|---|---|---|---|---|---|---|")
    for p in PS:
        on, off = agg[(p, "on")], agg[(p, "off")]
        w(f"| {p} | {fmt(on['lookup']['mean'])} | {fmt(off['lookup']['mean'])} | "
          f"**{fmt(ratio(on['lookup']['mean'], off['lookup']['mean']), 2)}** | "
          f"{fmt(on['lookup']['p99'], 2)} / {fmt(off['lookup']['p99'], 2)} | "
          f"{fmt(100 * on['hit_rate'], 0)} % | "
          f"{fmt(on['trade']['mean'], 2)} / {fmt(off['trade']['mean'], 2)} | "
          f"{fmt(on['query']['mean'], 2)} / {fmt(off['query']['mean'], 2)} |")
    w("")
    bad_runs = [r for r in runs if r["rc"] != 0 or sum(r["errors"].values())]
    w(f"All {len(runs)} client runs " + ("exited 0 (every order verified) with no failed request."
                                        if not bad_runs else
                                        f"— {len(bad_runs)} of them exited non-zero or saw failed "
                                        f"requests (see `eval/latency_runs.csv`)."))
    w("")
    r0 = ratio(agg[(0.0, "on")]["lookup"]["mean"], agg[(0.0, "off")]["lookup"]["mean"])
    r8 = ratio(agg[(0.8, "on")]["lookup"]["mean"], agg[(0.8, "off")]["lookup"]["mean"])
    h0, h8 = agg[(0.0, "on")]["hit_rate"], agg[(0.8, "on")]["hit_rate"]
    w("**What it shows.** A cache hit is answered on the front-end's event thread from stored reply "
      "bytes; a miss (or any lookup with the cache off) goes to a worker thread, makes an HTTP call "
      f"to the catalog and a SQLite read there. At p = 0 nearly every lookup is a hit (hit rate "
      f"{fmt(100 * h0, 1)} %: the only misses are the first lookups of each stock, some made by "
      f"several sessions at once) and a cached lookup takes "
      f"{fmt(r0, 2)}× the time of an uncached one. As p grows, more lookups are followed by a "
      f"trade, and every trade invalidates its stock twice (the front-end drops it when the trade "
      f"succeeds, for read-your-writes, and the catalog's push arrives shortly after), so the next "
      f"lookup of that stock is a miss. At p = 0.8 there are 4 trades for every 5 lookups, so a "
      f"stock is traded about as often as it is looked up and few entries survive until their "
      f"next lookup: the hit rate falls to {fmt(100 * h8, 1)} % and the lookup "
      f"ratio rises to {fmt(r8, 2)}. The benefit of caching therefore shrinks as p grows; it is "
      f"largest for read-mostly traffic. Trades and order queries never use the cache, so their "
      f"latency is the same with cache on and off within noise. The cache helps the lookup "
      f"*tail* only at p = 0 (p99 {fmt(agg[(0.0, 'on')]['lookup']['p99'], 2)} vs "
      f"{fmt(agg[(0.0, 'off')]['lookup']['p99'], 2)} ms): from p = 0.2 on, the slowest 1 % of "
      f"lookups are misses with the cache on too, and the two p99 curves are close. A trade costs several hops (front-end → "
      f"leader → catalog, fsyncs, replication to a majority) and is an order of magnitude slower than "
      f"a lookup, which is why mean lookup latency is also pulled up at high p: the machine is busier.")
    w("")

    # ---- experiment 2
    phases = lru["phases"]
    w("## 2. Cache replacement in action")
    w("")
    a_names, b_names = ", ".join(lru["a"]), ", ".join(lru["b"])
    w(f"Setup: one cluster with `cache_size = 4` and 12 stocks; the front-end's `/status` sampled "
      f"every 100 ms (mean interval measured {fmt(lru['interval_ms'], 0)} ms, {lru['samples']} "
      f"samples, {lru['failures']} failed) while `bazaar-client --sessions {SESSIONS}` runs "
      f"{len(phases)} phases of {PHASE_S} s: set A = {a_names}; set B = {b_names}.")
    w("")
    w("![LRU timeline](eval/lru_timeline.png)")
    w("")
    w("Top: one row per stock, a mark at every sample where the stock is in the cache, coloured by "
      "its LRU position (1 = most recently used, 4 = next to be evicted). Bottom: the front-end's "
      "cumulative evictions, invalidations and misses (`/status` cache counters, the same numbers "
      "as `bazaar_frontend_cache_*_total` in `/metrics`).")
    w("")
    w("| phase | lookups | hit rate | misses | evictions | invalidations | stocks seen cached |")
    w("|---|---|---|---|---|---|---|")
    for ph in phases:
        d = ph["delta"]
        n = d["hits"] + d["misses"]
        w(f"| {ph['label']} | {n} | {fmt(100 * d['hits'] / n if n else float('nan'), 1)} % | "
          f"{d['misses']} | {d['evictions']} | {d['invalidations']} | {len(ph['seen_cached'])} |")
    w("")
    d1, d2, d3, d4 = (ph["delta"] for ph in phases)
    w(f"**What it shows.** Phase 1 fits the cache: after {d1['misses']} cold misses (the first "
      f"lookup of each stock, sometimes by several sessions at once) the same four stocks stay "
      f"cached and nothing is evicted ({d1['evictions']} evictions). In phase 2 the working set moves "
      f"to four other stocks: each first lookup of a B stock evicts the least recently used A stock, "
      f"so after {d2['evictions']} evictions the cache holds exactly set B and stays still again. In "
      f"phase 3 twelve stocks compete for four slots: with uniform random lookups about a third of "
      f"them hit (measured {fmt(100 * d3['hits'] / max(1, d3['hits'] + d3['misses']), 1)} %), and every "
      f"miss evicts the LRU entry ({d3['evictions']} evictions in {PHASE_S} s) — the rows flicker and "
      f"the eviction curve climbs steeply (evictions stay a little below misses because two sessions "
      f"that miss the same stock at the same moment fill one entry). In phase 4 the working set fits again (only "
      f"{d4['evictions']} evictions, when set A displaced what phase 3 left behind), but half the lookups are followed by a trade, and each trade invalidates "
      f"its stock ({d4['invalidations']} invalidations): entries disappear after a trade and come "
      f"back with the next lookup, so the hit rate drops to "
      f"{fmt(100 * d4['hits'] / max(1, d4['hits'] + d4['misses']), 1)} % although nothing competes for "
      f"space. "
      f"Capacity misses and invalidation misses are the two ways an entry leaves the cache.")
    w("")

    # ---- experiment 3
    w("## 3. Crash experiments")
    w("")
    w(f"Setup: a fresh 3-replica cluster (`write_quorum = majority`, cache on) per run; "
      f"`bazaar-client --sessions {SESSIONS} --p 0.5 --duration-s {CRASH_DURATION}` trades while "
      f"the evaluation SIGKILLs {KILLS} order replicas, one at a time: the 1st, 3rd, 5th, ... kill hits "
      f"the current leader (as `/status` reports it), the others a random follower. Each victim is "
      f"restarted "
      f"2 s after the kill, and the next kill waits until it answers `/health` (it has caught up). "
      f"Beside the client, a prober reads `GET /orders/{{n}}` for a random old order every 50 ms "
      f"without retries, to see what a client querying its orders during the crashes sees. "
      f"After the client finishes (it then queries and checks every order it made), the "
      f"evaluation waits until the replicas are idle and compares the `orders` tables of "
      f"`order-1.db`, `order-2.db`, `order-3.db` with sqlite3, and checks, for every stock, "
      f"initial + sells − buys (over the log) == `catalog.db` quantity.")
    w("")
    for cr in crashes:
        s = cr["summary"]
        req = s.get("requests", {})
        w(f"### Run {cr['run']}")
        w("")
        w(f"![latency over time, run {cr['run']}](eval/crash{cr['run']}.png)")
        w("")
        w("Every request of the client (start time, latency; log scale). Red lines: SIGKILL of a "
          "replica (L = leader, F = follower); green dashed: the restarted replica reports ready. "
          "Failed attempts (that the client retried) are drawn as crosses; the brown line is the "
          "p99 of lookups and trades per second. The panel below shows which replica the "
          "front-end named leader over time (`/status` every 200 ms). \"Restarted → ready\" is "
          "the time from starting the killed replica again to its first `/health` 200 (polled "
          "every 20 ms): opening its database and catching up from its peers; the 2 s it stays "
          "down before the restart is not counted.")
        w("")
        w("| kill | victim | leader after | max latency ±1 s of the kill (ms): trade / lookup / "
          "order query (prober) | failed attempts ±1 s | restarted → ready (catch-up, s) | max latency ±1 s of "
          "ready (ms) |")
        w("|---|---|---|---|---|---|---|")
        for k in cr["kills"]:
            w(f"| {k['k']} at {k['t_kill']:.1f} s | order{k['victim']} ({k['role']}) | "
              f"order{k['leader_after']} | {fmt(k['max_trade'], 1)} / {fmt(k['max_lookup'], 1)} / "
              f"{fmt(k['max_probe'], 1)} | {k['err_window'] + k['probe_err_window']} of "
              f"{k['n_window']} | "
              f"{k['t_ready'] - k['t_restart']:.2f} | {fmt(k['max_ready'], 1)} |")
        w("")
        digests = cr["digests"]
        same = len({d[1] for d in digests.values()}) == 1 and len({d[0] for d in digests.values()}) == 1
        cons_ok = all(init + sells - buys == q for _, init, sells, buys, q in cr["conservation"])
        tr = req.get("trade", {})
        lk = req.get("lookup", {})
        qu = req.get("query", {})
        w(f"* Client: exit code **{cr['rc']}**, `ok` = {s.get('ok')}; {tr.get('count', 0)} trade "
          f"requests ({tr.get('errors', 0)} failed attempts), {lk.get('count', 0)} lookups "
          f"({lk.get('errors', 0)} failed), {qu.get('count', 0)} order queries in the final "
          f"verification ({qu.get('errors', 0)} failed); {s.get('orders_recorded')} orders "
          f"recorded, **{s.get('orders_verified')} verified, {s.get('mismatches')} mismatches**, "
          f"{s.get('retries')} retries, {s.get('unknown_outcomes')} unknown outcomes, "
          f"{s.get('unexpected_errors')} unexpected errors.")
        st = ", ".join(f"{'timeout/refused' if k == 0 else k}: {v}" for k, v in sorted(cr["statuses"].items()))
        w(f"* Failed attempts seen in the client CSV: trades {cr['errors_attempt']['trade']}, lookups "
          f"{cr['errors_attempt']['lookup']}, queries {cr['errors_attempt']['query']}"
          + (f" (status {st})" if st else "") + ".")
        w(f"* Trade latency away from the kills (more than 1 s from any): mean "
          f"{fmt(cr['trade_mean'], 2)} ms, p50 {fmt(cr['trade_p50'], 2)} ms, p99 "
          f"{fmt(cr['trade_p99'], 1)} ms.")
        w(f"* Order-query prober during the crashes: {cr['probe_n']} queries, **{cr['probe_err']} "
          f"failed**" + (f" (status {cr['probe_err_status']})" if cr["probe_err"] else "")
          + f", p99 {fmt(cr['probe_p99'], 1)} ms, max {fmt(cr['probe_max'], 1)} ms.")
        w(f"* Leader epochs seen: {cr['epochs']}; at the end leader order{cr['leader_end']} in epoch "
          f"{cr['epoch_end']}.")
        w("* Order tables once idle (rows, sha256 prefix over number, request_id, name, type, "
          "quantity, epoch): " + "; ".join(f"order-{rid}.db {d[0]} rows `{d[1]}`"
                                           for rid, d in sorted(digests.items()))
          + (" — **identical**." if same else " — **DIFFERENT**."))
        w(f"* Catalog conservation (initial + sells − buys == quantity) for all "
          f"{len(cr['conservation'])} stocks: **{'holds' if cons_ok else 'VIOLATED'}**; harness "
          f"invariant check (identical logs, dense numbers, no duplicate request id, every logged "
          f"order applied exactly once in the catalog): "
          + ("no violation." if not cr["violations"] else
             "**" + str(len(cr["violations"])) + " violations**: " + "; ".join(cr["violations"][:5])))
        w("")
    # answers
    all_kills = [k for cr in crashes for k in cr["kills"]]
    leader_kills = [k for k in all_kills if k["role"] == "leader"]
    foll_kills = [k for k in all_kills if k["role"] == "follower"]
    worst_l = max((k["max_trade"] for k in leader_kills if not math.isnan(k["max_trade"])), default=float("nan"))
    worst_f = max((k["max_trade"] for k in foll_kills if not math.isnan(k["max_trade"])), default=float("nan"))
    client_ok = all(cr["rc"] == 0 for cr in crashes)
    attempts_failed = sum(sum(cr["errors_attempt"].values()) for cr in crashes)
    probe_failed = sum(cr["probe_err"] for cr in crashes)
    identical = all(len({d[1] for d in cr["digests"].values()}) == 1 for cr in crashes)
    cons = all(all(i + s_ - b == q for _, i, s_, b, q in cr["conservation"]) for cr in crashes)
    base = mean([cr["trade_p50"] for cr in crashes])
    base99 = max((cr["trade_p99"] for cr in crashes), default=float("nan"))
    base_max = max((cr["trade_max"] for cr in crashes), default=float("nan"))
    worst_q = max((k["max_probe"] for k in leader_kills if not math.isnan(k["max_probe"])),
                  default=float("nan"))
    w("### Answers")
    w("")
    w(f"**Can clients notice the failures?** "
      + ("Not as errors: " if client_ok and attempts_failed == 0 and probe_failed == 0 else "Yes, see the counts: ")
      + f"over {len(crashes)} runs and {len(all_kills)} SIGKILLs ({len(leader_kills)} of the leader), "
      f"the client {'exited 0 every time, with every order verified' if client_ok else 'did NOT always exit 0'}, "
      f"{attempts_failed} request attempts failed (and were retried by the client), and "
      f"{probe_failed} of the prober's unretried order queries failed. "
      f"What they can notice is **latency**, and little of it: the worst trade within ±1 s of a "
      f"kill took {fmt(worst_f, 1)} ms for follower kills and {fmt(worst_l, 1)} ms for leader kills, "
      f"against a median trade of {fmt(base, 2)} ms, a p99 of {fmt(base99, 1)} ms and a maximum of "
      f"{fmt(base_max, 1)} ms away from the kills"
      + (" (on this shared machine, spikes of that size happen without any kill too). "
         if base_max >= 0.8 * max(worst_f, worst_l) else ". ")
      + f"A follower kill leaves the leader one follower, which is all a majority of three needs; "
      f"killing the leader stalls the trades in flight until the front-end re-selects, the next "
      f"replica promotes itself and the front-end retries the same request id there. "
      + ("That pause is far below the 500 ms health-check interval: a SIGKILLed process's "
         "sockets are closed by the kernel, so the front-end's call to the dead leader fails at "
         "once (reset or refused) and re-selection starts immediately. "
         if worst_l < 400 else
         "Part of that pause is detection: a call that hangs is only noticed by the 500 ms health "
         "check or the call deadline. ")
      + f"Lookups never touch the order replicas and are unaffected. Order queries go to the "
      f"leader, so a query in flight at a leader crash waits like a trade (worst prober query "
      f"within ±1 s of a leader kill: {fmt(worst_q, 1)} ms), and once the crashed replicas are "
      f"back every order the client made reads back correctly (the client's final verification).")
    w("")
    w(f"**Are the databases identical after the crashes?** "
      + ("Yes: " if identical else "No: ")
      + f"in every run, once the replicas were idle, the `orders` tables of the three replicas "
      f"{'had the same rows, byte for byte in every column (including request id and epoch)' if identical else 'differed (see above)'}, "
      f"and catalog conservation {'held' if cons else 'was violated'} for every stock.")
    w("")
    w("## Files")
    w("")
    w("`docs/eval/` holds the CSV behind every figure (`latency.csv`, `latency_runs.csv`, "
      "`lru_*.csv`, `crashN_latency.csv.gz` with every client request, `crashN_kills.csv`, "
      "`crashN_queries.csv`, `crashN_leader.csv`) and the PNGs; the gnuplot scripts are in "
      "`bench/eval/`.")
    w("")
    with open(os.path.join(out, "eval.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L))


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--out", required=True, help="staging directory: eval.md and eval/")
    ap.add_argument("--tmp", required=True, help="scratch directory for clusters")
    ap.add_argument("--command", default="make eval")
    ap.add_argument("--only", default="123", help="experiments to run (for development)")
    args = ap.parse_args()
    args.bin_dir = os.path.abspath(args.bin_dir)
    os.environ["BAZAAR_BIN_DIR"] = args.bin_dir
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    t_start = time.monotonic()
    os.makedirs(os.path.join(args.out, "eval"), exist_ok=True)
    info = machine_info()
    try:
        lat = experiment_latency(args, args.tmp, args.out) if "1" in args.only else ([], {})
        lru = experiment_lru(args, args.tmp, args.out) if "2" in args.only else None
        crashes = [experiment_crash(args, args.tmp, args.out, i + 1) for i in range(CRASH_RUNS)] \
            if "3" in args.only else []
    finally:
        kill_children()
    log("plots")
    if lat[0]:
        gnuplot(args.out, "latency.gp")
    if lru:
        gnuplot(args.out, "lru.gp")
    for cr in crashes:
        gnuplot(args.out, "crash.gp", run=str(cr["run"]))
    if args.only == "123":
        load_end = open("/proc/loadavg", encoding="utf-8").read().split()[:3]
        write_report(args.out, args, info, lat, lru, crashes, time.monotonic() - t_start, load_end)
    with open(os.path.join(args.out, "eval", "summary.json"), "w", encoding="utf-8") as f:
        json.dump({"runtime_s": time.monotonic() - t_start,
                   "crashes": [{k: v for k, v in cr.items() if k not in ("kills",)} | {
                       "kills": cr["kills"]} for cr in crashes]}, f, indent=1, default=str)
    log(f"done in {time.monotonic() - t_start:.0f} s")


if __name__ == "__main__":
    main()
