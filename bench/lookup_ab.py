#!/usr/bin/env python3
"""Lookups of two or more builds side by side, interleaved in one run.

Each variant is a one-replica cluster started from its own bin directory, as `make bench`
starts it for lookups (front-end and catalog with 2 threads each); wrk GETs
/stocks/GameStart through the front-end (keep-alive) at the given connection counts, with the
cache off (every request is a miss the catalog answers) or on (hits). Variants alternate round
by round so machine noise hits both; the table gives the median round of each, the server CPU
per request (front-end + catalog, from /proc) and, for misses, how many misses each catalog
call carried (`POST /lookups`). `make bench` compares the current build with nginx; this
compares builds with each other (docs/design.md, "Lookup batches", was measured with it).

    python3 bench/lookup_ab.py --variant old=/work/wt-old/build/bin --variant new=build/bin \\
        --cache off --connections 16,64 --duration 8 --rounds 3
"""

import argparse
import os
import tempfile

import benchlib
from bench import PATH, start_lookup_cluster
from benchlib import Target, measure, median_of, round_robin


def lookup_calls(cluster):
    """(catalog calls for misses, misses they carried) from the front-end's metrics."""
    m = cluster.metrics("frontend")
    return (m.get("bazaar_frontend_lookup_calls_total", 0),
            m.get("bazaar_frontend_lookup_names_total", 0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", required=True,
                    help="name=BIN_DIR (the first one is the reference)")
    ap.add_argument("--cache", choices=("on", "off"), default="off")
    ap.add_argument("--connections", default="64")
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    variants = [tuple(v.split("=", 1)) for v in args.variant]
    conns = [int(c) for c in args.connections.split(",")]
    benchlib.install_signal_handlers()
    root = tempfile.mkdtemp(prefix="bazaar-lookupab-")
    clusters, results, carried = {}, {}, {}
    try:
        for name, bindir in variants:
            clusters[name] = start_lookup_cluster(root, name, args.cache, os.path.abspath(bindir))
        targets = [Target(name, clusters[name].frontend_url(PATH),
                          benchlib.cluster_pids(clusters[name])) for name, _ in variants]
        for name, _ in variants:  # the first lookup fills the cache when it is on
            benchlib.run_wrk(clusters[name].frontend_url(PATH), 1, 1, 1)
        for c in conns:
            before = {name: lookup_calls(clusters[name]) for name, _ in variants}
            runs = round_robin(targets, args.rounds, lambda t: measure(t, args.duration, c),
                               label=f"c={c}")
            for name, rs in runs.items():
                results[(name, c)] = median_of(rs)
                after = lookup_calls(clusters[name])
                calls, names = (a - b for a, b in zip(after, before[name]))
                carried[(name, c)] = names / calls if calls else 0.0
    finally:
        benchlib.stop_clusters(clusters, root)
    ref = variants[0][0]
    print(f"cache {args.cache}; load average: {benchlib.loadavg()} ({os.cpu_count()} CPUs)")
    print("| variant | connections | req/s | / " + ref + " | server CPU µs/req | "
          "p50 / p99 ms | misses per catalog call |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for c in conns:
        for name, _ in variants:
            med = results[(name, c)]
            ratio = med["rps"] / results[(ref, c)]["rps"]
            per_call = f"{carried[(name, c)]:.1f}" if carried[(name, c)] else "—"
            print(f"| {name} | {c} | {med['rps']:,.0f} | {ratio:.2f} | {med['cpu_us']:.2f} | "
                  f"{med['p50_ms']:.3f} / {med['p99_ms']:.3f} | {per_call} |")


if __name__ == "__main__":
    main()
