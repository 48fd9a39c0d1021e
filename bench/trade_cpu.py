#!/usr/bin/env python3
"""CPU per trade of each process of a trade cluster (leader, each follower, front-end,
catalog), for two or more builds or modes, interleaved round by round.

CPU is read from /proc/PID/task/*/schedstat (nanoseconds on the CPU, per thread, summed over
the process's threads before and after each wrk run), which counts what the scheduler
charged; /proc/PID/stat's tick-sampled utime+stime undercounted these short, frequently
sleeping threads by about half here. Variants alternate round by round so machine noise
hits all of them; the table gives the median round of each (docs/design.md, "The
replication wire", was measured with it).

    python3 bench/trade_cpu.py --variant old=/tmp/old/bin:primary-backup \\
        --variant new=build/bin:primary-backup --connections 64 --duration 8 --rounds 5
"""

import argparse
import glob
import os
import tempfile

import benchlib
import bazaar


def schedstat_ns(pid):
    """Nanoseconds this process's live threads have run so far (0 if it is gone)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path, encoding="utf-8") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def roles(cluster):
    """{role name: pid}: leader, follower1, follower2, ..., frontend, catalog."""
    leader = bazaar.find_leader(cluster)
    out, k = {}, 0
    for name, proc in sorted(cluster.processes.items()):
        if name.startswith("order"):
            rid = int(name[len("order"):])
            if rid == leader:
                out["leader"] = proc.pid
            else:
                k += 1
                out[f"follower{k}"] = proc.pid
        else:
            out[name] = proc.pid
    return out


def measure(cluster, url, lua, duration, connections):
    pids = roles(cluster)
    before = {r: schedstat_ns(p) for r, p in pids.items()}
    res = benchlib.run_wrk(url, duration, min(connections, 2), connections, lua)
    trades = max(res["requests"] - res["non2xx"], 1)
    cpu = {r: (schedstat_ns(p) - before[r]) / 1e3 / trades for r, p in pids.items()}
    res["cpu"] = cpu
    res["acked"] = res["requests"] - res["non2xx"]
    print(f"  {res['rps']:>9,.0f} trades/s  " +
          "  ".join(f"{r} {v:.1f}" for r, v in cpu.items()) + "  (us CPU per trade)", flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", required=True,
                    help="name=BIN_DIR:MODE (first one is the reference)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    variants = benchlib.parse_variants(args.variant)
    benchlib.install_signal_handlers()
    root = tempfile.mkdtemp(prefix="bazaar-tradecpu-")
    clusters, runs = {}, {name: [] for name, _, _ in variants}
    try:
        lua = benchlib.write_trade_script(os.path.join(root, "trade.lua"))
        for name, bindir, mode in variants:
            clusters[name] = benchlib.start_trade_cluster(root, name, mode, bindir)
        for rnd in range(1, args.rounds + 1):
            print(f"round {rnd}/{args.rounds} (load {benchlib.loadavg()})", flush=True)
            for name, _, _ in variants:
                print(f" {name}", flush=True)
                runs[name].append(measure(clusters[name], clusters[name].frontend_url("/orders"),
                                          lua, args.duration, args.connections))
        for name, _, _ in variants:
            acked = sum(r["acked"] for r in runs[name])
            orders = benchlib.check_trade_log(clusters[name], acked, name)
            print(f"{name}: {orders} orders, replicas identical")
    finally:
        benchlib.stop_clusters(clusters, root)

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]

    print(f"load average: {benchlib.loadavg()} ({os.cpu_count()} CPUs), c={args.connections}, "
          f"{args.rounds} rounds of {args.duration} s, medians")
    role_names = list(runs[variants[0][0]][0]["cpu"])
    print("| variant | trades/s | " + " | ".join(f"{r} us/trade" for r in role_names) + " |")
    print("|---" * (2 + len(role_names)) + "|")
    for name, _, _ in variants:
        rs = runs[name]
        cells = [f"{median([r['rps'] for r in rs]):,.0f}"]
        cells += [f"{median([r['cpu'].get(role, 0) for r in rs]):.1f}" for role in role_names]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
