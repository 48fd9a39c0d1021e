#!/usr/bin/env python3
"""Unit tests of the benchmark helpers that need no server: wrk output parsing, the generated
wrk scripts and request mixes, nginx quoting, medians. Runs in well under a second:

    python3 bench/test_benchlib.py
"""

import base64
import json
import os
import tempfile
import unittest

import benchlib
from bench import query_numbers

WRK_OUT = """\
Running 10s test @ http://127.0.0.1:8080/orders
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.00us    1.20ms   1.05s    95.00%
    Req/Sec     5.00k   300.00     6.00k    70.00%
  Latency Distribution
     50%  650.00us
     75%    1.10ms
     90%    2.00ms
     99%    1.02s
  99880 requests in 10.00s, 12.00MB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   9988.12
Transfer/sec:      1.20MB
"""


class ParseWrk(unittest.TestCase):
    def test_units_counts_and_errors(self):
        r = benchlib.parse_wrk(WRK_OUT)
        self.assertAlmostEqual(r["rps"], 9988.12)
        self.assertAlmostEqual(r["p50_ms"], 0.65)
        self.assertAlmostEqual(r["p75_ms"], 1.10)
        self.assertAlmostEqual(r["p99_ms"], 1020.0)
        self.assertAlmostEqual(r["avg_ms"], 0.812)
        self.assertAlmostEqual(r["max_ms"], 1050.0)
        self.assertEqual(r["requests"], 99880)
        self.assertEqual(r["errors"], 6)
        self.assertEqual(r["non2xx"], 7)

    def test_clean_run_has_no_errors(self):
        out = "\n".join(l for l in WRK_OUT.splitlines() if "errors" not in l and "Non-2xx" not in l)
        r = benchlib.parse_wrk(out)
        self.assertEqual((r["errors"], r["non2xx"]), (0, 0))

    def test_truncated_output_is_an_error(self):
        with self.assertRaises(RuntimeError):
            benchlib.parse_wrk(WRK_OUT.split("Latency Distribution")[0])
        with self.assertRaises(ValueError):
            benchlib._ms("12 parsecs")


class Requests(unittest.TestCase):
    def test_trade_bodies_cycle_buys_then_sells_over_the_default_stocks(self):
        stocks = list(benchlib.bazaar.parse_stocks_csv(benchlib.bazaar.default_stocks_csv()))
        bodies = [json.loads(b) for b in benchlib.trade_bodies()]
        self.assertEqual(len(bodies), 2 * len(stocks))
        self.assertEqual([b["name"] for b in bodies], stocks + stocks)
        self.assertEqual([b["type"] for b in bodies], ["buy"] * len(stocks) + ["sell"] * len(stocks))
        self.assertTrue(all(b["quantity"] == 1 for b in bodies))
        csv = benchlib.bazaar.parse_stocks_csv(benchlib.trade_stocks_csv())
        self.assertEqual(list(csv), stocks)
        self.assertTrue(all(q == 100000 for _, q in csv.values()))

    def test_etcd_bodies_are_base64_puts(self):
        bodies = [json.loads(b) for b in benchlib.etcd_put_bodies()]
        self.assertEqual(len(bodies), 24)
        self.assertEqual(base64.b64decode(bodies[0]["key"]), b"stock/GameStart")
        self.assertEqual({base64.b64decode(b["value"]) for b in bodies}, {b"buy", b"sell"})

    def test_query_numbers_mix_recent_and_old(self):
        nums = query_numbers(50000, count=1000, recent=100, seed=1)
        self.assertEqual(len(nums), 1000)
        self.assertTrue(all(0 <= n < 50000 for n in nums))
        recent = sum(1 for n in nums if n >= 49900)
        self.assertGreaterEqual(recent, 500)          # the recent half, plus old draws landing there
        self.assertLess(recent, 520)
        self.assertEqual(nums, query_numbers(50000, count=1000, recent=100, seed=1))
        self.assertTrue(all(n == 0 for n in query_numbers(1, count=10)))

    def test_wrk_script_quotes_every_item(self):
        with tempfile.TemporaryDirectory() as d:
            path = benchlib.write_wrk_script(os.path.join(d, "x.lua"), "POST",
                                             ['{"a":"]]"}', "b"], "/orders")
            text = open(path, encoding="utf-8").read()
            self.assertIn('[==[{"a":"]]"}]==]', text)
            self.assertIn('"/orders"', text)
            with self.assertRaises(ValueError):
                benchlib.write_wrk_script(os.path.join(d, "y.lua"), "POST", ["x]==]y"])
            with self.assertRaises(ValueError):
                benchlib.write_wrk_script(os.path.join(d, "z.lua"), "GET", [])


class Nginx(unittest.TestCase):
    def test_literals(self):
        self.assertEqual(benchlib.nginx_literal("it's \\"), "it\\'s \\\\")
        with self.assertRaises(ValueError):
            benchlib.nginx_literal("$uri")
        entries = benchlib.nginx_map_entries({"/orders/1": b'{"data":{"number":1}}'})
        self.assertEqual(entries.strip(), "'/orders/1' '{\"data\":{\"number\":1}}';")


class Medians(unittest.TestCase):
    def test_median_round_and_totals(self):
        runs = [{"rps": r, "cpu_us": c, "p50_ms": r / 10, "all_requests": 10, "acked": 9,
                 "all_non2xx": 1, "all_errors": 0} for r, c in ((3, 9), (1, 7), (2, 8))]
        m = benchlib.median_of(runs)
        self.assertEqual((m["rps"], m["p50_ms"], m["cpu_us"]), (2, 0.2, 8))
        self.assertEqual(m["all_rps"], [3, 1, 2])
        self.assertEqual((m["all_requests"], m["acked"], m["all_non2xx"]), (30, 27, 3))


if __name__ == "__main__":
    unittest.main()
