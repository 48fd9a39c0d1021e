#!/usr/bin/env python3
"""The live status page (SPEC §2, GET / on the front-end) in a real browser.

Headless Chromium loads the page from a running cluster after a leader crash, lets its
scripts run (they read /status), and the test checks the rendered DOM: the new leader, every
replica with the dead one shown down, a fresh order, the cache in LRU order and the line that
says what changed. A screenshot is kept in <build>/test-artifacts/status-page.png.
Exit 77 (skipped) when no Chromium is installed.
"""

import html.parser
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import bazaar  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


class Dom(html.parser.HTMLParser):
    """Text of elements by id, and table rows (their data-* attribute and cell texts)."""

    def __init__(self):
        super().__init__()
        self.text_by_id = {}
        self.rows = {}  # table id -> [(attrs, [cell text])]
        self._ids = []  # open elements: (tag, id or None)
        self._table = None
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._ids.append((tag, attrs.get("id")))
        if attrs.get("id"):
            self.text_by_id.setdefault(attrs["id"], "")
        if tag == "table":
            self._table = attrs.get("id")
        elif tag == "tr" and self._table:
            self._row = (attrs, [])
        elif tag == "td" and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        while self._ids:
            t, _ = self._ids.pop()
            if t == tag:
                break
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row[1].append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row[1]:
                self.rows.setdefault(self._table, []).append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        for _, ident in self._ids:
            if ident:
                self.text_by_id[ident] += data
        if self._cell is not None:
            self._cell += data


def artifacts_dir():
    d = os.path.join(os.path.dirname(bazaar._bin_dir()), "test-artifacts")
    os.makedirs(d, exist_ok=True)
    return d


def chromium(url, profile, *extra, timeout=90):
    argv = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
            "--window-size=1280,900", *extra, url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=bazaar.scaled(timeout))


@unittest.skipUnless(CHROMIUM, "no chromium installed (scripts/deps.sh installs it)")
class TestStatusPage(bazaar.ClusterTestCase):
    replicas = 3

    def test_page_shows_leader_replicas_orders_cache_and_changes(self):
        c = self.cluster
        old = c.leader()
        bazaar.wait_for(lambda: all(r.get("reachable") for r in c.status()["replicas"]), 10,
                        "every replica reachable")
        c.kill_process(f"order{old}")
        bazaar.wait_for(lambda: c.leader() not in (None, old), 20, "a new leader")
        new = c.leader()
        bazaar.wait_for(lambda: not next(r for r in c.status()["replicas"] if r["id"] == old)
                        ["reachable"], 10, "the dead replica seen as unreachable")
        for name in ("BoarCo", "GameStart"):
            self.assertEqual(c.get(f"/stocks/{name}").status, 200)
        reply = c.post_json("/orders", {"name": "MenhirCo", "type": "buy", "quantity": 4})
        self.assertEqual(reply.status, 200, reply.body)
        number = reply.json["data"]["transaction_number"]

        page = c.get("/")
        self.assertEqual(page.status, 200)
        self.assertTrue(page.headers.get("Content-Type", "").startswith("text/html"))
        self.assertNotRegex(page.body.decode(), r'(src|href)=["\']?(https?:)?//',
                            "the page must load nothing from elsewhere")

        with tempfile.TemporaryDirectory(prefix="bazaar-chromium-") as profile:
            run = chromium(c.frontend_url("/"), profile, "--dump-dom")
        self.assertEqual(run.returncode, 0, run.stderr[-2000:])
        dom = Dom()
        dom.feed(run.stdout)
        self.assertEqual(dom.text_by_id.get("leader"), f"replica {new}", run.stdout[:3000])
        replicas = {int(a["data-replica"]): cells for a, cells in dom.rows.get("replicas", [])}
        self.assertEqual(set(replicas), set(c.replica_ids()))
        self.assertEqual(replicas[new][1], "leader")
        self.assertEqual(replicas[old][1], "down")
        orders = {int(a["data-number"]): cells for a, cells in dom.rows.get("orders", [])}
        self.assertIn(number, orders)
        self.assertEqual(orders[number][1:4], ["MenhirCo", "buy", "4"])
        cache = [a["data-stock"] for a, _ in dom.rows.get("cache", [])]
        self.assertEqual(cache[:2], ["GameStart", "BoarCo"], "LRU order, most recent first")
        self.assertIn("hit rate", dom.text_by_id.get("cache-rates", ""))
        changes = dom.text_by_id.get("changes", "")
        self.assertIn(f"leader changed to replica {new}", changes)
        self.assertIn(f"replica {old} is down", changes)

        shot = os.path.join(artifacts_dir(), "status-page.png")
        with tempfile.TemporaryDirectory(prefix="bazaar-chromium-") as profile:
            run = chromium(c.frontend_url("/"), profile, f"--screenshot={shot}")
        self.assertEqual(run.returncode, 0, run.stderr[-2000:])
        self.assertGreater(os.path.getsize(shot), 10000)
        print(f"screenshot: {shot}", file=sys.stderr)
        c.start_process(f"order{old}")


if __name__ == "__main__":
    if not CHROMIUM:
        print("skipped: no chromium", file=sys.stderr)
        sys.exit(77)
    unittest.main()
