#!/usr/bin/env python3
"""Client-visible pause after a leader SIGKILL, in either replication mode.

One client trades in a loop through the front-end (keyed, retried with the same key on a 503 or
a timeout, as a careful client does). The leader is SIGKILLed N times, restarted each time once
a new leader serves; the pause of a kill is the time from the kill to the next acknowledged
trade. Prints p50 and max over the kills, and checks the replicas' logs are identical at the end.

    python3 bench/failover_pause.py --mode raft --kills 10
"""

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))

import bazaar  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default="primary-backup", choices=["primary-backup", "raft"])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--bin-dir", default=os.path.join(bazaar.REPO_ROOT, "build", "bin"))
    args = ap.parse_args()
    os.environ["BAZAAR_BIN_DIR"] = os.path.abspath(args.bin_dir)
    root = tempfile.mkdtemp(prefix="bazaar-failover-")
    c = bazaar.Cluster(root, replicas=3, mode=args.mode, log_level="warn")
    c.start()
    acks = []  # monotonic times of acknowledgements
    stop = threading.Event()

    def client():
        i = 0
        while not stop.is_set():
            i += 1
            body = {"name": "GameStart", "type": "buy" if i % 2 else "sell", "quantity": 1}
            while not stop.is_set():
                try:
                    r = c.post_json("/orders", body, headers={"Idempotency-Key": f"f-{i}"},
                                    timeout=10)
                    if r.status == 200:
                        acks.append(time.monotonic())
                        break
                except OSError:
                    pass
                time.sleep(0.005)

    t = threading.Thread(target=client)
    t.start()
    pauses = []
    try:
        for k in range(args.kills):
            time.sleep(1.0)
            leader = bazaar.wait_for(lambda: bazaar.find_leader(c), timeout=30, what="a leader")
            killed = time.monotonic()
            c.kill_process(f"order{leader}")
            bazaar.wait_for(lambda: acks and acks[-1] > killed, timeout=30,
                            what="an order after the kill")
            pause = next(a for a in acks if a > killed) - killed
            pauses.append(pause)
            print(f"kill {k + 1}: leader order{leader}, pause {pause * 1000:.0f} ms",
                  file=sys.stderr)
            c.restart_process(f"order{leader}")
    finally:
        stop.set()
        t.join()
    idle = bazaar.wait_replicas_idle(c, timeout=60)
    rows = [bazaar.order_view(bazaar.db_orders(c, rid)) for rid in c.replica_ids()]
    c.stop()
    shutil.rmtree(root, ignore_errors=True)
    pauses.sort()
    print(f"{args.mode}: {len(pauses)} leader kills, pause p50 {pauses[len(pauses) // 2] * 1000:.0f}"
          f" ms, max {pauses[-1] * 1000:.0f} ms; {idle['last'] + 1} orders, replicas identical: "
          f"{all(r == rows[0] for r in rows)}")


if __name__ == "__main__":
    main()
