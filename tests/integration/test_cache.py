#!/usr/bin/env python3
"""Integration tests of the front-end cache (SPEC §3 Caching, Restocking).

LRU replacement and its counters, read-your-writes with the cache on and off,
the catalog's invalidation push (after trades and after restocks), the
internal /invalidate endpoint, and a seeded concurrent stress run after which
no cache entry may be stale. Each TestCase class starts its own cluster of
real binaries on free loopback ports (see tests/lib/bazaar.py).

    BAZAAR_BIN_DIR=build/bin python3 tests/integration/test_cache.py [-v] [Class.test]

Set BAZAAR_SEED to replay the stress test's random choices.
"""

import email.utils
import http.server
import json
import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import bazaar  # noqa: E402
from bazaar import SECRET_HEADER, TEST_STOCKS_CSV, db_quantities, wait_for, wait_stable  # noqa: E402

FE = "bazaar_frontend_cache_"
SENT = "bazaar_catalog_invalidations_sent_total"
FAILED = "bazaar_catalog_invalidations_dropped_total"  # given up: the front-end sees a gap

# Ten stocks that all start at 100 (TEST_STOCKS_CSV has one at 0, which a restock would refill).
TEN_STOCKS_CSV = "name,price,quantity\n" + "".join(
    f"{name},{price},100\n" for name, price in [
        ("GameStart", 15.99), ("FishCo", 22.5), ("BoarCo", 7.25), ("MenhirCo", 40),
        ("RiverRun", 3.1), ("StoneAge", 9.99), ("TinCan", 0.5), ("Dot.Dash-Under_1", 1.5),
        ("Acorn", 2.25), ("Zed", 5)])


class CacheTestCase(bazaar.ClusterTestCase):
    """Shared helpers: lookups, trades and cache introspection through the front-end."""

    stocks_csv = TEN_STOCKS_CSV

    def trade_ok(self, name, kind, quantity):
        reply = self.cluster.post_json("/orders", {"name": name, "type": kind, "quantity": quantity})
        self.assertJsonReply(reply, 200)
        return reply.json["data"]["transaction_number"]

    def catalog_trade_ok(self, name, kind, quantity, request_id):
        """A trade straight at the catalog (as the order leader would send it): the front-end
        does not see it, so only the catalog's invalidation push can tell it."""
        reply = self.cluster.internal_post_json(
            self.cluster.catalog_url("/trade"),
            {"name": name, "type": kind, "quantity": quantity, "request_id": request_id})
        self.assertJsonReply(reply, 200)
        return reply.json["data"]

    def cache_status(self):
        return self.cluster.status()["cache"]

    def cached_names(self):
        """Names in the cache, most recently used first."""
        return [e["name"] for e in self.cache_status()["entries"]]

    def counters(self):
        """(hits, misses, evictions) from /status."""
        cache = self.cache_status()
        return cache["hits"], cache["misses"], cache["evictions"]

    def fe_metric(self, short):
        return self.cluster.metric(FE + short)

    def lookups_in_threads(self, names, results, timeout=20):
        """Starts a thread per name, each looking it up through the front-end on a connection
        of its own: results[i] becomes (status, JSON body, seconds taken), or the OSError it
        raised. Returns the started threads."""
        def one(i):
            t0 = time.monotonic()
            try:
                reply = bazaar.get(self.cluster.frontend_url(f"/stocks/{names[i]}"),
                                   timeout=timeout)
                results[i] = (reply.status, reply.json, time.monotonic() - t0)
            except OSError as exc:
                results[i] = exc
            finally:
                bazaar.close_connections()
        threads = [threading.Thread(target=one, args=(i,), daemon=True)
                   for i in range(len(names))]
        for t in threads:
            t.start()
        return threads

    def pause_catalog(self):
        """SIGSTOP the catalog and wait until the kernel shows every thread of it stopped: a
        group stop begins when one thread takes the signal, so on a loaded machine another
        thread may still read and answer the next request meanwhile."""
        self.cluster.pause_process("catalog")
        pid = self.cluster.processes["catalog"].pid
        def stopped():
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                        return False
            return True
        wait_for(stopped, 10, "catalog stopped")

    def quiesce(self, timeout=20.0):
        """Wait until the catalog has stopped pushing invalidations; none may have failed."""
        wait_stable(lambda: (self.cluster.metric_sum(SENT, "catalog"),
                             self.cluster.metric_sum(FAILED, "catalog")),
                    still=0.5, timeout=timeout, what="catalog invalidation counters")
        self.assertEqual(self.cluster.metric_sum(FAILED, "catalog"), 0,
                         "the catalog gave up on invalidations")


class TestLru(CacheTestCase):
    """cache_size 8 over 10 stocks: exact LRU order and exact counters."""

    overrides = {"frontend": {"cache": "on", "cache_size": 8}}

    def assertCounters(self, hits, misses, evictions):
        self.assertEqual(self.counters(), (hits, misses, evictions), "(hits, misses, evictions)")
        self.assertEqual(self.fe_metric("hits_total"), hits)
        self.assertEqual(self.fe_metric("misses_total"), misses)
        self.assertEqual(self.fe_metric("evictions_total"), evictions)

    def test_lru_order_eviction_and_counters(self):
        names = sorted(self.cluster.initial_stocks)
        self.assertEqual(len(names), 10)
        status = self.cache_status()
        self.assertIs(status["enabled"], True)
        self.assertEqual(status["capacity"], 8)
        self.assertEqual(self.cached_names(), [], "the cache must start empty")
        self.assertCounters(0, 0, 0)

        # Nine distinct stocks: nine misses, the first one is evicted.
        for name in names[:9]:
            price, qty = self.cluster.initial_stocks[name]
            data = self.lookup(name)
            self.assertEqual(data, {"name": name, "price": price, "quantity": qty})
        self.assertEqual(self.cached_names(), list(reversed(names[1:9])))
        self.assertNotIn(names[0], self.cached_names())
        self.assertCounters(0, 9, 1)
        self.assertEqual(self.fe_metric("entries"), 8)

        # A cached one is a hit and moves to the front; nothing is evicted.
        self.lookup(names[1])
        self.assertEqual(self.cached_names(), [names[1]] + list(reversed(names[2:9])))
        self.assertCounters(1, 9, 1)

        # The evicted one is a miss and evicts the least recently used, now names[2].
        self.lookup(names[0])
        self.assertEqual(self.cached_names(), [names[0], names[1]] + list(reversed(names[3:9])))
        self.assertCounters(1, 10, 2)

        # Hits in a new order rearrange recency exactly.
        for name in (names[5], names[3], names[8]):
            self.lookup(name)
        self.assertEqual(self.cached_names(),
                         [names[8], names[3], names[5], names[0], names[1], names[7], names[6],
                          names[4]])
        self.assertCounters(4, 10, 2)

        # Two new misses evict the two least recently used: names[4], then names[6].
        self.lookup(names[9])
        self.lookup(names[2])
        self.assertEqual(self.cached_names(),
                         [names[2], names[9], names[8], names[3], names[5], names[0], names[1],
                          names[7]])
        self.assertCounters(4, 12, 4)
        self.lookup(names[4])
        self.assertCounters(4, 13, 5)
        self.assertNotIn(names[7], self.cached_names())

        # Unknown and invalid names do not enter the cache.
        self.assertError(self.cluster.get("/stocks/NoSuchStock"), 404)
        self.assertEqual(len(self.cached_names()), 8)
        self.assertNotIn("NoSuchStock", self.cached_names())
        self.assertEqual(self.cache_status()["evictions"], 5)

        # Entries carry a catalog version and an age.
        for entry in self.cache_status()["entries"]:
            self.assertIsInstance(entry["version"], int)
            self.assertGreaterEqual(entry["age_ms"], 0)


class TestReadYourWrites(CacheTestCase):
    """A trade acknowledged through the front-end shows in the next lookup (cache on)."""

    overrides = {"frontend": {"cache": "on", "cache_size": 4}}
    cache_enabled = True

    def test_cache_state_matches_config(self):
        self.assertIs(self.cache_status()["enabled"], self.cache_enabled)

    def test_trade_then_lookup(self):
        expected = {name: qty for name, (_, qty) in self.cluster.initial_stocks.items()}
        rng = random.Random(bazaar.test_seed())
        names = sorted(expected)[:6]  # more than cache_size, so some are evicted on the way
        for _ in range(40):
            name = rng.choice(names)
            self.assertEqual(self.quantity(name), expected[name])  # cache it (when on)
            self.assertEqual(self.quantity(name), expected[name])  # a hit (when on)
            kind = rng.choice(["buy", "sell"]) if expected[name] >= 10 else "sell"
            amount = rng.randint(1, 10)
            self.trade_ok(name, kind, amount)
            expected[name] += amount if kind == "sell" else -amount
            self.assertEqual(self.quantity(name), expected[name], f"after {kind} {amount} {name}")
        self.quiesce()
        self.assertEqual({n: q for n, q in db_quantities(self.cluster).items() if n in names},
                         {n: expected[n] for n in names})
        for name in names:
            self.assertEqual(self.quantity(name), expected[name])


class TestReadYourWritesCacheOff(TestReadYourWrites):
    """The same with `cache = off`: every lookup goes to the catalog, nothing is counted."""

    overrides = {"frontend": {"cache": "off", "cache_size": 4}}
    cache_enabled = False

    def test_nothing_cached(self):
        self.lookup("GameStart")
        self.lookup("GameStart")
        self.assertEqual(self.cached_names(), [])
        self.assertEqual(self.fe_metric("hits_total"), 0)
        self.assertEqual(self.fe_metric("entries"), 0)


class TestInvalidationPush(CacheTestCase):
    """After every trade the catalog pushes an invalidation to the front-end."""

    overrides = {"frontend": {"cache": "on", "cache_size": 8}}

    def test_push_after_trade_through_frontend(self):
        self.quiesce()
        self.lookup("GameStart")
        self.assertIn("GameStart", self.cached_names())
        received = self.fe_metric("invalidations_received_total")
        sent = self.cluster.metric_sum(SENT, "catalog")
        self.trade_ok("GameStart", "buy", 1)
        wait_for(lambda: self.fe_metric("invalidations_received_total") >= received + 1,
                 what="the front-end to receive the invalidation")
        wait_for(lambda: self.cluster.metric_sum(SENT, "catalog") >= sent + 1,
                 what="the catalog to count the invalidation as sent")
        self.assertNotIn("GameStart", self.cached_names())

    def test_push_alone_drops_the_entry(self):
        """A change the front-end did not route (a trade sent straight to the catalog): only
        the push can remove the cached entry, and the next lookup must show the change."""
        self.quiesce()
        before = self.quantity("FishCo")
        self.quantity("FishCo")  # a hit: the entry is certainly cached
        self.assertIn("FishCo", self.cached_names())
        received = self.fe_metric("invalidations_received_total")
        invalidations = self.fe_metric("invalidations_total")
        result = self.catalog_trade_ok("FishCo", "buy", 7, "test-cache-push-1")
        self.assertEqual(result["quantity"], before - 7)
        wait_for(lambda: "FishCo" not in self.cached_names(),
                 what="the pushed invalidation to drop FishCo from the cache")
        self.assertGreaterEqual(self.fe_metric("invalidations_received_total"), received + 1)
        self.assertGreaterEqual(self.fe_metric("invalidations_total"), invalidations + 1)
        self.assertEqual(self.quantity("FishCo"), before - 7)
        self.assertEqual(db_quantities(self.cluster)["FishCo"], before - 7)
        self.assertIn("FishCo", self.cached_names())
        # The entry now carries at least the version of that change.
        entry = next(e for e in self.cache_status()["entries"] if e["name"] == "FishCo")
        self.assertGreaterEqual(entry["version"], result["version"])


class TestInvalidateEndpoint(CacheTestCase):
    """POST /invalidate is internal: it needs the secret, a valid body, and a replay is harmless."""

    overrides = {"frontend": {"cache": "on", "cache_size": 8}}

    def url(self):
        return self.cluster.frontend_url("/invalidate")

    def cache_and_check(self, name):
        self.lookup(name)
        self.assertIn(name, self.cached_names())

    def test_refuses_missing_or_wrong_secret(self):
        self.quiesce()
        self.cache_and_check("BoarCo")
        received = self.fe_metric("invalidations_received_total")
        body = self.cluster.invalidation(("BoarCo", 10**6))
        cases = [
            ("no secret", {}),
            ("wrong secret", {SECRET_HEADER: "not-the-secret"}),
            ("empty secret", {SECRET_HEADER: ""}),
            ("secret with a suffix", {SECRET_HEADER: self.cluster.secret + "x"}),
            ("secret prefix", {SECRET_HEADER: self.cluster.secret[:-1]}),
        ]
        for label, headers in cases:
            with self.subTest(label):
                reply = self.cluster.post_json(self.url(), body, headers=headers)
                self.assertError(reply, (401, 403))
        self.assertIn("BoarCo", self.cached_names(), "a refused invalidation dropped the entry")
        self.assertEqual(self.fe_metric("invalidations_received_total"), received)

    def test_bad_bodies_are_400(self):
        self.quiesce()
        self.cache_and_check("MenhirCo")
        received = self.fe_metric("invalidations_received_total")
        bodies = [
            b"",
            b"not json",
            b"{",
            b"[]",
            b'"MenhirCo"',
            b"{}",
            b'{"name":"MenhirCo"}',
            b'{"version":1}',
            b'{"name":"MenhirCo","version":"1"}',
            b'{"name":"MenhirCo","version":1.5}',
            b'{"name":"MenhirCo","version":-1}',
            b'{"name":"MenhirCo","version":1e3}',
            b'{"name":"MenhirCo","version":null}',
            b'{"name":"MenhirCo","version":99999999999999999999999}',
            b'{"name":"","version":1}',
            b'{"name":"bad/name","version":1}',
            b'{"name":"' + b"L" * 65 + b'","version":1}',
            b'{"name":7,"version":1}',
            b'{"name":"MenhirCo","version":1,"extra":true}',
            b'{"name":"Menhir\\u0000Co","version":1}',
        ]
        env = self.cluster.invalidation()
        head = b'{"stream":%d,"seq":%d,"stocks":' % (env["stream"], env["seq"])
        # Each bad stock entry inside an otherwise valid message, then bad messages.
        bodies = [head + b"[" + b + b"]}" for b in bodies if b.startswith(b"{")] + [
            b"", b"not json", b"{", b"[]", b"{}",
            head + b"{}}", head + b"null}", head + b'"MenhirCo"}',
            head + b"[" + b",".join([b'{"name":"MenhirCo","version":1}'] * 65) + b"]}",
            b'{"stream":-1,"seq":0,"stocks":[]}', b'{"stream":1,"seq":-1,"stocks":[]}',
            b'{"stream":"1","seq":0,"stocks":[]}', b'{"stream":1,"seq":1.5,"stocks":[]}',
            b'{"seq":0,"stocks":[]}', b'{"stream":1,"stocks":[]}',
            b'{"stream":1,"seq":0,"stocks":[],"extra":1}',
            b'{"name":"MenhirCo","version":1}',  # the old single-stock message
        ]
        for body in bodies:
            with self.subTest(body=body[:80]):
                reply = self.cluster.post(self.url(), body, headers=self.cluster.secret_headers())
                self.assertError(reply, 400)
        self.assertIn("MenhirCo", self.cached_names(), "a bad invalidation dropped the entry")
        self.assertEqual(self.fe_metric("invalidations_received_total"), received)
        self.assertEqual(self.quantity("MenhirCo"), db_quantities(self.cluster)["MenhirCo"])

    def test_valid_invalidation_drops_entry(self):
        self.quiesce()
        self.cache_and_check("RiverRun")
        version = next(e["version"] for e in self.cache_status()["entries"]
                       if e["name"] == "RiverRun")
        reply = self.cluster.internal_post_json(self.url(),
                                                self.cluster.invalidation(("RiverRun", version)))
        self.assertJsonReply(reply, 200)
        self.assertNotIn("RiverRun", self.cached_names())
        self.assertEqual(self.quantity("RiverRun"), db_quantities(self.cluster)["RiverRun"])
        self.assertIn("RiverRun", self.cached_names(), "the same version must be cacheable again")

    def test_replayed_old_invalidation_is_harmless(self):
        name = "StoneAge"
        self.lookup(name)
        self.trade_ok(name, "buy", 2)
        self.quiesce()
        self.trade_ok(name, "sell", 5)
        self.quiesce()
        expected = db_quantities(self.cluster)[name]
        self.assertEqual(self.quantity(name), expected)
        entry = next(e for e in self.cache_status()["entries"] if e["name"] == name)
        current = entry["version"]
        self.assertGreater(current, 0)
        # Replays of older invalidations(as a delayed or duplicated push would deliver them).
        for old in (current - 1, 0, current):
            with self.subTest(version=old):
                reply = self.cluster.internal_post_json(self.url(),
                                                        self.cluster.invalidation((name, old)))
                self.assertJsonReply(reply, 200)
                self.assertEqual(self.quantity(name), expected)
                # It is cached again and the next lookup is a hit with the same bytes.
                hits = self.cache_status()["hits"]
                self.assertEqual(self.quantity(name), expected)
                self.assertEqual(self.cache_status()["hits"], hits + 1,
                                 "an old invalidation stopped the key from being cached")
                entry = next(e for e in self.cache_status()["entries"] if e["name"] == name)
                self.assertEqual(entry["version"], current)
        # A later trade still invalidates and shows.
        self.trade_ok(name, "buy", 1)
        self.assertEqual(self.quantity(name), expected - 1)
        self.quiesce()
        self.assertEqual(db_quantities(self.cluster)[name], expected - 1)
        self.assertEqual(self.quantity(name), expected - 1)

    def test_invalidation_of_uncached_or_unknown_stock(self):
        for name in ("TinCan", "NoSuchStockAtAll"):
            with self.subTest(name=name):
                reply = self.cluster.internal_post_json(self.url(),
                                                        self.cluster.invalidation((name, 1)))
                self.assertJsonReply(reply, 200)
        self.assertEqual(self.quantity("TinCan"), db_quantities(self.cluster)["TinCan"])
        self.assertError(self.cluster.get("/stocks/NoSuchStockAtAll"), 404)


class TestSingleFlight(CacheTestCase):
    """Concurrent misses for one stock share one catalog fetch (issue 14), but a miss after
    an invalidation of that stock never joins a fetch that began before it.

    The catalog is paused (SIGSTOP) so that the misses overlap; its heartbeat is slow enough
    that the pause is not a silence that would bypass the cache."""

    overrides = {"frontend": {"cache": "on", "cache_size": 8},
                 "catalog": {"heartbeat_ms": 2000}}

    def flights(self):
        return self.fe_metric("flights_total"), self.fe_metric("flight_joins_total")

    def wait_misses(self, count):
        wait_for(lambda: self.fe_metric("misses_total") >= count, 10, f"{count} misses")

    def test_concurrent_misses_share_one_fetch(self):
        wait_for(lambda: self.cluster.status()["invalidation_stream"]["trusted"], 10, "trust")
        f0, j0 = self.flights()
        misses = self.fe_metric("misses_total")
        results = [None] * 8
        self.cluster.pause_process("catalog")
        try:
            threads = self.lookups_in_threads(["GameStart"] * 8, results)
            self.wait_misses(misses + 8)
        finally:
            self.cluster.resume_process("catalog")
        bazaar.join_threads(threads, 20, "lookups")
        want = {"name": "GameStart", "price": 15.99, "quantity": 100}
        self.assertEqual([r[:2] for r in results], [(200, {"data": want})] * 8)
        f1, j1 = self.flights()
        self.assertEqual((f1 - f0, j1 - j0), (1, 7), "(fetches, joins) for 8 overlapping misses")

    def test_miss_after_invalidation_does_not_join(self):
        wait_for(lambda: self.cluster.status()["invalidation_stream"]["trusted"], 10, "trust")
        f0, j0 = self.flights()
        misses = self.fe_metric("misses_total")
        first, second = [None], [None]
        self.cluster.pause_process("catalog")
        try:
            threads = self.lookups_in_threads(["FishCo"], first)
            self.wait_misses(misses + 1)
            reply = self.cluster.internal_post_json(
                self.cluster.frontend_url("/invalidate"), self.cluster.invalidation(("FishCo", 0)))
            self.assertJsonReply(reply, 200)
            threads += self.lookups_in_threads(["FishCo"], second)
            self.wait_misses(misses + 2)
        finally:
            self.cluster.resume_process("catalog")
        bazaar.join_threads(threads, 20, "lookups")
        self.assertEqual(first[0][0], 200)
        self.assertEqual(second[0][0], 200)
        f1, j1 = self.flights()
        self.assertEqual((f1 - f0, j1 - j0), (2, 0), "the second miss must fetch anew")


class TestMissesWithoutWorker(CacheTestCase):
    """A miss's catalog call runs on the front-end's non-blocking client (http_async), not on
    a worker (issue 14): it is counted as an async start, still has its deadline, and a
    front-end stopped while such calls hang on a paused catalog exits once they time out."""

    overrides = {"frontend": {"cache": "off", "workers": 1},
                 "cluster": {"call_timeout_ms": 800}}
    ASYNC = "bazaar_frontend_http_async_started_total"

    def test_misses_take_no_worker(self):
        before = self.cluster.metric(self.ASYNC)
        # One worker only: 32 overlapping misses would queue behind it if each held it.
        results = [None] * 32
        threads = self.lookups_in_threads(["FishCo"] * 32, results)
        bazaar.join_threads(threads, 20, "lookups")
        self.assertEqual([(r[0], r[1]["data"]["quantity"]) for r in results], [(200, 100)] * 32)
        self.assertEqual(self.cluster.metric(self.ASYNC) - before, 32)
        # Bad names are still answered 400 on the event thread, before any call.
        reply = self.cluster.get(self.cluster.frontend_url("/stocks/" + "x" * 65))
        self.assertJsonReply(reply, 400)
        self.assertEqual(self.cluster.metric(self.ASYNC) - before, 32)

    def test_hung_catalog_gives_503_at_the_deadline(self):
        self.pause_catalog()
        try:
            t0 = time.monotonic()
            reply = self.cluster.get(self.cluster.frontend_url("/stocks/GameStart"))
            took = time.monotonic() - t0
        finally:
            self.cluster.resume_process("catalog")
        self.assertJsonReply(reply, 503)
        self.assertGreaterEqual(took, 0.7)
        self.assertLess(took, 5.0)
        # The connections the timed-out calls used are not reused half-read: the next lookup
        # gets a correct reply.
        reply = self.cluster.get(self.cluster.frontend_url("/stocks/GameStart"))
        self.assertJsonReply(reply, 200)
        self.assertEqual(reply.json["data"]["name"], "GameStart")

    def test_stop_waits_for_calls_in_flight(self):
        """SIGTERM while misses hang on a paused catalog: the front-end ends them at their
        deadline and exits cleanly, not with a crash on a suspended connection."""
        self.pause_catalog()
        results = [None] * 4
        try:
            threads = self.lookups_in_threads(["Zed"] * 4, results)
            time.sleep(0.2)
            code = self.cluster.stop_process("frontend", grace=10.0)
        finally:
            self.cluster.resume_process("catalog")
        bazaar.join_threads(threads, 20, "lookups")
        self.assertEqual(code, 0)
        # Each got its 503, or saw the connection close if the server stopped right after
        # resuming it; none hangs (the threads were joined) and the process did not crash.
        for r in results:
            self.assertTrue(isinstance(r, OSError) or r[0] == 503, r)
        self.cluster.start_process("frontend")


class TestLookupBatches(CacheTestCase):
    """The misses of one front-end thread that arrive while its catalog calls are in flight
    share one call (POST /lookups; issue 14), and each still gets exactly the reply a call of
    its own would have given: its own stock, a 404 for an unknown one, a fresh quantity.

    The catalog is paused (SIGSTOP) until every miss has reached the front-end, so that the
    first calls of each event thread hang and the other misses queue behind them."""

    overrides = {"frontend": {"cache": "off", "threads": 2},
                 "cluster": {"call_timeout_ms": 8000}}
    ASYNC = "bazaar_frontend_http_async_started_total"
    CALLS, NAMES = "bazaar_frontend_lookup_calls_total", "bazaar_frontend_lookup_names_total"
    CALLS_PER_THREAD = 1  # LOOKUPS_CALLS_MAX (src/frontend/lookups.h)

    def counts(self):
        return self.cluster.metric(self.CALLS), self.cluster.metric(self.NAMES)

    def test_queued_misses_share_calls_and_get_their_own_replies(self):
        names = ["GameStart", "FishCo", "Nope", "Dot.Dash-Under_1", "Zed", "GameStart"] * 4
        self.trade_ok("Zed", "buy", 3)  # a quantity that differs from the csv's
        want = {n: bazaar.get(self.cluster.catalog_url(f"/stocks/{n}")) for n in set(names)}
        calls0, names0 = self.counts()
        started = self.cluster.metric(self.ASYNC)
        results = [None] * len(names)
        self.pause_catalog()
        try:
            threads = self.lookups_in_threads(names, results, timeout=30)
            wait_for(lambda: self.cluster.metric(self.ASYNC) - started >= len(names), 10,
                     "every miss at the front-end")
        finally:
            self.cluster.resume_process("catalog")
        bazaar.join_threads(threads, 30, "lookups")
        for name, got in zip(names, results):
            single = want[name]
            body = json.loads(single.body)
            if single.status == 200:
                del body["data"]["version"]  # the catalog's, not the client's
            self.assertEqual(got[:2], (single.status, body), name)
        self.assertEqual(results[names.index("Zed")][1]["data"]["quantity"], 97)
        calls, carried = self.counts()
        self.assertEqual(carried - names0, len(names), "each miss carried exactly once")
        # At most CALLS_PER_THREAD calls per thread hang on the paused catalog; everything else
        # queued behind them and went in one call per thread when the first one ended (a call
        # may end early only if the catalog answered it before it was paused).
        self.assertLessEqual(calls - calls0, 2 * 2 * self.CALLS_PER_THREAD,
                             f"{calls - calls0} calls for {len(names)} queued misses")


    def test_refused_batches_fail_their_misses_and_are_counted(self):
        """A catalog that answers a lookup batch with an error status (here a 401, as with a
        wrong secret) or with bytes that do not decode: each miss gets a 503 (not a 404 or a
        wrong stock), the refusals are counted, and the log says so without a line per
        batch. A stand-in HTTP server takes the catalog's port for this."""
        host, port = self.cluster.address("catalog")
        self.cluster.stop_process("catalog")
        replies = iter([(401, b'{"error":{"code":401,"message":"unauthorized"}}')] * 3 +
                       [(200, b"BZM1garbage")] * 3)

        class Standin(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                status, body = next(replies)
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer((host, port), Standin)
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        refused = "bazaar_frontend_lookup_refused_total"
        before = self.cluster.metric(refused)
        try:
            for _ in range(6):
                reply = self.cluster.get(self.cluster.frontend_url("/stocks/GameStart"))
                self.assertJsonReply(reply, 503)
                self.assertEqual(reply.json["error"]["message"], "catalog unavailable")
        finally:
            server.shutdown()
            server.server_close()
            self.cluster.start_process("catalog")
        self.assertEqual(self.cluster.metric(refused) - before, 6)
        with open(self.cluster.processes["frontend"].log_path, encoding="utf-8") as f:
            lines = [l for l in f if "catalog refused a lookup batch" in l]
        self.assertEqual(len(lines), 3, lines)  # the 1st, 2nd and 4th of 6
        self.assertIn("status 401", lines[0])
        self.assertIn("answers for 1 names", lines[2])  # "garb" read as the count
        # The real catalog again: lookups are answered.
        wait_for(lambda: self.cluster.get(
            self.cluster.frontend_url("/stocks/GameStart")).status == 200, 10, "lookups again")


class TestLookupDeadlines(CacheTestCase):
    """A miss queued behind a hung catalog call fails at its own deadline (call_timeout_ms
    after it arrived), not at the end of the call it waited for plus a call of its own."""

    overrides = {"frontend": {"cache": "off", "threads": 2},
                 "cluster": {"call_timeout_ms": 2000}}

    def test_queued_misses_keep_their_deadline(self):
        results = [None] * 6
        self.pause_catalog()
        try:
            threads = self.lookups_in_threads(["GameStart"] * 6, results, timeout=30)
            bazaar.join_threads(threads, 30, "lookups")
        finally:
            self.cluster.resume_process("catalog")
        # Each thread's first miss hangs in its call; the others queue behind it. Without their
        # own deadline they would fail only after two call timeouts (4 s).
        self.assertEqual([r[0] for r in results], [503] * 6, results)
        self.assertLess(max(r[2] for r in results), 3.0, results)
        self.assertGreaterEqual(min(r[2] for r in results), 1.9, results)
        reply = self.cluster.get(self.cluster.frontend_url("/stocks/GameStart"))
        self.assertJsonReply(reply, 200)


class TestReplyReuse(CacheTestCase):
    """An event thread queues a hot reply again without rebuilding it (issue 14): replies that
    differ, on one keep-alive connection and across two threads, never get each other's bytes,
    and a changed stock never gets its old reply."""

    overrides = {"frontend": {"cache": "on", "cache_size": 8}}

    def test_alternating_replies_keep_their_bytes(self):
        names = ["GameStart", "FishCo", "Zed"]
        want = {n: bazaar.get(self.cluster.frontend_url(f"/stocks/{n}")).body for n in names}
        self.assertEqual(len(set(want.values())), 3)
        for i in range(30):
            name = names[i % 3] if i % 5 else names[0]
            reply = bazaar.get(self.cluster.frontend_url(f"/stocks/{name}"))
            self.assertEqual(reply.body, want[name], name)
            if i % 7 == 0:  # an error and a HEAD in between
                self.assertJsonReply(bazaar.get(self.cluster.frontend_url("/stocks/Nope")), 404)
                head = bazaar.request("HEAD", self.cluster.frontend_url(f"/stocks/{name}"))
                self.assertEqual((head.status, head.body), (200, b""))
        self.trade_ok("Zed", "buy", 3)
        reply = bazaar.get(self.cluster.frontend_url("/stocks/Zed"))
        self.assertEqual(reply.json["data"]["quantity"], 97)
        self.assertNotEqual(reply.body, want["Zed"])


    def test_reused_reply_carries_the_current_date(self):
        """Every reply has one Date header for the second it is sent: the server formats it
        once a second (not libmicrohttpd per reply), so a reply reused a second later must
        not keep the Date it was built with. Also on a miss, an error and a refused head."""
        url = self.cluster.frontend_url("/stocks/GameStart")

        def date_of(reply):
            dates = reply.headers.get_all("Date") or []
            self.assertEqual(len(dates), 1, reply.headers)
            return email.utils.parsedate_to_datetime(dates[0]).timestamp()

        first = date_of(bazaar.get(url))
        self.assertLessEqual(abs(first - time.time()), 2)
        time.sleep(1.2)
        again = date_of(bazaar.get(url))  # the same bytes: a reused reply
        self.assertGreaterEqual(again, first + 1)
        self.assertLessEqual(abs(again - time.time()), 2)
        date_of(bazaar.get(self.cluster.frontend_url("/stocks/Nope")))  # 404
        host, port = self.cluster.address("frontend")
        raw = bazaar.raw_request(host, port, b"\x16\x03\x01 not http\r\n\r\n")
        self.assertRegex(raw, rb"\r\nDate: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} "
                              rb"\d\d:\d\d:\d\d GMT\r\n")


class TestRestock(CacheTestCase):
    """restock_interval_s = 1: a sold-out stock comes back, and the cache learns it by push."""

    RESTOCK_TO = 50  # differs from the initial 100, so a stale entry cannot pass for a refill
    overrides = {"frontend": {"cache": "on", "cache_size": 8},
                 "catalog": {"restock_interval_s": 1, "restock_to": RESTOCK_TO}}

    def test_sold_out_stock_is_restocked_and_lookup_shows_it(self):
        name = "GameStart"
        start = self.quantity(name)
        self.assertEqual(start, 100)
        self.assertIn(name, self.cached_names())
        self.trade_ok(name, "buy", start)
        self.assertNotIn(name, self.cached_names(), "a buy left the old entry cached")
        after = self.quantity(name)  # caches 0, unless the restock has already happened
        self.assertIn(after, (0, self.RESTOCK_TO))
        if after == 0:
            self.assertIn(name, self.cached_names())
        wait_for(lambda: self.quantity(name) == self.RESTOCK_TO, timeout=10.0,
                 what=f"a lookup of {name} to show the restock to {self.RESTOCK_TO}")
        self.assertEqual(db_quantities(self.cluster)[name], self.RESTOCK_TO)
        self.assertGreaterEqual(self.cluster.metric("bazaar_catalog_restocked_total", "catalog"), 1)
        # Stocks that never hit 0 are untouched.
        self.assertEqual(db_quantities(self.cluster)["FishCo"], 100)
        self.assertEqual(self.quantity("FishCo"), 100)


class TestStress(CacheTestCase):
    """Concurrent traders and readers with a cache smaller than the catalog; then nothing is stale.

    Traders 0..3 each own two stocks nobody else trades, so every lookup after
    their own trade must show exactly the quantity they expect (read-your-writes
    under concurrent fills and evictions). All traders share the remaining two
    stocks. Readers look up every stock as fast as they can, so fills race with
    invalidations all the time.
    """

    DURATION_S = 8.0
    TRADERS = 4
    READERS = 4
    overrides = {"frontend": {"cache": "on", "cache_size": 4}}

    def test_concurrent_trades_and_lookups_leave_no_stale_entry(self):
        seed = bazaar.test_seed()
        names = sorted(self.cluster.initial_stocks)
        owned = {t: names[2 * t:2 * t + 2] for t in range(self.TRADERS)}
        shared = names[2 * self.TRADERS:]
        self.assertTrue(shared)
        initial = {n: q for n, (_, q) in self.cluster.initial_stocks.items()}
        net = {n: 0 for n in names}  # acknowledged sells minus buys
        net_lock = threading.Lock()
        errors = []
        counts = {"trades": 0, "lookups": 0, "ryw_checks": 0}
        stop_at = time.monotonic() + self.DURATION_S

        def fail(msg):
            with net_lock:
                if len(errors) < 20:
                    errors.append(msg)

        def trader(t):
            rng = random.Random(seed * 1000 + t)
            mine = {n: initial[n] for n in owned[t]}
            try:
                while time.monotonic() < stop_at and not errors:
                    exclusive = rng.random() < 0.7
                    name = rng.choice(owned[t] if exclusive else shared)
                    kind = rng.choice(["buy", "sell"])
                    amount = rng.randint(1, 10)
                    reply = self.cluster.post_json(
                        "/orders", {"name": name, "type": kind, "quantity": amount})
                    if reply.status == 409 and kind == "buy":
                        continue
                    if reply.status != 200:
                        fail(f"trader {t}: {kind} {amount} {name} -> {reply.status} "
                             f"{reply.body[:200]!r}")
                        return
                    delta = amount if kind == "sell" else -amount
                    with net_lock:
                        net[name] += delta
                        counts["trades"] += 1
                    if exclusive:
                        # Only this thread trades it: the next lookup must show exactly this.
                        mine[name] += delta
                        reply = self.cluster.get(f"/stocks/{name}")
                        got = reply.json["data"]["quantity"] if reply.status == 200 else reply.status
                        with net_lock:
                            counts["ryw_checks"] += 1
                        if got != mine[name]:
                            fail(f"trader {t}: read-your-writes broken on {name}: "
                                 f"expected {mine[name]} after {kind} {amount}, lookup gave {got}")
            except Exception as exc:  # noqa: BLE001 - reported through errors
                fail(f"trader {t}: {exc!r}")
            finally:
                bazaar.close_connections()

        def reader(r):
            rng = random.Random(seed * 1000 + 500 + r)
            try:
                while time.monotonic() < stop_at and not errors:
                    name = rng.choice(names)
                    reply = self.cluster.get(f"/stocks/{name}")
                    if reply.status != 200 or reply.json["data"]["name"] != name:
                        fail(f"reader {r}: {name} -> {reply.status} {reply.body[:200]!r}")
                        return
                    with net_lock:
                        counts["lookups"] += 1
            except Exception as exc:  # noqa: BLE001 - reported through errors
                fail(f"reader {r}: {exc!r}")
            finally:
                bazaar.close_connections()

        threads = [threading.Thread(target=trader, args=(t,), daemon=True)
                   for t in range(self.TRADERS)]
        threads += [threading.Thread(target=reader, args=(r,), daemon=True)
                    for r in range(self.READERS)]
        for th in threads:
            th.start()
        join_deadline = time.monotonic() + self.DURATION_S + bazaar.scaled(60)
        for th in threads:
            th.join(max(join_deadline - time.monotonic(), 0.1))
        self.assertFalse([th for th in threads if th.is_alive()], "load threads did not finish")
        print(f"stress: seed={seed} {counts}", file=sys.stderr)
        self.assertEqual(errors, [])
        self.assertGreater(counts["trades"], 20, "too few trades to mean anything")
        self.assertGreater(counts["lookups"], 100, "too few lookups to mean anything")

        self.quiesce(timeout=30.0)
        db = db_quantities(self.cluster)
        self.assertEqual(db, {n: initial[n] + net[n] for n in names},
                         "catalog.db != initial + acknowledged sells - buys")

        # First the entries that are cached right now: their lookups are hits and must be fresh.
        cache = self.cache_status()
        entries = [e["name"] for e in cache["entries"]]
        self.assertLessEqual(len(entries), 4)
        for name in entries:
            self.assertEqual(self.quantity(name), db[name], f"stale cache entry for {name}")
        self.assertEqual(self.cache_status()["hits"], cache["hits"] + len(entries),
                         "the checks of cached entries were not all hits")
        # Then every stock, through the front-end and straight from the catalog.
        for name in names:
            self.assertEqual(self.quantity(name), db[name], f"front-end lookup of {name}")
            reply = self.cluster.get(self.cluster.catalog_url(f"/stocks/{name}"))
            self.assertEqual(reply.status, 200)
            self.assertEqual(reply.json["data"]["quantity"], db[name], f"catalog lookup of {name}")
        # And once more, now that other names have been filled and evicted in between.
        for name in reversed(names):
            self.assertEqual(self.quantity(name), db[name], f"second lookup of {name}")
        status = self.cache_status()
        print(f"stress: cache hits={status['hits']} misses={status['misses']} "
              f"evictions={status['evictions']} invalidations={status['invalidations']} "
              f"stale_fills={status['stale_fills']}", file=sys.stderr)
        self.assertGreater(status["evictions"], 0)


if __name__ == "__main__":
    unittest.main()
