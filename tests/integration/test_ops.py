#!/usr/bin/env python3
"""Operating llmlimitd: /healthz, /metrics content, the command line (--help, bad flags, a bad
keys file at start) and graceful SIGTERM."""
import os
import re
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, chat_body, check_error, do_request  # noqa: E402

KEYS = {
    "tiers": {"default": {"rpm": 1000, "input_tpm": 100000, "output_tpm": 50000}},
    "keys": {"k_main": {"tier": "default"}, "k_ops": {"rpm": 2, "input_tpm": 100000, "output_tpm": 50000},
             "k_unused": {"tier": "default"}},
    "unknown_keys": "reject",
}

FLAGS = ["--listen", "--keys", "--max-body-bytes", "--max-header-bytes", "--read-timeout-ms",
         "--idle-timeout-ms", "--max-connections", "--max-keys", "--admission-log", "--log-level", "--help"]

LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text format -> (types {family: type}, samples [(name, {labels}, value)])."""
    types, samples = {}, []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            m = re.match(r"# TYPE (\S+) (\S+)", line)
            if m:
                types[m.group(1)] = m.group(2)
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$", line)
        if not check(m is not None, "metrics: unparseable line %r" % line):
            continue
        labels = dict(LABEL_RE.findall(m.group(3) or ""))
        try:
            v = float(m.group(4))
        except ValueError:
            check(False, "metrics: bad value in %r" % line)
            continue
        samples.append((m.group(1), labels, v))
    return types, samples


def scrape(node):
    status, h, body = node.request("GET", "/metrics")
    check(status == 200, "/metrics status %s" % status)
    check(h.get("content-type", "").startswith("text/plain"), "/metrics content-type %r" % h.get("content-type"))
    return parse_metrics(body.decode("utf-8", "replace"))


def new_node(keys=KEYS, args=()):
    n = harness.tracked(harness.Node(keys, extra_args=args))
    return n.start()



def test_healthz():
    n = new_node()
    try:
        status, _, _ = n.request("GET", "/healthz")
        check(status == 200, "/healthz without auth: %s" % status)
        status, _, _ = n.request("GET", "/healthz", key="anything-at-all")
        check(status == 200, "/healthz with an unknown bearer: %s" % status)
    finally:
        check(n.stop() == 0, "exit code after SIGTERM")


def test_metrics():
    n = new_node()
    held = []
    try:
        for _ in range(2):
            s, _, _ = n.request("POST", "/v1/chat/completions", chat_body(max_tokens=3), key="k_ops")
            check(s == 200, "k_ops request: %s" % s)
        s, _, _ = n.request("POST", "/v1/chat/completions", chat_body(max_tokens=3), key="k_ops")
        check(s == 429, "k_ops 3rd request: %s, expected 429" % s)
        s, _, _ = n.request("POST", "/v1/completions", {"model": "m", "prompt": "hi"}, key="k_main")
        check(s == 200, "completions: %s" % s)
        s, _, _ = n.request("GET", "/v1/nope", key="k_main")
        check(s == 404, "/v1/nope: %s" % s)

        # Two extra client connections kept open while scraping.
        for _ in range(2):
            c = n.conn()
            do_request(c, "GET", "/healthz")
            held.append(c)
        types, samples = scrape(n)
        names = {name for name, _, _ in samples}

        # Requests by endpoint and status.
        req = [(lb, v) for name, lb, v in samples if name == "llmlimit_http_requests_total"]
        check(types.get("llmlimit_http_requests_total") == "counter",
              "llmlimit_http_requests_total type %r" % types.get("llmlimit_http_requests_total"))
        if check(req, "no llmlimit_http_requests_total series; families: %s" % sorted(types)):
            check(all("endpoint" in lb and "status" in lb for lb, _ in req),
                  "llmlimit_http_requests_total without endpoint/status labels: %r" % req[:3])

            def count(endpoint_pred, status):
                return sum(v for lb, v in req if endpoint_pred(lb.get("endpoint", "")) and lb.get("status") == status)
            check(count(lambda e: "chat" in e, "200") == 2, "chat 200 count %r, expected 2: %r"
                  % (count(lambda e: "chat" in e, "200"), req))
            check(count(lambda e: "chat" in e, "429") == 1, "chat 429 count %r, expected 1"
                  % count(lambda e: "chat" in e, "429"))
            check(count(lambda e: "completions" in e and "chat" not in e, "200") == 1,
                  "completions 200 count %r, expected 1" % count(lambda e: "completions" in e and "chat" not in e, "200"))
            check(count(lambda e: True, "404") == 1, "404 count %r, expected 1" % count(lambda e: True, "404"))

        # 429s by limit.
        rl = [(lb, v) for name, lb, v in samples if name == "llmlimit_ratelimited_total"]
        if check(rl, "no llmlimit_ratelimited_total series; families: %s" % sorted(types)):
            check(sum(v for _, v in rl) == 1, "llmlimit_ratelimited_total sums to %r, expected 1: %r"
                  % (sum(v for _, v in rl), rl))
            check(any(v == 1 and any(re.search(r"request|rpm", x, re.I) for x in lb.values()) for lb, v in rl),
                  "no llmlimit_ratelimited_total series labelled requests/rpm with value 1: %r" % rl)

        # A latency histogram.
        hists = [f for f, t in types.items() if t == "histogram"]
        if check(hists, "no histogram family; families: %s" % sorted(types)):
            good = False
            for f in hists:
                buckets = [(lb, v) for name, lb, v in samples if name == f + "_bucket"]
                counts = [v for name, _, v in samples if name == f + "_count"]
                sums = [v for name, _, v in samples if name == f + "_sum"]
                inf = [v for lb, v in buckets if lb.get("le") == "+Inf"]
                check(buckets and counts and sums and inf, "histogram %s lacks _bucket/_sum/_count/+Inf" % f)
                check(sum(inf) == sum(counts), "histogram %s: +Inf buckets %r != counts %r" % (f, inf, counts))
                if re.search(r"latency|duration|seconds", f) and sum(counts) >= 4:
                    good = True
            check(good, "no latency histogram with >= 4 observations among %s" % hists)

        gauges = [f for f, t in types.items() if t == "gauge"]
        # Two keys were charged (k_main, k_ops); three are configured.
        active = [v for name, _, v in samples if name == "llmlimit_active_keys"]
        check(types.get("llmlimit_active_keys") == "gauge" and active == [2],
              "llmlimit_active_keys %r (type %r), expected one gauge sample of 2"
              % (active, types.get("llmlimit_active_keys")))
        configured = [v for name, _, v in samples if name == "llmlimit_configured_keys"]
        check(configured == [3], "llmlimit_configured_keys %r, expected 3" % configured)
        conn_g = [name for name in gauges if "connection" in name]
        conn_v = [v for name, _, v in samples if name in conn_g]
        check(conn_v and max(conn_v) >= 3, "connections gauge %r (%s), expected >= 3 with 3 open" % (conn_v, conn_g))
        for c in held:
            c.close()
        held = []

        # The gauge comes back down once the held connections are closed.
        if conn_g:
            def back_down():
                _, smp = scrape(n)
                return max([v for name, _, v in smp if name in conn_g] or [99]) <= 1
            try:
                harness.wait_until(back_down, timeout=10.0, what="connections gauge back to 1")
            except AssertionError as e:
                check(False, str(e))
        check(len(names) > 0, "metrics empty")
    finally:
        for c in held:
            c.close()
        check(n.stop() == 0, "exit code after SIGTERM")


def test_help():
    rc, out, err = harness.run_cli(["--help"])
    check(rc == 0, "--help exit code %s, stderr %r" % (rc, err[:300]))
    for f in FLAGS:
        check(re.search(re.escape(f) + r"\b", out) is not None, "--help does not mention %s:\n%s" % (f, out[:2000]))


def test_bad_flags():
    keys = harness.tracked(harness.Node(KEYS))  # only for its keys file
    port = harness.free_port()
    base = ["--listen", "127.0.0.1:%d" % port, "--keys", keys.keys_path]
    cases = [
        (["--bogus-flag"], r"bogus-flag"),
        (base + ["--max-body-bytes", "abc"], r"max-body-bytes"),
        (base + ["--max-body-bytes", "-5"], r"max-body-bytes"),
        (base + ["--read-timeout-ms", "12x"], r"read-timeout-ms"),
        (base + ["--max-connections"], r"max-connections"),
        (base + ["--log-level", "chatty"], r"log-level|chatty"),
        (["--listen", "no-port-here", "--keys", keys.keys_path], r"listen|no-port-here"),
        (["--listen", "127.0.0.1:99999", "--keys", keys.keys_path], r"listen|99999"),
        (["--listen", "127.0.0.1:%d" % port, "--keys", os.path.join(keys.dir, "missing.json")], r"missing\.json"),
    ]
    for args, want in cases:
        rc, out, err = harness.run_cli(args)
        check(rc not in (0, None), "llmlimitd %s: exit code %s, expected non-zero" % (" ".join(args), rc))
        check(re.search(want, err) is not None, "llmlimitd %s: stderr %r does not mention /%s/"
              % (" ".join(args), err[:500], want))


BAD_SYNTAX = """{
  "tiers": {
    "default": {"rpm": 1000, "input_tpm": 10000, "output_tpm": 5000}
  },
  "keys": {"k1": {"tier": "default"},, "k2": {"tier": "default"}},
  "unknown_keys": "reject"
}
"""

BAD_VALUE = """{
  "tiers": {
    "default": {"rpm": 1000, "input_tpm": 10000, "output_tpm": 5000},
    "broken": {"rpm": -3, "input_tpm": 10000, "output_tpm": 5000}
  },
  "keys": {"k1": {"tier": "default"}},
  "unknown_keys": "reject"
}
"""

BAD_POLICY = """{
  "tiers": {"default": {"rpm": 1000, "input_tpm": 10000, "output_tpm": 5000}},
  "keys": {
    "k1": {"tier": "default"},
    "k2": {"tier": "no_such_tier"}
  },
  "unknown_keys": "reject"
}
"""


def line_named(msg, line):
    return re.search(r"line\D{0,3}%d\b|:%d:" % (line, line), msg, re.I) is not None


def test_bad_keys_file_at_start():
    for text, line, word in ((BAD_SYNTAX, 5, None), (BAD_VALUE, 4, "rpm"), (BAD_POLICY, 5, "no_such_tier")):
        n = harness.tracked(harness.Node(text))
        rc, out, err = harness.run_cli(["--listen", "127.0.0.1:%d" % harness.free_port(), "--keys", n.keys_path])
        check(rc not in (0, None), "bad keys file (line %d): exit code %s" % (line, rc))
        check(line_named(err, line), "bad keys file: stderr does not name line %d: %r" % (line, err[:500]))
        if word:
            check(word in err, "bad keys file: stderr does not mention %r: %r" % (word, err[:500]))


def test_sigterm_graceful():
    n = new_node()
    c = n.conn()
    try:
        status, _, _ = do_request(c, "POST", "/v1/chat/completions", chat_body(max_tokens=3), key="k_main")
        check(status == 200, "before SIGTERM: %s" % status)
        # An idle keep-alive connection must not hold the shutdown up.
        t0 = time.monotonic()
        n.signal(signal.SIGTERM)
        try:
            harness.wait_until(lambda: n.proc.poll() is not None, timeout=15.0, what="exit after SIGTERM")
        except AssertionError as e:
            check(False, str(e))
        check(time.monotonic() - t0 < 15.0, "shutdown took too long")
        rc = n.stop()
        check(rc == 0, "SIGTERM exit code %s; log:\n%s" % (rc, n.read_log()[-2000:]))
        with socket.socket() as s:
            s.settimeout(2.0)
            check(s.connect_ex(("127.0.0.1", n.port)) != 0, "port still accepting after exit")
    finally:
        c.close()


def test_sigint_graceful():
    n = new_node()
    status, _, _ = n.request("GET", "/healthz")
    check(status == 200, "before SIGINT: %s" % status)
    rc = n.stop(signal.SIGINT, timeout=15.0)
    check(rc == 0, "SIGINT exit code %s" % rc)


def test_env_mirrors_flags():
    """LLMLIMIT_* variables configure the daemon like flags (for containers); a flag wins."""
    body = '{"model": "m", "messages": [{"role": "user", "content": "%s"}], "max_tokens": 1}' % ("x" * 1500)
    n = harness.tracked(harness.Node(KEYS, env={"LLMLIMIT_MAX_BODY_BYTES": "1024"}))
    n.start()
    try:
        check_error(n.request("POST", "/v1/chat/completions", body, key="k_main",
                              headers={"Content-Type": "application/json"}), 413,
                    what="LLMLIMIT_MAX_BODY_BYTES=1024, 1.5 KB body")
    finally:
        check(n.stop() == 0, "exit code after SIGTERM")
    n = harness.tracked(harness.Node(KEYS, extra_args=["--max-body-bytes", "4096"],
                                     env={"LLMLIMIT_MAX_BODY_BYTES": "1024"}))
    n.start()
    try:
        s, _, b = n.request("POST", "/v1/chat/completions", body, key="k_main",
                            headers={"Content-Type": "application/json"})
        check(s == 200, "--max-body-bytes 4096 over LLMLIMIT_MAX_BODY_BYTES=1024: %s %r" % (s, b[:200]))
    finally:
        check(n.stop() == 0, "exit code after SIGTERM")
    env_bad = dict(os.environ, LLMLIMIT_MAX_CONNECTIONS="lots")
    p = harness.subprocess.run([harness.LLMLIMITD, "--listen", "127.0.0.1:%d" % harness.free_port(),
                                "--keys", n.keys_path], env=env_bad, capture_output=True, timeout=10.0)
    check(p.returncode != 0 and b"LLMLIMIT_MAX_CONNECTIONS" in p.stderr,
          "bad LLMLIMIT_MAX_CONNECTIONS: exit %s, stderr %r" % (p.returncode, p.stderr[:300]))


def test_max_keys():
    keys = {"tiers": {"default": {"rpm": 100, "input_tpm": 100000, "output_tpm": 50000}}, "keys": {},
            "unknown_keys": "default"}
    n = new_node(keys, ["--max-keys", "2", "--log-level", "debug"])
    try:
        for k in ("ka", "kb"):
            s, _, _ = n.request("POST", "/v1/chat/completions", chat_body(max_tokens=3), key=k)
            check(s == 200, "key %s under --max-keys 2: %s" % (k, s))
        resp = n.request("POST", "/v1/chat/completions", chat_body(max_tokens=3), key="kc")
        check(resp[0] in (429, 503), "3rd live key over --max-keys 2: status %s, expected 429 or 503" % resp[0])
        check_error(resp, resp[0], what="3rd key over --max-keys")
        s, _, _ = n.request("POST", "/v1/chat/completions", chat_body(max_tokens=3), key="ka")
        check(s == 200, "existing key still served with the table full: %s" % s)
    finally:
        check(n.stop() == 0, "exit code after SIGTERM")


if __name__ == "__main__":
    harness.run([test_healthz, test_metrics, test_help, test_bad_flags, test_bad_keys_file_at_start,
                 test_sigterm_graceful, test_sigint_graceful, test_env_mirrors_flags, test_max_keys])
