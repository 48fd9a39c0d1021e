#!/usr/bin/env python3
"""Integration tests of primary-backup replication and its fault tolerance (SPEC §3).

Every test starts its own cluster (catalog, 3 order replicas, front-end) on free loopback ports,
drives it with seeded client traffic (bazaar.Trader: several threads, a unique Idempotency-Key per
order, retries of the same key after 503 / timeout / connection error) while replicas are
SIGKILLed and restarted, and then, with every replica up and idle, checks the SPEC §3 invariants
(bazaar.check_invariants): identical logs, dense numbers, every acknowledged order present and
readable, no duplicate request id, initial + sells - buys == catalog quantity.

    BAZAAR_BIN_DIR=build/bin python3 tests/integration/test_replication.py [-v] [Class.test]

BAZAAR_SEED=N reproduces the random choices of a run (the seed is printed as seed=N);
BAZAAR_TEST_TIMEOUT_MULT stretches every wait; BAZAAR_KEEP_TMP keeps the temp dirs.
"""

import os
import random
import shutil
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import bazaar  # noqa: E402
from bazaar import (Cluster, Trader, check_invariants, replica_state,  # noqa: E402
                    wait_for, wait_replicas_idle)

SEED = None  # set once per run in setUpModule


def setUpModule():
    global SEED
    if SEED is None:
        SEED = bazaar.test_seed()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class ReplicationTestCase(unittest.TestCase):
    """One fresh 3-replica cluster per test; processes stopped and temp dir removed afterwards
    (kept, with log tails printed, when the test fails)."""

    replicas = 3

    def setUp(self):
        super().setUp()
        self.rng = random.Random(f"{SEED}/{self.id()}")
        self.tmpdir = tempfile.mkdtemp(prefix=f"bazaar-{self._testMethodName}-")
        self.cluster = Cluster(self.tmpdir, replicas=self.replicas)
        self.traders = []
        self.addCleanup(self._cleanup)

    def start(self, skip=()):
        self.cluster.start(skip=skip)
        return self.cluster

    def trader(self, threads=4, **kwargs):
        t = Trader(self.cluster.frontend_url(), self.cluster.initial_stocks,
                   seed=self.rng.randrange(1 << 30), threads=threads, **kwargs)
        self.traders.append(t)
        return t.start()

    def _cleanup(self):
        for t in self.traders:
            if t.running():
                try:
                    t.stop(timeout=5)
                except AssertionError:
                    pass
        self.cluster.stop()
        if self._failed() or os.environ.get("BAZAAR_KEEP_TMP"):
            log(f"kept {self.tmpdir}")
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _failed(self):
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is None:
            return False
        return any(test is self for test, _ in result.failures + result.errors)

    def run(self, result=None):
        result = result if result is not None else self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            log(f"\n=== log tails after {self.id()} (seed={SEED}) ===")
            self.cluster.print_log_tails(60)
        return out

    def tearDown(self):
        dead = {name: proc.crashed() for name, proc in self.cluster.processes.items()
                if proc.crashed() is not None}
        self.assertFalse(dead, f"processes exited by themselves during {self.id()}: {dead}")
        # SIGTERM everything: a clean exit is 0 (a sanitizer report at exit would not be).
        codes = {name: code for name, code in self.cluster.stop().items() if code not in (0, None)}
        self.assertFalse(codes, f"processes did not exit 0 on SIGTERM: {codes}")
        super().tearDown()

    # -- helpers ---------------------------------------------------------------

    def leader(self):
        """The front-end's current leader id (waits until it names one)."""
        return wait_for(self.cluster.leader, 20, "the front-end to name a leader")

    def wait_new_leader(self, old):
        """Wait until the front-end names a leader other than `old`; return it."""
        def changed():
            leader = self.cluster.leader()
            return leader if leader not in (None, old) else None
        return wait_for(changed, 30, f"a leader other than {old}")

    def kill(self, rid):
        code = self.cluster.kill_process(f"order{rid}")
        log(f"  SIGKILL order{rid} (exit {code}) at {time.monotonic():.3f}")

    def restart(self, rid, wait=True):
        self.cluster.start_process(f"order{rid}", wait=wait)
        log(f"  order{rid} restarted{' and ready' if wait else ''}")

    def stop_traffic(self, trader, label):
        trader.stop()
        s = trader.summary()
        log(f"  {label}: {s}")
        self.assertEqual(trader.errors, [], f"client-visible errors (seed={SEED})")
        self.assertEqual(trader.unknown, [], f"orders with unknown outcome (seed={SEED})")
        self.assertGreater(s["acked"], 0)
        return s

    def check(self, traders, replica_ids=None):
        """Wait until the replicas (default: all) are idle and check the invariants over the
        orders of all the given traders."""
        acked, rejected, unknown = [], [], []
        for t in traders:
            acked += t.acked
            rejected += t.rejected
            unknown += t.unknown
        idle = wait_replicas_idle(self.cluster, replica_ids, timeout=60)
        summary = check_invariants(self.cluster, acked, self.cluster.initial_stocks,
                                   replica_ids=replica_ids, rejected_keys=rejected,
                                   unknown_keys=unknown)
        log(f"  invariants hold on replicas {replica_ids or self.cluster.replica_ids()}: "
            f"{summary['orders']} orders, {summary['acked']} acknowledged, leader {idle['leader']} "
            f"epoch {idle['epoch']}")
        return idle

    def metric(self, prefix, name="frontend"):
        """Sum of the samples of one process's /metrics whose name starts with prefix."""
        return sum(v for k, v in self.cluster.metrics(name).items() if k.startswith(prefix))


class PropagationTest(ReplicationTestCase):

    def test_orders_reach_every_replica(self):
        self.start()
        if bazaar.replication_mode() == "primary-backup":
            self.assertEqual(self.leader(), 3, "the highest id leads a fresh cluster")
        else:
            self.assertIn(self.leader(), (1, 2, 3), "the replicas elect a leader")
        t = self.trader(threads=4)
        t.wait_acked(300)
        self.stop_traffic(t, "propagation")
        idle = self.check([t])
        if bazaar.replication_mode() == "primary-backup":
            self.assertEqual(idle["leader"], 3)
            # The leader encodes an append once for all the followers that need the same
            # entries (design.md, "The replication wire"): fewer encodings than messages.
            sent = self.metric("bazaar_order_appends_sent_total", "order3")
            encoded = self.metric("bazaar_order_appends_encoded_total", "order3")
            log(f"  leader: {sent:.0f} appends sent, {encoded:.0f} encoded")
            self.assertGreater(sent, 0)
            self.assertLess(encoded, sent)

    def test_highest_id_down_at_start_then_catches_up(self):
        self.start(skip=("order3",))
        if bazaar.replication_mode() == "primary-backup":
            self.assertEqual(self.leader(), 2, "with order3 never started, order2 leads")
        else:
            self.assertIn(self.leader(), (1, 2), "the two replicas up elect a leader")
        t = self.trader(threads=4)
        t.wait_acked(200)
        leader = self.cluster.leader()
        if bazaar.replication_mode() == "primary-backup":
            self.assertEqual(leader, 2)
        behind = replica_state(self.cluster, leader)["last"]
        self.restart(3)  # /health 200 only once caught up
        self.assertGreaterEqual(replica_state(self.cluster, 3)["last"], behind,
                                "order3 said ready before catching up")
        t.wait_more(100)
        self.stop_traffic(t, "order3 late")
        self.check([t])


class ReplicaCrashTest(ReplicationTestCase):

    def _kill_during_traffic(self, which):
        self.start()
        t = self.trader(threads=4)
        t.wait_acked(200)
        leader = self.leader()
        victim = leader if which == "leader" else self.rng.choice(
            [r for r in self.cluster.replica_ids() if r != leader])
        changes_before = self.metric("bazaar_frontend_leader_changes_total")
        self.kill(victim)
        t.wait_more(300)
        survivors = [r for r in self.cluster.replica_ids() if r != victim]
        if which == "leader":
            new = self.wait_new_leader(victim)
            self.assertIn(new, survivors)
            self.assertGreater(self.metric("bazaar_frontend_leader_changes_total"), changes_before)
        else:
            self.assertEqual(self.cluster.leader(), leader, "a follower crash must not move the leader")
        s = self.stop_traffic(t, f"{which} order{victim} killed")
        log(f"  worst POST latency with the {which} killed: {s['worst_post_s']:.3f}s "
            f"(failover histogram count "
            f"{self.metric('bazaar_frontend_failover_seconds_count'):.0f}, "
            f"sum {self.metric('bazaar_frontend_failover_seconds_sum'):.3f}s)")
        self.check([t], replica_ids=survivors)
        self.restart(victim)
        self.check([t])
        return s

    def test_leader_killed_during_trades(self):
        self._kill_during_traffic("leader")

    def test_follower_killed_during_trades(self):
        self._kill_during_traffic("follower")

    def _kill_and_rejoin(self, which):
        self.start()
        t = self.trader(threads=4)
        t.wait_acked(150)
        leader = self.leader()
        victim = leader if which == "leader" else self.rng.choice(
            [r for r in self.cluster.replica_ids() if r != leader])
        self.kill(victim)
        t.wait_more(200)
        self.restart(victim)  # while the traffic goes on
        after = replica_state(self.cluster, victim)
        log(f"  order{victim} ready: role {after['role']} last {after['last']} epoch {after['epoch']}")
        t.wait_more(200)
        self.stop_traffic(t, f"{which} order{victim} killed and rejoined")
        self.check([t])

    def test_leader_killed_and_rejoins(self):
        self._kill_and_rejoin("leader")

    def test_follower_killed_and_rejoins(self):
        self._kill_and_rejoin("follower")

    def test_two_leader_kills_with_restarts(self):
        self.start()
        t = self.trader(threads=4)
        t.wait_acked(150)
        first = self.leader()
        self.kill(first)
        self.wait_new_leader(first)
        t.wait_more(150)
        self.restart(first)
        t.wait_more(150)
        # Kill whoever leads now; the other survivor or the restarted replica must take over.
        second = self.leader()
        self.kill(second)
        third = self.wait_new_leader(second)
        t.wait_more(150)
        self.restart(second)
        t.wait_more(150)
        log(f"  leaders: {first} -> {second} -> {third}")
        self.stop_traffic(t, "two leader kills")
        self.check([t])


class CatchUpTest(ReplicationTestCase):

    ORDERS = 5000

    def test_follower_catch_up_after_5000_orders(self):
        self.start()
        leader = self.leader()
        follower = min(r for r in self.cluster.replica_ids() if r != leader)
        self.kill(follower)
        t0 = time.monotonic()
        t = self.trader(threads=8, max_orders=self.ORDERS)
        t.join(timeout=600)
        push = time.monotonic() - t0
        s = self.stop_traffic(t, f"{self.ORDERS} orders with order{follower} down")
        log(f"  pushed {s['acked']} acknowledged + {s['rejected']} rejected orders in {push:.1f}s "
            f"({s['posts'] / push:.0f}/s)")
        target = replica_state(self.cluster, leader)["last"]
        t1 = time.monotonic()
        self.restart(follower, wait=False)

        def caught_up():
            if not self.cluster.is_ready(f"order{follower}"):
                return None
            mine = replica_state(self.cluster, follower)["last"]
            return mine == replica_state(self.cluster, leader)["last"] and mine >= target

        wait_for(caught_up, 60, f"order{follower} ready and at the leader's last", interval=0.01)
        elapsed = time.monotonic() - t1
        log(f"  catch-up of order{follower}: {target + 1} orders in log, "
            f"ready and equal after {elapsed:.3f}s (process start included)")
        self.check([t])


if __name__ == "__main__":
    setUpModule()
    unittest.main(verbosity=2)
