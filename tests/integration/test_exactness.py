#!/usr/bin/env python3
"""Exactness of admission against one real llmlimitd.

(a) A key with rpm 100 gets 2,000 requests spread over 30 s from several keep-alive
    connections: exactly 100 are admitted, 1,900 refused, and the admitted ones saw every
    remaining-requests value 99..0 exactly once (admission is atomic).
(b) A key with input_tpm 3000 / output_tpm 2000 gets a random mix for ~28 s. The daemon's
    admission log (its own clock) is then audited: over every 60 s window ending at an admission,
    admitted input <= 3000 and reconciled output <= 2000; the log matches what the client saw.
"""
import collections
import math
import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import audit  # noqa: E402
import harness  # noqa: E402
from harness import check, chat_body, do_request  # noqa: E402

RPM_TOTAL = 2000
RPM_LIMIT = 100
RPM_SECONDS = 30.0
IN_TPM, OUT_TPM = 3000, 2000
MIX_SECONDS = 28.0
MIX_RATE = 20.0  # requests per second

KEYS = {
    "tiers": {"default": {"rpm": 1000, "input_tpm": 100000, "output_tpm": 50000}},
    "keys": {
        "k_rpm": {"rpm": RPM_LIMIT, "input_tpm": None, "output_tpm": None},
        "k_tok": {"rpm": 1000000, "input_tpm": IN_TPM, "output_tpm": OUT_TPM},
    },
    "unknown_keys": "reject",
}

NODE = None
ADMISSION_LOG = None
ADMITTED = []  # k_tok's 200s as the client saw them: (input, reserved, completion)


def test_start():
    global NODE, ADMISSION_LOG
    NODE = harness.tracked(harness.Node(KEYS))
    ADMISSION_LOG = os.path.join(NODE.dir, "admissions.log")
    NODE.extra_args += ["--admission-log", ADMISSION_LOG]
    NODE.start()


def test_rpm_exact():
    body = chat_body("ping", max_tokens=1)

    def send(c, i):
        s, h, b = do_request(c, "POST", "/v1/chat/completions", body, key="k_rpm")
        return (s, h.get("x-ratelimit-remaining-requests"), h.get("retry-after"), b[:200])

    records, span = audit.run_paced([NODE], RPM_TOTAL, RPM_SECONDS, 4, send)
    records = [r[1:] if r else r for r in records]  # one node: drop its index
    check(span < 58.0, "the %d requests took %.1fs: not all inside one 60 s window, result inconclusive"
          % (RPM_TOTAL, span))
    errors = [r for r in records if r is None or r[0] == "error"]
    check(not errors, "%d requests failed at the transport level, e.g. %r" % (len(errors), errors[:3]))
    by_status = collections.Counter(r[0] for r in records if r and r[0] != "error")
    print("  rpm: %s in %.1fs" % (dict(by_status), span))
    check(by_status[200] == RPM_LIMIT, "%d admitted, expected exactly %d" % (by_status[200], RPM_LIMIT))
    check(by_status[429] == RPM_TOTAL - RPM_LIMIT, "%d refused, expected exactly %d (statuses %r)"
          % (by_status[429], RPM_TOTAL - RPM_LIMIT, dict(by_status)))
    rem = sorted(int(r[1]) for r in records if r and r[0] == 200 and r[1] is not None and r[1].isdigit())
    check(rem == list(range(RPM_LIMIT)), "remaining-requests of the admitted requests are not 0..99 once each: %r"
          % collections.Counter(rem).most_common(5))
    bad429 = [r for r in records if r and r[0] == 429 and not (r[2] and r[2].isdigit() and 1 <= int(r[2]) <= 61
                                                              and r[1] == "0")]
    check(not bad429, "%d 429s without retry-after in [1,61] / remaining 0, e.g. %r" % (len(bad429), bad429[:2]))


def est_chat(content):
    return 4 + math.ceil(len(content.encode()) / 4) + 3


def test_token_windows_audit():
    seed = int(os.environ.get("LLMLIMIT_SEED", str(int(time.time()))))
    print("  mix seed %d (LLMLIMIT_SEED to replay)" % seed)
    rng = random.Random(seed)
    total = int(MIX_SECONDS * MIX_RATE)
    plan = audit.mix_plan(rng, total)
    send = audit.mix_sender(plan, "k_tok")

    records, span = audit.run_paced([NODE], total, MIX_SECONDS, 2, send)
    records = [r[1:] if r else r for r in records]  # one node: drop its index
    admitted = ADMITTED
    stats = collections.Counter()
    for i, r in enumerate(records):
        p = plan[i]
        if r is None or r[0] == "error":
            check(False, "request %d failed: %r" % (i, r))
            continue
        s, d = r
        stats[s] += 1
        if s == 200:
            u = (d or {}).get("usage") or {}
            pt, ct = u.get("prompt_tokens"), u.get("completion_tokens")
            if not check(isinstance(pt, int) and isinstance(ct, int), "request %d: usage %r" % (i, u)):
                continue
            if p["chat"]:
                check(pt == est_chat("t" * p["size"]), "request %d: prompt_tokens %d, expected %d"
                      % (i, pt, est_chat("t" * p["size"])))
            check(ct <= p["max_tokens"] * p["n"], "request %d: completion %d over the cap %d" % (i, ct, p["max_tokens"] * p["n"]))
            admitted.append((pt, p["max_tokens"] * p["n"], ct))
        elif s == 429:
            err = (d or {}).get("error") or {}
            m = re.search(r"Limit (\d+), Used (\d+), Requested (\d+)", err.get("message", ""))
            if check(m is not None, "request %d: 429 message %r" % (i, err.get("message"))):
                lim, used, req = map(int, m.groups())
                check(used + req > lim, "request %d: refused although Used %d + Requested %d <= Limit %d"
                      % (i, used, req, lim))
                stats["429 " + ("input" if re.search("input", err["message"], re.I) else
                                "output" if re.search("output", err["message"], re.I) else "other")] += 1
        else:
            check(False, "request %d: unexpected status %s %r" % (i, s, d))
    print("  mix: %s in %.1fs" % (dict(stats), span))
    check(span < 58.0, "the mix took %.1fs, longer than planned" % span)
    check(stats[200] >= 5 and stats[429] >= 20, "the mix did not exercise the limits: %r" % dict(stats))

    # The log is flushed at least every second: every admission and every non-zero
    # reconciliation appears without the daemon having to exit.
    want_j = len([a for a in admitted if a[2] != a[1]])

    def complete():
        lines = lines_for("k_tok")
        return (len([x for x in lines if x[0] == "A"]) >= len(admitted)
                and len([x for x in lines if x[0] == "J" and len(x) > 4 and x[4] != "0"]) >= want_j)
    try:
        harness.wait_until(complete, timeout=10.0, what="%d A and %d J lines for k_tok in the admission log"
                           % (len(admitted), want_j))
    except AssertionError as e:
        check(False, str(e))
    audit_log(admitted, "while running")


def lines_for(key):
    try:
        with open(ADMISSION_LOG) as f:
            text = f.read()
    except OSError:
        return []
    return [ln.split() for ln in text.splitlines() if len(ln.split()) > 2 and ln.split()[2] == key]


def audit_log(admitted, when):
    """The admission log of k_tok against the limits and against what the client saw."""
    n, final_out = audit.audit_windows({"node": lines_for("k_tok")}, {"node": admitted}, IN_TPM, OUT_TPM,
                                       when)
    check(final_out <= OUT_TPM, "%s: reconciled output %d > %d" % (when, final_out, OUT_TPM))
    return n


def test_clean_exit_and_final_log():
    rc = NODE.stop()
    check(rc == 0, "exit code %s after SIGTERM; log tail:\n%s" % (rc, NODE.read_log()[-3000:]))
    # Flushed at exit: k_rpm has exactly its 100 admissions, each with one request.
    with open(ADMISSION_LOG) as f:
        lines = [ln.split() for ln in f.read().splitlines()]
    a_rpm = [x for x in lines if x and x[0] == "A" and len(x) > 2 and x[2] == "k_rpm"]
    check(len(a_rpm) == RPM_LIMIT, "admission log has %d A lines for k_rpm, expected %d" % (len(a_rpm), RPM_LIMIT))
    check(all(x[0] in ("A", "J") for x in lines if x), "admission log: lines other than A/J: %r"
          % [x for x in lines if x and x[0] not in ("A", "J")][:3])
    audit_log(ADMITTED, "after exit")



if __name__ == "__main__":
    harness.run([test_start, test_rpm_exact, test_token_windows_audit, test_clean_exit_and_final_log])
