#!/usr/bin/env python3
"""Library calls and system calls per lookup at the front-end, for one or more builds.

CPU per request is too noisy on a shared machine to see a change of a few percent; the calls
a request makes are not. For each build this starts a one-replica lookup cluster (as
`make bench` does), runs wrk on GET /stocks/GameStart and counts, on the front-end process
only, calls of a few libc functions (perf uprobes: clock reads, mutexes, allocations) and a
few system calls (perf tracepoints), divided by the requests wrk completed. The probes slow
every call they count, so the request rate here is not a benchmark. Needs root (perf probe);
the probes this script adds are removed when it ends. docs/design.md, "Cache hits", was
measured with it.

    python3 bench/calls.py --variant old=/tmp/old/bin --variant new=build/bin --cache on
"""

import argparse
import os
import subprocess
import tempfile
import time

import benchlib
from bench import PATH, start_lookup_cluster

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
FUNCTIONS = ("clock_gettime", "pthread_mutex_lock", "malloc", "calloc", "free")
SYSCALLS = ("epoll_wait", "sendmsg", "recvfrom", "epoll_ctl", "futex")


def probes_add():
    """Adds the libc uprobes that are missing; returns the ones it added."""
    have = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    added = []
    for fn in FUNCTIONS:
        if f"probe_libc:{fn} " not in have:
            subprocess.run(["perf", "probe", "-q", "-x", LIBC, fn], check=True)
            added.append(fn)
    return added


def probes_del(added):
    for fn in added:
        subprocess.run(["perf", "probe", "-q", "-d", f"probe_libc:{fn}"], check=False)


def count(pid, url, duration, connections):
    """{event: calls per request} on pid while wrk runs for duration seconds."""
    events = [f"probe_libc:{fn}" for fn in FUNCTIONS] + \
             [f"syscalls:sys_enter_{sc}" for sc in SYSCALLS]
    perf = benchlib.spawn(["perf", "stat", "-x,", "-e", ",".join(events), "-p", str(pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # attached before the first request counted
        res = benchlib.run_wrk(url, duration, min(connections, 2), connections)
    finally:
        benchlib.stop_child(perf, sig=2)
    err = perf.stderr.read()
    out = {}
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            out[fields[2].split(":", 1)[1]] = int(fields[0]) / max(res["requests"], 1)
    return out, res["requests"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", required=True, help="name=BIN_DIR")
    ap.add_argument("--cache", choices=("on", "off"), default="on")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=int, default=3)
    args = ap.parse_args()
    variants = [tuple(v.split("=", 1)) for v in args.variant]
    benchlib.install_signal_handlers()
    root = tempfile.mkdtemp(prefix="bazaar-calls-")
    added = probes_add()
    clusters, results = {}, {}
    try:
        for name, bindir in variants:
            clusters[name] = start_lookup_cluster(root, name, args.cache, os.path.abspath(bindir))
            url = clusters[name].frontend_url(PATH)
            benchlib.run_wrk(url, 1, 1, 4)  # fills the cache when it is on
            results[name] = count(clusters[name].processes["frontend"].pid, url, args.duration,
                                  args.connections)
            clusters[name].stop()
    finally:
        probes_del(added)
        benchlib.stop_clusters(clusters, root)
    names = [n for n, _ in variants]
    print(f"cache {args.cache}, {args.connections} connections, {args.duration} s; calls per "
          f"request at the front-end (requests counted: "
          + ", ".join(f"{n} {results[n][1]:,}" for n in names) + ")")
    print("| call | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for ev in [f"probe_libc:{fn}" for fn in FUNCTIONS] + [f"syscalls:sys_enter_{sc}" for sc in SYSCALLS]:
        key = ev.split(":", 1)[1]
        print(f"| {key} | " + " | ".join(f"{results[n][0].get(key, 0):.3f}" for n in names) + " |")


if __name__ == "__main__":
    main()
