#!/usr/bin/env python3
"""bazaar-client against a real cluster (SPEC §4): it trades, verifies every order it
recorded, reports per-type latency as JSON and CSV, and exits non-zero when anything
does not verify or a flag is bad."""

import csv
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import bazaar  # noqa: E402

STOCKS_FILE = os.path.join(bazaar.REPO_ROOT, "config", "stocks.csv")


class TestClient(bazaar.ClusterTestCase):
    replicas = 3

    def client(self, *flags, timeout=120):
        argv = [os.path.join(bazaar._bin_dir(), "bazaar-client"), *flags]
        return subprocess.run(argv, capture_output=True, text=True,
                              timeout=bazaar.scaled(timeout))

    def test_run_verifies_every_order(self):
        seed = bazaar.test_seed()
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = os.path.join(tmp, "requests.csv")
            run = self.client("--url", self.cluster.frontend_url(), "--sessions", "5",
                              "--iterations", "100", "--p", "0.6", "--seed", str(seed),
                              "--stocks-file", STOCKS_FILE, "--json", "--quiet",
                              "--csv", csv_path)
            self.assertEqual(run.returncode, 0, run.stderr)
            summary = json.loads(run.stdout)
            with open(csv_path, newline="") as f:
                rows = list(csv.reader(f))
        self.assertTrue(summary["ok"])
        self.assertGreater(summary["orders_recorded"], 0)
        self.assertEqual(summary["orders_verified"], summary["orders_recorded"])
        self.assertEqual(summary["mismatches"], 0)
        self.assertEqual(summary["requests"]["lookup"]["count"], 500)
        total = sum(summary["requests"][t]["count"] for t in ("lookup", "trade", "query"))
        self.assertEqual(len(rows), 1 + total, "one CSV row per request plus the header")
        self.assertEqual(rows[0], ["session", "type", "start_us", "latency_us", "status"])
        # Every acknowledged order is in the log, numbered densely.
        idle = bazaar.wait_replicas_idle(self.cluster)
        self.assertGreaterEqual(idle["last"] + 1, summary["orders_recorded"])

    def test_runs_from_any_directory_with_spec_flags_only(self):
        """No local files: the stock list comes from GET /stocks (SPEC §5)."""
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = os.path.join(tmp, "requests.csv")
            argv = [os.path.join(bazaar._bin_dir(), "bazaar-client"),
                    "--url", self.cluster.frontend_url(), "--sessions", "2", "--iterations", "40",
                    "--p", "0.5", "--seed", "11", "--csv", csv_path, "--json", "--quiet"]
            run = subprocess.run(argv, capture_output=True, text=True, cwd=tmp,
                                 timeout=bazaar.scaled(120))
            self.assertEqual(run.returncode, 0, run.stderr)
            with open(csv_path, newline="") as f:
                rows = list(csv.DictReader(f))
        summary = json.loads(run.stdout)
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["requests"]["lookup"]["count"], 80)
        self.assertEqual(summary["orders_verified"], summary["orders_recorded"])
        self.assertTrue(all(r["status"] == "200" for r in rows if r["type"] == "lookup"), rows[:5])

    def test_bad_flags_exit_2(self):
        for flags in (["--sessions", "0"], ["--p", "nan"], ["--p", "0.5x"], ["--p", "1.5"],
                      ["--iterations", "0"], ["--stocks", "A,,B"], ["--url", "ftp://x"],
                      ["--no-such-flag"]):
            with self.subTest(flags=flags):
                run = self.client(*flags, timeout=10)
                self.assertEqual(run.returncode, 2, run.stderr)

    def test_unreachable_front_end_fails(self):
        port = bazaar.free_port()
        run = self.client("--url", f"http://127.0.0.1:{port}", "--sessions", "1",
                          "--iterations", "2", "--max-tries", "2", "--stocks-file", STOCKS_FILE,
                          "--quiet", timeout=30)
        self.assertEqual(run.returncode, 1, run.stdout + run.stderr)


if __name__ == "__main__":
    unittest.main()
