"""bazaar.py - test harness for Stock Bazaar integration, fault and benchmark tests.

Starts real service binaries on free loopback ports, talks HTTP to them and
reads their SQLite files. Python 3 standard library only.

What it gives you:
  - free_port(), Cluster (config, start/stop/kill/restart, readiness, logs)
  - HTTP helpers with keep-alive and a timeout on every call: get(), post_json(), ...
  - raw_request()/raw_exchange() over a plain socket, for hostile input
  - db_quantities(), db_stocks(), db_orders(), db_applied(): read-only views of the databases
  - wait_for(): the only place a test may sleep (bounded polling)
  - wait_stable(): bounded polling until a value stops changing (quiescence)
  - parse_metrics(), Cluster.metrics()/metric(): Prometheus /metrics as numbers
  - test_seed(): reproducible randomness
  - ClusterTestCase: a unittest base class with one cluster per class
  - Trader: threads of seeded client traffic with Idempotency-Key retries (replication, fault)
  - replica_state(), find_leader(), wait_replicas_idle(): order replicas' /state
  - check_invariants() / find_invariant_violations(): the SPEC §3 invariants after faults
  - replay_log(): the log replayed by number from the initial catalog (never below zero)
  - Cluster.pause_process()/resume_process(): SIGSTOP/SIGCONT (a hung process)

What it is not: a client library for production use, nor a launcher (`bazaar up`).

Environment:
  BAZAAR_BIN_DIR            directory with the executables (default <repo>/build/bin)
  BAZAAR_TEST_TIMEOUT_MULT  multiplies every timeout (slow machines, sanitizers)
  BAZAAR_SEED               seed for test_seed()
  BAZAAR_KEEP_TMP           keep temp dirs of passing test classes too
"""

import atexit
import csv
import ctypes
import http.client
import io
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
from collections import namedtuple

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_SECRET = "test-secret"
SECRET_HEADER = "X-Bazaar-Secret"

# ---------------------------------------------------------------------------
# Timeouts and polling
# ---------------------------------------------------------------------------


def timeout_mult():
    """The factor from BAZAAR_TEST_TIMEOUT_MULT (1.0 when unset or invalid)."""
    try:
        mult = float(os.environ.get("BAZAAR_TEST_TIMEOUT_MULT", "1"))
    except ValueError:
        return 1.0
    return mult if mult > 0 else 1.0


def scaled(seconds):
    """A timeout in seconds, scaled by BAZAAR_TEST_TIMEOUT_MULT."""
    return seconds * timeout_mult()


HTTP_TIMEOUT = 10.0  # seconds, before scaling


def wait_for(cond, timeout=10.0, what="condition", interval=0.05):
    """Poll cond() until it returns a truthy value and return that value.

    timeout is scaled by BAZAAR_TEST_TIMEOUT_MULT. Exceptions from cond count as
    "not yet"; the last one is quoted in the AssertionError raised on timeout.
    """
    deadline = time.monotonic() + scaled(timeout)
    last_error = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {scaled(timeout):.1f}s waiting for {what}{detail}")
        time.sleep(interval)


def wait_stable(value, still=0.5, timeout=10.0, what="value", interval=0.05):
    """Poll value() until it returns the same thing for `still` seconds, and return it.

    Both durations are scaled by BAZAAR_TEST_TIMEOUT_MULT. Exceptions from value
    reset the stillness clock. Raises AssertionError when the value is still
    moving (or failing) after timeout.
    """
    deadline = time.monotonic() + scaled(timeout)
    last, since, last_error = object(), None, None
    while True:
        now = time.monotonic()
        try:
            current = value()
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_error, since, last = exc, None, object()
        else:
            if since is None or current != last:
                last, since = current, now
            elif now - since >= scaled(still):
                return current
        if now >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else f" (last: {last!r})"
            raise AssertionError(f"{what} still changing after {scaled(timeout):.1f}s{detail}")
        time.sleep(interval)


def test_seed():
    """The seed for this run: BAZAAR_SEED or a fresh one. Printed as seed=N."""
    env = os.environ.get("BAZAAR_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(1, 2**31)
    print(f"seed={seed}", file=sys.stderr, flush=True)
    return seed


test_seed.__test__ = False  # not a test, whatever the name suggests to runners

# ---------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------

_PORT_LOW, _PORT_HIGH = 20000, 32000  # below the ephemeral range (32768-60999)
_ports_handed_out = set()
_ports_lock = threading.Lock()


def free_port(attempts=200):
    """A TCP port on 127.0.0.1 below 32768 that is free right now.

    Ports are bind-tested at random in 20000-32000 and never handed out twice
    by this process, so two services of one cluster cannot get the same port.
    """
    rng = random.SystemRandom()
    for _ in range(attempts):
        port = rng.randrange(_PORT_LOW, _PORT_HIGH)
        with _ports_lock:
            if port in _ports_handed_out:
                continue
            if _port_is_free(port):
                _ports_handed_out.add(port)
                return port
    raise RuntimeError(f"no free port found in {_PORT_LOW}-{_PORT_HIGH} after {attempts} attempts")


def _port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------
# HTTP over http.client, keep-alive per thread and per (host, port)
# ---------------------------------------------------------------------------

Reply = namedtuple("Reply", "status headers json body")
Reply.__doc__ = """One HTTP reply: status int, headers (case-insensitive .get), parsed JSON or None, raw bytes."""

_local = threading.local()


def _connection(host, port, timeout):
    """The keep-alive connection of this thread to host:port, and whether it is reused."""
    pool = _local.__dict__.setdefault("pool", {})
    conn = pool.get((host, port))
    if conn is not None:
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, True
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    pool[(host, port)] = conn
    return conn, False


def _drop_connection(host, port):
    conn = _local.__dict__.get("pool", {}).pop((host, port), None)
    if conn is not None:
        conn.close()


def close_connections():
    """Close every keep-alive connection of the calling thread."""
    for conn in _local.__dict__.pop("pool", {}).values():
        conn.close()


def _split_url(url):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// URL: {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.hostname, parts.port or 80, target


def _parse_json(body):
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def send_attempt(conn, host, port, timeout, method, path, body=None, headers=None):
    """One HTTP attempt on the keep-alive connection held in conn[0] (opened on demand, dropped
    after a failure or a Connection: close). Returns (status, parsed JSON or None, Retry-After)
    or (None, cause, None) on a transport failure, cause "timeout" or "conn:<exception>"."""
    if conn[0] is None:
        conn[0] = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn[0].request(method, path, body=body, headers=headers or {})
        resp = conn[0].getresponse()
        data = resp.read()
    except (socket.timeout, TimeoutError):
        conn[0].close()
        conn[0] = None
        return None, "timeout", None
    except (OSError, http.client.HTTPException) as exc:
        conn[0].close()
        conn[0] = None
        return None, f"conn:{type(exc).__name__}", None
    if resp.will_close:
        conn[0].close()
        conn[0] = None
    return resp.status, _parse_json(data), resp.headers.get("Retry-After")


def backoff_sleep(jitter, attempt):
    """Sleeps before retry number `attempt`: 50 ms doubling up to 0.5 s, jittered by half."""
    time.sleep(min(0.05 * (2 ** min(attempt, 4)), 0.5) * (0.5 + jitter.random()))


# Errors that mean a reused keep-alive connection was closed by the server while idle.
_STALE_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def request(method, url, body=None, headers=None, timeout=None, retry_stale=True):
    """Send one request to an absolute http:// URL and return a Reply.

    The path is sent exactly as given (no normalisation or re-quoting). When a
    reused keep-alive connection turns out to have been closed by the server
    (idle timeout), the request is sent once more on a fresh connection; pass
    retry_stale=False where even that must not happen.
    """
    host, port, target = _split_url(url)
    timeout = scaled(HTTP_TIMEOUT) if timeout is None else timeout
    headers = dict(headers or {})
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    while True:
        conn, reused = _connection(host, port, timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except _STALE_ERRORS:
            _drop_connection(host, port)
            if reused and retry_stale:
                continue
            raise
        except Exception:
            _drop_connection(host, port)
            raise
        if resp.will_close:
            _drop_connection(host, port)
        return Reply(resp.status, resp.headers, _parse_json(data), data)


def get(url, headers=None, timeout=None):
    """GET an absolute URL; see request()."""
    return request("GET", url, headers=headers, timeout=timeout)


def post(url, body, headers=None, timeout=None):
    """POST raw bytes (or str, sent as UTF-8) to an absolute URL; see request()."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return request("POST", url, body=body, headers=headers, timeout=timeout)


def post_json(url, obj, headers=None, timeout=None):
    """POST obj serialised as JSON to an absolute URL; see request()."""
    return post(url, json.dumps(obj), headers=headers, timeout=timeout)


# ---------------------------------------------------------------------------
# The replication wire (src/common/msg.h, pagecodec.h), written independently of the C
# codec so tests can forge, replay and damage appends and read log pages
# ---------------------------------------------------------------------------

BINARY = "application/octet-stream"
_TRADE_TYPES = ("buy", "sell")


def _entry_bytes(e):
    """One entry: type quantity name_len name rid_len rid (src/common/pagecodec.h)."""
    name, rid = e["name"].encode(), e["request_id"].encode()
    return (struct.pack("<BIB", _TRADE_TYPES.index(e["type"]), e["quantity"], len(name))
            + name + struct.pack("<B", len(rid)) + rid)


def _page_bytes(entries):
    """One page: entries of one epoch, consecutive numbers, padded with zeros to 8 bytes."""
    out = bytearray(b"BZP1" + struct.pack("<qQI", entries[0]["number"], entries[0]["epoch"],
                                          len(entries)))
    for e in entries:
        out += _entry_bytes(e)
    out += b"\0" * (-len(out) % 8)
    return bytes(out)


def encode_slice(entries):
    """A slice: "BZL1" n, then one page per run of equal epochs (at most 1000 entries)."""
    out = b"BZL1" + struct.pack("<I", len(entries))
    start = 0
    while start < len(entries):
        end = start + 1
        while (end < len(entries) and end - start < 1000
               and entries[end]["epoch"] == entries[start]["epoch"]):
            end += 1
        out += _page_bytes(entries[start:end])
        start = end
    return out


def decode_slice(data):
    """The entries of a slice (a GET /log/{from} reply) as dicts; ValueError if malformed."""
    if data[:4] != b"BZL1":
        raise ValueError("not a slice")
    (count,), pos, entries = struct.unpack_from("<I", data, 4), 8, []
    while pos < len(data):
        if data[pos:pos + 4] != b"BZP1":
            raise ValueError(f"no page at byte {pos}")
        first, epoch, n = struct.unpack_from("<qQI", data, pos + 4)
        start, pos = pos, pos + 24
        for i in range(n):
            kind, quantity, nlen = struct.unpack_from("<BIB", data, pos)
            name = data[pos + 6:pos + 6 + nlen].decode()
            rlen = data[pos + 6 + nlen]
            rid = data[pos + 7 + nlen:pos + 7 + nlen + rlen].decode()
            pos += 7 + nlen + rlen
            entries.append({"number": first + i, "epoch": epoch, "request_id": rid, "name": name,
                            "type": _TRADE_TYPES[kind], "quantity": quantity})
        pos += -(pos - start) % 8
    if len(entries) != count or pos != len(data):
        raise ValueError("slice length does not match its count")
    return entries


def encode_append(epoch, leader, prev, prev_epoch, start_last, entries):
    """The body of POST /replicate."""
    return (b"BZA1" + struct.pack("<IQqQq", leader, epoch, prev, prev_epoch, start_last)
            + encode_slice(entries))


def encode_exec(from_, committed, trades):
    """The body of the catalog's POST /execute: "BZX1" from committed n, then the trades
    (dicts with request_id, name, type, quantity) as entries without numbers."""
    return (b"BZX1" + struct.pack("<qqI", from_, committed, len(trades))
            + b"".join(_entry_bytes(t) for t in trades))


def encode_lookups(names):
    """The body of the catalog's POST /lookups: "BZL1" n, then each name as len:u8 name."""
    names = [n.encode() if isinstance(n, str) else n for n in names]
    return (b"BZL1" + struct.pack("<I", len(names))
            + b"".join(struct.pack("<B", len(n)) + n for n in names))


def decode_lookup_reply(data, n):
    """The catalog's 200 reply to POST /lookups of n names: [(status, body bytes)] in the
    names' order; ValueError if malformed."""
    if len(data) < 8 or data[:4] != b"BZM1" or struct.unpack_from("<I", data, 4)[0] != n:
        raise ValueError(f"not a lookup reply for {n} names: {data[:64]!r}")
    at, out = 8, []
    for _ in range(n):
        if len(data) - at < 6:
            raise ValueError("truncated lookup reply")
        status, length = struct.unpack_from("<HI", data, at)
        at += 6
        if len(data) - at < length:
            raise ValueError("truncated lookup answer")
        out.append((status, data[at:at + length]))
        at += length
    if at != len(data):
        raise ValueError("bytes past the lookup answers")
    return out


def decode_append_reply(data):
    """A follower's 200 reply to an append: {"ok", "match", "last"}; ValueError if malformed."""
    if len(data) != 24 or data[:4] != b"BZR1":
        raise ValueError(f"not an append reply: {data[:64]!r}")
    ok, match, last = struct.unpack_from("<Iqq", data, 4)
    return {"ok": bool(ok), "match": match, "last": last}


# ---------------------------------------------------------------------------
# Raw sockets, for hostile input
# ---------------------------------------------------------------------------

RawReply = namedtuple("RawReply", "data outcome")
RawReply.__doc__ = """Bytes received and how the exchange ended: 'complete' (the expected number of
full replies arrived), 'closed' (peer closed or reset), or 'timeout'."""


def raw_exchange(host, port, data, timeout=2.0, responses=1, keep_open=False):
    """Send data on a new connection and read until `responses` full replies, close or timeout.

    timeout (scaled) bounds the whole exchange. A send that fails because the
    server already closed or stopped reading is not an error: what the server
    said is still read. With keep_open=True the socket is returned as a third
    element and the caller must close it.
    """
    deadline = time.monotonic() + scaled(timeout)
    sock = socket.create_connection((host, port), timeout=scaled(timeout))
    try:
        _send_all_until(sock, data, deadline)
        received, outcome = _recv_replies(sock, deadline, responses)
    except BaseException:
        sock.close()
        raise
    if keep_open:
        return RawReply(received, outcome), sock
    sock.close()
    return RawReply(received, outcome)


def raw_request(host, port, data, timeout=2.0):
    """Send data over a raw socket and return the reply bytes (b'' if closed without a reply)."""
    return raw_exchange(host, port, data, timeout).data


def _send_all_until(sock, data, deadline):
    view = memoryview(data)
    while view:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            sent = sock.send(view)
        except (socket.timeout, BrokenPipeError, ConnectionResetError):
            return  # the server stopped reading; see what it answered
        view = view[sent:]


def _recv_replies(sock, deadline, responses):
    buf = b""
    while True:
        if count_replies(buf) >= responses:
            return buf, "complete"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return buf, "timeout"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return buf, "timeout"
        except ConnectionResetError:
            return buf, "closed"
        if not chunk:
            return buf, "closed"
        buf += chunk


def split_replies(buf):
    """Parse concatenated HTTP/1.x replies: a list of (status, headers dict, body) for complete ones.

    Interim 1xx replies are skipped. Parsing stops at the first incomplete or
    unparsable reply.
    """
    replies = []
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            return replies
        status, headers = _parse_head(buf[:head_end])
        if status is None:
            return replies
        rest = buf[head_end + 4:]
        if 100 <= status < 200:
            buf = rest
            continue
        body_len = _body_length(status, headers, rest)
        if body_len is None or body_len > len(rest):
            return replies
        replies.append((status, headers, rest[:body_len]))
        buf = rest[body_len:]


def count_replies(buf):
    """How many complete HTTP replies buf holds."""
    return len(split_replies(buf))


def status_of(raw):
    """The status code of the first reply in raw bytes, or None when it is not an HTTP status line."""
    line = raw.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return None
    return int(parts[1])


def _parse_head(head):
    lines = head.split(b"\r\n")
    status = status_of(lines[0])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return status, headers


def _body_length(status, headers, rest):
    """Bytes of body that belong to this reply, or None when it cannot be known yet."""
    if status in (204, 304):
        return 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        end = rest.find(b"\r\n0\r\n\r\n")
        if rest.startswith(b"0\r\n\r\n"):
            return 5
        return None if end < 0 else end + 7
    if "content-length" in headers:
        try:
            return int(headers["content-length"])
        except ValueError:
            return None
    return None  # body runs until close


def parse_metrics(text):
    """Prometheus text format as {sample: float}; sample is the name plus any {labels} as written.

    Comment lines are skipped, and so are lines that do not end in a number.
    """
    samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            samples[key.strip()] = float(value)
        except ValueError:
            continue
    return samples


# ---------------------------------------------------------------------------
# Databases (read-only)
# ---------------------------------------------------------------------------


def cpu_model():
    """The CPU model from /proc/cpuinfo ("unknown" when not available), for reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _open_ro(path):
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    conn = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, timeout=scaled(5))
    conn.row_factory = sqlite3.Row
    return conn


def db_stocks(cluster):
    """{name: (price, quantity)} from catalog.db."""
    with _closing(_open_ro(cluster.catalog_db)) as conn:
        rows = conn.execute("SELECT name, price, quantity FROM stocks").fetchall()
    return {row["name"]: (row["price"], row["quantity"]) for row in rows}


def db_quantities(cluster):
    """{name: quantity} from catalog.db."""
    return {name: qty for name, (_, qty) in db_stocks(cluster).items()}


def db_orders(cluster, replica_id):
    """Every row of order-<id>.db's orders table, as dicts ordered by number.

    Contract columns: number, name, type, quantity (SPEC §5); DESIGN adds
    request_id and epoch. Any further columns are kept as they are.
    """
    with _closing(_open_ro(cluster.order_db(replica_id))) as conn:
        rows = conn.execute("SELECT * FROM orders ORDER BY number").fetchall()
    return [dict(row) for row in rows]


def db_applied(cluster):
    """The catalog's record of executed trades (catalog.db `applied`), or None without one.

    A list of dicts, one per request id the catalog decided: request_id, name, type, quantity,
    applied (True when the trade changed the quantity, False for a refusal), version and
    result_quantity where recorded, and number: its transaction number in the catalog's journal
    (None for a refusal, or when this catalog keeps no journal). Reads both schemas this
    project has had: `status` (0 = applied) and `outcome` ('applied'/'refused') + `number`.
    """
    try:
        with _closing(_open_ro(cluster.catalog_db)) as conn:
            cols = {row[1] for row in conn.execute("PRAGMA table_info(applied)")}
            if "request_id" not in cols or not ({"status", "outcome"} & cols):
                return None
            rows = [dict(r) for r in conn.execute("SELECT * FROM applied")]
    except (sqlite3.Error, FileNotFoundError):
        return None
    out = []
    for r in rows:
        ok = r["outcome"] == "applied" if "outcome" in r else r.get("status") in (0, 200)
        out.append({"request_id": r["request_id"], "name": r.get("name"), "type": r.get("type"),
                    "quantity": r.get("quantity"), "applied": ok, "version": r.get("version"),
                    "result_quantity": r.get("result_quantity"), "number": r.get("number")})
    return out


def order_view(rows):
    """The contract part of order rows: a list of (number, name, type, quantity)."""
    return [(r["number"], r["name"], r["type"], r["quantity"]) for r in rows]


class _closing:
    """sqlite3 connections do not close in `with`; this does."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


# ---------------------------------------------------------------------------
# Stocks CSV
# ---------------------------------------------------------------------------


def default_stocks_csv():
    """The repo's config/stocks.csv, or 10 generated stocks at quantity 100 when it is missing."""
    path = os.path.join(REPO_ROOT, "config", "stocks.csv")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    rows = [f"Stock{i},{10 + i}.50,100" for i in range(10)]
    return "name,price,quantity\n" + "\n".join(rows) + "\n"


# A catalog for tests whose names exercise the name rules (SPEC §2: 1-64 bytes of [A-Za-z0-9_.-]).
LONG_STOCK_NAME = "L" * 64
TEST_STOCKS_CSV = "\n".join([
    "name,price,quantity",
    "GameStart,15.99,100",
    "FishCo,22.5,100",
    "BoarCo,7.25,100",
    "MenhirCo,40,100",
    "RiverRun,3.1,100",
    "StoneAge,9.99,100",
    "TinCan,0.5,100",
    "Dot.Dash-Under_1,1.5,100",
    f"{LONG_STOCK_NAME},2.25,100",
    "Zero,5,0",
]) + "\n"


def parse_stocks_csv(text):
    """{name: (price, quantity)} from CSV text with the header line name,price,quantity."""
    reader = csv.DictReader(io.StringIO(text))
    return {row["name"]: (float(row["price"]), int(row["quantity"])) for row in reader}


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: SIGKILL the child if the test runner dies (e.g. killed by a ctest timeout).

    Linux ties PR_SET_PDEATHSIG to the *thread* that forked, not the process: a service
    started (or restarted) from a helper thread is killed when that thread ends. Start and
    restart processes from the main thread (or a thread that outlives the cluster).
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class ClusterError(RuntimeError):
    """A cluster process failed to start, become ready or stop."""


def thread_stacks(pid, timeout=30):
    """Every thread's stack of a live process, from gdb in batch mode, for the log of a
    process that hangs; a line saying why when gdb is missing or fails."""
    gdb = shutil.which("gdb")
    if not gdb:
        return "=== (no gdb here: no thread stacks)\n"
    try:
        out = subprocess.run([gdb, "-batch", "-nx", "-p", str(pid), "-ex", "thread apply all bt"],
                             capture_output=True, text=True, timeout=timeout)
        return "=== thread stacks (gdb):\n" + out.stdout[-200000:] + "\n"
    except (OSError, subprocess.SubprocessError) as e:
        return f"=== no thread stacks: {e}\n"


class Process:
    """One service process of a cluster: its command line, log file and Popen."""

    def __init__(self, name, argv, log_path, url):
        self.name = name          # "catalog", "frontend", "order1", ...
        self.argv = argv          # full command line
        self.log_path = log_path  # stdout+stderr of every run, appended
        self.url = url            # http://127.0.0.1:PORT
        self.popen = None         # None until started
        self.returncode = None    # of the last run that ended

    def running(self):
        return self.popen is not None and self.popen.poll() is None

    def crashed(self):
        """The exit code if the process ended without being stopped through this object, else None."""
        if self.popen is None:
            return None
        return self.popen.poll()

    @property
    def pid(self):
        return self.popen.pid if self.running() else None

    def start(self, env):
        if self.running():
            raise ClusterError(f"{self.name} is already running")
        with open(self.log_path, "ab") as log:
            log.write(f"=== start {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
                                          preexec_fn=_die_with_parent)
        self.returncode = None

    def signal(self, sig):
        """Send sig to this process (by PID) if it runs."""
        if self.running():
            self.popen.send_signal(sig)

    def pause(self):
        """SIGSTOP: the process keeps its sockets and state but runs no code until resume()."""
        self.signal(signal.SIGSTOP)

    def resume(self):
        """SIGCONT after pause()."""
        self.signal(signal.SIGCONT)

    def stop(self, grace=5.0):
        """SIGTERM, wait up to grace seconds (scaled), then SIGKILL. Returns the exit code.
        A paused (SIGSTOPped) process is continued so that it can act on the SIGTERM."""
        if self.popen is None:
            return self.returncode
        self.signal(signal.SIGTERM)
        self.signal(signal.SIGCONT)
        try:
            self.popen.wait(timeout=scaled(grace))
        except subprocess.TimeoutExpired:
            self._append_log(f"=== {self.name} ignored SIGTERM for {grace}s, sending SIGKILL\n")
            self._append_log(thread_stacks(self.popen.pid))
            self.popen.kill()
            self.popen.wait()
        return self._reap()

    def kill(self):
        """SIGKILL and reap. Returns the exit code (-9 when it was running)."""
        if self.popen is None:
            return self.returncode
        self.signal(signal.SIGKILL)
        self.popen.wait()
        return self._reap()

    def _reap(self):
        self.returncode = self.popen.returncode
        self.popen = None
        self._append_log(f"=== exit {self.returncode}\n")
        return self.returncode

    def _append_log(self, text):
        with open(self.log_path, "ab") as log:
            log.write(text.encode())

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _section_of(name, frontends=1):
    """Config section of a process name: order2 -> order.2; with several front-ends
    frontend -> frontend.1 and frontend2 -> frontend.2."""
    if name.startswith("order"):
        return f"order.{name[len('order'):]}"
    if name.startswith("frontend") and frontends > 1:
        return f"frontend.{name[len('frontend'):] or '1'}"
    return name


def _looks_like_port_clash(text):
    """A startup failure where a process exited and its log blames the listen address."""
    text = text.lower()
    return "exited with code" in text and any(
        word in text for word in ("address already in use", "eaddrinuse", "bind"))


_live_clusters = set()


def _stop_live_clusters():
    for cluster in list(_live_clusters):
        cluster.stop()


atexit.register(_stop_live_clusters)


def join_threads(threads, seconds, what):
    """Join every thread within `seconds` in all; AssertionError naming those still alive."""
    deadline = time.monotonic() + seconds
    for th in threads:
        th.join(max(deadline - time.monotonic(), 0.01))
    alive = [th.name for th in threads if th.is_alive()]
    if alive:
        raise AssertionError(f"{what}: {alive}")


def replication_mode():
    """The replication mode tests run in: BAZAAR_MODE (primary-backup or raft)."""
    mode = os.environ.get("BAZAAR_MODE", "primary-backup")
    if mode not in ("primary-backup", "raft"):
        raise ValueError(f"BAZAAR_MODE must be primary-backup or raft, not {mode!r}")
    return mode


def skip_unless_mode(mode, why):
    """A unittest skip decorator for tests of one replication mode only."""
    return unittest.skipUnless(replication_mode() == mode, f"{mode} only: {why}")


def _bin_dir():
    return os.environ.get("BAZAAR_BIN_DIR") or os.path.join(REPO_ROOT, "build", "bin")


class Cluster:
    """A local Stock Bazaar cluster: catalog, N order replicas and one front-end.

    Usage:
        with Cluster(tmpdir, replicas=3) as c:
            c.get("/stocks/GameStart")

    overrides is {section: {key: value}} merged over the generated config.
    stocks_csv is the CSV text (header name,price,quantity); default_stocks_csv() when None.
    Processes are stopped on every exit path: `with`, stop(), or at interpreter exit.
    """

    def __init__(self, tmpdir, replicas=3, overrides=None, stocks_csv=None,
                 secret=DEFAULT_SECRET, log_level="info", startup_timeout=20.0, frontends=1,
                 mode=None):
        self.tmpdir = os.path.abspath(tmpdir)
        self.replicas = replicas
        # Replication mode: BAZAAR_MODE (ctest runs every integration and fault test in both).
        self.mode = mode or replication_mode()
        self.frontends = frontends  # > 1: [frontend.1..N], processes frontend, frontend2, ...
        self.secret = secret
        self.startup_timeout = startup_timeout
        self.data_dir = os.path.join(self.tmpdir, "data")
        self.log_dir = os.path.join(self.tmpdir, "logs")
        self.config_path = os.path.join(self.tmpdir, "bazaar.conf")
        self.stocks_path = os.path.join(self.tmpdir, "stocks.csv")
        self.stocks_csv = default_stocks_csv() if stocks_csv is None else stocks_csv
        self.initial_stocks = parse_stocks_csv(self.stocks_csv)  # {name: (price, quantity)}
        self.config = self._base_config(log_level)
        for section, values in (overrides or {}).items():
            self.config.setdefault(section, {}).update({k: str(v) for k, v in values.items()})
        self.processes = self._make_processes()

    # -- configuration -----------------------------------------------------

    def _base_config(self, log_level):
        config = {
            "cluster": {"data_dir": self.data_dir, "secret": self.secret, "log_level": log_level},
            "catalog": {"listen": f"127.0.0.1:{free_port()}", "stocks": self.stocks_path,
                        "restock_interval_s": "0", "restock_to": "100"},
            "frontend": {"listen": f"127.0.0.1:{free_port()}", "cache": "on", "cache_size": "8"},
            "replication": {"mode": "primary-backup", "write_quorum": "majority"},
        }
        if self.frontends > 1:
            del config["frontend"]["listen"]
            for k in range(1, self.frontends + 1):
                config[f"frontend.{k}"] = {"listen": f"127.0.0.1:{free_port()}"}
        for rid in range(1, self.replicas + 1):
            config[f"order.{rid}"] = {"listen": f"127.0.0.1:{free_port()}"}
            if self.mode == "raft":
                config[f"order.{rid}"]["raft_listen"] = f"127.0.0.1:{free_port()}"
        config["replication"]["mode"] = self.mode
        return config

    def _write_files(self):
        os.makedirs(self.data_dir, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        with open(self.stocks_path, "w", encoding="utf-8") as f:
            f.write(self.stocks_csv)
        with open(self.config_path, "w", encoding="utf-8") as f:
            for section, values in self.config.items():
                f.write(f"[{section}]\n")
                for key, value in values.items():
                    f.write(f"{key} = {value}\n")
                f.write("\n")

    def _make_processes(self):
        bindir = _bin_dir()
        base = ["--config", self.config_path]

        def make(name, exe, section, extra=()):
            argv = [os.path.join(bindir, exe)] + base + list(extra)
            url = "http://" + self.config[section]["listen"]
            return Process(name, argv, os.path.join(self.log_dir, f"{name}.log"), url)

        procs = {"catalog": make("catalog", "bazaar-catalog", "catalog")}
        for rid in range(1, self.replicas + 1):
            name = f"order{rid}"
            procs[name] = make(name, "bazaar-order", _section_of(name), ["--id", str(rid)])
        for name in self.frontend_names():
            extra = ["--id", name[len("frontend"):] or "1"] if self.frontends > 1 else []
            procs[name] = make(name, "bazaar-frontend", _section_of(name, self.frontends), extra)
        return procs

    def frontend_names(self):
        """Process names of the front-ends: frontend, frontend2, ..."""
        return ["frontend"] + [f"frontend{k}" for k in range(2, self.frontends + 1)]

    # -- addresses ---------------------------------------------------------

    @property
    def catalog_db(self):
        return os.path.join(self.data_dir, "catalog.db")

    def order_db(self, replica_id):
        return os.path.join(self.data_dir, f"order-{replica_id}.db")

    def replica_ids(self):
        return list(range(1, self.replicas + 1))

    def address(self, name):
        """(host, port) of a process by name."""
        hostport = self.processes[name].url[len("http://"):]
        host, _, port = hostport.rpartition(":")
        return host, int(port)

    def url(self, name, path=""):
        return self.processes[name].url + path

    def frontend_url(self, path=""):
        return self.url("frontend", path)

    def catalog_url(self, path=""):
        return self.url("catalog", path)

    def order_url(self, replica_id, path=""):
        return self.url(f"order{replica_id}", path)

    def _resolve(self, url_or_path):
        return self.frontend_url(url_or_path) if url_or_path.startswith("/") else url_or_path

    # -- HTTP --------------------------------------------------------------

    def get(self, url_or_path, headers=None, timeout=None):
        """GET a URL, or a path on the front-end."""
        return get(self._resolve(url_or_path), headers=headers, timeout=timeout)

    def post(self, url_or_path, body, headers=None, timeout=None):
        """POST raw bytes to a URL, or a path on the front-end."""
        return post(self._resolve(url_or_path), body, headers=headers, timeout=timeout)

    def post_json(self, url_or_path, obj, headers=None, timeout=None):
        """POST obj as JSON to a URL, or a path on the front-end."""
        return post_json(self._resolve(url_or_path), obj, headers=headers, timeout=timeout)

    def secret_headers(self, headers=None):
        return {**(headers or {}), SECRET_HEADER: self.secret}

    def internal_get(self, url, headers=None, timeout=None):
        """GET with the cluster secret."""
        return get(url, headers=self.secret_headers(headers), timeout=timeout)

    def internal_post_json(self, url, obj, headers=None, timeout=None):
        """POST JSON with the cluster secret."""
        return post_json(url, obj, headers=self.secret_headers(headers), timeout=timeout)

    def internal_post(self, url, body, headers=None, timeout=None):
        """POST raw bytes with the cluster secret."""
        return post(url, body, headers=self.secret_headers(headers), timeout=timeout)

    def internal_post_binary(self, url, body, headers=None, timeout=None):
        """POST a binary replication message (e.g. encode_append's) with the cluster secret."""
        return self.internal_post(url, body, headers={"Content-Type": BINARY, **(headers or {})},
                                  timeout=timeout)

    def status(self):
        """The front-end's /status JSON."""
        reply = self.get("/status")
        if reply.status != 200 or reply.json is None:
            raise ClusterError(f"/status answered {reply.status}: {reply.body[:200]!r}")
        return reply.json

    def metrics(self, name="frontend"):
        """One process's /metrics parsed by parse_metrics()."""
        reply = get(self.url(name, "/metrics"))
        if reply.status != 200:
            raise ClusterError(f"{name} /metrics answered {reply.status}: {reply.body[:200]!r}")
        return parse_metrics(reply.body.decode("utf-8", "replace"))

    def metric(self, sample, name="frontend"):
        """One sample of a process's /metrics as a float; ClusterError when it is missing."""
        samples = self.metrics(name)
        if sample not in samples:
            raise ClusterError(f"{name} /metrics has no sample {sample!r}")
        return samples[sample]

    def invalidation(self, *stocks, frontend="frontend"):
        """A POST /invalidate body for (name, version) pairs that the front-end takes as a
        late copy of a message of its current stream: applied, with no gap (see notify.h)."""
        st = get(self.url(frontend, "/status")).json["invalidation_stream"]
        return {"stream": st["stream"], "seq": st["seq"],
                "stocks": [{"name": n, "version": v} for n, v in stocks]}

    def metric_sum(self, name, process="frontend"):
        """The sum of every sample of a metric family (all label sets)."""
        return sum(v for k, v in self.metrics(process).items()
                   if k == name or k.startswith(name + "{"))

    def leader(self):
        """The leader replica id the front-end reports in /status (an int, or a dict with "id")."""
        leader = self.status().get("leader")
        return leader.get("id") if isinstance(leader, dict) else leader

    # -- lifecycle ---------------------------------------------------------

    def _env(self):
        env = dict(os.environ)
        env.pop("BAZAAR_SECRET", None)  # it would override the secret in our config
        return env

    def start(self, attempts=3, skip=()):
        """Write the config and start every process: catalog and replicas first, then the front-end.

        Processes named in skip are configured but not started (start_process() them later).
        A port taken by someone else between free_port() and the bind (the process
        exits and its log mentions the address) is retried with fresh ports.
        """
        _live_clusters.add(self)
        for attempt in range(1, attempts + 1):
            self._write_files()
            try:
                backends = [n for n in self.processes
                            if not n.startswith("frontend") and n not in skip]
                self._start_and_wait(backends)
                self._start_and_wait([n for n in self.frontend_names() if n not in skip])
                return self
            except ClusterError as exc:
                self.stop()
                if attempt == attempts or not _looks_like_port_clash(str(exc)):
                    raise
                self._pick_new_ports()
            except BaseException:
                self.stop()
                raise
        return self

    def _pick_new_ports(self):
        for values in self.config.values():
            for key in ("listen", "raft_listen"):
                if key in values:
                    values[key] = f"127.0.0.1:{free_port()}"
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for proc in self.processes.values():
            section = _section_of(proc.name, self.frontends)
            proc.url = "http://" + self.config[section]["listen"]

    def _start_and_wait(self, names):
        for name in names:
            self._check_binary(name)
            self.processes[name].start(self._env())
        for name in names:
            self.wait_ready(name)

    def _check_binary(self, name):
        exe = self.processes[name].argv[0]
        if not os.access(exe, os.X_OK):
            raise ClusterError(f"{exe} is missing or not executable (set BAZAAR_BIN_DIR)")

    def start_process(self, name, wait=True):
        """Start one process by name (it must be stopped) and, by default, wait until it is ready."""
        self._check_binary(name)
        self.processes[name].start(self._env())
        if wait:
            self.wait_ready(name)

    def stop_process(self, name, grace=5.0):
        """SIGTERM one process (SIGKILL after grace seconds). Returns its exit code."""
        return self.processes[name].stop(grace)

    def kill_process(self, name):
        """SIGKILL one process. Returns its exit code."""
        return self.processes[name].kill()

    def pause_process(self, name):
        """SIGSTOP one process (a hung process: its peers see timeouts, not refused connections)."""
        self.processes[name].pause()

    def resume_process(self, name):
        """SIGCONT one process paused with pause_process()."""
        self.processes[name].resume()

    def restart_process(self, name, hard=False, wait=True):
        """Stop (SIGKILL when hard) and start one process again."""
        if hard:
            self.kill_process(name)
        else:
            self.stop_process(name)
        self.start_process(name, wait=wait)

    def is_ready(self, name):
        try:
            return get(self.url(name, "/health"), timeout=scaled(1.0)).status == 200
        except (OSError, http.client.HTTPException):
            return False

    def wait_ready(self, name, timeout=None):
        """Poll /health of one process until 200; fail early if the process exits."""
        proc = self.processes[name]
        timeout = self.startup_timeout if timeout is None else timeout

        def ready():
            if not proc.running():
                raise ClusterError(f"{name} exited with code {proc.popen.returncode if proc.popen else proc.returncode}")
            return self.is_ready(name)

        try:
            wait_for(ready, timeout, f"{name} /health == 200", interval=0.05)
        except (AssertionError, ClusterError) as exc:
            raise ClusterError(f"{exc}\n{self.log_tails(names=[name])}") from None

    def stop(self):
        """Stop every process (front-end first). Returns {name: exit code}. Safe to call twice."""
        codes = {}
        fronts = self.frontend_names()
        for name in fronts + [n for n in self.processes if n not in fronts]:
            codes[name] = self.processes[name].stop()
        close_connections()
        _live_clusters.discard(self)
        return codes

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.print_log_tails()
        self.stop()

    # -- diagnostics -------------------------------------------------------

    def log_tails(self, lines=40, names=None):
        out = []
        for name in names or self.processes:
            out.append(f"----- {name} ({self.processes[name].log_path}) -----")
            out.append(self.processes[name].log_tail(lines))
        return "\n".join(out)

    def print_log_tails(self, lines=40):
        print(self.log_tails(lines), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# unittest integration
# ---------------------------------------------------------------------------


def _problem_count(result):
    return len(result.failures) + len(result.errors) + len(getattr(result, "unexpectedSuccesses", []))


class ClusterTestCase(unittest.TestCase):
    """One cluster per TestCase class, started in setUpClass and stopped in class cleanup.

    Subclasses set replicas, overrides, stocks_csv. On any failure the log tails
    of every process are printed and the temp dir is kept.
    """

    replicas = 1
    frontends = 1
    overrides = None
    stocks_csv = None
    cluster = None
    _failed = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._failed = False
        cls.tmpdir = tempfile.mkdtemp(prefix=f"bazaar-{cls.__name__}-")
        cls.addClassCleanup(cls._cleanup_tmp)
        cls.cluster = Cluster(cls.tmpdir, replicas=cls.replicas, overrides=cls.overrides,
                              stocks_csv=cls.stocks_csv, frontends=cls.frontends)
        cls.addClassCleanup(cls.cluster.stop)
        try:
            cls.cluster.start()
        except BaseException:
            cls._failed = True
            raise

    @classmethod
    def _cleanup_tmp(cls):
        if cls._failed or os.environ.get("BAZAAR_KEEP_TMP"):
            print(f"kept {cls.tmpdir}", file=sys.stderr)
        else:
            shutil.rmtree(cls.tmpdir, ignore_errors=True)

    def tearDown(self):
        """Fail the test if a process died under it (a crash, not a deliberate stop or kill)."""
        super().tearDown()
        if self.cluster is None:
            return
        dead = {name: proc.crashed() for name, proc in self.cluster.processes.items()
                if proc.crashed() is not None}
        self.assertFalse(dead, f"processes exited during {self.id()}: {dead}")

    def run(self, result=None):
        result = result if result is not None else self.defaultTestResult()
        before = _problem_count(result)
        out = super().run(result)
        if _problem_count(result) > before:
            type(self)._failed = True
            if self.cluster is not None:
                print(f"\n=== log tails after {self.id()} ===", file=sys.stderr)
                self.cluster.print_log_tails()
        return out

    # -- front-end helpers shared by the integration tests -----------------

    def lookup(self, name):
        """The data object of a successful lookup through the front-end."""
        reply = self.cluster.get(f"/stocks/{name}")
        self.assertJsonReply(reply, 200)
        return reply.json["data"]

    def quantity(self, name):
        return self.lookup(name)["quantity"]

    # -- assertions shared by integration and fault tests -------------------

    def assertJsonReply(self, reply, status):
        """reply has this status, Content-Type application/json and a JSON body."""
        self.assertEqual(reply.status, status, f"body: {reply.body[:300]!r}")
        ctype = reply.headers.get("Content-Type", "")
        self.assertTrue(ctype.startswith("application/json"), f"Content-Type {ctype!r}")
        self.assertIsNotNone(reply.json, f"body is not JSON: {reply.body[:300]!r}")

    def assertError(self, reply, status):
        """reply is the SPEC error shape {"error":{"code":status,"message":"..."}} with that status."""
        if isinstance(status, (set, frozenset, tuple, list)):
            self.assertIn(reply.status, status, f"body: {reply.body[:300]!r}")
            status = reply.status
        self.assertJsonReply(reply, status)
        err = reply.json.get("error") if isinstance(reply.json, dict) else None
        self.assertIsInstance(err, dict, f"no error object: {reply.json!r}")
        self.assertEqual(err.get("code"), status, f"error.code != HTTP status: {reply.json!r}")
        self.assertIsInstance(err.get("message"), str)
        self.assertTrue(err["message"], "empty error message")

    def snapshot(self):
        """Catalog quantities and every replica's order rows, for "nothing changed" checks.

        Taken once the replicas hold the same rows: a follower learns that an acknowledged order
        committed only with the leader's next message (in Raft mode also after an apply), so
        right after the previous test's last trade one follower may still lack it, and would
        gain it during the check; and in Raft mode a node writes an order's row when it applies
        the entry, which may come after the acknowledgement (both seen under load: "order logs
        changed" by the previous test's trade). So the rows must also have stopped changing."""
        def identical():
            orders = {rid: order_view(db_orders(self.cluster, rid))
                      for rid in self.cluster.replica_ids()}
            views = list(orders.values())
            if not all(v == views[0] for v in views):
                raise AssertionError("replicas differ")
            return orders

        orders = wait_stable(identical, still=0.3, timeout=10.0,
                             what="every replica's order rows (identical)")
        return db_quantities(self.cluster), orders

    def assertUnchanged(self, before, msg=""):
        after = self.snapshot()
        self.assertEqual(after[0], before[0], f"catalog quantities changed {msg}")
        self.assertEqual(after[1], before[1], f"order logs changed {msg}")


# ---------------------------------------------------------------------------
# Replication: replica state, idleness, client traffic and the SPEC §3 invariants
# ---------------------------------------------------------------------------


def replica_state(cluster, replica_id, timeout=2.0):
    """The "data" object of GET /state of one order replica; raises ClusterError otherwise."""
    reply = get(cluster.order_url(replica_id, "/state"), timeout=scaled(timeout))
    data = reply.json.get("data") if isinstance(reply.json, dict) else None
    if reply.status != 200 or not isinstance(data, dict):
        raise ClusterError(f"order{replica_id} /state answered {reply.status}: {reply.body[:200]!r}")
    return data


def find_leader(cluster, replica_ids=None):
    """The id of the replica whose /state says role "leader" (the only one), else None.

    Asks the replicas themselves, so it works while the front-end is down.
    """
    leaders = []
    for rid in replica_ids or cluster.replica_ids():
        if not cluster.processes[f"order{rid}"].running():
            continue
        try:
            if replica_state(cluster, rid, timeout=1.0).get("role") == "leader":
                leaders.append(rid)
        except (OSError, http.client.HTTPException, ClusterError):
            continue
    return leaders[0] if len(leaders) == 1 else None


def wait_replicas_idle(cluster, replica_ids=None, timeout=30.0):
    """Wait until the replicas (default: all) are ready, exactly one of them leads and every one
    reports the same "last" in two consecutive polls. Returns {"leader", "epoch", "last"}."""
    ids = list(replica_ids or cluster.replica_ids())
    seen = {"key": None}

    def idle():
        if not all(cluster.is_ready(f"order{rid}") for rid in ids):
            return None
        states = {rid: replica_state(cluster, rid) for rid in ids}
        leaders = [rid for rid, st in states.items() if st.get("role") == "leader"]
        lasts = {st.get("last") for st in states.values()}
        if len(leaders) != 1 or len(lasts) != 1:
            seen["key"] = None
            return None
        key = (leaders[0], states[leaders[0]].get("epoch"), lasts.pop())
        if seen["key"] != key:
            seen["key"] = key  # equal once; equal again on the next poll means idle
            return None
        return {"leader": key[0], "epoch": key[1], "last": key[2]}

    return wait_for(idle, timeout, f"replicas {ids} ready, one leader, equal and stable last",
                    interval=0.1)


AckedOrder = namedtuple("AckedOrder", "number key name type quantity latency at")
AckedOrder.__doc__ = """An order the front-end acknowledged (200): its transaction number, the
Idempotency-Key it was sent with, its fields, the seconds from first send to the answer and the
time.monotonic() of the answer."""


class Trader:
    """Client traffic for replication and fault tests: `threads` threads, each with its own
    keep-alive connection to the front-end, post seeded random trades (buy/sell, quantity 1-10,
    a random stock) with a unique Idempotency-Key per order.

    A 503, a timeout or a connection error leaves the outcome unknown (SPEC §3): the same key is
    sent again until a definite answer or op_timeout (scaled). 200 is recorded in `acked`, 409 in
    `rejected` (a definite "not applied"); anything else, or giving up, is a client-visible error
    (`errors`), and a key whose outcome stayed unknown also goes to `unknown`. With query_p > 0 a
    thread also, after a trade and with that probability, looks up a stock and reads back one of
    its acknowledged orders (which must match). The random decisions of thread i depend only on
    (seed, i); how many trades happen depends on timing.

    Usage:
        with Trader(cluster.frontend_url(), cluster.initial_stocks, seed) as t:
            t.wait_acked(100)
        assert not t.errors
    """

    KEY_PREFIX = "bzt"
    _tags = iter(range(1, 1 << 62))
    _tags_lock = threading.Lock()

    def __init__(self, url, stocks, seed, threads=4, query_p=0.0, max_orders=None,
                 attempt_timeout=20.0, op_timeout=90.0, pause=0.0):
        host, port, _ = _split_url(url)
        self.host, self.port = host, port
        self.stocks = sorted(stocks)
        self.seed = seed
        self.nthreads = threads
        self.query_p = query_p
        self.max_orders = max_orders
        self.attempt_timeout = scaled(attempt_timeout)
        self.op_timeout = scaled(op_timeout)
        self.pause = pause
        with Trader._tags_lock:
            self.tag = next(Trader._tags)
        self.lock = threading.Lock()
        self.acked = []         # AckedOrder, in acknowledgement order
        self.rejected = []      # keys answered 409
        self.errors = []        # dicts describing every client-visible error
        self.unknown = []       # keys whose outcome stayed unknown
        self.retries = {}       # cause -> count of re-sends (POST and GET)
        self.posts = 0          # logical POSTs started
        self.queries = 0        # logical GETs done
        self.worst_post = (0.0, None)  # (seconds, key)
        self._issued = 0
        self._stop = threading.Event()
        self._go = threading.Event()   # cleared by hold(): threads park before their next order
        self._go.set()
        self._parked = 0               # threads waiting on _go (under lock)
        self._threads = []
        self._started_at = None

    # -- lifecycle -----------------------------------------------------------

    def start(self):
        self._started_at = time.monotonic()
        for i in range(self.nthreads):
            th = threading.Thread(target=self._run, args=(i,), name=f"trader{self.tag}.{i}", daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self, timeout=None):
        """Ask every thread to stop after its current order (which still gets its definite
        answer, or op_timeout) and join them. Raises AssertionError if a thread hangs."""
        self._stop.set()
        limit = self.op_timeout + scaled(30) if timeout is None else scaled(timeout)
        join_threads(self._threads, limit, f"trader threads still running after {limit:.0f}s")
        return self

    def hold(self, timeout=None):
        """Let every thread finish its current order (definite answer or op_timeout) and park
        before the next one, so the cluster can go quiet; release() lets them go on. Raises
        AssertionError if a thread is still busy after timeout (default op_timeout + 30 s)."""
        self._go.clear()
        limit = self.op_timeout + scaled(30) if timeout is None else scaled(timeout)
        deadline = time.monotonic() + limit
        while True:
            with self.lock:
                busy = sum(th.is_alive() for th in self._threads) - self._parked
            if busy <= 0:
                return self
            if time.monotonic() >= deadline:
                raise AssertionError(f"{busy} trader threads still busy {limit:.0f}s after hold()")
            time.sleep(0.01)

    def release(self):
        """Undo hold()."""
        self._go.set()
        return self

    def _wait_go(self):
        """Park here while held (and not stopping)."""
        if self._go.is_set():
            return
        with self.lock:
            self._parked += 1
        try:
            while not self._go.wait(0.05) and not self._stop.is_set():
                pass
        finally:
            with self.lock:
                self._parked -= 1

    def join(self, timeout=None):
        """Wait for the threads to end by themselves (max_orders reached)."""
        join_threads(self._threads, scaled(600) if timeout is None else scaled(timeout),
                     "trader threads still running")
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def running(self):
        return any(th.is_alive() for th in self._threads)

    # -- progress ------------------------------------------------------------

    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def wait_acked(self, count, timeout=60.0, stop_on_error=True):
        """Wait (bounded polling, timeout scaled) until at least `count` orders in total have been
        acknowledged. AssertionError on timeout, or at once when a client error happens unless
        stop_on_error is False."""
        deadline = time.monotonic() + scaled(timeout)
        while self.acked_count() < count:
            if stop_on_error and self.errors:
                raise AssertionError(f"client errors while waiting for {count} acknowledged orders:"
                                     f" {self.errors[:3]}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {scaled(timeout):.1f}s waiting for {count}"
                                     f" acknowledged orders; have {self.acked_count()}")
            time.sleep(0.02)

    def wait_more(self, count, timeout=60.0, stop_on_error=True):
        """Wait until `count` more orders than now have been acknowledged."""
        self.wait_acked(self.acked_count() + count, timeout, stop_on_error)

    def summary(self):
        with self.lock:
            elapsed = time.monotonic() - self._started_at if self._started_at else 0.0
            return {"posts": self.posts, "acked": len(self.acked), "rejected": len(self.rejected),
                    "queries": self.queries, "errors": len(self.errors), "unknown": len(self.unknown),
                    "retries": dict(self.retries), "worst_post_s": round(self.worst_post[0], 3),
                    "worst_post_key": self.worst_post[1], "elapsed_s": round(elapsed, 2)}

    # -- one thread ----------------------------------------------------------

    def _run(self, index):
        rng = random.Random(f"{self.seed}/trader/{index}")       # trade decisions
        jitter = random.Random(f"{self.seed}/jitter/{index}")    # back-off only
        conn = [None]
        mine = []
        seq = 0
        try:
            while not self._stop.is_set():
                self._wait_go()
                if self._stop.is_set():
                    break
                with self.lock:
                    if self.max_orders is not None and self._issued >= self.max_orders:
                        break
                    self._issued += 1
                    self.posts += 1
                name = rng.choice(self.stocks)
                kind = rng.choice(("buy", "sell"))
                qty = rng.randint(1, 10)
                key = f"{self.KEY_PREFIX}-{self.tag}-{index}-{seq:08d}"
                seq += 1
                order = self._post(conn, jitter, key, name, kind, qty)
                if order is not None:
                    mine.append(order)
                if self.query_p and rng.random() < self.query_p:
                    self._query_stock(conn, jitter, rng.choice(self.stocks))
                    if mine:
                        self._query_order(conn, jitter, rng.choice(mine))
                if self.pause:
                    self._stop.wait(self.pause)
        except Exception as exc:  # noqa: BLE001 - a harness bug must show up, not hang
            self._error("thread", None, None, f"{type(exc).__name__}: {exc}")
        finally:
            if conn[0] is not None:
                conn[0].close()

    def _send(self, conn, method, path, body=None, headers=None):
        """One attempt: see send_attempt()."""
        return send_attempt(conn, self.host, self.port, self.attempt_timeout, method, path, body,
                            headers)

    def _retry(self, cause):
        with self.lock:
            self.retries[cause] = self.retries.get(cause, 0) + 1

    def _error(self, what, key, status, detail):
        with self.lock:
            self.errors.append({"what": what, "key": key, "status": status,
                                "detail": str(detail)[:300], "t": round(time.monotonic(), 3)})

    def _post(self, conn, jitter, key, name, kind, qty):
        body = json.dumps({"name": name, "type": kind, "quantity": qty}).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        start = time.monotonic()
        deadline = start + self.op_timeout
        attempt = 0
        while True:
            status, data, _ = self._send(conn, "POST", "/orders", body, headers)
            now = time.monotonic()
            if status == 200:
                number = None
                if isinstance(data, dict) and isinstance(data.get("data"), dict):
                    number = data["data"].get("transaction_number")
                if not isinstance(number, int) or isinstance(number, bool):
                    self._error("post", key, status, f"bad 200 body: {data!r}")
                    with self.lock:
                        self.unknown.append(key)
                    return None
                order = AckedOrder(number, key, name, kind, qty, now - start, now)
                with self.lock:
                    self.acked.append(order)
                    if order.latency > self.worst_post[0]:
                        self.worst_post = (order.latency, key)
                return order
            if status == 409:
                with self.lock:
                    self.rejected.append(key)
                return None
            if status is None or status == 503:
                cause = data if status is None else "503"
                if now >= deadline:
                    self._error("post", key, status, f"no definite answer after {now - start:.1f}s"
                                f" ({attempt + 1} attempts, last: {cause})")
                    with self.lock:
                        self.unknown.append(key)
                    return None
                self._retry(f"post:{cause}")
                attempt += 1
                backoff_sleep(jitter, attempt)
                continue
            self._error("post", key, status, data)
            with self.lock:
                self.unknown.append(key)  # e.g. a 500: nobody knows whether it was applied
            return None

    def _get_until_definite(self, conn, jitter, path, what):
        deadline = time.monotonic() + self.op_timeout
        attempt = 0
        while True:
            status, data, _ = self._send(conn, "GET", path)
            if status is not None and status != 503:
                with self.lock:
                    self.queries += 1
                return status, data
            cause = data if status is None else "503"
            if time.monotonic() >= deadline:
                self._error(what, path, status, f"no answer after {attempt + 1} attempts ({cause})")
                return None, None
            self._retry(f"get:{cause}")
            attempt += 1
            backoff_sleep(jitter, attempt)

    def _query_stock(self, conn, jitter, name):
        status, data = self._get_until_definite(conn, jitter, f"/stocks/{name}", "lookup")
        if status is None:
            return
        ok = (status == 200 and isinstance(data, dict) and isinstance(data.get("data"), dict)
              and data["data"].get("name") == name and isinstance(data["data"].get("quantity"), int))
        if not ok:
            self._error("lookup", name, status, data)

    def _query_order(self, conn, jitter, order):
        status, data = self._get_until_definite(conn, jitter, f"/orders/{order.number}", "query")
        if status is None:
            return
        want = {"number": order.number, "name": order.name, "type": order.type,
                "quantity": order.quantity}
        got = data.get("data") if isinstance(data, dict) else None
        if status != 200 or not isinstance(got, dict) or \
                {k: got.get(k) for k in want} != want:
            self._error("query", order.key, status, f"GET /orders/{order.number}: want {want}, got {data!r}")


def _key_of_request_id(request_id):
    """The Trader Idempotency-Key inside a stored request id (the front-end may prefix it), or None."""
    if not isinstance(request_id, str):
        return None
    at = request_id.find(Trader.KEY_PREFIX + "-")
    return request_id[at:] if at >= 0 else None


def replay_log(rows, initial_quantities, limit=10):
    """Replay order rows in number order from the initial catalog: the replay invariant.

    A buy never takes a stock below zero when the log is replayed by number, because the
    numbers are the order in which the catalog executed the trades. Returns ({name: quantity
    after the last row}, [violations]): one violation per row that names an unknown stock or
    takes a quantity below zero, each with the stock's previous entries as an excerpt.
    initial_quantities is {name: quantity} or {name: (price, quantity)}.
    """
    qty = {name: (q[1] if isinstance(q, tuple) else q) for name, q in initial_quantities.items()}
    recent = {}  # name -> the last few (number, type, quantity, after) for the excerpt
    out = []
    below = 0
    for r in sorted(rows, key=lambda row: row["number"]):
        name = r["name"]
        if name not in qty:
            out.append(f"order {r['number']} names unknown stock {name!r}")
            continue
        before = qty[name]
        qty[name] += r["quantity"] if r["type"] == "sell" else -r["quantity"]
        tail = recent.setdefault(name, [])
        if qty[name] < 0:
            below += 1
            if below <= limit:
                prev = ", ".join(f"#{n} {t} {q} -> {a}" for n, t, q, a in tail[-4:])
                out.append(f"replay: order {r['number']} {r['type']} {name} {r['quantity']} takes"
                           f" {name} from {before} to {qty[name]} (previous: {prev or 'none'})")
        tail.append((r["number"], r["type"], r["quantity"], qty[name]))
        del tail[:-8]
    if below > limit:
        out.append(f"replay: ... {below} orders take a quantity below zero in all")
    return qty, out


def catalog_order_violations(cluster, rows, limit=10):
    """Numbers versus the catalog's own execution order, where catalog.db records it.

    With a journal (applied.number), every logged order must carry the number the catalog gave
    its request id, and every journal entry the catalog still keeps must be in the log at its
    number. Else, with versions (applied.version: the global version the trade produced), the
    logged orders sorted by number must have increasing versions. Returns [] when catalog.db
    records neither.
    """
    applied = db_applied(cluster)
    if applied is None:
        return []
    done = [a for a in applied if a["applied"]]
    out = []
    if any(a["number"] is not None for a in done):
        journal = {a["request_id"]: a for a in done}
        by_number = {r["number"]: r for r in rows}
        wrong = 0
        for r in rows:
            a = journal.get(r.get("request_id"))
            if a is not None and a["number"] != r["number"]:
                wrong += 1
                if wrong <= limit:
                    out.append(f"catalog order: order {r['number']} ({r['type']} {r['name']}"
                               f" {r['quantity']}, request_id {r.get('request_id')!r}) is"
                               f" journal entry {a['number']} in the catalog")
        for a in sorted(done, key=lambda a: a["number"] if a["number"] is not None else -1):
            r = by_number.get(a["number"])
            if a["number"] is not None and (r is None or r.get("request_id") != a["request_id"]):
                wrong += 1
                if wrong <= limit:
                    out.append(f"catalog order: journal entry {a['number']} ({a['type']}"
                               f" {a['name']} {a['quantity']}, request_id {a['request_id']!r})"
                               f" is not in the log at that number (log has"
                               f" {r.get('request_id') if r else None!r})")
        if wrong > limit:
            out.append(f"catalog order: ... {wrong} differences between the log and the journal")
        return out
    version = {a["request_id"]: a["version"] for a in done if a["version"] is not None}
    if not version:
        return []
    last = None  # (version, number)
    inversions = 0
    for r in sorted(rows, key=lambda row: row["number"]):
        v = version.get(r.get("request_id"))
        if v is None:
            continue
        if last is not None and v < last[0]:
            inversions += 1
            if inversions <= limit:
                out.append(f"catalog order: order {r['number']} ({r['type']} {r['name']}"
                           f" {r['quantity']}) was executed as catalog version {v}, before order"
                           f" {last[1]} (version {last[0]})")
        if last is None or v > last[0]:
            last = (v, r["number"])
    if inversions > limit:
        out.append(f"catalog order: ... {inversions} orders numbered after a trade the catalog"
                   f" executed later")
    return out


def find_invariant_violations(cluster, acked_orders, initial_quantities, replica_ids=None,
                              rejected_keys=(), unknown_keys=None, query=True, limit=10):
    """SPEC §3 invariants, to be checked once the replicas are up and idle (wait_replicas_idle).
    Returns a list of human-readable violations (empty when all hold):

      - the orders tables of all replicas (default: all) are identical in
        (number, request_id, name, type, quantity) and in epoch;
      - numbers are dense from 0; no request_id appears twice;
      - every acknowledged order is in the log with its fields and its key, no two acknowledged
        orders share a number, and GET /orders/{n} on the front-end returns it (query=True);
      - no order answered 409 is in the log; when unknown_keys is given (all traffic came from
        Traders), every logged order is an acknowledged one or one in unknown_keys;
      - replay: the log replayed by number from the initial catalog never takes a quantity
        below zero (replay_log) and, where catalog.db records versions, numbers follow the
        catalog's execution order (catalog_order_violations);
      - catalog.db: for every stock, initial + sells - buys over the log == quantity; and, when
        unknown_keys is given, the catalog's applied trades (db_applied) are exactly the logged
        request ids (a trade whose outcome its client never learned included: none orphaned).
    initial_quantities is {name: quantity} (or {name: (price, quantity)} as in
    Cluster.initial_stocks). acked_orders are AckedOrder (or anything with number, key, name,
    type, quantity).
    """
    out = []

    def bad(msg):
        out.append(msg)

    ids = list(replica_ids or cluster.replica_ids())
    logs = {rid: db_orders(cluster, rid) for rid in ids}
    fields = ("number", "request_id", "name", "type", "quantity")
    ref_id = ids[0]
    ref = logs[ref_id]
    for rid in ids[1:]:
        for cols in (fields, ("number", "epoch")):
            mine = [tuple(r.get(c) for c in cols) for r in logs[rid]]
            theirs = [tuple(r.get(c) for c in cols) for r in ref]
            if mine != theirs:
                first = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b),
                             min(len(mine), len(theirs)))
                bad(f"order{rid} and order{ref_id} differ in {cols}: {len(mine)} vs {len(theirs)} rows,"
                    f" first difference at row {first}: "
                    f"{mine[first] if first < len(mine) else None} vs "
                    f"{theirs[first] if first < len(theirs) else None}")
                break

    numbers = [r["number"] for r in ref]
    if numbers != list(range(len(ref))):
        first = next((i for i, n in enumerate(numbers) if n != i), None)
        bad(f"order{ref_id}: numbers not dense from 0: row {first} has number {numbers[first]}")

    by_rid = {}
    for r in ref:
        by_rid.setdefault(r.get("request_id"), []).append(r["number"])
    dups = {k: v for k, v in by_rid.items() if len(v) > 1}
    for k, v in list(dups.items())[:limit]:
        bad(f"request_id {k!r} appears {len(v)} times, numbers {v}")

    by_number = {r["number"]: r for r in ref}
    acked_by_number = {}
    missing = 0
    for a in acked_orders:
        if a.number in acked_by_number:
            bad(f"two acknowledged orders got number {a.number}: keys {acked_by_number[a.number].key}"
                f" and {a.key}")
        acked_by_number[a.number] = a
        row = by_number.get(a.number)
        if row is None:
            missing += 1
            if missing <= limit:
                bad(f"acknowledged order {a.number} (key {a.key}) is not in the log")
            continue
        want = (a.name, a.type, a.quantity, a.key)
        got = (row["name"], row["type"], row["quantity"], _key_of_request_id(row.get("request_id")))
        if want != got:
            bad(f"acknowledged order {a.number}: sent {want}, log has {got} "
                f"(request_id {row.get('request_id')!r})")
    if missing > limit:
        bad(f"... {missing} acknowledged orders missing in all")

    logged_keys = {_key_of_request_id(r.get("request_id")): r["number"] for r in ref}
    for key in rejected_keys:
        if key in logged_keys:
            bad(f"order with key {key} was answered 409 but is in the log as {logged_keys[key]}")
    unknown = set(unknown_keys) if unknown_keys is not None else None
    if unknown is not None:
        acked_keys = {a.key for a in acked_orders}
        phantoms = [(n, r.get("request_id")) for n, r in sorted(by_number.items())
                    if _key_of_request_id(r.get("request_id")) not in acked_keys
                    and _key_of_request_id(r.get("request_id")) not in unknown]
        for n, rid in phantoms[:limit]:
            bad(f"order {n} (request_id {rid!r}) is in the log but was never acknowledged")

    expected, replay_bad = replay_log(ref, initial_quantities, limit=limit)
    out.extend(replay_bad)
    out.extend(catalog_order_violations(cluster, ref, limit=limit))
    actual = db_quantities(cluster)
    for name in sorted(set(expected) | set(actual)):
        if expected.get(name) != actual.get(name):
            bad(f"stock {name}: initial + sells - buys over the log = {expected.get(name)},"
                f" catalog.db has {actual.get(name)}")

    applied = db_applied(cluster)  # None without such a table: the quantity check stands alone
    if applied is not None:
        applied_ok = {a["request_id"] for a in applied if a["applied"]}
        logged = set(by_rid)
        not_applied = sorted(logged - applied_ok)
        for rid in not_applied[:limit]:
            bad(f"order {by_rid[rid]} (request_id {rid!r}) is in the log but not applied in the catalog")
        # Whether or not its client learned the outcome, a trade the catalog applied must be in
        # the log once the replicas are idle (issue 9: no orphaned trades).
        extra = sorted(applied_ok - logged)
        if unknown is not None:
            for rid in extra[:limit]:
                outcome = "unknown to its client" if _key_of_request_id(rid) in unknown else "known"
                bad(f"catalog applied request_id {rid!r} (outcome {outcome}) but no order in the"
                    f" log has it (an orphaned trade)")

    if query:
        failures = 0
        for a in acked_orders:
            reply = cluster.get(f"/orders/{a.number}")
            got = reply.json.get("data") if reply.status == 200 and isinstance(reply.json, dict) else None
            want = {"number": a.number, "name": a.name, "type": a.type, "quantity": a.quantity}
            if not isinstance(got, dict) or {k: got.get(k) for k in want} != want:
                failures += 1
                if failures <= limit:
                    bad(f"GET /orders/{a.number}: want {want}, got {reply.status} {reply.body[:200]!r}")
        if failures > limit:
            bad(f"... {failures} GET /orders mismatches in all")
    return out


def check_invariants(cluster, acked_orders, initial_quantities, **kwargs):
    """find_invariant_violations(), raising AssertionError listing every violation.
    Returns a short summary {"orders", "acked"} when everything holds."""
    violations = find_invariant_violations(cluster, acked_orders, initial_quantities, **kwargs)
    if violations:
        raise AssertionError("SPEC §3 invariants violated:\n  " + "\n  ".join(violations))
    ids = kwargs.get("replica_ids") or cluster.replica_ids()
    return {"orders": len(db_orders(cluster, ids[0])), "acked": len(acked_orders)}
