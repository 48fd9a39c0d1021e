#!/usr/bin/env python3
"""How long a replica that missed N orders takes to catch up, in either replication mode.

A 3-replica cluster; one follower is stopped; wrk trades through the front-end until the leader
holds N more orders; the follower is started again and timed until /health answers 200 and its
log holds the leader's last number. In raft mode `--via snapshot` keeps the default snapshot
policy (the follower is far behind the leader's log start, so it installs a snapshot) and
`--via log` sets a threshold above N (it is sent the log entries).

    python3 bench/catchup.py --mode raft --orders 100000 --via snapshot
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))

import bazaar  # noqa: E402
from trade_ab import LUA, stocks_csv  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default="primary-backup", choices=["primary-backup", "raft"])
    ap.add_argument("--orders", type=int, default=100000)
    ap.add_argument("--via", default="log", choices=["log", "snapshot"])
    ap.add_argument("--bin-dir", default=os.path.join(bazaar.REPO_ROOT, "build", "bin"))
    args = ap.parse_args()
    os.environ["BAZAAR_BIN_DIR"] = os.path.abspath(args.bin_dir)
    root = tempfile.mkdtemp(prefix="bazaar-catchup-")
    overrides = {"cluster": {"log_level": "warn"}}
    if args.mode == "raft" and args.via == "log":
        overrides["replication"] = {"snapshot_threshold": str(args.orders * 4)}
    c = bazaar.Cluster(root, replicas=3, mode=args.mode, overrides=overrides,
                       stocks_csv=stocks_csv(), log_level="warn")
    c.start()
    lua = os.path.join(root, "trade.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    try:
        leader = bazaar.wait_for(lambda: bazaar.find_leader(c), what="a leader")
        victim = next(r for r in c.replica_ids() if r != leader)
        c.stop_process(f"order{victim}")
        start_last = bazaar.replica_state(c, leader)["last"]
        t0 = time.monotonic()
        while bazaar.replica_state(c, leader)["last"] - start_last < args.orders:
            subprocess.run(["wrk", "-t2", "-c32", "-d5s", "-s", lua, c.frontend_url("/orders")],
                           capture_output=True, timeout=60)
        target = bazaar.replica_state(c, leader)["last"]
        print(f"{target - start_last} orders in {time.monotonic() - t0:.0f} s while order{victim} "
              f"was down", file=sys.stderr)
        t1 = time.monotonic()
        c.start_process(f"order{victim}", wait=False)
        bazaar.wait_for(lambda: c.is_ready(f"order{victim}") and
                        bazaar.replica_state(c, victim)["last"] >= target,
                        timeout=300, what="the follower caught up", interval=0.02)
        took = time.monotonic() - t1
        print(f"{args.mode} via {args.via}: order{victim} caught up {target - start_last} orders "
              f"in {took:.2f} s (restart to ready and complete)")
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
