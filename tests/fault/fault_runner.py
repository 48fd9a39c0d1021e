#!/usr/bin/env python3
"""fault_runner.py - seeded random crash testing of a Stock Bazaar cluster (SPEC §3).

Starts a cluster (catalog, N order replicas, one front-end) on free loopback ports and keeps
client threads trading and querying through the front-end (bazaar.Trader: a unique
Idempotency-Key per order, the same key re-sent after 503 / timeout / connection error until a
definite answer). Every round picks a fault at random from the seed:

    kill-leader     SIGKILL the current leader (found via the front-end's /status)
    kill-follower   SIGKILL a replica that is not the leader
    kill-replica    SIGKILL any replica
    kill-catalog    SIGKILL the catalog (the front-end answers 503 meanwhile)
    kill-frontend   SIGKILL the front-end (clients see refused connections and retry)
    overlap         SIGKILL a replica, restart it, and the moment it is ready SIGKILL another
  with --allow-majority-loss also:
    kill-two        two replicas down at once (no write quorum: 503s until one is back)
    overlap-unready SIGKILL a replica, restart it, and SIGKILL another before it is ready

waits a random short time while the clients go on, restarts what it killed (waiting for
/health), and checks that acknowledged orders keep coming. In the default mode at most one
replica is down at any time, so a majority stays up. After every round it pauses the clients
(each finishes its order), waits until the replicas are idle and checks the invariants
(bazaar.find_invariant_violations): identical logs, dense numbers, every acknowledged order
present, no request id twice, the replay invariant (the log replayed by number from the initial
catalog never takes a quantity below zero and, where catalog.db records versions, numbers follow
the catalog's execution order), initial + sells - buys == catalog, no trade applied in the
catalog and missing from the log; then the clients go on. At the end it stops the faults and the
clients, and checks the same once more, with every acknowledged order also read back through
the front-end.

The decisions (actions, victims among the candidates, durations, every client's trades) follow
from --seed; process timing does not. Exit status 0 on PASS, 1 on FAIL, 2 on bad usage.

    python3 tests/fault/fault_runner.py --bin-dir build/bin --rounds 50 --seed 7
"""

import argparse
import http.client
import os
import random
import shutil
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import bazaar  # noqa: E402
from bazaar import (Cluster, ClusterError, Trader, find_invariant_violations,  # noqa: E402
                    find_leader, replica_state, wait_replicas_idle)

DEFAULT_ACTIONS = [("kill-leader", 3), ("kill-follower", 2), ("kill-replica", 1),
                   ("kill-catalog", 2), ("kill-frontend", 1), ("overlap", 2)]
MAJORITY_LOSS_ACTIONS = [("kill-two", 2), ("overlap-unready", 1)]

PROGRESS_ORDERS = 10      # acknowledged orders required after every round
PROGRESS_TIMEOUT = 60.0   # seconds (scaled) to see them


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Runner:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(f"fault/{args.seed}")
        actions = DEFAULT_ACTIONS + (MAJORITY_LOSS_ACTIONS if args.allow_majority_loss else [])
        self.action_names = [a for a, _ in actions]
        self.action_weights = [w for _, w in actions]
        self.tmpdir = tempfile.mkdtemp(prefix=f"bazaar-fault-{args.seed}-")
        # Small quantities make 409s common and the replay invariant bite: a log whose numbers
        # are not the catalog's execution order soon replays a buy below zero.
        stocks = bazaar.parse_stocks_csv(bazaar.default_stocks_csv())
        csv_text = "name,price,quantity\n" + "".join(
            f"{name},{price},{args.quantity}\n" for name, (price, _) in sorted(stocks.items()))
        self.cluster = Cluster(self.tmpdir, replicas=args.replicas, stocks_csv=csv_text)
        self.reported = set()     # invariant violations already reported by a round check
        self.trader = None
        self.failures = []        # reasons for FAIL
        self.taken = []           # (round, action, detail)
        self.per_action = {}      # action -> {"rounds", "worst_post_s", "retries"}
        self.down = set()         # names we killed and not yet restarted

    # -- process control ------------------------------------------------------

    def replica_names(self):
        return [f"order{rid}" for rid in self.cluster.replica_ids()]

    def leader_name(self):
        """The leader per the front-end's /status, or per the replicas' /state when that fails."""
        try:
            rid = self.cluster.leader()
        except (OSError, ClusterError, http.client.HTTPException):
            rid = None
        if rid is None or f"order{rid}" in self.down:
            rid = find_leader(self.cluster)
        return f"order{rid}" if rid is not None else None

    def kill(self, name):
        code = self.cluster.kill_process(name)
        self.down.add(name)
        log(f"    SIGKILL {name} (exit {code})")

    def restart(self, name, wait=True):
        t0 = time.monotonic()
        try:
            self.cluster.start_process(name, wait=wait)
        except ClusterError as exc:
            self.fail(f"{name} did not become ready after a restart: {exc}")
            raise
        self.down.discard(name)
        if wait:
            extra = ""
            if name.startswith("order"):
                st = replica_state(self.cluster, int(name[len("order"):]))
                extra = f", role {st['role']} last {st['last']} epoch {st['epoch']}"
            log(f"    {name} restarted, ready after {time.monotonic() - t0:.2f}s{extra}")
        else:
            log(f"    {name} restarted (not waiting for /health)")

    def wait_ready(self, name):
        self.cluster.wait_ready(name)
        log(f"    {name} ready")

    def pause(self, seconds, why):
        """Let the clients run for a while: the point of a fault runner is to wait here."""
        log(f"    {why}: {seconds:.2f}s")
        time.sleep(seconds)

    def fail(self, msg):
        self.failures.append(msg)
        log(f"FAIL: {msg}")

    def check_no_crash(self, when):
        for name, proc in self.cluster.processes.items():
            code = proc.crashed()
            if code is not None:
                self.fail(f"{name} exited by itself ({when}) with code {code}\n"
                          f"{self.cluster.log_tails(60, [name])}")
                proc._reap()  # forget it so that it can be started again
                self.restart(name)

    # -- one round --------------------------------------------------------------

    def plan(self):
        """Every random decision of a round, drawn in a fixed order so that the seed fixes them."""
        return {"action": self.rng.choices(self.action_names, self.action_weights)[0],
                "before": self.rng.uniform(0.1, 1.0),   # traffic before the fault
                "down": self.rng.uniform(0.1, 2.0),     # first victim's time down
                "down2": self.rng.uniform(0.1, 1.5),    # second victim's time down
                "gap": self.rng.uniform(0.0, 0.5),      # between the two kills (kill-two, unready)
                "pick": self.rng.random(),              # which candidate is the first victim
                "pick2": self.rng.random()}             # which candidate is the second

    @staticmethod
    def choose(candidates, u):
        candidates = sorted(candidates)
        return candidates[min(int(u * len(candidates)), len(candidates) - 1)]

    def run_round(self, number, p):
        action = p["action"]
        log(f"round {number}: {action}")
        self.pause(p["before"], "traffic before the fault")
        leader = self.leader_name()
        replicas = self.replica_names()
        detail = ""
        if action == "kill-leader":
            victim = leader or self.choose(replicas, p["pick"])
            detail = f"{victim} (leader {leader})"
            self.kill(victim)
            self.pause(p["down"], "down")
            self.restart(victim)
        elif action in ("kill-follower", "kill-replica"):
            pool = [r for r in replicas if r != leader] if action == "kill-follower" else replicas
            victim = self.choose(pool, p["pick"])
            detail = f"{victim} (leader {leader})"
            self.kill(victim)
            self.pause(p["down"], "down")
            self.restart(victim)
        elif action in ("kill-catalog", "kill-frontend"):
            victim = action[len("kill-"):]
            detail = victim
            self.kill(victim)
            self.pause(p["down"], "down")
            self.restart(victim)
        elif action == "overlap":
            first = self.choose(replicas, p["pick"])
            self.kill(first)
            self.pause(p["down"], "down")
            self.restart(first)  # ready: at most one replica down at any time
            second = self.choose([r for r in replicas if r != first], p["pick2"])
            detail = f"{first} then {second} (leader before {leader})"
            self.kill(second)
            self.pause(p["down2"], "down")
            self.restart(second)
        elif action == "kill-two":
            first = self.choose(replicas, p["pick"])
            second = self.choose([r for r in replicas if r != first], p["pick2"])
            detail = f"{first} and {second} (leader before {leader})"
            self.kill(first)
            self.pause(p["gap"], "gap")
            self.kill(second)
            self.pause(p["down"], "two down")
            self.restart(first)
            self.pause(p["down2"], "one down")
            self.restart(second)
        elif action == "overlap-unready":
            first = self.choose(replicas, p["pick"])
            second = self.choose([r for r in replicas if r != first], p["pick2"])
            detail = f"{first} then {second} while {first} starts (leader before {leader})"
            self.kill(first)
            self.pause(p["down"], "down")
            self.restart(first, wait=False)
            self.pause(p["gap"], "gap")
            self.kill(second)
            self.pause(p["down2"], "down")
            self.wait_ready(first)
            self.restart(second)
        else:
            raise AssertionError(action)
        self.taken.append((number, action, detail))
        # The cluster must be serving again.
        try:
            self.trader.wait_more(PROGRESS_ORDERS, timeout=PROGRESS_TIMEOUT, stop_on_error=False)
        except AssertionError as exc:
            self.fail(f"round {number} ({action} {detail}): no progress afterwards: {exc}")
            raise
        self.round_check(number, f"{action} {detail}")

    def round_check(self, number, what):
        """Quiesce the clients and check the invariants (replay included) on the quiet cluster."""
        t0 = time.monotonic()
        self.trader.hold()
        try:
            idle = wait_replicas_idle(self.cluster, timeout=60)
            t = self.trader
            with t.lock:
                acked, rejected, unknown = list(t.acked), list(t.rejected), list(t.unknown)
            violations = find_invariant_violations(self.cluster, acked, self.cluster.initial_stocks,
                                                   rejected_keys=rejected, unknown_keys=unknown,
                                                   query=False)
        finally:
            self.trader.release()
        fresh = [v for v in violations if v not in self.reported]
        self.reported.update(violations)
        for v in fresh:
            self.fail(f"round {number} ({what}): invariant: {v}")
        log(f"    round {number} check: last {idle['last']}, {len(fresh)} new violations,"
            f" quiet after {time.monotonic() - t0:.2f}s")

    # -- the whole run ------------------------------------------------------------

    def run(self):
        a = self.args
        log(f"fault runner: seed={a.seed} rounds={a.rounds} clients={a.clients} replicas={a.replicas}"
            f" allow_majority_loss={a.allow_majority_loss} dir={self.tmpdir}")
        self.cluster.start()
        self.trader = Trader(self.cluster.frontend_url(), self.cluster.initial_stocks, seed=a.seed,
                             threads=a.clients, query_p=0.3)
        self.trader.start()
        self.trader.wait_acked(PROGRESS_ORDERS, timeout=PROGRESS_TIMEOUT)
        started = time.monotonic()
        for number in range(1, a.rounds + 1):
            self.check_no_crash(f"before round {number}")
            p = self.plan()
            retries_before = sum(self.trader.retries.values())
            acked_before = self.trader.acked_count()
            t0 = time.monotonic()
            self.run_round(number, p)
            t1 = time.monotonic()
            with self.trader.lock:
                window = [o.latency for o in self.trader.acked[acked_before:] if o.at >= t0]
                retries = sum(self.trader.retries.values()) - retries_before
            stats = self.per_action.setdefault(p["action"], {"rounds": 0, "worst_post_s": 0.0,
                                                             "retries": 0})
            stats["rounds"] += 1
            stats["retries"] += retries
            stats["worst_post_s"] = max(stats["worst_post_s"], max(window, default=0.0))
            log(f"    round {number} done in {t1 - t0:.1f}s: {len(window)} orders acked, "
                f"{retries} client re-sends, worst POST {max(window, default=0.0):.3f}s, "
                f"client errors so far {len(self.trader.errors)}")
        log(f"faults stopped after {time.monotonic() - started:.1f}s; stopping the clients")
        self.trader.stop()
        self.check_no_crash("after the last round")
        self.final_check()
        self.check_clean_exit()

    def check_clean_exit(self):
        """SIGTERM everything: each process must exit 0 (a sanitizer report at exit would not)."""
        codes = self.cluster.stop()
        for name, code in codes.items():
            if code not in (0, None):
                self.fail(f"{name} exited with code {code} on SIGTERM\n"
                          f"{self.cluster.log_tails(40, [name])}")

    def final_check(self, replica_ids=None):
        idle = wait_replicas_idle(self.cluster, replica_ids, timeout=60)
        log(f"replicas {replica_ids or 'all'} idle: leader {idle['leader']} epoch {idle['epoch']}"
            f" last {idle['last']}")
        t = self.trader
        violations = find_invariant_violations(self.cluster, t.acked, self.cluster.initial_stocks,
                                               replica_ids=replica_ids, rejected_keys=t.rejected,
                                               unknown_keys=t.unknown)
        for v in violations:
            if v not in self.reported:
                self.fail(f"invariant: {v}")
        for e in t.errors[:20]:
            self.fail(f"client error: {e}")
        if len(t.errors) > 20:
            self.fail(f"... {len(t.errors)} client errors in all")

    def salvage(self):
        """After an abort: bring back what can be brought back and still check the invariants on
        the replicas that run, for the evidence. Failures here are reported, not raised."""
        try:
            if self.trader is not None and self.trader.running():
                self.trader.stop(timeout=PROGRESS_TIMEOUT)
            for name, proc in self.cluster.processes.items():
                if not proc.running():
                    if proc.popen is not None:
                        proc._reap()  # exited by itself: forget it so that it can start again
                    try:
                        self.restart(name)
                    except ClusterError:
                        pass  # already reported by restart()
            live = [rid for rid in self.cluster.replica_ids()
                    if self.cluster.processes[f"order{rid}"].running()]
            if self.trader is not None and live:
                self.final_check(live)
        except Exception as exc:  # noqa: BLE001
            self.fail(f"could not check the invariants after the abort: {type(exc).__name__}: {exc}")

    def report(self):
        a = self.args
        print("\n==== fault runner report ====")
        print(f"seed={a.seed} rounds={a.rounds} clients={a.clients} replicas={a.replicas} "
              f"allow_majority_loss={a.allow_majority_loss}")
        print("actions taken:")
        for number, action, detail in self.taken:
            print(f"  {number:3d} {action:15s} {detail}")
        print("per action: rounds, client re-sends, worst POST latency (s):")
        for action in sorted(self.per_action):
            s = self.per_action[action]
            print(f"  {action:15s} {s['rounds']:3d} {s['retries']:6d} {s['worst_post_s']:8.3f}")
        if self.trader is not None:
            s = self.trader.summary()
            print(f"orders: {s['posts']} sent, {s['acked']} acked, {s['rejected']} rejected (409), "
                  f"{s['queries']} queries, {s['errors']} client errors, {s['unknown']} unknown")
            print(f"client re-sends: {sum(s['retries'].values())} {s['retries']}")
            print(f"worst POST latency: {s['worst_post_s']:.3f}s (key {s['worst_post_key']})")
        print("FAIL" if self.failures else "PASS")
        for f in self.failures:
            print(f"  - {f}")

    def cleanup(self):
        if self.trader is not None and self.trader.running():
            try:
                self.trader.stop(timeout=10)
            except AssertionError as exc:
                log(str(exc))
        if self.failures:
            print("\n==== log tails ====", flush=True)
            self.cluster.print_log_tails(80)
            sys.stderr.flush()
        self.cluster.stop()
        if self.failures or self.args.keep:
            print(f"kept {self.tmpdir}")
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", help="directory with the bazaar-* executables "
                    "(default: $BAZAAR_BIN_DIR or build/bin)")
    ap.add_argument("--rounds", type=int, default=20, help="fault rounds (default 20)")
    ap.add_argument("--seed", type=int, default=None, help="seed (default: random, printed)")
    ap.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--replicas", type=int, default=3, help="order replicas (default 3)")
    ap.add_argument("--quantity", type=int, default=20,
                    help="initial quantity of every stock (default 20: 409s are common)")
    ap.add_argument("--allow-majority-loss", action="store_true",
                    help="also take two replicas down at once (503s expected, clients retry)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    args = ap.parse_args(argv)
    if args.rounds < 0 or args.clients < 1 or args.replicas < 3 or args.quantity < 0:
        ap.error("need --rounds >= 0, --clients >= 1, --replicas >= 3 and --quantity >= 0")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 2**31)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.bin_dir:
        os.environ["BAZAAR_BIN_DIR"] = os.path.abspath(args.bin_dir)
    print(f"seed={args.seed}", flush=True)
    runner = Runner(args)
    try:
        runner.run()
    except Exception as exc:  # noqa: BLE001 - report and fail, never hang
        runner.fail(f"aborted: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        runner.salvage()
    finally:
        runner.report()
        runner.cleanup()
    return 1 if runner.failures else 0


if __name__ == "__main__":
    sys.exit(main())
