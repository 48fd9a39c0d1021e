#!/usr/bin/env python3
"""Trade throughput of two builds or modes side by side, interleaved in one run.

Each variant is a 3-replica cluster (majority acks) started from its own bin directory and
replication mode; wrk posts orders (buy and sell of 1 share, alternating over the 12 default
stocks, keep-alive) through the front-end at the given connection counts. Variants alternate
round by round so machine noise hits both; the table gives the median round of each and the
ratio to the first variant. After the runs it checks that each cluster's replicas hold
identical `orders` tables.

    python3 bench/trade_ab.py --variant old=/work/wt-old/build/bin:primary-backup \\
        --variant new=build/bin:primary-backup --variant raft=build/bin:raft \\
        --connections 1,16,64 --duration 8 --rounds 3
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))

import bazaar  # noqa: E402

LUA = r"""
local stocks = {"GameStart","RottenFishCo","BoarCo","MenhirCo","FishCo","BirdCo",
                "Alpha","Bravo","Charlie","Delta","Echo","Foxtrot"}
local n = 0
request = function()
  n = n + 1
  local s = stocks[(n % #stocks) + 1]
  local t = (math.floor(n / #stocks) % 2 == 0) and "buy" or "sell"
  return wrk.format("POST", "/orders", {["Content-Type"]="application/json"},
    '{"name":"' .. s .. '","type":"' .. t .. '","quantity":1}')
end
"""


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def ms(tag):
        m = re.search(tag + r"\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return None
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"),
            "non2xx": int(errors.group(1)) if errors else 0}


def stocks_csv():
    names = ["GameStart", "RottenFishCo", "BoarCo", "MenhirCo", "FishCo", "BirdCo", "Alpha",
             "Bravo", "Charlie", "Delta", "Echo", "Foxtrot"]
    return "name,price,quantity\n" + "".join(f"{n},10,100000\n" for n in names)


def start(name, bindir, mode, root):
    os.environ["BAZAAR_BIN_DIR"] = os.path.abspath(bindir)
    overrides = {"replication": {"mode": mode}, "cluster": {"log_level": "warn"}}
    if mode == "raft":
        for rid in (1, 2, 3):
            overrides[f"order.{rid}"] = {"raft_listen": f"127.0.0.1:{bazaar.free_port()}"}
    c = bazaar.Cluster(os.path.join(root, name), replicas=3, overrides=overrides,
                       stocks_csv=stocks_csv(), log_level="warn")
    c.start()
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", required=True,
                    help="name=BIN_DIR:MODE (first one is the reference)")
    ap.add_argument("--connections", default="16")
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    variants = []
    for v in args.variant:
        name, rest = v.split("=", 1)
        bindir, mode = rest.rsplit(":", 1)
        variants.append((name, bindir, mode))
    conns = [int(c) for c in args.connections.split(",")]
    root = tempfile.mkdtemp(prefix="bazaar-tradeab-")
    lua = os.path.join(root, "trade.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    clusters = {}
    results = {}
    try:
        for name, bindir, mode in variants:
            clusters[name] = start(name, bindir, mode, root)
        for c in conns:
            for r in range(args.rounds):
                for name, _, _ in variants:
                    url = clusters[name].frontend_url("/orders")
                    out = subprocess.run(["wrk", "-t", str(min(c, 2)), "-c", str(c), "-d",
                                          f"{args.duration}s", "--latency", "-s", lua, url],
                                         capture_output=True, text=True, timeout=args.duration + 30)
                    res = parse_wrk(out.stdout)
                    results.setdefault((name, c), []).append(res)
                    print(f"c={c} round {r} {name}: {res['rps']:.0f}/s p50 {res['p50']} ms "
                          f"p99 {res['p99']} ms non-2xx {res['non2xx']}", file=sys.stderr)
        for name, _, _ in variants:
            idle = bazaar.wait_replicas_idle(clusters[name], timeout=60)
            rows = [bazaar.order_view(bazaar.db_orders(clusters[name], rid))
                    for rid in clusters[name].replica_ids()]
            same = all(r == rows[0] for r in rows)
            print(f"{name}: {idle['last'] + 1} orders, replicas identical: {same}", file=sys.stderr)
            if not same:
                raise SystemExit(f"{name}: replicas differ")
    finally:
        for c in clusters.values():
            c.stop()
        shutil.rmtree(root, ignore_errors=True)
    ref = variants[0][0]
    print(f"load average: {os.getloadavg()[0]:.2f} (2 cores)")
    print("| connections | " + " | ".join(f"{n} trades/s" for n, _, _ in variants) + " | " +
          " | ".join(f"{n} / {ref}" for n, _, _ in variants[1:]) + " | " +
          " | ".join(f"{n} p50 / p99 ms" for n, _, _ in variants) + " |")
    print("|---" * (1 + 2 * len(variants) + len(variants) - 1) + "|")
    for c in conns:
        med = {}
        for name, _, _ in variants:
            runs = sorted(results[(name, c)], key=lambda x: x["rps"])
            med[name] = runs[len(runs) // 2]
        cells = [f"{med[n]['rps']:,.0f}" for n, _, _ in variants]
        ratios = [f"{med[n]['rps'] / med[ref]['rps']:.2f}" for n, _, _ in variants[1:]]
        lat = [f"{med[n]['p50']:.2f} / {med[n]['p99']:.2f}" for n, _, _ in variants]
        print(f"| {c} | " + " | ".join(cells + ratios + lat) + " |")


if __name__ == "__main__":
    main()
