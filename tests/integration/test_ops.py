#!/usr/bin/env python3
"""The operator's toolkit (SPEC §2, §5): /livez, /readyz, /status on every service, GET /stocks,
--version/--help/bad flags on every binary, `bazaar check`, `bazaar status [--json]`,
`bazaar restart` against a running `bazaar up`, log lines, Prometheus conventions."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import bazaar  # noqa: E402

BINARIES = ["bazaar", "bazaar-catalog", "bazaar-order", "bazaar-frontend", "bazaar-client"]
ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \w+\[\d+\] (DEBUG|INFO|WARN|ERROR) ")


def exe(name):
    return os.path.join(bazaar._bin_dir(), name)


def run(argv, timeout=30, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=bazaar.scaled(timeout), **kw)


class TestOperationalEndpoints(bazaar.ClusterTestCase):
    replicas = 3

    def services(self):
        return ["catalog", "order1", "order2", "order3", "frontend"]

    def test_livez_readyz_health_and_status_everywhere(self):
        c = self.cluster
        for name in self.services():
            with self.subTest(service=name):
                self.assertEqual(bazaar.get(c.url(name, "/livez")).status, 200)
                ready, health = bazaar.get(c.url(name, "/readyz")), bazaar.get(c.url(name, "/health"))
                self.assertEqual((ready.status, ready.json.get("status")),
                                 (health.status, health.json.get("status")))
                self.assertEqual(ready.status, 200)
                st = bazaar.get(c.url(name, "/status"))
                self.assertEqual(st.status, 200, st.body)
                self.assertRegex(st.json["version"], r"^\d+\.\d+\.\d+ ")
                self.assertEqual(st.json["config"]["cluster"]["secret"], "(redacted)")
                self.assertNotIn(c.secret.encode(), st.body)
        fe = c.status()
        self.assertIn(fe["leader"], c.replica_ids())
        self.assertEqual(len(fe["replicas"]), 3)
        self.assertTrue(all("last" in r and "role" in r for r in fe["replicas"]))
        order = bazaar.get(c.order_url(1, "/status")).json
        keys = ("role", "epoch", "last", "leader")
        if bazaar.replication_mode() == "primary-backup":
            keys += ("log_epoch",)
        for key in keys:
            self.assertIn(key, order)
        cat = bazaar.get(c.catalog_url("/status")).json
        self.assertIn("pending_invalidations", cat)

    def test_stocks_lists_every_stock_sorted(self):
        c = self.cluster
        reply = c.get("/stocks")
        self.assertEqual(reply.status, 200, reply.body)
        data = reply.json["data"]
        self.assertEqual([s["name"] for s in data], sorted(c.initial_stocks))
        for s in data:
            self.assertEqual(set(s), {"name", "price", "quantity"})
            self.assertEqual(s["quantity"], bazaar.db_quantities(c)[s["name"]])
        self.assertEqual(bazaar.get(c.catalog_url("/stocks")).json["data"], data)

    def test_recent_orders_in_status(self):
        c = self.cluster
        reply = c.post_json("/orders", {"name": "GameStart", "type": "sell", "quantity": 2})
        self.assertEqual(reply.status, 200, reply.body)
        number = reply.json["data"]["transaction_number"]
        recent = c.status()["recent_orders"]
        self.assertEqual(recent[0]["number"], number)
        self.assertEqual((recent[0]["name"], recent[0]["type"], recent[0]["quantity"]),
                         ("GameStart", "sell", 2))

    def test_metrics_follow_prometheus_conventions(self):
        c = self.cluster
        c.get("/stocks/GameStart")
        c.get("/stocks/NoSuchStock")
        text = bazaar.get(c.frontend_url("/metrics")).body.decode()
        self.assertRegex(text, r'bazaar_frontend_http_requests_total\{route="/stocks/\{\}",'
                               r'method="GET",code="200"\} \d+')
        self.assertRegex(text, r'bazaar_frontend_http_requests_total\{route="/stocks/\{\}",'
                               r'method="GET",code="404"\} \d+')
        self.assertNotRegex(text, r'code="\dxx"')
        for metric in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                       "process_open_fds", "process_start_time_seconds"):
            self.assertRegex(text, rf"(?m)^{metric} [0-9.e+]+$")
        self.assertRegex(text, r'bazaar_build_info\{version="[^"]+",service="bazaar_frontend"\} 1')
        samples = bazaar.parse_metrics(text)
        self.assertGreater(samples["process_resident_memory_bytes"], 1e6)
        self.assertLess(abs(samples["process_start_time_seconds"] - time.time()), 3600)

    def test_log_lines_are_dated_and_levelled(self):
        for name in self.services():
            with open(self.cluster.processes[name].log_path, encoding="utf-8") as f:
                lines = [l.rstrip("\n") for l in f if not l.startswith("=== ")]
            self.assertTrue(lines, name)
            for line in lines:
                self.assertRegex(line, ISO_LINE, f"{name}: {line!r}")

    def test_zz_readyz_says_why_when_the_catalog_is_gone(self):
        c = self.cluster
        c.stop_process("catalog")
        try:
            reply = bazaar.wait_for(lambda: (lambda r: r if r.status == 503 else None)(
                c.get("/readyz")), 10, "the front-end to report not ready")
            self.assertEqual(reply.json["reason"], "catalog unreachable")
            self.assertEqual(c.get("/health").status, 503)
            self.assertEqual(c.get("/livez").status, 200)
        finally:
            c.start_process("catalog")
        bazaar.wait_for(lambda: c.get("/readyz").status == 200, 10, "ready again")


class TestCommandLine(unittest.TestCase):
    def test_version_help_and_bad_flags(self):
        for name in BINARIES:
            with self.subTest(binary=name):
                v = run([exe(name), "--version"])
                self.assertEqual(v.returncode, 0, v.stderr)
                self.assertRegex(v.stdout, rf"^{name} \d+\.\d+\.\d+ \(commit \w+\)\n$")
                h = run([exe(name), "--help"])
                self.assertEqual(h.returncode, 0, h.stderr)
                self.assertIn("usage", h.stdout.lower())
                self.assertEqual(h.stderr, "")
                bad = run([exe(name)] + (["up"] if name == "bazaar" else []) + ["--no-such-flag"])
                self.assertEqual(bad.returncode, 2)
                self.assertEqual(bad.stdout, "")
                self.assertIn("usage:", bad.stderr)
                self.assertLessEqual(len(bad.stderr.strip().splitlines()), 3, bad.stderr)

    def test_check(self):
        with tempfile.TemporaryDirectory() as tmp:
            good = os.path.join(tmp, "good.conf")
            with open(good, "w") as f:
                f.write("[cluster]\ndata_dir = %s\n[catalog]\nstocks = %s\n"
                        "[frontend.1]\nlisten = 127.0.0.1:18081\n[frontend.2]\nlisten = 127.0.0.1:18082\n"
                        "[order.1]\nlisten = 127.0.0.1:19101\n" %
                        (os.path.join(tmp, "data"), os.path.join(bazaar.REPO_ROOT, "config", "stocks.csv")))
            ok = run([exe("bazaar"), "check", "--config", good])
            self.assertEqual(ok.returncode, 0, ok.stderr)
            self.assertIn("2 front-end(s)", ok.stdout)
            self.assertFalse(os.path.exists(os.path.join(tmp, "data")), "check must start nothing")
            clash = os.path.join(tmp, "clash.conf")
            with open(clash, "w") as f:
                f.write(open(good).read().replace("19101", "18082"))
            bad = run([exe("bazaar"), "check", "--config", clash])
            self.assertEqual(bad.returncode, 1)
            self.assertIn("both listen on 127.0.0.1:18082", bad.stderr)
            typo = os.path.join(tmp, "typo.conf")
            with open(typo, "w") as f:
                f.write("[frontend.1]\nlisten = 127.0.0.1:1\ncache = on\n")
            bad = run([exe("bazaar"), "check", "--config", typo])
            self.assertNotEqual(bad.returncode, 0)
            self.assertIn("frontend.1", bad.stderr)

    def test_json_log_format(self):
        with tempfile.TemporaryDirectory() as tmp:
            busy = bazaar.free_port()
            import socket
            with socket.create_server(("127.0.0.1", busy)):
                conf = os.path.join(tmp, "c.conf")
                with open(conf, "w") as f:
                    f.write(f"[cluster]\ndata_dir = {tmp}/data\nlog_format = json\n"
                            f"[frontend]\nlisten = 127.0.0.1:{busy}\n[order.1]\nlisten = 127.0.0.1:1\n")
                r = run([exe("bazaar-frontend"), "--config", conf])
            self.assertEqual(r.returncode, 1)
            lines = [json.loads(l) for l in r.stderr.splitlines()]
            self.assertTrue(lines)
            for obj in lines:
                self.assertEqual(set(obj), {"ts", "process", "level", "msg"})
                self.assertRegex(obj["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertEqual(lines[-1]["level"], "error")
            self.assertIn("cannot listen", lines[-1]["msg"])


class TestLauncher(unittest.TestCase):
    """`bazaar up` with two front-ends; status, restart and Ctrl-C through the `bazaar` command."""

    def test_up_status_restart_stop(self):
        with tempfile.TemporaryDirectory(prefix="bazaar-up-") as tmp:
            ports = [bazaar.free_port() for _ in range(6)]
            conf = os.path.join(tmp, "bazaar.conf")
            with open(conf, "w") as f:
                f.write(f"[cluster]\ndata_dir = {tmp}/data\nsecret = up-secret\n"
                        f"[catalog]\nlisten = 127.0.0.1:{ports[0]}\n"
                        f"stocks = {bazaar.REPO_ROOT}/config/stocks.csv\n"
                        f"[frontend]\ncache_size = 4\n"
                        f"[frontend.1]\nlisten = 127.0.0.1:{ports[1]}\n"
                        f"[frontend.2]\nlisten = 127.0.0.1:{ports[2]}\n")
                for i in range(3):
                    f.write(f"[order.{i + 1}]\nlisten = 127.0.0.1:{ports[3 + i]}\n")
            log_path = os.path.join(tmp, "up.log")
            env = dict(os.environ)
            env.pop("BAZAAR_SECRET", None)
            with open(log_path, "w") as log:
                up = subprocess.Popen([exe("bazaar"), "up", "--config", conf], stdout=log,
                                      stderr=subprocess.STDOUT, cwd=tmp, env=env,
                                      preexec_fn=bazaar._die_with_parent)
            pids = []
            try:
                bazaar.wait_for(lambda: "Stock Bazaar is up" in open(log_path).read(), 60,
                                "bazaar up to report the cluster up")
                for port in ports[1:3]:
                    self.assertEqual(bazaar.get(f"http://127.0.0.1:{port}/readyz").status, 200)
                status = self.status(conf, tmp)
                print(json.dumps(status, indent=2), file=sys.stderr)
                procs = {p["name"]: p for p in status["processes"]}
                self.assertEqual(set(procs), {"catalog", "order.1", "order.2", "order.3",
                                              "frontend.1", "frontend.2"})
                self.assertTrue(all(p["ready"] for p in procs.values()), procs)
                roles = sorted(procs[f"order.{i}"]["role"] for i in (1, 2, 3))
                self.assertEqual(roles, ["follower", "follower", "leader"])
                self.assertTrue(all(procs[f"order.{i}"]["lag"] == 0 for i in (1, 2, 3)), procs)
                pids = [p["pid"] for p in procs.values()]
                text = run([exe("bazaar"), "status", "--config", conf], cwd=tmp)
                self.assertEqual(text.returncode, 0, text.stderr)
                self.assertRegex(text.stdout, r"order\.\d +127\.0\.0\.1:\d+ +ready +leader")

                # A crash experiment: kill a follower, restart it with one command.
                follower = next(n for n in ("order.1", "order.2") if procs[n]["role"] == "follower")
                os.kill(procs[follower]["pid"], signal.SIGKILL)
                bazaar.wait_for(lambda: f"bazaar restart {follower}" in open(log_path).read(), 10,
                                "bazaar up to report the exit with the restart command")
                down = self.status(conf, tmp, expect_rc=1)
                self.assertFalse({p["name"]: p for p in down["processes"]}[follower]["up"])
                r = run([exe("bazaar"), "restart", follower, "--config", conf], cwd=tmp, timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
                after = {p["name"]: p for p in self.status(conf, tmp)["processes"]}
                self.assertTrue(after[follower]["ready"])
                new_pid = after[follower]["pid"]
                self.assertNotEqual(new_pid, procs[follower]["pid"])
                pids.append(new_pid)
                bad = run([exe("bazaar"), "restart", "order.9", "--config", conf], cwd=tmp)
                self.assertEqual(bad.returncode, 1)
                self.assertIn("no process named", bad.stderr)
            finally:
                up.send_signal(signal.SIGINT)  # Ctrl-C
                up.wait(timeout=bazaar.scaled(30))
            self.assertEqual(up.returncode, 0, open(log_path).read()[-2000:])
            for pid in pids:  # the restarted replica included
                self.assertFalse(os.path.exists(f"/proc/{pid}") and
                                 open(f"/proc/{pid}/stat").read().split()[2] != "Z",
                                 f"pid {pid} still runs after Ctrl-C")
            no_up = run([exe("bazaar"), "restart", "order.1", "--config", conf], cwd=tmp)
            self.assertEqual(no_up.returncode, 1)
            self.assertIn("no `bazaar up` is running", no_up.stderr)

    def status(self, conf, cwd, expect_rc=0):
        r = run([exe("bazaar"), "status", "--config", conf, "--json"], cwd=cwd)
        self.assertEqual(r.returncode, expect_rc, r.stderr)
        return json.loads(r.stdout)


if __name__ == "__main__":
    unittest.main()
