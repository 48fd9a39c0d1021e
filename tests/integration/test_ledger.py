#!/usr/bin/env python3
"""Integration tests of the ledger order (docs/design.md, "Ledger order"): real processes.

  - a trade the catalog executed for a leader that then died (simulated by a trade sent straight
    to the catalog, as a leader does) reaches every replica's log and is readable, with nobody
    retrying it;
  - numbers follow the catalog's execution order and a 409 takes no number;
  - GET /orders/{n} never answers an entry that is not on a write quorum;
  - after a 409 the client's next lookup is not older than what the 409 showed;
  - concurrent orders share calls to the leader (POST /orders/batch) and each client gets the
    number of its own order;
  - an order takes no front-end worker unless its first call fails: 32 orders at once share
    calls with one worker, and an order whose leader died is retried (on the worker) to the
    new leader under the same request id.

    BAZAAR_BIN_DIR=build/bin python3 tests/integration/test_ledger.py [-v]
"""

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import bazaar  # noqa: E402
from bazaar import (Cluster, db_orders, find_leader, wait_for,  # noqa: E402
                    wait_replicas_idle)

STOCKS = "name,price,quantity\nAlpha,1.5,10\nBeta,2.5,10\n"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class LedgerTestCase(unittest.TestCase):
    overrides = None

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix=f"bazaar-{self._testMethodName}-")
        self.cluster = Cluster(self.tmpdir, replicas=3, stocks_csv=STOCKS,
                               overrides=self.overrides)
        self.cluster.start()
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        self.cluster.stop()
        if os.environ.get("BAZAAR_KEEP_TMP"):
            log(f"kept {self.tmpdir}")
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def order(self, name, kind, qty, key=None):
        headers = {"Idempotency-Key": key} if key else None
        return self.cluster.post_json("/orders", {"name": name, "type": kind, "quantity": qty},
                                      headers=headers)

    def quantity(self, name):
        reply = self.cluster.get(f"/stocks/{name}")
        self.assertEqual(reply.status, 200, reply.body)
        return reply.json["data"]["quantity"]

    def logs(self):
        return {rid: [(o["number"], o["name"], o["type"], o["quantity"], o["request_id"])
                      for o in db_orders(self.cluster, rid)]
                for rid in self.cluster.replica_ids()}


class OrphanedTradesTest(LedgerTestCase):
    def test_trade_executed_without_a_leader_reaches_every_log(self):
        c = self.cluster
        r = self.order("Alpha", "buy", 1)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["data"]["transaction_number"], 0)
        # The catalog executes a trade for a leader that dies before logging it: nobody
        # retries it, and the leader never heard of it.
        orphan = c.internal_post_json(c.catalog_url("/trade"),
                                      {"request_id": "r:orphan", "name": "Alpha",
                                       "type": "buy", "quantity": 2})
        self.assertEqual(orphan.status, 200, orphan.body)
        self.assertEqual(orphan.json["data"]["number"], 1)
        # The leader completes its log from the catalog's journal within its idle sync.
        order = wait_for(lambda: (lambda g: g.json["data"] if g.status == 200 else None)(
            c.get("/orders/1")), timeout=5, what="orphaned trade logged")
        self.assertEqual((order["name"], order["type"], order["quantity"]), ("Alpha", "buy", 2))
        wait_replicas_idle(c)
        logs = self.logs()
        self.assertEqual(len({tuple(v) for v in logs.values()}), 1, logs)
        self.assertEqual([o[0] for o in logs[1]], [0, 1])
        # And the next order follows it.
        r = self.order("Beta", "sell", 1)
        self.assertEqual(r.json["data"]["transaction_number"], 2)

    def test_leader_killed_after_catalog_call(self):
        """The leader dies with trades executed at the catalog and not yet logged: the next
        leader logs them, though no client retries (requests without a key)."""
        c = self.cluster
        leader = wait_for(lambda: find_leader(c), what="a leader")
        # Freeze the leader, execute trades at the catalog as it would have, kill it.
        c.processes[f"order{leader}"].signal(signal.SIGSTOP)
        for i in range(3):
            r = c.internal_post_json(c.catalog_url("/trade"),
                                     {"request_id": f"r:lost-{i}", "name": "Beta",
                                      "type": "buy", "quantity": 1})
            self.assertEqual(r.status, 200, r.body)
        c.kill_process(f"order{leader}")
        r = self.order("Beta", "sell", 2)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["data"]["transaction_number"], 3)
        for n in range(3):
            g = c.get(f"/orders/{n}")
            self.assertEqual(g.status, 200, g.body)
            self.assertEqual(g.json["data"]["name"], "Beta")
        c.restart_process(f"order{leader}")
        wait_replicas_idle(c)
        logs = self.logs()
        self.assertEqual(len({tuple(v) for v in logs.values()}), 1, logs)
        self.assertEqual(self.quantity("Beta"), 10 - 3 + 2)


class NumberingTest(LedgerTestCase):
    def test_refusal_takes_no_number_and_replay_is_valid(self):
        numbers = []
        for kind, qty, want in [("buy", 6, 200), ("buy", 6, 409), ("sell", 1, 200),
                                ("buy", 5, 200), ("buy", 1, 409)]:
            r = self.order("Alpha", kind, qty)
            self.assertEqual(r.status, want, r.body)
            if want == 200:
                numbers.append(r.json["data"]["transaction_number"])
        self.assertEqual(numbers, [0, 1, 2])
        wait_replicas_idle(self.cluster)
        qty = 10
        for number, name, kind, q, _ in self.logs()[1]:
            qty += q if kind == "sell" else -q
            self.assertGreaterEqual(qty, 0, f"replay below zero at #{number}")
        self.assertEqual(qty, self.quantity("Alpha"))


class OrderBatchesTest(LedgerTestCase):
    def test_concurrent_orders_share_calls_and_get_their_own_numbers(self):
        """48 clients at once, each with a quantity of its own: every reply's number is that
        client's order, and the front-end carried them in fewer calls than orders."""
        c = self.cluster
        for name in ("Alpha", "Beta"):  # room for 2 x 24 sells of 1..24 shares
            self.assertEqual(self.order(name, "buy", 10).status, 200)
        calls0 = c.metric("bazaar_frontend_order_batches_total")
        carried0 = c.metric("bazaar_frontend_order_batched_total")
        clients, rounds = 48, 3
        start = threading.Barrier(clients)
        replies, failures = {}, []

        def client(k):
            name, qty = ("Alpha", "Beta")[k % 2], k // 2 + 1
            for r in range(rounds):
                start.wait(timeout=bazaar.scaled(30))
                kind = "sell" if r % 2 == 0 else "buy"
                reply = self.order(name, kind, qty)
                if reply.status != 200:
                    failures.append((k, r, reply.status, reply.body[:200]))
                    continue
                replies[(k, r)] = (reply.json["data"]["transaction_number"], name, kind, qty)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=bazaar.scaled(120))
        self.assertEqual(failures, [])
        self.assertEqual(len(replies), clients * rounds)
        numbers = [n for n, *_ in replies.values()]
        self.assertEqual(len(set(numbers)), len(numbers), "a number answered twice")
        wait_replicas_idle(c)
        log_of = {o["number"]: (o["name"], o["type"], o["quantity"]) for o in db_orders(c, 1)}
        for (k, r), (number, name, kind, qty) in replies.items():
            self.assertEqual(log_of.get(number), (name, kind, qty), f"client {k} round {r}")
        carried = c.metric("bazaar_frontend_order_batched_total") - carried0
        calls = c.metric("bazaar_frontend_order_batches_total") - calls0
        log(f"{clients * rounds} orders in {calls:.0f} calls")
        self.assertEqual(carried, clients * rounds)  # no call failed, so none carried twice
        self.assertLess(calls, carried)


class OrdersWithoutWorkerTest(LedgerTestCase):
    """The front-end sends an order from its event thread on its non-blocking client
    (http_async), batched, and writes the reply from that client's loop; a worker runs only
    the retry loop after a failed first call (docs/design.md, "Order batches")."""

    overrides = {"frontend": {"workers": 1}}
    ASYNC = "bazaar_frontend_http_async_started_total"

    def test_orders_share_calls_with_one_worker(self):
        c = self.cluster
        self.assertEqual(self.order("Alpha", "sell", 1).status, 200)  # a leader is known
        async0, calls0 = c.metric(self.ASYNC), c.metric("bazaar_frontend_order_batches_total")
        clients = 32
        start = threading.Barrier(clients)
        replies = [None] * clients

        def client(k):
            try:
                start.wait(timeout=bazaar.scaled(30))
                reply = self.order("Alpha", "sell", 2)
                replies[k] = (reply.status, reply.json["data"]["transaction_number"]
                              if reply.status == 200 else reply.body[:200])
            finally:
                bazaar.close_connections()

        threads = [threading.Thread(target=client, args=(k,), daemon=True)
                   for k in range(clients)]
        for t in threads:
            t.start()
        bazaar.join_threads(threads, bazaar.scaled(60), "orders")
        self.assertEqual([s for s, _ in replies], [200] * clients, replies)
        self.assertEqual(len({n for _, n in replies}), clients, "a number answered twice")
        # Each order went the non-blocking way; with one worker, holding it per order would
        # have sent them one call each.
        self.assertEqual(c.metric(self.ASYNC) - async0, clients)
        calls = c.metric("bazaar_frontend_order_batches_total") - calls0
        log(f"{clients} orders in {calls:.0f} calls with one worker")
        self.assertLess(calls, clients)
        self.assertEqual(self.quantity("Alpha"), 10 + 1 + 2 * clients)
        # A bad order is still answered 400 on the event thread, without any call.
        r = c.post_json("/orders", {"name": "Alpha", "type": "hold", "quantity": 1})
        self.assertEqual(r.status, 400, r.body)
        self.assertEqual(c.metric("bazaar_frontend_order_batches_total") - calls0, calls)

    def test_request_ids_ascend_with_time(self):
        """Ids the front-end makes start with wall-clock milliseconds (docs/design.md,
        "Request ids"), so the request-id indexes grow at their right edge."""
        c = self.cluster
        for _ in range(5):
            self.assertEqual(self.order("Beta", "buy", 1).status, 200)
        wait_replicas_idle(c)
        ids = [o["request_id"] for o in sorted(db_orders(c, 1), key=lambda o: o["number"])]
        self.assertEqual(len(ids), 5)
        for rid in ids:
            self.assertRegex(rid, r"^r:[0-9a-f]{28}$")
        prefixes = [int(rid[2:14], 16) for rid in ids]
        self.assertEqual(prefixes, sorted(prefixes))
        self.assertLess(abs(prefixes[-1] / 1000 - time.time()), 60)

    def test_failed_first_call_is_retried_on_the_new_leader(self):
        c = self.cluster
        self.assertEqual(self.order("Alpha", "buy", 1).status, 200)
        leader = wait_for(lambda: find_leader(c), what="a leader")
        retries0 = c.metric("bazaar_frontend_order_retries_total")
        c.kill_process(f"order{leader}")
        # The front-end still names the dead replica: the first call fails, the worker
        # re-selects and sends the same order (same request id) to the new leader.
        r = self.order("Alpha", "buy", 2, key="after-kill")
        self.assertEqual(r.status, 200, r.body)
        self.assertGreater(c.metric("bazaar_frontend_order_retries_total"), retries0)
        again = self.order("Alpha", "buy", 2, key="after-kill")
        self.assertEqual(again.json["data"]["transaction_number"],
                         r.json["data"]["transaction_number"])
        self.assertEqual(self.quantity("Alpha"), 10 - 1 - 2)


class OrdersAtShutdownTest(LedgerTestCase):
    """SIGTERM while orders hang on a paused leader: their calls end at their deadline, the
    retry that would follow cannot take a worker any more (the pool has stopped), so each order
    is answered 503 from the call's end and the front-end exits 0 within its grace period."""

    overrides = {"cluster": {"call_timeout_ms": 800}}

    def test_stop_answers_orders_in_flight(self):
        c = self.cluster
        self.assertEqual(self.order("Alpha", "buy", 1).status, 200)
        leader = wait_for(lambda: find_leader(c), what="a leader")
        c.pause_process(f"order{leader}")
        results = [None] * 4

        def one(i):
            try:
                results[i] = self.order("Alpha", "buy", 1).status
            except OSError as exc:
                results[i] = exc
            finally:
                bazaar.close_connections()

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(4)]
        try:
            for t in threads:
                t.start()
            time.sleep(0.3)
            t0 = time.monotonic()
            code = c.stop_process("frontend", grace=10.0)
            took = time.monotonic() - t0
        finally:
            c.resume_process(f"order{leader}")
        bazaar.join_threads(threads, 20, "orders")
        self.assertEqual(code, 0)
        self.assertLess(took, bazaar.scaled(6.0))
        for r in results:
            self.assertTrue(r == 503 or isinstance(r, OSError), r)
        c.start_process("frontend")
        self.assertEqual(self.order("Alpha", "buy", 1).status, 200)


@bazaar.skip_unless_mode("primary-backup", "in raft mode the table holds only applied entries, "
                         "so an uncommitted one is never in it (raftfsm unit tests)")
class CommittedReadsTest(LedgerTestCase):
    overrides = {"cluster": {"call_timeout_ms": "500"}}

    def test_uncommitted_entry_is_not_served(self):
        c = self.cluster
        r = self.order("Alpha", "buy", 1)
        self.assertEqual(r.status, 200, r.body)
        leader = wait_for(lambda: find_leader(c), what="a leader")
        followers = [rid for rid in c.replica_ids() if rid != leader]
        for rid in followers:
            c.processes[f"order{rid}"].signal(signal.SIGSTOP)
        try:
            # The leader logs the trade but no quorum can hold it: outcome unknown.
            r = self.order("Alpha", "buy", 2, key="uncommitted-1")
            self.assertEqual(r.status, 503, r.body)
            st = bazaar.replica_state(c, leader)
            self.assertEqual(st["last"], 1)  # in the leader's log...
            # ...but never served while it is not committed.
            g = c.get("/orders/1", timeout=bazaar.scaled(15))
            self.assertNotEqual(g.status, 200, g.body)
        finally:
            for rid in followers:
                c.processes[f"order{rid}"].signal(signal.SIGCONT)
        # Once a quorum holds it, it is served, and the retry learns the same number.
        r = wait_for(lambda: (lambda x: x if x.status == 200 else None)(
            self.order("Alpha", "buy", 2, key="uncommitted-1")), timeout=15, what="retry")
        self.assertEqual(r.json["data"]["transaction_number"], 1)
        g = c.get("/orders/1")
        self.assertEqual(g.status, 200, g.body)
        self.assertEqual(g.json["data"]["quantity"], 2)


class LookupAfterRefusalTest(LedgerTestCase):
    # Invalidations go nowhere: the front-end's entry stays stale unless it drops it itself.
    overrides = {"catalog": {"notify": f"127.0.0.1:{bazaar.free_port()}"}}

    def test_lookup_after_409_is_not_older(self):
        c = self.cluster
        self.assertEqual(self.quantity("Alpha"), 10)  # cached now
        r = c.internal_post_json(c.catalog_url("/trade"),
                                 {"request_id": "r:other-client", "name": "Alpha",
                                  "type": "buy", "quantity": 8})
        self.assertEqual(r.status, 200, r.body)
        # No push arrives, but this front-end has never heard the catalog's invalidation
        # stream, so it does not trust its cache (issue 13): the lookup is already fresh.
        self.assertEqual(self.quantity("Alpha"), 2)
        r = self.order("Alpha", "buy", 5)
        self.assertEqual(r.status, 409, r.body)  # so Alpha < 5 ...
        self.assertLess(self.quantity("Alpha"), 5)  # ... and the next lookup agrees


if __name__ == "__main__":
    unittest.main()
