#!/usr/bin/env python3
"""Joining a cluster (src/peer/admit.h): until a node has joined, its limited routes answer 503
with retry-after: 1 and error code "cluster_joining", and /readyz answers 503, for at most
ADMIT_JOIN_GRACE_MS (5 s) after start; a node no seed answers then decides alone.

- a node whose only seed is a loopback port where nothing listens: 503 cluster_joining at
  once, then 200 no sooner than ~5 s after start (and within 8 s).
- a node seeded with a live node: 200 within 3 s of its process start (joining is short).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_error, chat_body  # noqa: E402
from cluster import Cluster, free_peer_port  # noqa: E402

GRACE_MIN_S = 4.5      # ADMIT_JOIN_GRACE_MS, less what the process took to start
ALONE_DEADLINE_S = 8.0
SEEDED_MAX_S = 3.0

KEY = "k_join"
KEYS = {
    "tiers": {"default": {"rpm": 100000, "input_tpm": 10000000, "output_tpm": 10000000}},
    "keys": {KEY: {"tier": "default"}},
    "unknown_keys": "reject",
}


def chat(node):
    return node.request("POST", "/v1/chat/completions", chat_body("join", max_tokens=2), key=KEY,
                        timeout=5.0)


def is_joining(resp):
    status, headers, body = resp
    doc = harness.json_or_none(body)
    return (status == 503 and headers.get("retry-after") == "1" and isinstance(doc, dict)
            and isinstance(doc.get("error"), dict)
            and doc["error"].get("code") == "cluster_joining")


def poll_until_served(node, deadline_s):
    """Sends a chat completion every 50 ms until one is a 200 or deadline_s after the process
    start. Returns (seconds from process start to the 200 or None, [unexpected responses],
    number of joining 503s)."""
    odd, joining = [], 0
    while time.monotonic() - node.launched_at < deadline_s:
        resp = chat(node)
        if resp[0] == 200:
            return time.monotonic() - node.launched_at, odd, joining
        if is_joining(resp):
            joining += 1
        else:
            odd.append((resp[0], resp[2][:200]))
        time.sleep(0.05)
    return None, odd, joining


def test_unreachable_seed():
    c = Cluster(0, KEYS, prefix="alone")
    try:
        node = c.new_node(seeds=["127.0.0.1:%d" % free_peer_port()])
        c.start_nodes([node])
        resp = chat(node)
        check_error(resp, 503, code="cluster_joining", what="chat while joining")
        check(resp[1].get("retry-after") == "1",
              "retry-after %r while joining, expected '1'" % resp[1].get("retry-after"))
        status, _, body = node.request("GET", "/readyz")
        check(status == 503, "/readyz %s while joining, expected 503: %r" % (status, body[:200]))
        check((harness.json_or_none(body) or {}).get("status") == "joining",
              "/readyz body while joining: %r" % body[:200])
        took, odd, joining = poll_until_served(node, ALONE_DEADLINE_S)
        print("  no seed answers: first 200 after %s (%d joining 503s before)"
              % ("%.3fs" % took if took is not None else "-", joining))
        check(not odd, "responses other than 200 or 503 cluster_joining: %r" % odd[:5])
        check(took is not None, "no 200 within %.0fs of start; log tail:\n%s"
              % (ALONE_DEADLINE_S, node.read_log()[-2000:]))
        if took is not None:
            check(took >= GRACE_MIN_S, "served %.3fs after start, before the join grace ended"
                  % took)
        check("not joined" in node.read_log(), "no 'not joined ... deciding alone' warning logged")
        view = node.view()
        check(view.get("joined") is False, "/cluster says joined=%r with no seed answering"
              % view.get("joined"))
    finally:
        c.stop_all()


def test_live_seed():
    c = Cluster(1, KEYS, prefix="seeded")
    try:
        c.nodes[0].start()
        node = c.new_node()  # seeded with node 0
        c.start_nodes([node])  # returns once /healthz answers; the polling starts right away
        took, odd, joining = poll_until_served(node, SEEDED_MAX_S + 2.0)
        print("  live seed: first 200 after %s (%d joining 503s before)"
              % ("%.3fs" % took if took is not None else "-", joining))
        check(not odd, "responses other than 200 or 503 cluster_joining: %r" % odd[:5])
        check(took is not None and took <= SEEDED_MAX_S,
              "a node seeded with a live node served its first 200 after %s (target %.0fs)"
              % ("%.3fs" % took if took is not None else "more than %.0fs" % (SEEDED_MAX_S + 2),
                 SEEDED_MAX_S))
        status, _, body = node.request("GET", "/readyz")
        check(status == 200 and (harness.json_or_none(body) or {}).get("status") == "ready",
              "/readyz once joined: %s %r" % (status, body[:200]))
    finally:
        c.stop_all()


if __name__ == "__main__":
    harness.run([test_unreachable_seed, test_live_seed])
