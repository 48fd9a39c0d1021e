#!/usr/bin/env python3
"""Trade throughput of two builds or modes side by side, interleaved in one run.

Each variant is a 3-replica cluster (majority acks) started from its own bin directory and
replication mode; wrk posts orders (buy and sell of 1 share, alternating over the 12 default
stocks, keep-alive) through the front-end at the given connection counts. Variants alternate
round by round so machine noise hits both; the table gives the median round of each and the
ratio to the first variant. After the runs it checks that each cluster's replicas hold
identical `orders` tables (benchlib.check_trade_log, as `make bench` does). `make bench`
compares the current build with etcd; this compares builds or modes with each other.

    python3 bench/trade_ab.py --variant old=/work/wt-old/build/bin:primary-backup \\
        --variant new=build/bin:primary-backup --variant raft=build/bin:raft \\
        --connections 1,16,64 --duration 8 --rounds 3
"""

import argparse
import os
import tempfile

import benchlib
from benchlib import Target, measure, median_of, round_robin


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", required=True,
                    help="name=BIN_DIR:MODE (first one is the reference)")
    ap.add_argument("--connections", default="16")
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    variants = benchlib.parse_variants(args.variant)
    conns = [int(c) for c in args.connections.split(",")]
    benchlib.install_signal_handlers()
    root = tempfile.mkdtemp(prefix="bazaar-tradeab-")
    clusters = {}
    results = {}
    try:
        lua = benchlib.write_trade_script(os.path.join(root, "trade.lua"))
        for name, bindir, mode in variants:
            clusters[name] = benchlib.start_trade_cluster(root, name, mode, bindir)
        targets = [Target(name, clusters[name].frontend_url("/orders"),
                          benchlib.cluster_pids(clusters[name]), lua) for name, _, _ in variants]
        acked = {name: 0 for name, _, _ in variants}
        for c in conns:
            runs = round_robin(targets, args.rounds, lambda t: measure(t, args.duration, c),
                               label=f"c={c}")
            for name, rs in runs.items():
                results[(name, c)] = median_of(rs)
                acked[name] += results[(name, c)]["acked"]
        for name, _, _ in variants:
            orders = benchlib.check_trade_log(clusters[name], acked[name], name)
            print(f"{name}: {orders} orders, replicas identical")
    finally:
        benchlib.stop_clusters(clusters, root)
    ref = variants[0][0]
    print(f"load average: {benchlib.loadavg()} ({os.cpu_count()} CPUs)")
    print("| connections | " + " | ".join(f"{n} trades/s" for n, _, _ in variants) + " | " +
          " | ".join(f"{n} / {ref}" for n, _, _ in variants[1:]) + " | " +
          " | ".join(f"{n} p50 / p99 ms" for n, _, _ in variants) + " |")
    print("|---" * (1 + 2 * len(variants) + len(variants) - 1) + "|")
    for c in conns:
        med = {n: results[(n, c)] for n, _, _ in variants}
        cells = [f"{med[n]['rps']:,.0f}" for n, _, _ in variants]
        ratios = [f"{med[n]['rps'] / med[ref]['rps']:.2f}" for n, _, _ in variants[1:]]
        lat = [f"{med[n]['p50_ms']:.2f} / {med[n]['p99_ms']:.2f}" for n, _, _ in variants]
        print(f"| {c} | " + " | ".join(cells + ratios + lat) + " |")


if __name__ == "__main__":
    main()
