#!/usr/bin/env python3
"""Integration tests of the public REST API and the operational endpoints (SPEC §2, §5).

Each TestCase class starts its own cluster of real binaries on free loopback
ports (see tests/lib/bazaar.py). Run directly or through ctest:

    BAZAAR_BIN_DIR=build/bin python3 tests/integration/test_api.py [-v] [Class.test]
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import bazaar  # noqa: E402
from bazaar import LONG_STOCK_NAME, TEST_STOCKS_CSV, db_orders, db_quantities, order_view  # noqa: E402

MISSING = object()  # marks a field left out of an order body
BASE_ORDER = {"name": "GameStart", "type": "buy", "quantity": 3}


def order_body(**changes):
    """A JSON order body: BASE_ORDER with fields changed, or removed when set to MISSING."""
    body = dict(BASE_ORDER)
    for key, value in changes.items():
        if value is MISSING:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body).encode()


def raw_order(quantity_literal):
    """An order body whose quantity is written verbatim (for literals json.dumps cannot produce)."""
    return b'{"name":"GameStart","type":"buy","quantity":' + quantity_literal + b"}"


class ApiTestCase(bazaar.ClusterTestCase):
    """Shared helpers: lookups and trades through the front-end."""

    stocks_csv = TEST_STOCKS_CSV

    def trade(self, name, kind, quantity, key=None):
        headers = {"Idempotency-Key": key} if key is not None else None
        return self.cluster.post_json("/orders", {"name": name, "type": kind, "quantity": quantity},
                                      headers=headers)

    def trade_ok(self, name, kind, quantity, key=None):
        """Trade, expect 200 {"data":{"transaction_number":N}} and return N."""
        reply = self.trade(name, kind, quantity, key)
        self.assertJsonReply(reply, 200)
        self.assertEqual(set(reply.json), {"data"})
        self.assertEqual(set(reply.json["data"]), {"transaction_number"})
        number = reply.json["data"]["transaction_number"]
        self.assertIs(type(number), int)
        self.assertGreaterEqual(number, 0)
        return number

    def leader_orders(self):
        """Order rows (contract columns) in replica 1's database, once they stopped changing (a
        Raft node writes an order's row when it applies the entry, possibly after the ack)."""
        return bazaar.wait_stable(lambda: order_view(db_orders(self.cluster, 1)), still=0.3,
                                  what="replica 1's order rows")


class TestLookup(ApiTestCase):
    """GET /stocks/{name}."""

    def test_known_stock_exact_shape(self):
        reply = self.cluster.get("/stocks/GameStart")
        self.assertJsonReply(reply, 200)
        self.assertEqual(reply.json, {"data": {"name": "GameStart", "price": 15.99, "quantity": 100}})
        self.assertIs(type(reply.json["data"]["quantity"]), int)

    def test_every_stock_matches_csv_and_db(self):
        stocks = bazaar.db_stocks(self.cluster)
        self.assertEqual(set(stocks), set(self.cluster.initial_stocks))
        for name, (price, quantity) in self.cluster.initial_stocks.items():
            with self.subTest(name=name):
                self.assertEqual(self.lookup(name), {"name": name, "price": price, "quantity": quantity})
                self.assertEqual(stocks[name], (price, quantity))

    def test_repeated_lookup_is_stable(self):
        # The second lookup is served by the cache; it must be byte-identical.
        first = self.cluster.get("/stocks/FishCo")
        second = self.cluster.get("/stocks/FishCo")
        self.assertEqual((first.status, first.body), (second.status, second.body))

    def test_unknown_stock_404(self):
        reply = self.cluster.get("/stocks/NoSuchStock")
        self.assertError(reply, 404)

    def test_names_are_case_sensitive(self):
        for name in ("gamestart", "GAMESTART", "Gamestart", "dot.dash-under_1"):
            with self.subTest(name=name):
                self.assertError(self.cluster.get(f"/stocks/{name}"), 404)

    def test_all_allowed_characters(self):
        self.assertEqual(self.lookup("Dot.Dash-Under_1")["name"], "Dot.Dash-Under_1")

    def test_64_byte_name_allowed(self):
        self.assertEqual(self.lookup(LONG_STOCK_NAME)["name"], LONG_STOCK_NAME)
        self.assertError(self.cluster.get("/stocks/" + "M" * 64), 404)

    def test_65_byte_name_400(self):
        self.assertError(self.cluster.get("/stocks/" + "L" * 65), 400)

    def test_bad_characters_400(self):
        # Paths are sent verbatim; whether the server percent-decodes or not, these are not valid names.
        for path in ("Game%20Start", "Game$tart", "Game%24tart", "Game+Start", "Game%2FStart",
                     "Game%00Start", "G%C3%A9meStart", "Game*", "Game%22Start", "Game'Start",
                     "Game%0AStart", "Game~Start", "Game%25Start"):
            with self.subTest(path=path):
                self.assertError(self.cluster.get(f"/stocks/{path}"), 400)

    def test_empty_name(self):
        # "/stocks/" carries an empty name: 400 by the name rule; 404 accepted for an unmatched route.
        self.assertError(self.cluster.get("/stocks/"), {400, 404})


class TestTrades(ApiTestCase):
    """POST /orders and GET /orders/{number} with one order replica."""

    def test_buy_and_sell_change_quantity_exactly(self):
        start = self.quantity("FishCo")
        number = self.trade_ok("FishCo", "buy", 7)
        self.assertEqual(self.quantity("FishCo"), start - 7)
        self.assertEqual(db_quantities(self.cluster)["FishCo"], start - 7)
        number2 = self.trade_ok("FishCo", "sell", 10)
        self.assertEqual(number2, number + 1)
        self.assertEqual(self.quantity("FishCo"), start + 3)
        self.assertEqual(db_quantities(self.cluster)["FishCo"], start + 3)
        rows = self.leader_orders()
        self.assertIn((number, "FishCo", "buy", 7), rows)
        self.assertIn((number2, "FishCo", "sell", 10), rows)

    def test_other_stocks_untouched_by_a_trade(self):
        before = db_quantities(self.cluster)
        self.trade_ok("BoarCo", "buy", 1)
        after = db_quantities(self.cluster)
        before["BoarCo"] -= 1
        self.assertEqual(after, before)

    def test_buy_everything_then_409(self):
        available = self.quantity("MenhirCo")
        self.trade_ok("MenhirCo", "buy", available)
        self.assertEqual(self.quantity("MenhirCo"), 0)
        before = self.snapshot()
        self.assertError(self.trade("MenhirCo", "buy", 1), 409)
        self.assertUnchanged(before)
        self.trade_ok("MenhirCo", "sell", available)
        self.assertEqual(self.quantity("MenhirCo"), available)

    def test_buy_more_than_available_409_changes_nothing(self):
        before = self.snapshot()
        available = self.quantity("RiverRun")
        self.assertError(self.trade("RiverRun", "buy", available + 1), 409)
        self.assertError(self.trade("Zero", "buy", 1), 409)
        self.assertEqual(self.quantity("RiverRun"), available)
        self.assertUnchanged(before)

    def test_quantity_upper_bound_is_valid(self):
        start = self.quantity("StoneAge")
        self.assertError(self.trade("StoneAge", "buy", 1000000), 409)
        self.trade_ok("StoneAge", "sell", 1000000)
        self.assertEqual(self.quantity("StoneAge"), start + 1000000)
        self.trade_ok("StoneAge", "buy", 1000000)
        self.assertEqual(self.quantity("StoneAge"), start)
        self.assertEqual(db_quantities(self.cluster)["StoneAge"], start)

    def test_trade_unknown_stock_404(self):
        before = self.snapshot()
        self.assertError(self.trade("NoSuchStock", "buy", 1), 404)
        self.assertError(self.trade("NoSuchStock", "sell", 1), 404)
        self.assertError(self.trade("gamestart", "sell", 1), 404)
        self.assertUnchanged(before)

    def test_body_over_4k_413(self):
        before = self.snapshot()
        padded = {"name": "GameStart", "type": "buy", "quantity": 1, "pad": "x" * 5000}
        self.assertError(self.cluster.post_json("/orders", padded), 413)
        spaces = order_body().rstrip(b"}") + b" " * 5000 + b"}"  # valid JSON, just too long
        self.assertError(self.cluster.post("/orders", spaces), 413)
        self.assertUnchanged(before)

    BAD_BODIES = [
        ("malformed JSON", b'{"name":"GameStart","type":"buy","quantity":3'),
        ("not JSON", b"name=GameStart&type=buy&quantity=3"),
        ("empty body", b""),
        ("whitespace body", b"   "),
        ("JSON array", b"[]"),
        ("array of order", b'[{"name":"GameStart","type":"buy","quantity":3}]'),
        ("JSON null", b"null"),
        ("JSON string", b'"GameStart"'),
        ("JSON number", b"3"),
        ("trailing garbage", order_body() + b" x"),
        ("two objects", order_body() + order_body()),
        ("missing name", order_body(name=MISSING)),
        ("missing type", order_body(type=MISSING)),
        ("missing quantity", order_body(quantity=MISSING)),
        ("empty object", b"{}"),
        ("name number", order_body(name=42)),
        ("name null", order_body(name=None)),
        ("name object", order_body(name={"n": "GameStart"})),
        ("name empty", order_body(name="")),
        ("name bad chars", order_body(name="Game Start")),
        ("name 65 bytes", order_body(name="L" * 65)),
        ("type number", order_body(type=1)),
        ("type BUY", order_body(type="BUY")),
        ("type hold", order_body(type="hold")),
        ("type empty", order_body(type="")),
        ("quantity string", order_body(quantity="3")),
        ("quantity float 3.5", order_body(quantity=3.5)),
        ("quantity 3.0", raw_order(b"3.0")),
        ("quantity 3e0", raw_order(b"3e0")),
        ("quantity true", order_body(quantity=True)),
        ("quantity null", order_body(quantity=None)),
        ("quantity array", order_body(quantity=[3])),
        ("quantity zero", order_body(quantity=0)),
        ("quantity negative", order_body(quantity=-1)),
        ("quantity -0", raw_order(b"-0")),
        ("quantity 1000001", order_body(quantity=1000001)),
        ("quantity 1e30", raw_order(b"1e30")),
        ("quantity 2^63", raw_order(b"9223372036854775808")),
        ("quantity 2^64+1", raw_order(b"18446744073709551617")),
        ("quantity 99999999999999999999", raw_order(b"99999999999999999999")),
        ("unknown extra field", order_body(extra=1)),
        ("extra request_id", order_body(request_id="abc")),
    ]

    def test_bad_bodies_400_and_nothing_changes(self):
        before = self.snapshot()
        for label, body in self.BAD_BODIES:
            with self.subTest(label, body=body[:80]):
                self.assertError(self.cluster.post("/orders", body), 400)
        self.assertUnchanged(before)

    def test_get_order_matches_post(self):
        number = self.trade_ok("TinCan", "sell", 4)
        reply = self.cluster.get(f"/orders/{number}")
        self.assertJsonReply(reply, 200)
        self.assertEqual(reply.json, {"data": {"number": number, "name": "TinCan", "type": "sell", "quantity": 4}})

    def test_get_order_miss_404(self):
        self.assertError(self.cluster.get("/orders/1000000"), 404)

    def test_get_order_bad_number_400(self):
        for number in ("-1", "abc", "1.5", "01x", "99999999999999999999999", "+1", "0x1", "1e3",
                       "%201", "1%00"):
            with self.subTest(number=number):
                self.assertError(self.cluster.get(f"/orders/{number}"), 400)


class TestIdempotency(ApiTestCase):
    """The Idempotency-Key header of POST /orders."""

    def test_same_key_same_number_applied_once(self):
        start = self.quantity("GameStart")
        orders = len(self.leader_orders())
        first = self.trade_ok("GameStart", "buy", 2, key="idem-same-1")
        second = self.trade_ok("GameStart", "buy", 2, key="idem-same-1")
        self.assertEqual(first, second)
        self.assertEqual(self.quantity("GameStart"), start - 2)
        self.assertEqual(db_quantities(self.cluster)["GameStart"], start - 2)
        self.assertEqual(len(self.leader_orders()), orders + 1)

    def test_different_key_new_order(self):
        start = self.quantity("FishCo")
        first = self.trade_ok("FishCo", "sell", 1, key="idem-diff-a")
        second = self.trade_ok("FishCo", "sell", 1, key="idem-diff-b")
        self.assertNotEqual(first, second)
        self.assertEqual(self.quantity("FishCo"), start + 2)

    def test_64_byte_printable_key_allowed(self):
        key = ("K" * 32 + "!~ -_:/=+.@#" + "k" * 64)[:64]
        first = self.trade_ok("BoarCo", "sell", 1, key=key)
        self.assertEqual(self.trade_ok("BoarCo", "sell", 1, key=key), first)

    def test_invalid_keys_400(self):
        before = self.snapshot()
        for label, key in (("empty", ""), ("65 bytes", "k" * 65), ("SOH", "ab\x01cd"),
                           ("DEL", "ab\x7fcd"), ("tab", "ab\tcd"), ("ESC", "\x1b[31m")):
            with self.subTest(label):
                self.assertError(self.trade("GameStart", "buy", 1, key=key), 400)
        self.assertUnchanged(before)

    def test_same_key_different_body_422(self):
        self.trade_ok("TinCan", "buy", 1, key="idem-422")
        before = self.snapshot()
        for name, kind, quantity in (("TinCan", "buy", 2), ("TinCan", "sell", 1), ("RiverRun", "buy", 1)):
            with self.subTest(name=name, type=kind, quantity=quantity):
                self.assertError(self.trade(name, kind, quantity, key="idem-422"), 422)
        self.assertUnchanged(before)


class TestInternalAuth(ApiTestCase):
    """Internal routes refuse callers without the cluster secret (SPEC §5)."""

    WRONG = [("no secret", None), ("wrong secret", "not-the-secret"), ("empty secret", ""),
             ("secret prefix", bazaar.DEFAULT_SECRET[:-1])]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        reply = cls.cluster.post_json("/orders", {"name": "GameStart", "type": "buy", "quantity": 1})
        if reply.status != 200:  # an existing order, so a refusal cannot hide behind a 404
            raise AssertionError(f"setup order failed: {reply.status} {reply.body[:200]!r}")
        cls.first_number = reply.json["data"]["transaction_number"]
        # Every replica's table holds it before any test takes its "before" snapshot (a Raft
        # follower applies it a little after the leader answered).
        bazaar.wait_replicas_idle(cls.cluster)

    def assertRefused(self, method, url, body=None):
        for label, secret in self.WRONG:
            with self.subTest(label, url=url):
                headers = {} if secret is None else {bazaar.SECRET_HEADER: secret}
                reply = bazaar.request(method, url, body=body, headers=headers)
                self.assertError(reply, {401, 403})

    def test_catalog_trade_refused(self):
        before = self.snapshot()
        body = json.dumps({"request_id": "auth-1", "name": "GameStart", "type": "buy",
                                  "quantity": 3}).encode()
        self.assertRefused("POST", self.cluster.catalog_url("/trade"), body)
        self.assertUnchanged(before)

    def test_order_replica_post_refused(self):
        before = self.snapshot()
        body = json.dumps({"request_id": "auth-2", "name": "GameStart", "type": "buy",
                                  "quantity": 3}).encode()
        self.assertRefused("POST", self.cluster.order_url(1, "/orders"), body)
        self.assertUnchanged(before)

    def test_order_replica_get_refused(self):
        self.assertRefused("GET", self.cluster.order_url(1, f"/orders/{self.first_number}"))

    def test_frontend_invalidate_refused(self):
        body = json.dumps(self.cluster.invalidation(("GameStart", 1))).encode()
        self.assertRefused("POST", self.cluster.frontend_url("/invalidate"), body)

    def test_catalog_trade_with_secret_dedupes_by_request_id(self):
        url = self.cluster.catalog_url("/trade")
        start = db_quantities(self.cluster)["RiverRun"]
        trade = {"request_id": "auth-direct-1", "name": "RiverRun", "type": "buy", "quantity": 3}
        first = self.cluster.internal_post_json(url, trade)
        self.assertJsonReply(first, 200)
        self.assertEqual(first.json["data"]["name"], "RiverRun")
        self.assertEqual(first.json["data"]["quantity"], start - 3)
        again = self.cluster.internal_post_json(url, trade)
        self.assertJsonReply(again, 200)
        self.assertEqual(again.json["data"]["quantity"], start - 3)
        self.assertEqual(db_quantities(self.cluster)["RiverRun"], start - 3)
        undo = dict(trade, request_id="auth-direct-2", type="sell")
        self.assertJsonReply(self.cluster.internal_post_json(url, undo), 200)
        self.assertEqual(db_quantities(self.cluster)["RiverRun"], start)
        # Invalidation is pushed asynchronously, so the front-end may need a moment.
        bazaar.wait_for(lambda: self.quantity("RiverRun") == start, 5, "front-end to see RiverRun restored")

    def test_order_replica_get_with_secret(self):
        reply = self.cluster.internal_get(self.cluster.order_url(1, f"/orders/{self.first_number}"))
        self.assertJsonReply(reply, 200)
        self.assertEqual(reply.json["data"], {"number": self.first_number, "name": "GameStart",
                                              "type": "buy", "quantity": 1})

    def test_frontend_invalidate_with_secret(self):
        reply = self.cluster.internal_post_json(self.cluster.frontend_url("/invalidate"),
                                                self.cluster.invalidation(("GameStart", 1)))
        self.assertIn(reply.status, (200, 202, 204), reply.body[:200])
        self.assertEqual(self.lookup("GameStart")["name"], "GameStart")


class TestOperational(ApiTestCase):
    """/health, /metrics, /status, unknown routes and wrong methods on every service."""

    def test_health_everywhere(self):
        for name, proc in self.cluster.processes.items():
            with self.subTest(name):
                reply = bazaar.get(proc.url + "/health")
                self.assertJsonReply(reply, 200)
                self.assertEqual(reply.json.get("status"), "ok")

    def test_metrics_everywhere(self):
        self.lookup("GameStart")  # at least one request counted
        for name, proc in self.cluster.processes.items():
            with self.subTest(name):
                reply = bazaar.get(proc.url + "/metrics")
                self.assertEqual(reply.status, 200)
                self.assertTrue(reply.headers.get("Content-Type", "").startswith("text/plain"),
                                reply.headers.get("Content-Type"))
                self.assertIn(b"# TYPE", reply.body)

    def test_status_keys(self):
        status = self.cluster.status()
        for key in ("leader", "epoch", "replicas", "cache", "config"):
            self.assertIn(key, status)

    def test_unknown_route_404_everywhere(self):
        for name, proc in self.cluster.processes.items():
            for path in ("/nope", "/index.html", "/stocks/a/b", "/health/extra"):
                with self.subTest(name, path=path):
                    self.assertError(bazaar.get(proc.url + path), 404)

    def test_wrong_method_405(self):
        front = self.cluster.frontend_url
        cases = [("DELETE", front("/stocks/GameStart")), ("POST", front("/stocks/GameStart")),
                 ("PUT", front("/orders")), ("GET", front("/orders")), ("DELETE", front("/orders/0")),
                 ("POST", front("/orders/0")), ("PATCH", front("/orders")),
                 ("DELETE", self.cluster.catalog_url("/stocks/GameStart"))]
        cases += [("POST", proc.url + "/health") for proc in self.cluster.processes.values()]
        for method, url in cases:
            with self.subTest(method=method, url=url):
                body = b"{}" if method in ("POST", "PUT", "PATCH") else None
                self.assertError(bazaar.request(method, url, body=body), 405)

    def test_catalog_public_lookup_same_shape(self):
        reply = bazaar.get(self.cluster.catalog_url("/stocks/TinCan"))
        self.assertJsonReply(reply, 200)
        self.assertEqual(set(reply.json), {"data"})
        self.assertLessEqual({"name", "price", "quantity"}, set(reply.json["data"]))
        self.assertEqual(reply.json["data"]["name"], "TinCan")
        self.assertError(bazaar.get(self.cluster.catalog_url("/stocks/NoSuchStock")), 404)
        self.assertError(bazaar.get(self.cluster.catalog_url("/stocks/bad$name")), 400)

    def test_catalog_lookup_reply_reused_until_the_stock_changes(self):
        """The catalog serialises a stock's lookup reply once per version (issue 14): repeated
        lookups reuse the bytes, and a trade makes the next lookup show the new quantity."""
        url = self.cluster.catalog_url("/stocks/GameStart")
        reused = "bazaar_catalog_lookup_replies_reused_total"
        first = bazaar.get(url)
        self.assertJsonReply(first, 200)
        before = self.cluster.metric(reused, "catalog")
        for _ in range(3):
            again = bazaar.get(url)
            self.assertEqual(again.body, first.body)
        self.assertEqual(self.cluster.metric(reused, "catalog") - before, 3)
        quantity = first.json["data"]["quantity"]
        reply = self.cluster.post_json("/orders", {"name": "GameStart", "type": "buy",
                                                   "quantity": 2})
        self.assertJsonReply(reply, 200)
        after = bazaar.get(url)
        self.assertEqual(after.json["data"]["quantity"], quantity - 2)
        self.assertGreater(after.json["data"]["version"], first.json["data"]["version"])


class TestReplicatedNumbering(ApiTestCase):
    """Three replicas: numbers from 0 with no gaps, identical order logs, leader = highest id."""

    replicas = 3
    TRADES = [("GameStart", "buy", 1), ("FishCo", "sell", 2), ("BoarCo", "buy", 3), ("GameStart", "sell", 4),
              ("TinCan", "buy", 5), ("RiverRun", "sell", 6), ("StoneAge", "buy", 7), ("FishCo", "buy", 8),
              ("Dot.Dash-Under_1", "sell", 9), (LONG_STOCK_NAME, "buy", 10)]

    def test_numbering_and_replica_logs(self):
        expected = []
        for number, (name, kind, quantity) in enumerate(self.TRADES):
            with self.subTest(number=number):
                self.assertEqual(self.trade_ok(name, kind, quantity), number)
            expected.append((number, name, kind, quantity))
        for rid in self.cluster.replica_ids():
            bazaar.wait_for(lambda rid=rid: order_view(db_orders(self.cluster, rid)) == expected, 10,
                            f"order-{rid}.db to hold the {len(expected)} orders")
        for number, name, kind, quantity in expected:
            reply = self.cluster.get(f"/orders/{number}")
            self.assertJsonReply(reply, 200)
            self.assertEqual(reply.json["data"], {"number": number, "name": name, "type": kind,
                                                  "quantity": quantity})
        self.assertError(self.cluster.get(f"/orders/{len(expected)}"), 404)
        self.assertCatalogMatchesLog(expected)

    def assertCatalogMatchesLog(self, rows):
        """initial + sells - buys == catalog quantity, for every stock."""
        want = {name: qty for name, (_, qty) in self.cluster.initial_stocks.items()}
        for _, name, kind, quantity in rows:
            want[name] += quantity if kind == "sell" else -quantity
        self.assertEqual(db_quantities(self.cluster), want)

    def test_leader_is_highest_id(self):
        status = self.cluster.status()
        if bazaar.replication_mode() == "primary-backup":
            self.assertEqual(self.cluster.leader(), 3, f"/status leader: {status['leader']!r}")
        else:  # the replicas elect any of them
            self.assertIn(self.cluster.leader(), (1, 2, 3), f"/status: {status['leader']!r}")
        self.assertIsInstance(status["epoch"], int)
        if isinstance(status["replicas"], (list, dict)):
            self.assertEqual(len(status["replicas"]), 3, status["replicas"])


class TestCleanShutdown(ApiTestCase):
    """Every service exits 0 on SIGTERM (SPEC §5)."""

    replicas = 3

    def test_sigterm_exits_zero(self):
        self.trade_ok("GameStart", "buy", 1)
        for name in ["frontend", "order1", "order2", "order3", "catalog"]:
            with self.subTest(name):
                self.assertEqual(self.cluster.stop_process(name), 0,
                                 f"{name} did not exit 0 on SIGTERM")


if __name__ == "__main__":
    unittest.main()
