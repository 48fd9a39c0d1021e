#!/usr/bin/env python3
"""test_history.py - concurrent client histories under faults, checked end to end (issue 9).

Each scenario starts a fresh cluster (3 order replicas, one front-end, a catalog of 3 stocks
with small quantities so that 409s are frequent), runs 9 recording clients against the public
API for a bounded time (5 with an Idempotency-Key that retry 503s and timeouts with the same
key, 3 without a key that send each trade once, 1 that only looks up and queries), injects its fault from the main thread, then
brings every process back, waits until the replicas are idle and checks the whole history with
history.check_history(): numbers in real-time order, the log replayed by number never below
zero and ending at the catalog, every query answer final, per-client monotonic lookups (409s
included), conservation and no orphaned trade.

Scenarios: no fault; leader SIGKILL; leader SIGSTOP for 3 s; catalog SIGKILL and restart (twice);
catalog SIGSTOP for 3 s;
both followers down while the leader dies with trades in flight, all down past the front-end's
retries, then the followers back first and the old leader last.

The checker's own unit tests (CheckerSelfTest) feed it small hand-made histories with each
anomaly of issue 9 (A-D) and a clean one, so a checker that cannot fail fails here;
HarnessSchemaTest makes sure the orphan check reads both catalog.db schemas.

BAZAAR_HISTORY_STATES=catalog checks per-client lookups against the catalog's own execution
order (catalog.db applied.version) instead of the log's: a diagnostic for code whose numbers are
not the execution order.

Seeded: the seed is printed (seed=N); BAZAAR_SEED=N replays the same client decisions and fault
times (process timing differs from run to run, so a race needs its timing too).
"""

import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from bazaar import (AckedOrder, Cluster, find_invariant_violations,  # noqa: E402
                    find_leader, scaled, test_seed, wait_replicas_idle)
from history import (Final, HistoryRecorder, Op, check_history,  # noqa: E402
                     find_history_violations)

STOCKS_CSV = "name,price,quantity\nAlpha,10,5\nBeta,20,8\nGamma,30,3\n"
CLIENTS = 9
UNKEYED = {2, 5, 7}    # trade without an Idempotency-Key
READERS = {8}          # never trade: look up and query (also while every trader is stuck)
# Seconds of recorded traffic per scenario (not scaled: bounded work); BAZAAR_HISTORY_SECONDS
# overrides it for longer runs by hand.
TRAFFIC_S = float(os.environ.get("BAZAAR_HISTORY_SECONDS", "10"))
SEED = None


def setUpModule():
    global SEED
    SEED = test_seed()


class HistoryScenarios(unittest.TestCase):
    """One cluster per scenario; the fault runs in the main thread (see bazaar._die_with_parent)."""

    def run_scenario(self, name, fault):
        rng = random.Random(f"{SEED}/{name}")
        tmpdir = tempfile.mkdtemp(prefix=f"bazaar-history-{name}-")
        cluster = Cluster(tmpdir, replicas=3, stocks_csv=STOCKS_CSV)
        ok = False
        try:
            cluster.start()
            recorder = HistoryRecorder(cluster.frontend_url(), cluster.initial_stocks, SEED,
                                       clients=CLIENTS, unkeyed=UNKEYED, readers=READERS)
            t_start = time.monotonic()
            recorder.start()
            try:
                fault(cluster, rng)
                # TRAFFIC_S in all, and at least 2 s of traffic after the fault.
                time.sleep(max(TRAFFIC_S - (time.monotonic() - t_start), 2.0))
            finally:
                recorder.stop()
            for pname, proc in cluster.processes.items():
                if not proc.running():
                    if proc.popen is not None:
                        proc._reap()
                    cluster.start_process(pname)
            wait_replicas_idle(cluster, timeout=60)
            summary = check_history(cluster, recorder, SEED, what=f"scenario {name}",
                                    states_from=os.environ.get("BAZAAR_HISTORY_STATES", "log"))
            print(f"scenario {name} seed={SEED}: {summary}", file=sys.stderr, flush=True)
            self.assertGreater(summary["acked"], 20, f"too little traffic: {summary}")
            self.assertGreater(summary["rejected"], 0, f"no 409 at all: {summary}")
            ok = True
        except BaseException:
            print(f"\nscenario {name} FAILED, seed={SEED}, kept {tmpdir}", file=sys.stderr)
            cluster.print_log_tails(30)
            raise
        finally:
            cluster.stop()
            if ok and not os.environ.get("BAZAAR_KEEP_TMP"):
                shutil.rmtree(tmpdir, ignore_errors=True)

    @staticmethod
    def leader(cluster):
        try:
            rid = cluster.leader()
        except Exception:  # noqa: BLE001 - fall back on the replicas' own view
            rid = None
        if rid is None or not cluster.processes[f"order{rid}"].running():
            rid = find_leader(cluster)
        return f"order{rid}" if rid is not None else "order3"

    @staticmethod
    def log(msg):
        print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # -- scenarios ---------------------------------------------------------------------

    def test_no_fault(self):
        self.run_scenario("no-fault", lambda cluster, rng: None)

    def test_leader_sigkill(self):
        def fault(cluster, rng):
            time.sleep(rng.uniform(2.0, 4.0))
            victim = self.leader(cluster)
            self.log(f"SIGKILL leader {victim}")
            cluster.kill_process(victim)
            time.sleep(rng.uniform(1.0, 2.0))
            cluster.start_process(victim)
            self.log(f"{victim} back")
        self.run_scenario("leader-kill", fault)

    def test_leader_sigstop(self):
        def fault(cluster, rng):
            time.sleep(rng.uniform(2.0, 4.0))
            victim = self.leader(cluster)
            self.log(f"SIGSTOP leader {victim} for 3 s")
            cluster.pause_process(victim)
            try:
                time.sleep(3.0)
            finally:
                cluster.resume_process(victim)
            self.log(f"SIGCONT {victim}")
        self.run_scenario("leader-stop", fault)

    def test_catalog_sigkill(self):
        def fault(cluster, rng):
            for _ in range(2):
                time.sleep(rng.uniform(1.5, 3.0))
                self.log("SIGKILL catalog")
                cluster.kill_process("catalog")
                time.sleep(rng.uniform(0.3, 1.5))
                cluster.start_process("catalog")
                self.log("catalog back")
        self.run_scenario("catalog-kill", fault)

    def test_catalog_sigstop(self):
        """The catalog hangs for 3 s with a batch in hand: the leader's exchange times out and
        is retried while the catalog may still execute the first one when it wakes."""
        def fault(cluster, rng):
            time.sleep(rng.uniform(2.0, 4.0))
            self.log("SIGSTOP catalog for 3 s")
            cluster.pause_process("catalog")
            try:
                time.sleep(3.0)
            finally:
                cluster.resume_process("catalog")
            self.log("SIGCONT catalog")
        self.run_scenario("catalog-stop", fault)

    def test_followers_down_then_leader_dies(self):
        """Both followers die, the leader goes on taking trades it cannot commit (the catalog
        has applied them, clients may query their numbers), then dies too. Everything stays
        down longer than the front-end's 8 s of retries, so clients without a key get 503 and
        nobody retries their trades; the followers come back first and elect a leader without
        the old leader's uncommitted entries; the old leader returns last."""
        def fault(cluster, rng):
            time.sleep(rng.uniform(2.0, 3.0))
            leader = self.leader(cluster)
            followers = [f"order{rid}" for rid in cluster.replica_ids() if f"order{rid}" != leader]
            self.log(f"SIGKILL followers {followers} (leader {leader})")
            for name in followers:
                cluster.kill_process(name)
            time.sleep(rng.uniform(0.7, 1.5))  # trades reach the catalog, cannot commit
            self.log(f"SIGKILL leader {leader} with trades in flight")
            cluster.kill_process(leader)
            time.sleep(rng.uniform(8.5, 9.5))  # past the front-end's retries
            for name in followers:
                cluster.start_process(name, wait=False)
            for name in followers:
                cluster.wait_ready(name, timeout=scaled(30))
            self.log(f"followers {followers} back")
            time.sleep(rng.uniform(1.0, 2.0))
            cluster.start_process(leader)
            self.log(f"old leader {leader} back")
        self.run_scenario("followers-then-leader", fault)


# ---------------------------------------------------------------------------------------
# The checker against hand-made histories
# ---------------------------------------------------------------------------------------


def op(client, seq, kind, req, start, end, status, data=None):
    o = Op(client, seq, kind, req, start)
    o.end, o.status, o.data, o.attempts = end, status, data, 1
    return o


def trade(client, seq, name, kind, qty, start, end, status, number=None, key=None):
    data = {"transaction_number": number} if status == 200 else None
    return op(client, seq, "trade", {"name": name, "type": kind, "quantity": qty, "key": key},
              start, end, status, data)


def lookup(client, seq, name, start, end, qty):
    return op(client, seq, "lookup", {"name": name}, start, end, 200,
              {"name": name, "price": 1.0, "quantity": qty})


def query(client, seq, number, start, end, status, name=None, kind=None, qty=None):
    data = ({"number": number, "name": name, "type": kind, "quantity": qty}
            if status == 200 else None)
    return op(client, seq, "query", {"number": number}, start, end, status, data)


def row(number, name, kind, qty, rid=None):
    return {"number": number, "name": name, "type": kind, "quantity": qty,
            "request_id": rid or f"r:{number:032x}", "epoch": 1}


def final(rows, catalog, applied=None):
    return Final(rows, {1: rows}, catalog, dict(catalog), applied)


class CheckerSelfTest(unittest.TestCase):
    """Each anomaly of issue 9, as a tiny history, must be reported; a clean one must not."""

    INITIAL = {"Alpha": 4, "Beta": 5}

    def categories(self, ops, fin):
        found = find_history_violations(ops, self.INITIAL, fin, t0=0.0)
        return {v.split(")")[0].lstrip("(") for v in found}, found

    def test_clean_history_passes(self):
        ops = [trade(0, 0, "Alpha", "buy", 3, 1.0, 1.1, 200, 0),
               lookup(0, 1, "Alpha", 1.2, 1.3, 1),
               trade(1, 0, "Alpha", "buy", 3, 1.5, 1.6, 409),
               lookup(1, 1, "Alpha", 1.7, 1.8, 1),
               trade(1, 2, "Alpha", "sell", 2, 2.0, 2.1, 200, 1),
               query(0, 2, 1, 2.2, 2.3, 200, "Alpha", "sell", 2),
               query(0, 3, 2, 2.2, 2.3, 404)]
        fin = final([row(0, "Alpha", "buy", 3), row(1, "Alpha", "sell", 2)],
                    {"Alpha": 3, "Beta": 5})
        cats, found = self.categories(ops, fin)
        self.assertEqual(found, [])

    def test_a_numbers_not_in_execution_order(self):
        # Alpha 4: #0 buy 1, #1 buy 3 applied as #1 then #0; #1 acked before #0 was sent.
        ops = [trade(0, 0, "Alpha", "buy", 3, 1.0, 1.1, 200, 1),
               trade(1, 0, "Alpha", "buy", 1, 1.2, 1.3, 200, 0)]
        fin = final([row(0, "Alpha", "buy", 1), row(1, "Alpha", "buy", 3)],
                    {"Alpha": 0, "Beta": 5})
        cats, found = self.categories(ops, fin)
        self.assertIn("a real-time", cats, found)
        # and the replay by number: 4 -1 = 3, -3 = 0 is fine here; make it go below zero
        fin2 = final([row(0, "Alpha", "buy", 2), row(1, "Alpha", "buy", 3), row(2, "Alpha",
                      "sell", 1)], {"Alpha": 0, "Beta": 5})
        cats, found = self.categories([], fin2)
        self.assertIn("b replay", cats, found)

    def test_b_stale_lookup_after_409(self):
        # Alpha 4; someone else buys 2 (#0); this client's buy 3 gets 409 (so Alpha < 3); its
        # next lookup answers 4, the state before #0.
        ops = [trade(1, 0, "Alpha", "buy", 2, 1.0, 1.1, 200, 0),
               trade(0, 0, "Alpha", "buy", 3, 1.5, 1.6, 409),
               lookup(0, 1, "Alpha", 1.7, 1.8, 4)]
        fin = final([row(0, "Alpha", "buy", 2)], {"Alpha": 2, "Beta": 5})
        cats, found = self.categories(ops, fin)
        self.assertIn("d monotonic", cats, found)

    def test_b_stale_lookup_after_own_trade(self):
        ops = [trade(0, 0, "Beta", "buy", 1, 1.0, 1.1, 200, 0),
               lookup(0, 1, "Beta", 1.2, 1.3, 5)]
        fin = final([row(0, "Beta", "buy", 1)], {"Alpha": 4, "Beta": 4})
        cats, found = self.categories(ops, fin)
        self.assertIn("d monotonic", cats, found)

    def test_unexplained_409(self):
        ops = [trade(0, 0, "Beta", "buy", 2, 1.0, 1.1, 409)]
        fin = final([], {"Alpha": 4, "Beta": 5})
        cats, found = self.categories(ops, fin)
        self.assertIn("d monotonic", cats, found)

    def test_c_orphaned_trade(self):
        # The catalog applied r:x but the log never got it: replay ends off, and it is an orphan.
        fin = final([row(0, "Alpha", "buy", 1, "r:a")], {"Alpha": 1, "Beta": 5},
                    applied={"r:a": True, "r:x": True, "r:refused": False})
        ops = [trade(2, 0, "Alpha", "buy", 1, 1.0, 1.1, 200, 0),
               trade(2, 1, "Alpha", "buy", 2, 1.2, 9.0, 503)]
        cats, found = self.categories(ops, fin)
        self.assertIn("e conservation", cats, found)
        self.assertIn("b replay", cats, found)

    def test_d_query_answer_later_replaced(self):
        ops = [query(0, 0, 1, 1.0, 1.1, 200, "Alpha", "sell", 2),
               trade(1, 0, "Beta", "buy", 1, 1.2, 1.3, 200, 1)]
        fin = final([row(0, "Alpha", "buy", 1), row(1, "Beta", "buy", 1)],
                    {"Alpha": 3, "Beta": 4})
        cats, found = self.categories(ops, fin)
        self.assertIn("c queries", cats, found)

    def test_404_for_a_committed_number(self):
        ops = [trade(1, 0, "Beta", "buy", 1, 1.0, 1.1, 200, 1),
               query(0, 0, 0, 1.2, 1.3, 404)]
        fin = final([row(0, "Alpha", "buy", 1), row(1, "Beta", "buy", 1)],
                    {"Alpha": 3, "Beta": 4})
        cats, found = self.categories(ops, fin)
        self.assertIn("c queries", cats, found)

    def test_unacknowledged_phantom(self):
        # An order in the log that no client was told about and no unknown outcome explains.
        ops = [trade(0, 0, "Alpha", "buy", 1, 1.0, 1.1, 200, 0)]
        fin = final([row(0, "Alpha", "buy", 1), row(1, "Alpha", "buy", 1)],
                    {"Alpha": 2, "Beta": 5})
        cats, found = self.categories(ops, fin)
        self.assertIn("e conservation", cats, found)


class _FakeCluster:
    """Just the files find_invariant_violations() reads: catalog.db and order-1.db."""

    def __init__(self, tmpdir):
        self.catalog_db = os.path.join(tmpdir, "catalog.db")
        self.tmpdir = tmpdir

    def order_db(self, rid):
        return os.path.join(self.tmpdir, f"order-{rid}.db")

    def replica_ids(self):
        return [1]


class HarnessSchemaTest(unittest.TestCase):
    """The invariant checks read catalog.db's `applied` in both schemas this project has had;
    a schema they cannot read would silently switch the orphan check off."""

    def make(self, journal):
        tmpdir = tempfile.mkdtemp(prefix="bazaar-history-schema-")
        self.addCleanup(shutil.rmtree, tmpdir, True)
        cat = sqlite3.connect(os.path.join(tmpdir, "catalog.db"))
        cat.execute("CREATE TABLE stocks(name TEXT PRIMARY KEY, price REAL, quantity INTEGER)")
        cat.execute("INSERT INTO stocks VALUES('Alpha', 1.0, 2)")
        if journal:
            cat.execute("CREATE TABLE applied(request_id TEXT PRIMARY KEY, name TEXT, type TEXT,"
                        " quantity INTEGER, outcome TEXT, result_quantity INTEGER,"
                        " version INTEGER, number INTEGER UNIQUE, created_ms INTEGER)")
            cat.executemany("INSERT INTO applied VALUES(?,?,?,?,?,?,?,?,0)", [
                ("k:bzt-a", "Alpha", "buy", 1, "applied", 3, 1, 0),
                ("k:bzt-b", "Alpha", "buy", 1, "applied", 2, 2, 1),
                ("k:bzt-c", "Alpha", "buy", 9, "refused", 2, 2, None)])
        else:
            cat.execute("CREATE TABLE applied(request_id TEXT PRIMARY KEY, name TEXT, type TEXT,"
                        " quantity INTEGER, status INTEGER, result_quantity INTEGER,"
                        " version INTEGER)")
            cat.executemany("INSERT INTO applied VALUES(?,?,?,?,?,?,?)", [
                ("k:bzt-a", "Alpha", "buy", 1, 0, 3, 1),
                ("k:bzt-b", "Alpha", "buy", 1, 0, 2, 2),
                ("k:bzt-c", "Alpha", "buy", 9, -7, 2, 2)])
        cat.commit()
        cat.close()
        log = sqlite3.connect(os.path.join(tmpdir, "order-1.db"))
        log.execute("CREATE TABLE orders(number INTEGER PRIMARY KEY, request_id TEXT UNIQUE,"
                    " name TEXT, type TEXT, quantity INTEGER, epoch INTEGER)")
        log.execute("INSERT INTO orders VALUES(0, 'k:bzt-a', 'Alpha', 'buy', 1, 1)")
        log.commit()
        log.close()
        return _FakeCluster(tmpdir)

    def check(self, journal):
        cluster = self.make(journal)
        acked = [AckedOrder(0, "bzt-a", "Alpha", "buy", 1, 0.0, 0.0)]
        found = find_invariant_violations(cluster, acked, {"Alpha": 4}, rejected_keys=["bzt-c"],
                                          unknown_keys=["bzt-b"], query=False)
        text = "\n".join(found)
        self.assertIn("'k:bzt-b' (outcome unknown to its client) but no order in the log", text)
        self.assertIn("initial + sells - buys over the log = 3, catalog.db has 2", text)
        self.assertNotIn("bzt-c", text)  # a refusal is no orphan
        return text

    def test_journal_schema(self):
        text = self.check(journal=True)
        self.assertIn("journal entry 1", text)

    def test_status_schema(self):
        self.check(journal=False)


if __name__ == "__main__":
    unittest.main(verbosity=2)
