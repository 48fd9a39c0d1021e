#!/usr/bin/env python3
"""Several front-ends (SPEC §3, §5): each [frontend.N] is started, invalidated and coherent.

- every front-end gets the catalog's invalidations, each on its own stream, so a paused
  front-end delays nobody else;
- a front-end that missed invalidations (paused, or cut off from the catalog by a partition)
  never serves a stale value once it could know better: a gap or a silence in its stream
  empties its cache; the worst staleness after a partition is measured and must stay under 1 s;
- a front-end that cannot bind its port exits without touching the cluster (no leader notice);
- killing the leader with traffic through every front-end keeps the SPEC §3 invariants.
"""

import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import bazaar  # noqa: E402

STALENESS_LIMIT_S = 1.0  # the target of the issue; the design bound is 3 heartbeats (600 ms)


def quantity(cluster, name, frontend):
    reply = bazaar.get(cluster.url(frontend, f"/stocks/{name}"))
    assert reply.status == 200, (frontend, reply.status, reply.body)
    return reply.json["data"]["quantity"]


def catalog_quantity(cluster, name):
    reply = bazaar.get(cluster.catalog_url(f"/stocks/{name}"))
    assert reply.status == 200, reply.body
    return reply.json["data"]["quantity"]


def trade(cluster, frontend, name, kind="buy", qty=1):
    reply = bazaar.post_json(cluster.url(frontend, "/orders"),
                             {"name": name, "type": kind, "quantity": qty})
    assert reply.status == 200, (frontend, reply.status, reply.body)
    return reply.json["data"]["transaction_number"]


def until_fresh(cluster, frontend, names, timeout):
    """Seconds until every name reads as the catalog's quantity through frontend (polling)."""
    start = time.monotonic()
    want = {}
    for name in names:
        want[name] = catalog_quantity(cluster, name)

    def fresh():
        got = {}
        for name in names:
            got[name] = quantity(cluster, name, frontend)
        return got == want

    bazaar.wait_for(fresh, timeout, f"{frontend} to show {want}", interval=0.01)
    return time.monotonic() - start


def resets(cluster, frontend):
    m = cluster.metrics(frontend)
    return sum(v for k, v in m.items() if k.startswith("bazaar_frontend_cache_resets_total{"))


class Blackhole:
    """A TCP forwarder between the catalog and one front-end that can cut the link.

    While cut, established connections are closed and new ones are accepted but never
    answered (as behind a partition: the catalog's calls time out)."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.port = bazaar.free_port()
        self.cut = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.socks = []
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.server.settimeout(0.1)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _track(self, sock):
        with self.lock:
            self.socks.append(sock)

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._track(conn)
            if self.cut.is_set():
                continue  # held open, never answered
            try:
                up = socket.create_connection(self.target, timeout=2)
            except OSError:
                conn.close()
                continue
            self._track(up)
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst):
        try:
            while not self.cut.is_set():
                data = src.recv(65536)
                if not data or self.cut.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def set_cut(self, cut):
        if cut:
            self.cut.set()
        else:
            self.cut.clear()
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:  # both directions: a partition ends every conversation
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.stop.set()
        self.set_cut(True)
        self.server.close()
        self.thread.join(timeout=2)


class TestSeveralFrontends(bazaar.ClusterTestCase):
    replicas = 3
    frontends = 3
    overrides = {"frontend": {"cache_size": "20"}}

    def test_every_frontend_is_invalidated(self):
        c = self.cluster
        quantity(c, "BoarCo", "frontend")
        quantity(c, "BoarCo", "frontend2")
        trade(c, "frontend3", "BoarCo")  # neither frontend nor frontend2 routed it
        for fe in ("frontend", "frontend2"):
            took = until_fresh(c, fe, ["BoarCo"], timeout=STALENESS_LIMIT_S)
            print(f"{fe}: fresh {took * 1000:.0f} ms after the trade", file=sys.stderr)
        targets = bazaar.get(c.catalog_url("/status")).json["invalidation_targets"]
        self.assertEqual(len(targets), 3, targets)
        self.assertTrue(all(t["reachable"] and t["delivered"] >= 1 for t in targets), targets)

    def test_paused_frontend_delays_nobody_and_serves_nothing_stale_after(self):
        c = self.cluster
        names = ["GameStart", "RottenFishCo", "MenhirCo", "BoarCo", "DruidTools"]
        for n in names:
            quantity(c, n, "frontend")
            quantity(c, n, "frontend2")
        before = resets(c, "frontend2")
        c.processes["frontend2"].signal(signal.SIGSTOP)
        try:
            for n in names:
                trade(c, "frontend3", n)
            took = until_fresh(c, "frontend", names, timeout=STALENESS_LIMIT_S)
            print(f"frontend fresh {took * 1000:.0f} ms after 5 trades while frontend2 is "
                  f"paused", file=sys.stderr)
            time.sleep(bazaar.scaled(2.5))  # the catalog gives up on some pushes to frontend2
            trade(c, "frontend3", names[0])
        finally:
            c.processes["frontend2"].signal(signal.SIGCONT)
        # The very first answers after the resume are already right: it knows it was away.
        want = {n: catalog_quantity(c, n) for n in names}
        got = {n: quantity(c, n, "frontend2") for n in names}
        self.assertEqual(got, want, "frontend2 served a value from before its pause")
        self.assertGreater(resets(c, "frontend2"), before)
        log = open(c.processes["frontend2"].log_path, encoding="utf-8").read()
        self.assertIn("cache emptied", log)
        # And it trusts its cache again once the stream is back.
        bazaar.wait_for(lambda: c.metric("bazaar_frontend_cache_trusted", "frontend2") == 1,
                        5, "frontend2 to trust its cache again")

    def test_frontend_that_cannot_bind_changes_nothing(self):
        c = self.cluster
        def promised(rid):  # the epoch a replica knows: its promise, or its Raft term
            st = bazaar.replica_state(c, rid)
            return st.get("promised", st.get("epoch"))

        before = {rid: promised(rid) for rid in c.replica_ids()}
        proc = c.processes["frontend2"]
        import subprocess
        run = subprocess.run(proc.argv, capture_output=True, text=True, cwd=bazaar.REPO_ROOT,
                             timeout=bazaar.scaled(20), env=c._env())
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("cannot listen", run.stderr)
        self.assertNotIn("leader is replica", run.stderr)
        after = {rid: promised(rid) for rid in c.replica_ids()}
        # Other front-ends may move the epoch on their own; the failed one must not have:
        # its notices would name it in no log, so compare against what the others logged.
        self.assertEqual(set(after), set(before))
        for rid in c.replica_ids():
            self.assertGreaterEqual(after[rid], before[rid])


class TestLeaderKillSeveralFrontends(bazaar.ClusterTestCase):
    """Traffic through two front-ends while the leader is killed and restarted."""

    replicas = 3
    frontends = 2

    def test_leader_kill_with_traffic_through_every_frontend(self):
        c = self.cluster
        epoch_before = c.status()["epoch"]
        initial = c.initial_stocks
        traders = [bazaar.Trader(c.url(fe), sorted(initial), seed=7 + i, threads=2)
                   for i, fe in enumerate(c.frontend_names())]
        for t in traders:
            t.start()
        bazaar.wait_for(lambda: all(len(t.acked) >= 5 for t in traders), 30,
                        "orders through every front-end")
        leader = c.leader()
        c.kill_process(f"order{leader}")
        time.sleep(bazaar.scaled(2.0))
        c.start_process(f"order{leader}")
        time.sleep(bazaar.scaled(1.0))
        for t in traders:
            t.stop()
        acked = [o for t in traders for o in t.acked]
        errors = [e for t in traders for e in t.errors]
        bazaar.wait_replicas_idle(c)
        epoch_after = c.status()["epoch"]
        print(f"several front-ends, leader {leader} killed and restarted: epoch {epoch_before} "
              f"-> {epoch_after}, {len(acked)} orders acknowledged", file=sys.stderr)
        self.assertFalse(errors, errors[:5])
        self.assertGreater(len(acked), 0)
        bazaar.check_invariants(c, acked, initial, rejected_keys=[k for t in traders for k in t.rejected],
                                unknown_keys=[k for t in traders for k in t.unknown])


class TestPartitionStaleness(unittest.TestCase):
    """The catalog's pushes to one front-end go through a link the test can cut."""

    def test_worst_staleness_under_partition_and_after_heal(self):
        import tempfile
        with tempfile.TemporaryDirectory(prefix="bazaar-partition-") as tmp:
            c = bazaar.Cluster(tmp, replicas=1, frontends=2,
                               overrides={"frontend": {"cache_size": "20"}})
            fe1_port = int(c.config["frontend.1"]["listen"].rsplit(":", 1)[1])
            hole = Blackhole(fe1_port)
            c.config["catalog"]["notify"] = (f"127.0.0.1:{hole.port},"
                                             f"{c.config['frontend.2']['listen']}")
            try:
                with c:
                    self._run(c, hole)
            finally:
                hole.close()

    def _run(self, c, hole):
        name = "GameStart"
        worst = 0.0
        for round_ in range(3):
            quantity(c, name, "frontend")
            quantity(c, name, "frontend")  # cached on frontend (the one behind the cut link)
            hole.set_cut(True)
            time.sleep(0.05 * round_)  # trade at different points of the heartbeat cycle
            t0 = time.monotonic()
            trade(c, "frontend2", name)
            want = catalog_quantity(c, name)
            bazaar.wait_for(lambda: quantity(c, name, "frontend") == want, 5,
                            "the cut-off front-end to stop serving its cached value",
                            interval=0.01)
            during = time.monotonic() - t0
            time.sleep(bazaar.scaled(1.5))
            trade(c, "frontend2", name)  # missed too; the link heals afterwards
            hole.set_cut(False)
            t1 = time.monotonic()
            want = catalog_quantity(c, name)
            self.assertEqual(quantity(c, name, "frontend"), want,
                             "stale right after the partition healed")
            after = time.monotonic() - t1
            worst = max(worst, during, after)
            print(f"round {round_}: stale for {during * 1000:.0f} ms after a trade it missed; "
                  f"fresh {after * 1000:.0f} ms after the heal", file=sys.stderr)
            bazaar.wait_for(lambda: c.metric("bazaar_frontend_cache_trusted") == 1, 5,
                            "the cache to be trusted again after the heal")
        print(f"worst staleness: {worst * 1000:.0f} ms", file=sys.stderr)
        self.assertLess(worst, STALENESS_LIMIT_S * bazaar.timeout_mult())
        self.assertGreater(resets(c, "frontend"), 0)


if __name__ == "__main__":
    unittest.main()
