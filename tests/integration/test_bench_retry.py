#!/usr/bin/env python3
"""llmlimit-bench retries, as the OpenAI SDKs do, a request that timed out and one answered 503
(a node joining its cluster or shutting down), on another node and within --retries, and counts
them. The nodes are small HTTP/1.1 servers on 127.0.0.1 in this process that stall or answer
503 on cue; each check reads the bench's --json report and what the servers saw."""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

OK_BODY = json.dumps({"id": "chatcmpl-fake", "object": "chat.completion", "choices": []}).encode()
UNAVAILABLE_BODY = json.dumps({"error": {"message": "node is joining its cluster",
                                         "type": "server_error", "param": None,
                                         "code": "unavailable"}}).encode()


class Fake:
    """A keep-alive HTTP server; plan(n) says how to answer its n-th request (from 0): "ok",
    "503", or "stall" (never answer; the bench must give up on it)."""

    def __init__(self, plan):
        self.plan = plan
        self.lock = threading.Lock()
        self.seen = []          # (api key, what) per request, in arrival order
        self.conns = 0          # connections accepted
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes

            def setup(self):
                super().setup()
                with fake.lock:
                    fake.conns += 1

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                key = (self.headers.get("Authorization") or "").replace("Bearer ", "", 1)
                with fake.lock:
                    what = fake.plan(len(fake.seen))
                    fake.seen.append((key, what))
                if what == "stall":
                    fake.release.wait(20)
                    self.close_connection = True
                    return
                status, body = (200, OK_BODY) if what == "ok" else (503, UNAVAILABLE_BODY)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def keys(self, what):
        with self.lock:
            return [k for k, w in self.seen if w == what]

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def run_bench(fakes, *args):
    """Runs the bench closed-loop against fakes; returns (report, wall seconds)."""
    fd, path = tempfile.mkstemp(prefix="bench-retry-", suffix=".json")
    os.close(fd)
    cmd = [harness.BENCH, "--nodes"] + [f.url for f in fakes] + ["--quiet", "--json", path]
    cmd += [str(a) for a in args]
    t = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=30)
        wall = time.monotonic() - t
        err = p.stderr.decode("utf-8", "replace")
        check(p.returncode == 0, "bench exit %s: %s" % (p.returncode, err[-2000:]))
        check("AddressSanitizer" not in err and "runtime error:" not in err
              and "LeakSanitizer" not in err, "sanitizer report from the bench:\n" + err[-4000:])
        with open(path) as f:
            return json.load(f), wall
    finally:
        os.unlink(path)


def check_totals(r, what, requests, ok, retried, unavailable, statuses):
    check(r["total_requests"] == requests and r["successful_requests"] == ok,
          "%s: %s requests, %s ok; expected %s, %s" % (what, r["total_requests"],
                                                       r["successful_requests"], requests, ok))
    check(r["retried"] == retried, "%s: retried %s, expected %s" % (what, r["retried"], retried))
    check(r["unavailable"] == unavailable,
          "%s: unavailable %s, expected %s" % (what, r["unavailable"], unavailable))
    check(r["status_counts"] == statuses,
          "%s: status_counts %r, expected %r" % (what, r["status_counts"], statuses))


def test_timeout_retried_on_other_node():
    a = Fake(lambda n: "stall" if n == 0 else "ok")
    b = Fake(lambda n: "ok")
    try:
        r, _ = run_bench([a, b], "--concurrent", 2, "--requests", 6, "--key-count", 6,
                         "--timeout-ms", 400, "--retries", 2)
    finally:
        a.stop()
        b.stop()
    check_totals(r, "timeout", 6, 6, 1, 0, {"200": 6})
    check(r["transport_errors"]["total"] == 0,
          "timeout: transport errors %r" % r["transport_errors"])
    na, nb = r["nodes"]
    check(na["retried"] == 1 and na["connection_errors"] == 1
          and na["connection_errors_by_kind"]["timeout"] == 1,
          "timeout: node A retried %s, connection errors %s %r" % (
              na["retried"], na["connection_errors"], na["connection_errors_by_kind"]))
    check(na["sent"] == na["requests"] + 1, "timeout: node A sent %s, ended %s: the timed-out "
          "attempt must not end there" % (na["sent"], na["requests"]))
    check(nb["retried"] == 0 and nb["connection_errors"] == 0 and nb["unavailable"] == 0,
          "timeout: node B %r" % nb)
    stalled = a.keys("stall")
    check(len(stalled) == 1 and stalled[0] in b.keys("ok"),
          "timeout: the stalled request (%r) was not answered by B (%r)" % (stalled, b.keys("ok")))
    # Latency runs from the first send: the retried request waited out the timeout.
    check(r["latency_ms"]["max"] >= 400, "timeout: max latency %s ms < --timeout-ms"
          % r["latency_ms"]["max"])


def test_503_retried_on_other_node():
    a = Fake(lambda n: "503" if n == 0 else "ok")
    b = Fake(lambda n: "ok")
    try:
        r, _ = run_bench([a, b], "--concurrent", 2, "--requests", 6, "--key-count", 6,
                         "--timeout-ms", 2000, "--retries", 2)
    finally:
        a.stop()
        b.stop()
    check_totals(r, "503", 6, 6, 1, 1, {"200": 6})
    check(r["http_errors"] == 0 and r["connection_errors"] == 0,
          "503: http errors %s, connection errors %s" % (r["http_errors"], r["connection_errors"]))
    na, nb = r["nodes"]
    check(na["unavailable"] == 1 and na["retried"] == 1 and na["connection_errors"] == 0,
          "503: node A %r" % na)
    check(na["sent"] == na["requests"] + 1, "503: node A sent %s, ended %s" % (na["sent"],
                                                                              na["requests"]))
    check(nb["unavailable"] == 0 and nb["retried"] == 0, "503: node B %r" % nb)
    check(a.conns == 1, "503: the bench opened %d connections to A; the one that got the 503 "
          "should have stayed in use" % a.conns)
    refused = a.keys("503")
    check(len(refused) == 1 and refused[0] in b.keys("ok"),
          "503: the request answered 503 (%r) was not answered by B (%r)" % (refused, b.keys("ok")))


def test_503_out_of_retries_is_the_response():
    a = Fake(lambda n: "503")
    try:
        r, _ = run_bench([a], "--concurrent", 1, "--requests", 1, "--timeout-ms", 2000,
                         "--retries", 2)
    finally:
        a.stop()
    check_totals(r, "503 x3", 1, 0, 2, 3, {"503": 1})
    check(r["http_errors"] == 1 and r["transport_errors"]["total"] == 0,
          "503 x3: http errors %s, transport %r" % (r["http_errors"], r["transport_errors"]))
    na = r["nodes"][0]
    check(na["sent"] == 3 and na["requests"] == 1 and na["unavailable"] == 3
          and na["retried"] == 2 and na["connection_errors"] == 0, "503 x3: node %r" % na)
    check(len(a.seen) == 3 and a.conns == 1, "503 x3: server saw %d requests on %d connections"
          % (len(a.seen), a.conns))


def test_timeout_out_of_retries_fails_in_time():
    a = Fake(lambda n: "stall")
    try:
        r, wall = run_bench([a], "--concurrent", 1, "--requests", 1, "--timeout-ms", 300,
                            "--retries", 1)
    finally:
        a.stop()
    check_totals(r, "stall x2", 1, 0, 1, 0, {})
    check(r["transport_errors"]["total"] == 1 and r["transport_errors"]["timeout"] == 1,
          "stall x2: transport errors %r" % r["transport_errors"])
    na = r["nodes"][0]
    check(na["sent"] == 2 and na["transport_errors"] == 1
          and na["connection_errors_by_kind"]["timeout"] == 2, "stall x2: node %r" % na)
    check(len(a.seen) == 2, "stall x2: server saw %d requests, expected 2" % len(a.seen))
    # Two attempts of 300 ms each, then the request ends: the time budget holds.
    check(0.6 <= r["elapsed_s"] < 3.0 and wall < 5.0,
          "stall x2: ran %.3f s (wall %.1f s), expected 0.6..3" % (r["elapsed_s"], wall))


if __name__ == "__main__":
    harness.run([test_timeout_retried_on_other_node, test_503_retried_on_other_node,
                 test_503_out_of_retries_is_the_response,
                 test_timeout_out_of_retries_fails_in_time])
