"""Shared helpers for integration tests: start real llmlimitd processes and talk HTTP to them.

Only the standard library is used. Every wait polls a condition against a deadline; nothing
sleeps for a fixed time when a condition can be checked instead.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

LLMLIMITD = os.environ.get("LLMLIMITD", os.path.join(os.path.dirname(__file__), "../../build/llmlimitd"))
BENCH = os.environ.get("LLMLIMIT_BENCH", os.path.join(os.path.dirname(__file__), "../../build/llmlimit-bench"))

FAILURES = []


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


class Node:
    """One llmlimitd process on 127.0.0.1 with its own keys file and log."""

    def __init__(self, keys, extra_args=(), env=None):
        self.dir = tempfile.mkdtemp(prefix="llmlimit-it-")
        self.keys_path = os.path.join(self.dir, "keys.json")
        self.write_keys(keys)
        self.log_path = os.path.join(self.dir, "node.log")
        self.extra_args = list(extra_args)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.port = None

    def write_keys(self, keys):
        text = keys if isinstance(keys, str) else json.dumps(keys, indent=2)
        tmp = self.keys_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.keys_path)

    def start(self, timeout=10.0):
        for _ in range(5):
            self.port = free_port()
            args = [LLMLIMITD, "--listen", "127.0.0.1:%d" % self.port, "--keys", self.keys_path]
            args += self.extra_args
            self.log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
            try:
                wait_until(self._healthy, timeout=timeout, what="llmlimitd /healthz")
                return self
            except AssertionError:
                if self.proc.poll() is None:
                    raise
                # Lost the race for the port, or a real start failure: retry, then report.
                self.log.close()
        raise AssertionError("llmlimitd did not start; log:\n" + self.read_log())

    def _healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError("llmlimitd exited with %s" % self.proc.returncode)
        try:
            status, _, _ = self.request("GET", "/healthz", timeout=1.0)
            return status == 200
        except OSError:
            return False

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def conn(self, timeout=10.0):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, key=None, timeout=10.0):
        """One request on a fresh connection; returns (status, headers dict lower-cased, body bytes)."""
        c = self.conn(timeout)
        try:
            return do_request(c, method, path, body, headers, key)
        finally:
            c.close()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=None, timeout=10.0):
        """Stops the process and returns its exit code. Fails the test on a sanitizer report."""
        # (The default cannot be written as signal.SIGTERM: in this class body `signal` is the
        # method above, which made the module fail to import.)
        if sig is None:
            sig = signal.SIGTERM
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                check(False, "llmlimitd did not exit within %.0fs of signal %d" % (timeout, sig))
        self.log.close()
        log = self.read_log()
        check("ERROR: AddressSanitizer" not in log and "runtime error:" not in log
              and "LeakSanitizer" not in log, "sanitizer report in log:\n" + log[-4000:])
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        rc = self.stop()
        if exc[0] is None:
            check(rc == 0, "llmlimitd exit code %s; log tail:\n%s" % (rc, self.read_log()[-3000:]))


def do_request(c, method, path, body=None, headers=None, key=None):
    h = dict(headers or {})
    if key is not None:
        h["Authorization"] = "Bearer " + key
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def chat_body(content="hello there", max_tokens=None, **kw):
    b = {"model": "mock-gpt", "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        b["max_tokens"] = max_tokens
    b.update(kw)
    return b


def raw_exchange(port, data, timeout=5.0, read_until_close=True):
    """Sends raw bytes and returns everything the server sends until it closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if not read_until_close:
                break
        return out
    finally:
        s.close()


def check(cond, msg):
    """Records a failure instead of stopping, so one run reports every broken assertion."""
    if not cond:
        FAILURES.append(msg)
        print("FAIL:", msg, file=sys.stderr)
    return cond


def run(tests):
    """Runs test functions in order; prints 'N passed, N failed' and exits non-zero on failure."""
    passed = failed = 0
    for t in tests:
        before = len(FAILURES)
        try:
            t()
        except Exception as e:  # noqa: BLE001 - a crashed test is a failed test
            import traceback
            traceback.print_exc()
            FAILURES.append("%s raised %r" % (t.__name__, e))
        if len(FAILURES) == before:
            passed += 1
            print("ok   ", t.__name__)
        else:
            failed += 1
            print("FAIL ", t.__name__)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


# ---------------------------------------------------------------------------------------------
# Helpers added for test_api/test_ops/test_reload/test_exactness (existing functions unchanged).

import re as _re

GO_DURATION_RE = _re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


def go_duration_ms(s):
    """Parses a Go time.Duration string ("0s", "120ms", "1.5s", "6m0s", "1h2m3s") into ms.
    Returns None when s is not in that syntax."""
    if s is None or not GO_DURATION_RE.match(s):
        return None
    total = 0.0
    for num, unit in _re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", s):
        total += float(num) * {"h": 3600000, "m": 60000, "s": 1000, "ms": 1}[unit]
    return total


def json_or_none(body):
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def check_error(resp, status, param=Ellipsis, code=Ellipsis, what=""):
    """Checks resp = (status, headers, body) is `status` with an OpenAI error body:
    {"error": {"message": str, "type": str, "param": str|null, "code": str|null}}.
    param/code, when given, must equal the body's. Returns the error object (or {})."""
    got, headers, body = resp
    tag = "%s: " % what if what else ""
    check(got == status, "%sstatus %s, expected %s; body %r" % (tag, got, status, body[:300]))
    doc = json_or_none(body)
    ok = check(isinstance(doc, dict) and set(doc) == {"error"} and isinstance(doc["error"], dict),
               "%serror body is not {\"error\": {...}}: %r" % (tag, body[:300]))
    if not ok:
        return {}
    err = doc["error"]
    check(set(err) >= {"message", "type", "param", "code"},
          "%serror object lacks message/type/param/code: %r" % (tag, err))
    check(isinstance(err.get("message"), str) and err.get("message"),
          "%serror.message not a non-empty string: %r" % (tag, err))
    check(isinstance(err.get("type"), str) and err.get("type"),
          "%serror.type not a non-empty string: %r" % (tag, err))
    check(err.get("param") is None or isinstance(err.get("param"), str),
          "%serror.param not string/null: %r" % (tag, err))
    check(err.get("code") is None or isinstance(err.get("code"), str),
          "%serror.code not string/null: %r" % (tag, err))
    ctype = headers.get("content-type", "")
    check(ctype.startswith("application/json"),
          "%serror content-type %r, expected application/json" % (tag, ctype))
    if param is not Ellipsis:
        check(err.get("param") == param, "%serror.param %r, expected %r (message %r)"
              % (tag, err.get("param"), param, err.get("message")))
    if code is not Ellipsis:
        check(err.get("code") == code, "%serror.code %r, expected %r" % (tag, err.get("code"), code))
    return err


def sock_name(c):
    """The local address of an http.client connection's socket (None when not connected):
    equal before and after a series of requests means no reconnect happened."""
    return c.sock.getsockname() if c.sock is not None else None


def run_cli(args, timeout=10.0):
    """Runs llmlimitd with args to completion; returns (rc, stdout, stderr) as text. A daemon
    that does not exit within timeout is killed and reported."""
    p = subprocess.Popen([LLMLIMITD] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        check(False, "llmlimitd %r still running after %.0fs" % (args, timeout))
    out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    check("ERROR: AddressSanitizer" not in err and "runtime error:" not in err
          and "LeakSanitizer" not in err, "sanitizer report from llmlimitd %r:\n%s" % (args, err[-4000:]))
    return p.returncode, out, err


_TRACKED = []


def tracked(node):
    """Registers a Node for cleanup at interpreter exit: a process still running is killed, and
    its temporary directory is removed when no check failed (kept for post-mortems otherwise)."""
    _TRACKED.append(node)
    return node


def _cleanup_tracked():
    import shutil
    for n in _TRACKED:
        if n.proc is not None and n.proc.poll() is None:
            n.proc.kill()
            n.proc.wait()
        if not FAILURES and not os.environ.get("LLMLIMIT_KEEP_DIRS"):
            shutil.rmtree(n.dir, ignore_errors=True)


import atexit as _atexit  # noqa: E402
_atexit.register(_cleanup_tracked)
