#!/usr/bin/env python3
"""Global limits through every node of a 3-node cluster (real llmlimitd processes on loopback).

(d) GET /cluster on every node: 3 alive members, consistent addresses and incarnations, ring
    shares summing to 1, and the same owner for every key asked about.
(c) A non-owner writes the headers the owner computes: requests alternate between the owner of
    a key and the other nodes; the x-ratelimit-* values form one sequence (remaining-requests
    down by exactly 1 per admission, tokens by exactly the charged amounts), and the 429s agree
    in retry-after and body whichever node wrote them.
(a) A key with rpm 100 gets 2,000 requests round-robin over the 3 nodes in 30 s: exactly 100
    are admitted, and the admitted ones saw remaining-requests 99..0 once each.
(b) At the same time a key with input_tpm 3000 / output_tpm 2000 gets random prompts round-robin
    for ~28 s. The three nodes' admission logs (one monotonic clock for the whole host) are
    merged and audited: admitted input <= 3000 and reconciled output <= 2000 in every 60 s
    window, and each node logged exactly the 200s it answered.
"""
import collections
import math
import os
import random
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import audit  # noqa: E402
import harness  # noqa: E402
from harness import check, chat_body, do_request, json_or_none  # noqa: E402
from cluster import Cluster  # noqa: E402

RPM_TOTAL, RPM_LIMIT, RPM_SECONDS = 2000, 100, 30.0
IN_TPM, OUT_TPM = 3000, 2000
MIX_SECONDS, MIX_RATE = 28.0, 20.0
HDR_RPM, HDR_IN, HDR_OUT = 10, 100000, 50000

KEYS = {
    "tiers": {"default": {"rpm": 100000, "input_tpm": 10000000, "output_tpm": 10000000}},
    "keys": {
        "k_rpm": {"rpm": RPM_LIMIT, "input_tpm": None, "output_tpm": None},
        "k_tok": {"rpm": 1000000, "input_tpm": IN_TPM, "output_tpm": OUT_TPM},
        "k_hdr": {"rpm": HDR_RPM, "input_tpm": HDR_IN, "output_tpm": HDR_OUT},
    },
    "unknown_keys": "default",
}

C = None
NODES = []
RESULTS = {}


def est_chat(content):
    """The documented estimate for one user message (docs/DESIGN-NOTES.md)."""
    return 4 + math.ceil(len(content.encode()) / 4) + 3


def test_start():
    global C, NODES
    C = Cluster(3, KEYS, admission_log=True)
    C.start()
    NODES = C.nodes
    print("  3 nodes up: %s" % ", ".join("%s http=%d peer=%d" % (n.node_id, n.port, n.peer_port)
                                          for n in NODES))


def heard_from_all(views):
    """Each node has had a message straight from every other one (right after the join a member
    may be known only through a third node: last_seen_ms_ago is null until its first probe)."""
    return all(isinstance(m.get("last_seen_ms_ago"), int) for v in views.values()
               for m in v.get("members", []) if not m.get("self"))


def test_cluster_views_agree():
    try:
        harness.wait_until(lambda: heard_from_all({n.node_id: n.view() for n in NODES}), timeout=10.0,
                           interval=0.05, what="every node to hear from every other one directly")
    except AssertionError as e:
        check(False, str(e))
    views = {n.node_id: n.view() for n in NODES}
    ids = {n.node_id for n in NODES}
    by_id = {n.node_id: n for n in NODES}
    incarnations = {nid: v.get("incarnation") for nid, v in views.items()}
    for nid, v in views.items():
        check(v.get("self") == nid, "%s: /cluster self is %r" % (nid, v.get("self")))
        check(v.get("joined") is True, "%s: joined is %r" % (nid, v.get("joined")))
        check(v.get("ring_size") == 3, "%s: ring_size %r, expected 3" % (nid, v.get("ring_size")))
        members = v.get("members", [])
        check(sorted(m["id"] for m in members) == sorted(ids),
              "%s lists members %r, expected %r" % (nid, [m["id"] for m in members], sorted(ids)))
        share = 0.0
        for m in members:
            want = by_id.get(m["id"])
            check(m.get("state") == "alive", "%s sees %s as %r" % (nid, m["id"], m.get("state")))
            check(m.get("self") is (m["id"] == nid), "%s: member %s has self=%r" % (nid, m["id"], m.get("self")))
            if want:
                check(m.get("address") == "127.0.0.1:%d" % want.peer_port,
                      "%s: %s address %r, expected 127.0.0.1:%d" % (nid, m["id"], m.get("address"), want.peer_port))
                check(m.get("http_port") == want.port,
                      "%s: %s http_port %r, expected %d" % (nid, m["id"], m.get("http_port"), want.port))
                check(m.get("incarnation") == incarnations.get(m["id"]),
                      "%s: %s incarnation %r, but %s says %r" % (nid, m["id"], m.get("incarnation"),
                                                                  m["id"], incarnations.get(m["id"])))
            if not m.get("self"):
                ago = m.get("last_seen_ms_ago")
                check(isinstance(ago, int) and 0 <= ago < 5000,
                      "%s: %s last_seen_ms_ago %r (a healthy member is heard within seconds)"
                      % (nid, m["id"], ago))
            rs = m.get("ring_share")
            check(isinstance(rs, (int, float)) and 0.2 <= rs <= 0.47,
                  "%s: %s ring_share %r, expected about 1/3" % (nid, m["id"], rs))
            share += rs if isinstance(rs, (int, float)) else 0
        check(abs(share - 1.0) <= 0.01, "%s: ring shares sum to %.4f" % (nid, share))
    shares = {(m["id"], m.get("ring_share")) for v in views.values() for m in v.get("members", [])}
    check(len(shares) == 3, "the nodes state different ring shares for the same view: %r" % sorted(shares))

    keys = ["k_rpm", "k_tok", "k_hdr"] + ["user-%d" % i for i in range(17)] + ["a b/c?d&e=f"]
    owners = collections.Counter()
    for key in keys:
        answers = {}
        for n in NODES:
            a = n.view(key)
            answers[n.node_id] = a
            check(a.get("key") == key, "%s: /cluster?key=%r echoes key %r" % (n.node_id, key, a.get("key")))
            check(a.get("view_from") == n.node_id, "%s: view_from %r" % (n.node_id, a.get("view_from")))
            pref = a.get("preference") or []
            check(len(pref) == 3 and len(set(pref)) == 3 and set(pref) == ids and pref[0] == a.get("owner"),
                  "%s: key %r preference %r / owner %r" % (n.node_id, key, pref, a.get("owner")))
            check(a.get("self_is_owner") is (a.get("owner") == n.node_id),
                  "%s: key %r self_is_owner %r, owner %r" % (n.node_id, key, a.get("self_is_owner"), a.get("owner")))
        distinct = {(a.get("owner"), tuple(a.get("preference") or [])) for a in answers.values()}
        check(len(distinct) == 1, "nodes disagree about key %r: %r" % (key, {k: (v.get("owner"), v.get("preference"))
                                                                            for k, v in answers.items()}))
        owners[answers[NODES[0].node_id].get("owner")] += 1
    check(len(owners) >= 2, "all of %d keys have one owner: %r" % (len(keys), dict(owners)))
    print("  owners of %d keys: %s" % (len(keys), dict(owners)))


def test_non_owner_writes_owner_headers():
    key = "k_hdr"
    owner_id = C.owner(key)
    owner = C.node(owner_id)
    others = [n for n in NODES if n is not owner]
    order = [owner, others[0], owner, others[1]]  # owner and non-owners alternate
    content = "hello there"
    inp, out = est_chat(content), 3   # completion = min(ceil(prompt/2), max_tokens) = 3: no refund
    fwd0 = {n.node_id: n.metric("llmlimit_peer_checks_forwarded_total") for n in NODES}
    served0 = owner.metric("llmlimit_peer_checks_served_total")
    resp = []
    for i in range(HDR_RPM + 4):
        n = order[i % len(order)]
        s, h, b = n.request("POST", "/v1/chat/completions", chat_body(content, max_tokens=out), key=key)
        resp.append((n, s, h, b, time.monotonic()))
    for i, (n, s, h, b, t) in enumerate(resp):
        tag = "request %d via %s (%s)" % (i, n.node_id, "owner" if n is owner else "non-owner")
        admitted = min(i + 1, HDR_RPM)  # admissions up to and including this one
        want_status = 200 if i < HDR_RPM else 429
        check(s == want_status, "%s: status %s, expected %s: %r" % (tag, s, want_status, b[:200]))
        want = {
            "x-ratelimit-limit-requests": str(HDR_RPM),
            "x-ratelimit-remaining-requests": str(HDR_RPM - admitted),
            "x-ratelimit-limit-input-tokens": str(HDR_IN),
            "x-ratelimit-remaining-input-tokens": str(HDR_IN - inp * admitted),
            "x-ratelimit-limit-output-tokens": str(HDR_OUT),
            "x-ratelimit-remaining-output-tokens": str(HDR_OUT - out * admitted),
            # The combined "tokens" headers follow the dimension with the smaller remaining
            # fraction: input here (10/100000 per request against 3/50000).
            "x-ratelimit-limit-tokens": str(HDR_IN),
            "x-ratelimit-remaining-tokens": str(HDR_IN - inp * admitted),
        }
        got = {k: h.get(k) for k in want}
        check(got == want, "%s: headers %r, expected %r" % (tag, got, want))
        for dim in ("requests", "tokens", "input-tokens", "output-tokens"):
            r = h.get("x-ratelimit-reset-" + dim)
            ms = harness.go_duration_ms(r)
            check(ms is not None and 0 <= ms <= 61000, "%s: x-ratelimit-reset-%s %r" % (tag, dim, r))
    names = {}
    for n, s, h, b, t in resp:
        names.setdefault(s, set()).add(tuple(sorted(k for k in h if k.startswith("x-ratelimit-")
                                                    or k.startswith("retry-after"))))
    for s, v in names.items():
        check(len(v) == 1, "status %s: owner and non-owners send different rate-limit header sets: %r" % (s, v))

    # The requests take milliseconds, so their admissions sit in one or two 1 s buckets of the
    # owner: the requests window's reset is about one instant on the owner's clock, whichever
    # node wrote it (client time + reset, within a bucket plus jitter).
    resets = [(t, harness.go_duration_ms(h.get("x-ratelimit-reset-requests"))) for n, s, h, b, t in resp]
    ends = [t + ms / 1000.0 for t, ms in resets if ms is not None]
    check(ends and max(ends) - min(ends) <= 1.6, "x-ratelimit-reset-requests points at instants %.2fs apart "
          "across nodes" % (max(ends) - min(ends) if ends else -1))

    denied = [(n, h, json_or_none(b), t) for n, s, h, b, t in resp if s == 429]
    msgs, retry_ends = set(), []
    for n, h, d, t in denied:
        tag = "429 via %s" % n.node_id
        ra, ram = h.get("retry-after"), h.get("retry-after-ms")
        ok = check(ra is not None and ra.isdigit() and 1 <= int(ra) <= 61 and ram is not None and ram.isdigit()
                   and int(ra) == (int(ram) + 999) // 1000,
                   "%s: retry-after %r / retry-after-ms %r" % (tag, ra, ram))
        if ok:
            retry_ends.append(t + int(ram) / 1000.0)
        err = (d or {}).get("error") or {}
        check(err.get("type") == "requests" and err.get("code") == "rate_limit_exceeded",
              "%s: error type/code %r/%r" % (tag, err.get("type"), err.get("code")))
        m = err.get("message", "")
        check("Limit %d, Used %d, Requested 1." % (HDR_RPM, HDR_RPM) in m, "%s: message %r" % (tag, m))
        msgs.add(re.sub(r"try again in [0-9.hms]+\.", "try again in X.", m))
    check(len(msgs) == 1, "429 messages differ between owner and non-owners: %r" % msgs)
    check(len(retry_ends) < 2 or max(retry_ends) - min(retry_ends) <= 1.0,
          "retry-after-ms points at instants %.2fs apart across nodes" % (max(retry_ends) - min(retry_ends)
                                                                         if retry_ends else -1))
    # The non-owners really asked the owner (the headers did not come from a local window).
    sent = collections.Counter(n.node_id for n, s, h, b, t in resp)
    for n in others:
        got = n.metric("llmlimit_peer_checks_forwarded_total") - fwd0[n.node_id]
        check(got >= sent[n.node_id], "%s forwarded %d checks, but %d of its requests were for a key %s owns"
              % (n.node_id, got, sent[n.node_id], owner_id))
    got = owner.metric("llmlimit_peer_checks_served_total") - served0
    check(got >= sum(sent[n.node_id] for n in others),
          "owner %s served %d forwarded checks, expected >= %d" % (owner_id, got, sum(sent[n.node_id] for n in others)))
    check(owner.metric("llmlimit_peer_checks_forwarded_total") == fwd0[owner_id],
          "owner %s forwarded checks for its own key" % owner_id)
    print("  owner %s; %d requests alternating owner/non-owner: statuses %s" %
          (owner_id, len(resp), dict(collections.Counter(r[1] for r in resp))))


def rpm_load():
    body = chat_body("ping", max_tokens=1)

    def send(c, i):
        s, h, b = do_request(c, "POST", "/v1/chat/completions", body, key="k_rpm")
        return (s, h.get("x-ratelimit-remaining-requests"), h.get("retry-after"), b[:200])

    RESULTS["rpm"] = audit.run_paced(NODES, RPM_TOTAL, RPM_SECONDS, 6, send)


def mix_load(seed):
    plan = audit.mix_plan(random.Random(seed), int(MIX_SECONDS * MIX_RATE))
    RESULTS["mix_plan"] = plan
    RESULTS["mix"] = audit.run_paced(NODES, len(plan), MIX_SECONDS, 3, audit.mix_sender(plan, "k_tok"))


def test_global_load():
    """(a) and (b) run at the same time: two keys, two owners (or one), all three nodes."""
    seed = int(os.environ.get("LLMLIMIT_SEED", str(int(time.time()))))
    print("  mix seed %d (LLMLIMIT_SEED to replay)" % seed)
    print("  owners: k_rpm -> %s, k_tok -> %s" % (C.owner("k_rpm"), C.owner("k_tok")))
    ts = [threading.Thread(target=rpm_load, daemon=True),
          threading.Thread(target=mix_load, args=(seed,), daemon=True)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=RPM_SECONDS + 200)
    check("rpm" in RESULTS and "mix" in RESULTS, "a load thread did not finish")


def test_rpm_exact_through_all_nodes():
    records, span = RESULTS["rpm"]
    check(span < 58.0, "the %d requests took %.1fs: not all inside one 60 s window, inconclusive" % (RPM_TOTAL, span))
    errors = [r for r in records if r is None or r[1] == "error"]
    check(not errors, "%d requests failed at the transport level, e.g. %r" % (len(errors), errors[:3]))
    ok = [r for r in records if r and r[1] != "error"]
    by_status = collections.Counter(r[1] for r in ok)
    per_node = collections.Counter((NODES[r[0]].node_id, r[1]) for r in ok)
    print("  rpm: %s in %.1fs; per node %s" % (dict(by_status), span, dict(sorted(per_node.items()))))
    check(by_status[200] == RPM_LIMIT, "%d admitted, expected exactly %d" % (by_status[200], RPM_LIMIT))
    check(by_status[429] == RPM_TOTAL - RPM_LIMIT, "%d refused, expected exactly %d (statuses %r)"
          % (by_status[429], RPM_TOTAL - RPM_LIMIT, dict(by_status)))
    rem = sorted(int(r[2]) for r in ok if r[1] == 200 and r[2] is not None and r[2].isdigit())
    check(rem == list(range(RPM_LIMIT)), "remaining-requests of the admitted requests are not 0..99 once each: %r"
          % collections.Counter(rem).most_common(5))
    bad429 = [r for r in ok if r[1] == 429 and not (r[3] and r[3].isdigit() and 1 <= int(r[3]) <= 61 and r[2] == "0")]
    check(not bad429, "%d 429s without retry-after in [1,61] / remaining 0, e.g. %r" % (len(bad429), bad429[:2]))
    # Only the first requests can be admitted: the schedule spreads the 100 over all nodes.
    admitted_nodes = {NODES[r[0]].node_id for r in ok if r[1] == 200}
    check(len(admitted_nodes) == 3, "admissions came through %r only" % admitted_nodes)
    # Each node's admission log holds exactly the 200s it answered (flushed within ~1 s).
    want = collections.Counter(NODES[r[0]].node_id for r in ok if r[1] == 200)
    try:
        harness.wait_until(lambda: all(count_a(n, "k_rpm") >= want[n.node_id] for n in NODES), timeout=10.0,
                           what="the k_rpm A lines in every node's admission log")
    except AssertionError as e:
        check(False, str(e))
    for n in NODES:
        got = count_a(n, "k_rpm")
        check(got == want[n.node_id], "%s logged %d k_rpm admissions but answered %d 200s"
              % (n.node_id, got, want[n.node_id]))


def count_a(node, key):
    return len([f for f in node.admission_lines() if f[0] == "A" and len(f) > 2 and f[2] == key])


def test_input_tpm_windows_merged_logs():
    records, span = RESULTS["mix"]
    plan = RESULTS["mix_plan"]
    admitted = collections.defaultdict(list)  # node id -> [(input, reserved, completion)]
    stats = collections.Counter()
    for i, r in enumerate(records):
        p = plan[i]
        if r is None or r[1] == "error":
            check(False, "mix request %d failed: %r" % (i, r))
            continue
        k, s, d = r
        stats[s] += 1
        if s == 200:
            u = (d or {}).get("usage") or {}
            pt, ct = u.get("prompt_tokens"), u.get("completion_tokens")
            if not check(isinstance(pt, int) and isinstance(ct, int), "mix request %d: usage %r" % (i, u)):
                continue
            if p["chat"]:
                check(pt == est_chat("t" * p["size"]), "mix request %d: prompt_tokens %d, expected %d"
                      % (i, pt, est_chat("t" * p["size"])))
            check(ct <= p["max_tokens"] * p["n"], "mix request %d: completion %d over its cap" % (i, ct))
            admitted[NODES[k].node_id].append((pt, p["max_tokens"] * p["n"], ct))
        elif s == 429:
            err = (d or {}).get("error") or {}
            m = re.search(r"Limit (\d+), Used (\d+), Requested (\d+)", err.get("message", ""))
            if check(m is not None, "mix request %d via %s: 429 message %r" % (i, NODES[k].node_id, err.get("message"))):
                lim, used, req = map(int, m.groups())
                check(used + req > lim, "mix request %d via %s: refused although Used %d + Requested %d <= Limit %d"
                      % (i, NODES[k].node_id, used, req, lim))
                check(lim in (IN_TPM, OUT_TPM), "mix request %d: 429 names limit %d" % (i, lim))
        else:
            check(False, "mix request %d via %s: unexpected status %s %r" % (i, NODES[k].node_id, s, d))
    print("  mix: %s in %.1fs; admitted per node %s" % (dict(stats), span,
                                                        {k: len(v) for k, v in sorted(admitted.items())}))
    check(span < 58.0, "the mix took %.1fs, longer than planned" % span)
    check(stats[200] >= 5 and stats[429] >= 20, "the mix did not exercise the limits: %r" % dict(stats))
    check(len(admitted) >= 2, "admissions of k_tok came through %r only" % list(admitted))

    def complete():
        for n in NODES:
            lines = tok_lines(n)
            adm = admitted[n.node_id]
            if len([x for x in lines if x[0] == "A"]) < len(adm):
                return False
            if len([x for x in lines if x[0] == "J" and x[4] != "0"]) < len([a for a in adm if a[2] != a[1]]):
                return False
        return True
    try:
        harness.wait_until(complete, timeout=10.0, what="every node's k_tok A and J lines")
    except AssertionError as e:
        check(False, str(e))
    audit_logs(admitted, "while running")


def tok_lines(node):
    return [f for f in node.admission_lines() if len(f) > 2 and f[2] == "k_tok"]


def audit_logs(admitted, when):
    """Per node, its k_tok A/J lines match the 200s it answered; merged, every 60 s window holds."""
    audit.audit_windows({n.node_id: tok_lines(n) for n in NODES}, admitted, IN_TPM, OUT_TPM, when)


def test_clean_exit_and_final_logs():
    C.stop_all()
    total = sum(count_a(n, "k_rpm") for n in NODES)
    check(total == RPM_LIMIT, "the admission logs hold %d k_rpm admissions after exit, expected %d" % (total, RPM_LIMIT))
    for n in NODES:
        bad = [f for f in n.admission_lines() if f[0] not in ("A", "J")]
        check(not bad, "%s admission log: lines other than A/J: %r" % (n.node_id, bad[:3]))
    if "mix" in RESULTS:
        admitted = collections.defaultdict(list)
        for i, r in enumerate(RESULTS["mix"][0]):
            if r and r[1] == 200:
                u = (r[2] or {}).get("usage") or {}
                p = RESULTS["mix_plan"][i]
                admitted[NODES[r[0]].node_id].append((u.get("prompt_tokens"), p["max_tokens"] * p["n"],
                                                      u.get("completion_tokens")))
        audit_logs(admitted, "after exit")


if __name__ == "__main__":
    harness.run([test_start, test_cluster_views_agree, test_non_owner_writes_owner_headers,
                 test_global_load, test_rpm_exact_through_all_nodes,
                 test_input_tpm_windows_merged_logs, test_clean_exit_and_final_logs])
