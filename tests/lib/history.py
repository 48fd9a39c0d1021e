"""history.py - record what concurrent clients see through the public API, then check it.

A HistoryRecorder runs N client threads against one front-end, each on its own keep-alive
connection, doing lookups (GET /stocks/{name}), trades (POST /orders) and order queries
(GET /orders/{n}, including numbers just past the newest acknowledged one). Every logical call
is recorded as an Op: client id, kind, request, time.monotonic() at the first send and at the
final answer, the result (status and parsed body) and how many sends it took. Clients with an
Idempotency-Key re-send a trade after 503 or a transport failure with the same key until a
definite answer (as a real client would); clients without a key send a trade once, so a 503 or
a timeout leaves its outcome unknown.

find_history_violations() checks a recorded history against the final state of the cluster
(collect_final(), taken once the cluster is quiet): see its docstring for the exact list.
check_history() does both and raises AssertionError with the seed and an excerpt of the
history around every violation.

Python 3 standard library only; built on bazaar.py.
"""

import bisect
import http.client
import json
import random
import threading
import time
from collections import namedtuple

from bazaar import (AckedOrder, Trader, _key_of_request_id, _split_url, backoff_sleep, db_applied,
                    db_orders, join_threads, send_attempt,
                    db_quantities, find_invariant_violations, get, replay_log, scaled)


class Op:
    """One logical call of one client.

    kind: "lookup" (name), "trade" (name, type, quantity, key or None) or "query" (number).
    start/end: time.monotonic() of the first send and of the final answer (or of giving up).
    status: the final HTTP status, or None when no answer came (transport failure, timeout).
    data: the "data" object of a 200 reply, the parsed body otherwise (may be None).
    attempts: sends made (> 1 only for retries).
    """

    __slots__ = ("client", "seq", "kind", "req", "start", "end", "status", "data", "attempts")

    def __init__(self, client, seq, kind, req, start):
        self.client = client
        self.seq = seq
        self.kind = kind
        self.req = req
        self.start = start
        self.end = None
        self.status = None
        self.data = None
        self.attempts = 0

    @property
    def number(self):
        """The transaction number of a trade answered 200 (else None)."""
        if self.kind == "trade" and self.status == 200 and isinstance(self.data, dict):
            n = self.data.get("transaction_number")
            return n if isinstance(n, int) and not isinstance(n, bool) else None
        return None

    @property
    def outcome_unknown(self):
        """A trade whose effect nobody knows: no definite answer (200, 409 or another 4xx)."""
        return self.kind == "trade" and (self.status is None or self.status >= 500)

    def describe(self, t0):
        """One line for excerpts, times relative to t0."""
        span = f"[c{self.client} +{self.start - t0:7.3f}..+{self.end - t0:7.3f}]"
        if self.kind == "trade":
            r = self.req
            what = f"POST {r['type']} {r['name']} {r['quantity']}"
            what += f" key={r['key']}" if r["key"] else " (no key)"
            if self.status == 200:
                res = f"200 #{self.number}"
            else:
                res = str(self.status) if self.status is not None else "no answer"
        elif self.kind == "lookup":
            what = f"GET /stocks/{self.req['name']}"
            res = (f"200 quantity {self.data.get('quantity')}" if self.status == 200
                   and isinstance(self.data, dict) else str(self.status))
        else:
            what = f"GET /orders/{self.req['number']}"
            if self.status == 200 and isinstance(self.data, dict):
                d = self.data
                res = f"200 {d.get('type')} {d.get('name')} {d.get('quantity')}"
            else:
                res = str(self.status)
        tries = f" ({self.attempts} sends)" if self.attempts > 1 else ""
        return f"{span} {what} -> {res}{tries}"


class HistoryRecorder:
    """Client threads that record every call (see the module docstring).

    clients: number of threads; unkeyed: the set of client ids that send no Idempotency-Key;
    readers: client ids that never trade, only look up and query (so some queries go on while
    every trading client waits on a stuck trade, e.g. just past the last acknowledged number).
    stocks: names to trade; max_quantity: trades take 1..max_quantity shares; buy_p: share of
    buys. Decisions of client i follow only from (seed, i); how many calls happen depends on
    timing. Every call has a deadline (attempt_timeout per send, op_timeout per logical call).
    """

    KEY_PREFIX = Trader.KEY_PREFIX  # so that bazaar._key_of_request_id() finds our keys
    _tags = iter(range(1, 1 << 62))
    _tags_lock = threading.Lock()

    def __init__(self, url, stocks, seed, clients=8, unkeyed=(), readers=(), max_quantity=3,
                 buy_p=0.6,
                 attempt_timeout=10.0, op_timeout=30.0, pause=0.0):
        self.host, self.port, _ = _split_url(url)
        self.readers = set(readers)
        self.stocks = sorted(stocks)
        self.seed = seed
        self.nclients = clients
        self.unkeyed = set(unkeyed)
        self.max_quantity = max_quantity
        self.buy_p = buy_p
        self.attempt_timeout = scaled(attempt_timeout)
        self.op_timeout = scaled(op_timeout)
        self.pause = pause
        with HistoryRecorder._tags_lock:
            self.tag = next(HistoryRecorder._tags)
        self.lock = threading.Lock()
        self.max_acked = -1          # newest transaction number any client has seen acknowledged
        self.per_client = [[] for _ in range(clients)]
        self.harness_errors = []     # exceptions in client threads (a harness bug, must fail)
        self.t0 = None
        self._stop = threading.Event()
        self._threads = []

    # -- lifecycle -------------------------------------------------------------------

    def start(self):
        self.t0 = time.monotonic()
        for i in range(self.nclients):
            th = threading.Thread(target=self._run, args=(i,), name=f"history{self.tag}.{i}",
                                  daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self):
        """Stop after each client's current call (bounded by op_timeout) and join."""
        self._stop.set()
        join_threads(self._threads, self.op_timeout + scaled(15), "history clients still running")
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def ops(self):
        """Every recorded Op, sorted by start time."""
        return sorted((op for ops in self.per_client for op in ops), key=lambda o: o.start)

    def count(self, kind, status=None):
        return sum(1 for ops in self.per_client for op in ops
                   if op.kind == kind and (status is None or op.status == status))

    def summary(self):
        ops = self.ops()
        trades = [o for o in ops if o.kind == "trade"]
        return {"ops": len(ops), "trades": len(trades),
                "acked": sum(1 for o in trades if o.status == 200),
                "rejected": sum(1 for o in trades if o.status == 409),
                "unknown": sum(1 for o in trades if o.outcome_unknown),
                "lookups": sum(1 for o in ops if o.kind == "lookup"),
                "queries": sum(1 for o in ops if o.kind == "query"),
                "retried": sum(1 for o in ops if o.attempts > 1)}

    # -- one client --------------------------------------------------------------------

    def _run(self, cid):
        rng = random.Random(f"{self.seed}/history/{cid}")
        jitter = random.Random(f"{self.seed}/history-jitter/{cid}")
        keyed = cid not in self.unkeyed
        conn = [None]
        seq = 0
        follow = None  # a stock to look up next (right after a trade on it)
        try:
            while not self._stop.is_set():
                r = rng.random()
                if follow is not None and r < 0.8:
                    op = self._lookup(conn, jitter, cid, seq, follow)
                    follow = None
                elif r < 0.45 and cid not in self.readers:
                    name = rng.choice(self.stocks)
                    kind = "buy" if rng.random() < self.buy_p else "sell"
                    qty = rng.randint(1, self.max_quantity)
                    key = f"{self.KEY_PREFIX}-h{self.tag}-{cid}-{seq:07d}" if keyed else None
                    op = self._trade(conn, jitter, cid, seq, name, kind, qty, key)
                    follow = name if op.status in (200, 409) else None
                elif r < (0.6 if cid in self.readers else 0.8):
                    op = self._lookup(conn, jitter, cid, seq, rng.choice(self.stocks))
                else:
                    op = self._query(conn, jitter, cid, seq, self._pick_number(rng, cid))
                self.per_client[cid].append(op)
                seq += 1
                if self.pause:
                    self._stop.wait(self.pause)
        except Exception as exc:  # noqa: BLE001 - a harness bug must show up, not hang
            with self.lock:
                self.harness_errors.append(f"client {cid}: {type(exc).__name__}: {exc}")
        finally:
            if conn[0] is not None:
                conn[0].close()

    def _pick_number(self, rng, cid):
        """A number to query: often just around (and past) the newest acknowledged one, where an
        uncommitted entry could be served; sometimes the client's own last order or any."""
        with self.lock:
            top = self.max_acked
        mine = [o.number for o in reversed(self.per_client[cid][-20:]) if o.number is not None]
        u = rng.random()
        if mine and u < 0.2:
            return mine[0]
        if top < 0 or u < 0.85:
            return max(top + rng.randint(-2, 3), 0)
        return rng.randint(0, top)

    def _send(self, conn, method, path, body=None, headers=None):
        """One send: (status, parsed body) or (None, cause) on a transport failure."""
        status, parsed, _ = send_attempt(conn, self.host, self.port, self.attempt_timeout, method,
                                         path, body, headers)
        return status, parsed

    @staticmethod
    def _data(parsed):
        if isinstance(parsed, dict) and isinstance(parsed.get("data"), (dict, list)):
            return parsed["data"]
        return parsed

    def _until_definite(self, conn, jitter, op, method, path, body=None, headers=None,
                        retry=True):
        """Send until an answer other than 503 (or once when retry is False), within op_timeout."""
        deadline = op.start + self.op_timeout
        while True:
            op.attempts += 1
            status, parsed = self._send(conn, method, path, body, headers)
            op.end = time.monotonic()
            op.status, op.data = status, self._data(parsed) if status is not None else parsed
            if not retry or (status is not None and status != 503) or op.end >= deadline:
                return op
            backoff_sleep(jitter, op.attempts)

    def _trade(self, conn, jitter, cid, seq, name, kind, qty, key):
        op = Op(cid, seq, "trade", {"name": name, "type": kind, "quantity": qty, "key": key},
                time.monotonic())
        body = json.dumps({"name": name, "type": kind, "quantity": qty}).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        self._until_definite(conn, jitter, op, "POST", "/orders", body, headers, retry=bool(key))
        n = op.number
        if n is not None:
            with self.lock:
                self.max_acked = max(self.max_acked, n)
        return op

    def _lookup(self, conn, jitter, cid, seq, name):
        op = Op(cid, seq, "lookup", {"name": name}, time.monotonic())
        return self._until_definite(conn, jitter, op, "GET", f"/stocks/{name}")

    def _query(self, conn, jitter, cid, seq, number):
        op = Op(cid, seq, "query", {"number": number}, time.monotonic())
        return self._until_definite(conn, jitter, op, "GET", f"/orders/{number}")


# ---------------------------------------------------------------------------------------
# The final state
# ---------------------------------------------------------------------------------------

Final = namedtuple("Final", "log replica_logs catalog lookups applied applied_rows",
                   defaults=(None,))
Final.__doc__ = """The cluster once quiet: log (rows of one replica, by number), replica_logs
({id: rows}), catalog ({name: quantity} from catalog.db), lookups ({name: quantity} through the
front-end, None when it failed), applied ({request_id: True when the catalog applied it, False
when it refused it}, from bazaar.db_applied(); None without such a table) and applied_rows (the applied trades with their catalog version,
in version order, when catalog.db records versions; else None)."""


def collect_final(cluster, replica_ids=None, lookup_timeout=5.0):
    """Read the final state of a quiet cluster (after wait_replicas_idle).

    The front-end lookups are polled until they equal catalog.db or lookup_timeout (scaled)
    passes: an invalidation push may still be on its way when the cluster turns idle.
    """
    ids = list(replica_ids or cluster.replica_ids())
    logs = {rid: db_orders(cluster, rid) for rid in ids}
    catalog = db_quantities(cluster)
    deadline = time.monotonic() + scaled(lookup_timeout)
    while True:
        lookups = {}
        for name in catalog:
            try:
                reply = get(cluster.frontend_url(f"/stocks/{name}"))
                data = reply.json.get("data") if isinstance(reply.json, dict) else None
                lookups[name] = data.get("quantity") if reply.status == 200 and data else None
            except (OSError, http.client.HTTPException):
                lookups[name] = None
        if lookups == catalog or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    recorded = db_applied(cluster)
    applied = applied_rows = None
    if recorded is not None:
        applied = {a["request_id"]: a["applied"] for a in recorded}
        if all(a["version"] is not None for a in recorded):
            applied_rows = sorted((a for a in recorded if a["applied"]),
                                  key=lambda a: a["version"])
    return Final(logs[ids[0]], logs, catalog, lookups, applied, applied_rows)


# ---------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------


class _StockStates:
    """The states of one stock: quantity after the k-th trade naming it (k = 0 is the initial
    quantity), which transaction number produced each state and a label for excerpts."""

    def __init__(self, initial):
        self.qty = [initial]
        self.labels = [f"initial {initial}"]
        self.index_of = {}  # transaction number -> k

    def add(self, number, kind, quantity, label):
        q = self.qty[-1] + (quantity if kind == "sell" else -quantity)
        self.qty.append(q)
        self.labels.append(f"{label} {kind} {quantity} -> {q}")
        if number is not None:
            self.index_of[number] = len(self.qty) - 1

    @property
    def last(self):
        return len(self.qty) - 1

    def first(self, lo, hi, pred):
        """The smallest k in [lo, hi] with pred(qty[k]), else None."""
        for k in range(max(lo, 0), min(hi, self.last) + 1):
            if pred(self.qty[k]):
                return k
        return None

    def excerpt(self, lo, hi, width=3):
        lo, hi = max(lo - width, 0), min(hi + width, self.last)
        parts = [f"k{k} {self.labels[k]}" for k in range(lo, hi + 1)]
        return "; ".join(parts) + (" ..." if hi < self.last else "")


class _Bounds:
    """Per stock, real-time bounds on which state a call could have seen.

    lower(t): the highest state index produced by a trade acknowledged before t (any client):
    the catalog had executed it by then. upper(t): the highest index a call ending at t can
    have seen: the state before the first trade (whose number we know) that was first sent
    after t.
    """

    def __init__(self, states):
        self.states = states
        self._ends, self._end_max = {}, {}
        self._starts, self._start_min = {}, {}

    def build(self, known):
        """known: {name: [(start, end_or_None, k)]} of trades whose state index is known."""
        for name, items in known.items():
            acked = sorted((e, k) for s, e, k in items if e is not None)
            self._ends[name] = [e for e, _ in acked]
            best, prefix = 0, []
            for _, k in acked:
                best = max(best, k)
                prefix.append(best)
            self._end_max[name] = prefix
            started = sorted((s, k) for s, e, k in items)
            self._starts[name] = [s for s, _ in started]
            suffix, low = [], None
            for _, k in reversed(started):
                low = k if low is None else min(low, k)
                suffix.append(low)
            self._start_min[name] = list(reversed(suffix))

    def lower(self, name, t):
        ends = self._ends.get(name, [])
        i = bisect.bisect_left(ends, t)
        return self._end_max[name][i - 1] if i > 0 else 0

    def upper(self, name, t):
        starts = self._starts.get(name, [])
        i = bisect.bisect_right(starts, t)
        if i < len(starts):
            return self._start_min[name][i] - 1
        return self.states[name].last


def find_history_violations(ops, initial, final, t0=None, limit=5, states_from="log"):
    """Check a recorded history (list of Op) against the final state. initial is {name:
    quantity} or {name: (price, quantity)}. Returns a list of violations, each a string with
    an excerpt of the history. The checks:

    (a) Real-time order of numbers. If trade X was acknowledged (its final answer arrived)
        before trade Y was first sent, X's number is smaller than Y's.
    (b) Replay. The final log replayed by number from the initial catalog never takes a
        quantity below zero, and ends equal to catalog.db and to GET /stocks/{name}.
    (c) Queries. Every acknowledged trade is in the final log at its number with its name, type,
        quantity (and key, for a keyed client). Every GET /orders/{n} that answered 200 during
        the run names the order the final log holds at n (an answer later replaced is an
        uncommitted read). A 404 for n is a violation when a trade numbered n or higher had
        been acknowledged before the query was sent (n was committed by then).
    (d) Monotonic reads per client, precisely. For each stock the final log defines a state
        sequence S_0 (initial), S_1, ... (S_k: quantity after the k-th log entry naming that
        stock). Each client keeps, per stock, a floor F: the lowest state index its next
        lookup may show. Walking the client's calls in order:
          - a trade answered 200 with number n at index k sets F = max(F, k) (read-your-writes);
          - a buy of q answered 409 was decided on some state j with S_j < q, and j is at least
            L = max(F, lower(start)) and at most upper(end) (see _Bounds: lower is the newest
            state acknowledged to anyone before the call began, upper the last state before any
            trade first sent after the call ended). If no such j exists the 409 itself is
            unexplained (a violation); else F = max(F, the smallest such j), since the front-end
            drops the entry on a 409 and the next lookup reads the catalog after the decision;
          - a lookup answering Q must match some j in [F, upper(end)] with S_j == Q, else it
            is older than what this client already observed (a violation); F becomes the
            smallest such j (the true state is at least that).
        Other clients' trades acknowledged before a lookup are NOT required to be visible (the
        cache lags the catalog by the push); only the client's own observations bind.
        states_from="catalog" takes the state sequence from the catalog's own execution order
        (applied.version, where catalog.db has it) instead of the log: a diagnostic that
        separates stale lookups from misnumbered logs when numbers are not execution order.
    (e) Conservation and agreement. Every replica's orders table is identical; numbers run
        0..n-1 without gaps; no request id twice; initial + sells - buys over the log equals
        catalog.db; every trade the catalog applied (applied.status = 0) is in the log (none
        orphaned, whether or not its client retried); no 409'd keyed trade is in the log; log
        entries from unkeyed clients that nobody was told a number for are at most the
        unkeyed trades whose outcome is unknown.
    """
    t0 = min((o.start for o in ops), default=0.0) if t0 is None else t0
    out = []
    counts = {}

    def bad(category, msg):
        counts[category] = counts.get(category, 0) + 1
        if counts[category] <= limit:
            out.append(f"({category}) {msg}")

    log = final.log
    by_number = {r["number"]: r for r in log}
    by_client = {}
    for o in ops:
        by_client.setdefault(o.client, []).append(o)
    for lst in by_client.values():
        lst.sort(key=lambda o: o.seq)

    def client_excerpt(op, before=6):
        lst = by_client[op.client]
        i = lst.index(op)
        return "\n      " + "\n      ".join(o.describe(t0) for o in lst[max(i - before, 0):i + 1])

    # (b) replay, and the state sequence of every stock.
    _, replay_bad = replay_log(log, initial, limit=limit)
    for v in replay_bad:
        bad("b replay", v)
    init = {name: (q[1] if isinstance(q, tuple) else q) for name, q in initial.items()}
    states = {name: _StockStates(q) for name, q in init.items()}
    for r in log:
        if r["name"] in states:
            states[r["name"]].add(r["number"], r["type"], r["quantity"], f"#{r['number']}")
    for name, st in states.items():
        if st.qty[-1] != final.catalog.get(name):
            bad("b replay", f"{name}: the log replayed by number ends at {st.qty[-1]}, catalog.db"
                f" has {final.catalog.get(name)}")
        if final.lookups.get(name) != final.catalog.get(name):
            bad("b replay", f"{name}: GET /stocks/{name} says {final.lookups.get(name)} once"
                f" quiet, catalog.db has {final.catalog.get(name)}")

    trades = [o for o in ops if o.kind == "trade"]
    acked = [o for o in trades if o.number is not None]

    # (a) real-time order: sweep by start over acknowledgements sorted by end.
    by_end = sorted(acked, key=lambda o: o.end)
    best = None  # the acknowledged trade with the highest number among those ended so far
    i = 0
    for y in sorted(acked, key=lambda o: o.start):
        while i < len(by_end) and by_end[i].end < y.start:
            if best is None or by_end[i].number > best.number:
                best = by_end[i]
            i += 1
        if best is not None and best.number > y.number:
            bad("a real-time", f"#{best.number} was acknowledged at +{best.end - t0:.3f} before"
                f" #{y.number} was sent at +{y.start - t0:.3f}, yet has the larger number\n      "
                f"{best.describe(t0)}\n      {y.describe(t0)}")

    # (c) acknowledged trades in the log, and every query answer.
    key_of_number = {}
    for o in acked:
        r = by_number.get(o.number)
        want = (o.req["name"], o.req["type"], o.req["quantity"])
        if r is None:
            bad("c queries", f"acknowledged #{o.number} is not in the final log\n      "
                f"{o.describe(t0)}")
            continue
        got = (r["name"], r["type"], r["quantity"])
        rid = r.get("request_id")
        key_ok = o.req["key"] is None or _key_of_request_id(rid) == o.req["key"]
        if got != want or not key_ok:
            bad("c queries", f"acknowledged #{o.number} was {want} key {o.req['key']}; the log"
                f" holds {got} request_id {rid!r}\n      {o.describe(t0)}")
        key_of_number[o.number] = o
    ack_ends = sorted((o.end, o.number) for o in acked)
    ack_end_times = [e for e, _ in ack_ends]
    ack_end_max, top = [], -1
    for _, n in ack_ends:
        top = max(top, n)
        ack_end_max.append(top)
    for q in (o for o in ops if o.kind == "query"):
        n = q.req["number"]
        if q.status == 200:
            d = q.data if isinstance(q.data, dict) else {}
            got = (d.get("number"), d.get("name"), d.get("type"), d.get("quantity"))
            r = by_number.get(n)
            want = (n, r["name"], r["type"], r["quantity"]) if r else None
            if got != want:
                bad("c queries", f"GET /orders/{n} answered {got[1:]} but number {n} finally holds"
                    f" {want[1:] if want else 'nothing'}{client_excerpt(q)}")
        elif q.status == 404:
            j = bisect.bisect_left(ack_end_times, q.start)
            if j > 0 and ack_end_max[j - 1] >= n:
                bad("c queries", f"GET /orders/{n} answered 404 although #{ack_end_max[j - 1]}"
                    f" had been acknowledged before it was sent{client_excerpt(q)}")

    # (d) monotonic reads per client.
    if states_from == "catalog":
        if final.applied_rows is None:
            raise ValueError("states_from='catalog' needs catalog.db's applied versions")
        number_of_rid = {r.get("request_id"): r["number"] for r in log}
        states = {name: _StockStates(q) for name, q in init.items()}
        for a in final.applied_rows:
            if a["name"] in states:
                n = number_of_rid.get(a["request_id"])
                label = f"v{a['version']} " + (f"#{n}" if n is not None else "(not in log)")
                states[a["name"]].add(n, a["type"], a["quantity"], label)
    number_of_key = {_key_of_request_id(r.get("request_id")): r["number"] for r in log}
    number_of_key.pop(None, None)
    known = {}
    for o in trades:
        n = o.number
        if n is None and o.req["key"]:
            n = number_of_key.get(o.req["key"])
        st = states.get(o.req["name"])
        if n is None or st is None or n not in st.index_of:
            continue
        end = o.end if o.status == 200 else None  # only an answer tells anyone it happened
        known.setdefault(o.req["name"], []).append((o.start, end, st.index_of[n]))
    bounds = _Bounds(states)
    bounds.build(known)
    for cid, lst in sorted(by_client.items()):
        floor = {name: 0 for name in states}
        for o in lst:
            name = o.req.get("name")
            st = states.get(name)
            if o.kind == "trade" and st is not None:
                if o.status == 200 and o.number in st.index_of:
                    floor[name] = max(floor[name], st.index_of[o.number])
                elif o.status == 409 and o.req["type"] == "buy":
                    lo = max(floor[name], bounds.lower(name, o.start))
                    hi = bounds.upper(name, o.end)
                    q = o.req["quantity"]
                    j = st.first(lo, hi, lambda x, q=q: x < q)
                    if j is None:
                        bad("d monotonic", f"buy {name} {q} answered 409, but every state it could"
                            f" have seen (k{lo}..k{hi}) holds at least {q}: "
                            f"{st.excerpt(lo, hi)}{client_excerpt(o)}")
                    else:
                        floor[name] = max(floor[name], j)
            elif o.kind == "lookup" and o.status == 200 and st is not None:
                got = o.data.get("quantity") if isinstance(o.data, dict) else None
                hi = bounds.upper(name, o.end)
                j = st.first(floor[name], hi, lambda x, got=got: x == got)
                if j is None:
                    older = st.first(0, floor[name] - 1, lambda x, got=got: x == got)
                    why = (f"an older state (k{older})" if older is not None
                           else "no state of the log")
                    bad("d monotonic", f"lookup of {name} answered {got}: {why}; this client had"
                        f" already observed state k{floor[name]} (possible k{floor[name]}..k{hi}):"
                        f" {st.excerpt(floor[name], hi)}{client_excerpt(o)}")
                else:
                    floor[name] = j

    # (e) conservation and agreement: the harness check, plus orphans and unkeyed phantoms.
    for v in _cluster_checks(ops, initial, final, limit):
        bad("e conservation", v)

    for category, n in sorted(counts.items()):
        if n > limit:
            out.append(f"({category}) ... {n} violations of this kind in all")
    return out


def _cluster_checks(ops, initial, final, limit):
    """(e): orphans and unkeyed phantoms; find_invariant_violations() runs separately against
    the live cluster (it queries the front-end) in check_history()."""
    out = []
    logged = {r.get("request_id") for r in final.log}
    if final.applied is not None:
        orphans = sorted(rid for rid, done in final.applied.items()
                         if done and rid not in logged)
        for rid in orphans[:limit]:
            out.append(f"the catalog applied request {rid!r} but no order in the log has it"
                       f" (an orphaned trade)")
        if len(orphans) > limit:
            out.append(f"... {len(orphans)} orphaned trades in all")
    trades = [o for o in ops if o.kind == "trade"]
    acked_numbers = {o.number for o in trades if o.number is not None}
    keys = {o.req["key"] for o in trades if o.req["key"]}
    unclaimed = [r for r in final.log if r["number"] not in acked_numbers
                 and _key_of_request_id(r.get("request_id")) not in keys]
    unkeyed_unknown = sum(1 for o in trades if o.req["key"] is None and o.outcome_unknown)
    if len(unclaimed) > unkeyed_unknown:
        sample = ", ".join(f"#{r['number']} {r['type']} {r['name']} {r['quantity']}"
                           f" ({r.get('request_id')})" for r in unclaimed[:limit])
        out.append(f"{len(unclaimed)} logged orders were never acknowledged and are no keyed"
                   f" client's, but only {unkeyed_unknown} unkeyed trades had an unknown"
                   f" outcome: {sample}")
    return out


def check_history(cluster, recorder, seed, replica_ids=None, what="history", states_from="log"):
    """Collect the final state of a quiet cluster and check the recorder's history against it
    (find_history_violations) and against the SPEC §3 invariants (find_invariant_violations).
    Raises AssertionError with the seed and every violation; returns a summary otherwise."""
    if recorder.harness_errors:
        raise AssertionError(f"seed={seed}: history client errors: {recorder.harness_errors}")
    ops = recorder.ops()
    final = collect_final(cluster, replica_ids)
    violations = find_history_violations(ops, cluster.initial_stocks, final, t0=recorder.t0,
                                         states_from=states_from)
    trades = [o for o in ops if o.kind == "trade"]
    acked = [AckedOrder(o.number, o.req["key"], o.req["name"], o.req["type"], o.req["quantity"],
                        o.end - o.start, o.end) for o in trades if o.number is not None]
    rejected = [o.req["key"] for o in trades if o.status == 409 and o.req["key"]]
    unknown = [o.req["key"] for o in trades if o.req["key"] and o.outcome_unknown]
    if any(o.req["key"] is None for o in trades):
        unknown.append(None)  # unkeyed entries are counted by find_history_violations (e)
    for v in find_invariant_violations(cluster, acked, cluster.initial_stocks,
                                       replica_ids=replica_ids, rejected_keys=rejected,
                                       unknown_keys=unknown):
        violations.append(f"(e conservation) {v}")
    summary = recorder.summary()
    summary["log"] = len(final.log)
    if violations:
        # The headlines again at the end: CI keeps the tail of long output.
        heads = "\n  ".join(v.split("\n", 1)[0][:300] for v in violations)
        raise AssertionError(f"{what}: seed={seed}: {len(violations)} violations"
                             f" (history {summary}):\n  " + "\n  ".join(violations)
                             + f"\nin short ({what}, seed={seed}):\n  {heads}")
    return summary
