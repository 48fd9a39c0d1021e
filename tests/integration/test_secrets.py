#!/usr/bin/env python3
"""The cluster secret (issue 12 finding 9).

- a BAZAAR_SECRET over the limit is an error, not silently replaced by the file's;
- the public default secret refuses to start on a non-loopback address;
- `bazaar up` hands its children the secret through the environment: no child's
  argv (ps) and no launcher log line (the "restart by hand" report) shows it.

    BAZAAR_BIN_DIR=build/bin python3 tests/integration/test_secrets.py [-v]
"""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import bazaar  # noqa: E402


def write_config(tmp, secret="file-secret", frontend_host="127.0.0.1"):
    stocks = os.path.join(tmp, "stocks.csv")
    with open(stocks, "w", encoding="ascii") as f:
        f.write(bazaar.TEST_STOCKS_CSV)
    path = os.path.join(tmp, "bazaar.conf")
    with open(path, "w", encoding="ascii") as f:
        f.write(f"[cluster]\ndata_dir = {tmp}/data\nsecret = {secret}\n"
                f"[catalog]\nlisten = 127.0.0.1:{bazaar.free_port()}\nstocks = {stocks}\n"
                f"[frontend]\nlisten = {frontend_host}:{bazaar.free_port()}\n"
                f"[order.1]\nlisten = 127.0.0.1:{bazaar.free_port()}\n")
    return path


def run(argv, env=None, timeout=10):
    return subprocess.run(argv, env=env, capture_output=True, text=True,
                          timeout=bazaar.scaled(timeout))


def children_of(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


class TestSecrets(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="bazaar-secrets-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.bin = os.environ.get("BAZAAR_BIN_DIR", "build/bin")

    def test_over_long_env_secret_is_an_error(self):
        config = write_config(self.tmp)
        env = dict(os.environ, BAZAAR_SECRET="s" * 128)
        for exe in ("bazaar-catalog", "bazaar-frontend"):
            with self.subTest(exe):
                out = run([os.path.join(self.bin, exe), "--config", config], env=env)
                self.assertNotEqual(out.returncode, 0, out.stderr)
                self.assertIn("BAZAAR_SECRET", out.stderr)
                self.assertIn("127", out.stderr)

    def test_default_secret_refused_beyond_loopback(self):
        config = write_config(self.tmp, secret="dev-secret", frontend_host="0.0.0.0")
        env = {k: v for k, v in os.environ.items() if k != "BAZAAR_SECRET"}
        out = run([os.path.join(self.bin, "bazaar-frontend"), "--config", config], env=env)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("dev-secret", out.stderr)
        self.assertIn("0.0.0.0", out.stderr)
        # A real secret (from the environment) makes the same file valid: the process then
        # starts; stop it at once.
        env["BAZAAR_SECRET"] = "a-real-secret"
        proc = subprocess.Popen([os.path.join(self.bin, "bazaar-frontend"), "--config", config],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(bazaar.scaled(0.5))
            self.assertIsNone(proc.poll(), "refused to start with a real secret")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=bazaar.scaled(10))

    def test_launcher_passes_the_secret_in_the_environment(self):
        secret = "flag-" + secrets.token_hex(16)
        config = write_config(self.tmp)
        log_path = os.path.join(self.tmp, "launcher.log")
        env = {k: v for k, v in os.environ.items() if k != "BAZAAR_SECRET"}
        with open(log_path, "w", encoding="utf-8") as log:
            launcher = subprocess.Popen(
                [os.path.join(self.bin, "bazaar"), "up", "--config", config, "--set",
                 f"cluster.secret={secret}"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            def log_text():
                with open(log_path, encoding="utf-8", errors="replace") as f:
                    return f.read()
            bazaar.wait_for(lambda: "Stock Bazaar is up" in log_text() or launcher.poll() is not None,
                            30, "the cluster to start")
            self.assertIsNone(launcher.poll(), log_text())
            kids = children_of(launcher.pid)
            self.assertEqual(len(kids), 3, kids)
            for pid in kids:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                self.assertFalse(any(secret.encode() in a for a in argv), argv)
                self.assertFalse(any(b"cluster.secret" in a for a in argv), argv)
                with open(f"/proc/{pid}/environ", "rb") as f:
                    environ = f.read().split(b"\0")
                self.assertIn(f"BAZAAR_SECRET={secret}".encode(), environ)
            # The services really use it: an internal route accepts it.
            with open(config, encoding="ascii") as f:
                catalog = [ln.split("=", 1)[1].strip() for ln in f if ln.startswith("listen")][0]
            for given, status in ((secret, 400), ("file-secret", 401)):
                reply = bazaar.post(f"http://{catalog}/trade", b"{}",
                                    headers={"X-Bazaar-Secret": given})
                self.assertEqual(reply.status, status, reply.body)
            # A child that dies is reported with its command line: without the secret.
            os.kill(kids[0], signal.SIGKILL)
            bazaar.wait_for(lambda: "not restarting it" in log_text(), 10, "the exit report")
            time.sleep(0.2)
            self.assertNotIn(secret, log_text())
        finally:
            launcher.send_signal(signal.SIGTERM)
            try:
                launcher.wait(timeout=bazaar.scaled(15))
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()


if __name__ == "__main__":
    unittest.main()
