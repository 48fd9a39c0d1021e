#!/usr/bin/env python3
"""Hostile clients that are slow rather than malformed, and replayed internal messages.

- slowloris: a client sending one byte per second is cut off within idle_timeout_s
  (default 15 s, the bar is 30 s) while other clients keep being served;
- thousands of idle connections do not stop a normal client;
- replication replay: an append or a leader notice from an older epoch is refused
  and changes nothing; a replayed append of the current epoch is a no-op.
"""

import http.client
import os
import resource
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import bazaar  # noqa: E402


def _raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class LookupCheck:
    """A normal client's lookup, for the test cases below: true when it is served."""

    def lookup_ok(self):
        reply = bazaar.get(self.cluster.frontend_url("/stocks/GameStart"), timeout=5)
        return reply.status == 200


class TestSlowClients(LookupCheck, bazaar.ClusterTestCase):
    replicas = 1

    def test_slowloris_is_cut_off_and_others_are_served(self):
        host, port = self.cluster.address("frontend")
        sock = socket.create_connection((host, port), timeout=5)
        request = b"GET /stocks/GameStart HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        start = time.monotonic()
        cut_after = None
        served = 0
        for byte in request:
            try:
                sock.send(bytes([byte]))
            except OSError:
                cut_after = time.monotonic() - start
                break
            # Other clients are served while the slow one dribbles.
            self.assertTrue(self.lookup_ok(), "a normal client was not served")
            served += 1
            time.sleep(1.0)
            if time.monotonic() - start > bazaar.scaled(40):
                break
        if cut_after is None:
            # The socket may be shut down without the next send failing yet: read it.
            sock.settimeout(2)
            try:
                cut = sock.recv(100) == b""
            except OSError:
                cut = True
            if cut:
                cut_after = time.monotonic() - start
        sock.close()
        print(f"slowloris cut off after {cut_after} s ({served} normal lookups served meanwhile)",
              file=sys.stderr)
        self.assertIsNotNone(cut_after, "a one-byte-per-second client was never cut off")
        self.assertLess(cut_after, bazaar.scaled(30))
        self.assertGreaterEqual(
            self.cluster.metric("bazaar_frontend_http_slow_connections_closed_total"), 1)

    def lookup_ok_elsewhere(self):
        """A lookup on a fresh connection from 127.0.0.2: the idle connections below all
        come from 127.0.0.1, which the per-address limit (1024) caps on its own."""
        host, port = self.cluster.address("frontend")
        conn = http.client.HTTPConnection(host, port, timeout=5, source_address=("127.0.0.2", 0))
        try:
            conn.request("GET", "/stocks/GameStart")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    def test_thousands_of_idle_connections(self):
        count = 2000
        limit = _raise_fd_limit(count + 200)
        if limit < count + 100:
            self.skipTest(f"descriptor limit {limit} is too low for {count} connections")
        host, port = self.cluster.address("frontend")
        socks = []
        try:
            for _ in range(count):
                socks.append(socket.create_connection((host, port), timeout=5))
            start = time.monotonic()
            for _ in range(20):
                self.assertTrue(self.lookup_ok_elsewhere(), "a normal client was not served")
            elapsed = time.monotonic() - start
            print(f"{count} idle connections open: 20 lookups took {elapsed * 1000:.0f} ms",
                  file=sys.stderr)
        finally:
            for s in socks:
                s.close()
        self.assertTrue(self.lookup_ok())


class TestUnreadReplies(LookupCheck, bazaar.ClusterTestCase):
    """A client that sends requests and never reads the replies. Once the socket buffers
    are full the server cannot send; the connection must still be cut off within
    idle_timeout_s, by our deadline (libmicrohttpd's own timeout is off: it read the clock
    and took a daemon-wide mutex per receive and send; src/common/http_server.c)."""
    replicas = 1
    overrides = {"cluster": {"idle_timeout_s": 2}}
    METRIC = "bazaar_frontend_http_slow_connections_closed_total"

    def test_client_that_never_reads_is_cut_off(self):
        before = self.cluster.metric(self.METRIC)
        host, port = self.cluster.address("frontend")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, port))
        # Pipelined GET /metrics (tens of KiB each), sent until the server stops reading
        # them (its replies fill both sockets' buffers) or 4 MiB of requests are out.
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.setblocking(False)
        sent, start = 0, time.monotonic()
        try:
            while sent < 4 << 20 and time.monotonic() - start < bazaar.scaled(5):
                try:
                    sent += sock.send(request * 64)
                except BlockingIOError:
                    break
            stalled = time.monotonic()
            cut = bazaar.wait_for(lambda: self.cluster.metric(self.METRIC) > before,
                                  15, "the unread connection cut off")
            elapsed = time.monotonic() - stalled
        finally:
            sock.close()
        print(f"{sent} bytes of requests sent; cut off {elapsed:.1f} s after the client "
              f"stopped reading", file=sys.stderr)
        self.assertTrue(cut)
        self.assertLess(elapsed, bazaar.scaled(6))
        self.assertTrue(self.lookup_ok())


@bazaar.skip_unless_mode("primary-backup", "leader notices and appends are primary-backup's "
                         "messages (Raft's are libraft's, tested in unit.order.raftnode)")
class TestReplicationReplay(bazaar.ClusterTestCase):
    replicas = 3

    def follower(self):
        leader = bazaar.wait_for(lambda: bazaar.find_leader(self.cluster), 20, "a leader")
        return leader, next(r for r in self.cluster.replica_ids() if r != leader)

    def order_rows(self):
        return {rid: bazaar.order_view(bazaar.db_orders(self.cluster, rid))
                for rid in self.cluster.replica_ids()}

    def test_old_epoch_and_replayed_appends(self):
        for i in range(5):
            reply = self.cluster.post_json(
                "/orders", {"name": "GameStart", "type": "buy", "quantity": 1},
                headers={"Idempotency-Key": f"replay-{i}"})
            self.assertEqual(reply.status, 200, reply.body)
        idle = bazaar.wait_replicas_idle(self.cluster)
        leader, follower = self.follower()
        epoch = idle["epoch"]
        page = self.cluster.internal_get(self.cluster.order_url(leader, "/log/0"))
        self.assertEqual(page.status, 200, page.body)
        self.assertEqual(page.headers.get("Content-Type"), bazaar.BINARY)
        entries = bazaar.decode_slice(page.body)
        self.assertEqual(len(entries), 5)
        self.assertEqual([e["request_id"] for e in entries],
                         [f"k:replay-{i}" for i in range(5)])
        before = self.order_rows()
        url = self.cluster.order_url(follower, "/replicate")

        # A replayed append of the current epoch (the whole log again) changes nothing.
        replay = bazaar.encode_append(epoch, leader, -1, 0, -1, entries)
        reply = self.cluster.internal_post_binary(url, replay)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(bazaar.decode_append_reply(reply.body),
                         {"ok": True, "match": 4, "last": 4})
        self.assertEqual(self.order_rows(), before)

        # Make sure there is an older epoch to replay: announce the same leader in a newer
        # epoch, as a front-end's new selection would (a restarted front-end now follows the
        # leader it finds instead of electing again).
        for rid in [leader] + [r for r in self.cluster.replica_ids() if r != leader]:
            reply = self.cluster.internal_post_json(self.cluster.order_url(rid, "/leader"),
                                                    {"leader": leader, "epoch": epoch + 1})
            self.assertEqual(reply.status, 200, reply.body)
        newer = bazaar.wait_for(
            lambda: (lambda st: st["epoch"] if st["epoch"] > epoch else None)(
                bazaar.replica_state(self.cluster, follower)), 20, "a newer epoch")
        leader = bazaar.wait_for(lambda: bazaar.find_leader(self.cluster), 20, "a leader")
        before = self.order_rows()

        # The earlier append, replayed after the epoch moved on, is refused.
        self.assertError(self.cluster.internal_post_binary(url, replay), 409)
        # So is an append from the old epoch that would rewrite history.
        forged = bazaar.encode_append(epoch, follower, -1, 0, -1, [
            {"number": 0, "epoch": epoch, "request_id": "forged", "name": "GameStart",
             "type": "sell", "quantity": 999}])
        self.assertError(self.cluster.internal_post_binary(url, forged), 409)
        # And a leader notice from the old epoch.
        reply = self.cluster.internal_post_json(self.cluster.order_url(follower, "/leader"),
                                                {"leader": follower, "epoch": epoch})
        self.assertError(reply, 409)
        self.assertEqual(bazaar.find_leader(self.cluster), leader)
        self.assertEqual(self.order_rows(), before)

        # Wrong secret: refused before anything is decoded.
        reply = bazaar.post(url, replay, headers={bazaar.SECRET_HEADER: "wrong",
                                                  "Content-Type": bazaar.BINARY})
        self.assertError(reply, 401)

        # A restarted follower still refuses the old epoch (promised is durable).
        self.cluster.restart_process(f"order{follower}")
        state = bazaar.replica_state(self.cluster, follower)
        self.assertGreaterEqual(state["promised"], newer)
        self.assertError(self.cluster.internal_post_binary(url, replay), 409)


if __name__ == "__main__":
    unittest.main()
