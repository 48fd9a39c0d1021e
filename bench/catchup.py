#!/usr/bin/env python3
"""How long a replica that missed N orders takes to catch up, in either replication mode.

A 3-replica cluster; one follower is stopped; wrk trades through the front-end until the leader
holds N more orders; the follower is started again and timed until /health answers 200 and its
log holds the leader's last number. In raft mode `--via snapshot` keeps the default snapshot
policy (the follower is far behind the leader's log start, so it installs a snapshot) and
`--via log` sets a threshold above N (it is sent the log entries). `make bench` runs it with
CATCHUP=N (bench.py --catchup N, default policy).

    python3 bench/catchup.py --mode raft --orders 100000 --via snapshot
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import benchlib
from benchlib import bazaar


def measure_catchup(mode, orders, via, bin_dir, root):
    """Stop a follower, trade until the leader holds `orders` more, restart the follower and
    time it from start to ready with the leader's last number. Returns {"orders", "seconds"}."""
    overrides = {}
    if mode == "raft" and via == "log":
        overrides["replication"] = {"snapshot_threshold": str(orders * 4)}
    c = benchlib.start_trade_cluster(root, "cluster", mode, bin_dir, overrides)
    try:
        lua = benchlib.write_trade_script(os.path.join(root, "trade.lua"))
        leader = bazaar.wait_for(lambda: bazaar.find_leader(c), what="a leader")
        victim = next(r for r in c.replica_ids() if r != leader)
        c.stop_process(f"order{victim}")
        start_last = bazaar.replica_state(c, leader)["last"]
        t0 = time.monotonic()
        while bazaar.replica_state(c, leader)["last"] - start_last < orders:
            benchlib.run_wrk(c.frontend_url("/orders"), 5, 2, 32, lua)
        target = bazaar.replica_state(c, leader)["last"]
        print(f"{target - start_last} orders in {time.monotonic() - t0:.0f} s while order{victim} "
              f"was down", file=sys.stderr, flush=True)
        t1 = time.monotonic()
        c.start_process(f"order{victim}", wait=False)
        bazaar.wait_for(lambda: c.is_ready(f"order{victim}") and
                        bazaar.replica_state(c, victim)["last"] >= target,
                        timeout=300, what="the follower caught up", interval=0.02)
        took = time.monotonic() - t1
    finally:
        c.stop()
    how = f"{mode} via {via}" if mode == "raft" else mode
    print(f"{how}: order{victim} caught up {target - start_last} orders "
          f"in {took:.2f} s (restart to ready and complete)", flush=True)
    return {"orders": target - start_last, "seconds": took}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default="primary-backup", choices=["primary-backup", "raft"])
    ap.add_argument("--orders", type=int, default=100000)
    ap.add_argument("--via", default="log", choices=["log", "snapshot"])
    ap.add_argument("--bin-dir", default=os.path.join(bazaar.REPO_ROOT, "build", "bin"))
    args = ap.parse_args()
    benchlib.install_signal_handlers()
    root = tempfile.mkdtemp(prefix="bazaar-catchup-")
    try:
        measure_catchup(args.mode, args.orders, args.via, args.bin_dir, root)
    finally:
        benchlib.stop_children()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
