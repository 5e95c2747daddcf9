#!/usr/bin/env python3
"""SIGHUP reloads the keys file under live traffic: open connections keep working, new limits
apply, window state survives, keys come and go, and a broken file leaves the old config in
force (with the error, naming the line, in the log)."""
import os
import re
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, chat_body, check_error, do_request, sock_name  # noqa: E402

TIER = {"rpm": 1000, "input_tpm": 100000, "output_tpm": 50000}
NODE = None


def config(k_a_rpm, with_gone=True, with_new=False):
    keys = {"k_a": {"rpm": k_a_rpm, "input_tpm": 100000, "output_tpm": 50000}}
    if with_gone:
        keys["k_gone"] = {"tier": "default"}
    if with_new:
        keys["k_new"] = {"rpm": 7, "input_tpm": 1000, "output_tpm": 1000}
    return {"tiers": {"default": TIER}, "keys": keys, "unknown_keys": "reject"}


class Client:
    """One keep-alive connection; counts what it sent per key, fails if it reconnects."""

    def __init__(self, node):
        self.c = node.conn()
        self.addr = None
        self.sent = {}

    def chat(self, key):
        resp = do_request(self.c, "POST", "/v1/chat/completions", chat_body(max_tokens=2), key=key)
        addr = sock_name(self.c)
        if self.addr is None:
            self.addr = addr
        check(addr == self.addr, "keep-alive connection was reopened (%r -> %r)" % (self.addr, addr))
        self.sent[key] = self.sent.get(key, 0) + 1
        return resp

    def close(self):
        self.c.close()


def hup_and_poll(client, key, cond, what, timeout=10.0):
    """SIGHUP, then repeats a request on the same connection until cond(resp) holds."""
    NODE.signal(signal.SIGHUP)
    last = []

    def probe():
        last[:] = [client.chat(key)]
        return cond(last[0])
    try:
        harness.wait_until(probe, timeout=timeout, interval=0.05, what=what)
        return last[0]
    except AssertionError as e:
        check(False, "%s; last response %r" % (e, last[0][:2] if last else None))
        return None


def line_named(text, line):
    return re.search(r"line\D{0,3}%d\b|:%d:" % (line, line), text, re.I) is not None


def test_start():
    global NODE
    NODE = harness.tracked(harness.Node(config(100))).start()


def test_reload_on_live_connection():
    cl = Client(NODE)
    try:
        for i in range(5):
            s, h, _ = cl.chat("k_a")
            check(s == 200 and h.get("x-ratelimit-remaining-requests") == str(99 - i),
                  "before reload #%d: %s remaining %r" % (i + 1, s, h.get("x-ratelimit-remaining-requests")))
        s, _, _ = cl.chat("k_gone")
        check(s == 200, "k_gone before reload: %s" % s)

        NODE.write_keys(config(200, with_gone=False, with_new=True))

        def seen_new(resp):
            s, h, _ = resp
            check(s == 200, "k_a during reload: %s" % s)
            check(h.get("x-ratelimit-limit-requests") in ("100", "200"),
                  "limit-requests during reload %r" % h.get("x-ratelimit-limit-requests"))
            return h.get("x-ratelimit-limit-requests") == "200"
        resp = hup_and_poll(cl, "k_a", seen_new, "x-ratelimit-limit-requests to become 200")
        if resp:
            # Every request made before and after the reload is still in the window.
            want = 200 - cl.sent["k_a"]
            check(resp[1].get("x-ratelimit-remaining-requests") == str(want),
                  "after reload: remaining-requests %r, expected %d (window state lost?)"
                  % (resp[1].get("x-ratelimit-remaining-requests"), want))
        s, h, body = cl.chat("k_new")
        check(s == 200 and h.get("x-ratelimit-limit-requests") == "7",
              "key added by reload: %s limit %r %r" % (s, h.get("x-ratelimit-limit-requests"), body[:200]))
        check_error(cl.chat("k_gone"), 401, code="invalid_api_key", what="key removed by reload")
        # A fresh connection sees the same.
        check_error(NODE.request("POST", "/v1/chat/completions", chat_body(max_tokens=2), key="k_gone"),
                    401, code="invalid_api_key", what="key removed by reload, new connection")

        # Lower the limit below what is already used: the next request is refused at once.
        NODE.write_keys(config(3, with_gone=False, with_new=True))
        resp = hup_and_poll(cl, "k_a", lambda r: r[0] == 429, "k_a to be refused under rpm 3")
        if resp:
            used = cl.sent["k_a"] - 1
            err = check_error(resp, 429, code="rate_limit_exceeded", what="rpm lowered below usage")
            check(("Limit 3, Used %d, Requested 1" % used) in err.get("message", ""),
                  "rpm lowered: message %r, expected 'Limit 3, Used %d, Requested 1'" % (err.get("message"), used))
            check(resp[1].get("x-ratelimit-limit-requests") == "3", "rpm lowered: limit header %r"
                  % resp[1].get("x-ratelimit-limit-requests"))
    finally:
        cl.close()


BROKEN_SYNTAX = """{
  "tiers": {"default": {"rpm": 1000, "input_tpm": 100000, "output_tpm": 50000}},
  "keys": {
    "k_a": {"rpm": 5000, "input_tpm": 100000, "output_tpm": 50000},
    "k_new": {"rpm": 9 "input_tpm": 1000, "output_tpm": 1000}
  },
  "unknown_keys": "reject"
}
"""

BROKEN_VALUE = """{
  "tiers": {"default": {"rpm": 1000, "input_tpm": 100000, "output_tpm": 50000}},
  "keys": {
    "k_a": {"rpm": 5000, "input_tpm": 100000, "output_tpm": 50000},
    "k_other": {"rpm": 10, "input_tpm": 1000, "output_tpm": 1000},
    "k_new": {"rpm": 0, "input_tpm": 1000, "output_tpm": 1000}
  },
  "unknown_keys": "reject"
}
"""


def test_broken_file_keeps_old_config():
    cl = Client(NODE)
    try:
        for text, line in ((BROKEN_SYNTAX, 5), (BROKEN_VALUE, 6)):
            before = len(NODE.read_log())
            NODE.write_keys(text)
            NODE.signal(signal.SIGHUP)
            try:
                harness.wait_until(lambda: line_named(NODE.read_log()[before:], line), timeout=10.0,
                                   what="the log to name line %d of the broken keys file" % line)
            except AssertionError as e:
                check(False, "%s; log since SIGHUP:\n%s" % (e, NODE.read_log()[before:][-1500:]))
            check(NODE.proc.poll() is None, "llmlimitd died on a broken keys file")
            # The previous configuration (k_a rpm 3, k_new rpm 7, k_gone absent) is still in force.
            s, h, _ = cl.chat("k_a")
            check(s == 429 and h.get("x-ratelimit-limit-requests") == "3",
                  "broken reload (line %d): k_a %s limit %r, expected 429 under the old rpm 3"
                  % (line, s, h.get("x-ratelimit-limit-requests")))
            s, h, _ = cl.chat("k_new")
            check(s == 200 and h.get("x-ratelimit-limit-requests") == "7",
                  "broken reload (line %d): k_new %s limit %r, expected the old 7"
                  % (line, s, h.get("x-ratelimit-limit-requests")))
            check_error(cl.chat("k_other"), 401, what="broken reload (line %d) added a key" % line)

        # A good file afterwards is taken again.
        NODE.write_keys(config(1000, with_gone=True, with_new=True))
        resp = hup_and_poll(cl, "k_a", lambda r: r[0] == 200, "k_a admitted again after a good reload")
        if resp:
            check(resp[1].get("x-ratelimit-limit-requests") == "1000", "good reload: limit %r"
                  % resp[1].get("x-ratelimit-limit-requests"))
        s, _, _ = cl.chat("k_gone")
        check(s == 200, "k_gone restored by reload: %s" % s)
    finally:
        cl.close()


def test_reload_storm():
    """Many SIGHUPs in a row while a connection is in use: no crash, the last file wins."""
    cl = Client(NODE)
    try:
        for i in range(10):
            NODE.write_keys(config(1000 + i, with_gone=True, with_new=True))
            NODE.signal(signal.SIGHUP)
            s, _, _ = cl.chat("k_new")
            check(s in (200, 429), "request during reload storm: %s" % s)
        # Signals may coalesce, but the last one came after the last write: that file wins.
        hup_and_poll(cl, "k_a", lambda r: r[0] == 200 and r[1].get("x-ratelimit-limit-requests") == "1009",
                     "k_a to show the last file's rpm 1009 after the storm")
        s, _, _ = cl.chat("k_gone")
        check(s == 200, "k_gone after the storm: %s" % s)
        check(NODE.proc.poll() is None, "llmlimitd died during the reload storm")
    finally:
        cl.close()


def test_clean_exit():
    rc = NODE.stop()
    check(rc == 0, "exit code %s after SIGTERM; log tail:\n%s" % (rc, NODE.read_log()[-3000:]))



if __name__ == "__main__":
    harness.run([test_start, test_reload_on_live_connection, test_broken_file_keeps_old_config,
                 test_reload_storm, test_clean_exit])
