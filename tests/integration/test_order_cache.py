#!/usr/bin/env python3
"""Integration tests of the front-end's order cache (issue 14).

GET /orders/{n} replies with 200 are kept in a bounded LRU (`[frontend] order_cache_size`):
a committed order never changes, so an entry needs no invalidation and stays right across
leader changes. Errors (404 for a number not yet given, 503 while no replica answers) are
never cached. Each TestCase class starts its own cluster of real binaries on free loopback
ports (see tests/lib/bazaar.py); both replication modes (BAZAAR_MODE).

    BAZAAR_BIN_DIR=build/bin python3 tests/integration/test_order_cache.py [-v] [Class.test]
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import bazaar  # noqa: E402
from bazaar import wait_for  # noqa: E402

OC = "bazaar_frontend_order_cache_"


class OrderCacheTestCase(bazaar.ClusterTestCase):
    """Helpers: place orders, query them, read the order cache's counters."""

    def order_ok(self, name="GameStart", kind="sell", quantity=1):
        reply = self.cluster.post_json("/orders", {"name": name, "type": kind, "quantity": quantity})
        self.assertJsonReply(reply, 200)
        return reply.json["data"]["transaction_number"]

    def query(self, number, timeout=None):
        return self.cluster.get(f"/orders/{number}", timeout=timeout)

    def counters(self):
        """(hits, misses, evictions, entries) from /metrics, checked against /status."""
        m = self.cluster.metrics()
        got = tuple(int(m[OC + k]) for k in ("hits_total", "misses_total", "evictions_total",
                                             "entries"))
        st = self.cluster.status()["order_cache"]
        if st["enabled"]:
            self.assertEqual((st["hits"], st["misses"], st["evictions"], st["entries"]), got)
        return got


class TestOrderCache(OrderCacheTestCase):
    """Hits, misses, LRU bound and what is never cached, on one replica."""

    overrides = {"frontend": {"order_cache_size": 4}}

    def test_hit_serves_same_bytes_and_counts(self):
        n = self.order_ok(kind="sell", quantity=3)
        h0, m0, _, _ = self.counters()
        first = self.query(n)
        self.assertJsonReply(first, 200)
        self.assertEqual(first.json["data"], {"number": n, "name": "GameStart", "type": "sell",
                                              "quantity": 3})
        second = self.query(n)
        self.assertJsonReply(second, 200)
        self.assertEqual(second.body, first.body)
        h1, m1, _, _ = self.counters()
        self.assertEqual((h1 - h0, m1 - m0), (1, 1), "one miss, then one hit")
        st = self.cluster.status()["order_cache"]
        self.assertIs(st["enabled"], True)
        self.assertEqual(st["capacity"], 4)

    def test_equal_numbers_share_an_entry(self):
        n = self.order_ok()
        self.assertJsonReply(self.query(n), 200)
        h0, _, _, _ = self.counters()
        padded = self.query(f"000{n}")
        self.assertJsonReply(padded, 200)
        self.assertEqual(padded.json["data"]["number"], n)
        self.assertEqual(self.counters()[0], h0 + 1, "a padded number is the same order")

    def test_lru_bound_and_evictions(self):
        numbers = [self.order_ok(kind="sell") for _ in range(6)]
        _, _, e0, _ = self.counters()
        for n in numbers:
            self.assertJsonReply(self.query(n), 200)
        _, _, e1, entries = self.counters()
        self.assertEqual(entries, 4)
        self.assertGreaterEqual(e1 - e0, 2)
        # The 4 most recent are cached: asking them again is all hits.
        h0, m0, _, _ = self.counters()
        for n in numbers[-4:]:
            self.assertJsonReply(self.query(n), 200)
        h1, m1, _, _ = self.counters()
        self.assertEqual((h1 - h0, m1 - m0), (4, 0))

    def test_not_found_is_not_cached(self):
        nxt = self.order_ok() + 1  # the next number the journal will give
        self.assertError(self.query(nxt), 404)
        self.assertError(self.query(nxt), 404)
        self.assertEqual(self.order_ok(kind="buy"), nxt)
        reply = self.query(nxt)
        self.assertJsonReply(reply, 200)
        self.assertEqual(reply.json["data"]["type"], "buy")

    def test_bad_numbers_400(self):
        for bad in ["-1", "abc", "1.5", "99999999999999999999999"]:
            self.assertError(self.query(bad), 400)

    def test_served_while_no_replica_answers_and_503_not_cached(self):
        cached = self.order_ok()
        other = self.order_ok()
        self.assertJsonReply(self.query(cached), 200)
        for rid in self.cluster.replica_ids():
            self.cluster.stop_process(f"order{rid}")
        try:
            hit = self.query(cached)
            self.assertJsonReply(hit, 200)
            self.assertEqual(hit.json["data"]["number"], cached)
            # The front-end looks for a leader for a while before it gives up.
            self.assertError(self.query(other, timeout=bazaar.scaled(30)), 503)
        finally:
            for rid in self.cluster.replica_ids():
                self.cluster.start_process(f"order{rid}", wait=False)
            for rid in self.cluster.replica_ids():
                self.cluster.wait_ready(f"order{rid}")
        reply = wait_for(lambda: (lambda r: r if r.status == 200 else None)(self.query(other)),
                         30, "the order to be served again")
        self.assertEqual(reply.json["data"]["number"], other)


class TestOrderCacheOff(OrderCacheTestCase):
    """order_cache_size = 0: every query goes to the leader and nothing is counted."""

    overrides = {"frontend": {"order_cache_size": 0}}

    def test_nothing_cached(self):
        n = self.order_ok()
        for _ in range(3):
            self.assertJsonReply(self.query(n), 200)
        self.assertEqual(self.counters(), (0, 0, 0, 0))
        self.assertIs(self.cluster.status()["order_cache"]["enabled"], False)


class TestOrderCacheLeaderChange(OrderCacheTestCase):
    """Three replicas: cached entries stay right when the leader dies; misses go to the new one."""

    replicas = 3

    def test_leader_change(self):
        numbers = [self.order_ok(kind="sell", quantity=q) for q in (1, 2, 3)]
        first = self.query(numbers[0])
        self.assertJsonReply(first, 200)
        old = wait_for(self.cluster.leader, 20, "a leader")
        self.cluster.kill_process(f"order{old}")
        try:
            wait_for(lambda: self.cluster.leader() not in (None, old), 30, "a new leader")
            h0, _, _, _ = self.counters()
            again = self.query(numbers[0])
            self.assertEqual(again.body, first.body)
            self.assertEqual(self.counters()[0], h0 + 1)
            reply = wait_for(
                lambda: (lambda r: r if r.status == 200 else None)(self.query(numbers[2])),
                30, "an uncached order from the new leader")
            self.assertEqual(reply.json["data"], {"number": numbers[2], "name": "GameStart",
                                                  "type": "sell", "quantity": 3})
            n = self.order_ok(kind="buy", quantity=2)
            self.assertEqual(self.query(n).json["data"]["quantity"], 2)
        finally:
            self.cluster.start_process(f"order{old}")


if __name__ == "__main__":
    unittest.main()
