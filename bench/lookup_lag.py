#!/usr/bin/env python3
"""lookup_lag.py - how long a lookup through the front-end can lag another client's trade.

Under load (trader threads buying through one front-end, each on its own keep-alive
connection), observer threads look the same stocks up as fast as they can, on their own
connections, through a second front-end (--frontends 2, the default: its cache entry is dropped
only by the catalog's push) or through the traders' own (--frontends 1: that front-end also
drops the entry itself before it acknowledges a trade it routed). For every acknowledged trade k on stock s it measures

    lag(k) = the latest (lookup sent - k acknowledged) over the lookups of s that were sent
             after k's acknowledgement and still answered a quantity from before k
             (0 when no such lookup exists)

i.e. how long after a trade was acknowledged to one client another client could still read
the pre-trade quantity, with the catalog's server-push invalidation as the only thing that
drops the cached entry. Traders only buy (quantities start at 10^6, so none is refused): a
stock's quantity then falls strictly with every trade, and "a quantity from before k" is simply
a quantity above k's post-trade quantity. That post-trade quantity is read from catalog.db
(applied.result_quantity by request id) when the catalog records it, else summed from the
order log in number order.

It prints p50 / p99 / max of lag over all trades and over the trades that had any lag, the
share of trades and of lookups that were stale, and the request counts. With --write it runs
two configurations (observers on a second front-end, observers on the traders' front-end) and
writes bench/lookup_lag.md. Not part of make
test.

Usage: python3 bench/lookup_lag.py [--bin-dir build/bin] [--seconds 15] [--traders 8]
                                   [--observers 4] [--stocks 4] [--cache on|off] [--seed N]
                                   [--frontends 1|2] [--write] [--self-test]
--self-test checks the lag computation on a made-up history with a known lag (it also runs
before every measurement): a measured 0 then means no lag, not a method that cannot see any.
"""

import argparse
import http.client
import json
import os
import random
import sys
import tempfile
import shutil
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(BENCH_DIR), "tests", "lib"))

import bazaar  # noqa: E402

START_QUANTITY = 1_000_000


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(int(round(p / 100.0 * (len(values) - 1))), len(values) - 1)]


class Client:
    """One keep-alive connection with a per-request timeout."""

    def __init__(self, host, port, timeout=10.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def send(self, method, path, body=None, headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            return None, None
        if resp.will_close:
            self.conn.close()
            self.conn = None
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, None

    def close(self):
        if self.conn is not None:
            self.conn.close()


def run(args):
    stocks = [f"Lag{i}" for i in range(args.stocks)]
    csv_text = "name,price,quantity\n" + "".join(f"{s},1.0,{START_QUANTITY}\n" for s in stocks)
    tmpdir = tempfile.mkdtemp(prefix="bazaar-lookup-lag-")
    overrides = {"cluster": {"log_level": "warn"},
                 "frontend": {"cache": args.cache, "cache_size": "8"}}
    cluster = bazaar.Cluster(tmpdir, replicas=3, stocks_csv=csv_text, overrides=overrides,
                             frontends=2)
    stop = threading.Event()
    trades, lookups, errors = [], [], []
    lock = threading.Lock()
    try:
        cluster.start()
        host, port = cluster.address("frontend")
        # Observers read through the second front-end, or through the traders' own.
        ohost, oport = cluster.address("frontend2") if args.frontends == 2 else (host, port)

        def trader(i):
            rng = random.Random(f"{args.seed}/lag-trader/{i}")
            c = Client(host, port)
            seq = 0
            while not stop.is_set():
                name = rng.choice(stocks)
                qty = rng.randint(1, 5)
                key = f"lag-{i}-{seq}"
                seq += 1
                body = json.dumps({"name": name, "type": "buy", "quantity": qty})
                t0 = time.monotonic()
                status, reply = c.send("POST", "/orders", body,
                                       {"Content-Type": "application/json", "Idempotency-Key": key})
                t1 = time.monotonic()
                if status == 200:
                    with lock:
                        trades.append((name, key, reply["data"]["transaction_number"], t0, t1))
                else:
                    with lock:
                        errors.append(f"trade {key}: {status} {reply}")
            c.close()

        def observer(i):
            c = Client(ohost, oport)
            k = i
            while not stop.is_set():
                name = stocks[k % len(stocks)]
                k += 1
                t0 = time.monotonic()
                status, reply = c.send("GET", f"/stocks/{name}")
                t1 = time.monotonic()
                if status == 200:
                    with lock:
                        lookups.append((name, reply["data"]["quantity"], t0, t1))
                else:
                    with lock:
                        errors.append(f"lookup {name}: {status} {reply}")
            c.close()

        threads = [threading.Thread(target=trader, args=(i,), daemon=True)
                   for i in range(args.traders)]
        threads += [threading.Thread(target=observer, args=(i,), daemon=True)
                    for i in range(args.observers)]
        for th in threads:
            th.start()
        time.sleep(args.seconds)
        stop.set()
        for th in threads:
            th.join(30)
        bazaar.wait_replicas_idle(cluster, timeout=60)
        post = post_trade_quantities(cluster, trades)
    finally:
        stop.set()
        cluster.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)
    return report(args, trades, lookups, errors, post)


def post_trade_quantities(cluster, trades):
    """{key: quantity right after that trade} from catalog.db, else from the log by number."""
    applied = bazaar.db_applied(cluster)
    if applied and all(a["result_quantity"] is not None for a in applied):
        by_rid = {a["request_id"]: a["result_quantity"] for a in applied}
        return {key: by_rid.get(f"k:{key}") for _, key, _, _, _ in trades}
    qty, after = {}, {}
    for r in bazaar.db_orders(cluster, cluster.replica_ids()[0]):
        qty[r["name"]] = qty.get(r["name"], START_QUANTITY) - r["quantity"]
        after[r["number"]] = qty[r["name"]]
    return {key: after.get(number) for _, key, number, _, _ in trades}


SCAN_LIMIT_S = 5.0  # lookups sent this long after an ack are not scanned (lag is capped there)


def compute_lags(trades, lookups, post):
    """(lag per measured trade, set of stale lookups) from trades [(name, key, number, sent,
    acked)], lookups [(name, quantity, sent, answered)] and post {key: quantity right after
    the trade}. Quantities only fall (buys only), so a lookup still shows the pre-trade state
    exactly when its quantity is above the trade's post-trade quantity."""
    by_stock = {}
    for name, q, t0, _ in lookups:
        by_stock.setdefault(name, []).append((t0, q))
    for lst in by_stock.values():
        lst.sort()
    lags, stale_lookups = [], set()
    for name, key, _, _, acked in trades:
        q_after = post.get(key)
        if q_after is None:
            continue
        lag = 0.0
        lst = by_stock.get(name, [])
        for idx in range(_first_after(lst, acked), len(lst)):
            t0, q = lst[idx]
            if t0 - acked > SCAN_LIMIT_S:
                break
            if q > q_after:  # still the quantity from before this trade
                lag = max(lag, t0 - acked)
                stale_lookups.add((name, idx))
        lags.append(lag)
    return lags, stale_lookups


def self_test():
    """The lag computation on a made-up history with a known answer (the method can see lag):
    Lag0 falls 100 -> 99 (acked at t=1.0) -> 97 (acked at t=2.0); lookups still answer 100 at
    t=1.05 and 1.20, then 99 until t=2.30. Expected lags: 0.20 s and 0.30 s."""
    trades = [("Lag0", "a", 0, 0.9, 1.0), ("Lag0", "b", 1, 1.9, 2.0)]
    post = {"a": 99, "b": 97}
    lookups = [("Lag0", 100, 0.95, 0.96), ("Lag0", 100, 1.05, 1.06), ("Lag0", 100, 1.20, 1.21),
               ("Lag0", 99, 1.30, 1.31), ("Lag0", 99, 2.10, 2.11), ("Lag0", 99, 2.30, 2.31),
               ("Lag0", 97, 2.40, 2.41)]
    lags, stale = compute_lags(trades, lookups, post)
    want = [0.20, 0.30]
    ok = all(abs(a - b) < 1e-9 for a, b in zip(lags, want)) and len(stale) == 4
    print(f"self-test: lags {[round(x, 3) for x in lags]} (want {want}), {len(stale)} stale"
          f" lookups (want 4): {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


def report(args, trades, lookups, errors, post):
    lags, stale_lookups = compute_lags(trades, lookups, post)
    positive = [x for x in lags if x > 0]
    result = {"trades": len(trades), "lookups": len(lookups), "errors": len(errors),
              "lagging": len(positive), "stale_lookups": len(stale_lookups),
              "p50": percentile(lags, 50), "p99": percentile(lags, 99),
              "max": max(lags, default=0.0), "lag_p50": percentile(positive, 50),
              "lag_p99": percentile(positive, 99)}
    ms = lambda x: f"{x * 1000:.2f}"  # noqa: E731
    print(f"lookup lag behind another client's trade (cache {args.cache}, server push,"
          f" observers on {'a second' if args.frontends == 2 else 'the same'} front-end;"
          f" {args.traders} traders, {args.observers} observers, {args.stocks}"
          f" stocks, {args.seconds:.0f} s, seed {args.seed}):")
    print(f"  trades acknowledged: {len(trades)} ({len(trades) / args.seconds:.0f}/s); lookups:"
          f" {len(lookups)} ({len(lookups) / args.seconds:.0f}/s); errors: {len(errors)}")
    print(f"  trades with a stale lookup after their ack: {len(positive)} of {len(lags)}"
          f" ({100.0 * len(positive) / max(len(lags), 1):.2f}%); stale lookups:"
          f" {len(stale_lookups)} of {len(lookups)}"
          f" ({100.0 * len(stale_lookups) / max(len(lookups), 1):.3f}%)")
    print(f"  lag over all trades   p50 {ms(percentile(lags, 50))} ms  p99"
          f" {ms(percentile(lags, 99))} ms  max {ms(max(lags, default=0.0))} ms")
    print(f"  lag over lagging ones p50 {ms(percentile(positive, 50))} ms  p99"
          f" {ms(percentile(positive, 99))} ms  max {ms(max(positive, default=0.0))} ms")
    for e in errors[:5]:
        print(f"  error: {e}")
    return result


def _first_after(lst, t):
    lo, hi = 0, len(lst)
    while lo < hi:
        mid = (lo + hi) // 2
        if lst[mid][0] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


CONFIGS = {
    # name: (frontends, what it shows)
    "push-2fe": (2, "observers on a second front-end: only the catalog's push drops their entry"
                 " (the lag this measures)"),
    "push-1fe": (1, "observers on the traders' front-end, which also drops the entry itself"
                 " before acknowledging a trade it routed"),
}


def write_results(path, args, rows, started):
    ms = lambda x: f"{x * 1000:.2f}"  # noqa: E731
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with open(path, "w", encoding="utf-8") as f:
        f.write("# Lookup lag behind another client's trade\n\n")
        f.write("Written by `bench/lookup_lag.py --write` (not part of `make test`). "
                "Method: see the script's docstring. In short: trader threads buy through one"
                " front-end; observer threads look the same stocks up as fast as they can;"
                " for each acknowledged trade, lag = the latest (lookup sent - trade"
                " acknowledged) over lookups that still answered the pre-trade quantity"
                " (0 when none did). The computation is checked on a made-up history with a"
                " known lag before every run (`--self-test`), so 0 means no lag was seen, not a"
                " method that cannot see any.\n\n")
        f.write(f"Setup: {args.traders} traders, {args.observers} observers, {args.stocks}"
                f" stocks, {args.seconds:.0f} s per configuration, 3 order replicas"
                f" (`write_quorum = majority`), cache on (`cache_size = 8`), seed {args.seed}."
                f" {started} UTC, {os.cpu_count()} CPUs ({bazaar.cpu_model()}), load average at"
                f" the end {load}; the machine is shared, so absolute times are indicative.\n\n")
        f.write("| configuration | trades/s | lookups/s | trades with a stale lookup |"
                " lag p50 / p99 / max (ms, all trades) | lag p50 / p99 (ms, lagging trades) |"
                " stale lookups |\n|---|---:|---:|---:|---:|---:|---:|\n")
        for name, r in rows:
            f.write(f"| `{name}`: {CONFIGS[name][1]} | {r['trades'] / args.seconds:.0f} |"
                    f" {r['lookups'] / args.seconds:.0f} | {r['lagging']} of {r['trades']} |"
                    f" {ms(r['p50'])} / {ms(r['p99'])} / {ms(r['max'])} |"
                    f" {ms(r['lag_p50'])} / {ms(r['lag_p99'])} |"
                    f" {r['stale_lookups']} of {r['lookups']} |\n")
        f.write(f"\nReproduce: `python3 bench/lookup_lag.py --bin-dir build/bin --write"
                f" --seconds {args.seconds:.0f}`\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", help="directory with the bazaar-* executables")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--traders", type=int, default=8)
    ap.add_argument("--observers", type=int, default=4)
    ap.add_argument("--stocks", type=int, default=4)
    ap.add_argument("--cache", choices=("on", "off"), default="on")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--frontends", type=int, choices=(1, 2), default=2,
                    help="2 (default): observers use a second front-end, whose cache only the"
                    " push invalidates; 1: the traders' own front-end (which also drops the entry"
                    " itself after each trade it routes)")
    ap.add_argument("--self-test", action="store_true",
                    help="check the lag computation on a made-up history, start nothing")
    ap.add_argument("--write", action="store_true",
                    help=f"run every configuration ({', '.join(CONFIGS)}) and write"
                    " bench/lookup_lag.md")
    args = ap.parse_args(argv)
    if args.bin_dir:
        os.environ["BAZAAR_BIN_DIR"] = os.path.abspath(args.bin_dir)
    if not (0 < args.seconds <= 600 and args.traders > 0 and args.observers > 0
            and 0 < args.stocks <= 8):
        ap.error("need 0 < seconds <= 600, traders > 0, observers > 0, 1..8 stocks")
    if args.self_test:
        return self_test()
    if self_test() != 0:
        return 1
    if not args.write:
        return 1 if run(args)["errors"] else 0
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    rows = []
    for name, (frontends, _) in CONFIGS.items():
        args.frontends, args.cache = frontends, "on"
        rows.append((name, run(args)))
    write_results(os.path.join(BENCH_DIR, "lookup_lag.md"), args, rows, started)
    print(f"wrote {os.path.join('bench', 'lookup_lag.md')}")
    return 1 if any(r["errors"] for _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
